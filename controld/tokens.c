/*
 * Tokens: the API's admin check, the first admin token, and the token
 * endpoints.  Tokens are stored by their SHA-256 only; the text of a token
 * is shown once, when it is created, and never logged.  Token records are
 * written here in their own transactions, from the main loop like every
 * other write.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <time.h>

#include "api_args.h"
#include "config.h"
#include "ds_bearer.h"
#include "log.h"
#include "store.h"
#include "tokens.h"
#include "util.h"


int
tokens_check_admin(const char *authorization, char *name, size_t n)
{
    uint8_t  hash[DS_TOKEN_HASH_LEN];
    int      rc;

    name[0] = '\0';

    rc = tokens_bearer_hash(authorization, hash);
    if (rc != AUTH_OK) {
        return rc;
    }

    return tokens_check_admin_hash(hash, name, n);
}


int
tokens_bearer_hash(const char *authorization,
    uint8_t hash[DS_TOKEN_HASH_LEN])
{
    const char  *p;
    size_t       len;

    switch (ds_bearer_token(authorization,
                            authorization ? strlen(authorization) : 0,
                            &p, &len))
    {
    case DS_BEARER_OK:
        break;
    case DS_BEARER_MISSING:
        return AUTH_MISSING;
    default:
        return AUTH_INVALID;
    }

    /* the lookup is by hash: equal hashes are equal tokens, and the
     * time taken does not depend on how much of a guess matched */
    ds_sha256(p, len, hash);

    return AUTH_OK;
}


int
tokens_check_admin_hash(const uint8_t hash[DS_TOKEN_HASH_LEN], char *name,
    size_t n)
{
    ds_txn_t    *txn;
    ds_token_t   tok;
    ds_err_t     err;
    int          rc, result;

    name[0] = '\0';

    /* a replaced file may hold other tokens: it answers for none */
    if (store_check_files() != 0) {
        return AUTH_UNAVAILABLE;
    }

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("auth: %s", err.msg);
        return AUTH_INVALID;
    }

    rc = ds_get_token(txn, hash, &tok, &err);
    if (rc != DS_OK) {
        if (rc != DS_NOTFOUND) {
            log_warnx("auth: %s", err.msg);
        }
        ds_txn_abort(txn);
        return AUTH_INVALID;
    }

    if (!ds_ct_equal(tok.hash, hash, DS_TOKEN_HASH_LEN)) {
        ds_txn_abort(txn);
        return AUTH_INVALID;
    }

    snprintf(name, n, "%.*s", (int) tok.name.len, tok.name.data);

    if (tok.expires != 0 && tok.expires <= (uint64_t) time(NULL)) {
        result = AUTH_EXPIRED;
    } else if (!(tok.flags & DS_TOKEN_ADMIN)) {
        result = AUTH_NOT_ADMIN;
    } else {
        result = AUTH_OK;
    }

    ds_txn_abort(txn);
    return result;
}


/* ---- listing ------------------------------------------------------------ */

struct tok_find {
    const char     *name;
    int             found;
    uint8_t         hash[DS_TOKEN_HASH_LEN];
    int             admins;             /* live admin tokens */
    int             admin_found;        /* the found one is admin */
};


static int
tok_find_cb(void *arg, const ds_token_t *tok)
{
    struct tok_find  *f = arg;
    int               live;

    live = tok->expires == 0 || tok->expires > (uint64_t) time(NULL);
    if ((tok->flags & DS_TOKEN_ADMIN) && live) {
        f->admins++;
    }
    if (f->name != NULL && tok->name.len == strlen(f->name)
        && memcmp(tok->name.data, f->name, tok->name.len) == 0)
    {
        f->found = 1;
        f->admin_found = (tok->flags & DS_TOKEN_ADMIN) && live;
        memcpy(f->hash, tok->hash, DS_TOKEN_HASH_LEN);
    }
    return 0;
}


static int
tok_find(const char *name, struct tok_find *f)
{
    ds_txn_t  *txn;
    ds_err_t   err;
    int        rc;

    memset(f, 0, sizeof(*f));
    f->name = name;

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        return -1;
    }
    rc = ds_foreach_token(txn, tok_find_cb, f, &err);
    ds_txn_abort(txn);
    if (rc != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        return -1;
    }
    return 0;
}


static int
tok_list_cb(void *arg, const ds_token_t *tok)
{
    cJSON     *list = arg, *o, *svcs;
    ds_str_t   s;
    uint32_t   off = 0;
    char       buf[DS_NAME_MAX + 1];

    o = cJSON_CreateObject();
    snprintf(buf, sizeof(buf), "%.*s", (int) tok->name.len, tok->name.data);
    cJSON_AddStringToObject(o, "name", buf);
    cJSON_AddStringToObject(o, "scope",
                            (tok->flags & DS_TOKEN_ADMIN) ? "admin"
                                                          : "services");
    svcs = cJSON_AddArrayToObject(o, "services");
    if (!(tok->flags & (DS_TOKEN_ADMIN | DS_TOKEN_ALL_SERVICES))) {
        while (ds_token_scope_next(tok, &off, &s)) {
            snprintf(buf, sizeof(buf), "%.*s", (int) s.len, s.data);
            cJSON_AddItemToArray(svcs, cJSON_CreateString(buf));
        }
    }
    cJSON_AddNumberToObject(o, "created", (double) tok->created);
    if (tok->expires) {
        cJSON_AddNumberToObject(o, "expires", (double) tok->expires);
    } else {
        cJSON_AddNullToObject(o, "expires");
    }
    cJSON_AddBoolToObject(o, "expired", tok->expires != 0
                          && tok->expires <= (uint64_t) time(NULL));
    cJSON_AddItemToArray(list, o);
    return 0;
}


cJSON *
tokens_list(void)
{
    cJSON     *answer, *list;
    ds_txn_t  *txn;
    ds_err_t   err;

    answer = cJSON_CreateObject();
    list = cJSON_AddArrayToObject(answer, "tokens");

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        cJSON_Delete(answer);
        return NULL;
    }
    if (ds_foreach_token(txn, tok_list_cb, list, &err) != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        ds_txn_abort(txn);
        cJSON_Delete(answer);
        return NULL;
    }
    ds_txn_abort(txn);
    return answer;
}


/* ---- writing ------------------------------------------------------------ */

static int
tok_store(const char *name, uint32_t flags, const char **services, int nsvc,
    uint64_t expires, char text[DS_TOKEN_TEXT_LEN + 1], char *errbuf,
    size_t errlen)
{
    ds_token_t         tok;
    ds_str_t           svc[DS_TOKEN_SCOPE_MAX];
    struct store_txn  *t;
    ds_err_t           err;
    int                i;

    if (ds_token_generate(text, &err) != DS_OK) {
        snprintf(errbuf, errlen, "%s", err.msg);
        return -1;
    }

    memset(&tok, 0, sizeof(tok));
    ds_sha256(text, strlen(text), tok.hash);
    tok.name.data = name;
    tok.name.len = (uint32_t) strlen(name);
    tok.flags = flags;
    tok.created = (uint64_t) time(NULL);
    tok.expires = expires;
    tok.n_services = (uint32_t) nsvc;
    for (i = 0; i < nsvc; i++) {
        svc[i].data = services[i];
        svc[i].len = (uint32_t) strlen(services[i]);
    }

    t = store_begin(errbuf, errlen);
    if (t == NULL) {
        return -1;
    }
    store_put_token(t, &tok, svc);
    if (store_end(t) != STORE_OK) {
        return -1;
    }
    return 0;
}


static int
write_client_config(const char *token)
{
    char  buf[1024];
    int   n;

    n = snprintf(buf, sizeof(buf),
                 "# dstackctl configuration written by dstack-controld at its "
                 "first start.\n"
                 "# Use it with DSTACK_CONFIG=%s or copy it to "
                 "~/.dstack/config.yml.\n"
                 "server: unix:%s\n"
                 "token: %s\n", conf->client_config, conf->api_socket, token);
    if (n < 0 || (size_t) n >= sizeof(buf)) {
        return -1;
    }
    return write_file_atomic(conf->client_config, buf, (size_t) n, 0600);
}


/*
 * The first start: no admin token yet.  The token is kept in the client
 * configuration (mode 0600), where dstackctl finds it; only its hash is
 * in the state.  It is shown once on stdout when stdout is a terminal
 * (a person is watching); under a service manager stdout is a log, where
 * a token must never go, so there only the file is named.  Should the
 * file fail, the token is shown anyway: it would be lost otherwise.
 */
int
tokens_bootstrap(void)
{
    struct tok_find  f;
    char             text[DS_TOKEN_TEXT_LEN + 1], err[256], name[32];
    int              i, written;

    if (tok_find(NULL, &f) != 0) {
        return -1;
    }
    if (f.admins > 0) {
        if (access(conf->client_config, F_OK) != 0) {
            log_info("%s is missing; create a client token with "
                     "\"dstackctl token create NAME --scope admin\"",
                     conf->client_config);
        }
        return 0;
    }

    /* "admin", or the first free "admin-N" when a revoked or expired
     * admin token left the name taken */
    snprintf(name, sizeof(name), "admin");
    for (i = 2; i < 1000; i++) {
        if (tok_find(name, &f) != 0) {
            return -1;
        }
        if (!f.found) {
            break;
        }
        snprintf(name, sizeof(name), "admin-%d", i);
    }

    if (tok_store(name, DS_TOKEN_ADMIN, NULL, 0, 0, text, err, sizeof(err))
        != 0)
    {
        log_warnx("cannot create the admin token: %s", err);
        return -1;
    }

    written = (write_client_config(text) == 0);
    if (!written) {
        log_warn("cannot write %s", conf->client_config);
    }

    if (isatty(STDOUT_FILENO) || !written) {
        printf("dstack-controld: created the admin token \"%s\"; it is "
               "shown once:\n\n    %s\n\nclient configuration: %s\n", name,
               text, conf->client_config);

    } else {
        printf("dstack-controld: created the admin token \"%s\"; it is in "
               "%s (mode 0600), not shown: stdout is not a terminal\n", name,
               conf->client_config);
    }

    fflush(stdout);
    log_info("created the admin token \"%s\" (written to %s)", name,
             conf->client_config);

    memset(text, 0, sizeof(text));
    return 0;
}


int
tokens_create(const cJSON *req, cJSON **answer, char *err, size_t n)
{
    struct api_token_args   a;
    struct tok_find         f;
    char                    text[DS_TOKEN_TEXT_LEN + 1];
    uint32_t                flags;
    uint64_t                expires = 0;
    int                     rc;

    rc = api_args_token(req, &a, err, n);
    if (rc != 0) {
        return rc;
    }
    if (a.expires_in) {
        expires = (uint64_t) time(NULL) + a.expires_in;
    }

    if (tok_find(a.name, &f) != 0) {
        snprintf(err, n, "cannot read tokens");
        return 500;
    }
    if (f.found) {
        snprintf(err, n, "name: a token named \"%s\" exists",
                 a.name);
        return 409;
    }

    if (a.admin) {
        flags = DS_TOKEN_ADMIN;
    } else if (a.nsvc == 0) {
        flags = DS_TOKEN_ALL_SERVICES;
    } else {
        flags = 0;
    }

    if (tok_store(a.name, flags, a.services, a.nsvc, expires, text,
                  err, n)
        != 0)
    {
        return 500;
    }

    log_info("created %s token \"%s\"", a.admin ? "admin" : "service",
             a.name);

    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", a.name);
    cJSON_AddStringToObject(*answer, "token", text);
    cJSON_AddStringToObject(*answer, "scope", a.admin ? "admin" : "services");
    if (expires) {
        cJSON_AddNumberToObject(*answer, "expires", (double) expires);
    } else {
        cJSON_AddNullToObject(*answer, "expires");
    }
    memset(text, 0, sizeof(text));
    return 0;
}


int
tokens_revoke(const char *name, char *errbuf, size_t errlen)
{
    struct tok_find    f;
    struct store_txn  *t;

    if (tok_find(name, &f) != 0) {
        snprintf(errbuf, errlen, "cannot read tokens");
        return 500;
    }
    if (!f.found) {
        snprintf(errbuf, errlen, "no token named \"%.80s\"", name);
        return 404;
    }
    if (f.admin_found && f.admins == 1) {
        snprintf(errbuf, errlen, "\"%s\" is the last admin token: create "
                 "another one first", name);
        return 409;
    }

    t = store_begin(errbuf, errlen);
    if (t == NULL) {
        return 500;
    }
    store_del_token(t, f.hash);
    if (store_end(t) != STORE_OK) {
        return 500;
    }

    log_info("revoked token \"%s\"", name);
    return 0;
}
