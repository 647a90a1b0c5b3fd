/*
 * Unit tests of the per-second series (controld/series.c), fed stats
 * answers made here as the module writes them, at seconds the test
 * chooses: a source's first answer only sets where counting starts;
 * then the differences, summed over the sources, in the second the
 * answer came in; a new uid or a counter that went down counts from 0;
 * a service new at a source that answered before counts its 300 s
 * window; gauges are the sum of what each source said last; a second
 * without an answer is null; ?since; totals; a run that finished goes.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "run.h"
#include "series.h"

#define T0      1700000000u
#define A       "http://gw-a/stats"
#define B       "http://gw-b/stats"


/* one service as the module lists it */
struct svc {
    const char     *name;
    int             uid;
    int             c2xx;
    int             c5xx;
    int             time_ms;
    int             inflight;
    int             held;
    int             win2xx;         /* its 300 s window; -1: as c2xx */
};


static void
answer(const char *url, uint32_t now, const struct svc *s, int n)
{
    char    buf[8192];
    size_t  off;
    int     i;
    cJSON  *json;

    off = (size_t) snprintf(buf, sizeof(buf), "{\"version\":1,\"time\":%u,"
                            "\"services\":[", now);
    for (i = 0; i < n; i++) {
        off += (size_t) snprintf(buf + off, sizeof(buf) - off,
            "%s{\"name\":\"%s\",\"uid\":%d,\"slot\":0,\"inflight\":%d,"
            "\"requests\":{\"refused\":0,\"1xx\":0,\"2xx\":%d,\"3xx\":0,"
            "\"4xx\":0,\"5xx\":%d},\"windows\":{\"30\":{\"arrivals\":0},"
            "\"300\":{\"arrivals\":0,\"2xx\":%d,\"5xx\":%d}},"
            "\"request_time_ms_sum\":%d,\"hold\":{\"held\":%d,\"total\":%d,"
            "\"ms_sum\":0,\"timeouts\":1,\"rejected\":0,\"cold_starts\":2,"
            "\"cold_start_ms_sum\":3001},\"replicas\":[]}",
            i ? "," : "", s[i].name, s[i].uid, s[i].inflight, s[i].c2xx,
            s[i].c5xx, s[i].win2xx < 0 ? s[i].c2xx : s[i].win2xx, s[i].c5xx,
            s[i].time_ms, s[i].held, s[i].held * 10);
    }
    snprintf(buf + off, sizeof(buf) - off, "]}");
    json = cJSON_Parse(buf);
    assert_non_null(json);
    series_answer_at(url, json, now);
    cJSON_Delete(json);
}


static struct run *
live_run(const char *name)
{
    struct run  *r;

    r = run_new(name);
    TAILQ_INSERT_TAIL(&runs, r, entry);
    return r;
}


/* the value of array `key` (under "requests" for a class) at second t;
 * -1 for null, -2 when t is not in the answer */
static double
at(const cJSON *x, const char *key, uint32_t t)
{
    const cJSON  *arr, *v;
    double        start, end;

    start = cJSON_GetObjectItem(x, "start")->valuedouble;
    end = cJSON_GetObjectItem(x, "end")->valuedouble;
    if (t < start || t > end) {
        return -2;
    }
    arr = cJSON_GetObjectItem(x, key);
    if (arr == NULL) {
        arr = cJSON_GetObjectItem(cJSON_GetObjectItem(x, "requests"), key);
    }
    v = cJSON_GetArrayItem(arr, (int) (t - start));
    assert_non_null(v);
    return cJSON_IsNull(v) ? -1 : v->valuedouble;
}


static void
test_series(void **state)
{
    struct svc   s[3];
    struct run  *web;
    cJSON       *x, *tot;

    (void) state;
    web = live_run("web");
    live_run("api");
    live_run("old");

    /* A's first answer: where it counts from, nothing counted */
    s[0] = (struct svc) { "web", 1, 10, 0, 100, 0, 0, -1 };
    s[1] = (struct svc) { "norun", 1, 50, 0, 0, 0, 0, -1 };
    answer(A, T0, s, 2);
    /* one second later: the difference, and its mean time */
    s[0] = (struct svc) { "web", 1, 15, 1, 160, 2, 0, -1 };
    answer(A, T0 + 1, s, 1);
    /* B's first answer in the same second: nothing counted */
    s[0] = (struct svc) { "web", 1, 100, 0, 1000, 3, 0, -1 };
    answer(B, T0 + 1, s, 1);
    /* both: summed */
    s[0] = (struct svc) { "web", 1, 20, 1, 210, 2, 0, -1 };
    answer(A, T0 + 2, s, 1);
    s[0] = (struct svc) { "web", 1, 103, 0, 1090, 3, 1, -1 };
    answer(B, T0 + 2, s, 1);
    /* T0 + 3: no answer.  T0 + 4: a new uid at A, a restart at B */
    s[0] = (struct svc) { "web", 2, 4, 0, 40, 1, 0, -1 };
    answer(A, T0 + 4, s, 1);
    s[0] = (struct svc) { "web", 1, 1, 0, 30, 0, 0, -1 };
    answer(B, T0 + 4, s, 1);
    /* T0 + 5: A no longer lists web (nothing in flight there); new at
     * A: api (all of it in its window) and old (idle for long) */
    s[0] = (struct svc) { "api", 7, 7, 0, 70, 0, 0, -1 };
    s[1] = (struct svc) { "old", 8, 100, 0, 9000, 0, 0, 3 };
    answer(A, T0 + 5, s, 2);

    x = series_to_api("web", "web", 0);
    assert_non_null(x);
    assert_int_equal(cJSON_GetObjectItem(x, "end")->valuedouble, T0 + 5);
    assert_int_equal(cJSON_GetObjectItem(x, "start")->valuedouble,
                     T0 + 5 - (SERIES_SECONDS - 1));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(x, "inflight")),
                     SERIES_SECONDS);
    /* before anything: null */
    assert_true(at(x, "2xx", T0 - 1) == -1);
    assert_true(at(x, "latency_ms", T0 - 1) == -1);
    /* the first answers count nothing */
    assert_true(at(x, "2xx", T0) == 0);
    assert_true(at(x, "latency_ms", T0) == -1);
    /* T0 + 1: A's 5 + 1 in 60 ms: 10 ms; B's first answer nothing */
    assert_true(at(x, "2xx", T0 + 1) == 5);
    assert_true(at(x, "5xx", T0 + 1) == 1);
    assert_true(at(x, "latency_ms", T0 + 1) == 10);
    assert_true(at(x, "inflight", T0 + 1) == 5);
    /* T0 + 2: 5 at A, 3 at B: 140 ms for 8 */
    assert_true(at(x, "2xx", T0 + 2) == 8);
    assert_true(at(x, "latency_ms", T0 + 2) == 17.5);
    assert_true(at(x, "inflight", T0 + 2) == 5);
    assert_true(at(x, "held", T0 + 2) == 1);
    /* T0 + 3: no source answered */
    assert_true(at(x, "2xx", T0 + 3) == -1);
    assert_true(at(x, "inflight", T0 + 3) == -1);
    /* T0 + 4: from 0 at both */
    assert_true(at(x, "2xx", T0 + 4) == 5);
    assert_true(at(x, "latency_ms", T0 + 4) == 14);
    assert_true(at(x, "inflight", T0 + 4) == 1);
    /* T0 + 5: answered without web: zeros, A's in flight gone */
    assert_true(at(x, "2xx", T0 + 5) == 0);
    assert_true(at(x, "inflight", T0 + 5) == 0);
    assert_true(at(x, "latency_ms", T0 + 5) == -1);

    tot = cJSON_GetObjectItem(x, "totals");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(tot, "requests"),
                                         "2xx")->valuedouble, 5);
    assert_int_equal(cJSON_GetObjectItem(tot, "cold_starts")->valuedouble,
                     4);
    assert_true(cJSON_GetObjectItem(tot, "cold_start_ms_avg")->valuedouble
                == 1500.5);
    assert_int_equal(cJSON_GetObjectItem(tot, "hold_timeouts")->valuedouble,
                     2);
    /* no source in stats.c here: none answers now */
    assert_string_equal(cJSON_GetObjectItem(x, "stats")->valuestring,
                        "missing");
    cJSON_Delete(x);

    /* new at a source that answered before: its window */
    x = series_to_api("api", "api", T0 + 4);
    assert_int_equal(cJSON_GetObjectItem(x, "start")->valuedouble, T0 + 5);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(x, "held")), 1);
    assert_true(at(x, "2xx", T0 + 5) == 7);
    assert_true(at(x, "latency_ms", T0 + 5) == 10);
    cJSON_Delete(x);
    x = series_to_api("old", "old", T0 + 4);
    assert_true(at(x, "2xx", T0 + 5) == 3);
    assert_true(at(x, "latency_ms", T0 + 5) == -1);
    cJSON_Delete(x);

    /* since the newest second or later: empty, start = end + 1 */
    x = series_to_api("web", "web", T0 + 5);
    assert_int_equal(cJSON_GetObjectItem(x, "start")->valuedouble, T0 + 6);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(x,
                                                            "latency_ms")),
                     0);
    cJSON_Delete(x);

    /* no run: nothing kept */
    x = series_to_api("norun", "norun", T0);
    assert_true(at(x, "2xx", T0 + 1) == 0);
    cJSON_Delete(x);

    /* B fails: what it had in flight is gone */
    s[0] = (struct svc) { "web", 1, 2, 0, 40, 4, 0, -1 };
    answer(B, T0 + 6, s, 1);
    series_answer_at(B, NULL, T0 + 6);
    x = series_to_api("web", "web", T0 + 5);
    assert_true(at(x, "2xx", T0 + 6) == 1);
    assert_true(at(x, "inflight", T0 + 6) == 0);
    cJSON_Delete(x);

    /* the run finishes: its series goes at the next sweep */
    web->finished = 1;
    answer(A, T0 + 7, s, 0);
    x = series_to_api("web", "web", T0 + 5);
    assert_true(at(x, "2xx", T0 + 6) == 0);
    tot = cJSON_GetObjectItem(x, "totals");
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(tot, "requests"),
                                         "2xx")->valuedouble, 0);
    cJSON_Delete(x);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_series),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
