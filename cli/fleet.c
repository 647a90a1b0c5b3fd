/*
 * SSH fleet files as the CLI sees them: read, parsed and validated by
 * common/ds_fleet (errors "file:line:col: path: message"), env resolved;
 * the private keys their hosts name, read to go with the spec; and the
 * hosts' tables.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ds_fleet.h"
#include "ds_yaml.h"
#include "dstackctl.h"


#define DSCTL_KEY_MAX           (16 * 1024)


/*
 * 1 when FILE says "type: fleet".  A file that does not load is no
 * fleet: the service's parser then reports what is wrong with it.
 */
int
dsctl_fleet_is_file(const char *file)
{
    int             fleet;
    ds_err_t        err;
    const cJSON    *t;
    ds_yaml_doc_t  *doc;
    char           *text;
    size_t          len;
    int             rc;

    /* "-" (stdin) can be read only once: dsctl_read_input keeps it */
    text = dsctl_read_input(file, &len);
    if (text == NULL) {
        return 0;
    }
    rc = ds_yaml_load(file, text, len, &doc, &err);
    free(text);
    if (rc != DS_OK) {
        return 0;
    }

    t = cJSON_GetObjectItemCaseSensitive(ds_yaml_root(doc), "type");
    fleet = cJSON_IsString(t) && strcmp(t->valuestring, "fleet") == 0;

    ds_yaml_free(doc);
    return fleet;
}


int
dsctl_fleet_load(dsctl_spec_t *sp, const char *file, char **overrides,
    int n_overrides)
{
    return dsctl_doc_load(sp, file, overrides, n_overrides,
                          ds_fleet_parse_yaml, ds_fleet_resolve_env,
                          "invalid fleet");
}


/* ---- the keys ----------------------------------------------------------- */

/* "~/x" -> "$HOME/x"; anything else as written */
static char *
dsctl_expand_home(const char *path)
{
    const char   *home;
    dsctl_str_t   s = { 0 };

    home = getenv("HOME");
    if (strncmp(path, "~/", 2) == 0 && home != NULL && home[0] != '\0') {
        dsctl_str_addf(&s, "%s/%s", home, path + 2);
        return s.s;
    }
    return dsctl_xstrdup(path);
}


/* a PEM private key: "-----BEGIN ... PRIVATE KEY-----" first */
static int
dsctl_is_private_key(const char *text)
{
    const char  *b, *e;

    b = strstr(text, "-----BEGIN ");
    if (b == NULL) {
        return 0;
    }
    e = strstr(b, "-----\n");
    if (e == NULL) {
        e = strstr(b, "-----\r\n");
    }
    return e != NULL && e - b >= 23
           && strncmp(e - 12, " PRIVATE KEY", 12) == 0;
}


/*
 * The key of one identity_file (as written in the spec), for host
 * (named in messages), into keys unless there already.
 */
static int
dsctl_fleet_key(cJSON *keys, const char *idf, const char *host)
{
    char         *path, *text;
    size_t        len;
    struct stat   st;

    if (cJSON_GetObjectItemCaseSensitive(keys, idf) != NULL) {
        return 0;
    }

    path = dsctl_expand_home(idf);

    if (stat(path, &st) != 0) {
        dsctl_error("cannot read the identity file \"%s\" of the host "
            "\"%s\": %s", idf, host, strerror(errno));
        free(path);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > DSCTL_KEY_MAX) {
        dsctl_error("the identity file \"%s\" of the host \"%s\" is %s",
            idf, host, S_ISREG(st.st_mode) ? "over 16 KiB: not a private key"
                                           : "not a regular file");
        free(path);
        return -1;
    }

    text = dsctl_read_file(path, &len);
    if (text == NULL) {
        dsctl_error("cannot read the identity file \"%s\" of the host "
            "\"%s\": %s", idf, host, strerror(errno));
        free(path);
        return -1;
    }
    free(path);

    if (len > DSCTL_KEY_MAX || !dsctl_is_private_key(text)) {
        dsctl_error("the identity file \"%s\" of the host \"%s\" is not a "
            "private key (expected \"-----BEGIN ... PRIVATE KEY-----\"; "
            "a .pub file?)", idf, host);
        free(text);
        return -1;
    }

    /* ssh itself refuses such a key; the server gets a copy anyway */
    if (st.st_mode & 077) {
        fflush(stdout);
        fprintf(stderr, "dstackctl: warning: the identity file \"%s\" is "
            "readable by others (mode %04o; ssh wants 0600)\n", idf,
            (unsigned) (st.st_mode & 07777));
    }

    cJSON_AddStringToObject(keys, idf, text);
    free(text);
    return 0;
}


cJSON *
dsctl_fleet_keys(const cJSON *spec)
{
    cJSON        *keys;
    const cJSON  *hosts, *h, *jump;
    const char   *name, *idf;

    keys = cJSON_CreateObject();
    hosts = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(spec, "ssh_config"), "hosts");

    cJSON_ArrayForEach(h, hosts) {
        name = dsctl_json_str(h, "hostname");
        idf = dsctl_json_str(h, "identity_file");
        if (idf != NULL && dsctl_fleet_key(keys, idf, name) != 0) {
            cJSON_Delete(keys);
            return NULL;
        }
        jump = cJSON_GetObjectItemCaseSensitive(h, "proxy_jump");
        idf = dsctl_json_str(jump, "identity_file");
        if (idf != NULL && dsctl_fleet_key(keys, idf, name) != 0) {
            cJSON_Delete(keys);
            return NULL;
        }
    }

    return keys;
}


/* ---- hosts -------------------------------------------------------------- */

/* "NVIDIA H100 80GB HBM3" -> "H100", "NVIDIA GeForce RTX 4090" ->
   "RTX4090": the short names dstack shows */
static void
dsctl_gpu_short(const char *name, char *buf, size_t n)
{
    static const char *const  skip[] = {
        "NVIDIA ", "AMD ", "Tesla ", "GeForce ", "Radeon ", "Instinct "
    };
    size_t                    i, len;

    for (i = 0; i < sizeof(skip) / sizeof(skip[0]); i++) {
        len = strlen(skip[i]);
        if (strncmp(name, skip[i], len) == 0) {
            name += len;
            i = (size_t) -1;        /* again, for "NVIDIA GeForce" */
        }
    }

    if ((strncmp(name, "RTX ", 4) == 0 || strncmp(name, "GTX ", 4) == 0)
        && name[4] != '\0')
    {
        len = strcspn(name + 4, " ");
        snprintf(buf, n, "%.3s%.*s", name, (int) len, name + 4);
        return;
    }

    len = strcspn(name, " ");
    snprintf(buf, n, "%.*s", (int) (len ? len : strlen(name)), name);
}


/* "4xCPU, 8GB, 100GB, 1xH100"; "-" when not known yet */
void
dsctl_host_resources(const cJSON *res, dsctl_str_t *out)
{
    const cJSON  *gpus, *g;
    char          m[32], name[64], prev[64];
    int           count;

    if (!cJSON_IsObject(res)) {
        dsctl_str_add(out, "-", 1);
        return;
    }

    dsctl_str_addf(out, "%.0fxCPU", dsctl_json_num(res, "cpus", 0));
    dsctl_fmt_mb(m, sizeof(m), dsctl_json_num(res, "memory_mb", 0));
    dsctl_str_addf(out, ", %s", m);
    dsctl_fmt_mb(m, sizeof(m), dsctl_json_num(res, "disk_mb", 0));
    dsctl_str_addf(out, ", %s", m);

    /* runs of the same name: hosts have one kind of GPU, mostly */
    gpus = cJSON_GetObjectItemCaseSensitive(res, "gpus");
    prev[0] = '\0';
    count = 0;
    cJSON_ArrayForEach(g, gpus) {
        dsctl_gpu_short(dsctl_json_str(g, "name") != NULL
                        ? dsctl_json_str(g, "name") : "GPU",
                        name, sizeof(name));
        if (count > 0 && strcmp(name, prev) != 0) {
            dsctl_str_addf(out, ", %dx%s", count, prev);
            count = 0;
        }
        snprintf(prev, sizeof(prev), "%s", name);
        count++;
    }
    if (count > 0) {
        dsctl_str_addf(out, ", %dx%s", count, prev);
    }
}


/* a number, or a string such as "auto", as text */
static void
dsctl_num_or_str(const cJSON *v, char *buf, size_t n)
{
    if (cJSON_IsNumber(v)) {
        snprintf(buf, n, "%.0f", v->valuedouble);
    } else if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
    } else {
        snprintf(buf, n, "-");
    }
}


/* the plan's hosts: HOST USER PORT PROXY JUMP BLOCKS STATUS RESOURCES */
void
dsctl_print_hosts(const cJSON *hosts)
{
    static const char *const  hdr[] = {
        "HOST", "USER", "PORT", "PROXY JUMP", "BLOCKS", "STATUS",
        "RESOURCES"
    };
    dsctl_table_t  *t;
    const cJSON    *h;
    const char     *jump, *status;
    char            port[16], blocks[32];
    dsctl_str_t     res = { 0 };

    t = dsctl_table_new(7, hdr);
    cJSON_ArrayForEach(h, hosts) {
        snprintf(port, sizeof(port), "%.0f", dsctl_json_num(h, "port", 22));
        dsctl_num_or_str(cJSON_GetObjectItemCaseSensitive(h, "blocks"),
            blocks, sizeof(blocks));
        jump = dsctl_json_str(h, "proxy_jump");
        status = dsctl_json_str(h, "status");
        res.len = 0;
        dsctl_host_resources(cJSON_GetObjectItemCaseSensitive(h,
            "resources"), &res);
        dsctl_table_addv(t, dsctl_json_str(h, "hostname"),
            dsctl_json_str(h, "user"), port, jump != NULL ? jump : "-",
            blocks, status != NULL ? status : "new", res.s);
    }
    dsctl_table_print(t, stdout);
    dsctl_table_free(t);
    dsctl_str_free(&res);
}
