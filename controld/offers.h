/*
 * Offers (offers.c): whether a host can run a spec, and the API offer
 * object when it can.  Neutral to the backend: the local backend, a
 * container host or an SSH host each describe what they have in a
 * struct host_desc and match specs against it here.
 */

#ifndef CONTROLD_OFFERS_H
#define CONTROLD_OFFERS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_spec.h"

#define HOST_GPUS_MAX       64

struct host_gpu {
    int             index;              /* the host's number for it */
    int             vendor;             /* DS_SPEC_VENDOR_* */
    char            name[96];           /* "NVIDIA H100 80GB HBM3" */
    char            model[32];          /* "H100", "A100", "RTX4090" */
    uint64_t        memory_mb;          /* usable, as the driver says */
};

/* what a host has, as its backend found it */
struct host_desc {
    /* where offers on it come from: "local", "local", "host" */
    const char     *backend;
    const char     *region;
    const char     *instance_type;

    int             cpus;
    int             arch;               /* DS_SPEC_ARCH_* */
    char            machine[32];        /* "x86_64", for messages */
    uint64_t        memory_mb;
    uint64_t        disk_mb;            /* the size, not what is free */
    char            disk_path[4096];    /* where replicas write */
    struct host_gpu gpus[HOST_GPUS_MAX];
    int             n_gpus;
    char            gpu_note[128];      /* why there are none */
};


/*
 * Offers of host h for a spec and a replica count, added to the array
 * `offers`: 0, or 422 with a message in err naming the unmet requirement
 * and what the host has.  Only what every backend checks: the caller
 * has checked its own (backends, regions, network) before.
 */
int offers_match(const struct host_desc *h, const ds_spec_t *sp,
    int replicas, cJSON *offers, char *err, size_t n);

/*
 * Where a spec may run against what a host offers: its backends list
 * (our backends only, see ds_spec_t) must name the host's.  0, or 422
 * with the reason in err.
 */
int offers_placement(const struct host_desc *h, const ds_spec_t *sp,
    char *err, size_t n);

/* GPUs one replica takes: 0 when the spec asks for none */
int gpus_per_replica(const ds_spec_t *sp);
/* GPU g of a host fits the spec's GPU requirement */
int gpu_matches(const ds_spec_t *sp, const struct host_gpu *g);
/* a GPU of mb MiB (as the driver counts) fits a range in MB */
int gpu_mem_ok(const ds_spec_range_t *r, uint64_t mb);
/* the API's name of the host's GPU with that index ("H100") */
const char *offers_gpu_name(const struct host_desc *h, int index);

/* "8GB..", "2..4", "80GB": a range for messages */
void offers_range_text(char *buf, size_t n, const ds_spec_range_t *r,
    double div, const char *unit);
/* "nvidia:A100,H100:80GB:2": the spec's GPU requirement */
void offers_gpu_req_text(const ds_spec_t *sp, char *buf, size_t n);
/* "H100:80GB:2, A10G:22GB:1", or "no GPU (why)" */
void offers_host_gpus_text(const struct host_desc *h, char *buf, size_t n);

#endif /* CONTROLD_OFFERS_H */
