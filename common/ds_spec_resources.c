/*
 * resources: cpu, memory, disk, gpu (as a mapping or in dstack's
 * shorthand "nvidia:A100,H100:80GB:2") and shm_size, with dstack's
 * defaults for what is left out.
 */

#include <ctype.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "ds_spec_impl.h"


static const char *
ds_v_arch(const char *s)
{
    if (strcasecmp(s, "x86") == 0 || strcasecmp(s, "x86_64") == 0
        || strcasecmp(s, "amd64") == 0)
    {
        return "x86";
    }
    if (strcasecmp(s, "arm") == 0 || strcasecmp(s, "arm64") == 0
        || strcasecmp(s, "aarch64") == 0)
    {
        return "arm";
    }
    return NULL;
}


static int
ds_v_f_arch(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *a;
    ds_qbuf_t    qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected x86 or arm, got %s",
                         ds_tname(in));
    }

    a = ds_v_arch(in->valuestring);
    if (a == NULL) {
        return ds_v_fail(c, in, 0, "invalid CPU architecture %s: expected "
                         "x86 or arm", ds_q(&qb, in->valuestring));
    }

    *out = cJSON_CreateString(a);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_cpu_count(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_INT, "CPU count");
}


static const ds_vfield_t  ds_cpu_fields[] = {
    { "arch", ds_v_f_arch, 0, NULL },
    { "count", ds_v_f_cpu_count, 0, NULL },
};


/* 4, "2..8", "x86:8..", {arch, count} or {min, max} */
static int
ds_v_f_cpu(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc;
    char         buf[128], *tok, *next;
    const char  *arch;
    cJSON       *s[2] = { NULL, NULL };
    ds_vrange_t  r;
    ds_qbuf_t    qa, qb;

    rc = DS_OK;

    if (cJSON_IsNumber(in)
        || (cJSON_IsObject(in)
            && (cJSON_GetObjectItemCaseSensitive(in, "min")
                || cJSON_GetObjectItemCaseSensitive(in, "max"))))
    {
        rc = ds_v_f_cpu_count(c, in, &s[1]);

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_cpu_fields, 2, NULL, s);

    } else if (cJSON_IsString(in)) {
        if (ds_v_nospace(in->valuestring, buf, sizeof(buf)) != 0) {
            return ds_v_fail(c, in, 0, "invalid CPU spec %s: too long",
                             ds_q(&qa, in->valuestring));
        }

        for (tok = buf; tok && rc == DS_OK; tok = next) {
            next = strchr(tok, ':');
            if (next) {
                *next++ = '\0';
            }

            if (*tok == '\0') {
                rc = ds_v_fail(c, in, 0, "invalid CPU spec %s: empty part",
                               ds_q(&qa, in->valuestring));

            } else if (strstr(tok, "..") || strspn(tok, "0123456789")
                                            == strlen(tok))
            {
                if (s[1]) {
                    rc = ds_v_fail(c, in, 0, "invalid CPU spec %s: more than "
                                   "one count", ds_q(&qa, in->valuestring));
                } else {
                    rc = ds_v_range_str(c, in, DS_V_INT, "CPU count", tok,
                                        &r);
                    if (rc == DS_OK) {
                        rc = ds_v_range_json(c, &r, &s[1]);
                    }
                }

            } else if ((arch = ds_v_arch(tok)) == NULL) {
                rc = ds_v_fail(c, in, 0, "invalid CPU architecture %s: "
                               "expected x86 or arm", ds_q(&qb, tok));

            } else if (s[0]) {
                rc = ds_v_fail(c, in, 0, "invalid CPU spec %s: more than one "
                               "architecture", ds_q(&qa, in->valuestring));

            } else {
                s[0] = cJSON_CreateString(arch);
                rc = s[0] ? DS_OK : ds_v_oom(c);
            }
        }

    } else {
        return ds_v_fail(c, in, 0, "expected a CPU count (e.g. 4, 2..8, "
                         "x86:8..), got %s", ds_tname(in));
    }

    if (rc == DS_OK && s[1] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_CPU, &s[1]);
    }

    return ds_v_finish(c, ds_cpu_fields, 2, s, rc, out);
}


static int
ds_v_f_memory(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "memory size");
}


static int
ds_v_f_disk_size(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "disk size");
}


static const ds_vfield_t  ds_disk_fields[] = {
    { "size", ds_v_f_disk_size, DS_VF_REQUIRED, NULL },
};


static int
ds_v_f_disk(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    if (cJSON_IsObject(in)
        && cJSON_GetObjectItemCaseSensitive(in, "min") == NULL
        && cJSON_GetObjectItemCaseSensitive(in, "max") == NULL)
    {
        rc = ds_v_object(c, in, ds_disk_fields, 1, NULL, out);
        if (rc != DS_OK) {
            cJSON_Delete(*out);
            *out = NULL;
        }
        return rc;
    }

    return ds_v_f_disk_size(c, in, out);
}


static int
ds_v_f_shm_size(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsString(in) && strstr(in->valuestring, "..")) {
        return ds_v_fail(c, in, 0, "expected a size (e.g. 8GB), not a "
                         "range");
    }

    return ds_v_f_end(c, in, out, DS_V_MEM);
}


static const struct {
    const char  *name;
    const char  *canon;
} ds_vendors[] = {
    { "nvidia", "nvidia" },
    { "amd", "amd" },
    { "google", "google" },
    { "tpu", "google" },
    { "intel", "intel" },
    { "tenstorrent", "tenstorrent" },
    { "tt", "tenstorrent" },
};


static const char *
ds_v_vendor(const char *s)
{
    size_t  i;

    for (i = 0; i < DS_NFIELDS(ds_vendors); i++) {
        if (strcasecmp(s, ds_vendors[i].name) == 0) {
            return ds_vendors[i].canon;
        }
    }
    return NULL;
}


static int
ds_v_f_vendor(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t                    i;
    const char               *v;
    static const char *const  names[] = {
        "nvidia", "amd", "google", "intel", "tenstorrent"
    };

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a GPU vendor, got %s",
                         ds_tname(in));
    }

    v = ds_v_vendor(in->valuestring);
    if (v == NULL) {
        return ds_v_enum(c, in, "GPU vendor", names, DS_NFIELDS(names), &i);
    }

    *out = cJSON_CreateString(v);
    return *out ? DS_OK : ds_v_oom(c);
}


/* appends a GPU name to the list *names (created on demand) */
static int
ds_v_gpu_name(ds_vctx_t *c, const cJSON *at, const char *s, size_t n,
    cJSON **names)
{
    size_t     i;
    char       name[DS_NAME_MAX + 1];
    ds_qbuf_t  qb;

    for (i = 0; i < n && i < DS_NAME_MAX; i++) {
        name[i] = s[i];
    }
    name[i] = '\0';

    if (n == 0 || n > DS_NAME_MAX
        || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789-_.") != n)
    {
        return ds_v_fail(c, at, 0, "invalid GPU name %s", ds_q(&qb, name));
    }

    if (*names == NULL) {
        *names = cJSON_CreateArray();
        if (*names == NULL) {
            return ds_v_oom(c);
        }
    }

    if (cJSON_GetArraySize(*names) >= DS_SPEC_LIST_MAX) {
        return ds_v_fail(c, at, 0, "too many GPU names (more than %d)",
                         DS_SPEC_LIST_MAX);
    }

    return ds_v_append(c, *names, cJSON_CreateString(name));
}


static int
ds_v_f_gpu_names(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i, rc;
    size_t        old;
    const cJSON  *it;

    if (cJSON_IsString(in)) {
        return ds_v_gpu_name(c, in, in->valuestring, strlen(in->valuestring),
                             out);
    }

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a GPU name or a list of names, "
                         "got %s", ds_tname(in));
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        old = ds_v_pushi(c, i);
        if (!cJSON_IsString(it)) {
            ds_v_fail(c, it, 0, "expected a GPU name, got %s",
                      ds_tname(it));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }
        rc = ds_v_gpu_name(c, it, it->valuestring, strlen(it->valuestring),
                           out);
        ds_v_pop(c, old);
        if (rc != DS_OK) {
            return rc;
        }
    }

    return DS_OK;
}


static int
ds_v_f_gpu_count(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_INT, "GPU count");
}


static int
ds_v_f_gpu_memory(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "GPU memory");
}


static int
ds_v_f_gpu_total(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "total GPU memory");
}


enum { G_VENDOR, G_NAME, G_COUNT, G_MEMORY, G_TOTAL, G_N };

static const ds_vfield_t  ds_gpu_fields[G_N] = {
    { "vendor", ds_v_f_vendor, 0, NULL },
    { "name", ds_v_f_gpu_names, 0, NULL },
    { "count", ds_v_f_gpu_count, 0, NULL },
    { "memory", ds_v_f_gpu_memory, 0, NULL },
    { "total_memory", ds_v_f_gpu_total, 0, NULL },
};

static const ds_vunsup_t  ds_gpu_unsup[] = {
    { "compute_capability", "is not supported yet" },
    { NULL, NULL }
};


/* "nvidia:A100,H100:80GB:2" in any order */
static int
ds_v_gpu_tokens(ds_vctx_t *c, const cJSON *in, cJSON **s)
{
    int           rc;
    char          buf[256], *tok, *next, *p, *comma;
    const char   *v;
    ds_vrange_t   r;
    ds_qbuf_t     qa;

    if (ds_v_nospace(in->valuestring, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "invalid GPU spec %s: too long",
                         ds_q(&qa, in->valuestring));
    }

    if (buf[0] == '\0') {
        return ds_v_fail(c, in, 0, "invalid GPU spec \"\": expected e.g. "
                         "A100, 24GB.. or H100:2");
    }

    for (tok = buf; tok; tok = next) {
        next = strchr(tok, ':');
        if (next) {
            *next++ = '\0';
        }

        if (*tok == '\0') {
            return ds_v_fail(c, in, 0, "invalid GPU spec %s: empty part",
                             ds_q(&qa, in->valuestring));
        }

        if ((v = ds_v_vendor(tok)) != NULL) {
            if (s[G_VENDOR]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one vendor", ds_q(&qa, in->valuestring));
            }
            s[G_VENDOR] = cJSON_CreateString(v);
            if (s[G_VENDOR] == NULL) {
                return ds_v_oom(c);
            }

        } else if (isalpha((unsigned char) tok[0])) {
            if (s[G_NAME]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one name part (write A100,H100 for "
                                 "either)", ds_q(&qa, in->valuestring));
            }
            for (p = tok; p; p = comma) {
                comma = strchr(p, ',');
                if (comma == p || *p == '\0') {
                    return ds_v_fail(c, in, 0, "invalid GPU spec %s: empty "
                                     "name", ds_q(&qa, in->valuestring));
                }
                rc = ds_v_gpu_name(c, in, p,
                                   comma ? (size_t) (comma - p) : strlen(p),
                                   &s[G_NAME]);
                if (rc != DS_OK) {
                    return rc;
                }
                if (comma) {
                    comma++;
                }
            }

        } else if (strpbrk(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "abcdefghijklmnopqrstuvwxyz"))
        {
            if (s[G_MEMORY]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one memory size",
                                 ds_q(&qa, in->valuestring));
            }
            rc = ds_v_range_str(c, in, DS_V_MEM, "GPU memory", tok, &r);
            if (rc == DS_OK) {
                rc = ds_v_range_json(c, &r, &s[G_MEMORY]);
            }
            if (rc != DS_OK) {
                return rc;
            }

        } else {
            if (s[G_COUNT]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one count", ds_q(&qa, in->valuestring));
            }
            rc = ds_v_range_str(c, in, DS_V_INT, "GPU count", tok, &r);
            if (rc == DS_OK) {
                rc = ds_v_range_json(c, &r, &s[G_COUNT]);
            }
            if (rc != DS_OK) {
                return rc;
            }
        }
    }

    return DS_OK;
}


static int
ds_v_f_gpu(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[G_N] = { NULL };

    if (cJSON_IsNumber(in)) {
        rc = ds_v_f_gpu_count(c, in, &s[G_COUNT]);

    } else if (cJSON_IsString(in)) {
        rc = ds_v_gpu_tokens(c, in, s);

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_gpu_fields, G_N, ds_gpu_unsup, s);

    } else {
        return ds_v_fail(c, in, 0, "expected a GPU spec (e.g. A100, 24GB.., "
                         "H100:2), got %s", ds_tname(in));
    }

    /* asking for a GPU means at least one */
    if (rc == DS_OK && s[G_COUNT] == NULL) {
        rc = ds_v_range_default(c, 1, &s[G_COUNT]);
    }

    return ds_v_finish(c, ds_gpu_fields, G_N, s, rc, out);
}


enum { R_CPU, R_MEMORY, R_DISK, R_GPU, R_SHM_SIZE, R_N };

static const ds_vfield_t  ds_resources_fields[R_N] = {
    { "cpu", ds_v_f_cpu, 0, NULL },
    { "memory", ds_v_f_memory, 0, NULL },
    { "disk", ds_v_f_disk, 0, NULL },
    { "gpu", ds_v_f_gpu, 0, NULL },
    { "shm_size", ds_v_f_shm_size, 0, NULL },
};


/* in NULL: the defaults */
int
ds_v_f_resources(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[R_N] = { NULL };
    cJSON  *sub[G_N] = { NULL };

    rc = DS_OK;

    if (in) {
        rc = ds_v_object(c, in, ds_resources_fields, R_N, NULL, s);
    }

    if (rc == DS_OK && s[R_CPU] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_CPU, &sub[1]);
        if (rc == DS_OK) {
            rc = ds_v_assemble(c, ds_cpu_fields, 2, sub, &s[R_CPU]);
        }
        ds_v_free_slots(sub, G_N);
    }

    if (rc == DS_OK && s[R_MEMORY] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_MEM_MB, &s[R_MEMORY]);
    }

    if (rc == DS_OK && s[R_DISK] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_DISK_MB, &s[R_DISK]);
    }

    /* no gpu: any number, none included */
    if (rc == DS_OK && s[R_GPU] == NULL) {
        rc = ds_v_range_default(c, 0, &sub[G_COUNT]);
        if (rc == DS_OK) {
            rc = ds_v_assemble(c, ds_gpu_fields, G_N, sub, &s[R_GPU]);
        }
        ds_v_free_slots(sub, G_N);
    }

    return ds_v_finish(c, ds_resources_fields, R_N, s, rc, out);
}
