/*
 * The replica state machine: which transitions exist, and the one
 * function that makes them (run.h draws the machine).
 *
 * Everything that happens to a replica (the backend started it, its
 * setup ended, probes passed or failed, a stop, a drain that ended, an
 * exit) is one transition here, so the log shows every state a replica
 * went through, and a transition the machine does not know is a bug
 * that is logged instead of a state nobody planned for.
 */

#include "lifecycle.h"
#include "log.h"
#include "run.h"

#define T(s)    (1U << (s))

/* next[from]: the states `from` may go to */
static const unsigned  next[RS_NSTATES] = {
    [RS_SUBMITTED] =    T(RS_PROVISIONING) | T(RS_PULLING) | T(RS_BACKOFF)
                        | T(RS_TERMINATED) | T(RS_ABORTED),
    [RS_PROVISIONING] = T(RS_PULLING) | T(RS_RUNNING) | T(RS_BACKOFF)
                        | T(RS_STOPPING) | T(RS_ABORTING),
    [RS_PULLING] =      T(RS_PROVISIONING) | T(RS_RUNNING) | T(RS_BACKOFF)
                        | T(RS_STOPPING) | T(RS_ABORTING),
    [RS_RUNNING] =      T(RS_READY) | T(RS_BACKOFF) | T(RS_STOPPING)
                        | T(RS_ABORTING),
    [RS_READY] =        T(RS_RUNNING) | T(RS_DRAINING) | T(RS_BACKOFF)
                        | T(RS_ABORTING),
    [RS_DRAINING] =     T(RS_STOPPING) | T(RS_ABORTING) | T(RS_TERMINATED),
    [RS_STOPPING] =     T(RS_KILLING) | T(RS_ABORTING) | T(RS_TERMINATED),
    [RS_KILLING] =      T(RS_ABORTING) | T(RS_TERMINATED),
    [RS_ABORTING] =     T(RS_ABORTED),
    [RS_BACKOFF] =      T(RS_PROVISIONING) | T(RS_PULLING) | T(RS_SUBMITTED)
                        | T(RS_TERMINATED) | T(RS_ABORTED) | T(RS_FAILED),
    /* ended: for good */
    [RS_TERMINATED] =   0,
    [RS_ABORTED] =      0,
    [RS_FAILED] =       0,
    [RS_DONE] =         0,
};


int
replica_transition_ok(int from, int to)
{
    if (from < 0 || from >= RS_NSTATES || to < 0 || to >= RS_NSTATES) {
        return 0;
    }
    return (next[from] & T(to)) != 0;
}


int
replica_set_state(struct replica *rep, int to)
{
    struct run  *r = rep->run;
    int          from = rep->state, was_published;

    if (from == to) {
        return 0;
    }
    if (!replica_transition_ok(from, to)) {
        log_warnx("run \"%s\": replica %d v%d: no transition %s -> %s",
                  r->name, rep->num, rep->version, replica_state_name(from),
                  replica_state_name(to));
        return -1;
    }

    log_debug("run \"%s\": replica %d v%d: %s -> %s", r->name, rep->num,
              rep->version, replica_state_name(from), replica_state_name(to));
    was_published = replica_published(rep);
    rep->state = to;
    if (was_published != replica_published(rep) || to == RS_DRAINING) {
        r->publish = 1;
    }
    run_touch(r);
    return 0;
}
