/* ds_json_dup: duplicate keys in JSON from outside */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "ds_json_dup.h"


/* 0 or -1 from the check of text, its message in err */
static int
dup(const char *text, char *err, size_t n)
{
    cJSON  *json;
    int     rc;

    json = cJSON_Parse(text);
    assert_non_null(json);
    err[0] = '\0';
    rc = ds_json_dup_check(json, "body", err, n);
    cJSON_Delete(json);
    return rc;
}


static void
test_none(void **state)
{
    char  err[256];

    (void) state;
    assert_int_equal(dup("{}", err, sizeof(err)), 0);
    assert_int_equal(dup("{\"a\":1,\"b\":{\"a\":2},"
                         "\"c\":[{\"a\":1},{\"a\":2}]}", err, sizeof(err)),
                     0);
    /* keys differ by case: not the same key */
    assert_int_equal(dup("{\"Name\":1,\"name\":2}", err, sizeof(err)), 0);
    assert_int_equal(dup("[1,2,[3]]", err, sizeof(err)), 0);
    assert_string_equal(err, "");
}


static void
test_top(void **state)
{
    char  err[256];

    (void) state;
    assert_int_equal(dup("{\"name\":\"a\",\"name\":\"b\"}", err,
                         sizeof(err)), -1);
    assert_string_equal(err, "body: duplicate key \"name\"");
    assert_int_equal(dup("{\"scope\":\"services\",\"x\":1,"
                         "\"scope\":\"admin\"}", err, sizeof(err)), -1);
    assert_string_equal(err, "body: duplicate key \"scope\"");
    /* the first repeat in the object's order, not the first in the
     * alphabet: "b" repeats before "a" does */
    assert_int_equal(dup("{\"b\":1,\"a\":1,\"b\":2,\"a\":2}", err,
                         sizeof(err)), -1);
    assert_string_equal(err, "body: duplicate key \"b\"");
    /* the top level before what is nested */
    assert_int_equal(dup("{\"o\":{\"k\":1,\"k\":2},\"t\":1,\"t\":2}", err,
                         sizeof(err)), -1);
    assert_string_equal(err, "body: duplicate key \"t\"");
}


static void
test_nested(void **state)
{
    char  err[256];

    (void) state;
    assert_int_equal(dup("{\"resources\":{\"gpu\":{\"count\":1,\"name\":\"x\","
                         "\"count\":2}}}", err, sizeof(err)), -1);
    assert_string_equal(err, "body.resources.gpu: duplicate key \"count\"");
    assert_int_equal(dup("{\"a\":[1,{\"x\":1},[{\"y\":1,\"y\":1}]]}", err,
                         sizeof(err)), -1);
    assert_string_equal(err, "body.a[2][0]: duplicate key \"y\"");
}


/* an object of k keys "k0".."k<k-1>", the key "k<at>" once more at the
 * end when at >= 0 */
static char *
many(int k, int at)
{
    char  *s, *p;
    int    i;

    s = malloc((size_t) k * 16 + 64);
    assert_non_null(s);
    p = s;
    *p++ = '{';
    for (i = 0; i < k; i++) {
        p += sprintf(p, "%s\"k%d\":0", i ? "," : "", i);
    }
    if (at >= 0) {
        p += sprintf(p, ",\"k%d\":1", at);
    }
    strcpy(p, "}");
    return s;
}


static double
now_s(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* sorted above DS_JSON_DUP_LINEAR members.  Not a timing goal (the
 * figure is printed): the bound only tells O(n log n), ~20 ms here, from
 * a pairwise scan, 5e9 comparisons, on any machine and under ASan */
static void
test_large(void **state)
{
    char    err[256], *s;
    double  t0, t;
    cJSON  *json;

    (void) state;

    s = many(DS_JSON_DUP_LINEAR + 1, 3);
    assert_int_equal(dup(s, err, sizeof(err)), -1);
    assert_string_equal(err, "body: duplicate key \"k3\"");
    free(s);

    s = many(100000, -1);
    json = cJSON_Parse(s);
    assert_non_null(json);
    t0 = now_s();
    assert_int_equal(ds_json_dup_check(json, "body", err, sizeof(err)), 0);
    t = now_s() - t0;
    cJSON_Delete(json);
    free(s);
    print_message("100,000 keys, none repeated: %.1f ms\n", t * 1000);
    assert_true(t < 3.0);

    s = many(100000, 99999);
    assert_int_equal(dup(s, err, sizeof(err)), -1);
    assert_string_equal(err, "body: duplicate key \"k99999\"");
    free(s);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_none),
        cmocka_unit_test(test_top),
        cmocka_unit_test(test_nested),
        cmocka_unit_test(test_large),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
