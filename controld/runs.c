/*
 * Runs and their replicas in memory: the data model.  The run document
 * in LMDB is rundoc.c's, the API's run object views.c's.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "run.h"
#include "util.h"


struct run_list  runs = TAILQ_HEAD_INITIALIZER(runs);


static const char *const  run_statuses[] = {
    "pending", "submitted", "provisioning", "running", "terminating",
    "terminated", "failed", "done"
};


static const char *const  replica_states[RS_NSTATES] = {
    "submitted", "provisioning", "pulling", "running", "ready", "draining",
    "stopping", "killing", "aborting", "backoff", "terminated", "aborted",
    "failed", "done"
};

/* dstack's words for the API (REFERENCE.md §3) */
static const char *const  replica_statuses[RS_NSTATES] = {
    "submitted", "provisioning", "pulling", "running", "running",
    "terminating", "terminating", "terminating", "terminating", "failed",
    "terminated", "aborted", "failed", "done"
};


static const char *
name_of(const char *const *names, int n, int s)
{
    return s >= 0 && s < n ? names[s] : "unknown";
}


static int
parse_name(const char *const *names, int n, const char *s)
{
    int  i;

    for (i = 0; s != NULL && i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}


const char *
run_status_name(int s)
{
    return name_of(run_statuses, sizeof(run_statuses)
                                 / sizeof(run_statuses[0]), s);
}


int
run_status_parse(const char *s)
{
    return parse_name(run_statuses, sizeof(run_statuses)
                                    / sizeof(run_statuses[0]), s);
}


const char *
replica_state_name(int s)
{
    return name_of(replica_states, RS_NSTATES, s);
}


const char *
replica_status_name(int s)
{
    return name_of(replica_statuses, RS_NSTATES, s);
}


int
replica_state_parse(const char *s)
{
    return parse_name(replica_states, RS_NSTATES, s);
}


int
replica_ready(const struct replica *rep)
{
    return rep->state == RS_READY;
}


int
replica_published(const struct replica *rep)
{
    return rep->state == RS_READY || rep->state == RS_DRAINING;
}


int
replica_ended(const struct replica *rep)
{
    return rep->state >= RS_TERMINATED;
}


/* stopped, or on its way: it never serves again (a backoff replica
 * restarts, so it stays) */
int
replica_leaving(const struct replica *rep)
{
    return (rep->state >= RS_DRAINING && rep->state <= RS_ABORTING)
           || replica_ended(rep);
}


int
replica_starting(const struct replica *rep)
{
    return rep->state == RS_PROVISIONING || rep->state == RS_PULLING
           || rep->state == RS_RUNNING;
}


struct run *
run_find(const char *name)
{
    struct run  *r;

    TAILQ_FOREACH(r, &runs, entry) {
        if (strcmp(r->name, name) == 0) {
            return r;
        }
    }
    return NULL;
}


struct run *
run_new(const char *name)
{
    struct run  *r;

    ds_str_t     project;
    size_t       len;

    r = xcalloc(1, sizeof(struct run));
    snprintf(r->name, sizeof(r->name), "%s", name);
    /* "web--team": run "web" of project "team" */
    len = strlen(r->name);
    ds_service_project(r->name, len, &project);
    snprintf(r->project, sizeof(r->project), "%.*s", (int) project.len,
             project.data);
    snprintf(r->short_name, sizeof(r->short_name), "%.*s",
             (int) (project.len ? len - project.len - 2 : len), r->name);
    TAILQ_INIT(&r->replicas);
    r->submitted_at = r->updated_at = time(NULL);
    r->status = RUN_SUBMITTED;
    r->version = 1;
    return r;
}


void
run_free(struct run *r)
{
    struct replica  *rep;

    while ((rep = TAILQ_FIRST(&r->replicas)) != NULL) {
        TAILQ_REMOVE(&r->replicas, rep, entry);
        replica_free(rep);
    }
    ds_spec_free(&r->spec);
    free(r);
}


struct replica *
replica_new(struct run *run, int num, int version)
{
    struct replica  *rep;

    rep = xcalloc(1, sizeof(struct replica));
    rep->run = run;
    rep->num = num;
    rep->version = version;
    rep->state = RS_SUBMITTED;
    rep->exit_status = -1;
    rep->net_index = -1;
    rep->submitted_at = time(NULL);
    return rep;
}


/* the caller cancelled its probes */
void
replica_free(struct replica *rep)
{
    free(rep);
}


void
run_touch(struct run *r)
{
    r->updated_at = time(NULL);
    r->dirty = 1;
}


int
replica_log_path(const struct replica *rep, char *buf, size_t n)
{
    return fmt(buf, n, "%s/%s/%d-%d.log", conf->replicas_dir, rep->run->name,
               rep->num, rep->version);
}


const char *
run_url(const struct run *r)
{
    static char  url[512];
    const char  *p;
    size_t       off = 0;

    p = strstr(conf->service_url, "{name}");
    if (p == NULL) {
        snprintf(url, sizeof(url), "%s", conf->service_url);
        return url;
    }
    off = (size_t) (p - conf->service_url);
    if (off > 200) {
        off = 200;
    }
    snprintf(url, sizeof(url), "%.*s%s%s", (int) off, conf->service_url,
             r->name, p + 6);
    return url;
}


/* ---- names -------------------------------------------------------------- */

static const char *const  adjectives[] = {
    "amber", "bold", "brave", "bright", "calm", "clever", "cool", "crisp",
    "eager", "fancy", "fast", "fine", "gentle", "glad", "golden", "good",
    "happy", "keen", "kind", "lively", "lucky", "mellow", "merry", "nice",
    "noble", "proud", "quick", "quiet", "rapid", "shiny", "silver", "smart",
    "snowy", "sunny", "swift", "tidy", "vivid", "warm", "wise", "yellow"
};

static const char *const  animals[] = {
    "ant", "bat", "bear", "bee", "bison", "cat", "cobra", "crab", "crow",
    "deer", "dog", "dove", "duck", "eagle", "eel", "elk", "fish", "fox",
    "frog", "goat", "hawk", "horse", "ibis", "koala", "lark", "lion",
    "lynx", "mole", "moose", "mouse", "otter", "owl", "panda", "puma",
    "rabbit", "seal", "sheep", "swan", "tiger", "wolf", "yak", "zebra"
};


void
run_generate_name(char *buf, size_t n)
{
    const char  *adj, *animal;
    int          i;

    adj = adjectives[random() % (sizeof(adjectives) / sizeof(adjectives[0]))];
    animal = animals[random() % (sizeof(animals) / sizeof(animals[0]))];

    /* N = the first free index, as dstack does */
    for (i = 1; ; i++) {
        snprintf(buf, n, "%s-%s-%d", adj, animal, i);
        if (run_find(buf) == NULL) {
            return;
        }
    }
}


