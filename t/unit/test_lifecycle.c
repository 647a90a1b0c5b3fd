/*
 * Unit tests of controld's replica state machine (controld/lifecycle.c):
 * every pair of states is tried, and the machine must allow exactly the
 * transitions listed here (the lifecycle run.h draws), refuse the others
 * without changing anything, and mark the run's document and replica set
 * changed when it should.  Also the names the API shows for each state.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lifecycle.h"
#include "log.h"
#include "run.h"


/* the machine, written down apart from its code: "from>to" */
static const char *const  allowed[] = {
    "submitted>provisioning", "submitted>pulling", "submitted>backoff",
    "submitted>terminated", "submitted>aborted",
    "provisioning>pulling", "provisioning>running", "provisioning>backoff",
    "provisioning>stopping", "provisioning>aborting",
    "pulling>provisioning", "pulling>running", "pulling>backoff",
    "pulling>stopping", "pulling>aborting",
    "running>ready", "running>backoff", "running>stopping",
    "running>aborting",
    "ready>running", "ready>draining", "ready>backoff", "ready>aborting",
    "draining>stopping", "draining>aborting", "draining>terminated",
    "stopping>killing", "stopping>aborting", "stopping>terminated",
    "killing>aborting", "killing>terminated",
    "aborting>aborted",
    "backoff>provisioning", "backoff>pulling", "backoff>submitted",
    "backoff>terminated", "backoff>aborted", "backoff>failed",
};


static int
listed(int from, int to)
{
    char    pair[64];
    size_t  i;

    snprintf(pair, sizeof(pair), "%s>%s", replica_state_name(from),
             replica_state_name(to));
    for (i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) {
        if (strcmp(allowed[i], pair) == 0) {
            return 1;
        }
    }
    return 0;
}


static int
published(int s)
{
    return s == RS_READY || s == RS_DRAINING;
}


/* every state to every state, through replica_set_state() */
static void
test_every_transition(void **unused)
{
    struct run      run;
    struct replica  rep;
    int             from, to, rc, n_allowed = 0;
    FILE           *saved;

    (void) unused;

    /* the refusals are logged: not on the test's output */
    saved = stderr;
    stderr = fopen("/dev/null", "w");
    assert_non_null(stderr);

    for (from = 0; from < RS_NSTATES; from++) {
        for (to = 0; to < RS_NSTATES; to++) {
            memset(&run, 0, sizeof(run));
            snprintf(run.name, sizeof(run.name), "svc");
            memset(&rep, 0, sizeof(rep));
            rep.run = &run;
            rep.state = from;

            assert_int_equal(replica_transition_ok(from, to),
                             listed(from, to));
            rc = replica_set_state(&rep, to);

            if (from == to) {
                /* nothing to do, nothing changed */
                assert_int_equal(rc, 0);
                assert_int_equal(run.dirty, 0);
                assert_int_equal(run.publish, 0);
            } else if (listed(from, to)) {
                n_allowed++;
                assert_int_equal(rc, 0);
                assert_int_equal(rep.state, to);
                assert_int_equal(run.dirty, 1);
                /* the gateway's set changes when the replica enters or
                 * leaves it, or turns from ready to draining */
                assert_int_equal(run.publish,
                                 published(from) != published(to)
                                 || to == RS_DRAINING);
            } else {
                assert_int_equal(rc, -1);
                assert_int_equal(rep.state, from);
                assert_int_equal(run.dirty, 0);
                assert_int_equal(run.publish, 0);
            }
        }
    }
    fclose(stderr);
    stderr = saved;

    /* each listed transition was found, and none twice */
    assert_int_equal(n_allowed, (int) (sizeof(allowed) / sizeof(allowed[0])));
}


/* ended states are for good */
static void
test_ended_is_final(void **unused)
{
    int  s, to;

    (void) unused;
    for (s = RS_TERMINATED; s < RS_NSTATES; s++) {
        for (to = 0; to < RS_NSTATES; to++) {
            assert_false(replica_transition_ok(s, to));
        }
    }
    assert_false(replica_transition_ok(-1, RS_RUNNING));
    assert_false(replica_transition_ok(RS_RUNNING, RS_NSTATES));
}


/* dstack's words for the API, and the predicates the others use */
static void
test_names_and_predicates(void **unused)
{
    static const char *const  api[RS_NSTATES] = {
        "submitted", "provisioning", "pulling", "running", "running",
        "terminating", "terminating", "terminating", "terminating",
        "failed", "terminated", "aborted", "failed", "done"
    };
    struct replica  rep;
    int             s;

    (void) unused;
    memset(&rep, 0, sizeof(rep));
    for (s = 0; s < RS_NSTATES; s++) {
        rep.state = s;
        assert_string_equal(replica_status_name(s), api[s]);
        assert_int_equal(replica_state_parse(replica_state_name(s)), s);
        assert_int_equal(replica_ready(&rep), s == RS_READY);
        assert_int_equal(replica_published(&rep), published(s));
        assert_int_equal(replica_ended(&rep), s >= RS_TERMINATED);
        assert_int_equal(replica_leaving(&rep),
                         (s >= RS_DRAINING && s <= RS_ABORTING)
                         || s >= RS_TERMINATED);
        assert_int_equal(replica_starting(&rep),
                         s == RS_PROVISIONING || s == RS_PULLING
                         || s == RS_RUNNING);
    }
    assert_int_equal(replica_state_parse("terminating"), -1);
    assert_int_equal(replica_state_parse(NULL), -1);
    assert_string_equal(replica_state_name(RS_NSTATES), "unknown");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_every_transition),
        cmocka_unit_test(test_ended_is_final),
        cmocka_unit_test(test_names_and_predicates),
    };

    log_init(1, LOG_LEVEL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
