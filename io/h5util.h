/* h5util — the HDF5 error-check macro and small helpers shared by the io/ modules.
 *
 * HDF5 calls return a negative herr_t / hid_t on failure, so one macro covers both:
 *   DV_CHECK_H5(fid = H5Fopen(path, H5F_ACC_RDONLY, fapl));
 * HDF5's own multi-line error stack printing is switched off (dv_h5_quiet) and the innermost
 * message of the stack is put into our one-line report instead.
 */
#ifndef DV_H5UTIL_H
#define DV_H5UTIL_H

#include <hdf5.h>

#include "err.h"

#define DV_CHECK_H5(call)                                                                          \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            dv_h5_report_(__FILE__, __LINE__, #call);                                              \
            return DV_ERR_HDF5;                                                                    \
        }                                                                                          \
    } while (0)

/* Turn off HDF5's automatic error-stack printing (call once per process, before any I/O). */
int dv_h5_quiet(void);
void dv_h5_report_(const char *file, int line, const char *call);

#endif
