/*
 * The controld host as its backends see it: CPUs, architecture, memory,
 * the disk replicas write to, NVIDIA GPUs (nvidia-smi).  Found at start
 * and on SIGHUP, never while a request waits: nvidia-smi takes a while.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>

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
 * "RTX4090", "Tesla T4" -> "T4": dstack's GPU names */
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
            || strcasecmp(tok, "Quadro") == 0)
        {
            continue;
        }
        /* "80GB", "PCIe", "SXM4", "HBM3", "NVL": the form, not the model */
        if (strcasestr(tok, "GB") || strncasecmp(tok, "PCIE", 4) == 0
            || strncasecmp(tok, "SXM", 3) == 0
            || strncasecmp(tok, "HBM", 3) == 0
            || strcasecmp(tok, "NVL") == 0)
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


static void
detect_gpus(struct host_desc *h)
{
    FILE   *fp;
    char    line[512], cmd[1024];

    h->n_gpus = 0;
    h->gpu_note[0] = '\0';

    if (!conf->local.gpus) {
        snprintf(h->gpu_note, sizeof(h->gpu_note),
                 "GPU detection is off in %s", conf->file);
        return;
    }
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

    detect_machine(h);
    detect_memory(h);

    if (mkdir_p(conf->replicas_dir, 0755) != 0) {
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




