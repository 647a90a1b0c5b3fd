/* ds_host: the run from "<run>.<domain>"; ds_token_cache: token hashes */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "ds_bearer.h"
#include "ds_host.h"
#include "ds_state.h"


static int
host(const char *h, const char *domain, char *out)
{
    const char  *name = NULL;
    size_t       len = 0;
    int          rc;

    out[0] = '\0';
    rc = ds_host_run_name(h, strlen(h), domain, strlen(domain), &name, &len);
    if (rc == DS_HOST_OK) {
        assert_ptr_equal(name, h);
        memcpy(out, name, len);
        out[len] = '\0';
    }
    return rc;
}


static void
test_host(void **state)
{
    static const struct {
        const char  *host, *domain;
        int          rc;
        const char  *name;         /* with DS_HOST_OK */
    } cases[] = {
        { "chat.gw.example", "gw.example", DS_HOST_OK, "chat" },
        { "my-app-2.gw.example", "gw.example", DS_HOST_OK, "my-app-2" },

        /* a run of a project: one label, "<run>--<project>" */
        { "web--team.gw.example", "gw.example", DS_HOST_OK, "web--team" },
        { "my-app--team-2.gw.example", "gw.example", DS_HOST_OK,
          "my-app--team-2" },
        { "gateway--team.gw.example", "gw.example", DS_HOST_OK,
          "gateway--team" },
        /* a 41-byte run and a 20-byte project: 63 in all */
        { "abcdefghijabcdefghijabcdefghijabcdefghija--"
          "p1234567890123456789.gw.example", "gw.example", DS_HOST_OK,
          "abcdefghijabcdefghijabcdefghijabcdefghija--"
          "p1234567890123456789" },
        { "abcdefghijabcdefghijabcdefghijabcdefghija--"
          "p12345678901234567890.gw.example", "gw.example",
          DS_HOST_BAD_NAME, NULL },
        { "web--.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "--team.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "x--team.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web--team--x.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web---team.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web--Team.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web--te_am.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        /* the project's own rules: a run name's, not ending in '-' */
        { "web--2team.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web--t.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web--team-.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "web--team.x.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },

        /* the domain itself, another domain, a suffix that is not a
         * label */
        { "gw.example", "gw.example", DS_HOST_NOT_OURS, NULL },
        { ".gw.example", "gw.example", DS_HOST_NOT_OURS, NULL },
        { "chat.xgw.example", "gw.example", DS_HOST_NOT_OURS, NULL },
        { "chatgw.example", "gw.example", DS_HOST_NOT_OURS, NULL },
        { "chat.gw.example.evil", "gw.example", DS_HOST_NOT_OURS, NULL },
        { "chat.gw.example", "", DS_HOST_NOT_OURS, NULL },
        { "", "gw.example", DS_HOST_NOT_OURS, NULL },

        /* two labels, bad run names */
        { "a.chat.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "x.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "1ab.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "a_b.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
        { "Chat.gw.example", "gw.example", DS_HOST_BAD_NAME, NULL },
    };
    char    n[128];
    size_t  i;

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(host(cases[i].host, cases[i].domain, n),
                         cases[i].rc);
        assert_string_equal(n, cases[i].name ? cases[i].name : "");
    }
}


static void
test_gateway_project(void **state)
{
    static const struct {
        const char  *label;
        int          ok;
        const char  *project;
    } cases[] = {
        { "gateway", 1, "" },
        { "gateway--team", 1, "team" },
        { "gateway--t-2", 1, "t-2" },
        { "gateway--2t", 0, NULL },
        { "gateway--team-", 0, NULL },
        { "gateway--", 0, NULL },
        { "gateway-", 0, NULL },
        { "gateway--a--b", 0, NULL },
        { "gateway---a", 0, NULL },
        { "gatewayx", 0, NULL },
        { "gatewa", 0, NULL },
        { "web--team", 0, NULL },
        { "xgateway--team", 0, NULL },
    };
    size_t       i, plen;
    const char  *p;

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p = NULL;
        plen = 99;
        assert_int_equal(ds_host_gateway_project(cases[i].label,
                                                 strlen(cases[i].label),
                                                 &p, &plen),
                         cases[i].ok);
        if (cases[i].ok) {
            assert_int_equal(plen, strlen(cases[i].project));
            assert_memory_equal(p, cases[i].project, plen);
        }
    }
}


static void
test_token_cache(void **state)
{
    static ds_token_cache_t  cache;
    unsigned char            want[32], got[32];
    char                     tok[128];
    size_t                   slot;
    int                      i;

    (void) state;

    /* an empty token is not the empty slot's zero hash */
    ds_sha256("", 0, want);
    ds_token_cache_hash(&cache, "", 0, got);
    assert_memory_equal(got, want, 32);

    /* twice each (computed, then cached), and two tokens in one slot */
    for (i = 0; i < 2000; i++) {
        snprintf(tok, sizeof(tok), "dst_%d", i % 1000);
        ds_sha256(tok, strlen(tok), want);
        ds_token_cache_hash(&cache, tok, strlen(tok), got);
        assert_memory_equal(got, want, 32);
    }
    slot = ds_token_cache_slot("dst_abcdefgh", 12);
    assert_true(slot < DS_TOKEN_CACHE_SLOTS);
    /* the same last 8 bytes: the same slot, different hashes */
    assert_int_equal(ds_token_cache_slot("xx_abcdefgh", 11), slot);
    ds_token_cache_hash(&cache, "dst_abcdefgh", 12, got);
    ds_sha256("xx_abcdefgh", 11, want);
    ds_token_cache_hash(&cache, "xx_abcdefgh", 11, got);
    assert_memory_equal(got, want, 32);

    /* longer than a slot keeps: hashed every time */
    memset(tok, 'a', 100);
    ds_sha256(tok, 100, want);
    ds_token_cache_hash(&cache, tok, 100, got);
    assert_memory_equal(got, want, 32);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_gateway_project),
        cmocka_unit_test(test_token_cache),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
