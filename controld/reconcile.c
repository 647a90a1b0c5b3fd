/*
 * The reconciler: desired runs -> replicas, and the lifecycle of each
 * (the states and their transitions: run.h, lifecycle.c).
 *
 *   replica:  submitted -> (backend start) -> provisioning -> (commands
 *             run) -> running -> (probes pass) ready, in LMDB
 *             -> draining in LMDB -> in-flight 0 or stop_duration
 *             -> stopping (SIGTERM) -> stop_grace -> killing (SIGKILL)
 *             -> terminated, out of LMDB
 *             a replica that exits on its own: backoff ("failed"), out
 *             of LMDB, and started again after 1 s, 2 s, 4 s .. 60 s
 *   run:      submitted / provisioning until a replica is ready, running
 *             while one is, pending when scaled to zero, terminating ->
 *             terminated on stop, failed when no replica can run at all
 *             (each failed max_failures times in a row with none ready,
 *             or for retry.duration when the spec has a retry policy)
 *
 * A re-apply that changes more than replicas/scaling bumps the run's
 * version and rolls out one replica number at a time: the new version of
 * replica k starts next to the old one (its own namespace), and when it is
 * ready the old one drains; the step that makes the new replica ready and
 * the old one draining is one LMDB transaction.  Without namespaces (host
 * network) two versions cannot share the port, so the old one stops first.
 *
 * Everything here runs on the main loop.  Changes mark runs dirty (their
 * document) and publish (their replica set); runs_flush() writes them
 * after each pass.
 */

#define _GNU_SOURCE

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "autoscale.h"
#include "backend.h"
#include "config.h"
#include "lifecycle.h"
#include "log.h"
#include "probes.h"
#include "reconcile.h"
#include "run.h"
#include "spec.h"
#include "stats.h"
#include "util.h"


#define BACKOFF_MAX_MS          60000
#define DRAIN_STATS_MARGIN_MS   100     /* in-flight counted after this */

int  reconcile_now;


/* ---- helpers ------------------------------------------------------------ */

/* how long a drain may wait for in-flight requests; "off": no bound
 * (as in dstack), which still means a bound when no stats can tell */
static int64_t
stop_duration_ms(const struct run *r)
{
    if (r->spec.stop_duration == DS_SPEC_OFF) {
        return INT64_MAX / 4;
    }
    return (int64_t) r->spec.stop_duration * 1000;
}


static void
replica_set_message(struct replica *rep, const char *msg)
{
    if (strcmp(rep->message, msg) != 0) {
        snprintf(rep->message, sizeof(rep->message), "%s", msg);
        rep->run->dirty = 1;
    }
}





static void
exit_text(int status, char *buf, size_t n)
{
    if (status < 0) {
        snprintf(buf, n, "exited");
    } else if (WIFEXITED(status)) {
        snprintf(buf, n, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    } else {
        snprintf(buf, n, "ended (status 0x%x)", status);
    }
}


/* ---- stopping ----------------------------------------------------------- */

/*
 * Takes a replica out: draining first when it serves (unless aborting),
 * then SIGTERM; the tick does the rest.
 */
static void
replica_stop(struct replica *rep, int abort)
{
    struct run  *r = rep->run;
    int64_t      bound;
    size_t       answering, sources;

    if (replica_ended(rep)) {
        return;
    }

    if (!rep->active) {
        /* never started, or between restarts */
        probes_cancel(rep);
        replica_set_state(rep, abort ? RS_ABORTED : RS_TERMINATED);
        return;
    }

    if (abort) {
        probes_cancel(rep);
        if (rep->state != RS_ABORTING) {
            replica_set_state(rep, RS_ABORTING);
            rep->backend->stop(rep, 1);
            if (rep->term_sent_ms == 0) {
                rep->term_sent_ms = now_ms();
            }
        }
        return;
    }

    switch (rep->state) {

    case RS_READY:
        probes_cancel(rep);
        replica_set_state(rep, RS_DRAINING);
        rep->drain_started_ms = now_ms();
        bound = stop_duration_ms(r);
        stats_sources(&answering, &sources);
        if (sources == 0 && bound > conf->local.drain_unknown_ms) {
            /* without stats nobody can tell when in-flight requests are
             * done: a short wait instead of the whole stop_duration */
            bound = conf->local.drain_unknown_ms;
        }
        rep->drain_deadline_ms = rep->drain_started_ms + bound;
        stats_request(DRAIN_STATS_MARGIN_MS + 10);
        replica_set_message(rep, "draining");
        log_info("run \"%s\": replica %d v%d draining", r->name, rep->num,
                 rep->version);
        return;

    case RS_PROVISIONING:
    case RS_PULLING:
    case RS_RUNNING:
        probes_cancel(rep);
        replica_set_state(rep, RS_STOPPING);
        rep->backend->stop(rep, 0);
        rep->term_sent_ms = now_ms();
        return;

    default:
        /* on its way already */
        return;
    }
}


/* drives draining and terminating replicas */
static void
replica_stop_tick(struct replica *rep, int64_t now)
{
    struct run  *r = rep->run;
    long         inflight;
    int          done = 0;
    unsigned     bound;

    if (!rep->active) {
        return;
    }

    if (rep->state == RS_DRAINING) {
        if (now >= rep->drain_deadline_ms) {
            done = 1;
            log_info("run \"%s\": replica %d v%d: drain ended after %lld "
                     "ms (bound)", r->name, rep->num, rep->version,
                     (long long) (now - rep->drain_started_ms));
        } else if (stats_fresh_ms()
                   >= rep->drain_started_ms + DRAIN_STATS_MARGIN_MS)
        {
            inflight = stats_replica_inflight(r->name, rep->addr);
            if (inflight == 0) {
                done = 1;
                log_debug("run \"%s\": replica %d v%d drained in %lld ms",
                          r->name, rep->num, rep->version,
                          (long long) (now - rep->drain_started_ms));
            } else {
                stats_request(100);
            }
        } else {
            /* stats unreachable: wait the short bound, not minutes */
            bound = conf->local.drain_unknown_ms;
            if (stats_fresh_ms() + 3000 < now
                && now >= rep->drain_started_ms + (int64_t) bound)
            {
                done = 1;
            }
            stats_request(100);
        }
        if (!done) {
            return;
        }
        /* out of the replica set in the same write that follows */
        replica_set_state(rep, RS_STOPPING);
        rep->backend->stop(rep, 0);
        rep->term_sent_ms = now;
        return;
    }

    if (rep->state != RS_STOPPING) {
        return;         /* killing, aborting: its exit ends it */
    }

    if (rep->term_sent_ms == 0) {
        /* adopted while stopping: ask again */
        rep->backend->stop(rep, 0);
        rep->term_sent_ms = now;
        return;
    }

    if (now - rep->term_sent_ms >= (int64_t) conf->local.stop_grace_ms) {
        log_info("run \"%s\": replica %d v%d ignored SIGTERM for %u ms: "
                 "SIGKILL", r->name, rep->num, rep->version,
                 conf->local.stop_grace_ms);
        replica_set_state(rep, RS_KILLING);
        rep->backend->stop(rep, 1);
    }
}


/* ---- failures ----------------------------------------------------------- */

static void
run_finish(struct run *r, int status, const char *msg)
{
    char  text[sizeof(r->message)];

    /* msg may be r->message itself; every replica has ended */
    snprintf(text, sizeof(text), "%s", msg ? msg : "");
    r->finished = 1;
    r->stopping = 0;
    r->status = status;
    snprintf(r->message, sizeof(r->message), "%s", text);
    r->publish = 1;
    run_touch(r);
    log_info("run \"%s\": %s%s%s", r->name, run_status_name(status),
             text[0] ? ": " : "", text);
}


/* no replica can run at all: the run fails, what is left stops */
static void
run_fail(struct run *r, const char *why)
{
    struct replica  *rep;
    int              alive = 0;

    snprintf(r->message, sizeof(r->message), "%s", why);
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (rep->active) {
            replica_stop(rep, 1);
            alive = 1;
        } else if (rep->state == RS_BACKOFF) {
            replica_set_state(rep, RS_FAILED);
        } else if (!replica_ended(rep)) {
            replica_set_state(rep, RS_ABORTED);
        }
    }
    if (alive) {
        /* finish once the processes are gone; remember why */
        r->stopping = 1;
        r->abort = 1;
        r->status = RUN_FAILED;
        run_touch(r);
        return;
    }
    run_finish(r, RUN_FAILED, why);
}


static int
run_has_ready(const struct run *r)
{
    const struct replica  *rep;

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (replica_ready(rep)) {
            return 1;
        }
    }
    return 0;
}


static void run_check_rollout(struct run *r, struct replica *last);


static void
run_check_failed(struct run *r, struct replica *last)
{
    const struct replica  *rep;
    unsigned               limit;
    int                    any = 0;
    char                   why[256];

    if (r->stopping || r->finished) {
        return;
    }

    if (run_has_ready(r)) {
        run_check_rollout(r, last);
        return;
    }

    if (r->spec.retry.enabled) {
        if (r->failing_since == 0
            || time(NULL) - r->failing_since < (time_t) r->spec.retry.duration)
        {
            return;
        }
        fmt(why, sizeof(why), "no replica got ready within "
            "retry.duration (%us); replica %d: %s", r->spec.retry.duration,
            last->num, last->message);
        run_fail(r, why);
        return;
    }

    limit = conf->local.max_failures;
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (replica_leaving(rep)) {
            continue;
        }
        any = 1;
        if ((unsigned) rep->failures < limit) {
            return;
        }
    }
    if (!any) {
        return;
    }
    fmt(why, sizeof(why), "every replica failed %u times in a row; "
        "replica %d: %s (see: dstackctl logs %s --replica %d)", limit,
        last->num, last->message, r->name, last->num);
    run_fail(r, why);
}


/*
 * A rollout whose new version fails where the old one serves: after
 * max_failures failures in a row of a new replica, the rollout gives up.
 * The failing replica goes, the old version keeps serving, the run says
 * why (and the API, so that "dstackctl apply" stops waiting and says
 * it); applying again starts a new rollout.
 */
static void
run_check_rollout(struct run *r, struct replica *last)
{
    struct replica  *old;
    int              serving = 0;

    if (last->version != r->version || r->rollout_failed == r->version
        || (unsigned) last->failures < conf->local.max_failures)
    {
        return;
    }

    TAILQ_FOREACH(old, &r->replicas, entry) {
        if (old->version < r->version && replica_ready(old)
            && (serving == 0 || old->version > serving))
        {
            serving = old->version;
        }
    }
    if (serving == 0) {
        return;         /* not a rollout: a replica of a serving version */
    }

    fmt(r->rollout_error, sizeof(r->rollout_error), "version %d failed to "
        "start, version %d keeps serving: replica %d failed %u times in a "
        "row (see: dstackctl logs %s --replica %d): %s", r->version, serving,
        last->num, conf->local.max_failures, r->name, last->num,
        last->message);
    r->rollout_failed = r->version;
    /* the API tells it at once, not at the next status update */
    snprintf(r->message, sizeof(r->message), "%s", r->rollout_error);
    log_warnx("run \"%s\": the rollout of version %d gives up: %s", r->name,
              r->version, r->rollout_error);
    replica_stop(last, 0);
    run_touch(r);
}


static void
replica_failed(struct replica *rep, const char *why)
{
    struct run  *r = rep->run;
    int64_t      backoff;

    rep->failures++;
    r->counters.failures++;
    backoff = 1000LL << (rep->failures > 7 ? 6 : rep->failures - 1);
    if (backoff > BACKOFF_MAX_MS) {
        backoff = BACKOFF_MAX_MS;
    }
    rep->next_start_ms = now_ms() + backoff;
    replica_set_state(rep, RS_BACKOFF);
    replica_set_message(rep, why);
    if (r->failing_since == 0 && !run_has_ready(r)) {
        r->failing_since = time(NULL);
    }
    log_warnx("run \"%s\": replica %d v%d failed: %s; restart in %lld s",
              r->name, rep->num, rep->version, why,
              (long long) (backoff / 1000));
    run_check_failed(r, rep);
}


/* the replica's process group is gone */
/* how a replica that was leaving ends */
static int
replica_end_state(const struct replica *rep)
{
    return rep->state == RS_ABORTING
           || (rep->run->stopping && rep->run->abort) ? RS_ABORTED
                                                      : RS_TERMINATED;
}


/* the replica's process group is gone */
static void
replica_exited(struct replica *rep, int status)
{
    struct run  *r = rep->run;
    char         why[384], ex[96];
    int          leaving;

    probes_cancel(rep);
    rep->exit_status = status;
    leaving = replica_leaving(rep) || r->stopping;
    rep->backend->release(rep, leaving);
    rep->active = 0;
    run_touch(r);

    if (leaving) {
        if (!replica_leaving(rep)) {
            /* a run stopping while this one was not asked: not expected,
             * but it must still end */
            replica_set_state(rep, RS_ABORTING);
        }
        replica_set_state(rep, replica_end_state(rep));
        log_info("run \"%s\": replica %d v%d %s", r->name, rep->num,
                 rep->version, replica_status_name(rep->state));
        return;
    }

    exit_text(status, ex, sizeof(ex));
    backend_count_error(rep->backend, rep->setup_failed ? BE_SETUP
                                                        : BE_EXIT);
    if (rep->setup_failed) {
        /* the setup said why */
        snprintf(why, sizeof(why), "%s", rep->message);
    } else if (rep->probe_error[0] && !replica_ready(rep)) {
        snprintf(why, sizeof(why), "%s before it got ready (last probe: %s)",
                 ex, rep->probe_error);
    } else {
        snprintf(why, sizeof(why), "%s", ex);
    }
    replica_failed(rep, why);
}


static void
replica_setup_done(struct replica *rep, const char *error)
{
    if (error != NULL) {
        /* the child exits next; its exit fails the replica */
        replica_set_message(rep, error);
        rep->setup_failed = 1;
        return;
    }
    if (rep->state == RS_PROVISIONING || rep->state == RS_PULLING) {
        replica_set_state(rep, RS_RUNNING);
        if (strncmp(rep->message, "restarted after: ", 17) != 0) {
            replica_set_message(rep, "");
        }
        probes_start(rep);
        reconcile_now = 1;
    }
}


static void
replica_probe_result(struct replica *rep, int ok, const char *why)
{
    struct run      *r = rep->run;
    struct replica  *old;

    if (replica_leaving(rep) || r->stopping || r->finished) {
        return;
    }

    if (!ok) {
        if (rep->state == RS_READY) {
            r->counters.unrouted++;
            replica_set_state(rep, RS_RUNNING);
            replica_set_message(rep, why ? why : "probe failed");
            log_warnx("run \"%s\": replica %d v%d out of routing: %s",
                      r->name, rep->num, rep->version, why ? why : "");
            rep->probe_delay_ms = 0;
        }
        return;
    }

    if (rep->state != RS_RUNNING) {
        return;
    }
    replica_set_state(rep, RS_READY);
    rep->ready_since_ms = now_ms();
    rep->failures = 0;
    r->failing_since = 0;
    replica_set_message(rep, "");
    log_info("run \"%s\": replica %d v%d ready at %s", r->name, rep->num,
             rep->version, rep->addr);

    /* a rollout step: the old version of this replica drains now, in the
     * same transaction that makes the new one ready */
    TAILQ_FOREACH(old, &r->replicas, entry) {
        if (old != rep && old->num == rep->num && !replica_leaving(old)
            && old->version < rep->version)
        {
            replica_stop(old, 0);
        }
    }
    reconcile_now = 1;
}


/* the backend fetches the replica's image first */
static void
replica_pulling(struct replica *rep, const char *progress)
{
    char  msg[sizeof(rep->message)];

    if (rep->state == RS_PROVISIONING) {
        replica_set_state(rep, RS_PULLING);
    }
    if (rep->state == RS_PULLING) {
        fmt(msg, sizeof(msg), "pulling %s%s%s", rep->run->spec.image,
            progress && progress[0] ? ": " : "", progress ? progress : "");
        replica_set_message(rep, msg);
    }
}


/* its host goes away (a fleet deleted by force): drained and stopped;
 * the run starts its successor elsewhere */
static void
replica_evict(struct replica *rep, const char *why)
{
    log_info("run \"%s\": replica %d v%d leaves its host: %s",
             rep->run->name, rep->num, rep->version, why);
    backend_count_error(rep->backend, BE_EVICT);
    replica_stop(rep, 0);
    replica_set_message(rep, why);
    run_touch(rep->run);
}


const struct backend_events  reconcile_events = {
    replica_setup_done,
    replica_exited,
    replica_pulling,
    replica_evict,
};


void
reconcile_init(void)
{
    probes_init(replica_probe_result);
}


/* a finished run replaced by a new one of its name */
void
reconcile_forget(struct run *r)
{
    struct replica  *rep;

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        probes_cancel(rep);
    }
    TAILQ_REMOVE(&runs, r, entry);
    run_free(r);
}


/* ---- the pass ----------------------------------------------------------- */

/* a number is free when no replica of it counts or still runs (a new
 * replica of the same version would share its working directory) */
static int
num_in_use(const struct run *r, int num)
{
    const struct replica  *rep;

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (rep->num == num && (!replica_leaving(rep) || rep->active)) {
            return 1;
        }
    }
    return 0;
}


/* the replica of number num that counts: the newest not retired */
static struct replica *
replica_current(struct run *r, int num)
{
    struct replica  *rep, *best = NULL;

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (rep->num == num && !replica_leaving(rep)
            && (best == NULL || rep->version > best->version))
        {
            best = rep;
        }
    }
    return best;
}


static int
run_slots(const struct run *r, int *max_num)
{
    const struct replica  *rep;
    int                    n = 0, seen[1024], i, dup;

    *max_num = -1;
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (replica_leaving(rep)) {
            continue;
        }
        dup = 0;
        for (i = 0; i < n && i < 1024; i++) {
            if (seen[i] == rep->num) {
                dup = 1;
                break;
            }
        }
        if (!dup && n < 1024) {
            seen[n++] = rep->num;
        }
        if (rep->num > *max_num) {
            *max_num = rep->num;
        }
    }
    return n;
}


static void
run_scale(struct run *r)
{
    struct replica  *rep, *victim;
    int              n, max_num, num;

    n = run_slots(r, &max_num);

    while (n < r->desired) {
        for (num = 0; num_in_use(r, num); num++) {
            /* the lowest free number */
        }
        rep = replica_new(r, num, r->version);
        TAILQ_INSERT_TAIL(&r->replicas, rep, entry);
        log_info("run \"%s\": replica %d v%d submitted", r->name, num,
                 r->version);
        run_touch(r);
        n++;
    }

    while (n > r->desired) {
        /* the highest number goes; not-ready ones first */
        victim = NULL;
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (replica_leaving(rep)) {
                continue;
            }
            if (victim == NULL
                || (!replica_ready(rep) && replica_ready(victim))
                || (replica_ready(rep) == replica_ready(victim)
                    && rep->num > victim->num))
            {
                victim = rep;
            }
        }
        if (victim == NULL) {
            break;
        }
        num = victim->num;
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->num == num && !replica_leaving(rep)) {
                replica_stop(rep, 0);
            }
        }
        log_info("run \"%s\": replica %d scaled down", r->name, num);
        n--;
    }
}


/*
 * One rollout step at a time: while a new-version replica is not ready
 * next to its old version, nothing else starts.
 */
static void
run_rollout(struct run *r)
{
    struct replica  *rep, *cur, *nr;
    int              max_num, num, surge;

    if (r->rollout_failed == r->version) {
        return;         /* gave up; the next apply tries again */
    }

    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (replica_leaving(rep) || rep->version != r->version
            || replica_ready(rep))
        {
            continue;
        }
        TAILQ_FOREACH(cur, &r->replicas, entry) {
            if (cur->num == rep->num && cur != rep && !replica_leaving(cur)
                && cur->version < rep->version)
            {
                return;     /* a step in progress */
            }
        }
    }

    run_slots(r, &max_num);
    for (num = 0; num <= max_num; num++) {
        cur = replica_current(r, num);
        if (cur == NULL || cur->version >= r->version) {
            continue;
        }

        /* a replica that does not serve is simply replaced; one that
         * serves gets its successor next to it first (host network: no
         * room for two, so it stops first) */
        surge = replica_ready(cur) && cur->backend->side_by_side()
                && backend_for(&r->spec, r->project)->side_by_side();
        if (!surge) {
            replica_stop(cur, 0);
        }
        nr = replica_new(r, num, r->version);
        nr->restarts = 0;
        TAILQ_INSERT_TAIL(&r->replicas, nr, entry);
        log_info("run \"%s\": rolling out version %d to replica %d%s",
                 r->name, r->version, num,
                 surge ? " (next to the old one)" : "");
        run_touch(r);
        return;
    }
}


static void
replica_start(struct replica *rep, int64_t now)
{
    struct run      *r = rep->run;
    struct replica  *o;
    int              rc;
    char             msg[sizeof(rep->message)];

    if (rep->next_start_ms > now) {
        return;
    }
    /* the backend of its spec (an image: containers); on the host
     * network the old version must be gone from the port */
    rep->backend = backend_for(&r->spec, r->project);
    if (!rep->backend->side_by_side()) {
        TAILQ_FOREACH(o, &r->replicas, entry) {
            if (o != rep && o->active) {
                return;
            }
        }
    }

    rep->probe_error[0] = '\0';
    rep->setup_failed = 0;
    rep->term_sent_ms = 0;
    if (rep->state == RS_BACKOFF) {
        /* why it restarts stays visible until it is ready again */
        rep->restarts++;
        if (strncmp(rep->message, "restarted after: ", 17) != 0) {
            fmt(msg, sizeof(msg), "restarted after: %s", rep->message);
            replica_set_message(rep, msg);
        }
    } else {
        replica_set_message(rep, "");
    }

    rc = rep->backend->start(rep);
    if (rc == BACKEND_STARTED) {
        r->counters.starts++;
        if (rep->state == RS_BACKOFF) {
            r->counters.restarts++;     /* as rep->restarts above */
        }
        rep->active = 1;
        rep->started_at = time(NULL);
        replica_set_state(rep, RS_PROVISIONING);
        run_touch(r);
        return;
    }
    if (rc == BACKEND_WAIT) {
        replica_set_state(rep, RS_SUBMITTED);
        rep->next_start_ms = now + 1000;
        r->dirty = 1;
        return;
    }
    backend_count_error(rep->backend, BE_START);
    replica_failed(rep, rep->message[0] ? rep->message : "cannot start");
}


static void
run_status_update(struct run *r)
{
    struct replica  *rep;
    int              status, ready = 0, starting = 0, rolling = 0;
    char             msg[256];

    if (r->finished) {
        return;
    }

    msg[0] = '\0';
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (replica_ready(rep)) {
            ready++;
        }
        if (replica_starting(rep)) {
            starting++;
        }
        if (!replica_leaving(rep) && rep->version < r->version) {
            rolling++;
        }
        if (rep->state == RS_BACKOFF && msg[0] == '\0') {
            fmt(msg, sizeof(msg), "replica %d: %s", rep->num,
                rep->message);
        }
    }

    if (r->stopping) {
        status = RUN_TERMINATING;
        snprintf(msg, sizeof(msg), "%s", r->status == RUN_FAILED
                                         ? r->message : "");
        if (r->status == RUN_FAILED) {
            return;
        }
    } else if (ready > 0) {
        status = RUN_RUNNING;
        if (r->rollout_failed == r->version) {
            snprintf(msg, sizeof(msg), "%s", r->rollout_error);
        } else if (rolling > 0) {
            /* out of the replicas the spec asks for: the surge replica
             * next to an old one is not one more to replace */
            snprintf(msg, sizeof(msg), "rolling out version %d (%d of %d "
                     "replicas left)", r->version, rolling,
                     r->desired > rolling ? r->desired : rolling);
        } else if (ready < r->desired && msg[0] == '\0') {
            snprintf(msg, sizeof(msg), "%d of %d replicas ready", ready,
                     r->desired);
        }
    } else if (r->desired == 0) {
        status = RUN_PENDING;
        snprintf(msg, sizeof(msg), "waiting for requests");
    } else if (starting > 0) {
        status = RUN_PROVISIONING;
    } else {
        status = RUN_SUBMITTED;
    }

    if (status != r->status || strcmp(msg, r->message) != 0) {
        if (status != r->status) {
            log_info("run \"%s\": %s -> %s", r->name,
                     run_status_name(r->status), run_status_name(status));
        }
        r->status = status;
        snprintf(r->message, sizeof(r->message), "%s", msg);
        run_touch(r);
    }
}


static void
run_tick(struct run *r, int64_t now)
{
    struct replica  *rep, *next;
    int              alive;

    /* adopted replicas are not our children: look at them */
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        if (rep->active && rep->adopted && !rep->backend->alive(rep)) {
            log_info("run \"%s\": replica %d v%d (pid %d, adopted) is gone",
                     r->name, rep->num, rep->version, (int) rep->pid);
            replica_exited(rep, -1);
        }
    }

    if (r->stopping) {
        alive = 0;
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->active) {
                replica_stop_tick(rep, now);
                alive = 1;
            } else if (!replica_ended(rep)) {
                probes_cancel(rep);
                replica_set_state(rep, r->abort ? RS_ABORTED
                                                : RS_TERMINATED);
            }
        }
        if (!alive) {
            if (r->status == RUN_FAILED) {
                run_finish(r, RUN_FAILED, r->message);
            } else {
                run_finish(r, RUN_TERMINATED, r->message);
            }
        }
        return;
    }

    if (r->spec.max_duration != DS_SPEC_OFF && r->submitted_at
        && time(NULL) - r->submitted_at >= (time_t) r->spec.max_duration)
    {
        log_info("run \"%s\": max_duration (%us) reached: stopping",
                 r->name, r->spec.max_duration);
        reconcile_stop(r, 0);
        snprintf(r->message, sizeof(r->message), "max_duration (%us) "
                 "reached", r->spec.max_duration);
        return;
    }

    autoscale_run(r, now);
    run_scale(r);
    run_rollout(r);

    for (rep = TAILQ_FIRST(&r->replicas); rep != NULL; rep = next) {
        next = TAILQ_NEXT(rep, entry);

        if (replica_leaving(rep)) {
            if (rep->active) {
                replica_stop_tick(rep, now);
            } else if (replica_ended(rep)) {
                /* gone for good: out of the document */
                TAILQ_REMOVE(&r->replicas, rep, entry);
                probes_cancel(rep);
                replica_free(rep);
                r->publish = 1;
                run_touch(r);
            }
            continue;
        }

        if (!rep->active
            && (rep->state == RS_SUBMITTED || rep->state == RS_BACKOFF))
        {
            replica_start(rep, now);
        }
        if (r->finished) {
            return;
        }
    }

    run_status_update(r);
}


void
reconcile_tick(void)
{
    struct run  *r;
    int64_t      now;

    now = now_ms();
    TAILQ_FOREACH(r, &runs, entry) {
        if (!r->finished) {
            run_tick(r, now);
        }
    }
}


/* ---- startup ------------------------------------------------------------ */

/*
 * After a restart: a replica whose process still runs (same pid, same
 * start time) is adopted as it is, keeping its place in LMDB; one whose
 * process is gone is started again.  Nothing runs twice.
 */
/* a live replica of an earlier controld: where its state left it */
static void
replica_adopt(struct replica *rep, int64_t now)
{
    struct run  *r = rep->run;
    int          i;

    rep->adopted = 1;
    switch (rep->state) {

    case RS_PROVISIONING:
    case RS_PULLING:
        replica_set_state(rep, RS_RUNNING);
        probes_start(rep);
        break;

    case RS_RUNNING:
        probes_start(rep);
        break;

    case RS_READY:
        /* keep it; probe again at the interval */
        probes_start(rep);
        rep->probe_done = r->spec.n_probes == 0;
        for (i = 0; i < DS_SPEC_PROBES_MAX; i++) {
            rep->probe_pass[i] = 1000;
            rep->probe_at[i] = now + (r->spec.n_probes
                ? r->spec.probes[i < (int) r->spec.n_probes ? i : 0]
                      .interval * 1000LL
                : 1000);
        }
        rep->ready_since_ms = now;
        break;

    case RS_DRAINING:
        rep->drain_started_ms = now;
        rep->drain_deadline_ms = now + stop_duration_ms(r);
        break;

    case RS_STOPPING:
        rep->term_sent_ms = 0;          /* asked again at the tick */
        break;

    case RS_KILLING:
    case RS_ABORTING:
        rep->backend->stop(rep, 1);
        rep->term_sent_ms = now;
        break;
    }
}


/*
 * After a restart: a replica whose process still runs (same pid, same
 * start time) is adopted as it is, keeping its place in LMDB; one whose
 * process is gone is started again.  Nothing runs twice.
 */
void
reconcile_adopt(void)
{
    struct run      *r;
    struct replica  *rep;
    int              n;
    int64_t          now;

    now = now_ms();
    TAILQ_FOREACH(r, &runs, entry) {
        if (r->finished) {
            continue;
        }
        r->publish = 1;
        n = 0;
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->backend == NULL && rep->backend_name[0]) {
                rep->backend = backend_find(rep->backend_name);
            }
            if (rep->active && rep->backend == NULL) {
                log_warnx("run \"%s\": replica %d v%d ran on backend "
                          "\"%s\", which this build does not have",
                          r->name, rep->num, rep->version,
                          rep->backend_name);
                rep->active = 0;
            }
            if (rep->active && rep->backend->alive(rep)) {
                replica_adopt(rep, now);
                n++;
                log_info("run \"%s\": adopted replica %d v%d (pid %d, %s%s)",
                         r->name, rep->num, rep->version, (int) rep->pid,
                         rep->addr, replica_ready(rep) ? ", ready" : "");
                continue;
            }
            if (rep->active) {
                log_info("run \"%s\": replica %d v%d (pid %d) is gone; "
                         "starting it again", r->name, rep->num,
                         rep->version, (int) rep->pid);
                rep->adopted = 1;
                replica_exited(rep, -1);
                if (!replica_leaving(rep) && !r->stopping) {
                    /* not its fault: at once */
                    rep->failures = rep->failures > 0 ? rep->failures - 1 : 0;
                    rep->next_start_ms = 0;
                }
            } else if (replica_published(rep)) {
                /* in the set without a process: out of it */
                replica_set_state(rep, rep->state == RS_READY ? RS_BACKOFF
                                                              : RS_TERMINATED);
            }
        }
        log_info("run \"%s\": %s, version %d, %d replica process%s adopted",
                 r->name, run_status_name(r->status), r->version, n,
                 n == 1 ? "" : "es");
    }
    backends_gc();
}


/* ---- stopping a run ----------------------------------------------------- */

void
reconcile_stop(struct run *r, int abort)
{
    struct replica  *rep;

    if (r->finished || (r->stopping && (!abort || r->abort))) {
        return;
    }

    r->stopping = 1;
    r->abort = r->abort || abort;
    if (r->status != RUN_FAILED) {
        r->status = RUN_TERMINATING;
        r->message[0] = '\0';
    }
    run_touch(r);
    TAILQ_FOREACH(rep, &r->replicas, entry) {
        replica_stop(rep, abort);
    }
    log_info("run \"%s\": %s", r->name, abort ? "aborting" : "stopping");
    reconcile_now = 1;
}
