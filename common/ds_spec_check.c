/*
 * The validator's walk: a mapping against its field table, lists,
 * enums, numbers and strings, and messages that say where.  See
 * ds_spec_impl.h.
 */

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_spec_impl.h"


/*
 * at: the node the message is about; key: point at its key rather than
 * its value (unknown and duplicate keys).  Without locations, the path
 * names the place: the caller has pushed the value's path, or, for a
 * key, left the mapping's.  With file_paths, a file's messages carry
 * the path too, after the place: in a fleet's long lists of hosts the
 * line alone does not say which field of which host is meant.
 */
int
ds_v_fail(ds_vctx_t *c, const cJSON *at, int key, const char *fmt, ...)
{
    char     msg[sizeof(c->err->msg)], head[sizeof(c->err->msg)];
    size_t   len;
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (c->doc == NULL) {
        snprintf(head, sizeof(head), "spec%s: ", c->path);
    } else {
        ds_yaml_where(c->doc, at, key, head, sizeof(head));

        /* the path starts with the separator of its first name */
        if (c->file_paths && c->plen > 0) {
            len = strlen(head);
            snprintf(head + len, sizeof(head) - len, "%s: ",
                     c->path + (c->path[0] == '.'));
        }
    }

    ds_err_put(c->err, head, msg);

    return DS_EINVAL;
}


int
ds_v_warn(ds_vctx_t *c, const cJSON *at, int key, const char *fmt, ...)
{
    char       msg[sizeof(c->err->msg)], head[sizeof(c->err->msg)];
    size_t     len;
    va_list    ap;
    ds_err_t   e;

    if (c->warnings == NULL) {
        return DS_OK;
    }

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (c->doc == NULL) {
        snprintf(head, sizeof(head), "spec%s: ", c->path);

    } else {
        ds_yaml_where(c->doc, at, key, head, sizeof(head));
        if (c->plen > 0) {
            len = strlen(head);
            snprintf(head + len, sizeof(head) - len, "%s: ",
                     c->path + (c->path[0] == '.'));
        }
    }

    /* cut to the length of an error message, as errors are */
    memset(&e, 0, sizeof(e));
    ds_err_put(&e, head, msg);

    return ds_v_append(c, c->warnings, cJSON_CreateString(e.msg));
}


int
ds_v_oom(ds_vctx_t *c)
{
    snprintf(c->err->msg, sizeof(c->err->msg), "out of memory");
    return DS_ERROR;
}


int
ds_v_yaml(const char *filename, const char *text, size_t len,
    const char *empty, int file_paths, ds_vfn_t fn, cJSON **normalized,
    cJSON *warnings, ds_err_t *err)
{
    int             rc;
    char            head[sizeof(err->msg)], msg[sizeof(err->msg)];
    const cJSON    *root;
    ds_vctx_t       c;
    ds_yaml_doc_t  *doc;

    *normalized = NULL;

    if (filename == NULL) {
        filename = "<input>";
    }

    if (len > DS_SPEC_INPUT_MAX) {
        snprintf(err->msg, sizeof(err->msg), "%s:1:1: file too large: %zu "
                 "bytes (the limit is 1 MiB)", filename, len);
        return DS_EINVAL;
    }

    if (text == NULL) {
        text = "";
        len = 0;
    }

    rc = ds_yaml_load(filename, text, len, &doc, err);
    if (rc != DS_OK) {
        return rc;
    }

    root = ds_yaml_root(doc);

    if (root == NULL || cJSON_IsNull(root)) {
        ds_yaml_free(doc);
        snprintf(head, sizeof(head), "%s:1:1: ", filename);
        snprintf(msg, sizeof(msg), "empty file: expected %s", empty);
        ds_err_put(err, head, msg);
        return DS_EINVAL;
    }

    memset(&c, 0, sizeof(c));
    c.doc = doc;
    c.file_units = 1;
    c.file_paths = file_paths;
    c.err = err;
    c.warnings = warnings;

    rc = fn(&c, root, normalized);

    ds_yaml_free(doc);

    return rc;
}


/* path += sep + name, cut to fit; the length to pop back to */
static size_t
ds_v_path_add(ds_vctx_t *c, const char *sep, const char *name)
{
    size_t  old;

    old = c->plen;
    snprintf(c->path + old, sizeof(c->path) - old, "%s%s", sep, name);
    c->plen += strlen(c->path + old);

    return old;
}


size_t
ds_v_push(ds_vctx_t *c, const char *name)
{
    return ds_v_path_add(c, ".", name);
}


size_t
ds_v_pushi(ds_vctx_t *c, int i)
{
    char  index[16];

    snprintf(index, sizeof(index), "[%d]", i);
    return ds_v_path_add(c, "", index);
}


void
ds_v_pop(ds_vctx_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}


/* takes item (NULL: allocation failed) */
int
ds_v_add(ds_vctx_t *c, cJSON *obj, const char *name, cJSON *item)
{
    if (item == NULL) {
        return ds_v_oom(c);
    }
    if (!cJSON_AddItemToObject(obj, name, item)) {
        cJSON_Delete(item);
        return ds_v_oom(c);
    }
    return DS_OK;
}


int
ds_v_append(ds_vctx_t *c, cJSON *arr, cJSON *item)
{
    if (item == NULL) {
        return ds_v_oom(c);
    }
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return ds_v_oom(c);
    }
    return DS_OK;
}


void
ds_v_free_slots(cJSON **s, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        cJSON_Delete(s[i]);
        s[i] = NULL;
    }
}


/* the value, or NULL when absent or null */
const cJSON *
ds_v_get(const cJSON *obj, const char *name)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNull(v) ? NULL : v;
}


/* a duplicate of member m among the ones before it (JSON input) */
int
ds_v_dups(ds_vctx_t *c, const cJSON *obj, const cJSON *m)
{
    const cJSON  *p;
    ds_qbuf_t     qb;

    /* a tree built by hand may lack a key; a parsed one never does */
    if (m->string == NULL) {
        return ds_v_fail(c, m, 0, "a member of a mapping has no key");
    }

    for (p = obj->child; p && p != m; p = p->next) {
        if (p->string && strcmp(p->string, m->string) == 0) {
            return ds_v_fail(c, m, 1, "duplicate key %s", ds_q(&qb,
                             m->string));
        }
    }
    return DS_OK;
}


/*
 * Walks the members of a mapping in their order, so that the first
 * error in the file is the one reported: each known key's value goes
 * through its field's function into slot[i]; unknown and unsupported
 * keys are errors.  A null value counts as absent, except for a
 * required field, whose function then says what it expected.
 */
int
ds_v_object(ds_vctx_t *c, const cJSON *in, const ds_vfield_t *f, size_t nf,
    const ds_vunsup_t *u, cJSON **slot)
{
    int           rc;
    size_t        i, old;
    const cJSON  *m;
    const char   *cand[48], *near;
    ds_qbuf_t     qa, qb;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping, got %s",
                         ds_tname(in));
    }

    for (m = in->child; m; m = m->next) {
        if (ds_v_dups(c, in, m) != DS_OK) {
            return DS_EINVAL;
        }

        for (i = 0; i < nf; i++) {
            if (strcmp(m->string, f[i].name) == 0) {
                break;
            }
        }

        if (i == nf) {
            for ( /* void */ ; u && u->name; u++) {
                if (strcmp(m->string, u->name) == 0) {
                    return ds_v_fail(c, m, 1, "%s %s", ds_q(&qa, u->name),
                                     u->why);
                }
            }

            for (i = 0; i < nf && i < DS_NFIELDS(cand); i++) {
                cand[i] = f[i].name;
            }
            near = ds_suggest(m->string, cand, i);

            if (near) {
                return ds_v_fail(c, m, 1,
                                 "unknown key %s (did you mean %s?)",
                                 ds_q(&qa, m->string), ds_q(&qb, near));
            }
            return ds_v_fail(c, m, 1, "unknown key %s",
                             ds_q(&qa, m->string));
        }

        if (cJSON_IsNull(m) && !(f[i].flags & DS_VF_REQUIRED)) {
            continue;
        }

        old = ds_v_push(c, f[i].name);
        rc = f[i].fn ? f[i].fn(c, m, &slot[i])
                     : ds_v_f_enum(c, m, f[i].words, &slot[i]);
        ds_v_pop(c, old);

        if (rc != DS_OK) {
            return rc;
        }
    }

    for (i = 0; i < nf; i++) {
        if ((f[i].flags & DS_VF_REQUIRED)
            && cJSON_GetObjectItemCaseSensitive(in, f[i].name) == NULL)
        {
            return ds_v_fail(c, in, 0, "missing required field %s",
                             ds_q(&qa, f[i].name));
        }
    }

    return DS_OK;
}


/* the normalized mapping, fields in their table's order; takes slots */
int
ds_v_assemble(ds_vctx_t *c, const ds_vfield_t *f, size_t nf, cJSON **slot,
    cJSON **out)
{
    size_t  i;
    cJSON  *o, *item;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0; i < nf; i++) {
        item = slot[i] ? slot[i] : cJSON_CreateNull();
        slot[i] = NULL;
        if (ds_v_add(c, o, f[i].name, item) != DS_OK) {
            cJSON_Delete(o);
            return DS_ERROR;
        }
    }

    *out = o;
    return DS_OK;
}


int
ds_v_finish(ds_vctx_t *c, const ds_vfield_t *f, size_t nf, cJSON **slot,
    int rc, cJSON **out)
{
    if (rc == DS_OK) {
        rc = ds_v_assemble(c, f, nf, slot, out);
    }

    ds_v_free_slots(slot, nf);
    return rc;
}


/* "a, b or c" */
static void
ds_v_list_words(char *buf, size_t size, const char *const *w, size_t n)
{
    size_t  i, len;

    buf[0] = '\0';
    for (i = 0; i < n; i++) {
        len = strlen(buf);
        snprintf(buf + len, size - len, "%s%s",
                 i == 0 ? "" : (i + 1 == n ? " or " : ", "), w[i]);
    }
}


/* one of the words; *idx its index */
int
ds_v_enum(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *const *w, size_t n, size_t *idx)
{
    size_t       i;
    char         list[160];
    const char  *near;
    ds_qbuf_t    qa, qb;

    ds_v_list_words(list, sizeof(list), w, n);

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected %s, got %s", list,
                         ds_tname(in));
    }

    for (i = 0; i < n; i++) {
        if (strcmp(in->valuestring, w[i]) == 0) {
            *idx = i;
            return DS_OK;
        }
    }

    near = ds_suggest(in->valuestring, w, n);
    if (near) {
        return ds_v_fail(c, in, 0,
                         "invalid %s %s: expected %s (did you mean %s?)",
                         what, ds_q(&qa, in->valuestring), list,
                         ds_q(&qb, near));
    }

    return ds_v_fail(c, in, 0, "invalid %s %s: expected %s", what,
                     ds_q(&qa, in->valuestring), list);
}


/* an enum whose canonical spelling is also its normalized value */
int
ds_v_f_enum(ds_vctx_t *c, const cJSON *in, const ds_venum_t *e, cJSON **out)
{
    size_t  i;

    if (ds_v_enum(c, in, e->what, e->words, e->n, &i) != DS_OK) {
        return DS_EINVAL;
    }

    return ds_v_out_str(c, e->words[i], out);
}


int
ds_v_is_whole(double d)
{
    return d >= -9007199254740992.0 && d <= 9007199254740992.0
           && d == (double) (int64_t) d;
}


/* an integer in [min, max] */
int
ds_v_uint(ds_vctx_t *c, const cJSON *in, uint64_t min, uint64_t max,
    uint64_t *v)
{
    double  d;

    *v = 0;

    if (!cJSON_IsNumber(in)) {
        return ds_v_fail(c, in, 0, "expected an integer, got %s",
                         ds_tname(in));
    }

    d = in->valuedouble;

    if (!ds_v_is_whole(d)) {
        return ds_v_fail(c, in, 0, "expected an integer, got %.15g", d);
    }

    if (d < (double) min || d > (double) max) {
        if (max == UINT64_MAX) {
            return ds_v_fail(c, in, 0, "expected an integer >= %llu, got %.15g",
                             (unsigned long long) min, d);
        }
        return ds_v_fail(c, in, 0, "expected an integer from %llu to %llu, "
                         "got %.15g", (unsigned long long) min,
                         (unsigned long long) max, d);
    }

    *v = (uint64_t) d;
    return DS_OK;
}


int
ds_v_f_uint(ds_vctx_t *c, const cJSON *in, uint64_t min, uint64_t max,
    cJSON **out)
{
    uint64_t  v;

    if (ds_v_uint(c, in, min, max, &v) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateNumber((double) v);
    return *out ? DS_OK : ds_v_oom(c);
}


int
ds_v_has_space(const char *s)
{
    for ( /* void */ ; *s; s++) {
        if ((unsigned char) *s <= 0x20 || *s == 0x7f) {
            return 1;
        }
    }
    return 0;
}


int
ds_v_has_ctl(const char *s)
{
    for ( /* void */ ; *s; s++) {
        if (((unsigned char) *s < 0x20 && *s != '\t') || *s == 0x7f) {
            return 1;
        }
    }
    return 0;
}


/* a run's name, and a fleet's: dstack's rule */
const char *
ds_v_run_name_wrong(const char *s)
{
    return ds_valid_run_name(s, strlen(s))
           ? NULL
           : ": expected 2 to 41 lowercase letters, digits or \"-\", "
             "starting with a letter";
}


int
ds_v_f_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "run name", ds_v_run_name_wrong, out);
}


/* a non-empty string */
int
ds_v_str(ds_vctx_t *c, const cJSON *in, const char **s)
{
    *s = "";

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }
    if (in->valuestring[0] == '\0') {
        return ds_v_fail(c, in, 0, "expected a non-empty string");
    }
    *s = in->valuestring;
    return DS_OK;
}


/* *out = a new string s */
int
ds_v_out_str(ds_vctx_t *c, const char *s, cJSON **out)
{
    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


/* a non-empty string that `wrong` finds nothing wrong with */
int
ds_v_f_checked(ds_vctx_t *c, const cJSON *in, const char *what,
    ds_vwrong_pt wrong, cJSON **out)
{
    const char  *s, *why;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    why = wrong(s);
    if (why) {
        return ds_v_fail(c, in, 0, "invalid %s %s%s", what, ds_q(&qb, s),
                         why);
    }

    return ds_v_out_str(c, s, out);
}


/*
 * The text of a scalar: a string as is; a number or boolean as written
 * in the file, or formatted when it came as JSON.  -1 for lists,
 * mappings and null.
 */
int
ds_v_text(ds_vctx_t *c, const cJSON *in, const char **s, char *buf,
    size_t size)
{
    const char  *raw;
    double       d;

    if (cJSON_IsString(in)) {
        *s = in->valuestring;
        return 0;
    }

    if (!cJSON_IsNumber(in) && !cJSON_IsBool(in)) {
        return -1;
    }

    raw = ds_yaml_raw(c->doc, in);
    if (raw) {
        *s = raw;
        return 0;
    }

    if (cJSON_IsBool(in)) {
        *s = cJSON_IsTrue(in) ? "true" : "false";
        return 0;
    }

    d = in->valuedouble;
    if (ds_v_is_whole(d)) {
        snprintf(buf, size, "%lld", (long long) d);
    } else {
        snprintf(buf, size, "%.15g", d);
        if (strtod(buf, NULL) != d) {
            snprintf(buf, size, "%.17g", d);
        }
    }

    *s = buf;
    return 0;
}

/* ---- simple fields ------------------------------------------------------ */

int
ds_v_f_bool(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsString(in)
        && (strcmp(in->valuestring, "true") == 0
            || strcmp(in->valuestring, "false") == 0))
    {
        return ds_v_fail(c, in, 0, "expected true or false, got a string "
                         "(write %s without quotes)", in->valuestring);
    }

    if (!cJSON_IsBool(in)) {
        return ds_v_fail(c, in, 0, "expected true or false, got %s",
                         ds_tname(in));
    }

    *out = cJSON_CreateBool(cJSON_IsTrue(in));
    return *out ? DS_OK : ds_v_oom(c);
}


int
ds_v_f_str(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


/* any string, even empty */
int
ds_v_f_anystr(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }

    *out = cJSON_CreateString(in->valuestring);
    return *out ? DS_OK : ds_v_oom(c);
}


/* a non-empty scalar as text: "user: 1000" is the string "1000" */
int
ds_v_f_text(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    char         buf[64];
    const char  *s;

    if (ds_v_text(c, in, &s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }
    if (s[0] == '\0') {
        return ds_v_fail(c, in, 0, "expected a non-empty string");
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}



int
ds_v_positive(ds_vctx_t *c, const cJSON *in, const char *what, double max,
    cJSON **out)
{
    double  d;

    if (!cJSON_IsNumber(in)) {
        return ds_v_fail(c, in, 0, "expected a number, got %s",
                         ds_tname(in));
    }

    d = in->valuedouble;

    if (!(d > 0)) {
        return ds_v_fail(c, in, 0, "%s must be greater than 0, got %.15g",
                         what, d);
    }
    if (!(d <= max)) {
        return ds_v_fail(c, in, 0, "%s must be at most %.15g, got %.15g",
                         what, max, d);
    }

    *out = cJSON_CreateNumber(d);
    return *out ? DS_OK : ds_v_oom(c);
}


/* a URL path: "/", then no spaces or control characters, nor p->banned */
int
ds_v_path(ds_vctx_t *c, const cJSON *in, const ds_vpath_t *p, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected %s, got %s", p->expected,
                         ds_tname(in));
    }

    s = in->valuestring;

    if (s[0] != '/') {
        return ds_v_fail(c, in, 0, "invalid %s %s: must start with \"/\"",
                         p->what, ds_q(&qb, s));
    }

    if (ds_v_has_space(s) || strpbrk(s, p->banned)) {
        return ds_v_fail(c, in, 0, "invalid %s %s: must not contain %s",
                         p->what, ds_q(&qb, s), p->refused);
    }

    if (strlen(s) > p->max) {
        return ds_v_fail(c, in, 0, "%s is longer than %zu characters",
                         p->what, p->max);
    }

    return ds_v_out_str(c, s, out);
}


/* a prefix of URL paths: braces and backslashes would confuse nginx */
int
ds_v_f_prefix(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const ds_vpath_t  prefix = {
        "prefix", "a path prefix (e.g. \"/\")", "\\{}",
        "spaces, \"\\\", \"{\" or \"}\"", DS_PREFIX_MAX
    };

    return ds_v_path(c, in, &prefix, out);
}


/*
 * A list of at most `max` mappings, each validated by `item`; errors
 * carry the index in their path.
 */
int
ds_v_list(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *expected, int max, ds_v_item_pt item, cJSON **out)
{
    int           i, rc;
    size_t        old;
    const cJSON  *it;
    cJSON        *one;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected %s, got %s", expected,
                         ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > max) {
        return ds_v_fail(c, in, 0, "too many %s (more than %d)", what, max);
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        one = NULL;
        old = ds_v_pushi(c, i);
        rc = item(c, it, *out, &one);
        ds_v_pop(c, old);

        if (rc != DS_OK || ds_v_append(c, *out, one) != DS_OK) {
            return rc != DS_OK ? rc : DS_ERROR;
        }
    }

    return DS_OK;
}
