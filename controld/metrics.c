/*
 * controld's metrics in the Prometheus text format (version 0.0.4),
 * built from what is in memory each time they are asked for: nothing is
 * kept for them but the counters of struct run_counters, backend.c and
 * tls.c.
 *
 * Series stay bounded: per run (live runs only), per replica number of
 * a live run, per state, per backend and per certificate; never per
 * address, token or request.  A replica is named by its run and number,
 * which a restart or a rollout keeps; its address changes.
 */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <string.h>

#include <cjson/cJSON.h>

#include "backend.h"
#include "config.h"
#include "metrics.h"
#include "run.h"
#include "shared.h"
#include "stats.h"
#include "tls.h"
#include "util.h"

static time_t  started;

static const char *const  scale_reasons[SCALE_NREASONS] = {
    [SCALE_RPS] = "rps",
    [SCALE_INFLIGHT] = "inflight",
    [SCALE_MIN] = "min",
    [SCALE_MAX] = "max",
    [SCALE_HELD] = "held_request",
    [SCALE_TTFT] = "ttft",
};


void
metrics_init(void)
{
    started = time(NULL);
}


static void
family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}


/* a label value as the format wants it: \\, \" and \n escaped */
static void
label(FILE *f, const char *v)
{
    for (; *v != '\0'; v++) {
        switch (*v) {
        case '\\':
            fputs("\\\\", f);
            break;
        case '"':
            fputs("\\\"", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        default:
            fputc(*v, f);
        }
    }
}


/* name{run="..."} value */
static void
run_line(FILE *f, const char *name, const struct run *r,
    unsigned long long v)
{
    fprintf(f, "%s{run=\"", name);
    label(f, r->name);
    fprintf(f, "\"} %llu\n", v);
}


/*
 * The replica that stands for its number: during a rollout the old
 * version drains while the new one starts under the same number; the
 * newest one that has not ended speaks for both, so that every series
 * has one value.
 */
static int
replica_shown(const struct replica *rep)
{
    const struct replica  *o;
    int                    after = 0;

    if (replica_ended(rep)) {
        return 0;
    }
    TAILQ_FOREACH(o, &rep->run->replicas, entry) {
        if (o == rep) {
            after = 1;
            continue;
        }
        if (o->num != rep->num || replica_ended(o)) {
            continue;
        }
        /* a newer version, or the same one later in the list */
        if (o->version > rep->version
            || (o->version == rep->version && after))
        {
            return 0;
        }
    }
    return 1;
}


/* name{run="...",replica="N"} value, for each replica shown */
static void
replica_family(FILE *f, const char *name, const char *type,
    const char *help, long long (*value)(const struct replica *))
{
    const struct run      *r;
    const struct replica  *rep;
    long long              v;

    family(f, name, type, help);
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished) {
            continue;
        }
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (!replica_shown(rep) || (v = value(rep)) < 0) {
                continue;
            }
            fprintf(f, "%s{run=\"", name);
            label(f, r->name);
            fprintf(f, "\",replica=\"%d\"} %lld\n", rep->num, v);
        }
    }
}


static long long
rep_ready(const struct replica *rep)
{
    return replica_ready(rep);
}


static long long
rep_version(const struct replica *rep)
{
    return rep->version;
}


static long long
rep_restarts(const struct replica *rep)
{
    return rep->restarts;
}


static long long
rep_started(const struct replica *rep)
{
    return rep->started_at > 0 ? (long long) rep->started_at : -1;
}


static void
runs_by_status(FILE *f)
{
    const struct run  *r;
    unsigned           n[RUN_DONE + 1] = { 0 };
    int                s;

    TAILQ_FOREACH(r, &runs, entry) {
        if (r->status >= 0 && r->status <= RUN_DONE) {
            n[r->status]++;
        }
    }
    family(f, "dstack_controld_runs", "gauge",
           "Runs known to controld by status (dstack's words).");
    for (s = 0; s <= RUN_DONE; s++) {
        fprintf(f, "dstack_controld_runs{status=\"%s\"} %u\n",
                run_status_name(s), n[s]);
    }
}


/* replicas of each live run by state: the states a replica can be in
 * while it has not ended, every one (0 too) */
static void
replicas_by_state(FILE *f)
{
    const struct run      *r;
    const struct replica  *rep;
    unsigned               n[RS_NSTATES];
    int                    s;

    family(f, "dstack_controld_replicas", "gauge",
           "Replicas of a run that have not ended, by state (the state "
           "machine's words: ready takes requests).");
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished) {
            continue;
        }
        for (s = 0; s < RS_NSTATES; s++) {
            n[s] = 0;
        }
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->state >= 0 && rep->state < RS_NSTATES) {
                n[rep->state]++;
            }
        }
        for (s = 0; s < RS_TERMINATED; s++) {
            fprintf(f, "dstack_controld_replicas{run=\"");
            label(f, r->name);
            fprintf(f, "\",state=\"%s\"} %u\n", replica_state_name(s),
                    n[s]);
        }
    }
}


static void
runs_desired_ready(FILE *f)
{
    const struct run      *r;
    const struct replica  *rep;
    unsigned               ready;

    family(f, "dstack_controld_run_desired_replicas", "gauge",
           "Replicas a run should have now (its spec, or the autoscaler).");
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished) {
            run_line(f, "dstack_controld_run_desired_replicas", r,
                     r->stopping ? 0 : (unsigned long long) r->desired);
        }
    }
    family(f, "dstack_controld_run_ready_replicas", "gauge",
           "Replicas of a run that are ready: in the gateway's replica "
           "set, taking requests.");
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished) {
            continue;
        }
        ready = 0;
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            ready += replica_ready(rep) != 0;
        }
        run_line(f, "dstack_controld_run_ready_replicas", r, ready);
    }
}


/* a counter of struct run_counters (at offset off) for each live run */
static void
run_counter(FILE *f, const char *name, const char *help, size_t off)
{
    const struct run  *r;

    family(f, name, "counter", help);
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished) {
            run_line(f, name, r, *(const unsigned long long *)
                     ((const char *) &r->counters + off));
        }
    }
}


static void
run_counters(FILE *f)
{
    const struct run  *r;

    family(f, "dstack_controld_probe_failures_total", "counter",
           "Failed readiness probes of a run's replicas, by the state of "
           "the replica: running (not ready yet, or out of routing) or "
           "ready.");
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished) {
            continue;
        }
        fprintf(f, "dstack_controld_probe_failures_total{run=\"");
        label(f, r->name);
        fprintf(f, "\",state=\"running\"} %llu\n",
                r->counters.probe_failures);
        fprintf(f, "dstack_controld_probe_failures_total{run=\"");
        label(f, r->name);
        fprintf(f, "\",state=\"ready\"} %llu\n",
                r->counters.probe_failures_ready);
    }
    run_counter(f, "dstack_controld_probe_unready_total",
                "Ready replicas of a run taken out of routing by failed "
                "probes.", offsetof(struct run_counters, unrouted));
    run_counter(f, "dstack_controld_run_replica_starts_total",
                "Replicas of a run that a backend accepted to start.",
                offsetof(struct run_counters, starts));
    run_counter(f, "dstack_controld_run_replica_restarts_total",
                "Replica starts of a run after a failure.",
                offsetof(struct run_counters, restarts));
    run_counter(f, "dstack_controld_run_replica_failures_total",
                "Replicas of a run that failed: could not start, exited "
                "or were killed on their own.",
                offsetof(struct run_counters, failures));
}


static void
autoscaler(FILE *f)
{
    const struct run  *r;
    int                up, why;

    family(f, "dstack_controld_autoscaler_wanted_replicas", "gauge",
           "Replicas the autoscaler's last look at the metric asked for "
           "(clamped to min and max, before the scaling delays).");
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished && r->spec.scaling.enabled && r->scaling.want >= 0)
        {
            run_line(f, "dstack_controld_autoscaler_wanted_replicas", r,
                     (unsigned long long) r->scaling.want);
        }
    }
    family(f, "dstack_controld_autoscaler_metric_value", "gauge",
           "The autoscaler's last value of a run's metric: requests per "
           "second over the window, or the in-flight peak.");
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished && r->spec.scaling.enabled) {
            fprintf(f, "dstack_controld_autoscaler_metric_value{run=\"");
            label(f, r->name);
            fprintf(f, "\"} %.6g\n", r->scaling.value);
        }
    }
    family(f, "dstack_controld_autoscaler_decisions_total", "counter",
           "Changes of a run's desired replicas by the autoscaler, by "
           "direction and reason: the metric (rps, inflight), its clamp "
           "(min, max) or a request held at the gateway.");
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished || !r->spec.scaling.enabled) {
            continue;
        }
        for (up = 1; up >= 0; up--) {
            for (why = 0; why < SCALE_NREASONS; why++) {
                if (!up && why == SCALE_HELD) {
                    continue;
                }
                fprintf(f, "dstack_controld_autoscaler_decisions_total"
                        "{run=\"");
                label(f, r->name);
                fprintf(f, "\",direction=\"%s\",reason=\"%s\"} %llu\n",
                        up ? "up" : "down", scale_reasons[why],
                        r->counters.scaled[up][why]);
            }
        }
    }
}


static void
backend_errors(FILE *f)
{
    const unsigned long long  *counts;
    const char                *name;
    size_t                     i;
    int                        k;

    family(f, "dstack_controld_backend_errors_total", "counter",
           "Replicas that went wrong, by backend and kind: start (the "
           "backend refused it), setup (code, image, environment), exit "
           "(it ended on its own), evict (its host went away).");
    for (i = 0; (name = backends_errors(i, &counts)) != NULL; i++) {
        for (k = 0; k < BE_NKINDS; k++) {
            fprintf(f, "dstack_controld_backend_errors_total{backend=\"");
            label(f, name);
            fprintf(f, "\",kind=\"%s\"} %llu\n", backend_error_name(k),
                    counts[k]);
        }
    }
}


static void
cert_line(const char *name, const char *source, uint64_t not_after,
    void *arg)
{
    FILE  *f = arg;

    fprintf(f, "dstack_controld_certificate_expiry_timestamp_seconds"
            "{name=\"");
    label(f, name);
    fprintf(f, "\",source=\"%s\"} %llu\n", source,
            (unsigned long long) not_after);
}


static void
certificates(FILE *f)
{
    unsigned long long  failures;

    family(f, "dstack_controld_certificate_expiry_timestamp_seconds",
           "gauge", "When a gateway certificate ends (its not-after), as a "
           "unix time, by name and source (local CA or ACME).");
    failures = tls_metrics(cert_line, f);
    family(f, "dstack_controld_acme_failures_total", "counter",
           "ACME runs (account, issue, renewal) that failed.");
    fprintf(f, "dstack_controld_acme_failures_total %llu\n", failures);
}


static void
process(FILE *f)
{
    int64_t  fresh;
    size_t   answering, total;

    family(f, "dstack_controld_build_info", "gauge",
           "controld's version, always 1.");
    fprintf(f, "dstack_controld_build_info{version=\"%s\"} 1\n",
            CONTROLD_VERSION);
    family(f, "dstack_controld_start_time_seconds", "gauge",
           "When controld started, as a unix time.");
    fprintf(f, "dstack_controld_start_time_seconds %lld\n",
            (long long) started);
    fresh = stats_fresh_ms();
    family(f, "dstack_controld_module_stats_age_seconds", "gauge",
           "Time since the module's stats last answered (the "
           "autoscaler's input); absent before the first answer.");
    if (fresh != 0) {
        fprintf(f, "dstack_controld_module_stats_age_seconds %.3f\n",
                (double) (now_ms() - fresh) / 1000.0);
    }
    stats_sources(&answering, &total);
    family(f, "dstack_controld_module_stats_sources", "gauge",
           "The gateways' stats locations read (stats_url), by whether "
           "their last answer counts in the sums.");
    fprintf(f, "dstack_controld_module_stats_sources{state=\"answering\"} "
            "%zu\n", answering);
    fprintf(f, "dstack_controld_module_stats_sources{state=\"failing\"} "
            "%zu\n", total - answering);
}


/*
 * Shared mode: who leads, the revision, and how far each instance is
 * behind (the leader asks the database, as GET /api/cluster does; a
 * database that cannot be reached leaves the families out).
 */
static void
cluster(FILE *f)
{
    cJSON       *c, *leader, *it;
    const char  *lname, *name, *role;
    char         err[256];

    if (!shared_enabled()) {
        return;
    }
    c = shared_cluster(err, sizeof(err));
    if (c == NULL) {
        return;
    }
    leader = cJSON_GetObjectItemCaseSensitive(c, "leader");
    lname = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(leader,
                                                                  "instance"));
    family(f, "dstack_controld_shared_term", "gauge",
           "The leader's term (it grows by one at each new leader).");
    fprintf(f, "dstack_controld_shared_term %.0f\n",
            cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(leader,
                                                                  "term")));
    family(f, "dstack_controld_shared_revision", "gauge",
           "The last revision published to the shared database.");
    fprintf(f, "dstack_controld_shared_revision %.0f\n",
            cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(c, "rev")));
    family(f, "dstack_controld_instance_leader", "gauge",
           "1 for the instance that leads, by instance and role.");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(c, "instances")) {
        name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it,
                                                                 "instance"));
        role = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it,
                                                                     "role"));
        if (name == NULL || role == NULL) {
            continue;
        }
        fputs("dstack_controld_instance_leader{instance=\"", f);
        label(f, name);
        fputs("\",role=\"", f);
        label(f, role);
        fprintf(f, "\"} %d\n", lname != NULL && strcmp(lname, name) == 0);
    }
    family(f, "dstack_controld_instance_revisions_behind", "gauge",
           "Revisions an instance (standby, gateway) has still to mirror.");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(c, "instances")) {
        name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it,
                                                                 "instance"));
        if (name == NULL) {
            continue;
        }
        fputs("dstack_controld_instance_revisions_behind{instance=\"", f);
        label(f, name);
        fprintf(f, "\"} %.0f\n",
                cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it,
                                                                  "behind")));
    }
    family(f, "dstack_controld_instance_seen_seconds", "gauge",
           "Seconds since an instance last reported to the shared "
           "database (every second while it runs).");
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(c, "instances")) {
        name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it,
                                                                 "instance"));
        if (name == NULL) {
            continue;
        }
        fputs("dstack_controld_instance_seen_seconds{instance=\"", f);
        label(f, name);
        fprintf(f, "\"} %.3f\n",
                cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(it,
                                                                  "seen_s")));
    }
    cJSON_Delete(c);
}


char *
metrics_render(void)
{
    FILE    *f;
    char    *text = NULL;
    size_t   len = 0;

    f = open_memstream(&text, &len);
    if (f == NULL) {
        return NULL;
    }
    process(f);
    runs_by_status(f);
    replicas_by_state(f);
    runs_desired_ready(f);
    replica_family(f, "dstack_controld_replica_ready", "gauge",
                   "1 when the replica is ready (takes requests), by run "
                   "and replica number.", rep_ready);
    replica_family(f, "dstack_controld_replica_version", "gauge",
                   "The run version the replica runs.", rep_version);
    replica_family(f, "dstack_controld_replica_restarts", "gauge",
                   "Times the replica was started again after a failure "
                   "(a new version starts from 0).", rep_restarts);
    replica_family(f, "dstack_controld_replica_start_time_seconds",
                   "gauge", "When the replica's process or container last "
                   "started, as a unix time.", rep_started);
    run_counters(f);
    autoscaler(f);
    backend_errors(f);
    certificates(f);
    cluster(f);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
