/*
 * Unit tests of shared mode's parts of the state (ds_state.c's change
 * capture, ds_state_mirror.c): a leader's write transaction keeps its
 * changes in order, local meta keys excluded; a follower applies them to
 * another environment in one transaction with the revision, clears its
 * mirror, and refuses records it cannot hold.  Two environments in two
 * directories (LMDB allows that in one process; one twice, never).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ds_state.h"


#define S(s)    ((ds_str_t) { (s), (uint32_t) (sizeof(s) - 1) })

static char  dir_a[64], dir_b[64];


struct seen {
    ds_txn_t   *to;                     /* apply here, or NULL */
    int         n, services, deleted, local;
};


static int
on_change(void *arg, int db, const void *key, size_t klen, const void *val,
    size_t vlen)
{
    struct seen  *s = arg;
    ds_err_t      err;

    s->n++;
    if (strcmp(ds_db_name(db), "services") == 0) {
        s->services++;
    }
    if (val == NULL) {
        s->deleted++;
    }
    if (strcmp(ds_db_name(db), "meta") == 0
        && ((klen == 6 && memcmp(key, "schema", 6) == 0)
            || (klen == 10 && memcmp(key, "follow.rev", 10) == 0)))
    {
        s->local++;
    }
    if (s->to != NULL
        && ds_mirror_apply(s->to, db, key, klen, val, vlen, &err) != DS_OK)
    {
        fail_msg("ds_mirror_apply: %s", err.msg);
    }
    return 0;
}


static void
put_service(ds_txn_t *txn, const char *name)
{
    ds_service_t  svc;
    ds_err_t      err;

    ds_service_init(&svc);
    svc.name.data = name;
    svc.name.len = (uint32_t) strlen(name);
    svc.uid = 1;
    if (ds_put_service(txn, &svc, &err) != DS_OK) {
        fail_msg("ds_put_service: %s", err.msg);
    }
}


static void
test_capture_and_apply(void **unused)
{
    ds_state_t    *a, *b;
    ds_txn_t      *ta, *tb;
    ds_err_t       err;
    ds_service_t   got;
    struct seen    s;
    uint64_t       rev;

    (void) unused;
    assert_int_equal(ds_state_open(&a, dir_a, DS_STATE_CREATE, 0600, &err),
                     DS_OK);
    assert_int_equal(ds_state_open(&b, dir_b, DS_STATE_CREATE, 0600, &err),
                     DS_OK);

    /* capture off: nothing kept */
    assert_int_equal(ds_txn_begin(a, 1, &ta, &err), DS_OK);
    put_service(ta, "off");
    assert_int_equal(ds_txn_nchanges(ta), 0);
    ds_txn_abort(ta);

    ds_state_capture(a, 1);
    assert_int_equal(ds_txn_begin(a, 1, &ta, &err), DS_OK);
    put_service(ta, "llama");
    put_service(ta, "gone");
    assert_int_equal(ds_del_service(ta, "gone", 4, &err), DS_OK);
    assert_int_equal(ds_mirror_set_rev(ta, 9, &err), DS_OK);
    assert_true(ds_txn_nchanges(ta) >= 3);

    memset(&s, 0, sizeof(s));
    assert_int_equal(ds_txn_begin(b, 1, &tb, &err), DS_OK);
    s.to = tb;
    assert_int_equal(ds_txn_changes(ta, on_change, &s), 0);
    assert_int_equal(s.n, (int) ds_txn_nchanges(ta));
    assert_true(s.services >= 3);           /* llama, gone, gone deleted */
    assert_true(s.deleted >= 1);
    assert_int_equal(s.local, 0);           /* follow.rev never captured */
    assert_int_equal(ds_mirror_set_rev(tb, 7, &err), DS_OK);
    assert_int_equal(ds_txn_commit(tb, &err), DS_OK);
    assert_int_equal(ds_txn_commit(ta, &err), DS_OK);

    assert_int_equal(ds_txn_begin(b, 0, &tb, &err), DS_OK);
    assert_int_equal(ds_get_service(tb, "llama", 5, &got, &err), DS_OK);
    assert_int_equal(ds_get_service(tb, "gone", 4, &got, &err),
                     DS_NOTFOUND);
    assert_int_equal(ds_mirror_rev(tb, &rev, &err), DS_OK);
    assert_int_equal(rev, 7);
    ds_txn_abort(tb);

    /* every published record of a: llama's, not its local keys */
    memset(&s, 0, sizeof(s));
    assert_int_equal(ds_txn_begin(a, 0, &ta, &err), DS_OK);
    assert_int_equal(ds_mirror_foreach(ta, on_change, &s, &err), DS_OK);
    ds_txn_abort(ta);
    assert_int_equal(s.services, 1);
    assert_int_equal(s.local, 0);
    assert_true(s.n >= 2);                  /* seq, slots, service */

    /* bad records change nothing; a deleted missing key is fine */
    assert_int_equal(ds_txn_begin(b, 1, &tb, &err), DS_OK);
    assert_int_equal(ds_mirror_apply(tb, 99, "k", 1, "v", 1, &err),
                     DS_EINVAL);
    assert_non_null(strstr(err.msg, "database 99"));
    assert_int_equal(ds_mirror_apply(tb, 1, "", 0, "v", 1, &err),
                     DS_EINVAL);
    assert_int_equal(ds_mirror_apply(tb, 1, "nope", 4, NULL, 0, &err),
                     DS_OK);
    /* clear: records gone, the revision and schema kept */
    assert_int_equal(ds_mirror_clear(tb, &err), DS_OK);
    assert_int_equal(ds_get_service(tb, "llama", 5, &got, &err),
                     DS_NOTFOUND);
    assert_int_equal(ds_mirror_rev(tb, &rev, &err), DS_OK);
    assert_int_equal(rev, 7);
    assert_int_equal(ds_txn_commit(tb, &err), DS_OK);

    ds_state_close(a);
    ds_state_close(b);
    /* the schema survived the clear: it opens as a reader */
    assert_int_equal(ds_state_open(&b, dir_b, DS_STATE_RDONLY, 0600, &err),
                     DS_OK);
    assert_int_equal(ds_txn_begin(b, 0, &tb, &err), DS_OK);
    assert_int_equal(ds_mirror_rev(tb, &rev, &err), DS_OK);
    ds_txn_abort(tb);
    ds_state_close(b);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_capture_and_apply),
    };
    char                     cmd[200];
    int                      rc;

    snprintf(dir_a, sizeof(dir_a), "/tmp/ds-mirror-a-XXXXXX");
    snprintf(dir_b, sizeof(dir_b), "/tmp/ds-mirror-b-XXXXXX");
    if (mkdtemp(dir_a) == NULL || mkdtemp(dir_b) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir_a, dir_b);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s %s\n", dir_a, dir_b);
    }
    return rc;
}
