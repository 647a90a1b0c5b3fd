/*
 * Teams (#18): users, projects and members, and the check of an API call
 * against the caller's role.  See teams.h and API.md "projects, users
 * and roles".
 *
 * Users and projects are JSON documents; memberships are binary records
 * the gateway reads per request of a user's token, so that removing a
 * member is in force at the next request.  Every change is one write
 * transaction: deleting a user takes its tokens and memberships with it.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_args.h"
#include "fleets.h"
#include "log.h"
#include "run.h"
#include "store.h"
#include "teams.h"
#include "util.h"


/* ---- names -------------------------------------------------------------- */

const char *
teams_key(const char *project)
{
    return (project == NULL || strcmp(project, DS_PROJECT_MAIN) == 0)
           ? "" : project;
}


const char *
teams_name(const char *pkey)
{
    return pkey[0] == '\0' ? DS_PROJECT_MAIN : pkey;
}


/* user names: a token name's characters (api_args_token_name_ok) */
static int
teams_user_name_ok(const char *s)
{
    return api_args_token_name_ok(s) && strlen(s) <= 50;
}


/* ---- reading ------------------------------------------------------------ */

/* the role of user in project pkey: DS_ROLE_*, DS_ROLE_NONE when none */
static unsigned
teams_role_of(ds_txn_t *txn, const char *pkey, const char *user)
{
    ds_member_t  m;
    ds_err_t     err;
    int          rc;

    rc = ds_get_member(txn, pkey, strlen(pkey), user, strlen(user), &m,
                       &err);
    if (rc != DS_OK) {
        if (rc != DS_NOTFOUND) {
            log_warnx("teams: %s", err.msg);
        }
        return DS_ROLE_NONE;
    }
    return m.role;
}


/* a document of kind: parsed, or NULL when there is none */
static cJSON *
teams_doc(ds_txn_t *txn, int kind, const char *key)
{
    ds_str_t  doc;
    ds_err_t  err;

    if (ds_get_team_doc(txn, kind, key, strlen(key), &doc, &err) != DS_OK) {
        return NULL;
    }
    return cJSON_ParseWithLength(doc.data, doc.len);
}


static int
teams_exists(ds_txn_t *txn, int kind, const char *key)
{
    ds_str_t  doc;
    ds_err_t  err;

    return ds_get_team_doc(txn, kind, key, strlen(key), &doc, &err) == DS_OK;
}


/* a read transaction, or NULL with a message */
static ds_txn_t *
teams_read(char *err, size_t n)
{
    ds_txn_t  *txn;
    ds_err_t   e;

    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "cannot read the state: %s", e.msg);
        return NULL;
    }
    return txn;
}


/* a document's string field, "" when it has none */
static const char *
teams_field(const cJSON *doc, const char *name)
{
    const char  *v;

    v = cJSON_GetStringValue(cJSON_GetObjectItem(doc, name));
    return v != NULL ? v : "";
}


static int
teams_global_admin(const cJSON *user)
{
    return strcmp(teams_field(user, "global_role"), "admin") == 0;
}


/* ---- the check ---------------------------------------------------------- */

int
teams_check(const struct caller *c, const char *project,
    enum ds_action action, int own, char *err, size_t n)
{
    ds_txn_t       *txn;
    const char     *pkey;
    unsigned        role;
    int             exists;
    enum ds_authz   d;

    pkey = teams_key(project);

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    exists = teams_exists(txn, DS_DOCS_PROJECTS, teams_name(pkey));
    role = teams_role_of(txn, pkey, c->user);
    ds_txn_abort(txn);

    d = exists ? ds_authz_decide(c->global_admin, role, action, own)
               : DS_AUTHZ_HIDE;

    switch (d) {
    case DS_AUTHZ_ALLOW:
        return 0;
    case DS_AUTHZ_HIDE:
        snprintf(err, n, "project \"%.63s\" not found", teams_name(pkey));
        return 404;
    default:
        snprintf(err, n, "project \"%s\": role %s may not %s",
                 teams_name(pkey), ds_role_name(role), ds_action_name(action));
        return 403;
    }
}


/* ---- the first start ---------------------------------------------------- */

static char *
teams_new_doc(const char *name, const char *field, const char *value,
    const char *by)
{
    cJSON  *o;
    char   *s;

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    if (field != NULL) {
        cJSON_AddStringToObject(o, field, value);
    }
    cJSON_AddNumberToObject(o, "created", (double) time(NULL));
    if (by != NULL) {
        cJSON_AddStringToObject(o, "created_by", by);
    }
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}


int
teams_bootstrap(void)
{
    ds_txn_t          *txn;
    struct store_txn  *t;
    char               err[512], *udoc = NULL, *pdoc = NULL;
    int                has_user, has_project;
    unsigned           role;

    txn = teams_read(err, sizeof(err));
    if (txn == NULL) {
        log_warnx("teams: %s", err);
        return -1;
    }
    has_user = teams_exists(txn, DS_DOCS_USERS, TOKENS_FIRST_USER);
    has_project = teams_exists(txn, DS_DOCS_PROJECTS, DS_PROJECT_MAIN);
    role = teams_role_of(txn, "", TOKENS_FIRST_USER);
    ds_txn_abort(txn);

    if (has_project) {
        /* set up before: the admin may have been deleted on purpose */
        return 0;
    }

    t = store_begin(err, sizeof(err));
    if (t == NULL) {
        log_warnx("teams: %s", err);
        return -1;
    }
    if (!has_user) {
        udoc = teams_new_doc(TOKENS_FIRST_USER, "global_role", "admin", NULL);
        store_put_team_doc(t, DS_DOCS_USERS, TOKENS_FIRST_USER, udoc);
    }
    pdoc = teams_new_doc(DS_PROJECT_MAIN, NULL, NULL, TOKENS_FIRST_USER);
    store_put_team_doc(t, DS_DOCS_PROJECTS, DS_PROJECT_MAIN, pdoc);
    if (role == DS_ROLE_NONE) {
        store_put_member(t, "", TOKENS_FIRST_USER, DS_ROLE_ADMIN);
    }
    free(udoc);
    free(pdoc);
    if (store_end(t) != STORE_OK) {
        log_warnx("teams: %s", err);
        return -1;
    }
    log_info("teams: user \"%s\" (global admin) and project \"%s\" made",
             TOKENS_FIRST_USER, DS_PROJECT_MAIN);
    return 0;
}


/* ---- projects ----------------------------------------------------------- */

struct teams_members {
    const char     *pkey;
    const char     *user;               /* NULL: every member */
    cJSON          *list;               /* [{"user","role"}] */
    int             admins;             /* of pkey */
    unsigned        role;               /* of user in pkey */
};


static int
teams_members_cb(void *arg, const ds_str_t *project, const ds_str_t *user,
    const ds_member_t *m)
{
    struct teams_members  *tm = arg;
    cJSON                 *o;
    char                   name[DS_NAME_MAX + 1];

    if (project->len != strlen(tm->pkey)
        || memcmp(project->data, tm->pkey, project->len) != 0)
    {
        return 0;
    }
    snprintf(name, sizeof(name), "%.*s", (int) user->len, user->data);
    if (m->role == DS_ROLE_ADMIN) {
        tm->admins++;
    }
    if (tm->user != NULL && strcmp(tm->user, name) == 0) {
        tm->role = m->role;
    }
    if (tm->list != NULL) {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "user", name);
        cJSON_AddStringToObject(o, "role", ds_role_name(m->role));
        cJSON_AddItemToArray(tm->list, o);
    }
    return 0;
}


/* the members of pkey: into tm (list may be NULL) */
static int
teams_members(ds_txn_t *txn, struct teams_members *tm)
{
    ds_err_t  err;

    if (ds_foreach_member(txn, teams_members_cb, tm, &err) != DS_OK) {
        log_warnx("teams: %s", err.msg);
        return -1;
    }
    return 0;
}


/* the API's view of a project */
static cJSON *
teams_project_view(ds_txn_t *txn, const struct caller *c, const char *name)
{
    cJSON                 *o, *doc;
    struct teams_members   tm;
    unsigned               role;

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name);
    memset(&tm, 0, sizeof(tm));
    tm.pkey = teams_key(name);
    tm.user = c->user;
    tm.list = cJSON_CreateArray();
    teams_members(txn, &tm);
    role = tm.role;
    cJSON_AddStringToObject(o, "role", role != DS_ROLE_NONE
                                       ? ds_role_name(role)
                                       : c->global_admin ? "admin" : "none");
    doc = teams_doc(txn, DS_DOCS_PROJECTS, name);
    cJSON_AddNumberToObject(o, "created", doc ? cJSON_GetNumberValue(
                                cJSON_GetObjectItem(doc, "created")) : 0);
    cJSON_Delete(doc);
    cJSON_AddItemToObject(o, "members", tm.list);
    return o;
}


struct teams_list {
    ds_txn_t               *txn;
    const struct caller    *caller;
    cJSON                  *list;
};


static int
teams_projects_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct teams_list  *tl = arg;
    char                name[DS_NAME_MAX + 1];

    (void) val;
    snprintf(name, sizeof(name), "%.*s", (int) key->len, key->data);
    if (tl->caller->global_admin
        || teams_role_of(tl->txn, teams_key(name), tl->caller->user)
           != DS_ROLE_NONE)
    {
        cJSON_AddItemToArray(tl->list,
                             teams_project_view(tl->txn, tl->caller, name));
    }
    return 0;
}


int
teams_projects(const struct caller *c, cJSON **answer, char *err, size_t n)
{
    struct teams_list  tl;
    ds_err_t           e;
    int                rc;

    tl.txn = teams_read(err, n);
    if (tl.txn == NULL) {
        return 500;
    }
    tl.caller = c;
    *answer = cJSON_CreateObject();
    tl.list = cJSON_AddArrayToObject(*answer, "projects");
    rc = ds_foreach_team_doc(tl.txn, DS_DOCS_PROJECTS, teams_projects_cb,
                             &tl, &e);
    ds_txn_abort(tl.txn);
    if (rc != DS_OK) {
        snprintf(err, n, "cannot read projects: %s", e.msg);
        cJSON_Delete(*answer);
        *answer = NULL;
        return 500;
    }
    return 0;
}


/* a body of only these string fields (NULL-terminated), the first ones
 * required up to nreq: 0 or 400 */
static int
teams_body(const cJSON *body, const char *const *fields, int nreq,
    const char **values, char *err, size_t n)
{
    const cJSON  *it;
    int           i;

    for (i = 0; fields[i] != NULL; i++) {
        values[i] = NULL;
    }
    cJSON_ArrayForEach(it, body) {
        for (i = 0; fields[i] != NULL; i++) {
            if (strcmp(it->string, fields[i]) == 0) {
                break;
            }
        }
        if (fields[i] == NULL) {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return 400;
        }
        if (!cJSON_IsString(it)) {
            snprintf(err, n, "%s: expected a string", fields[i]);
            return 400;
        }
        values[i] = it->valuestring;
    }
    for (i = 0; i < nreq; i++) {
        if (values[i] == NULL) {
            snprintf(err, n, "%s: required", fields[i]);
            return 400;
        }
    }
    return 0;
}


/*
 * A new document of kind, named name (409 when one exists; what names
 * the kind in the message), with admin_of's membership as the project's
 * admin when not NULL: 0 or an HTTP status with a message.
 */
static int
teams_put_new(int kind, const char *name, const char *doc,
    const char *admin_of, const char *what, char *err, size_t n)
{
    ds_txn_t          *txn;
    struct store_txn  *t;
    int                exists;

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    exists = teams_exists(txn, kind, name);
    ds_txn_abort(txn);
    if (exists) {
        snprintf(err, n, "name: a %s named \"%s\" exists", what, name);
        return 409;
    }

    t = store_begin(err, n);
    if (t == NULL) {
        return 500;
    }
    store_put_team_doc(t, kind, name, doc);
    if (admin_of != NULL) {
        store_put_member(t, name, admin_of, DS_ROLE_ADMIN);
    }
    if (store_end(t) != STORE_OK) {
        return store_unpublished() ? 503 : 500;
    }
    return 0;
}


int
teams_project_create(const struct caller *c, const cJSON *body,
    cJSON **answer, char *err, size_t n)
{
    static const char *const  fields[] = { "name", NULL };
    const char               *v[1];
    ds_txn_t                 *txn;
    char                     *doc;
    int                       rc;

    rc = teams_body(body, fields, 1, v, err, n);
    if (rc != 0) {
        return rc;
    }
    if (!ds_valid_project_name(v[0], strlen(v[0]))) {
        snprintf(err, n, "name: \"%.80s\" is not a valid project name (2 to "
                 "41 lower-case letters, digits or \"-\", starting with a "
                 "letter, without \"--\" or a final \"-\")", v[0]);
        return 400;
    }

    doc = teams_new_doc(v[0], NULL, NULL, c->user);
    rc = teams_put_new(DS_DOCS_PROJECTS, v[0], doc, c->user, "project", err,
                       n);
    free(doc);
    if (rc != 0) {
        return rc;
    }
    log_info("project \"%s\": created by user \"%s\"", v[0], c->user);

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    *answer = teams_project_view(txn, c, v[0]);
    ds_txn_abort(txn);
    return 0;
}


struct teams_purge {
    struct store_txn   *t;
    const char         *pkey;           /* a project's, or NULL */
    const char         *user;           /* a user's, or NULL */
    int                 n;
};


static int
teams_purge_member_cb(void *arg, const ds_str_t *project,
    const ds_str_t *user, const ds_member_t *m)
{
    struct teams_purge  *tp = arg;
    char                 p[DS_NAME_MAX + 1], u[DS_NAME_MAX + 1];

    (void) m;
    snprintf(p, sizeof(p), "%.*s", (int) project->len, project->data);
    snprintf(u, sizeof(u), "%.*s", (int) user->len, user->data);
    if ((tp->pkey != NULL && strcmp(p, tp->pkey) == 0)
        || (tp->user != NULL && strcmp(u, tp->user) == 0))
    {
        store_del_member(tp->t, p, u);
        tp->n++;
    }
    return 0;
}


/* in tp's write: the memberships of its project, or of its user */
static int
teams_purge_members(struct teams_purge *tp, ds_err_t *e)
{
    return ds_foreach_member(store_txn_of(tp->t), teams_purge_member_cb, tp,
                             e);
}


static int
teams_purge_token_cb(void *arg, const ds_token_t *tok)
{
    struct teams_purge  *tp = arg;

    if (!(tok->flags & DS_TOKEN_USER)
        && tok->project.len == strlen(tp->pkey)
        && memcmp(tok->project.data, tp->pkey, tok->project.len) == 0)
    {
        store_del_token(tp->t, tok->hash);
    }
    return 0;
}


/* a secret of the project ("<project>/<NAME>"): it goes with it, so that
 * a project made again under that name does not find it */
static int
teams_purge_secret_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct teams_purge  *tp = arg;
    size_t               plen;
    char                 k[DS_SECRET_KEY_MAX + 1];

    (void) val;
    plen = strlen(tp->pkey);
    if (key->len > plen + 1 && key->len <= DS_SECRET_KEY_MAX
        && memcmp(key->data, tp->pkey, plen) == 0 && key->data[plen] == '/')
    {
        snprintf(k, sizeof(k), "%.*s", (int) key->len, key->data);
        store_del_secret(tp->t, k);
    }
    return 0;
}


int
teams_project_delete(const struct caller *c, const char *project,
    cJSON **answer, char *err, size_t n)
{
    struct teams_purge   tp;
    struct store_txn    *t;
    struct run          *r;
    struct fleet        *f;
    const char          *pkey;
    ds_err_t             e;
    int                  rc;

    rc = teams_check(c, project, DS_ACT_PROJECT_DELETE, 0, err, n);
    if (rc != 0) {
        return rc;
    }
    pkey = teams_key(project);
    if (pkey[0] == '\0') {
        snprintf(err, n, "project \"main\" is the default project: it "
                 "cannot be deleted");
        return 409;
    }
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished && strcmp(r->project, pkey) == 0) {
            snprintf(err, n, "project \"%s\" has runs (\"%s\"): stop them "
                     "first", pkey, r->short_name);
            return 409;
        }
    }

    TAILQ_FOREACH(f, &fleets, entry) {
        if (strcmp(f->project, pkey) == 0) {
            snprintf(err, n, "project \"%s\" has fleets (\"%s\"): delete "
                     "them first", pkey, f->name);
            return 409;
        }
    }

    t = store_begin(err, n);
    if (t == NULL) {
        return 500;
    }
    memset(&tp, 0, sizeof(tp));
    tp.t = t;
    tp.pkey = pkey;
    store_del_team_doc(t, DS_DOCS_PROJECTS, pkey);
    if (teams_purge_members(&tp, &e) != DS_OK
        || ds_foreach_token(store_txn_of(t), teams_purge_token_cb, &tp, &e)
           != DS_OK
        || ds_foreach_secret(store_txn_of(t), teams_purge_secret_cb, &tp,
                             &e) != DS_OK)
    {
        log_warnx("teams: %s", e.msg);
    }
    if (store_end(t) != STORE_OK) {
        return store_unpublished() ? 503 : 500;
    }
    log_info("project \"%s\": deleted by user \"%s\"", pkey, c->user);
    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", pkey);
    cJSON_AddBoolToObject(*answer, "deleted", 1);
    return 0;
}


/* the project's view after a change of members */
static int
teams_project_answer(const struct caller *c, const char *pkey,
    cJSON **answer, char *err, size_t n)
{
    ds_txn_t  *txn;

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    *answer = teams_project_view(txn, c, teams_name(pkey));
    ds_txn_abort(txn);
    return 0;
}


int
teams_member_set(const struct caller *c, const char *project,
    const cJSON *body, cJSON **answer, char *err, size_t n)
{
    static const char *const  fields[] = { "user", "role", NULL };
    const char               *v[2], *pkey;
    struct teams_members      tm;
    struct store_txn         *t;
    ds_txn_t                 *txn;
    unsigned                  role;
    int                       rc, known;

    rc = teams_check(c, project, DS_ACT_MEMBERS_WRITE, 0, err, n);
    if (rc != 0) {
        return rc;
    }
    rc = teams_body(body, fields, 2, v, err, n);
    if (rc != 0) {
        return rc;
    }
    role = ds_role_parse(v[1]);
    if (role == DS_ROLE_NONE) {
        snprintf(err, n, "role: \"%.40s\" is not one of admin, manager, "
                 "user", v[1]);
        return 400;
    }
    pkey = teams_key(project);

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    known = teams_user_name_ok(v[0])
            && teams_exists(txn, DS_DOCS_USERS, v[0]);
    memset(&tm, 0, sizeof(tm));
    tm.pkey = pkey;
    tm.user = v[0];
    teams_members(txn, &tm);
    ds_txn_abort(txn);

    if (!known) {
        snprintf(err, n, "user: \"%.63s\" not found", v[0]);
        return 404;
    }
    if (tm.role == DS_ROLE_ADMIN && role != DS_ROLE_ADMIN && tm.admins == 1) {
        snprintf(err, n, "user \"%s\" is the last admin of project \"%s\": "
                 "make another member admin first", v[0], teams_name(pkey));
        return 409;
    }

    t = store_begin(err, n);
    if (t == NULL) {
        return 500;
    }
    store_put_member(t, pkey, v[0], role);
    if (store_end(t) != STORE_OK) {
        return store_unpublished() ? 503 : 500;
    }
    log_info("project \"%s\": user \"%s\" is %s, by user \"%s\"",
             teams_name(pkey), v[0], ds_role_name(role), c->user);
    return teams_project_answer(c, pkey, answer, err, n);
}


int
teams_member_remove(const struct caller *c, const char *project,
    const char *user, cJSON **answer, char *err, size_t n)
{
    struct teams_members   tm;
    struct store_txn      *t;
    ds_txn_t              *txn;
    const char            *pkey;
    int                    rc;

    /* a member may leave; removing others is an admin's */
    rc = teams_check(c, project, DS_ACT_MEMBERS_WRITE,
                     strcmp(user, c->user) == 0, err, n);
    if (rc == 403 && strcmp(user, c->user) == 0) {
        rc = 0;
    }
    if (rc != 0) {
        return rc;
    }
    pkey = teams_key(project);

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    memset(&tm, 0, sizeof(tm));
    tm.pkey = pkey;
    tm.user = user;
    teams_members(txn, &tm);
    ds_txn_abort(txn);

    if (tm.role == DS_ROLE_NONE) {
        snprintf(err, n, "user \"%.63s\" is not a member of project \"%s\"",
                 user, teams_name(pkey));
        return 404;
    }
    if (tm.role == DS_ROLE_ADMIN && tm.admins == 1) {
        snprintf(err, n, "user \"%s\" is the last admin of project \"%s\": "
                 "make another member admin first", user, teams_name(pkey));
        return 409;
    }

    t = store_begin(err, n);
    if (t == NULL) {
        return 500;
    }
    store_del_member(t, pkey, user);
    if (store_end(t) != STORE_OK) {
        return store_unpublished() ? 503 : 500;
    }
    log_info("project \"%s\": user \"%s\" removed by user \"%s\"",
             teams_name(pkey), user, c->user);
    return teams_project_answer(c, pkey, answer, err, n);
}


/* ---- users -------------------------------------------------------------- */

struct teams_user_stats {
    const char     *user;
    cJSON          *projects;           /* [{"name","role"}] */
    int             tokens;
};


static int
teams_user_projects_cb(void *arg, const ds_str_t *project,
    const ds_str_t *user, const ds_member_t *m)
{
    struct teams_user_stats  *us = arg;
    cJSON                    *o;
    char                      p[DS_NAME_MAX + 1];

    if (user->len != strlen(us->user)
        || memcmp(user->data, us->user, user->len) != 0)
    {
        return 0;
    }
    snprintf(p, sizeof(p), "%.*s", (int) project->len, project->data);
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", teams_name(p));
    cJSON_AddStringToObject(o, "role", ds_role_name(m->role));
    cJSON_AddItemToArray(us->projects, o);
    return 0;
}


static int
teams_user_tokens_cb(void *arg, const ds_token_t *tok)
{
    struct teams_user_stats  *us = arg;

    if (((tok->flags & DS_TOKEN_USER) && tok->user.len == strlen(us->user)
         && memcmp(tok->user.data, us->user, tok->user.len) == 0)
        || (!(tok->flags & DS_TOKEN_USER) && (tok->flags & DS_TOKEN_ADMIN)
            && strcmp(us->user, TOKENS_FIRST_USER) == 0))
    {
        us->tokens++;
    }
    return 0;
}


static cJSON *
teams_user_view(ds_txn_t *txn, const cJSON *doc)
{
    cJSON                    *o;
    struct teams_user_stats   us;
    ds_err_t                  err;

    o = cJSON_CreateObject();
    us.user = teams_field(doc, "name");
    cJSON_AddStringToObject(o, "name", us.user);
    cJSON_AddStringToObject(o, "global_role",
                            teams_global_admin(doc) ? "admin" : "user");
    cJSON_AddNumberToObject(o, "created", cJSON_GetNumberValue(
                                cJSON_GetObjectItem(doc, "created")));
    us.projects = cJSON_AddArrayToObject(o, "projects");
    us.tokens = 0;
    (void) ds_foreach_member(txn, teams_user_projects_cb, &us, &err);
    (void) ds_foreach_token(txn, teams_user_tokens_cb, &us, &err);
    cJSON_AddNumberToObject(o, "tokens", us.tokens);
    return o;
}


struct teams_users_list {
    ds_txn_t               *txn;
    const struct caller    *caller;
    cJSON                  *list;
    int                     admins;     /* global admins */
};


static int
teams_users_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct teams_users_list  *ul = arg;
    cJSON                    *doc;

    (void) key;
    doc = cJSON_ParseWithLength(val->data, val->len);
    if (doc == NULL) {
        return 0;
    }
    if (teams_global_admin(doc)) {
        ul->admins++;
    }
    if (ul->list != NULL
        && (ul->caller->global_admin
            || strcmp(teams_field(doc, "name"), ul->caller->user) == 0))
    {
        cJSON_AddItemToArray(ul->list, teams_user_view(ul->txn, doc));
    }
    cJSON_Delete(doc);
    return 0;
}


int
teams_users(const struct caller *c, int me, cJSON **answer, char *err,
    size_t n)
{
    struct teams_users_list  ul;
    ds_err_t                 e;
    cJSON                    *doc;
    int                       rc;

    ul.txn = teams_read(err, n);
    if (ul.txn == NULL) {
        return 500;
    }
    if (me) {
        doc = teams_doc(ul.txn, DS_DOCS_USERS, c->user);
        if (doc == NULL) {
            ds_txn_abort(ul.txn);
            snprintf(err, n, "user \"%s\" not found", c->user);
            return 404;
        }
        *answer = teams_user_view(ul.txn, doc);
        cJSON_Delete(doc);
        ds_txn_abort(ul.txn);
        return 0;
    }
    ul.caller = c;
    ul.admins = 0;
    *answer = cJSON_CreateObject();
    ul.list = cJSON_AddArrayToObject(*answer, "users");
    rc = ds_foreach_team_doc(ul.txn, DS_DOCS_USERS, teams_users_cb, &ul, &e);
    ds_txn_abort(ul.txn);
    if (rc != DS_OK) {
        snprintf(err, n, "cannot read users: %s", e.msg);
        cJSON_Delete(*answer);
        *answer = NULL;
        return 500;
    }
    return 0;
}


int
teams_user_create(const struct caller *c, const cJSON *body,
    cJSON **answer, char *err, size_t n)
{
    static const char *const  fields[] = { "name", "global_role", NULL };
    const char               *v[2];
    struct store_txn         *t;
    cJSON                    *tok = NULL;
    char                     *doc;
    int                       rc, admin;

    if (!c->global_admin) {
        snprintf(err, n, "only a global admin creates users");
        return 403;
    }
    rc = teams_body(body, fields, 1, v, err, n);
    if (rc != 0) {
        return rc;
    }
    if (!teams_user_name_ok(v[0])) {
        snprintf(err, n, "name: \"%.80s\" is not a user name (lower-case "
                 "letters, digits, then also '-', '_', '.'; at most 50)",
                 v[0]);
        return 400;
    }
    if (v[1] != NULL && strcmp(v[1], "admin") != 0
        && strcmp(v[1], "user") != 0)
    {
        snprintf(err, n, "global_role: expected \"admin\" or \"user\"");
        return 400;
    }
    admin = v[1] != NULL && strcmp(v[1], "admin") == 0;

    doc = teams_new_doc(v[0], "global_role", admin ? "admin" : "user",
                        c->user);
    rc = teams_put_new(DS_DOCS_USERS, v[0], doc, NULL, "user", err, n);
    free(doc);
    if (rc != 0) {
        return rc;
    }

    rc = tokens_create_user(v[0], admin, NULL, 0, &tok, err, n);
    if (rc != 0) {
        /* no user without a way in: take it back */
        t = store_begin(err + strlen(err), n - strlen(err));
        if (t != NULL) {
            store_del_team_doc(t, DS_DOCS_USERS, v[0]);
            (void) store_end(t);
        }
        return rc;
    }
    log_info("user \"%s\": created (%s) by user \"%s\"", v[0],
             admin ? "global admin" : "user", c->user);

    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", v[0]);
    cJSON_AddStringToObject(*answer, "global_role", admin ? "admin" : "user");
    cJSON_AddItemToObject(*answer, "token_name",
                          cJSON_Duplicate(cJSON_GetObjectItem(tok, "name"),
                                          1));
    cJSON_AddItemToObject(*answer, "token",
                          cJSON_DetachItemFromObject(tok, "token"));
    cJSON_Delete(tok);
    return 0;
}


int
teams_user_delete(const struct caller *c, const char *user, cJSON **answer,
    char *err, size_t n)
{
    struct teams_users_list  ul;
    struct teams_purge       tp;
    struct store_txn        *t;
    cJSON                   *doc;
    ds_err_t                 e;
    int                      admin;

    if (!c->global_admin) {
        snprintf(err, n, "only a global admin deletes users");
        return 403;
    }
    ul.txn = teams_read(err, n);
    if (ul.txn == NULL) {
        return 500;
    }
    doc = teams_user_name_ok(user) ? teams_doc(ul.txn, DS_DOCS_USERS, user)
                                   : NULL;
    ul.caller = c;
    ul.list = NULL;
    ul.admins = 0;
    (void) ds_foreach_team_doc(ul.txn, DS_DOCS_USERS, teams_users_cb, &ul,
                               &e);
    ds_txn_abort(ul.txn);
    if (doc == NULL) {
        snprintf(err, n, "user \"%.63s\" not found", user);
        return 404;
    }
    admin = teams_global_admin(doc);
    cJSON_Delete(doc);
    if (admin && ul.admins == 1) {
        snprintf(err, n, "user \"%s\" is the last global admin: create "
                 "another one first", user);
        return 409;
    }

    t = store_begin(err, n);
    if (t == NULL) {
        return 500;
    }
    memset(&tp, 0, sizeof(tp));
    tp.t = t;
    tp.user = user;
    store_del_team_doc(t, DS_DOCS_USERS, user);
    if (teams_purge_members(&tp, &e) != DS_OK) {
        log_warnx("teams: %s", e.msg);
    }
    if (tokens_delete_user(t, user) < 0) {
        log_warnx("teams: cannot remove the tokens of \"%s\"", user);
    }
    if (store_end(t) != STORE_OK) {
        return store_unpublished() ? 503 : 500;
    }
    log_info("user \"%s\": deleted by user \"%s\" (%d memberships)", user,
             c->user, tp.n);
    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", user);
    cJSON_AddBoolToObject(*answer, "deleted", 1);
    return 0;
}


int
teams_user_token(const struct caller *c, const char *user,
    const cJSON *body, cJSON **answer, char *err, size_t n)
{
    const cJSON  *it;
    const char   *name = NULL;
    uint64_t      expires_in = 0;
    ds_txn_t     *txn;
    cJSON        *doc;
    int           admin;

    if (!c->global_admin && strcmp(user, c->user) != 0) {
        snprintf(err, n, "user \"%.63s\" not found", user);
        return 404;
    }
    cJSON_ArrayForEach(it, body) {
        if (strcmp(it->string, "name") == 0 && cJSON_IsString(it)) {
            if (!api_args_token_name_ok(it->valuestring)) {
                snprintf(err, n, "name: \"%.80s\" is not a token name",
                         it->valuestring);
                return 400;
            }
            name = it->valuestring;
        } else if (strcmp(it->string, "expires_in") == 0
                   && cJSON_IsNumber(it) && it->valuedouble >= 1
                   && it->valuedouble <= 100.0 * 365 * 86400
                   && it->valuedouble == (double) (long long) it->valuedouble)
        {
            expires_in = (uint64_t) it->valuedouble;
        } else {
            snprintf(err, n, "%.80s: %s", it->string,
                     strcmp(it->string, "name") == 0 ? "expected a string"
                     : strcmp(it->string, "expires_in") == 0
                     ? "expected whole seconds, at least 1"
                     : "unknown field");
            return 400;
        }
    }

    txn = teams_read(err, n);
    if (txn == NULL) {
        return 500;
    }
    doc = teams_user_name_ok(user) ? teams_doc(txn, DS_DOCS_USERS, user)
                                   : NULL;
    ds_txn_abort(txn);
    if (doc == NULL) {
        snprintf(err, n, "user \"%.63s\" not found", user);
        return 404;
    }
    admin = teams_global_admin(doc);
    cJSON_Delete(doc);
    return tokens_create_user(user, admin, name, expires_in, answer, err, n);
}
