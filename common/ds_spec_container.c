/*
 * What runs, and how: port, commands, image, python, env, working_dir,
 * shell, user, registry_auth and docker.
 */

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_secret.h"
#include "ds_spec_impl.h"


static int
ds_v_f_portnum(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_uint(c, in, 1, 65535, out);
}


static const ds_vfield_t  ds_port_fields[] = {
    { "container_port", ds_v_f_portnum, DS_VF_REQUIRED, NULL },
    { "local_port", ds_v_f_portnum, 0, NULL },
};


/* 8000, "8000", "80:8000" or {container_port, local_port} */
int
ds_v_f_port(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc;
    const char  *s, *colon;
    uint64_t     cport, lport;
    cJSON       *slot[2] = { NULL, NULL };
    ds_qbuf_t    qb;

    cport = 0;
    lport = DS_SPEC_PORT_LOCAL;

    if (cJSON_IsNumber(in)) {
        if (ds_v_uint(c, in, 1, 65535, &cport) != DS_OK) {
            return DS_EINVAL;
        }

    } else if (cJSON_IsString(in)) {
        s = in->valuestring;
        colon = strchr(s, ':');

        if (colon == NULL) {
            rc = ds_v_parse_uint(s, strlen(s), 65535, &cport);
        } else {
            rc = ds_v_parse_uint(s, (size_t) (colon - s), 65535, &lport);
            if (rc == 0) {
                rc = ds_v_parse_uint(colon + 1, strlen(colon + 1), 65535,
                                     &cport);
            }
        }

        if (rc == 0 && (cport == 0 || lport == 0)) {
            rc = -2;
        }
        if (rc == -2) {
            return ds_v_fail(c, in, 0, "invalid port %s: ports are 1 to "
                             "65535", ds_q(&qb, s));
        }
        if (rc != 0) {
            return ds_v_fail(c, in, 0, "invalid port %s: expected a port "
                             "number or \"LOCAL:CONTAINER\"", ds_q(&qb, s));
        }

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_port_fields, 2, NULL, slot);
        if (rc != DS_OK) {
            ds_v_free_slots(slot, 2);
            return rc;
        }
        cport = (uint64_t) slot[0]->valuedouble;
        if (slot[1]) {
            lport = (uint64_t) slot[1]->valuedouble;
        }
        ds_v_free_slots(slot, 2);

    } else {
        return ds_v_fail(c, in, 0, "expected a port number, "
                         "\"LOCAL:CONTAINER\" or a mapping, got %s",
                         ds_tname(in));
    }

    *out = cJSON_CreateObject();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    if (ds_v_add(c, *out, "container_port", cJSON_CreateNumber(cport))
        != DS_OK
        || ds_v_add(c, *out, "local_port", cJSON_CreateNumber(lport))
           != DS_OK)
    {
        return DS_ERROR;                /* the caller frees *out */
    }

    return DS_OK;
}


int
ds_v_f_commands(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i;
    size_t        old;
    char          buf[64];
    const char   *s;
    const cJSON  *it;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a list of shell commands, "
                         "got %s", ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_COMMANDS_MAX) {
        return ds_v_fail(c, in, 0, "too many commands (more than %d)",
                         DS_SPEC_COMMANDS_MAX);
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        if (ds_v_text(c, it, &s, buf, sizeof(buf)) != 0) {
            old = ds_v_pushi(c, i);
            if (cJSON_IsObject(it)) {
                ds_v_fail(c, it, 0, "expected a command string, got a "
                          "mapping (quote lines that contain \": \")");
            } else {
                ds_v_fail(c, it, 0, "expected a command string, got %s",
                          ds_tname(it));
            }
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        if (ds_v_append(c, *out, cJSON_CreateString(s)) != DS_OK) {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static const char *
ds_v_image_wrong(const char *s)
{
    return ds_v_has_space(s) ? ": must not contain spaces" : NULL;
}


int
ds_v_f_image(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "image", ds_v_image_wrong, out);
}


int
ds_v_f_python(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t                    i;
    char                      buf[64];
    const char               *s;
    static const char *const  versions[] = {
        "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"
    };
    ds_qbuf_t                 qb;

    if (cJSON_IsString(in)) {
        s = in->valuestring;

    } else if (cJSON_IsNumber(in)) {
        ds_v_text(c, in, &s, buf, sizeof(buf));
        if (strcmp(s, "3.1") == 0) {
            s = "3.10";                 /* python: 3.10 read as a float */
        }

    } else {
        return ds_v_fail(c, in, 0, "expected a python version (e.g. "
                         "\"3.11\"), got %s", ds_tname(in));
    }

    for (i = 0; i < DS_NFIELDS(versions); i++) {
        if (strcmp(s, versions[i]) == 0) {
            *out = cJSON_CreateString(s);
            return *out ? DS_OK : ds_v_oom(c);
        }
    }

    return ds_v_fail(c, in, 0, "unsupported python version %s: expected "
                     "3.9 to 3.14", ds_q(&qb, s));
}


/* [A-Za-z_][A-Za-z0-9_]*: the length of the name at s, 0 if none */
size_t
ds_v_env_name(const char *s)
{
    size_t  n;

    if (!(isalpha((unsigned char) s[0]) || s[0] == '_')) {
        return 0;
    }

    for (n = 1; isalnum((unsigned char) s[n]) || s[n] == '_'; n++) {
        /* void */
    }

    return n;
}


/*
 * The "${{ secrets.X }}" references of a value are well formed; the
 * message names the field (what: "env.HF_TOKEN"), never the value.
 */
static int
ds_v_refs(ds_vctx_t *c, const cJSON *at, const char *what, const char *push,
    const char *s)
{
    char    msg[200];
    size_t  old;
    int     rc;

    if (ds_secret_refs(s, NULL, NULL, msg, sizeof(msg)) == 0) {
        return DS_OK;
    }
    if (c->doc != NULL && !c->file_paths) {
        return ds_v_fail(c, at, 0, "%s: %s", what, msg);
    }
    /* the path names the field: "spec.env.X: " or "f.yml:5:5: env.X: " */
    old = push != NULL ? ds_v_push(c, push) : c->plen;
    rc = ds_v_fail(c, at, 0, "%s", msg);
    ds_v_pop(c, old);
    return rc;
}


static int
ds_v_env_refs(ds_vctx_t *c, const cJSON *at, const char *name,
    const char *s)
{
    char  what[DS_SPEC_PATH_MAX];

    snprintf(what, sizeof(what), "env.%s", name);
    return ds_v_refs(c, at, what, name, s);
}


/* ["K=V", "K"] or {K: V, K: null} -> {K: "V", K: null} */
int
ds_v_f_env(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i;
    size_t        n, old;
    char          buf[64], *name;
    const char   *s;
    const cJSON  *it;
    cJSON        *v;
    ds_qbuf_t     qb;

    if (!cJSON_IsArray(in) && !cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a list of NAME=VALUE or a "
                         "mapping, got %s", ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_ENV_MAX) {
        return ds_v_fail(c, in, 0, "too many environment variables (more "
                         "than %d)", DS_SPEC_ENV_MAX);
    }

    *out = cJSON_CreateObject();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {

        if (cJSON_IsArray(in)) {
            old = ds_v_pushi(c, i);

            if (!cJSON_IsString(it)) {
                ds_v_fail(c, it, 0, "expected NAME=VALUE or NAME, got %s",
                          ds_tname(it));
                ds_v_pop(c, old);
                return DS_EINVAL;
            }

            s = it->valuestring;
            n = ds_v_env_name(s);

            if (n == 0 || (s[n] != '\0' && s[n] != '=')) {
                ds_v_fail(c, it, 0, "invalid environment variable %s: "
                          "expected NAME=VALUE or NAME", ds_q(&qb, s));
                ds_v_pop(c, old);
                return DS_EINVAL;
            }

            name = strndup(s, n);
            if (name == NULL) {
                return ds_v_oom(c);
            }

            if (cJSON_GetObjectItemCaseSensitive(*out, name)) {
                ds_v_fail(c, it, 0, "duplicate environment variable %s",
                          ds_q(&qb, name));
                free(name);
                ds_v_pop(c, old);
                return DS_EINVAL;
            }
            ds_v_pop(c, old);

            if (s[n] == '='
                && ds_v_env_refs(c, it, name, s + n + 1) != DS_OK)
            {
                free(name);
                return DS_EINVAL;
            }

            v = s[n] == '=' ? cJSON_CreateString(s + n + 1)
                            : cJSON_CreateNull();

            if (ds_v_add(c, *out, name, v) != DS_OK) {
                free(name);
                return DS_ERROR;
            }
            free(name);
            continue;
        }

        if (ds_v_dups(c, in, it) != DS_OK) {
            return DS_EINVAL;
        }

        n = ds_v_env_name(it->string);
        if (n == 0 || it->string[n] != '\0') {
            return ds_v_fail(c, it, 1, "invalid environment variable name "
                             "%s", ds_q(&qb, it->string));
        }

        if (cJSON_IsNull(it)) {
            v = cJSON_CreateNull();

        } else if (ds_v_text(c, it, &s, buf, sizeof(buf)) == 0) {
            if (ds_v_env_refs(c, it, it->string, s) != DS_OK) {
                return DS_EINVAL;
            }
            v = cJSON_CreateString(s);

        } else {
            old = ds_v_push(c, it->string);
            ds_v_fail(c, it, 0, "expected a string, got %s", ds_tname(it));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        if (ds_v_add(c, *out, it->string, v) != DS_OK) {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static const char *
ds_v_shell_wrong(const char *s)
{
    return strcmp(s, "sh") != 0 && strcmp(s, "bash") != 0
           && (s[0] != '/' || ds_v_has_ctl(s))
           ? ": expected sh, bash or an absolute path" : NULL;
}


int
ds_v_f_shell(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "shell", ds_v_shell_wrong, out);
}


/* a user or group: a name or a numeric id, as docker's --user takes it */
static size_t
ds_v_user_part(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789_-.");
}


/* dstack's name|uid[:group|gid] */
int
ds_v_f_user(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    char         buf[64];
    size_t       n, g;
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_text(c, in, &s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "expected a user name or id, got %s",
                         ds_tname(in));
    }

    n = ds_v_user_part(s);
    g = s[n] == ':' ? ds_v_user_part(s + n + 1) : 0;

    if (n == 0 || (s[n] != '\0' && (s[n] != ':' || g == 0
                                    || s[n + 1 + g] != '\0')))
    {
        return ds_v_fail(c, in, 0, "invalid user %s: expected USER or "
                         "USER:GROUP, each a name or a numeric id of "
                         "letters, digits, \"_\", \"-\" or \".\"",
                         ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


/*
 * Any non-empty strings, often "${{ secrets.X }}"; a number is refused
 * rather than read as text, so that nothing guesses at a credential.
 * No message ever quotes the value.
 */
static int
ds_v_f_credential(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsNumber(in) || cJSON_IsBool(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s (quote it)",
                         ds_tname(in));
    }

    if (cJSON_IsString(in)
        && ds_v_refs(c, in, "registry_auth", NULL, in->valuestring)
           != DS_OK)
    {
        return DS_EINVAL;
    }

    return ds_v_f_str(c, in, out);
}


static const ds_vfield_t  ds_registry_auth_fields[] = {
    { "username", ds_v_f_credential, DS_VF_REQUIRED, NULL },
    { "password", ds_v_f_credential, DS_VF_REQUIRED, NULL },
};


int
ds_v_f_registry_auth(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[2] = { NULL, NULL };

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping {username, "
                         "password}, got %s", ds_tname(in));
    }

    rc = ds_v_object(c, in, ds_registry_auth_fields, 2, NULL, s);

    return ds_v_finish(c, ds_registry_auth_fields, 2, s, rc, out);
}


/*
 * false is accepted and leaves no trace in the normalized spec (*out
 * stays NULL); Docker in Docker would need a docker daemon inside the
 * container, which we do not provide.
 */
int
ds_v_f_docker(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *b;

    b = NULL;
    rc = ds_v_f_bool(c, in, &b);
    if (rc != DS_OK) {
        return rc;
    }

    if (cJSON_IsTrue(b)) {
        cJSON_Delete(b);
        return ds_v_fail(c, in, 0, "\"docker: true\" (Docker in Docker) "
                         "is not supported: use \"image\" with "
                         "\"privileged: true\"");
    }

    cJSON_Delete(b);
    *out = NULL;
    return DS_OK;
}


static const char *
ds_v_working_dir_wrong(const char *s)
{
    return ds_v_has_ctl(s) ? "" : NULL;
}


int
ds_v_f_working_dir(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_checked(c, in, "working_dir", ds_v_working_dir_wrong, out);
}
