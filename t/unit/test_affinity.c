/* ds_affinity: keys, rendezvous weights and the bound of bounded load */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ds_affinity.h"


#define KEYS        2000
#define REPLICAS    5


/* the replica of highest weight for key among uids[0..n) */
static unsigned
pick(uint64_t key, const uint64_t *uids, unsigned n)
{
    unsigned  i, best;
    uint64_t  w, best_w;

    best = 0;
    best_w = 0;

    for (i = 0; i < n; i++) {
        w = ds_affinity_weight(key, uids[i]);
        if (i == 0 || w > best_w) {
            best = i;
            best_w = w;
        }
    }

    return best;
}


static void
test_hash(void **state)
{
    char      buf[64];
    uint64_t  a, b;

    (void) state;

    memset(buf, 'x', sizeof(buf));
    a = ds_affinity_hash(buf, sizeof(buf));
    assert_true(a == ds_affinity_hash(buf, sizeof(buf)));

    /* every byte counts, the tail's too, and so does the length */
    buf[63] = 'y';
    b = ds_affinity_hash(buf, sizeof(buf));
    assert_true(a != b);
    buf[3] = 'y';
    assert_true(b != ds_affinity_hash(buf, sizeof(buf)));
    assert_true(ds_affinity_hash(buf, 10) != ds_affinity_hash(buf, 11));
    assert_true(ds_affinity_hash("", 0) != ds_affinity_hash("\0", 1));
}


/* keys spread evenly, and removing a replica moves exactly its keys */
static void
test_rendezvous(void **state)
{
    char      key[32];
    unsigned  i, r, count[REPLICAS], before[KEYS], moved, owned;
    uint64_t  uids[REPLICAS] = { 11, 12, 13, 1000001, 77 };
    uint64_t  was[REPLICAS], k;

    (void) state;
    memset(count, 0, sizeof(count));
    memcpy(was, uids, sizeof(was));

    for (i = 0; i < KEYS; i++) {
        snprintf(key, sizeof(key), "prompt %u", i);
        k = ds_affinity_hash(key, strlen(key));
        before[i] = pick(k, uids, REPLICAS);
        count[before[i]]++;
    }

    for (r = 0; r < REPLICAS; r++) {
        /* 400 expected; far outside means a biased mix */
        assert_in_range(count[r], 300, 500);
    }

    /* replica 2 leaves: uids[2] takes the last one's place */
    uids[2] = uids[REPLICAS - 1];
    moved = 0;
    owned = 0;

    for (i = 0; i < KEYS; i++) {
        snprintf(key, sizeof(key), "prompt %u", i);
        k = ds_affinity_hash(key, strlen(key));
        r = pick(k, uids, REPLICAS - 1);

        if (was[before[i]] == 13) {
            owned++;
        }
        if (uids[r] != was[before[i]]) {
            moved++;
            assert_true(was[before[i]] == 13);
        }
    }

    assert_int_equal(moved, owned);
}


static void
test_bound(void **state)
{
    (void) state;

    /* ceil(c x (total + 1) / n) */
    assert_int_equal(ds_affinity_bound(0, 4, 1250), 1);
    assert_int_equal(ds_affinity_bound(1, 4, 1250), 1);
    assert_int_equal(ds_affinity_bound(23, 4, 1250), 8);
    assert_int_equal(ds_affinity_bound(24, 4, 1250), 8);
    assert_int_equal(ds_affinity_bound(25, 4, 1250), 9);
    assert_int_equal(ds_affinity_bound(9, 10, 1000), 1);
    assert_int_equal(ds_affinity_bound(99, 3, 2000), 67);

    /* counts read in passing may be negative; no replica, no bound */
    assert_int_equal(ds_affinity_bound(-3, 4, 1250), 1);
    assert_int_equal(ds_affinity_bound(5, 0, 1250), 1);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_rendezvous),
        cmocka_unit_test(test_bound),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
