# dv_cuda.m4 — probes for the optional CUDA backend (nvcc, cudart, cuBLAS, cuBLASLt) and NCCL.
# There is no autoconf-archive macro for these. Tri-state options: a requested feature that
# cannot be met fails; `auto` builds it whenever it is found. Never queries a GPU at build time.
#
# DV_CHECK_CUDA: --with-cuda=auto|yes|no|DIR, --with-cuda-arch="80 90"
#   sets NVCC, CUDA_DIR, CUDA_CPPFLAGS, CUDA_LDFLAGS, CUDA_LIBS, NVCC_GENCODE, dv_have_cuda
# DV_CHECK_NCCL: --with-nccl=auto|yes|no|DIR   (needs CUDA)
#   sets NCCL_CPPFLAGS, NCCL_LDFLAGS, NCCL_LIBS, dv_have_nccl

AC_DEFUN([DV_CHECK_CUDA], [
AC_ARG_WITH([cuda],
  [AS_HELP_STRING([--with-cuda=auto|yes|no|DIR],
     [build the CUDA backend (default auto: when nvcc is found in DIR, $CUDA_HOME, /usr/local/cuda or PATH)])],
  [], [with_cuda=auto])
AC_ARG_WITH([cuda-arch],
  [AS_HELP_STRING([--with-cuda-arch=LIST],
     [GPU architectures to compile for, e.g. "80 90" or "sm_80,sm_90" (default: 80 90)])],
  [], [with_cuda_arch="80 90"])
dv_have_cuda=no
dv_cuda_why=""
NVCC=""
CUDA_DIR=""
AS_CASE([$with_cuda],
  [no], [dv_cuda_why="disabled"],
  [yes|auto], [dv_cuda_dirs="$CUDA_HOME /usr/local/cuda"],
  [dv_cuda_dirs="$with_cuda"])
AS_IF([test "x$with_cuda" != xno], [
  for d in $dv_cuda_dirs; do
    AS_IF([test -x "$d/bin/nvcc"], [NVCC="$d/bin/nvcc"; CUDA_DIR="$d"; break])
  done
  dnl not in the usual places: nvcc on PATH (only when no DIR was given)
  AS_IF([test -z "$NVCC"], [
    AS_CASE([$with_cuda], [yes|auto], [
      AC_PATH_PROG([NVCC_PATH], [nvcc], [])
      AS_IF([test -n "$NVCC_PATH"], [NVCC="$NVCC_PATH"; CUDA_DIR=`dirname "$NVCC_PATH"`; CUDA_DIR=`dirname "$CUDA_DIR"`])
    ])
  ])
  AS_IF([test -z "$NVCC"], [dv_cuda_why="nvcc not found"], [
    AC_MSG_CHECKING([for the CUDA toolkit])
    AC_MSG_RESULT([$CUDA_DIR])
    dv_cuda_libdir="$CUDA_DIR/lib64"
    AS_IF([test ! -d "$dv_cuda_libdir"], [dv_cuda_libdir="$CUDA_DIR/lib"])
    CUDA_CPPFLAGS="-I$CUDA_DIR/include"
    CUDA_LDFLAGS="-L$dv_cuda_libdir -Wl,-rpath,$dv_cuda_libdir"
    dv_save_CPPFLAGS="$CPPFLAGS"; dv_save_LDFLAGS="$LDFLAGS"; dv_save_LIBS="$LIBS"
    CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS"; LDFLAGS="$LDFLAGS $CUDA_LDFLAGS"
    dv_have_cuda=yes
    AC_CHECK_HEADER([cuda_runtime.h], [], [dv_have_cuda=no; dv_cuda_why="cuda_runtime.h not found"])
    AS_IF([test $dv_have_cuda = yes], [AC_CHECK_HEADER([cublas_v2.h], [], [dv_have_cuda=no; dv_cuda_why="cublas_v2.h not found"])])
    AS_IF([test $dv_have_cuda = yes], [AC_CHECK_LIB([cudart], [cudaGetDeviceCount], [:], [dv_have_cuda=no; dv_cuda_why="libcudart not found"])])
    dnl cublasCreate is a macro; the symbol is cublasCreate_v2
    AS_IF([test $dv_have_cuda = yes], [AC_CHECK_LIB([cublas], [cublasCreate_v2], [:], [dv_have_cuda=no; dv_cuda_why="libcublas not found"], [-lcudart])])
    AS_IF([test $dv_have_cuda = yes], [AC_CHECK_LIB([cublasLt], [cublasLtCreate], [:], [dv_have_cuda=no; dv_cuda_why="libcublasLt not found"], [-lcudart])])
    CPPFLAGS="$dv_save_CPPFLAGS"; LDFLAGS="$dv_save_LDFLAGS"; LIBS="$dv_save_LIBS"
    dnl nvcc objects need the C++ runtime when linked by the C compiler
    CUDA_LIBS="-lcublasLt -lcublas -lcudart -lstdc++"
  ])
])
AS_IF([test "x$with_cuda" != xno && test "x$with_cuda" != xauto && test $dv_have_cuda = no],
  [AC_MSG_ERROR([--with-cuda=$with_cuda was requested but cannot be met: $dv_cuda_why (install the CUDA toolkit or use --with-cuda=no)])])
NVCC_GENCODE=""
dv_cuda_archs=""
for a in `echo "$with_cuda_arch" | tr ',' ' '`; do
  a=`echo "$a" | sed -e 's/^sm_//' -e 's/^compute_//'`
  AS_CASE([$a], [*[[!0-9a]]*|""], [AC_MSG_ERROR([--with-cuda-arch: '$a' is not an architecture number like 80 or 90a])])
  NVCC_GENCODE="$NVCC_GENCODE -gencode arch=compute_$a,code=sm_$a"
  dv_cuda_archs="$dv_cuda_archs sm_$a"
done
AC_SUBST([NVCC])
AC_SUBST([CUDA_DIR])
AC_SUBST([CUDA_CPPFLAGS])
AC_SUBST([CUDA_LDFLAGS])
AC_SUBST([CUDA_LIBS])
AC_SUBST([NVCC_GENCODE])
])

AC_DEFUN([DV_CHECK_NCCL], [
AC_ARG_WITH([nccl],
  [AS_HELP_STRING([--with-nccl=auto|yes|no|DIR],
     [NCCL collectives for the CUDA backend (default auto: when found with CUDA)])],
  [], [with_nccl=auto])
dv_have_nccl=no
dv_nccl_why=""
NCCL_CPPFLAGS=""; NCCL_LDFLAGS=""; NCCL_LIBS=""
AS_IF([test "x$with_nccl" = xno], [dv_nccl_why="disabled"],
      [test $dv_have_cuda = no], [dv_nccl_why="needs CUDA"], [
  AS_CASE([$with_nccl],
    [yes|auto], [dv_nccl_dirs="$NCCL_HOME $CUDA_DIR /usr"],
    [dv_nccl_dirs="$with_nccl"])
  for d in $dv_nccl_dirs; do
    AS_IF([test -f "$d/include/nccl.h"], [
      NCCL_CPPFLAGS="-I$d/include"
      for l in "$d/lib64" "$d/lib" "$d/lib/x86_64-linux-gnu"; do
        AS_IF([test -d "$l"], [NCCL_LDFLAGS="-L$l -Wl,-rpath,$l"; break])
      done
      break
    ])
  done
  AS_IF([test -z "$NCCL_CPPFLAGS"], [dv_nccl_why="nccl.h not found"], [
    dv_save_CPPFLAGS="$CPPFLAGS"; dv_save_LDFLAGS="$LDFLAGS"; dv_save_LIBS="$LIBS"
    CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS $NCCL_CPPFLAGS"; LDFLAGS="$LDFLAGS $CUDA_LDFLAGS $NCCL_LDFLAGS"
    AC_CHECK_LIB([nccl], [ncclGetUniqueId], [dv_have_nccl=yes; NCCL_LIBS="-lnccl"],
                 [dv_nccl_why="libnccl not found"], [-lcudart])
    CPPFLAGS="$dv_save_CPPFLAGS"; LDFLAGS="$dv_save_LDFLAGS"; LIBS="$dv_save_LIBS"
  ])
])
AS_IF([test "x$with_nccl" != xno && test "x$with_nccl" != xauto && test $dv_have_nccl = no],
  [AC_MSG_ERROR([--with-nccl=$with_nccl was requested but cannot be met: $dv_nccl_why])])
AC_SUBST([NCCL_CPPFLAGS])
AC_SUBST([NCCL_LDFLAGS])
AC_SUBST([NCCL_LIBS])
])
