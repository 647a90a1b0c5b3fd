/*
 * Offers: a spec's resources matched against what a host has.
 *
 * A backend describes its host (CPUs, architecture, memory, disk, GPUs,
 * or why there are no GPUs) in a struct host_desc; this file decides
 * whether a spec fits it and says, when it does not, which requirement
 * is unmet and what the host has instead ("spec.resources.gpu: no GPU of
 * the host matches A100:1; the host has H100:80GB:2"), GPUs written as
 * dstack writes GPU specs.  Nothing here knows a backend or a replica.
 *
 * One replica takes the least the spec allows: the minimum GPU count,
 * and the offer reports the most of CPUs, memory and disk the spec's
 * ranges allow on the host.
 */

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "offers.h"


static const char *const  vendor_names[] = {
    "", "nvidia", "amd", "google", "intel", "tenstorrent"
};


/* GPU memory: nvidia-smi reports MiB of usable memory, a little under the
 * size on the box (an "80GB" H100 says 81559, an "24GB" A10G 23028) */
int
gpu_mem_ok(const ds_spec_range_t *r, uint64_t mb)
{
    if (r->min > 0 && (double) mb * 1.08 < (double) r->min) {
        return 0;
    }
    if (r->max != DS_SPEC_UNLIMITED && (double) mb > (double) r->max * 1.08) {
        return 0;
    }
    return 1;
}


/* "A6000" for "NVIDIA RTX A6000": any word of the name */
static int
gpu_name_has_word(const char *name, const char *word)
{
    char   buf[96], *tok, *save;

    snprintf(buf, sizeof(buf), "%s", name);
    for (tok = strtok_r(buf, " -", &save); tok != NULL;
         tok = strtok_r(NULL, " -", &save))
    {
        if (strcasecmp(tok, word) == 0) {
            return 1;
        }
    }
    return 0;
}


int
gpu_matches(const ds_spec_t *sp, const struct host_gpu *g)
{
    size_t  i;

    if (sp->resources.gpu.vendor != DS_SPEC_VENDOR_ANY
        && sp->resources.gpu.vendor != g->vendor)
    {
        return 0;
    }
    if (!gpu_mem_ok(&sp->resources.gpu.memory_mb, g->memory_mb)) {
        return 0;
    }
    if (sp->resources.gpu.n_names == 0) {
        return 1;
    }
    for (i = 0; i < sp->resources.gpu.n_names; i++) {
        if (strcasecmp(sp->resources.gpu.names[i], g->model) == 0
            || gpu_name_has_word(g->name, sp->resources.gpu.names[i]))
        {
            return 1;
        }
    }
    return 0;
}


/* GPUs one replica takes: the least the range allows, at least one when
 * GPUs are asked for at all */
int
gpus_per_replica(const ds_spec_t *sp)
{
    const ds_spec_range_t  *c = &sp->resources.gpu.count;

    if (c->max == 0) {
        return 0;
    }
    return c->min > 0 ? (int) c->min : 0;
}


const char *
offers_gpu_name(const struct host_desc *h, int index)
{
    int  i;

    for (i = 0; i < h->n_gpus; i++) {
        if (h->gpus[i].index == index) {
            return h->gpus[i].model[0] ? h->gpus[i].model : h->gpus[i].name;
        }
    }
    return "GPU";
}


/* one entry of a GPU spec: the same model and memory (forms differ) */
static int
gpu_same_kind(const struct host_gpu *a, const struct host_gpu *b)
{
    return a->vendor == b->vendor && a->memory_mb == b->memory_mb
           && strcmp(a->model[0] ? a->model : a->name,
                     b->model[0] ? b->model : b->name) == 0;
}


void
offers_host_gpus_text(const struct host_desc *h, char *buf, size_t n)
{
    size_t  off = 0;
    int     i, j, cnt;

    if (h->n_gpus == 0) {
        snprintf(buf, n, "no GPU (%s)", h->gpu_note);
        return;
    }
    buf[0] = '\0';
    for (i = 0; i < h->n_gpus && off < n; i++) {
        /* group equal GPUs */
        for (j = 0; j < i; j++) {
            if (gpu_same_kind(&h->gpus[j], &h->gpus[i])) {
                break;
            }
        }
        if (j < i) {
            continue;
        }
        cnt = 0;
        for (j = i; j < h->n_gpus; j++) {
            cnt += gpu_same_kind(&h->gpus[j], &h->gpus[i]);
        }
        /* dstack's form of a GPU spec: "H100:80GB:2" */
        off += snprintf(buf + off, n - off, "%s%s:%.0fGB:%d",
                        off ? ", " : "",
                        h->gpus[i].model[0] ? h->gpus[i].model
                                            : h->gpus[i].name,
                        (double) (long) ((double) h->gpus[i].memory_mb
                                         / 1024 + 0.5), cnt);
    }
}


void
offers_range_text(char *buf, size_t n, const ds_spec_range_t *r, double div,
    const char *unit)
{
    if (r->max == DS_SPEC_UNLIMITED) {
        snprintf(buf, n, "%g%s..", (double) r->min / div, unit);
    } else if (r->min == r->max) {
        snprintf(buf, n, "%g%s", (double) r->min / div, unit);
    } else if (r->min == 0) {
        snprintf(buf, n, "..%g%s", (double) r->max / div, unit);
    } else {
        snprintf(buf, n, "%g%s..%g%s", (double) r->min / div, unit,
                 (double) r->max / div, unit);
    }
}


void
offers_gpu_req_text(const ds_spec_t *sp, char *buf, size_t n)
{
    size_t  i, off = 0;
    char    r[48];

    buf[0] = '\0';
    if (sp->resources.gpu.vendor > DS_SPEC_VENDOR_ANY
        && sp->resources.gpu.vendor <= DS_SPEC_VENDOR_TENSTORRENT)
    {
        off += snprintf(buf + off, n - off, "%s",
                        vendor_names[sp->resources.gpu.vendor]);
    }
    for (i = 0; i < sp->resources.gpu.n_names && off < n; i++) {
        off += snprintf(buf + off, n - off, "%s%s",
                        i ? "," : (off ? ":" : ""),
                        sp->resources.gpu.names[i]);
    }
    if (off < n && (sp->resources.gpu.memory_mb.min > 0
                    || sp->resources.gpu.memory_mb.max != DS_SPEC_UNLIMITED))
    {
        offers_range_text(r, sizeof(r), &sp->resources.gpu.memory_mb, 1024,
                          "GB");
        off += snprintf(buf + off, n - off, "%s%s", off ? ":" : "", r);
    }
    if (off < n) {
        offers_range_text(r, sizeof(r), &sp->resources.gpu.count, 1, "");
        snprintf(buf + off, n - off, "%s%s", off ? ":" : "", r);
    }
}


/* architecture, CPUs, memory, disk: 0, or 422 with the message */
static int
match_machine(const struct host_desc *h, const ds_spec_t *sp, char *err,
    size_t n)
{
    char  need[256];

    if (sp->resources.cpu_arch != DS_SPEC_ARCH_ANY
        && h->arch != DS_SPEC_ARCH_ANY
        && sp->resources.cpu_arch != h->arch)
    {
        snprintf(err, n, "spec.resources.cpu: needs %s, the host is %s",
                 sp->resources.cpu_arch == DS_SPEC_ARCH_X86 ? "x86" : "arm",
                 h->machine);
        return 422;
    }
    if ((uint64_t) h->cpus < sp->resources.cpu.min) {
        offers_range_text(need, sizeof(need), &sp->resources.cpu, 1, "");
        snprintf(err, n, "spec.resources.cpu: needs %s CPUs, the host has %d",
                 need, h->cpus);
        return 422;
    }
    if (h->memory_mb < sp->resources.memory_mb.min) {
        offers_range_text(need, sizeof(need), &sp->resources.memory_mb, 1024,
                          "GB");
        snprintf(err, n, "spec.resources.memory: needs %s, the host has "
                 "%.1fGB", need, (double) h->memory_mb / 1024);
        return 422;
    }
    if (h->disk_mb < sp->resources.disk_mb.min) {
        offers_range_text(need, sizeof(need), &sp->resources.disk_mb, 1024,
                          "GB");
        snprintf(err, n, "spec.resources.disk: needs %s, the disk of %s has "
                 "%.0fGB", need, h->disk_path, (double) h->disk_mb / 1024);
        return 422;
    }
    return 0;
}


static int
count_matching(const struct host_desc *h, const ds_spec_t *sp)
{
    int  i, matching = 0;

    for (i = 0; i < h->n_gpus; i++) {
        matching += gpu_matches(sp, &h->gpus[i]);
    }
    return matching;
}


/* the first matching GPU's memory times per against total_memory */
static int
match_total_memory(const struct host_desc *h, const ds_spec_t *sp, int per,
    char *err, size_t n)
{
    const struct host_gpu  *g;
    char                    need[256];
    int                     i;

    if (sp->resources.gpu.total_memory_mb.min == 0) {
        return 0;
    }
    for (i = 0; i < h->n_gpus; i++) {
        g = &h->gpus[i];
        if (!gpu_matches(sp, g)) {
            continue;
        }
        if (!gpu_mem_ok(&sp->resources.gpu.total_memory_mb,
                        g->memory_mb * (uint64_t) per))
        {
            offers_range_text(need, sizeof(need),
                              &sp->resources.gpu.total_memory_mb, 1024, "GB");
            snprintf(err, n, "spec.resources.gpu.total_memory: "
                     "needs %s in %d GPUs, %d of the host's %s give "
                     "%.0fGB", need, per, per, g->model,
                     (double) g->memory_mb * per / 1024);
            return 422;
        }
        break;
    }
    return 0;
}


/* enough matching GPUs for every replica: 0, or 422 with the message */
static int
match_gpus(const struct host_desc *h, const ds_spec_t *sp, int replicas,
    char *err, size_t n)
{
    char  need[256], have[512];
    int   per, matching, count;

    per = gpus_per_replica(sp);
    if (per == 0) {
        return 0;
    }
    matching = count_matching(h, sp);
    if (matching == 0) {
        offers_host_gpus_text(h, have, sizeof(have));
        offers_gpu_req_text(sp, need, sizeof(need));
        snprintf(err, n, "spec.resources.gpu: no GPU of the host "
                 "matches %s; the host has %s", need, have);
        return 422;
    }
    if (match_total_memory(h, sp, per, err, n) != 0) {
        return 422;
    }
    count = replicas > 0 ? replicas : 1;
    if (matching < per * count) {
        offers_host_gpus_text(h, have, sizeof(have));
        snprintf(err, n, "spec.resources.gpu: %d replica%s x %d GPU%s need "
                 "%d, the host has %d that match (%s)",
                 count, replicas > 1 ? "s" : "", per, per > 1 ? "s" : "",
                 per * count, matching, have);
        return 422;
    }
    return 0;
}


/* the most of what the host has that the range allows */
static double
up_to(const ds_spec_range_t *r, uint64_t have)
{
    return r->max != DS_SPEC_UNLIMITED && r->max < have ? (double) r->max
                                                        : (double) have;
}


static cJSON *
offer_object(const struct host_desc *h, const ds_spec_t *sp)
{
    cJSON  *o, *res, *gl, *g;
    int     per, i;

    per = gpus_per_replica(sp);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "backend", h->backend);
    cJSON_AddStringToObject(o, "region", h->region);
    cJSON_AddStringToObject(o, "instance_type", h->instance_type);
    res = cJSON_AddObjectToObject(o, "resources");
    cJSON_AddNumberToObject(res, "cpus",
                            up_to(&sp->resources.cpu, (uint64_t) h->cpus));
    cJSON_AddNumberToObject(res, "memory_mb",
                            up_to(&sp->resources.memory_mb, h->memory_mb));
    cJSON_AddNumberToObject(res, "disk_mb",
                            up_to(&sp->resources.disk_mb, h->disk_mb));
    gl = cJSON_AddArrayToObject(res, "gpus");
    for (i = 0; i < h->n_gpus && cJSON_GetArraySize(gl) < per; i++) {
        if (!gpu_matches(sp, &h->gpus[i])) {
            continue;
        }
        g = cJSON_CreateObject();
        cJSON_AddStringToObject(g, "name", h->gpus[i].model);
        cJSON_AddNumberToObject(g, "memory_mb", (double) h->gpus[i].memory_mb);
        cJSON_AddStringToObject(g, "vendor",
                                vendor_names[h->gpus[i].vendor]);
        cJSON_AddItemToArray(gl, g);
    }
    cJSON_AddBoolToObject(o, "spot", 0);
    cJSON_AddNumberToObject(o, "price", 0);
    cJSON_AddNumberToObject(o, "gpus_free", count_matching(h, sp));
    return o;
}


int
offers_match(const struct host_desc *h, const ds_spec_t *sp, int replicas,
    cJSON *offers, char *err, size_t n)
{
    if (match_machine(h, sp, err, n) != 0
        || match_gpus(h, sp, replicas, err, n) != 0)
    {
        return 422;
    }
    cJSON_AddItemToArray(offers, offer_object(h, sp));
    return 0;
}


static int
offers_list_has(const char *const *list, size_t n, const char *s)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (strcmp(list[i], s) == 0) {
            return 1;
        }
    }
    return 0;
}


int
offers_placement(const struct host_desc *h, const ds_spec_t *sp, char *err,
    size_t n)
{
    /* regions, spot_policy and max_price mean nothing here: the spec
       validator accepts them with a warning, and they match any host */
    if (sp->backends != NULL
        && !offers_list_has(sp->backends, sp->n_backends, h->backend))
    {
        snprintf(err, n, "spec.backends: this server has the %s backend "
                 "only", h->backend);
        return 422;
    }
    return 0;
}
