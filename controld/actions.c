/*
 * What the API asks of runs: plan (offers and changes, nothing changes),
 * apply (a new run, or a change in place or rolled out), stop, scale (a
 * fixed count changed by hand).  An apply and a scale are recorded in
 * LMDB before they are answered; the reconciler does the rest on its
 * next pass.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "actions.h"
#include "backend.h"
#include "code.h"
#include "config.h"
#include "log.h"
#include "reconcile.h"
#include "run.h"
#include "rundoc.h"
#include "secrets.h"
#include "shared.h"
#include "spec.h"
#include "store.h"
#include "teams.h"
#include "util.h"
#include "views.h"


struct apply_req {
    const cJSON    *spec;
    const char     *name;
    const char     *code;
    const char     *files;          /* the spec's files: an archive */
    int             force;          /* a new version even if unchanged */
};


static int
apply_parse(const cJSON *req, struct apply_req *a, char *err, size_t n)
{
    const cJSON  *it;

    memset(a, 0, sizeof(*a));
    cJSON_ArrayForEach(it, req) {
        if (strcmp(it->string, "spec") == 0) {
            a->spec = it;
        } else if (strcmp(it->string, "name") == 0) {
            if (!cJSON_IsNull(it)) {
                if (!cJSON_IsString(it)) {
                    snprintf(err, n, "name: expected a string");
                    return 400;
                }
                a->name = it->valuestring;
            }
        } else if (strcmp(it->string, "force") == 0) {
            if (!cJSON_IsBool(it)) {
                snprintf(err, n, "force: expected true or false");
                return 400;
            }
            a->force = cJSON_IsTrue(it);
        } else if (strcmp(it->string, "code") == 0
                   || strcmp(it->string, "files") == 0)
        {
            if (!cJSON_IsNull(it)) {
                if (!cJSON_IsString(it) || !valid_hex_hash(it->valuestring))
                {
                    snprintf(err, n, "%s: expected a SHA-256 in lower-case "
                             "hex", it->string);
                    return 400;
                }
                *(it->string[0] == 'c' ? &a->code : &a->files) =
                    it->valuestring;
            }
        } else {
            snprintf(err, n, "unknown field \"%.80s\"", it->string);
            return 400;
        }
    }
    if (a->spec == NULL) {
        snprintf(err, n, "spec: required");
        return 400;
    }
    if (!cJSON_IsObject(a->spec)) {
        snprintf(err, n, "spec: expected an object");
        return 400;
    }
    if (a->name != NULL && !ds_valid_run_name(a->name, strlen(a->name))) {
        snprintf(err, n, "name: \"%.80s\" is not a valid run name "
                 "(^[a-z][a-z0-9-]{1,40}$)", a->name);
        return 400;
    }
    return 0;
}


static int
plan_replicas(const ds_spec_t *sp)
{
    return sp->replicas.min > 0 ? (int) sp->replicas.min : 1;
}


/*
 * What plan and apply share: the request, its spec, the run's name
 * (given, the spec's, or a new one in gen), and the offers for it.  0,
 * or an HTTP status with a message (nothing to free then).
 */
/*
 * The key of run name in project pkey ("web", "web--team"), checked: 0,
 * or 400 with a message.
 */
static int
apply_key(const char *name, const char *pkey, char key[DS_NAME_MAX + 1],
    char *err, size_t n)
{
    if (pkey[0] == '\0') {
        snprintf(key, DS_NAME_MAX + 1, "%s", name);
    } else {
        snprintf(key, DS_NAME_MAX + 1, "%s" DS_PROJECT_SEP "%s", name, pkey);
    }
    if (strstr(name, DS_PROJECT_SEP) != NULL
        || !ds_valid_service_key(key, strlen(key)))
    {
        snprintf(err, n, "name: \"%.41s\" cannot be a run name in project "
                 "\"%s\" (no \"--\"; run and project names together "
                 "within 61 characters)", name, teams_name(pkey));
        return 400;
    }
    if (pkey[0] != '\0' && strcmp(name, "gateway") == 0) {
        snprintf(err, n, "name: \"gateway\" is the project's model "
                 "endpoint (gateway--%s); choose another name", pkey);
        return 400;
    }
    return 0;
}


/*
 * What plan and apply share: the request, its spec, the run's name
 * (given, the spec's, or a new one in gen) and key in the project, the
 * caller's right to apply it there, and the offers for it.  0, or an
 * HTTP status with a message (nothing to free then).
 */
static int
apply_prepare(const struct caller *c, const char *project,
    const cJSON *req, struct apply_req *a, ds_spec_t *sp,
    char gen[DS_NAME_MAX + 1], const char **name, char key[DS_NAME_MAX + 1],
    cJSON **offers, char *err, size_t n)
{
    struct run  *r;
    const char  *pkey;
    int          rc, own;

    pkey = teams_key(project);
    /* a project the caller is not in: 404 before anything is read */
    rc = teams_check(c, project, DS_ACT_PROJECT_READ, 0, err, n);
    if (rc != 0) {
        return rc;
    }
    rc = apply_parse(req, a, err, n);
    if (rc != 0) {
        return rc;
    }
    if (spec_load(a->spec, sp, err, n) != 0) {
        return 400;
    }

    *name = a->name ? a->name : sp->name;
    if (*name == NULL) {
        run_generate_name(gen, DS_NAME_MAX + 1);
        *name = gen;
    }
    rc = apply_key(*name, pkey, key, err, n);
    if (rc == 0) {
        r = run_find(key);
        own = r == NULL || r->finished || strcmp(r->user, c->user) == 0;
        rc = teams_check(c, project, DS_ACT_RUN_APPLY, own, err, n);
        if (rc == 403) {
            snprintf(err, n, "run \"%s\" is user \"%s\"'s; role user "
                     "manages only its own runs", *name,
                     r->user[0] ? r->user : "(none)");
        }
    }
    /* a reference to no secret is refused now, not at the replica */
    if (rc == 0) {
        rc = secrets_check_spec(pkey, sp, err, n);
    }
    if (rc != 0) {
        ds_spec_free(sp);
        return rc;
    }

    *offers = cJSON_CreateArray();
    rc = backends_offers(sp, key, plan_replicas(sp), *offers, err, n);
    if (rc != 0) {
        cJSON_Delete(*offers);
        ds_spec_free(sp);
        return rc;
    }
    return 0;
}



/* an archive of the request that differs from the run's: a change */
static void
plan_archive_change(cJSON *changes, const char *field, const char *old,
    const char *new_)
{
    cJSON  *c;

    if (new_ == NULL || strcmp(new_, old) == 0) {
        return;
    }
    c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "field", field);
    cJSON_AddStringToObject(c, "old", old);
    cJSON_AddStringToObject(c, "new", new_);
    cJSON_AddBoolToObject(c, "in_place", 0);
    cJSON_AddItemToArray(changes, c);
}


int
action_plan(const struct caller *c, const char *project, const cJSON *req,
    cJSON **answer, char *err, size_t n)
{
    struct apply_req   a;
    ds_spec_t          sp;
    struct run        *r;
    cJSON             *offers, *changes = NULL;
    const char        *name;
    char               gen[DS_NAME_MAX + 1], key[DS_NAME_MAX + 1];
    int                rc, rollout;

    rc = apply_prepare(c, project, req, &a, &sp, gen, &name, key, &offers,
                       err, n);
    if (rc != 0) {
        return rc;
    }

    r = run_find(key);
    if (r != NULL && !r->finished) {
        changes = spec_changes(r->spec.json, sp.json, &rollout);
        plan_archive_change(changes, "code", r->code, a.code);
        plan_archive_change(changes, "files", r->files, a.files);
    }

    *answer = cJSON_CreateObject();
    cJSON_AddStringToObject(*answer, "name", name);
    cJSON_AddNumberToObject(*answer, "total", cJSON_GetArraySize(offers));
    cJSON_AddItemToObject(*answer, "offers", offers);
    cJSON_AddBoolToObject(*answer, "exists", r != NULL && !r->finished);
    cJSON_AddItemToObject(*answer, "changes",
                          changes ? changes : cJSON_CreateArray());
    cJSON_AddItemToObject(*answer, "spec", cJSON_Duplicate(sp.json, 1));
    cJSON_AddItemToObject(*answer, "warnings", spec_warnings(sp.json));
    ds_spec_free(&sp);
    return 0;
}


static int
initial_desired(const ds_spec_t *sp)
{
    return (int) sp->replicas.min;
}


int
action_apply(const struct caller *c, const char *project, const cJSON *req,
    cJSON **answer, int *created, char *err, size_t n)
{
    struct apply_req   a;
    ds_spec_t          sp, old_sp;
    ds_service_t       old_svc;
    struct run        *r, *prev;
    cJSON             *offers, *changes;
    const char        *name;
    char               gen[DS_NAME_MAX + 1], path[4096], old_code[65];
    char               old_files[65], key[DS_NAME_MAX + 1];
    int                rc, rollout, old_desired, old_version;

    *created = 0;
    rc = apply_prepare(c, project, req, &a, &sp, gen, &name, key, &offers,
                       err, n);
    if (rc != 0) {
        return rc;
    }
    cJSON_Delete(offers);

    if (a.code != NULL && !code_exists(a.code)) {
        snprintf(err, n, "code: no archive %s on the server: upload it "
                 "first with PUT /api/code/%s", a.code, a.code);
        ds_spec_free(&sp);
        return 400;
    }
    if (a.files != NULL && !code_exists(a.files)) {
        snprintf(err, n, "files: no archive %s on the server: upload it "
                 "first with PUT /api/code/%s", a.files, a.files);
        ds_spec_free(&sp);
        return 400;
    }
    /* the next leader starts replicas from the database's copy */
    if ((a.code != NULL && shared_code_publish(a.code, err, n) != 0)
        || (a.files != NULL && shared_code_publish(a.files, err, n) != 0))
    {
        ds_spec_free(&sp);
        return 503;
    }
    if ((sp.n_files > 0) != (a.files != NULL)) {
        snprintf(err, n, sp.n_files > 0
                 ? "files: the spec lists files but the request has no "
                   "\"files\" archive (dstackctl packs and uploads them)"
                 : "files: an archive without files in the spec");
        ds_spec_free(&sp);
        return 400;
    }

    prev = run_find(key);

    if (prev != NULL && !prev->finished) {
        r = prev;
        changes = spec_changes(r->spec.json, sp.json, &rollout);
        /* force: dstack's apply --force, a rolling restart */
        if ((a.code != NULL && strcmp(a.code, r->code) != 0)
            || strcmp(a.files ? a.files : "", r->files) != 0 || a.force)
        {
            rollout = 1;
        }
        if (cJSON_GetArraySize(changes) == 0 && !rollout) {
            cJSON_Delete(changes);
            ds_spec_free(&sp);
            *answer = run_to_api(r);
            cJSON_AddItemToObject(*answer, "warnings",
                                  spec_warnings(r->spec.json));
            return 0;
        }
        cJSON_Delete(changes);

        /* swap the spec in, keep the old one until the write succeeded */
        old_sp = r->spec;
        old_svc = r->svc;
        old_desired = r->desired;
        old_version = r->version;
        snprintf(old_code, sizeof(old_code), "%s", r->code);
        snprintf(old_files, sizeof(old_files), "%s", r->files);

        r->spec = sp;
        spec_service(&r->spec, r->name, &r->svc);
        if (a.code != NULL) {
            snprintf(r->code, sizeof(r->code), "%s", a.code);
        }
        snprintf(r->files, sizeof(r->files), "%s", a.files ? a.files : "");
        if (rollout) {
            r->version++;
        }
        if (!sp.scaling.enabled) {
            r->desired = (int) sp.replicas.min;
        } else {
            if (r->desired < (int) sp.replicas.min) {
                r->desired = (int) sp.replicas.min;
            }
            if (sp.replicas.max != DS_SPEC_UNLIMITED
                && r->desired > (int) sp.replicas.max)
            {
                r->desired = (int) sp.replicas.max;
            }
        }
        run_touch(r);

        rc = run_put_service(r, err, n);
        if (rc != STORE_OK) {
            r->spec = old_sp;
            r->svc = old_svc;
            r->desired = old_desired;
            r->version = old_version;
            snprintf(r->code, sizeof(r->code), "%s", old_code);
            snprintf(r->files, sizeof(r->files), "%s", old_files);
            ds_spec_free(&sp);
            return rc == STORE_ECONFLICT ? 409 : 500;
        }
        ds_spec_free(&old_sp);
        log_info("run \"%s\": updated%s (version %d, %d replicas)", r->name,
                 rollout ? ", rolling out" : " in place", r->version,
                 r->desired);
        reconcile_now = 1;
        *answer = run_to_api(r);
        cJSON_AddItemToObject(*answer, "warnings",
                              spec_warnings(r->spec.json));
        return 0;
    }

    r = run_new(key);
    snprintf(r->user, sizeof(r->user), "%s", c->user);
    r->spec = sp;
    spec_service(&r->spec, r->name, &r->svc);
    if (a.code != NULL) {
        snprintf(r->code, sizeof(r->code), "%s", a.code);
    }
    if (a.files != NULL) {
        snprintf(r->files, sizeof(r->files), "%s", a.files);
    }
    r->desired = initial_desired(&sp);
    r->status = r->desired > 0 ? RUN_SUBMITTED : RUN_PENDING;
    if (r->desired == 0) {
        snprintf(r->message, sizeof(r->message), "waiting for requests");
    }
    r->dirty = 1;
    r->publish = 1;

    rc = run_put_service(r, err, n);
    if (rc != STORE_OK) {
        run_free(r);
        return rc == STORE_ECONFLICT ? 409 : 500;
    }

    if (prev != NULL) {
        /* a finished run of that name: its files go with it */
        reconcile_forget(prev);
        if (fmt(path, sizeof(path), "%s/%s", conf->replicas_dir, key) == 0) {
            rm_rf(path);
        }
    }
    TAILQ_INSERT_TAIL(&runs, r, entry);
    log_info("run \"%s\": submitted (%d replica%s, port %u)", r->name,
             r->desired, r->desired == 1 ? "" : "s", (unsigned) sp.port);
    *created = 1;
    reconcile_now = 1;
    *answer = run_to_api(r);
    cJSON_AddItemToObject(*answer, "warnings", spec_warnings(r->spec.json));
    return 0;
}


int
action_stop(struct run *r, int abort, char *err, size_t n)
{
    (void) err;
    (void) n;

    reconcile_stop(r, abort);
    return 0;
}


/*
 * The count is the run's desired replicas, as if its spec said it: the
 * reconciler starts the missing ones (the run's version) or drains the
 * highest numbers, as a stop drains.  The spec is not changed, so the
 * next apply of a changed file sets the count from the file again, and
 * an apply that changes nothing keeps it.
 */
int
action_scale(struct run *r, int replicas, char *err, size_t n)
{
    int  old;

    if (r->finished) {
        snprintf(err, n, "run \"%s\" has finished (%s): nothing to scale",
                 r->short_name, run_status_name(r->status));
        return 409;
    }
    if (r->stopping) {
        snprintf(err, n, "run \"%s\" is terminating: nothing to scale",
                 r->short_name);
        return 409;
    }
    if (r->spec.scaling.enabled) {
        snprintf(err, n, "run \"%s\" scales itself (scaling: %s, replicas "
                 "%llu..%llu); change replicas in its file and apply",
                 r->short_name,
                 r->spec.scaling.metric == DS_SPEC_METRIC_INFLIGHT
                 ? "inflight" : "rps",
                 (unsigned long long) r->spec.replicas.min,
                 (unsigned long long) r->spec.replicas.max);
        return 409;
    }
    if (replicas < 1 || replicas > DS_REPLICAS_MAX) {
        snprintf(err, n, "replicas: expected a whole number from 1 to %d",
                 DS_REPLICAS_MAX);
        return 400;
    }
    if (replicas == r->desired) {
        return 0;
    }

    old = r->desired;
    r->desired = replicas;
    run_touch(r);
    if (run_put_doc(r, err, n) != STORE_OK) {
        r->desired = old;
        return 500;
    }
    reconcile_now = 1;
    return 0;
}
