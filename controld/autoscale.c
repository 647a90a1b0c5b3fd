/*
 * The autoscaler: desired replicas of a run from the module's metrics.
 *
 * dstack's rule (REFERENCE §5), on the module's counts of admitted
 * requests (refused by auth or rate limits: not counted), read once a
 * second (stats.c) instead of a 15 s poll of an access log:
 *
 *   rps     = arrivals in the last `window` / window
 *   desired = clamp(ceil(rps / target), min, max)
 *   up      only when now - last_scaled >= scale_up_delay (from 0: at once)
 *   down    only when now - last_scaled >= scale_down_delay
 *
 * last_scaled is the last time the autoscaler started or stopped a
 * replica (a change of r->desired), or the run's submission (or
 * controld's start) when it never did.
 *
 * `metric: inflight` (our extension, for LLM traffic where one request
 * takes seconds): desired = clamp(ceil(inflight / target), min, max) with
 * the same delays.  inflight is the highest count of the last `window`
 * seconds (a per-second peak of the count the module keeps), so a load
 * raises desired within a second and a lull between slow requests does
 * not lower it; and a service goes to zero only when no request arrived
 * in the window either.
 *
 * `metric: ttft` (ours, for model services whose users wait on the first
 * token): p99 is the time to first token over the `window` (the module's
 * 30, 60 or 300 s; the highest of the gateways'), target in seconds:
 *
 *   p99 > target          desired = ceil(current * p99 / target)
 *   p99 < target / 2      desired = current - 1 (one at a time: the
 *                         latency of fewer replicas is not known)
 *   otherwise, or no answer in the window while requests arrive: current
 *   no request in the window: 0 (min), as rps would
 *
 * current is the autoscaler's desired count; from 0, any request asks
 * for one.  Clamping and the delays are the same as for the others.
 *
 * A request held at the gateway for a service scaled to zero starts a
 * replica at once: the module's notice (notify.c) or, when a datagram got
 * lost, the "held" count in the next stats read.
 *
 * What was decided and why is kept in r->scaling (the API's "scaling"
 * object, `dstackctl ps -v`) and logged at info level when the decision
 * changes, not every second.
 */

#define _GNU_SOURCE

#include <stdio.h>
#include <string.h>

#include "autoscale.h"
#include "config.h"
#include "log.h"
#include "reconcile.h"
#include "run.h"
#include "stats.h"
#include "util.h"


#define STATS_STALE_MS      5000    /* older stats decide nothing */


/* ceil() without libm, for values >= 0 */
static int
ceil_div(double v, double target)
{
    double  q = v / target;
    int     n = (int) q;

    if ((double) n < q) {
        n++;
    }
    return n;
}


static int
replicas_max(const struct run *r)
{
    return r->spec.replicas.max == DS_SPEC_UNLIMITED
           ? 1000000 : (int) r->spec.replicas.max;
}


/* the highest in-flight count of the last `window` seconds, after
 * recording the current one */
static uint32_t
inflight_peak(struct autoscale *as, long cur, int64_t now, unsigned window)
{
    int64_t   sec = now / 1000, s;
    uint32_t  peak = 0;
    unsigned  i;

    if (window > AUTOSCALE_PEAKS) {
        window = AUTOSCALE_PEAKS;
    }
    if (as->peak_sec == 0 || sec - as->peak_sec >= AUTOSCALE_PEAKS) {
        memset(as->peak, 0, sizeof(as->peak));
    } else {
        for (s = as->peak_sec + 1; s <= sec; s++) {
            as->peak[s % AUTOSCALE_PEAKS] = 0;
        }
    }
    as->peak_sec = sec;
    if (cur > 0 && (uint32_t) cur > as->peak[sec % AUTOSCALE_PEAKS]) {
        as->peak[sec % AUTOSCALE_PEAKS] = (uint32_t) cur;
    }
    for (i = 0; i < window; i++) {
        s = sec - i;
        if (as->peak[s % AUTOSCALE_PEAKS] > peak) {
            peak = as->peak[s % AUTOSCALE_PEAKS];
        }
    }
    return peak;
}


/* what p99 TTFT asks for (see the top); -1 when the stats cannot tell */
static int
ttft_want(struct run *r, long arrivals, unsigned window, char *why,
    size_t len)
{
    struct autoscale  *as = &r->scaling;
    double             target = r->spec.scaling.target, p99, ms;
    long               answers;
    int                want, cur = r->desired;
    const char        *rule;

    if (stats_service_ttft_p99(r->name, window, &ms, &answers) != 0) {
        snprintf(as->reason, sizeof(as->reason), "no time to first token "
                 "in the module's stats");
        return -1;
    }
    p99 = ms / 1000.0;
    as->value = p99;
    as->why = SCALE_TTFT;

    if (arrivals == 0) {
        want = 0;
        rule = "no request";
    } else if (answers == 0 || cur == 0) {
        want = cur > 0 ? cur : 1;
        rule = answers == 0 ? "no answer yet" : "requests";
    } else if (p99 > target) {
        want = ceil_div((double) cur * p99, target);
        rule = "over the target";
    } else if (p99 < target / 2) {
        /* requests come: never to zero on latency alone (only "no
         * request" above scales to zero) */
        want = cur > 1 ? cur - 1 : 1;
        rule = "under half the target";
    } else {
        want = cur;
        rule = "near the target";
    }
    if (snprintf(why, len, "ttft p99 %.3fs over %us (%ld answers) / "
                 "target %gs: %s -> %d", p99, window, answers, target, rule,
                 want) < 0)
    {
        why[0] = '\0';
    }
    return want;
}


/* the number of replicas the metric asks for, clamped, with why; -1 when
 * the stats cannot tell */
static int
autoscale_want(struct run *r, int64_t now)
{
    struct autoscale  *as = &r->scaling;
    const ds_spec_t   *sp = &r->spec;
    unsigned           window = sp->scaling.window ? sp->scaling.window : 60;
    long               arrivals, cur;
    uint32_t           peak;
    int                want, n;
    char               why[160];

    arrivals = stats_service_arrivals(r->name, window);
    if (arrivals < 0) {
        snprintf(as->reason, sizeof(as->reason), "no window counts in the "
                 "module's stats");
        return -1;
    }

    if (sp->scaling.metric == DS_SPEC_METRIC_TTFT) {
        want = ttft_want(r, arrivals, window, why, sizeof(why));
        if (want < 0) {
            return -1;
        }
        n = 0;
    } else if (sp->scaling.metric == DS_SPEC_METRIC_INFLIGHT) {
        cur = stats_service_inflight(r->name);
        if (cur < 0) {
            snprintf(as->reason, sizeof(as->reason), "no in-flight count in "
                     "the module's stats");
            return -1;
        }
        peak = inflight_peak(as, cur, now, window);
        as->value = (double) peak;
        as->why = SCALE_INFLIGHT;
        want = ceil_div((double) peak, sp->scaling.target);
        if (want == 0 && arrivals > 0) {
            /* short requests between two samples: still traffic */
            want = 1;
        }
        n = snprintf(why, sizeof(why), "in-flight %u (peak over %us, now "
                     "%ld) / target %g -> %d", peak, window, cur,
                     sp->scaling.target, want);
    } else {
        as->value = (double) arrivals / window;
        as->why = SCALE_RPS;
        want = ceil_div(as->value, sp->scaling.target);
        n = snprintf(why, sizeof(why), "rps %.2f over %us / target %g -> %d",
                     as->value, window, sp->scaling.target, want);
    }
    if (n < 0) {
        why[0] = '\0';
    }

    if (want < (int) sp->replicas.min) {
        want = (int) sp->replicas.min;
        as->why = SCALE_MIN;
        snprintf(as->reason, sizeof(as->reason), "%s (min %d)", why, want);
    } else if (want > replicas_max(r)) {
        want = replicas_max(r);
        as->why = SCALE_MAX;
        snprintf(as->reason, sizeof(as->reason), "%s (max %d)", why, want);
    } else {
        snprintf(as->reason, sizeof(as->reason), "%s", why);
    }
    return want;
}


static void
autoscale_log(struct run *r, int want, int wait)
{
    struct autoscale  *as = &r->scaling;

    if (as->logged_want == want && as->logged_desired == r->desired
        && as->logged_wait == wait)
    {
        return;
    }
    as->logged_want = want;
    as->logged_desired = r->desired;
    as->logged_wait = wait;
    if (want == r->desired) {
        log_info("run \"%s\": autoscaler keeps %d replica%s: %s", r->name,
                 want, want == 1 ? "" : "s", as->reason);
    } else if (wait) {
        log_info("run \"%s\": %d replica%s wanted, %d now: %s", r->name,
                 want, want == 1 ? "" : "s", r->desired, as->reason);
    } else {
        log_info("run \"%s\": scaling %d -> %d replicas: %s", r->name,
                 r->desired, want, as->reason);
    }
}


void
autoscale_run(struct run *r, int64_t now)
{
    struct autoscale  *as = &r->scaling;
    const ds_spec_t   *sp = &r->spec;
    int64_t            fresh, delay, left;
    int                want, wait = 0;
    size_t             len;

    if (!sp->scaling.enabled || sp->scaling.target <= 0 || r->stopping
        || r->finished)
    {
        return;
    }
    if (r->last_scaled_ms == 0) {
        /* submitted, or controld started: the delays count from now */
        r->last_scaled_ms = now;
    }

    fresh = stats_fresh_ms();
    if (fresh == 0 || now - fresh > STATS_STALE_MS) {
        as->want = -1;
        snprintf(as->reason, sizeof(as->reason), "no fresh stats from the "
                 "module (stats_url)");
        return;
    }

    if (r->desired == 0 && stats_service_held(r->name) > 0) {
        /* the notice got lost, or came before the stats said so */
        autoscale_hold(r->name);
        return;
    }

    want = autoscale_want(r, now);
    as->want = want;
    if (want < 0 || want == r->desired) {
        if (want >= 0) {
            autoscale_log(r, want, 0);
        }
        return;
    }

    if (want > r->desired) {
        delay = r->desired == 0 ? 0 : (int64_t) sp->scaling.scale_up_delay
                                      * 1000;
    } else {
        delay = (int64_t) sp->scaling.scale_down_delay * 1000;
    }
    left = r->last_scaled_ms + delay - now;
    if (left > 0) {
        wait = 1;
        len = strlen(as->reason);
        snprintf(as->reason + len, sizeof(as->reason) - len, "; %s in %.0f "
                 "s (%s)", want > r->desired ? "up" : "down",
                 (double) (left + 999) / 1000.0,
                 want > r->desired ? "scale_up_delay" : "scale_down_delay");
        autoscale_log(r, want, wait);
        return;
    }

    autoscale_log(r, want, 0);
    r->counters.scaled[want > r->desired][as->why]++;
    r->desired = want;
    r->last_scaled_ms = now;
    run_touch(r);
    reconcile_now = 1;
}


void
autoscale_hold(const char *name)
{
    struct run  *r;
    int          want;

    r = run_find(name);
    if (r == NULL || r->finished || r->stopping || r->desired > 0
        || !r->spec.scaling.enabled)
    {
        return;
    }
    want = r->spec.replicas.min > 0 ? (int) r->spec.replicas.min : 1;
    if (want > replicas_max(r)) {
        return;
    }
    snprintf(r->scaling.reason, sizeof(r->scaling.reason), "a request waits "
             "at the gateway -> %d", want);
    r->scaling.want = want;
    r->scaling.why = SCALE_HELD;
    r->counters.scaled[1][SCALE_HELD]++;
    log_info("run \"%s\": a request waits: scaling 0 -> %d", r->name, want);
    r->scaling.logged_want = want;
    r->scaling.logged_desired = want;
    r->scaling.logged_wait = 0;
    r->desired = want;
    r->last_scaled_ms = now_ms();
    run_touch(r);
    reconcile_now = 1;
}
