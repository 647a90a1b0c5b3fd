/*
 * The audit log (#18): one JSON document per change asked of the API,
 * keyed by a sequence number written as 16 hex digits (so that key order
 * is time order), the oldest removed beyond AUDIT_KEEP.  Written in its
 * own transaction after the change, refused changes included; an event
 * that cannot be written is logged, never a reason to fail the change.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "log.h"
#include "store.h"
#include "teams.h"


/* the next sequence number and how many are kept: learnt from the state
 * at the first event, and again whenever another writer (a former
 * leader) moved it */
static uint64_t  audit_next;
static uint64_t  audit_count;
static int       audit_known;


static int
audit_scan_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    uint64_t  seq;
    char      buf[17];

    (void) arg;
    (void) val;
    if (key->len != 16) {
        return 0;
    }
    memcpy(buf, key->data, 16);
    buf[16] = '\0';
    seq = strtoull(buf, NULL, 16);
    if (audit_count == 0 || seq + 1 > audit_next) {
        audit_next = seq + 1;
    }
    audit_count++;
    return 0;
}


static int
audit_scan(ds_txn_t *txn)
{
    ds_err_t  err;

    audit_next = 1;
    audit_count = 0;
    if (ds_foreach_team_doc(txn, DS_DOCS_AUDIT, audit_scan_cb, NULL, &err)
        != DS_OK)
    {
        log_warnx("audit: %s", err.msg);
        return -1;
    }
    audit_known = 1;
    return 0;
}


void
audit_event(const struct caller *c, const char *project, const char *action,
    const char *object, unsigned status)
{
    struct store_txn  *t;
    ds_str_t           doc;
    ds_err_t           e;
    cJSON             *o;
    char               key[17], old[17], err[512], *text;

    t = store_begin(err, sizeof(err));
    if (t == NULL) {
        log_warnx("audit: %s", err);
        return;
    }
    snprintf(key, sizeof(key), "%016" PRIx64, audit_next);
    if (!audit_known
        || ds_get_team_doc(store_txn_of(t), DS_DOCS_AUDIT, key, 16, &doc, &e)
           == DS_OK)
    {
        (void) audit_scan(store_txn_of(t));
        snprintf(key, sizeof(key), "%016" PRIx64, audit_next);
    }

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "seq", (double) audit_next);
    cJSON_AddNumberToObject(o, "time", (double) time(NULL));
    cJSON_AddStringToObject(o, "user", c->user);
    cJSON_AddStringToObject(o, "token", c->token);
    cJSON_AddStringToObject(o, "project", project);
    cJSON_AddStringToObject(o, "action", action);
    cJSON_AddStringToObject(o, "object", object ? object : "");
    cJSON_AddNumberToObject(o, "status", status);
    text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (text == NULL) {
        store_end(t);
        return;
    }
    store_put_team_doc(t, DS_DOCS_AUDIT, key, text);
    free(text);
    if (audit_count >= AUDIT_KEEP) {
        snprintf(old, sizeof(old), "%016" PRIx64,
                 audit_next - audit_count);
        store_del_team_doc(t, DS_DOCS_AUDIT, old);
    }
    if (store_end(t) != STORE_OK) {
        log_warnx("audit: %s", err);
        audit_known = 0;
        return;
    }
    audit_next++;
    if (audit_count < AUDIT_KEEP) {
        audit_count++;
    }
}


struct audit_read {
    cJSON          *list;               /* oldest first, reversed later */
    const char     *project;            /* NULL: all */
};


static int
audit_read_cb(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    struct audit_read  *ar = arg;
    cJSON              *o, *p;

    (void) key;
    o = cJSON_ParseWithLength(val->data, val->len);
    if (o == NULL) {
        return 0;
    }
    p = cJSON_GetObjectItem(o, "project");
    if (ar->project != NULL
        && (!cJSON_IsString(p) || strcmp(p->valuestring, ar->project) != 0))
    {
        cJSON_Delete(o);
        return 0;
    }
    cJSON_DeleteItemFromObject(o, "token");
    cJSON_AddItemToArray(ar->list, o);
    return 0;
}


int
audit_list(const struct caller *c, const char *project, int limit,
    cJSON **answer, char *err, size_t n)
{
    struct audit_read   ar;
    ds_txn_t           *txn;
    ds_err_t            e;
    cJSON              *events, *it;
    int                 rc, count;

    if (project == NULL && !c->global_admin) {
        /* a project admin reads its project's: name it */
        snprintf(err, n, "only a global admin reads every project's "
                 "events: add ?project=NAME");
        return 403;
    }
    if (project != NULL) {
        rc = teams_check(c, project, DS_ACT_AUDIT_READ, 0, err, n);
        if (rc != 0) {
            return rc;
        }
        project = teams_name(teams_key(project));
    }
    if (limit <= 0 || limit > AUDIT_KEEP) {
        limit = 100;
    }
    if (ds_txn_begin(state, 0, &txn, &e) != DS_OK) {
        snprintf(err, n, "audit: %s", e.msg);
        return 500;
    }
    ar.list = cJSON_CreateArray();
    ar.project = project;
    rc = ds_foreach_team_doc(txn, DS_DOCS_AUDIT, audit_read_cb, &ar, &e);
    ds_txn_abort(txn);
    if (rc != DS_OK) {
        cJSON_Delete(ar.list);
        snprintf(err, n, "audit: %s", e.msg);
        return 500;
    }

    /* the newest first, at most limit */
    *answer = cJSON_CreateObject();
    events = cJSON_AddArrayToObject(*answer, "events");
    count = 0;
    /* cJSON: the first item's prev is the last one */
    for (it = ar.list->child ? ar.list->child->prev : NULL;
         it != NULL && count < limit;
         it = it == ar.list->child ? NULL : it->prev)
    {
        cJSON_AddItemToArray(events, cJSON_Duplicate(it, 1));
        count++;
    }
    cJSON_Delete(ar.list);
    return 0;
}
