/*
 * The controld host (host.c): what it has, found at start and on SIGHUP
 * for the local backend, and the programs on it.
 */

#ifndef CONTROLD_HOST_H
#define CONTROLD_HOST_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "offers.h"

#define HOST_SMI_OUTPUT_MAX (1024 * 1024)   /* bytes read from amd-smi */

#define DEFAULT_PATH        "/usr/local/sbin:/usr/local/bin:/usr/sbin:" \
                            "/usr/bin:/sbin:/bin"

/*
 * CPUs, architecture, memory, the disk of replicas_dir (created here)
 * and the GPUs nvidia-smi (or else amd-smi, rocm-smi) lists into h; 0,
 * or -1 with err set when replicas_dir cannot be created.
 */
int host_detect(struct host_desc *h, char *err, size_t n);
/* a line of nvidia-smi's CSV ("0, NVIDIA H100 80GB HBM3, 81559") into
 * g, of a host's GPUs made by vendor (DS_SPEC_VENDOR_*); 0 or -1 */
int host_gpu_parse(char *line, int vendor, struct host_gpu *g);
/* a GPU of amd-smi's JSON ("amd-smi static --asic --vram --json") into
 * g; 0 or -1 */
int host_amd_gpu_parse(const cJSON *o, struct host_gpu *g);
/* a "cardN" member of rocm-smi's JSON into g; 0 or -1 */
int host_rocm_gpu_parse(const cJSON *card, struct host_gpu *g);
/* prog as $PATH (or DEFAULT_PATH) finds it into out; 0 or -1 */
int find_in_path(const char *prog, char *out, size_t n);

#endif /* CONTROLD_HOST_H */
