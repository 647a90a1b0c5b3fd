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
#include "stats.h"
#include "store.h"
#include "tokens.h"
#include "util.h"


/*
 * Budgets are the gateway operator's: a project's manager could
 * otherwise lift the limits of its own tokens over those of the models
 * it calls, other projects' included.
 */
#define TOKENS_BUDGET_ADMIN \
    "budget: only a global admin sets token budgets"


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
tokens_identify(const uint8_t hash[DS_TOKEN_HASH_LEN], struct caller *c)
{
    ds_txn_t    *txn;
    ds_token_t   tok;
    ds_err_t     err;
    int          rc, result;

    memset(c, 0, sizeof(*c));

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

    snprintf(c->token, sizeof(c->token), "%.*s", (int) tok.name.len,
             tok.name.data);

    if (tok.expires != 0 && tok.expires <= (uint64_t) time(NULL)) {
        result = AUTH_EXPIRED;

    } else if (tok.flags & DS_TOKEN_USER) {
        snprintf(c->user, sizeof(c->user), "%.*s", (int) tok.user.len,
                 tok.user.data);
        c->global_admin = (tok.flags & DS_TOKEN_ADMIN) != 0;
        result = AUTH_OK;

    } else if (tok.flags & DS_TOKEN_ADMIN) {
        /* an admin token of before users: the first user's */
        snprintf(c->user, sizeof(c->user), "%s", TOKENS_FIRST_USER);
        c->global_admin = 1;
        result = AUTH_OK;

    } else {
        result = AUTH_NOT_ADMIN;
    }

    ds_txn_abort(txn);
    return result;
}


int
tokens_check_admin_hash(const uint8_t hash[DS_TOKEN_HASH_LEN], char *name,
    size_t n)
{
    struct caller  c;
    int            rc;

    rc = tokens_identify(hash, &c);
    snprintf(name, n, "%s", c.token);
    return rc;
}


/* ---- listing ------------------------------------------------------------ */

struct tok_find {
    const char     *name;
    int             found;
    uint8_t         hash[DS_TOKEN_HASH_LEN];
    uint32_t        flags;              /* the found one's */
    char            user[DS_NAME_MAX + 1];
    char            project[DS_NAME_MAX + 1];
    int             admins;             /* live admin tokens */
    int             admin_found;        /* the found one is admin */
};


static int
tok_str_is(const ds_str_t *s, const char *z)
{
    return s->len == strlen(z) && memcmp(s->data, z, s->len) == 0;
}


static int
tok_find_cb(void *arg, const ds_token_t *tok)
{
    struct tok_find  *f = arg;
    int               live;

    live = tok->expires == 0 || tok->expires > (uint64_t) time(NULL);
    if ((tok->flags & DS_TOKEN_ADMIN) && live) {
        f->admins++;
    }
    if (f->name != NULL && tok_str_is(&tok->name, f->name)) {
        f->found = 1;
        f->admin_found = (tok->flags & DS_TOKEN_ADMIN) && live;
        f->flags = tok->flags;
        memcpy(f->hash, tok->hash, DS_TOKEN_HASH_LEN);
        snprintf(f->user, sizeof(f->user), "%.*s", (int) tok->user.len,
                 tok->user.data);
        snprintf(f->project, sizeof(f->project), "%.*s",
                 (int) tok->project.len, tok->project.data);
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


int
tokens_name_taken(const char *name)
{
    struct tok_find  f;

    if (tok_find(name, &f) != 0) {
        return -1;
    }
    return f.found;
}


/*
 * Whether the caller sees a token in project pkey: a service token in
 * its project; in main, a user's token to that user and to global
 * admins, and admin tokens of before users to global admins.
 */
static int
tok_visible(const struct caller *c, const char *pkey, uint32_t flags,
    const char *user, const char *project)
{
    if (!(flags & (DS_TOKEN_USER | DS_TOKEN_ADMIN))) {
        return strcmp(project, pkey) == 0;
    }
    if (pkey[0] != '\0') {
        return 0;
    }
    if (c->global_admin) {
        return 1;
    }
    return (flags & DS_TOKEN_USER) && strcmp(user, c->user) == 0;
}


struct tok_list {
    cJSON                  *list;
    const struct caller    *caller;
    const char             *pkey;
};


/* a limit of a token's budget: its number, or "unlimited" */
static void
tok_add_limit(cJSON *o, const char *name, uint64_t v, uint64_t unlimited)
{
    if (v == unlimited) {
        cJSON_AddStringToObject(o, name, "unlimited");
    } else {
        cJSON_AddNumberToObject(o, name, (double) v);
    }
}


/* {"rpm","tpm","tpd"}: 0 the model's, a number, or "unlimited" */
static cJSON *
tok_budget_json(const ds_budget_t *b)
{
    cJSON  *j;

    j = cJSON_CreateObject();
    tok_add_limit(j, "rpm", b->rpm, DS_BUDGET_UNLIMITED);
    tok_add_limit(j, "tpm", b->tpm, DS_BUDGET_UNLIMITED);
    tok_add_limit(j, "tpd", b->tpd, UINT64_MAX);
    return j;
}


/* "budget" when any field is set */
static void
tok_add_budget(cJSON *o, const ds_budget_t *b)
{
    if (ds_budget_set(b)) {
        cJSON_AddItemToObject(o, "budget", tok_budget_json(b));
    }
}


/* "usage": the token's use of the models, summed over the gateways */
static void
tok_add_usage(cJSON *o, const char *name)
{
    cJSON  *use;

    use = stats_token_usage(name, (uint64_t) time(NULL) / 86400);
    if (use == NULL) {
        use = cJSON_CreateArray();
    }
    cJSON_AddItemToObject(o, "usage", use);
}


static int
tok_list_cb(void *arg, const ds_token_t *tok)
{
    struct tok_list  *l = arg;
    cJSON            *o, *svcs;
    ds_str_t          s, sp;
    uint32_t          off = 0;
    char              buf[DS_NAME_MAX + 1], user[DS_NAME_MAX + 1];
    char              project[DS_NAME_MAX + 1];

    snprintf(user, sizeof(user), "%.*s", (int) tok->user.len,
             tok->user.data);
    snprintf(project, sizeof(project), "%.*s", (int) tok->project.len,
             tok->project.data);
    if (!tok_visible(l->caller, l->pkey, tok->flags, user, project)) {
        return 0;
    }

    o = cJSON_CreateObject();
    snprintf(buf, sizeof(buf), "%.*s", (int) tok->name.len, tok->name.data);
    cJSON_AddStringToObject(o, "name", buf);
    cJSON_AddStringToObject(o, "scope",
                            (tok->flags & DS_TOKEN_ADMIN) ? "admin"
                            : (tok->flags & DS_TOKEN_USER) ? "user"
                            : "services");
    if (tok->flags & (DS_TOKEN_USER | DS_TOKEN_ADMIN)) {
        cJSON_AddStringToObject(o, "user", user[0] ? user
                                                   : TOKENS_FIRST_USER);
    }
    cJSON_AddStringToObject(o, "project", project[0] ? project
                                                     : DS_PROJECT_MAIN);
    svcs = cJSON_AddArrayToObject(o, "services");
    if (!(tok->flags & (DS_TOKEN_ADMIN | DS_TOKEN_ALL_SERVICES
                        | DS_TOKEN_USER)))
    {
        while (ds_token_scope_next(tok, &off, &s)) {
            /* the run's name: its key without "--<project>" */
            ds_service_project(s.data, s.len, &sp);
            if (sp.len > 0) {
                s.len -= sp.len + 2;
            }
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
    tok_add_budget(o, &tok->budget);
    snprintf(buf, sizeof(buf), "%.*s", (int) tok->name.len, tok->name.data);
    tok_add_usage(o, buf);
    cJSON_AddItemToArray(l->list, o);
    return 0;
}


cJSON *
tokens_list(const struct caller *c, const char *pkey)
{
    cJSON           *answer;
    ds_txn_t        *txn;
    ds_err_t         err;
    struct tok_list  l;

    answer = cJSON_CreateObject();
    l.list = cJSON_AddArrayToObject(answer, "tokens");
    l.caller = c;
    l.pkey = pkey;

    if (ds_txn_begin(state, 0, &txn, &err) != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        cJSON_Delete(answer);
        return NULL;
    }
    if (ds_foreach_token(txn, tok_list_cb, &l, &err) != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        ds_txn_abort(txn);
        cJSON_Delete(answer);
        return NULL;
    }
    ds_txn_abort(txn);
    return answer;
}


/* ---- writing ------------------------------------------------------------ */

struct tok_new {
    const char         *name;
    uint32_t            flags;
    const char         *user;           /* "" unless DS_TOKEN_USER */
    const char         *project;        /* key: "" for main */
    const char        **services;       /* service keys */
    int                 nsvc;
    uint64_t            expires;
    ds_budget_t         budget;         /* max_tokens 0 */
};


static int
tok_store(const struct tok_new *nt, char text[DS_TOKEN_TEXT_LEN + 1],
    char *errbuf, size_t errlen)
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
    tok.name.data = nt->name;
    tok.name.len = (uint32_t) strlen(nt->name);
    tok.user.data = nt->user;
    tok.user.len = (uint32_t) strlen(nt->user);
    tok.project.data = nt->project;
    tok.project.len = (uint32_t) strlen(nt->project);
    tok.flags = nt->flags;
    tok.created = (uint64_t) time(NULL);
    tok.expires = nt->expires;
    tok.budget = nt->budget;
    tok.n_services = (uint32_t) nt->nsvc;
    for (i = 0; i < nt->nsvc; i++) {
        svc[i].data = nt->services[i];
        svc[i].len = (uint32_t) strlen(nt->services[i]);
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
    struct tok_new   nt;
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

    memset(&nt, 0, sizeof(nt));
    nt.name = name;
    nt.flags = DS_TOKEN_USER | DS_TOKEN_ADMIN;
    nt.user = TOKENS_FIRST_USER;
    nt.project = "";

    if (tok_store(&nt, text, err, sizeof(err)) != 0) {
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


/* a run's service key in project pkey: "" or 400 with a message */
static int
tok_service_key(const char *run, const char *pkey, char *key, size_t size,
    char *err, size_t n)
{
    if (pkey[0] == '\0') {
        snprintf(key, size, "%s", run);
    } else {
        snprintf(key, size, "%s" DS_PROJECT_SEP "%s", run, pkey);
    }
    if (!ds_valid_service_key(key, strlen(key))) {
        snprintf(err, n, "services: \"%s\" in project \"%s\" is not a "
                 "service name (no \"--\"; run and project within 63)",
                 run, pkey);
        return 400;
    }
    return 0;
}


static cJSON *
tok_answer(const struct tok_new *nt, const char *text, const char *scope)
{
    cJSON  *o;

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", nt->name);
    cJSON_AddStringToObject(o, "token", text);
    cJSON_AddStringToObject(o, "scope", scope);
    if (nt->user[0]) {
        cJSON_AddStringToObject(o, "user", nt->user);
    }
    cJSON_AddStringToObject(o, "project", nt->project[0] ? nt->project
                                                         : DS_PROJECT_MAIN);
    if (nt->expires) {
        cJSON_AddNumberToObject(o, "expires", (double) nt->expires);
    } else {
        cJSON_AddNullToObject(o, "expires");
    }
    tok_add_budget(o, &nt->budget);
    return o;
}


int
tokens_create(const struct caller *c, const char *pkey, const cJSON *req,
    cJSON **answer, char *err, size_t n)
{
    struct api_token_args   a;
    struct tok_find         f;
    struct tok_new          nt;
    char                    text[DS_TOKEN_TEXT_LEN + 1];
    char                    keys[DS_TOKEN_SCOPE_MAX][DS_NAME_MAX + 1];
    const char             *svc[DS_TOKEN_SCOPE_MAX];
    int                     rc, i;

    rc = api_args_token(req, &a, err, n);
    if (rc != 0) {
        return rc;
    }
    if (a.budget.given && !c->global_admin) {
        snprintf(err, n, "%s", TOKENS_BUDGET_ADMIN);
        return 403;
    }

    memset(&nt, 0, sizeof(nt));
    nt.name = a.name;
    nt.user = "";
    nt.project = pkey;
    if (a.expires_in) {
        nt.expires = (uint64_t) time(NULL) + a.expires_in;
    }
    api_args_budget_apply(&a.budget, &nt.budget);

    if (a.admin) {
        /* a global admin's own token: users are made by POST /api/users */
        if (!c->global_admin) {
            snprintf(err, n, "scope: only a global admin makes admin "
                     "tokens");
            return 403;
        }
        if (pkey[0] != '\0') {
            snprintf(err, n, "scope: an admin token belongs to no project; "
                     "make it without ?project=");
            return 400;
        }
        nt.flags = DS_TOKEN_USER | DS_TOKEN_ADMIN;
        nt.user = c->user;

    } else {
        for (i = 0; i < a.nsvc; i++) {
            rc = tok_service_key(a.services[i], pkey, keys[i],
                                 sizeof(keys[i]), err, n);
            if (rc != 0) {
                return rc;
            }
            svc[i] = keys[i];
        }
        nt.services = svc;
        nt.nsvc = a.nsvc;
        nt.flags = a.nsvc == 0 ? DS_TOKEN_ALL_SERVICES : 0;
    }

    if (tok_find(a.name, &f) != 0) {
        snprintf(err, n, "cannot read tokens");
        return 500;
    }
    if (f.found) {
        snprintf(err, n, "name: a token named \"%s\" exists", a.name);
        return 409;
    }

    if (tok_store(&nt, text, err, n) != 0) {
        return 500;
    }

    log_info("created %s token \"%s\"%s%s by user \"%s\"",
             a.admin ? "admin" : "service", a.name,
             pkey[0] ? " in project " : "", pkey, c->user);

    *answer = tok_answer(&nt, text, a.admin ? "admin" : "services");
    memset(text, 0, sizeof(text));
    return 0;
}


int
tokens_create_user(const char *user, int global_admin, const char *name,
    uint64_t expires_in, cJSON **answer, char *err, size_t n)
{
    struct tok_find  f;
    struct tok_new   nt;
    char             gen[DS_NAME_MAX + 1], text[DS_TOKEN_TEXT_LEN + 1];
    int              i;

    if (name == NULL) {
        for (i = 1; i < 10000; i++) {
            snprintf(gen, sizeof(gen), "%.50s-%d", user, i);
            if (tok_find(gen, &f) != 0) {
                snprintf(err, n, "cannot read tokens");
                return 500;
            }
            if (!f.found) {
                break;
            }
        }
        name = gen;

    } else {
        if (tok_find(name, &f) != 0) {
            snprintf(err, n, "cannot read tokens");
            return 500;
        }
        if (f.found) {
            snprintf(err, n, "name: a token named \"%s\" exists", name);
            return 409;
        }
    }

    memset(&nt, 0, sizeof(nt));
    nt.name = name;
    nt.flags = DS_TOKEN_USER | (global_admin ? DS_TOKEN_ADMIN : 0);
    nt.user = user;
    nt.project = "";
    if (expires_in) {
        nt.expires = (uint64_t) time(NULL) + expires_in;
    }

    if (tok_store(&nt, text, err, n) != 0) {
        return 500;
    }
    log_info("created token \"%s\" of user \"%s\"", name, user);

    *answer = tok_answer(&nt, text, global_admin ? "admin" : "user");
    memset(text, 0, sizeof(text));
    return 0;
}


struct tok_del {
    struct store_txn   *t;
    const char         *user;
    int                 n;
};


static int
tok_del_cb(void *arg, const ds_token_t *tok)
{
    struct tok_del  *d = arg;

    if (((tok->flags & DS_TOKEN_USER) && tok_str_is(&tok->user, d->user))
        || (!(tok->flags & DS_TOKEN_USER) && (tok->flags & DS_TOKEN_ADMIN)
            && strcmp(d->user, TOKENS_FIRST_USER) == 0))
    {
        store_del_token(d->t, tok->hash);
        d->n++;
    }
    return 0;
}


int
tokens_delete_user(struct store_txn *t, const char *user)
{
    struct tok_del  d;
    ds_err_t        err;

    d.t = t;
    d.user = user;
    d.n = 0;

    if (ds_foreach_token(store_txn_of(t), tok_del_cb, &d, &err) != DS_OK) {
        log_warnx("tokens: %s", err.msg);
        return -1;
    }
    return d.n;
}


int
tokens_revoke(const struct caller *c, const char *pkey, const char *name,
    char *errbuf, size_t errlen)
{
    struct tok_find    f;
    struct store_txn  *t;

    if (tok_find(name, &f) != 0) {
        snprintf(errbuf, errlen, "cannot read tokens");
        return 500;
    }
    if (!f.found || !tok_visible(c, pkey, f.flags, f.user, f.project)) {
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

    log_info("revoked token \"%s\" by user \"%s\"", name, c->user);
    return 0;
}


/* the token's record again, its budget's given fields replaced; hash,
 * name, scope and dates as they were */
static int
tok_put_budget(const uint8_t hash[DS_TOKEN_HASH_LEN],
    const struct api_budget_args *a, ds_budget_t *now, char *errbuf,
    size_t errlen)
{
    ds_token_t         tok;
    ds_str_t           svc[DS_TOKEN_SCOPE_MAX];
    ds_buf_t           buf;
    ds_err_t           err;
    struct store_txn  *t;
    uint32_t           off = 0, i = 0;
    int                rc;

    t = store_begin(errbuf, errlen);
    if (t == NULL) {
        return 500;
    }

    memset(&buf, 0, sizeof(buf));
    rc = ds_copy_token(store_txn_of(t), hash, &tok, &buf, &err);
    if (rc != DS_OK) {
        /* revoked since it was found: as if never there */
        snprintf(errbuf, errlen, "%s", rc == DS_NOTFOUND ? "" : err.msg);
        (void) store_end(t);    /* nothing put: nothing written */
        ds_buf_free(&buf);
        return rc == DS_NOTFOUND ? 404 : 500;
    }

    while (i < DS_TOKEN_SCOPE_MAX && ds_token_scope_next(&tok, &off, &svc[i]))
    {
        i++;
    }
    api_args_budget_apply(a, &tok.budget);
    *now = tok.budget;

    store_put_token(t, &tok, svc);
    rc = store_end(t);
    ds_buf_free(&buf);
    return rc == STORE_OK ? 0 : 500;
}


int
tokens_update(const struct caller *c, const char *pkey, const char *name,
    const cJSON *req, cJSON **answer, char *err, size_t n)
{
    struct api_budget_args  a;
    struct tok_find         f;
    ds_budget_t             now;
    int                     rc;

    rc = api_args_token_update(req, &a, err, n);
    if (rc != 0) {
        return rc;
    }
    if (!c->global_admin) {
        snprintf(err, n, "%s", TOKENS_BUDGET_ADMIN);
        return 403;
    }

    if (tok_find(name, &f) != 0) {
        snprintf(err, n, "cannot read tokens");
        return 500;
    }
    if (!f.found || !tok_visible(c, pkey, f.flags, f.user, f.project)) {
        snprintf(err, n, "no token named \"%.80s\"", name);
        return 404;
    }

    rc = tok_put_budget(f.hash, &a, &now, err, n);
    if (rc == 404) {
        snprintf(err, n, "no token named \"%.80s\"", name);
    }
    if (rc != 0) {
        return rc;
    }

    log_info("token \"%s\": budget rpm %u, tpm %u, tpd %llu by user \"%s\"",
             name, now.rpm, now.tpm, (unsigned long long) now.tpd, c->user);

    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", name);
    cJSON_AddItemToObject(*answer, "budget", tok_budget_json(&now));
    return 0;
}
