/*
 * The controld host as its backends see it: CPUs, architecture, memory,
 * the disk replicas write to, GPUs: NVIDIA's (nvidia-smi), or when it
 * finds none, AMD's (amd-smi).  Found at start and on SIGHUP, never
 * while a request waits: these tools take a while.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "host.h"
#include "util.h"


int
find_in_path(const char *prog, char *out, size_t n)
{
    const char  *path, *p, *e;
    char         buf[4096];

    if (strchr(prog, '/') != NULL) {
        if (access(prog, X_OK) == 0) {
            snprintf(out, n, "%s", prog);
            return 0;
        }
        return -1;
    }
    path = getenv("PATH");
    if (path == NULL || *path == '\0') {
        path = DEFAULT_PATH;
    }
    for (p = path; *p; p = *e ? e + 1 : e) {
        e = strchr(p, ':');
        if (e == NULL) {
            e = p + strlen(p);
        }
        if (e == p) {
            continue;
        }
        snprintf(buf, sizeof(buf), "%.*s/%s", (int) (e - p), p, prog);
        if (access(buf, X_OK) == 0) {
            snprintf(out, n, "%s", buf);
            return 0;
        }
    }
    return -1;
}


/* "NVIDIA A100-SXM4-80GB" -> "A100", "NVIDIA GeForce RTX 4090" ->
 * "RTX4090", "Tesla T4" -> "T4", "AMD Instinct MI300X OAM" -> "MI300X":
 * dstack's GPU names */
static void
gpu_model(const char *name, char *out, size_t n)
{
    char         buf[96], *tok, *save;
    size_t       off = 0;

    snprintf(buf, sizeof(buf), "%s", name);
    out[0] = '\0';
    for (tok = strtok_r(buf, " -", &save); tok != NULL;
         tok = strtok_r(NULL, " -", &save))
    {
        if (strcasecmp(tok, "NVIDIA") == 0 || strcasecmp(tok, "Tesla") == 0
            || strcasecmp(tok, "GeForce") == 0
            || strcasecmp(tok, "Quadro") == 0
            || strcasecmp(tok, "AMD") == 0
            || strcasecmp(tok, "Instinct") == 0
            || strcasecmp(tok, "Radeon") == 0)
        {
            continue;
        }
        /* "80GB", "PCIe", "SXM4", "HBM3", "NVL": the form, not the model */
        if (strcasestr(tok, "GB") || strncasecmp(tok, "PCIE", 4) == 0
            || strncasecmp(tok, "SXM", 3) == 0
            || strncasecmp(tok, "HBM", 3) == 0
            || strcasecmp(tok, "NVL") == 0
            || strcasecmp(tok, "OAM") == 0)
        {
            if (off > 0) {
                break;
            }
            continue;
        }
        off += snprintf(out + off, n > off ? n - off : 0, "%s", tok);
        if (off >= n) {
            break;
        }
    }
}


/* "0, NVIDIA H100 80GB HBM3, 81559" into g; -1 when the line is not one */
int
host_gpu_parse(char *line, int vendor, struct host_gpu *g)
{
    char  *name, *mem, *end;
    long   idx;

    idx = strtol(line, &end, 10);
    if (end == line || *end != ',') {
        return -1;
    }
    name = end + 1;
    while (*name == ' ') {
        name++;
    }
    mem = strrchr(name, ',');
    if (mem == NULL) {
        return -1;
    }
    *mem++ = '\0';
    g->index = (int) idx;
    g->vendor = vendor;
    snprintf(g->name, sizeof(g->name), "%s", name);
    gpu_model(g->name, g->model, sizeof(g->model));
    g->memory_mb = strtoull(mem, NULL, 10);
    return 0;
}


/* amd-smi's VRAM size: 196592, "196592 MB" or {"value":..,"unit":..} */
static uint64_t
amd_vram_mb(const cJSON *size)
{
    const cJSON  *v, *u;
    double        d;
    char         *end;

    if (cJSON_IsObject(size)) {
        v = cJSON_GetObjectItemCaseSensitive(size, "value");
        u = cJSON_GetObjectItemCaseSensitive(size, "unit");
        d = cJSON_IsNumber(v) ? v->valuedouble
            : cJSON_IsString(v) ? strtod(v->valuestring, NULL) : 0;
        if (cJSON_IsString(u) && strcasecmp(u->valuestring, "GB") == 0) {
            d *= 1024;
        }
        return d > 0 ? (uint64_t) d : 0;
    }
    if (cJSON_IsNumber(size)) {
        return size->valuedouble > 0 ? (uint64_t) size->valuedouble : 0;
    }
    if (cJSON_IsString(size)) {
        d = strtod(size->valuestring, &end);
        while (*end == ' ') {
            end++;
        }
        if (strncasecmp(end, "GB", 2) == 0) {
            d *= 1024;
        }
        return d > 0 ? (uint64_t) d : 0;
    }
    return 0;
}


/*
 * One GPU of "amd-smi static --asic --vram --json": {"gpu": 0, "asic":
 * {"market_name": "AMD Instinct MI300X", ...}, "vram": {"size": ...}}.
 * -1 when it is not one.
 */
int
host_amd_gpu_parse(const cJSON *o, struct host_gpu *g)
{
    const cJSON  *idx, *asic, *name, *vram;

    idx = cJSON_GetObjectItemCaseSensitive(o, "gpu");
    asic = cJSON_GetObjectItemCaseSensitive(o, "asic");
    name = cJSON_GetObjectItemCaseSensitive(asic, "market_name");
    vram = cJSON_GetObjectItemCaseSensitive(o, "vram");
    if (!cJSON_IsNumber(idx) || idx->valuedouble < 0
        || !cJSON_IsString(name))
    {
        return -1;
    }
    g->index = (int) idx->valuedouble;
    g->vendor = DS_SPEC_VENDOR_AMD;
    snprintf(g->name, sizeof(g->name), "%s", name->valuestring);
    gpu_model(g->name, g->model, sizeof(g->model));
    g->memory_mb = amd_vram_mb(cJSON_GetObjectItemCaseSensitive(vram,
                                                                 "size"));
    return 0;
}


/* a member of o by name in any case ("Card Series", "Card series") */
static const cJSON *
json_get_nocase(const cJSON *o, const char *name)
{
    const cJSON  *it;

    if (!cJSON_IsObject(o)) {
        return NULL;
    }
    cJSON_ArrayForEach(it, o) {
        if (it->string && strcasecmp(it->string, name) == 0) {
            return it;
        }
    }
    return NULL;
}


/*
 * A GPU of rocm-smi's JSON ("rocm-smi --showproductname --showmeminfo
 * vram --json"): "card0": {"Card Series": "AMD Instinct MI300X OAM",
 * "VRAM Total Memory (B)": "206141652992", ...}.  -1 when not one.
 */
int
host_rocm_gpu_parse(const cJSON *card, struct host_gpu *g)
{
    const cJSON  *name, *mem;
    char         *end;
    long          idx;

    if (card->string == NULL || strncmp(card->string, "card", 4) != 0) {
        return -1;
    }
    idx = strtol(card->string + 4, &end, 10);
    name = json_get_nocase(card, "Card Series");
    mem = json_get_nocase(card, "VRAM Total Memory (B)");
    if (end == card->string + 4 || *end != '\0' || idx < 0
        || !cJSON_IsString(name))
    {
        return -1;
    }
    g->index = (int) idx;
    g->vendor = DS_SPEC_VENDOR_AMD;
    snprintf(g->name, sizeof(g->name), "%s", name->valuestring);
    gpu_model(g->name, g->model, sizeof(g->model));
    g->memory_mb = cJSON_IsString(mem)
                   ? strtoull(mem->valuestring, NULL, 10) / (1024 * 1024)
                   : 0;
    return 0;
}


/*
 * AMD's GPUs, when nvidia-smi found none: a host has one vendor's, and
 * the tools number their GPUs each from 0.  amd-smi answers JSON: a
 * list of GPUs, or in newer versions {"gpu_data": [...]}; without it,
 * rocm-smi (older ROCm) an object of "cardN".
 */
static void
detect_amd_gpus(struct host_desc *h)
{
    FILE          *fp;
    char           cmd[1024], *buf;
    const char    *tool;
    size_t         len, got;
    int            rocm;
    cJSON         *doc;
    const cJSON   *list, *it;

    rocm = 0;
    tool = conf->local.amd_smi;
    if (find_in_path(tool, cmd, sizeof(cmd)) != 0) {
        rocm = 1;
        tool = conf->local.rocm_smi;
        if (find_in_path(tool, cmd, sizeof(cmd)) != 0) {
            return;
        }
    }

    snprintf(cmd, sizeof(cmd), rocm
             ? "%s --showproductname --showmeminfo vram --json 2>/dev/null"
             : "%s static --asic --vram --json 2>/dev/null", tool);
    fp = popen(cmd, "r");
    if (fp == NULL) {
        return;
    }

    buf = malloc(HOST_SMI_OUTPUT_MAX + 1);
    if (buf == NULL) {
        pclose(fp);
        return;
    }
    len = 0;
    while (len < HOST_SMI_OUTPUT_MAX
           && (got = fread(buf + len, 1, HOST_SMI_OUTPUT_MAX - len, fp)) > 0)
    {
        len += got;
    }
    buf[len] = '\0';
    if (pclose(fp) != 0) {
        snprintf(h->gpu_note + strlen(h->gpu_note),
                 sizeof(h->gpu_note) - strlen(h->gpu_note), ", %s failed",
                 tool);
    }

    doc = cJSON_Parse(buf);
    free(buf);

    list = cJSON_IsObject(doc) && !rocm
           ? cJSON_GetObjectItemCaseSensitive(doc, "gpu_data") : doc;
    if (!cJSON_IsArray(list) && !(rocm && cJSON_IsObject(list))) {
        list = NULL;
    }
    cJSON_ArrayForEach(it, list) {
        if (h->n_gpus < HOST_GPUS_MAX
            && (rocm ? host_rocm_gpu_parse(it, &h->gpus[h->n_gpus])
                     : host_amd_gpu_parse(it, &h->gpus[h->n_gpus])) == 0)
        {
            h->n_gpus++;
        }
    }
    cJSON_Delete(doc);

    if (h->n_gpus > 0) {
        h->gpu_note[0] = '\0';
    } else {
        snprintf(h->gpu_note + strlen(h->gpu_note),
                 sizeof(h->gpu_note) - strlen(h->gpu_note),
                 ", %s lists no GPU", tool);
    }
}


static void
detect_nvidia_gpus(struct host_desc *h)
{
    FILE   *fp;
    char    line[512], cmd[1024];

    h->n_gpus = 0;
    h->gpu_note[0] = '\0';

    if (find_in_path(conf->local.nvidia_smi, cmd, sizeof(cmd)) != 0) {
        snprintf(h->gpu_note, sizeof(h->gpu_note), "%s not found",
                 conf->local.nvidia_smi);
        return;
    }

    snprintf(cmd, sizeof(cmd), "%s --query-gpu=index,name,memory.total "
             "--format=csv,noheader,nounits 2>/dev/null",
             conf->local.nvidia_smi);
    fp = popen(cmd, "r");
    if (fp == NULL) {
        snprintf(h->gpu_note, sizeof(h->gpu_note), "%s failed: %s",
                 conf->local.nvidia_smi, strerror(errno));
        return;
    }
    while (fgets(line, sizeof(line), fp) != NULL
           && h->n_gpus < HOST_GPUS_MAX)
    {
        if (host_gpu_parse(line, DS_SPEC_VENDOR_NVIDIA,
                           &h->gpus[h->n_gpus]) == 0) {
            h->n_gpus++;
        }
    }
    if (pclose(fp) != 0 && h->n_gpus == 0) {
        snprintf(h->gpu_note, sizeof(h->gpu_note), "%s failed",
                 conf->local.nvidia_smi);
    } else if (h->n_gpus == 0) {
        snprintf(h->gpu_note, sizeof(h->gpu_note), "%s lists no GPU",
                 conf->local.nvidia_smi);
    }
}


static void
detect_gpus(struct host_desc *h)
{
    h->n_gpus = 0;
    h->gpu_note[0] = '\0';

    if (!conf->local.gpus) {
        snprintf(h->gpu_note, sizeof(h->gpu_note),
                 "GPU detection is off in %s", conf->file);
        return;
    }

    detect_nvidia_gpus(h);
    if (h->n_gpus == 0) {
        detect_amd_gpus(h);
    }
}


static void
detect_machine(struct host_desc *h)
{
    struct utsname  u;
    long            cpus;

    cpus = sysconf(_SC_NPROCESSORS_ONLN);
    h->cpus = cpus > 0 ? (int) cpus : 1;

    h->arch = DS_SPEC_ARCH_ANY;
    if (uname(&u) == 0) {
        fmt(h->machine, sizeof(h->machine), "%s", u.machine);
        if (strcmp(u.machine, "x86_64") == 0 || strcmp(u.machine, "i686") == 0)
        {
            h->arch = DS_SPEC_ARCH_X86;
        } else if (strncmp(u.machine, "aarch64", 7) == 0
                   || strncmp(u.machine, "arm", 3) == 0)
        {
            h->arch = DS_SPEC_ARCH_ARM;
        }
    }
}


static void
detect_memory(struct host_desc *h)
{
    FILE               *fp;
    char                line[256];
    unsigned long long  kb;

    h->memory_mb = 0;
    fp = fopen("/proc/meminfo", "r");
    if (fp == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), fp) != NULL) {
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) {
            h->memory_mb = kb / 1024;
            break;
        }
    }
    fclose(fp);
}


int
host_detect(struct host_desc *h, char *err, size_t n)
{
    struct statvfs  vfs;
    struct stat     sb;

    detect_machine(h);
    detect_memory(h);

    /* made here: 0711 whatever the umask, for replicas with a spec's
     * "user:" to pass through; one that exists keeps the operator's mode */
    if (stat(conf->replicas_dir, &sb) != 0
        && (mkdir_p(conf->replicas_dir, 0711) != 0
            || chmod(conf->replicas_dir, 0711) != 0))
    {
        snprintf(err, n, "replicas_dir %s: %s", conf->replicas_dir,
                 strerror(errno));
        return -1;
    }
    /* the size of the disk replicas write to, not what is free now: a
     * request like "disk: 100GB.." asks what the machine has */
    snprintf(h->disk_path, sizeof(h->disk_path), "%s", conf->replicas_dir);
    h->disk_mb = 0;
    if (statvfs(conf->replicas_dir, &vfs) == 0) {
        h->disk_mb = (uint64_t) vfs.f_blocks * vfs.f_frsize / (1024 * 1024);
    }

    detect_gpus(h);
    return 0;
}




