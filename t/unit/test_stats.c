/*
 * controld/stats.c against two stats locations of the test's own
 * (listening sockets on 127.0.0.1 that answer canned JSON): figures are
 * summed over the sources that answer; a source that stops answering is
 * left out; stats_set_sources() keeps the sources it is given again
 * (their last answer too), drops the others, reads a URL once however
 * often it comes, and leaves out what is not an http:// URL (logged
 * once, counted as failing); a token's budget counters are summed per
 * (service, model) over the gateways (stats_token_usage()).
 */

#define _GNU_SOURCE

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "stats.h"
#include "util.h"


static const char *answer_a =
    "{\"version\":1,\"services\":[{\"name\":\"s\",\"inflight\":2,"
    "\"windows\":{\"30\":{\"arrivals\":50},\"60\":{\"arrivals\":120}},"
    "\"hold\":{\"held\":1},"
    "\"replicas\":[{\"addr\":\"10.0.0.2:80\",\"inflight\":2}]}]}";

static const char *answer_b =
    "{\"version\":1,\"services\":[{\"name\":\"s\",\"inflight\":3,"
    "\"windows\":{\"30\":{\"arrivals\":10},\"60\":{\"arrivals\":60}},"
    "\"hold\":{\"held\":0},"
    "\"replicas\":[{\"addr\":\"10.0.0.2:80\",\"inflight\":1},"
    "{\"addr\":\"10.0.0.6:80\",\"inflight\":2}]},"
    "{\"name\":\"t\",\"inflight\":7,\"windows\":{\"60\":{\"arrivals\":6}},"
    "\"replicas\":[]}]}";


/* two gateways' "budgets" (day 20000 is today): "ci" used llama at both
 * and mistral at B; B's llama entry counts tokens of an older day; "ops"
 * and the anonymous caller ("") are others */
static const char *budgets_a =
    "{\"version\":1,\"services\":[],\"budgets\":["
    "{\"token\":\"ci\",\"service\":\"llm\",\"model\":\"llama\","
    "\"requests\":10,\"refused\":2,\"prompt_tokens\":1000,"
    "\"completion_tokens\":500,\"day\":20000,\"day_tokens\":1500},"
    "{\"token\":\"ops\",\"service\":\"llm\",\"model\":\"llama\","
    "\"requests\":99,\"refused\":0,\"prompt_tokens\":9,"
    "\"completion_tokens\":9,\"day\":20000,\"day_tokens\":18},"
    "{\"token\":\"\",\"service\":\"llm\",\"model\":\"llama\","
    "\"requests\":7,\"refused\":0,\"prompt_tokens\":7,"
    "\"completion_tokens\":7,\"day\":20000,\"day_tokens\":14}]}";

static const char *budgets_b =
    "{\"version\":1,\"services\":[],\"budgets\":["
    "{\"token\":\"ci\",\"service\":\"llm\",\"model\":\"llama\","
    "\"requests\":5,\"refused\":1,\"prompt_tokens\":300,"
    "\"completion_tokens\":200,\"day\":19999,\"day_tokens\":500},"
    "{\"token\":\"ci\",\"service\":\"mis--team\",\"model\":"
    "\"mistral\",\"requests\":1,\"refused\":0,\"prompt_tokens\":20,"
    "\"completion_tokens\":30,\"day\":20000,\"day_tokens\":50}]}";


static int
listen_any(int *port)
{
    struct sockaddr_in  sa;
    socklen_t           len = sizeof(sa);
    int                 fd;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}


/* the client connected (its connect() ran in stats_tick): answer it and
 * end the answer; returns the connection, to close after the exchange */
static int
answer(int lfd, const char *json)
{
    char  head[128];
    int   c;

    c = accept(lfd, NULL, NULL);
    assert_true(c >= 0);
    snprintf(head, sizeof(head), "HTTP/1.0 200 OK\r\nContent-Type: "
             "application/json\r\n\r\n");
    assert_true(write(c, head, strlen(head)) == (ssize_t) strlen(head));
    assert_true(write(c, json, strlen(json)) == (ssize_t) strlen(json));
    shutdown(c, SHUT_WR);
    return c;
}


/* the main loop's part: until no exchange is left open */
static void
pump(void)
{
    struct pollfd  pfd[8];
    int            n, i;

    for (i = 0; i < 200; i++) {
        n = stats_fill(pfd, 8);
        if (n == 0) {
            return;
        }
        assert_true(poll(pfd, (nfds_t) n, 50) >= 0);
        stats_process(pfd, n);
    }
    fail_msg("the stats exchanges did not end");
}


static void
round_now(void)
{
    stats_request(0);
    stats_tick();
}


static void
test_sum_and_sources(void **state)
{
    int          la, lb, pa, pb, ca, cb;
    char         ua[64], ub[64], uc[160];
    const char  *set[3];
    size_t       live, total;

    (void) state;
    la = listen_any(&pa);
    lb = listen_any(&pb);
    snprintf(ua, sizeof(ua), "http://127.0.0.1:%d/stats", pa);
    snprintf(ub, sizeof(ub), "http://127.0.0.1:%d/stats", pb);

    /* nothing answered yet: unknown */
    set[0] = ua;
    set[1] = ub;
    stats_set_sources(set, 2);
    stats_sources(&live, &total);
    assert_int_equal(total, 2);
    assert_int_equal(live, 0);
    assert_int_equal(stats_service_inflight("s"), -1);
    assert_int_equal(stats_fresh_ms(), 0);

    /* both answer: sums */
    round_now();
    ca = answer(la, answer_a);
    cb = answer(lb, answer_b);
    pump();
    close(ca);
    close(cb);
    stats_sources(&live, &total);
    assert_int_equal(live, 2);
    assert_int_equal(stats_service_inflight("s"), 5);
    assert_int_equal(stats_service_arrivals("s", 60), 180);
    assert_int_equal(stats_service_arrivals("s", 30), 60);
    assert_int_equal(stats_service_held("s"), 1);
    assert_int_equal(stats_replica_inflight("s", "10.0.0.2:80"), 3);
    assert_int_equal(stats_replica_inflight("s", "10.0.0.6:80"), 2);
    assert_int_equal(stats_replica_inflight("s", "10.0.0.9:80"), 0);
    /* a service only B lists: B's figures, A counts 0 */
    assert_int_equal(stats_service_inflight("t"), 7);
    assert_int_equal(stats_service_inflight("nobody"), 0);
    assert_true(stats_fresh_ms() > 0);

    /* B stops answering: left out, A's figures alone */
    close(lb);
    round_now();
    ca = answer(la, answer_a);
    pump();
    close(ca);
    stats_sources(&live, &total);
    assert_int_equal(live, 1);
    assert_int_equal(total, 2);
    assert_int_equal(stats_service_inflight("s"), 2);
    assert_int_equal(stats_service_arrivals("s", 60), 120);
    assert_int_equal(stats_replica_inflight("s", "10.0.0.2:80"), 2);
    assert_int_equal(stats_service_inflight("t"), 0);

    /* a new set: A again (kept with its answer), A twice in one entry,
     * a URL that is not http:// (left out); B is dropped */
    snprintf(uc, sizeof(uc), "  %s %s  ", ua, ua);
    set[0] = ua;
    set[1] = uc;
    set[2] = "ftp://127.0.0.1/stats";
    stats_set_sources(set, 3);
    stats_sources(&live, &total);
    assert_int_equal(total, 2);     /* the ftp:// one counts as failing */
    assert_int_equal(live, 1);
    assert_int_equal(stats_service_inflight("s"), 2);
    /* the same set again, as the leader gives it every second: nothing
     * is asked of the ftp:// one */
    stats_set_sources(set, 3);
    round_now();
    ca = answer(la, answer_a);
    pump();
    close(ca);
    stats_sources(&live, &total);
    assert_int_equal(total, 2);
    assert_int_equal(live, 1);
    assert_int_equal(stats_service_inflight("s"), 2);

    /* none at all: unknown again, draining falls back to its bound */
    stats_set_sources(NULL, 0);
    stats_sources(&live, &total);
    assert_int_equal(total, 0);
    assert_int_equal(stats_service_inflight("s"), -1);
    assert_int_equal(stats_replica_inflight("s", "10.0.0.2:80"), -1);
    assert_int_equal(stats_service_held("s"), 0);
    close(la);
}


static double
usage_num(const cJSON *u, const char *name)
{
    const cJSON  *v;

    v = cJSON_GetObjectItem(u, name);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}


/* a token's entries summed per (service, model) over the gateways; the
 * day's tokens only of today's entries; other tokens left out */
static void
test_token_usage(void **state)
{
    int          la, lb, pa, pb, ca, cb;
    char         ua[64], ub[64];
    const char  *set[2];
    cJSON       *use;
    const cJSON *u;

    (void) state;
    la = listen_any(&pa);
    lb = listen_any(&pb);
    snprintf(ua, sizeof(ua), "http://127.0.0.1:%d/stats", pa);
    snprintf(ub, sizeof(ub), "http://127.0.0.1:%d/stats", pb);
    set[0] = ua;
    set[1] = ub;
    stats_set_sources(set, 2);

    /* nobody answered yet: no use known */
    use = stats_token_usage("ci", 20000);
    assert_non_null(use);
    assert_int_equal(cJSON_GetArraySize(use), 0);
    cJSON_Delete(use);

    round_now();
    ca = answer(la, budgets_a);
    cb = answer(lb, budgets_b);
    pump();
    close(ca);
    close(cb);

    use = stats_token_usage("ci", 20000);
    assert_non_null(use);
    assert_int_equal(cJSON_GetArraySize(use), 2);

    u = cJSON_GetArrayItem(use, 0);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(u,
                                                                  "model")),
                        "llama");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(u,
                                                                  "service")),
                        "llm");
    assert_true(usage_num(u, "requests") == 15);
    assert_true(usage_num(u, "refused") == 3);
    assert_true(usage_num(u, "prompt_tokens") == 1300);
    assert_true(usage_num(u, "completion_tokens") == 700);
    assert_true(usage_num(u, "day_tokens") == 1500);   /* B's is old */

    u = cJSON_GetArrayItem(use, 1);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(u,
                                                                  "model")),
                        "mistral");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(u,
                                                                  "service")),
                        "mis--team");
    assert_true(usage_num(u, "requests") == 1);
    assert_true(usage_num(u, "day_tokens") == 50);
    cJSON_Delete(use);

    /* the next day, the same entries count no day's tokens */
    use = stats_token_usage("ci", 20001);
    assert_true(usage_num(cJSON_GetArrayItem(use, 0), "day_tokens") == 0);
    assert_true(usage_num(cJSON_GetArrayItem(use, 0), "requests") == 15);
    cJSON_Delete(use);

    /* the anonymous caller is a token of its own; a stranger has none */
    use = stats_token_usage("", 20000);
    assert_int_equal(cJSON_GetArraySize(use), 1);
    assert_true(usage_num(cJSON_GetArrayItem(use, 0), "requests") == 7);
    cJSON_Delete(use);
    use = stats_token_usage("nobody", 20000);
    assert_int_equal(cJSON_GetArraySize(use), 0);
    cJSON_Delete(use);

    stats_set_sources(NULL, 0);
    close(la);
    close(lb);
}


static void
test_init_refuses(void **state)
{
    char  err[512];

    (void) state;
    assert_int_equal(stats_init("http://127.0.0.1:1/a http://127.0.0.1:1/a",
                                err, sizeof(err)), -1);
    assert_string_equal(err, "stats_url: \"http://127.0.0.1:1/a\" is listed "
                        "twice");
    assert_int_equal(stats_init("http://127.0.0.1:99999/a", err,
                                sizeof(err)), -1);
    assert_string_equal(err, "stats_url: bad port in "
                        "\"http://127.0.0.1:99999/a\"");
    assert_int_equal(stats_init("https://127.0.0.1/a", err, sizeof(err)),
                     -1);
    assert_string_equal(err, "stats_url: \"https://127.0.0.1/a\" is not an "
                        "http:// URL");
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum_and_sources),
        cmocka_unit_test(test_token_usage),
        cmocka_unit_test(test_init_refuses),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
