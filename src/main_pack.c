/* dinov2-pack — ingest images into HDF5 image shards (io/pack.h, doc/pack.md).
 * A serial program (one Slurm array task at most): it never initialises MPI. */
#include <stdio.h>

#include "err.h"
#include "pack.h"

int main(int argc, char **argv) {
    dv_pack_opts o;
    int help = 0;
    if (dv_pack_parse_args(argc, argv, &o, &help) != DV_OK) return 1;
    if (help) {
        dv_pack_usage(stdout);
        return 0;
    }
    dv_pack_result res;
    return dv_pack_run(&o, &res) == DV_OK ? 0 : 1;
}
