/*
 * The parent's side of the API (privsep.h): the root process keeps the
 * reconciler, the backends, the LMDB writer and the CA; the API process
 * (api.c) reads the network, unprivileged, and asks here.
 *
 * Here: the listening socket (made by root, with its mode and group,
 * before the API process exists, and kept when it dies), starting the
 * API process and starting another when it dies, and the answers to its
 * messages: whether a token hash is an admin's, the requests of API.md
 * executed with actions, views and tokens (as api_dispatch did when the
 * API was part of this process), and the replicas' logs, passed as
 * descriptors.
 *
 * Every message is input from a process that reads the network and may
 * be compromised: lengths, NUL terminations, operations and names are
 * checked here again; the token hash comes with every request and is
 * checked again; a message that does not parse ends the API process (it
 * is killed and another one started).  Nothing here blocks on it: its
 * answers wait in a queue, and a process that leaves more than
 * PS_QUEUE_MAX unread is killed too.
 */

#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "actions.h"
#include "api_parent.h"
#include "audit.h"
#include "backend.h"
#include "config.h"
#include "ds_json_dup.h"
#include "fleets.h"
#include "log.h"
#include "logrotate.h"
#include "metrics.h"
#include "shared.h"
#include "privsep.h"
#include "teams.h"
#include "run.h"
#include "secrets.h"
#include "series.h"
#include "store.h"
#include "tokens.h"
#include "util.h"
#include "views.h"


/* the least time between two starts of the API process */
#define API_RESPAWN_MS          1000
static int              listen_fd = -1;
static int              tcp_fd = -1;            /* api_listen, or -1 */
static struct ps_chan   chan = { .fd = -1 };
static pid_t            api_pid = -1;
static int              api_stopping;
static int64_t          last_spawn, next_spawn;
static int              drop;                   /* root: become uid:gid */
static uid_t            api_uid;
static gid_t            api_gid;
static char             code_dir[4096];
static int              foreground;


/* ---- the socket --------------------------------------------------------- */

static int
api_listen(char *err, size_t n)
{
    struct sockaddr_un  sa;
    struct stat         sb;
    char                dir[4096], *slash;
    int                 fd, probe;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", conf->api_socket);

    snprintf(dir, sizeof(dir), "%s", conf->api_socket);
    slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (mkdir_p(dir, 0755) != 0) {
            snprintf(err, n, "cannot create %s: %s", dir, strerror(errno));
            return -1;
        }
    }

    if (lstat(conf->api_socket, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            snprintf(err, n, "%s exists and is not a socket",
                     conf->api_socket);
            return -1;
        }
        /* a live socket means another controld owns this state */
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0
            && connect(probe, (struct sockaddr *) &sa, sizeof(sa)) == 0)
        {
            close(probe);
            snprintf(err, n, "%s: another dstack-controld is listening",
                     conf->api_socket);
            return -1;
        }
        if (probe >= 0) {
            close(probe);
        }
        unlink(conf->api_socket);
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, n, "socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) != 0) {
        snprintf(err, n, "bind %s: %s", conf->api_socket, strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(conf->api_socket, conf->api_socket_mode) != 0
        || chgrp_conf(conf->api_socket) != 0
        || listen(fd, 128) != 0)
    {
        snprintf(err, n, "%s: %s", conf->api_socket, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}


/*
 * api_listen: the same API on TCP, for the nginx of gateways on other
 * hosts (conf/nginx/dstack-api-shared.conf).  Plain HTTP: meant for a
 * private network between the gateways and the controld hosts; every
 * request still needs an admin token, so a token crosses that network
 * in clear text.
 */
static int
api_listen_tcp(char *err, size_t n)
{
    struct sockaddr_storage  ss;
    socklen_t                len;
    char                     why[256];
    int                      fd, one = 1;

    if (listen_addr_parse(conf->api_listen, &ss, &len, why,
                          sizeof(why)) != 0)
    {
        snprintf(err, n, "api_listen: \"%s\": %s", conf->api_listen, why);
        return -1;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                0);
    if (fd < 0) {
        snprintf(err, n, "api_listen %s: socket: %s", conf->api_listen,
                 strerror(errno));
        return -1;
    }
    /* a restart binds again while the old connections are in TIME_WAIT */
    (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *) &ss, len) != 0
        || listen(fd, 128) != 0)
    {
        snprintf(err, n, "api_listen %s: %s%s", conf->api_listen,
                 strerror(errno), errno == EADDRINUSE ? " (another "
                 "dstack-controld, or another program, has that port)" : "");
        close(fd);
        return -1;
    }
    return fd;
}



/* ---- answers ------------------------------------------------------------ */

static void
api_parent_answer(uint32_t id, unsigned status, int error, const char *text)
{
    struct ps_response  rs;

    /* a write refused or unsure because the state file went away: the
     * client may try again once controld restarted, so not a 500 */
    if (status >= 500 && (store_lost() || store_unpublished())) {
        status = 503;
    }
    rs.status = status;
    rs.error = error != 0;
    ps_send(&chan, PS_RESPONSE, id, &rs, sizeof(rs), text, -1);
}


static void
api_parent_json(uint32_t id, unsigned status, cJSON *json)
{
    char  *text;

    text = json != NULL ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (text == NULL) {
        api_parent_answer(id, 500, 1, "out of memory");
        return;
    }
    api_parent_answer(id, status, 0, text);
    free(text);
}


/* the body the API process re-serialised: parsed again, as untrusted */
static cJSON *
api_parent_body(const char *text, char *err, size_t n)
{
    cJSON  *json;
    long    nul;

    nul = json_nul_at(text, strlen(text));
    if (nul >= 0) {
        snprintf(err, n, "body: a NUL character (\\u0000) at byte %ld is "
                 "not allowed", nul);
        return NULL;
    }
    json = cJSON_Parse(text);
    if (json == NULL || !cJSON_IsObject(json)) {
        cJSON_Delete(json);
        snprintf(err, n, "body: expected a JSON object");
        return NULL;
    }
    if (ds_json_dup_check(json, "body", err, n) != 0) {
        cJSON_Delete(json);
        return NULL;
    }
    return json;
}


/* run name of project (a name, "" for main): the run, or NULL with the
 * status and message (404 also for a run of another project) */
static struct run *
api_parent_find_run(const char *name, const char *project, unsigned *status,
    char *err, size_t n)
{
    struct run  *r;
    const char  *pkey;
    char         key[DS_NAME_MAX + 1];

    if (!ds_valid_run_name(name, strlen(name))) {
        snprintf(err, n, "name: \"%.80s\" is not a valid run name "
                 "(^[a-z][a-z0-9-]{1,40}$)", name);
        *status = 400;
        return NULL;
    }
    pkey = teams_key(project);
    if (pkey[0] == '\0') {
        snprintf(key, sizeof(key), "%s", name);
    } else {
        snprintf(key, sizeof(key), "%.41s" DS_PROJECT_SEP "%s", name, pkey);
    }
    r = run_find(key);
    if (r == NULL) {
        snprintf(err, n, "run \"%s\" not found", name);
        *status = 404;
    }
    return r;
}


/* ---- logs --------------------------------------------------------------- */

/*
 * Whether a replica still writes its log: a follower's stream ends when
 * it does not.  The one place here that knows the replica's states.
 */
static int
api_parent_replica_live(const struct replica *rep)
{
    /* a failed replica that will be restarted writes to the same file */
    return !replica_ended(rep) && !rep->run->finished;
}


static struct replica *
api_parent_replica(const char *run, int num, int version)
{
    struct run      *r;
    struct replica  *rep;

    r = run_find(run);
    if (r == NULL) {
        return NULL;
    }
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (rep->num == num && rep->version == version) {
            return rep;
        }
    }
    return NULL;
}


/* GET .../logs: the replica (the newest version of the number asked, the
 * lowest number by default) and its log's descriptor, when it exists */
static void
api_parent_logs(uint32_t id, const struct ps_request *rq, struct run *r)
{
    struct replica  *rep, *best = NULL;
    struct ps_log    lg;
    char             err[256], path[4096];
    struct stat      sb;
    int              have_num, num, fd;

    have_num = (rq->flags & PS_RQ_NUM) != 0;
    num = rq->num;
    if (have_num && (num < 0 || num > 65535)) {
        api_parent_answer(id, 400, 1, "replica: out of range");
        return;
    }

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (have_num ? rep->num != num : (best && rep->num > best->num)) {
            continue;
        }
        if (best == NULL || rep->num < best->num
            || (rep->num == best->num && rep->version > best->version))
        {
            best = rep;
        }
    }
    if (best == NULL) {
        if (have_num) {
            snprintf(err, sizeof(err), "run \"%s\" has no replica %d",
                     r->name, num);
        } else {
            snprintf(err, sizeof(err), "run \"%s\" has no replicas", r->name);
        }
        api_parent_answer(id, 404, 1, err);
        return;
    }

    if (replica_log_path(best, path, sizeof(path)) != 0) {
        api_parent_answer(id, 500, 1, "log path too long");
        return;
    }

    /* not there yet is no error: empty, or followed until it comes */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    memset(&lg, 0, sizeof(lg));
    if (rq->since != 0 && fd >= 0 && fstat(fd, &sb) == 0) {
        lg.start = (uint64_t) logrotate_since(path, rq->since, sb.st_size);
    }
    lg.num = best->num;
    lg.version = best->version;
    lg.live = (rq->flags & PS_RQ_FOLLOW) && api_parent_replica_live(best);
    ps_send(&chan, PS_LOG, id, &lg, sizeof(lg), NULL, fd);
}


/* a follower's question, about once a second */
static int
api_parent_stream(const struct ps_msg *m)
{
    struct ps_stream_check   ck;
    struct ps_stream_state   st;
    struct replica          *rep;
    struct caller            c;
    char                     msg[256], path[4096];
    int                      fd = -1;

    if (m->len != sizeof(ck)) {
        return -1;
    }
    memcpy(&ck, m->data, sizeof(ck));
    if (memchr(ck.run, '\0', sizeof(ck.run)) == NULL
        || !ds_valid_service_key(ck.run, strlen(ck.run)))
    {
        return -1;
    }

    memset(&st, 0, sizeof(st));
    rep = api_parent_replica(ck.run, ck.num, ck.version);
    /* the caller may still read it: a member removed, a role changed or
     * a token revoked ends the stream */
    st.token_ok = tokens_identify(ck.token, &c) == AUTH_OK && rep != NULL
                  && teams_check(&c, teams_name(rep->run->project),
                                 DS_ACT_RUN_LOGS,
                                 strcmp(rep->run->user, c.user) == 0, msg,
                                 sizeof(msg)) == 0;
    st.live = rep != NULL && api_parent_replica_live(rep);
    if (st.token_ok && ck.want_fd && rep != NULL
        && replica_log_path(rep, path, sizeof(path)) == 0)
    {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    }
    ps_send(&chan, PS_STREAM_STATE, m->id, &st, sizeof(st), NULL, fd);
    return 0;
}


/* ---- requests ----------------------------------------------------------- */

static int
api_parent_auth(const struct ps_msg *m)
{
    struct ps_auth         a;
    struct ps_auth_result  ar;

    if (m->len != sizeof(a)) {
        return -1;
    }
    memcpy(&a, m->data, sizeof(a));
    memset(&ar, 0, sizeof(ar));
    ar.result = (uint32_t) tokens_check_admin_hash(a.token, ar.name,
                                                   sizeof(ar.name));
    ps_send(&chan, PS_AUTH_RESULT, m->id, &ar, sizeof(ar), NULL, -1);
    return 0;
}


/* the secrets' endpoints: the body holds a value (set) or asks for one
 * (get); neither is logged, and the answer of get goes to the API
 * process only */
static void
api_parent_secret(uint32_t id, const struct ps_request *rq,
    const char *text, const struct caller *c)
{
    cJSON       *body = NULL, *answer = NULL, *value;
    char         err[1024], who[2 * DS_NAME_MAX + 16], *text_out;
    const char  *pkey;
    int          rc, created = 0;

    err[0] = '\0';
    pkey = teams_key(rq->project);
    snprintf(who, sizeof(who), "user \"%s\"", c->user);
    rc = teams_check(c, rq->project,
                     rq->op == PS_OP_SECRETS || rq->op == PS_OP_SECRET_GET
                     ? DS_ACT_SECRET_READ : DS_ACT_SECRET_WRITE, 0, err,
                     sizeof(err));
    if (rc == 0 && rq->op == PS_OP_SECRETS) {
        rc = secrets_list(pkey, &answer, err, sizeof(err));
    } else if (rc == 0) {
        body = api_parent_body(text, err, sizeof(err));
        if (body == NULL) {
            api_parent_answer(id, 400, 1, err);
            return;
        }
        rc = rq->op == PS_OP_SECRET_SET
             ? secrets_set(pkey, body, who, &answer, &created, err,
                           sizeof(err))
             : rq->op == PS_OP_SECRET_GET
             ? secrets_get(pkey, body, &answer, err, sizeof(err))
             : secrets_delete(pkey, body, who, &answer, err, sizeof(err));
    }
    if (rq->op != PS_OP_SECRETS) {
        audit_event(c, teams_name(pkey),
                    rq->op == PS_OP_SECRET_SET ? "secret set"
                    : rq->op == PS_OP_SECRET_GET ? "secret get"
                    : "secret delete",
                    cJSON_GetStringValue(cJSON_GetObjectItem(body, "name")),
                    rc != 0 ? (unsigned) rc : created ? 201 : 200);
    }
    cJSON_Delete(body);
    if (rc != 0) {
        api_parent_answer(id, (unsigned) rc, 1, err);
        return;
    }
    if (rq->op != PS_OP_SECRET_GET) {
        api_parent_json(id, created ? 201 : 200, answer);
        return;
    }
    /* the value's copies here are wiped once queued */
    text_out = cJSON_PrintUnformatted(answer);
    value = cJSON_GetObjectItem(answer, "value");
    if (cJSON_IsString(value)) {
        explicit_bzero(value->valuestring, strlen(value->valuestring));
    }
    cJSON_Delete(answer);
    if (text_out == NULL) {
        api_parent_answer(id, 500, 1, "out of memory");
        return;
    }
    api_parent_answer(id, 200, 0, text_out);
    explicit_bzero(text_out, strlen(text_out));
    free(text_out);
}


/* the answer of a call that changed something (or was refused): sent,
 * and recorded in the audit log */
static void
api_parent_done(uint32_t id, const struct caller *c, const char *project,
    const char *action, const char *object, int rc, unsigned ok,
    cJSON *answer, const char *err)
{
    audit_event(c, teams_name(teams_key(project)), action, object,
                rc != 0 ? (unsigned) rc : ok);
    if (rc != 0) {
        cJSON_Delete(answer);
        api_parent_answer(id, (unsigned) rc, 1, err);
        return;
    }
    api_parent_json(id, ok, answer);
}


/* the teams' endpoints (teams.c, audit.c) */
static void
api_parent_teams(uint32_t id, const struct ps_request *rq, const char *text,
    const struct caller *c)
{
    cJSON       *body = NULL, *answer = NULL;
    char         err[1024];
    const char  *action = NULL, *project = "", *object = NULL;
    int          rc;
    unsigned     ok = 200;

    err[0] = '\0';
    if (rq->op == PS_OP_PROJECT_CREATE || rq->op == PS_OP_MEMBER_SET
        || rq->op == PS_OP_USER_CREATE || rq->op == PS_OP_USER_TOKEN)
    {
        body = api_parent_body(text, err, sizeof(err));
        if (body == NULL) {
            api_parent_answer(id, 400, 1, err);
            return;
        }
    }

    switch (rq->op) {
    case PS_OP_PROJECTS:
        rc = teams_projects(c, &answer, err, sizeof(err));
        break;
    case PS_OP_PROJECT_CREATE:
        rc = teams_project_create(c, body, &answer, err, sizeof(err));
        action = "project create";
        object = cJSON_GetStringValue(cJSON_GetObjectItem(body, "name"));
        project = object ? object : "";
        ok = 201;
        break;
    case PS_OP_PROJECT_DELETE:
        rc = teams_project_delete(c, rq->param, &answer, err, sizeof(err));
        action = "project delete";
        project = object = rq->param;
        break;
    case PS_OP_MEMBER_SET:
        rc = teams_member_set(c, rq->param, body, &answer, err, sizeof(err));
        action = "member set";
        project = rq->param;
        object = cJSON_GetStringValue(cJSON_GetObjectItem(body, "user"));
        break;
    case PS_OP_MEMBER_REMOVE:
        rc = teams_member_remove(c, rq->param, rq->param2, &answer, err,
                                 sizeof(err));
        action = "member remove";
        project = rq->param;
        object = rq->param2;
        break;
    case PS_OP_USERS:
    case PS_OP_USER_ME:
        rc = teams_users(c, rq->op == PS_OP_USER_ME, &answer, err,
                         sizeof(err));
        break;
    case PS_OP_USER_CREATE:
        rc = teams_user_create(c, body, &answer, err, sizeof(err));
        action = "user create";
        object = cJSON_GetStringValue(cJSON_GetObjectItem(body, "name"));
        ok = 201;
        break;
    case PS_OP_USER_DELETE:
        rc = teams_user_delete(c, rq->param, &answer, err, sizeof(err));
        action = "user delete";
        object = rq->param;
        break;
    case PS_OP_USER_TOKEN:
        rc = teams_user_token(c, rq->param, body, &answer, err, sizeof(err));
        action = "user token";
        object = rq->param;
        ok = 201;
        break;
    default:    /* PS_OP_AUDIT */
        rc = audit_list(c, rq->project[0] ? rq->project : NULL, rq->num,
                        &answer, err, sizeof(err));
        break;
    }

    if (action != NULL) {
        /* a project that is not the caller's stays unnamed in the log of
         * others: its name is what the caller sent */
        api_parent_done(id, c, project, action, object, rc, ok, answer,
                        err);
    } else if (rc != 0) {
        api_parent_answer(id, (unsigned) rc, 1, err);
    } else {
        api_parent_json(id, ok, answer);
    }
    cJSON_Delete(body);
}


/* POST .../scale, once the caller may (rc 0; else rc and err): done,
 * logged and audited like a stop */
static void
api_parent_scale(uint32_t id, const struct caller *c,
    const struct ps_request *rq, struct run *r, int rc, const char *err)
{
    char  why[512];
    int   from;

    snprintf(why, sizeof(why), "%s", err);
    from = r->desired;
    if (rc == 0) {
        rc = action_scale(r, rq->num, why, sizeof(why));
    }
    if (rc == 0 && from != r->desired) {
        log_info("run \"%s\": scaled %d -> %d replica%s by user \"%s\" "
                 "(token \"%s\")", r->name, from, r->desired,
                 r->desired == 1 ? "" : "s", c->user, c->token);
    }
    api_parent_done(id, c, rq->project, "scale", r->short_name, rc, 200,
                    rc == 0 ? run_to_api(r) : NULL, why);
}


static int
api_parent_request(const struct ps_msg *m)
{
    struct ps_request       rq;
    struct ps_auth_result   ar;
    struct caller           c;
    struct run             *r;
    cJSON                  *body, *answer = NULL, *list, *it;
    const char             *text, *pkey;
    char                    err[1024], *out;
    unsigned                status = 200;
    int                     rc, created;
    uint32_t                id = m->id;

    text = ps_text(m, sizeof(rq));
    if (text == NULL) {
        return -1;
    }
    memcpy(&rq, m->data, sizeof(rq));
    if (memchr(rq.param, '\0', sizeof(rq.param)) == NULL
        || memchr(rq.param2, '\0', sizeof(rq.param2)) == NULL
        || memchr(rq.project, '\0', sizeof(rq.project)) == NULL
        || rq.op == 0 || rq.op >= PS_OP_MAX)
    {
        return -1;
    }

    /* the token again: the API process is not trusted to have asked */
    rc = tokens_identify(rq.token, &c);
    if (rc != AUTH_OK) {
        memset(&ar, 0, sizeof(ar));
        ar.result = (uint32_t) rc;
        snprintf(ar.name, sizeof(ar.name), "%s", c.token);
        ps_send(&chan, PS_AUTH_RESULT, id, &ar, sizeof(ar), NULL, -1);
        return 0;
    }

    err[0] = '\0';
    pkey = teams_key(rq.project);

    switch (rq.op) {

    case PS_OP_HEALTH:
        answer = cJSON_CreateObject();
        cJSON_AddBoolToObject(answer, "ok", 1);
        cJSON_AddStringToObject(answer, "version", CONTROLD_VERSION);
        cJSON_AddStringToObject(answer, "domain", conf->domain);
        cJSON_AddStringToObject(answer, "backend", backend->name);
        cJSON_AddStringToObject(answer, "network", backend->network());
        cJSON_AddStringToObject(answer, "user", c.user);
        api_parent_json(id, 200, answer);
        return 0;

    case PS_OP_CLUSTER:
    case PS_OP_METRICS:
        /* the whole gateway's: the operator's */
        if (!c.global_admin) {
            api_parent_answer(id, 403, 1, "only a global admin reads the "
                              "gateway's cluster state and metrics");
            return 0;
        }
        if (rq.op == PS_OP_CLUSTER) {
            answer = shared_cluster(err, sizeof(err));
            if (answer == NULL) {
                api_parent_answer(id, 503, 1, err);
            } else {
                api_parent_json(id, 200, answer);
            }
            return 0;
        }
        out = metrics_render();
        if (out == NULL) {
            api_parent_answer(id, 500, 1, "metrics: out of memory");
        } else if (strlen(out) + 1 + sizeof(struct ps_response)
                   > PS_FRAME_MAX)
        {
            /* what a frame carries (about 10,000 runs): say so rather
             * than an empty answer */
            fmt(err, sizeof(err), "metrics: %zu bytes, more than the "
                "%u a message to the API process carries", strlen(out),
                PS_FRAME_MAX);
            api_parent_answer(id, 500, 1, err);
        } else {
            api_parent_answer(id, 200, 0, out);
        }
        free(out);
        return 0;

    case PS_OP_PLAN:
    case PS_OP_APPLY:
        body = api_parent_body(text, err, sizeof(err));
        if (body == NULL) {
            api_parent_answer(id, 400, 1, err);
            return 0;
        }
        if (rq.op == PS_OP_PLAN) {
            rc = action_plan(&c, rq.project, body, &answer, err,
                             sizeof(err));
            cJSON_Delete(body);
            if (rc != 0) {
                api_parent_answer(id, (unsigned) rc, 1, err);
                return 0;
            }
            api_parent_json(id, 200, answer);
            return 0;
        }
        created = 0;
        rc = action_apply(&c, rq.project, body, &answer, &created, err,
                          sizeof(err));
        if (rc == 0 && created) {
            status = 201;
        }
        api_parent_done(id, &c, rq.project, "apply",
                        answer ? cJSON_GetStringValue(
                                     cJSON_GetObjectItem(answer, "name"))
                               : cJSON_GetStringValue(
                                     cJSON_GetObjectItem(body, "name")),
                        rc, status, answer, err);
        cJSON_Delete(body);
        return 0;

    case PS_OP_RUNS:
        rc = teams_check(&c, rq.project, DS_ACT_RUN_READ, 0, err,
                         sizeof(err));
        if (rc != 0) {
            api_parent_answer(id, (unsigned) rc, 1, err);
            return 0;
        }
        answer = cJSON_CreateObject();
        list = cJSON_AddArrayToObject(answer, "runs");
        TAILQ_FOREACH(r, &runs, entry) {
            if ((!(rq.flags & PS_RQ_ALL) && r->finished)
                || strcmp(r->project, pkey) != 0)
            {
                continue;
            }
            it = run_to_api(r);
            if (it != NULL) {
                cJSON_AddItemToArray(list, it);
            }
        }
        api_parent_json(id, 200, answer);
        return 0;

    case PS_OP_RUN:
    case PS_OP_STOP:
    case PS_OP_LOGS:
    case PS_OP_SERIES:
    case PS_OP_SCALE:
        /* not a member: the project's runs do not exist for the caller */
        rc = teams_check(&c, rq.project, DS_ACT_RUN_READ, 0, err,
                         sizeof(err));
        if (rc != 0) {
            api_parent_answer(id, (unsigned) rc, 1, err);
            return 0;
        }
        r = api_parent_find_run(rq.param, rq.project, &status, err,
                                sizeof(err));
        if (r == NULL) {
            api_parent_answer(id, status, 1, err);
            return 0;
        }
        if (rq.flags & PS_RQ_ERROR) {
            /* what the API process found wrong, after the name */
            api_parent_answer(id, 400, 1, text);
            return 0;
        }
        if (rq.op == PS_OP_STOP || rq.op == PS_OP_LOGS
            || rq.op == PS_OP_SCALE)
        {
            /* scaling a run is stopping some of it: the same right */
            rc = teams_check(&c, rq.project,
                             rq.op == PS_OP_LOGS ? DS_ACT_RUN_LOGS
                                                 : DS_ACT_RUN_STOP,
                             strcmp(r->user, c.user) == 0, err,
                             sizeof(err));
            if (rc == 403) {
                snprintf(err, sizeof(err), "run \"%s\" is user \"%s\"'s; "
                         "role user manages only its own runs",
                         r->short_name, r->user[0] ? r->user : "(none)");
            }
        }
        if (rq.op == PS_OP_LOGS) {
            if (rc != 0) {
                api_parent_answer(id, (unsigned) rc, 1, err);
            } else {
                api_parent_logs(id, &rq, r);
            }
            return 0;
        }
        if (rq.op == PS_OP_STOP) {
            if (rc == 0) {
                rc = action_stop(r, (rq.flags & PS_RQ_ABORT) != 0, err,
                                 sizeof(err));
            }
            if (rc == 0) {
                log_info("run \"%s\": %s requested by user \"%s\" "
                         "(token \"%s\")", r->name,
                         (rq.flags & PS_RQ_ABORT) ? "abort" : "stop", c.user,
                         c.token);
            }
            api_parent_done(id, &c, rq.project,
                            (rq.flags & PS_RQ_ABORT) ? "abort" : "stop",
                            r->short_name, rc, 200,
                            rc == 0 ? run_to_api(r) : NULL, err);
            return 0;
        }
        if (rq.op == PS_OP_SCALE) {
            api_parent_scale(id, &c, &rq, r, rc, err);
            return 0;
        }
        if (rq.op == PS_OP_SERIES) {
            answer = series_to_api(r->name, r->short_name, rq.since);
            if (answer == NULL) {
                api_parent_answer(id, 500, 1, "series: out of memory");
            } else {
                api_parent_json(id, 200, answer);
            }
            return 0;
        }
        api_parent_json(id, 200, run_to_api(r));
        return 0;

    case PS_OP_FLEETS:
    case PS_OP_FLEET:
        rc = teams_check(&c, rq.project, DS_ACT_FLEET_READ, 0, err,
                         sizeof(err));
        if (rc == 0 && rq.op == PS_OP_FLEETS) {
            api_parent_json(id, 200, fleets_list(pkey));
            return 0;
        }
        if (rc == 0) {
            rc = fleets_get(pkey, rq.param, &answer, err, sizeof(err));
        }
        if (rc != 0) {
            api_parent_answer(id, (unsigned) rc, 1, err);
            return 0;
        }
        api_parent_json(id, 200, answer);
        return 0;

    case PS_OP_FLEET_PLAN:
    case PS_OP_FLEET_APPLY:
    case PS_OP_FLEET_DELETE:
        body = api_parent_body(text, err, sizeof(err));
        if (body == NULL) {
            api_parent_answer(id, 400, 1, err);
            return 0;
        }
        created = 0;
        rc = teams_check(&c, rq.project, DS_ACT_FLEET_WRITE, 0, err,
                         sizeof(err));
        if (rc != 0) {
            /* refused before anything is read */
        } else if (rq.op == PS_OP_FLEET_PLAN) {
            rc = fleets_plan(pkey, body, &answer, err, sizeof(err));
        } else if (rq.op == PS_OP_FLEET_APPLY) {
            rc = fleets_apply(pkey, body, &answer, &created, err,
                              sizeof(err));
        } else {
            rc = fleets_delete(pkey, rq.param, body, &answer, err,
                               sizeof(err));
        }
        if (rq.op == PS_OP_FLEET_PLAN) {
            cJSON_Delete(body);
            if (rc != 0) {
                api_parent_answer(id, (unsigned) rc, 1, err);
                return 0;
            }
            api_parent_json(id, 200, answer);
            return 0;
        }
        if (rc == 0) {
            log_info("fleet \"%s\": %s by user \"%s\"",
                     cJSON_GetStringValue(cJSON_GetObjectItem(answer,
                                                              "name")),
                     rq.op == PS_OP_FLEET_APPLY ? "applied" : "deleted",
                     c.user);
        }
        api_parent_done(id, &c, rq.project,
                        rq.op == PS_OP_FLEET_APPLY ? "fleet apply"
                                                   : "fleet delete",
                        rq.op == PS_OP_FLEET_DELETE ? rq.param
                        : cJSON_GetStringValue(
                              cJSON_GetObjectItem(
                                  cJSON_GetObjectItem(body, "spec"), "name")),
                        rc, created ? 201 : 200, answer, err);
        cJSON_Delete(body);
        return 0;

    case PS_OP_TOKENS:
        rc = teams_check(&c, rq.project, DS_ACT_TOKEN_READ, 0, err,
                         sizeof(err));
        if (rc != 0) {
            api_parent_answer(id, (unsigned) rc, 1, err);
            return 0;
        }
        answer = tokens_list(&c, pkey);
        if (answer == NULL) {
            api_parent_answer(id, 500, 1, "cannot read tokens");
            return 0;
        }
        api_parent_json(id, 200, answer);
        return 0;

    case PS_OP_TOKEN_CREATE:
        body = api_parent_body(text, err, sizeof(err));
        if (body == NULL) {
            api_parent_answer(id, 400, 1, err);
            return 0;
        }
        rc = teams_check(&c, rq.project, DS_ACT_TOKEN_WRITE, 0, err,
                         sizeof(err));
        if (rc == 0) {
            rc = tokens_create(&c, pkey, body, &answer, err, sizeof(err));
        }
        api_parent_done(id, &c, rq.project, "token create",
                        cJSON_GetStringValue(cJSON_GetObjectItem(body,
                                                                 "name")),
                        rc, 201, answer, err);
        cJSON_Delete(body);
        return 0;

    case PS_OP_TOKEN_UPDATE:
        body = api_parent_body(text, err, sizeof(err));
        if (body == NULL) {
            api_parent_answer(id, 400, 1, err);
            return 0;
        }
        rc = teams_check(&c, rq.project, DS_ACT_TOKEN_WRITE, 0, err,
                         sizeof(err));
        if (rc == 0) {
            rc = tokens_update(&c, pkey, rq.param, body, &answer, err,
                               sizeof(err));
        }
        api_parent_done(id, &c, rq.project, "token update", rq.param, rc,
                        200, answer, err);
        cJSON_Delete(body);
        return 0;

    case PS_OP_TOKEN_REVOKE:
        rc = teams_check(&c, rq.project, DS_ACT_TOKEN_WRITE, 0, err,
                         sizeof(err));
        if (rc == 0) {
            rc = tokens_revoke(&c, pkey, rq.param, err, sizeof(err));
        }
        if (rc == 0) {
            answer = cJSON_CreateObject();
            cJSON_AddStringToObject(answer, "name", rq.param);
            cJSON_AddBoolToObject(answer, "revoked", 1);
        }
        api_parent_done(id, &c, rq.project, "token revoke", rq.param, rc,
                        200, answer, err);
        return 0;

    case PS_OP_SECRETS:
    case PS_OP_SECRET_SET:
    case PS_OP_SECRET_GET:
    case PS_OP_SECRET_DELETE:
        api_parent_secret(id, &rq, text, &c);
        return 0;

    case PS_OP_PROJECTS:
    case PS_OP_PROJECT_CREATE:
    case PS_OP_PROJECT_DELETE:
    case PS_OP_MEMBER_SET:
    case PS_OP_MEMBER_REMOVE:
    case PS_OP_USERS:
    case PS_OP_USER_ME:
    case PS_OP_USER_CREATE:
    case PS_OP_USER_DELETE:
    case PS_OP_USER_TOKEN:
    case PS_OP_AUDIT:
        api_parent_teams(id, &rq, text, &c);
        return 0;
    }

    return -1;
}


static int
api_parent_msg(const struct ps_msg *m)
{
    switch (m->type) {
    case PS_AUTH:
        return api_parent_auth(m);
    case PS_REQUEST:
        return api_parent_request(m);
    case PS_STREAM_CHECK:
        return api_parent_stream(m);
    default:
        return -1;
    }
}


/* ---- the API process ---------------------------------------------------- */

/* the user the API process becomes; its code directory is its own */
static int
api_parent_user(char *err, size_t n)
{
    const char     *name;
    struct passwd  *pw;

    if (fmt(code_dir, sizeof(code_dir), "%s/code", conf->state_dir) != 0) {
        snprintf(err, n, "state_dir too long");
        return -1;
    }
    if (geteuid() != 0) {
        /* the same split, without another uid */
        drop = 0;
        return 0;
    }

    /* the environment wins, for tests that run several controlds */
    name = getenv("DSTACK_API_USER");
    if (name == NULL || name[0] == '\0') {
        name = conf->api_user;
    }
    pw = getpwnam(name);
    if (pw == NULL) {
        snprintf(err, n, "api_user: the API process's user \"%s\" does "
                 "not exist", name);
        return -1;
    }
    if (pw->pw_uid == 0) {
        snprintf(err, n, "api_user: the API process's user \"%s\" is root: "
                 "it must be an unprivileged user", name);
        return -1;
    }
    drop = 1;
    api_uid = pw->pw_uid;
    api_gid = pw->pw_gid;

    /* uploads are written there by the API process; 0700 still */
    if (chown(code_dir, api_uid, api_gid) != 0 || chmod(code_dir, 0700) != 0)
    {
        snprintf(err, n, "cannot give %s to %s: %s", code_dir, name,
                 strerror(errno));
        return -1;
    }
    log_info("the API process runs as %s (uid %u)", name,
             (unsigned) api_uid);
    return 0;
}


/* uploads a dead API process left half done */
static void
api_parent_clean_uploads(void)
{
    DIR            *d;
    struct dirent  *e;

    d = opendir(code_dir);
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".upload-", 8) == 0) {
            unlinkat(dirfd(d), e->d_name, 0);
        }
    }
    closedir(d);
}


static void
api_parent_spawn(void)
{
    char   ids[64], level[16], limits[64], err[256];
    char  *argv[10];
    int    fd, i = 0;
    pid_t  pid;

    last_spawn = now_ms();
    api_parent_clean_uploads();

    if (drop) {
        snprintf(ids, sizeof(ids), "%u:%u", (unsigned) api_uid,
                 (unsigned) api_gid);
    } else {
        snprintf(ids, sizeof(ids), "-");
    }
    snprintf(level, sizeof(level), "%d", log_getlevel());
    argv[i++] = "dstack-controld: api";
    argv[i++] = "-A";
    argv[i++] = ids;
    argv[i++] = "-L";
    argv[i++] = level;
    snprintf(limits, sizeof(limits), "%u:%u:%u%s", conf->api_connections,
             conf->api_header_timeout_ms / 1000,
             conf->api_body_timeout_ms / 1000, tcp_fd >= 0 ? ":tcp" : "");
    argv[i++] = "-M";
    argv[i++] = limits;
    if (foreground) {
        argv[i++] = "-d";
    }
    argv[i] = NULL;

    pid = ps_spawn(argv, listen_fd, tcp_fd, code_dir, &fd, err,
                   sizeof(err));
    if (pid < 0) {
        log_warnx("cannot start the API process: %s", err);
        next_spawn = last_spawn + API_RESPAWN_MS;
        return;
    }
    api_pid = pid;
    ps_chan_init(&chan, fd, 0);
    log_info("API process %d started", (int) pid);
}


/* a process that broke the protocol: it goes, another one comes */
static void
api_parent_fail(const char *why)
{
    log_warnx("API process %d: %s; it is killed and another one started",
              (int) api_pid, why);
    if (api_pid > 0) {
        kill(api_pid, SIGKILL);
    }
    ps_chan_close(&chan);
}


int
api_parent_start(int fg, char *err, size_t n)
{
    foreground = fg;
    metrics_init();
    if (api_parent_user(err, n) != 0) {
        return -1;
    }
    listen_fd = api_listen(err, n);
    if (listen_fd < 0) {
        return -1;
    }
    if (conf->api_listen != NULL) {
        tcp_fd = api_listen_tcp(err, n);
        if (tcp_fd < 0) {
            close(listen_fd);
            unlink(conf->api_socket);
            listen_fd = -1;
            return -1;
        }
        log_info("API listening on %s and on %s (plain HTTP: a private "
                 "network only)", conf->api_socket, conf->api_listen);
        return 0;
    }
    log_info("API listening on %s", conf->api_socket);
    return 0;
}


void
api_parent_run(void)
{
    if (api_pid < 0 && listen_fd >= 0) {
        api_parent_spawn();
    }
}


/* 0 once the API process is gone (reaped here), -1 after ms */
static int
api_parent_wait(int64_t ms)
{
    int64_t  deadline;
    int      status;

    deadline = now_ms() + ms;
    while (waitpid(api_pid, &status, WNOHANG) == 0) {
        if (now_ms() >= deadline) {
            return -1;
        }
        usleep(10000);
    }
    return 0;
}


void
api_parent_stop(void)
{
    int  status;

    api_stopping = 1;
    /* answers already made go out, then the EOF: the API process passes
     * them on and ends (SIGTERM would end it at once) */
    (void) ps_flush(&chan);
    ps_chan_close(&chan);
    if (api_pid > 0 && api_parent_wait(1000) != 0) {
        kill(api_pid, SIGTERM);
        if (api_parent_wait(2000) != 0) {
            kill(api_pid, SIGKILL);
            waitpid(api_pid, &status, 0);
        }
    }
    api_pid = -1;
    if (listen_fd >= 0) {
        close(listen_fd);
        unlink(conf->api_socket);
        listen_fd = -1;
    }
    if (tcp_fd >= 0) {
        close(tcp_fd);
        tcp_fd = -1;
    }
}


int
api_parent_exited(pid_t pid, int status)
{
    if (pid != api_pid || pid <= 0) {
        return 0;
    }
    if (!api_stopping) {
        if (WIFSIGNALED(status)) {
            log_warnx("API process %d killed by signal %d; starting another",
                      (int) pid, WTERMSIG(status));
        } else {
            log_warnx("API process %d exited with status %d; starting "
                      "another", (int) pid, WEXITSTATUS(status));
        }
    }
    api_pid = -1;
    ps_chan_close(&chan);
    next_spawn = last_spawn + API_RESPAWN_MS;
    return 1;
}


void
api_parent_tick(void)
{
    if (api_pid < 0 && listen_fd >= 0 && !api_stopping
        && now_ms() >= next_spawn)
    {
        api_parent_spawn();
    }
}


int
api_parent_fill(struct pollfd *pfd, int max)
{
    if (chan.fd < 0 || max < 1) {
        return 0;
    }
    pfd[0].fd = chan.fd;
    pfd[0].events = POLLIN | (chan.out_bytes > 0 ? POLLOUT : 0);
    pfd[0].revents = 0;
    return 1;
}


void
api_parent_process(struct pollfd *pfd, int n)
{
    struct ps_msg  m;
    int            rc, eof = 0;

    if (chan.fd < 0) {
        return;
    }
    if (n > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
        eof = ps_read(&chan) != 0;
        while ((rc = ps_get(&chan, &m)) == 1) {
            if (api_parent_msg(&m) != 0) {
                api_parent_fail("a bad message");
                return;
            }
        }
        if (rc < 0) {
            api_parent_fail("a stream that is not frames");
            return;
        }
    }
    if (chan.out_bytes > PS_QUEUE_MAX) {
        api_parent_fail("it does not read its answers");
        return;
    }
    if (ps_flush(&chan) != 0 || eof) {
        /* it died or closed its end: SIGCHLD tells the rest */
        ps_chan_close(&chan);
        if (api_pid > 0) {
            kill(api_pid, SIGKILL);
        }
    }
}
