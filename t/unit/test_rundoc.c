/*
 * Unit tests of the run document (controld/rundoc.c): a replica's state
 * survives the round trip through the document, and documents written
 * before the state machine (doc_version 1: a status plus the flags
 * ready, draining, retire, abort) read as the states they stood for, so
 * that a new controld adopts what an older one left running.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log.h"
#include "run.h"
#include "rundoc.h"

#define SPEC    "{\"type\":\"service\",\"port\":8000,\"commands\":[\"x\"]}"


static struct run *
load(const char *replica)
{
    char         doc[2048], err[256];
    struct run  *r;

    snprintf(doc, sizeof(doc), "{\"doc_version\":1,\"name\":\"svc\","
             "\"status\":\"running\",\"version\":1,\"spec\":" SPEC ","
             "\"replicas\":[%s]}", replica);
    err[0] = '\0';
    r = run_from_doc(doc, strlen(doc), err, sizeof(err));
    if (r == NULL) {
        fail_msg("run_from_doc: %s", err);
    }
    return r;
}


static int
v1_state(const char *status, int ready, int draining, int retire, int abort)
{
    char         rep[512];
    struct run  *r;
    int          s;

    snprintf(rep, sizeof(rep), "{\"num\":0,\"version\":1,\"status\":\"%s\","
             "\"pid\":0,\"ready\":%s,\"draining\":%s,\"retire\":%s,"
             "\"abort\":%s}", status, ready ? "true" : "false",
             draining ? "true" : "false", retire ? "true" : "false",
             abort ? "true" : "false");
    r = load(rep);
    s = TAILQ_FIRST(&r->replicas)->state;
    run_free(r);
    return s;
}


static void
test_v1_documents(void **unused)
{
    (void) unused;
    assert_int_equal(v1_state("running", 1, 0, 0, 0), RS_READY);
    assert_int_equal(v1_state("running", 0, 0, 0, 0), RS_RUNNING);
    assert_int_equal(v1_state("terminating", 0, 1, 1, 0), RS_DRAINING);
    assert_int_equal(v1_state("terminating", 0, 0, 1, 0), RS_STOPPING);
    assert_int_equal(v1_state("terminating", 0, 0, 1, 1), RS_ABORTING);
    assert_int_equal(v1_state("failed", 0, 0, 0, 0), RS_BACKOFF);
    assert_int_equal(v1_state("failed", 0, 0, 1, 0), RS_FAILED);
    assert_int_equal(v1_state("submitted", 0, 0, 0, 0), RS_SUBMITTED);
    assert_int_equal(v1_state("provisioning", 0, 0, 0, 0),
                     RS_PROVISIONING);
    assert_int_equal(v1_state("terminated", 0, 0, 1, 0), RS_TERMINATED);
    assert_int_equal(v1_state("aborted", 0, 0, 1, 1), RS_ABORTED);
    /* what no version wrote: a replica that will not run again */
    assert_int_equal(v1_state("bogus", 1, 0, 0, 0), RS_FAILED);
}


/* every state, written and read back */
static void
test_round_trip(void **unused)
{
    struct run      *r, *back;
    struct replica  *rep;
    cJSON           *doc;
    char            *text, err[256];
    int              s;

    (void) unused;
    for (s = 0; s < RS_NSTATES; s++) {
        r = load("{\"num\":3,\"version\":2,\"status\":\"submitted\"}");
        rep = TAILQ_FIRST(&r->replicas);
        rep->state = s;
        doc = run_to_doc(r);
        assert_non_null(doc);
        assert_int_equal(cJSON_GetObjectItem(doc, "doc_version")->valueint,
                         2);
        text = cJSON_PrintUnformatted(doc);
        cJSON_Delete(doc);
        back = run_from_doc(text, strlen(text), err, sizeof(err));
        assert_non_null(back);
        rep = TAILQ_FIRST(&back->replicas);
        assert_int_equal(rep->state, s);
        assert_int_equal(rep->num, 3);
        assert_int_equal(rep->version, 2);
        free(text);
        run_free(back);
        run_free(r);
    }
}


static void
test_bad_documents(void **unused)
{
    char  err[256];

    (void) unused;
    assert_null(run_from_doc("{", 1, err, sizeof(err)));
    assert_string_equal(err, "invalid JSON");
    assert_null(run_from_doc("{\"name\":\"../x\"}", 15, err, sizeof(err)));
    assert_string_equal(err, "invalid name");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_v1_documents),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_documents),
    };

    log_init(1, LOG_LEVEL_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
