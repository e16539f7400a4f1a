/* weights — backbone weights in HDF5: one float32 dataset per official state-dict key, with
 * its official shape, plus the architecture as attributes (layout: doc/weights.md).
 *
 *   /cls_token (1,1,D)  /pos_embed (1,1+M²,D)  /register_tokens (1,R,D)  /mask_token (1,D)
 *   /patch_embed.proj.weight (D,3,p,p)  /blocks.0.attn.qkv.weight (3D,D)  ...  /norm.bias (D)
 *   attributes: patch_size embed_dim depth num_heads mlp_ratio ffn_layer ffn_hidden_dim
 *   num_register_tokens img_size layerscale qkv_bias proj_bias ffn_bias norm_eps
 *   interpolate_offset interpolate_antialias image_mean image_std (+ format="dinov2c-backbone",
 *   format_version=1, block_chunks=0, head_dim, pos_embed_grid, drop_path_rate,
 *   drop_path_uniform when written here)
 *
 * The golden files of tests/golden (written by the official PyTorch code through h5py) have
 * exactly this layout at the root and load as they are. Every function takes an HDF5 location
 * and a group prefix ("" or NULL = the location itself; e.g. "teacher/backbone" inside a
 * checkpoint): datasets are prefix/key, attributes sit on the prefix group.
 *
 * Reading is strict: every tensor of the table must exist with the table's shape and a float
 * type, and (unless DV_WEIGHTS_ALLOW_EXTRA) no other dataset may sit in the group. The FIRST
 * problem in table order is reported as one line naming the tensor, e.g.
 *   error: w.h5: blocks.3.attn.qkv.weight has shape (192,64), expected (192,32)
 *   error: w.h5: missing tensor norm.bias (expected shape (64))
 *   error: w.h5: unexpected tensor blocks.9.mlp.fc1.weight (256,64)
 * and DV_ERR_FORMAT is returned. HDF5 failures return DV_ERR_HDF5. `what` names the file in
 * messages. Call dv_h5_quiet() once before (no HDF5 error stacks on stderr).
 *
 * Example:
 *   dv_vit m; float *w;
 *   DV_TRY(dv_weights_load("dinov2_vits14.h5", &m, &w));   // config from the attributes
 *   ...
 *   DV_TRY(dv_weights_save("out.h5", &m, w));
 */
#ifndef DV_WEIGHTS_H
#define DV_WEIGHTS_H

#include <hdf5.h>

#include "params.h"
#include "vit.h"

enum {
    DV_WEIGHTS_CHECK_FINITE = 1u << 0, /* also fail on NaN / inf values, naming the tensor */
    DV_WEIGHTS_ALLOW_EXTRA = 1u << 1   /* datasets outside the table are not an error */
};

#define DV_WEIGHTS_FORMAT "dinov2c-backbone"
#define DV_WEIGHTS_FORMAT_VERSION 1

/* ---- generic: any parameter table (backbone, heads) ---- */

/* Create (or replace) prefix/<name> float32 datasets with the table's shapes from buf. */
int dv_params_write_h5(hid_t loc, const char *prefix, const dv_param_table *tab, const float *buf);
/* Read every tensor of the table into buf (tab->numel floats), strictly (see above). */
int dv_params_read_h5(hid_t loc, const char *prefix, const dv_param_table *tab, float *buf,
                      const char *what, unsigned flags);

/* ---- the backbone ---- */

/* Architecture attributes onto prefix (group created when missing). */
int dv_vit_config_write_h5(hid_t loc, const char *prefix, const dv_vit_config *cfg);
/* Architecture from the attributes of prefix; missing / bad attributes are named.
 * layerscale may be a number (the init value) or a bool (the golden files): true → 1e-5. */
int dv_vit_config_read_h5(hid_t loc, const char *prefix, dv_vit_config *cfg, const char *what);

/* Attributes (with format, format_version) + every tensor. */
int dv_weights_write(hid_t loc, const char *prefix, const dv_vit *m, const float *w);
/* Every tensor of m's table (the attributes are not compared; dv_weights_load builds m from
 * them). */
int dv_weights_read(hid_t loc, const char *prefix, const dv_vit *m, float *w, const char *what,
                    unsigned flags);

/* Whole file: written to "<path>.tmp", then renamed over path. */
int dv_weights_save(const char *path, const dv_vit *m, const float *w);
/* Open path, build *m from its root attributes, allocate *w (free()) and read it.
 * On error nothing is left allocated. */
int dv_weights_load(const char *path, dv_vit *m, float **w);

#endif
