/*
 * volumes and files: what the container mounts, and what the CLI sends
 * along with the code.
 *
 * A volume is an instance volume (a host path) or one of dstack's
 * network volumes, by name, which become named volumes of the
 * container engine here.  Both forms of each normalize to dstack's
 * mapping form, so that the daemon reads one shape (see ds_spec.h).
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_spec_impl.h"


#define DS_VOLUME_NAME_MAX      63
#define DS_ROOT_WHY             "must not be the root directory"


/*
 * The absolute path s[0..n) normalized as dstack's PurePosixPath does
 * (repeated "/" and "." components dropped, no trailing "/") into buf
 * (DS_SPEC_FS_PATH_MAX + 1 bytes).  ".." is refused, not resolved: a
 * mount or a copy must not climb out of where it says it goes.  NULL
 * when fine, else why not, to follow the quoted path.
 */
static const char *
ds_v_abs_path(const char *s, size_t n, char *buf)
{
    size_t       i, k, len;
    const char  *p;

    if (n == 0 || s[0] != '/') {
        return "must be absolute";
    }

    if (n > DS_SPEC_FS_PATH_MAX) {
        return "is too long (more than 4095 characters)";
    }

    len = 0;

    for (i = 0; i < n; i = k) {
        while (i < n && s[i] == '/') {
            i++;
        }
        for (k = i; k < n && s[k] != '/'; k++) {
            if ((unsigned char) s[k] < 0x20 || s[k] == 0x7f) {
                return "must not contain control characters";
            }
        }

        p = s + i;

        if (k - i == 0 || (k - i == 1 && p[0] == '.')) {
            continue;
        }
        if (k - i == 2 && p[0] == '.' && p[1] == '.') {
            return "must not contain \"..\"";
        }

        buf[len++] = '/';
        memcpy(buf + len, p, k - i);
        len += k - i;
    }

    if (len == 0) {
        buf[len++] = '/';
    }
    buf[len] = '\0';

    return NULL;
}


/* ^[a-z0-9][a-z0-9_.-]{0,62}$ over s[0..n) */
static int
ds_v_volume_name_ok(const char *s, size_t n)
{
    size_t  i;

    if (n == 0 || n > DS_VOLUME_NAME_MAX
        || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
    {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '_' || s[i] == '.' || s[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


#define DS_VOLUME_NAME_RULE                                                  \
    "1 to 63 lowercase letters, digits, \"_\", \".\" or \"-\", starting "    \
    "with a letter or digit"


/* ---- volumes ------------------------------------------------------------- */

typedef struct {
    int           named;
    const char   *source;           /* instance_path or name */
    const char   *path;
    int           read_only;
    int           optional;
} ds_volume_t;


static int
ds_v_volume_json(ds_vctx_t *c, const ds_volume_t *v, cJSON **out)
{
    cJSON  *o;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return ds_v_oom(c);
    }

    if (ds_v_add(c, o, v->named ? "name" : "instance_path",
                 cJSON_CreateString(v->source)) != DS_OK
        || ds_v_add(c, o, "path", cJSON_CreateString(v->path)) != DS_OK
        || ds_v_add(c, o, "read_only", cJSON_CreateBool(v->read_only))
           != DS_OK
        || (!v->named
            && ds_v_add(c, o, "optional", cJSON_CreateBool(v->optional))
               != DS_OK))
    {
        cJSON_Delete(o);
        return DS_ERROR;
    }

    *out = o;
    return DS_OK;
}


#define DS_VOLUME_FORM_HOST      "\"/host/path:/container/path[:ro]\""
#define DS_VOLUME_FORM_NAME      "\"NAME:/container/path[:ro]\""

/* "/host:/ctr[:ro|:rw]" or "name:/ctr[:ro|:rw]" */
static int
ds_v_volume_short(ds_vctx_t *c, const cJSON *in, char *hbuf, char *cbuf,
    ds_volume_t *v)
{
    size_t       hn, cn;
    const char  *s, *c1, *c2, *why;
    ds_qbuf_t    qa, qb;
    char         part[4 * DS_MSG_QUOTE_MAX + 8];   /* ds_q cuts it */

    s = in->valuestring;
    c1 = strchr(s, ':');
    c2 = c1 ? strchr(c1 + 1, ':') : NULL;

    if (c1 == NULL || c1 == s || c1[1] == '\0' || c1 + 1 == c2
        || (c2 && strchr(c2 + 1, ':')))
    {
        return ds_v_fail(c, in, 0, "invalid volume %s: expected "
                         DS_VOLUME_FORM_HOST " or " DS_VOLUME_FORM_NAME,
                         ds_q(&qa, s));
    }

    if (c2 && strcmp(c2, ":ro") != 0 && strcmp(c2, ":rw") != 0) {
        return ds_v_fail(c, in, 0, "invalid volume %s: expected \":ro\" or "
                         "\":rw\" at the end, got %s", ds_q(&qa, s),
                         ds_q(&qb, c2));
    }

    hn = (size_t) (c1 - s);
    cn = c2 ? (size_t) (c2 - c1 - 1) : strlen(c1 + 1);

    v->named = s[0] != '/';
    v->read_only = c2 && strcmp(c2, ":ro") == 0;
    v->optional = 0;

    if (v->named) {
        if (!ds_v_volume_name_ok(s, hn)) {
            snprintf(part, sizeof(part), "%.*s", (int) hn, s);
            return ds_v_fail(c, in, 0, "invalid volume %s: the volume name "
                             "%s must be " DS_VOLUME_NAME_RULE " (an "
                             "instance path must be absolute)",
                             ds_q(&qa, s), ds_q(&qb, part));
        }
        memcpy(hbuf, s, hn);
        hbuf[hn] = '\0';

    } else {
        why = ds_v_abs_path(s, hn, hbuf);
        if (why) {
            snprintf(part, sizeof(part), "%.*s", (int) hn, s);
            return ds_v_fail(c, in, 0, "invalid volume %s: the instance "
                             "path %s %s", ds_q(&qa, s), ds_q(&qb, part),
                             why);
        }
    }

    why = ds_v_abs_path(c1 + 1, cn, cbuf);
    if (why == NULL && strcmp(cbuf, "/") == 0) {
        why = DS_ROOT_WHY;
    }
    if (why) {
        snprintf(part, sizeof(part), "%.*s", (int) cn, c1 + 1);
        return ds_v_fail(c, in, 0, "invalid volume %s: the container path "
                         "%s %s", ds_q(&qa, s), ds_q(&qb, part), why);
    }

    v->source = hbuf;
    v->path = cbuf;

    return DS_OK;
}


static int
ds_v_f_volume_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    ds_qbuf_t  qb;

    if (cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a volume name, got a list "
                         "(volumes to choose from are not supported)");
    }

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a volume name, got %s",
                         ds_tname(in));
    }

    if (!ds_v_volume_name_ok(in->valuestring, strlen(in->valuestring))) {
        return ds_v_fail(c, in, 0, "invalid volume name %s: expected "
                         DS_VOLUME_NAME_RULE, ds_q(&qb, in->valuestring));
    }

    return ds_v_out_str(c, in->valuestring, out);
}


/* an absolute path, normalized; the root too unless it is a mount point */
static int
ds_v_abs_path_field(ds_vctx_t *c, const cJSON *in, const char *what,
    int mount, cJSON **out)
{
    const char  *s, *why;
    ds_qbuf_t    qb;
    char         buf[DS_SPEC_FS_PATH_MAX + 1];

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    why = ds_v_abs_path(s, strlen(s), buf);
    if (why == NULL && mount && strcmp(buf, "/") == 0) {
        why = DS_ROOT_WHY;
    }
    if (why) {
        return ds_v_fail(c, in, 0, "invalid %s %s: %s", what, ds_q(&qb, s),
                         why);
    }

    return ds_v_out_str(c, buf, out);
}


static int
ds_v_f_instance_path(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_abs_path_field(c, in, "instance path", 0, out);
}


static int
ds_v_f_volume_path(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_abs_path_field(c, in, "volume path", 1, out);
}


enum { V_NAME, V_INSTANCE_PATH, V_PATH, V_READ_ONLY, V_OPTIONAL, V_N };

static const ds_vfield_t  ds_volume_fields[V_N] = {
    { "name", ds_v_f_volume_name, 0, NULL },
    { "instance_path", ds_v_f_instance_path, 0, NULL },
    { "path", ds_v_f_volume_path, DS_VF_REQUIRED, NULL },
    { "read_only", ds_v_f_bool, 0, NULL },
    { "optional", ds_v_f_bool, 0, NULL },
};


/* {instance_path, path, read_only, optional} or {name, path, read_only} */
static int
ds_v_volume_mapping(ds_vctx_t *c, const cJSON *in, char *hbuf, char *cbuf,
    ds_volume_t *v)
{
    int     rc;
    cJSON  *s[V_N] = { NULL };

    /* the keys in the file's order first, then the pair's rules */
    rc = ds_v_object(c, in, ds_volume_fields, V_N, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[V_NAME] && s[V_INSTANCE_PATH]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in,
                                                           "instance_path"),
                       1, "\"name\" and \"instance_path\" are mutually "
                       "exclusive");
        goto done;
    }

    if (s[V_NAME] == NULL && s[V_INSTANCE_PATH] == NULL) {
        rc = ds_v_fail(c, in, 0, "missing \"instance_path\" (an instance "
                       "volume) or \"name\" (a network volume)");
        goto done;
    }

    /* false is what a named volume is anyway */
    if (s[V_NAME] && cJSON_IsTrue(s[V_OPTIONAL])) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "optional"),
                       1, "\"optional\" is only for instance volumes");
        goto done;
    }

    v->named = s[V_NAME] != NULL;

    /* the slots die here: the strings go to the caller's buffers */
    snprintf(hbuf, DS_SPEC_FS_PATH_MAX + 1, "%s",
             s[v->named ? V_NAME : V_INSTANCE_PATH]->valuestring);
    snprintf(cbuf, DS_SPEC_FS_PATH_MAX + 1, "%s", s[V_PATH]->valuestring);

    v->source = hbuf;
    v->path = cbuf;
    v->read_only = cJSON_IsTrue(s[V_READ_ONLY]);
    v->optional = cJSON_IsTrue(s[V_OPTIONAL]);

done:

    ds_v_free_slots(s, V_N);
    return rc;
}


static int
ds_v_volume(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int            rc;
    size_t         old;
    const cJSON   *prev, *at;
    ds_volume_t    v;
    ds_qbuf_t      qb;
    char           hbuf[DS_SPEC_FS_PATH_MAX + 1];
    char           cbuf[DS_SPEC_FS_PATH_MAX + 1];

    memset(&v, 0, sizeof(v));

    if (cJSON_IsString(in)) {
        rc = ds_v_volume_short(c, in, hbuf, cbuf, &v);
        at = in;

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_volume_mapping(c, in, hbuf, cbuf, &v);
        at = cJSON_GetObjectItemCaseSensitive(in, "path");

    } else {
        return ds_v_fail(c, in, 0, "expected " DS_VOLUME_FORM_HOST ", "
                         DS_VOLUME_FORM_NAME " or a mapping, got %s",
                         ds_tname(in));
    }

    if (rc != DS_OK) {
        return rc;
    }

    for (prev = done->child; prev; prev = prev->next) {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(prev, "path")
                       ->valuestring, v.path) == 0)
        {
            old = at == in ? c->plen : ds_v_push(c, "path");
            rc = ds_v_fail(c, at, 0, "duplicate volume path %s: another "
                           "volume is mounted there", ds_q(&qb, v.path));
            ds_v_pop(c, old);
            return rc;
        }
    }

    return ds_v_volume_json(c, &v, out);
}


int
ds_v_f_volumes(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "volumes", "a list of volumes",
                     DS_SPEC_VOLUMES_MAX, ds_v_volume, out);
}


/* ---- files --------------------------------------------------------------- */

#define DS_FILE_FORMS  "\"LOCAL[:CONTAINER]\" (e.g. \"data:/data\")"


static int
ds_v_file_json(ds_vctx_t *c, const char *local, size_t n, const char *path,
    cJSON **out)
{
    char   *l;
    cJSON  *o;

    l = strndup(local, n);
    o = cJSON_CreateObject();

    if (l == NULL || o == NULL) {
        free(l);
        cJSON_Delete(o);
        return ds_v_oom(c);
    }

    if (ds_v_add(c, o, "local_path", cJSON_CreateString(l)) != DS_OK
        || ds_v_add(c, o, "path", path ? cJSON_CreateString(path)
                                       : cJSON_CreateNull()) != DS_OK)
    {
        free(l);
        cJSON_Delete(o);
        return DS_ERROR;
    }

    free(l);
    *out = o;
    return DS_OK;
}


static const char *
ds_v_local_path_wrong(const char *s)
{
    return ds_v_has_ctl(s) ? ": must not contain control characters"
                           : NULL;
}


static const ds_vfield_t  ds_file_fields[] = {
    { "local_path", ds_v_f_str, DS_VF_REQUIRED, NULL },
    { "path", ds_v_f_str, 0, NULL },
};


/* "local[:/container]" or {local_path, path} */
static int
ds_v_file(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int           rc;
    size_t        old, n;
    const char   *s, *colon, *why;
    const cJSON  *m;
    cJSON        *slot[2] = { NULL, NULL }, *local;
    ds_qbuf_t     qa, qb;
    char          cbuf[DS_SPEC_FS_PATH_MAX + 1];

    (void) done;

    if (cJSON_IsString(in)) {
        s = in->valuestring;
        colon = strchr(s, ':');

        if (s[0] == '\0' || colon == s
            || (colon && (colon[1] == '\0' || strchr(colon + 1, ':'))))
        {
            return ds_v_fail(c, in, 0, "invalid file %s: expected "
                             DS_FILE_FORMS, ds_q(&qa, s));
        }

        n = colon ? (size_t) (colon - s) : strlen(s);

        if (ds_v_has_ctl(s)) {
            return ds_v_fail(c, in, 0, "invalid file %s: must not contain "
                             "control characters", ds_q(&qa, s));
        }

        if (colon) {
            why = ds_v_abs_path(colon + 1, strlen(colon + 1), cbuf);
            if (why) {
                return ds_v_fail(c, in, 0, "invalid file %s: the container "
                                 "path %s %s", ds_q(&qa, s),
                                 ds_q(&qb, colon + 1), why);
            }
        }

        return ds_v_file_json(c, s, n, colon ? cbuf : NULL, out);
    }

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected " DS_FILE_FORMS " or a "
                         "mapping {local_path, path}, got %s", ds_tname(in));
    }

    rc = ds_v_object(c, in, ds_file_fields, 2, NULL, slot);
    if (rc != DS_OK) {
        goto done;
    }

    m = cJSON_GetObjectItemCaseSensitive(in, "local_path");
    old = ds_v_push(c, "local_path");
    local = NULL;
    rc = ds_v_f_checked(c, m, "local path", ds_v_local_path_wrong, &local);
    cJSON_Delete(local);
    ds_v_pop(c, old);

    if (rc != DS_OK) {
        goto done;
    }

    if (slot[1]) {
        m = cJSON_GetObjectItemCaseSensitive(in, "path");
        why = ds_v_abs_path(m->valuestring, strlen(m->valuestring), cbuf);
        if (why) {
            old = ds_v_push(c, "path");
            rc = ds_v_fail(c, m, 0, "invalid file path %s: %s",
                           ds_q(&qa, m->valuestring), why);
            ds_v_pop(c, old);
            goto done;
        }
    }

    s = slot[0]->valuestring;
    rc = ds_v_file_json(c, s, strlen(s), slot[1] ? cbuf : NULL, out);

done:

    ds_v_free_slots(slot, 2);
    return rc;
}


int
ds_v_f_files(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "files", "a list of files", DS_SPEC_FILES_MAX,
                     ds_v_file, out);
}
