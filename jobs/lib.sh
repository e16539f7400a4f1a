# lib.sh — shared by the job scripts (sourced, not run). Every script works unchanged inside a
# Slurm allocation (srun --mpi=pmix) and on a single machine (mpirun).

# Where the programs are: $DV_BIN, else the build tree this script came from, else PATH.
dv_find_bin() {
    if [ -n "${DV_BIN:-}" ]; then echo "$DV_BIN"; return; fi
    here=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
    for d in "$here" "$here/build" "$here/build-ci"; do
        if [ -x "$d/dinov2-config" ]; then echo "$d"; return; fi
    done
    dirname "$(command -v dinov2-config 2>/dev/null || echo /usr/local/bin/dinov2-config)"
}

# dv_launcher NP — the launcher of NP MPI ranks as the array DV_LAUNCHER (srun inside a Slurm
# allocation, mpirun on one machine); append the program and its arguments.
dv_launcher() {
    if [ -n "${SLURM_JOB_ID:-}" ] && command -v srun >/dev/null 2>&1; then
        DV_LAUNCHER=(srun --mpi=pmix -n "$1")
    else
        # as root in containers and CI; more ranks than cores on small machines
        DV_LAUNCHER=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
                     OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
                     mpirun -np "$1" --bind-to none)
    fi
}

# dv_launch NP PROGRAM ARGS... — NP MPI ranks of PROGRAM; returns its status.
dv_launch() {
    dv_launcher "$1"
    shift
    "${DV_LAUNCHER[@]}" "$@"
}

# dv_launch_bg NP PROGRAM ARGS... — the same in the background; DV_LAUNCH_PID is the pid of the
# launcher itself (env execs it), so a signal sent there reaches srun/mpirun, which forward
# SIGUSR1 to the ranks. `wait "$DV_LAUNCH_PID"` gives the job's status.
dv_launch_bg() {
    dv_launcher "$1"
    shift
    "${DV_LAUNCHER[@]}" "$@" &
    DV_LAUNCH_PID=$!
}

dv_stage() { printf '\n== %s\n' "$*"; }
