/*
 * The .dstack.yml as the CLI sees it: read, parsed and validated by
 * common/ds_spec (errors "file:line:col: message"), env resolved from
 * this process and -e; plus the one-line summaries of resources,
 * replicas and offers the tables print.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_spec.h"
#include "dstackctl.h"


/*
 * A document file: read, parsed by parse (its errors are the parser's
 * "file:line:col: message"), bare env names filled by resolve from -e
 * and the environment unless resolve is NULL.  0, or -1 (said).
 */
int
dsctl_doc_load(dsctl_spec_t *sp, const char *file, char **overrides,
    int n_overrides, dsctl_parse_fn parse, dsctl_resolve_fn resolve,
    const char *what)
{
    char         *text;
    size_t        len;
    ds_err_t      err;
    cJSON        *spec = NULL;
    const char  **ov;
    int           i, rc;

    memset(sp, 0, sizeof(*sp));
    text = dsctl_read_input(file, &len);
    if (text == NULL) {
        dsctl_error("cannot read \"%s\": %s", file, strerror(errno));
        return -1;
    }

    memset(&err, 0, sizeof(err));
    rc = parse(strcmp(file, "-") == 0 ? "<stdin>" : file, text, len, &spec,
        &err);
    free(text);
    if (rc != DS_OK) {
        /* "file:line:col: message", as compilers print it */
        fflush(stdout);
        fprintf(stderr, "%s\n", err.msg[0] ? err.msg : what);
        cJSON_Delete(spec);
        return -1;
    }

    if (resolve != NULL) {
        ov = dsctl_xmalloc(sizeof(char *) * (n_overrides + 1));
        for (i = 0; i < n_overrides; i++) {
            ov[i] = overrides[i];
        }
        ov[n_overrides] = NULL;
        memset(&err, 0, sizeof(err));
        rc = resolve(spec, ov, NULL, &err);
        free(ov);
        if (rc != DS_OK) {
            dsctl_error("%s: %s", file, err.msg[0] ? err.msg
                                                   : "invalid env");
            cJSON_Delete(spec);
            return -1;
        }
    }

    sp->file = dsctl_xstrdup(file);
    sp->spec = spec;
    return 0;
}


/* "-" is stdin, read once: apply looks at the document more than once */
char *
dsctl_read_input(const char *file, size_t *len)
{
    static char    *in;
    static size_t   in_len;
    char           *copy;

    if (strcmp(file, "-") != 0) {
        return dsctl_read_file(file, len);
    }
    if (in == NULL) {
        in = dsctl_read_file("/dev/stdin", &in_len);
        if (in == NULL) {
            return NULL;
        }
    }
    copy = dsctl_xmalloc(in_len + 1);
    memcpy(copy, in, in_len + 1);
    *len = in_len;
    return copy;
}


/*
 * The resources one option gives (--gpu 24GB..80GB:2), read by the
 * spec's own parser from a minimal document so that the syntax is
 * dstack's and the same as in a file: the normalized resources, or NULL
 * after printing "--gpu: <why>".
 */
static cJSON *
dsctl_resource_doc(const char *key, const char *value, cJSON **doc)
{
    dsctl_str_t   y = { 0 };
    ds_err_t      err;
    cJSON        *v;
    char         *q, *msg, path[32];
    int           rc, i;

    /* a JSON string is a YAML scalar: the value cannot escape it */
    v = cJSON_CreateString(value);
    q = cJSON_PrintUnformatted(v);
    cJSON_Delete(v);
    dsctl_str_addf(&y, "type: service\ncommands: [\"true\"]\nport: 80\n"
        "resources:\n  %s: %s\n", key, q != NULL ? q : "\"\"");
    free(q);

    memset(&err, 0, sizeof(err));
    *doc = NULL;
    rc = ds_spec_parse_yaml("-", y.s, y.len, doc, &err);
    dsctl_str_free(&y);
    if (rc != DS_OK) {
        /* the document is ours: drop its "-:5:8: " */
        msg = err.msg;
        for (i = 0; i < 3 && strchr(msg, ':') != NULL; i++) {
            msg = strchr(msg, ':') + 1;
        }
        while (*msg == ' ') {
            msg++;
        }
        /* and its "resources.gpu: ": the option names the field */
        snprintf(path, sizeof(path), "resources.%s: ", key);
        if (strncmp(msg, path, strlen(path)) == 0) {
            msg += strlen(path);
        }
        dsctl_error("--%s: %s", key, msg[0] ? msg : "invalid value");
        cJSON_Delete(*doc);
        *doc = NULL;
        return NULL;
    }
    return cJSON_GetObjectItemCaseSensitive(*doc, "resources");
}


int
dsctl_spec_override(cJSON *spec, const char *key, const char *value)
{
    cJSON     *doc, *res, *from, *to, *checked;
    ds_err_t   err;

    from = dsctl_resource_doc(key, value, &doc);
    if (from == NULL) {
        return -1;
    }
    res = cJSON_GetObjectItemCaseSensitive(spec, "resources");
    from = cJSON_DetachItemFromObjectCaseSensitive(from, key);
    to = cJSON_GetObjectItemCaseSensitive(res, key);
    cJSON_Delete(doc);
    if (!cJSON_IsObject(res) || from == NULL || to == NULL) {
        cJSON_Delete(from);
        dsctl_error("--%s: the spec has no resources.%s", key, key);
        return -1;
    }
    cJSON_ReplaceItemViaPointer(res, to, from);

    /* the whole spec once more: a range that no longer holds is said */
    memset(&err, 0, sizeof(err));
    if (ds_spec_validate_json(spec, &checked, &err) != DS_OK) {
        dsctl_error("--%s \"%s\": %s", key, value,
            err.msg[0] ? err.msg : "invalid");
        return -1;
    }
    cJSON_Delete(checked);
    return 0;
}


cJSON *
dsctl_spec_resources_only(const dsctl_resource_opt_t *ro)
{
    cJSON        *doc, *res;
    const char   *keys[] = { "cpu", "gpu", "memory", "disk" };
    const char   *vals[4];
    int           i;

    vals[0] = ro->cpu;
    vals[1] = ro->gpu;
    vals[2] = ro->memory;
    vals[3] = ro->disk;
    /* a spec with the defaults, then each option over it */
    res = dsctl_resource_doc("cpu", "2..", &doc);
    if (res == NULL) {
        return NULL;
    }
    for (i = 0; i < 4; i++) {
        if (vals[i] != NULL && dsctl_spec_override(doc, keys[i], vals[i])
            != 0)
        {
            cJSON_Delete(doc);
            return NULL;
        }
    }
    return doc;
}


int
dsctl_spec_overrides(cJSON *spec, const dsctl_resource_opt_t *ro)
{
    return (ro->cpu != NULL && dsctl_spec_override(spec, "cpu", ro->cpu))
        || (ro->gpu != NULL && dsctl_spec_override(spec, "gpu", ro->gpu))
        || (ro->memory != NULL
            && dsctl_spec_override(spec, "memory", ro->memory))
        || (ro->disk != NULL && dsctl_spec_override(spec, "disk", ro->disk))
        ? -1 : 0;
}


/*
 * The parser, printing the fields it ignores to stderr, before any
 * plan: "serve.dstack.yml:12:1: tags: ignored: why".  The daemon's
 * plan and apply answer the same warnings to other clients.
 */
static int
dsctl_spec_parse(const char *file, const char *text, size_t len,
    cJSON **spec, ds_err_t *err)
{
    int           rc;
    cJSON        *w;
    const cJSON  *it;

    w = cJSON_CreateArray();
    if (w == NULL) {
        snprintf(err->msg, sizeof(err->msg), "out of memory");
        return DS_ERROR;
    }

    rc = ds_spec_parse_yaml_warn(file, text, len, spec, w, err);
    if (rc == DS_OK) {
        fflush(stdout);
        cJSON_ArrayForEach(it, w) {
            fprintf(stderr, "%s\n", it->valuestring);
        }
    }

    cJSON_Delete(w);
    return rc;
}


int
dsctl_spec_load(dsctl_spec_t *sp, const char *file, char **overrides,
    int n_overrides, int resolve)
{
    return dsctl_doc_load(sp, file, overrides, n_overrides,
                          dsctl_spec_parse,
                          resolve ? ds_spec_resolve_env : NULL,
                          "invalid spec");
}


void
dsctl_spec_free(dsctl_spec_t *sp)
{
    free(sp->file);
    cJSON_Delete(sp->spec);
    memset(sp, 0, sizeof(*sp));
}


/* ---- summaries ------------------------------------------------------------ */

typedef void (*dsctl_fmt_fn)(char *buf, size_t n, double v);

static void
dsctl_fmt_count(char *buf, size_t n, double v)
{
    snprintf(buf, n, "%.0f", v);
}


/* {"min","max"} -> "2", "2..", "..4", "1..4"; empty when absent */
static void
dsctl_range(const cJSON *r, dsctl_fmt_fn fmt, dsctl_str_t *out)
{
    const cJSON  *mn, *mx;
    char          a[32], b[32];

    if (!cJSON_IsObject(r)) {
        return;
    }
    mn = cJSON_GetObjectItemCaseSensitive(r, "min");
    mx = cJSON_GetObjectItemCaseSensitive(r, "max");
    a[0] = b[0] = '\0';
    if (cJSON_IsNumber(mn) && mn->valuedouble > 0) {
        fmt(a, sizeof(a), mn->valuedouble);
    }
    if (cJSON_IsNumber(mx)) {
        fmt(b, sizeof(b), mx->valuedouble);
    }
    if (a[0] == '\0' && b[0] == '\0') {
        dsctl_str_add(out, "0..", 3);
    } else if (strcmp(a, b) == 0) {
        dsctl_str_add(out, a, strlen(a));
    } else if (b[0] == '\0') {
        dsctl_str_addf(out, "%s..", a);
    } else if (a[0] == '\0') {
        dsctl_str_addf(out, "..%s", b);
    } else {
        dsctl_str_addf(out, "%s..%s", a, b);
    }
}


/* dstack's way: "2..xCPU, 8GB.., A100:80GB:1, 100GB.. (disk)" */
void
dsctl_spec_resources(const cJSON *spec, dsctl_str_t *out)
{
    const cJSON  *res, *cpu, *gpu, *names, *name, *cnt, *mn, *mx, *mem;
    const char   *arch, *vendor;
    int           first;

    res = cJSON_GetObjectItemCaseSensitive(spec, "resources");
    cpu = cJSON_GetObjectItemCaseSensitive(res, "cpu");
    dsctl_range(cJSON_GetObjectItemCaseSensitive(cpu, "count"),
        dsctl_fmt_count, out);
    dsctl_str_add(out, "xCPU", 4);
    arch = dsctl_json_str(cpu, "arch");
    if (arch != NULL) {
        dsctl_str_addf(out, " (%s)", arch);
    }

    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(res, "memory"))) {
        dsctl_str_add(out, ", ", 2);
        dsctl_range(cJSON_GetObjectItemCaseSensitive(res, "memory"),
            dsctl_fmt_mb, out);
    }

    /* the default "gpu: 0.." (any, none needed) is not worth a word */
    gpu = cJSON_GetObjectItemCaseSensitive(res, "gpu");
    cnt = cJSON_GetObjectItemCaseSensitive(gpu, "count");
    mn = cJSON_GetObjectItemCaseSensitive(cnt, "min");
    mx = cJSON_GetObjectItemCaseSensitive(cnt, "max");
    names = cJSON_GetObjectItemCaseSensitive(gpu, "name");
    if (cJSON_IsObject(gpu) && !(cJSON_IsNumber(mx) && mx->valuedouble == 0)
        && ((cJSON_IsNumber(mn) && mn->valuedouble > 0)
            || cJSON_GetArraySize(names) > 0
            || dsctl_json_str(gpu, "vendor") != NULL
            || cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(gpu, "memory"))
            || cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(gpu,
                   "total_memory"))))
    {
        /* dstack's GPU spec: "nvidia:A100,H100:80GB:2" */
        dsctl_str_add(out, ", ", 2);
        vendor = dsctl_json_str(gpu, "vendor");
        first = 1;
        if (vendor != NULL) {
            dsctl_str_addf(out, "%s:", vendor);
        }
        for (name = cJSON_IsArray(names) ? names->child : NULL; name;
             name = name->next)
        {
            if (cJSON_IsString(name)) {
                dsctl_str_addf(out, "%s%s", first ? "" : ",",
                    name->valuestring);
                first = 0;
            }
        }
        if (!first) {
            dsctl_str_add(out, ":", 1);
        }
        mem = cJSON_GetObjectItemCaseSensitive(gpu, "memory");
        if (cJSON_IsObject(mem)) {
            dsctl_range(mem, dsctl_fmt_mb, out);
            dsctl_str_add(out, ":", 1);
        }
        dsctl_range(cnt, dsctl_fmt_count, out);
        mem = cJSON_GetObjectItemCaseSensitive(gpu, "total_memory");
        if (cJSON_IsObject(mem)) {
            dsctl_str_add(out, " (total ", 8);
            dsctl_range(mem, dsctl_fmt_mb, out);
            dsctl_str_add(out, ")", 1);
        }
    }

    if (cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(res, "disk"))) {
        dsctl_str_add(out, ", ", 2);
        dsctl_range(cJSON_GetObjectItemCaseSensitive(res, "disk"),
            dsctl_fmt_mb, out);
        dsctl_str_add(out, " (disk)", 7);
    }
}


/* "2", or "0..4 (rps, target 10)" */
void
dsctl_spec_replicas(const cJSON *spec, dsctl_str_t *out)
{
    const cJSON  *sc;
    const char   *metric;
    char          t[32];

    dsctl_range(cJSON_GetObjectItemCaseSensitive(spec, "replicas"),
        dsctl_fmt_count, out);
    sc = cJSON_GetObjectItemCaseSensitive(spec, "scaling");
    if (cJSON_IsObject(sc)) {
        metric = dsctl_json_str(sc, "metric");
        snprintf(t, sizeof(t), "%g", dsctl_json_num(sc, "target", 0));
        dsctl_str_addf(out, " (%s, target %s)",
            metric != NULL ? metric : "rps", t);
    }
}


const char *
dsctl_spec_model(const cJSON *spec)
{
    const cJSON  *m = cJSON_GetObjectItemCaseSensitive(spec, "model");

    if (cJSON_IsString(m)) {
        return m->valuestring;
    }
    return dsctl_json_str(m, "name");
}


const char *
dsctl_spec_model_prefix(const cJSON *spec)
{
    const cJSON  *m = cJSON_GetObjectItemCaseSensitive(spec, "model");
    const char   *p = dsctl_json_str(m, "prefix");

    return p != NULL ? p : "/v1";
}


/* ---- offers ----------------------------------------------------------------- */

void
dsctl_offer_resources(const cJSON *res, dsctl_str_t *out)
{
    const cJSON  *gpus, *g, *h;
    const char   *name, *hname;
    char          m[32];
    double        mem;
    int           i, j, n, count, seen;

    dsctl_str_addf(out, "%.0fxCPU", dsctl_json_num(res, "cpus", 0));
    dsctl_fmt_mb(m, sizeof(m), dsctl_json_num(res, "memory_mb", 0));
    dsctl_str_addf(out, ", %s", m);

    /* "H100:80GB:2", as dstack writes GPU specs: one group per name and
       memory, in order */
    gpus = cJSON_GetObjectItemCaseSensitive(res, "gpus");
    n = cJSON_GetArraySize(gpus);
    for (i = 0; i < n; i++) {
        g = cJSON_GetArrayItem(gpus, i);
        name = dsctl_json_str(g, "name");
        name = name != NULL ? name : "GPU";
        mem = dsctl_json_num(g, "memory_mb", 0);
        seen = 0;
        for (j = 0; j < i && !seen; j++) {
            h = cJSON_GetArrayItem(gpus, j);
            hname = dsctl_json_str(h, "name");
            seen = strcmp(hname != NULL ? hname : "GPU", name) == 0
                   && dsctl_json_num(h, "memory_mb", 0) == mem;
        }
        if (seen) {
            continue;
        }
        count = 0;
        for (j = i; j < n; j++) {
            h = cJSON_GetArrayItem(gpus, j);
            hname = dsctl_json_str(h, "name");
            if (strcmp(hname != NULL ? hname : "GPU", name) == 0
                && dsctl_json_num(h, "memory_mb", 0) == mem)
            {
                count++;
            }
        }
        dsctl_str_addf(out, ", %s", name);
        if (mem > 0) {
            dsctl_fmt_mb(m, sizeof(m), mem);
            dsctl_str_addf(out, ":%s", m);
        }
        dsctl_str_addf(out, ":%d", count);
    }

    if (dsctl_json_num(res, "disk_mb", 0) > 0) {
        dsctl_fmt_mb(m, sizeof(m), dsctl_json_num(res, "disk_mb", 0));
        dsctl_str_addf(out, ", %s (disk)", m);
    }
}


typedef struct {
    const cJSON    *offer;
    double          price;
    int             index;
} dsctl_offer_ref_t;

static int
dsctl_cmp_offers(const void *a, const void *b)
{
    const dsctl_offer_ref_t  *x = a, *y = b;

    if (x->price != y->price) {
        return x->price < y->price ? -1 : 1;
    }
    return x->index - y->index;
}


void
dsctl_print_offers(const cJSON *offers, int total, int max)
{
    static const char *const  hdr[] = {
        "#", "BACKEND", "REGION", "RESOURCES", "INSTANCE-TYPE", "SPOT",
        "PRICE"
    };
    dsctl_table_t      *t;
    dsctl_offer_ref_t  *refs;
    dsctl_str_t         res = { 0 };
    const char         *itype;
    const cJSON        *o;
    char                num[16], price[32];
    int                 n, i, shown;

    n = cJSON_GetArraySize(offers);
    if (total < n) {
        total = n;
    }
    refs = dsctl_xmalloc(sizeof(*refs) * (n ? n : 1));
    for (i = 0; i < n; i++) {
        refs[i].offer = cJSON_GetArrayItem(offers, i);
        refs[i].price = dsctl_json_num(refs[i].offer, "price", 0);
        refs[i].index = i;
    }
    qsort(refs, n, sizeof(*refs), dsctl_cmp_offers);

    shown = max > 0 && n > max ? max : n;
    t = dsctl_table_new(7, hdr);
    for (i = 0; i < shown; i++) {
        o = refs[i].offer;
        snprintf(num, sizeof(num), "%d", i + 1);
        res.len = 0;
        dsctl_offer_resources(cJSON_GetObjectItemCaseSensitive(o,
            "resources"), &res);
        dsctl_fmt_price(price, sizeof(price), refs[i].price);
        /* an SSH fleet's offer is a host: region the fleet's name,
           "instance" the host, no instance type */
        itype = dsctl_json_str(o, "instance_type");
        if (itype == NULL) {
            itype = dsctl_json_str(o, "instance");
        }
        dsctl_table_addv(t, num, dsctl_json_str(o, "backend"),
            dsctl_json_str(o, "region"), res.s, itype,
            dsctl_json_bool(o, "spot") ? "yes" : "no", price);
    }
    dsctl_table_print(t, stdout);
    if (shown < total) {
        printf(" Shown %d of %d offers\n", shown, total);
    }
    dsctl_table_free(t);
    dsctl_str_free(&res);
    free(refs);
}
