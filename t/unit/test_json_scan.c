/* ds_json_scan: finding "model" in OpenAI request bodies */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ds_json_scan.h"


static int
find(const char *json, char *out, size_t outlen)
{
    int          rc, esc;
    size_t       len, off, n;
    const char  *val;

    rc = ds_json_find_string(json, strlen(json), "model", &val, &len, &esc,
                             &off);
    if (rc == DS_JSON_OK) {
        assert_true(len < outlen);
        if (esc) {
            n = ds_json_unescape(val, len, out);
            if (n == (size_t) -1) {
                return 99;
            }
            out[n] = '\0';
        } else {
            memcpy(out, val, len);
            out[len] = '\0';
        }
    }

    return rc;
}


static void
test_finds_model(void **state)
{
    char  out[256];

    (void) state;

    assert_int_equal(find("{\"model\":\"llama\",\"messages\":[]}", out,
                          sizeof(out)), DS_JSON_OK);
    assert_string_equal(out, "llama");

    assert_int_equal(find(" {\"messages\":[{\"role\":\"user\",\"content\":"
                          "\"{\\\"model\\\":\\\"x\\\"}\"}], \"model\" : "
                          "\"org/m-7b\" } \n", out, sizeof(out)), DS_JSON_OK);
    assert_string_equal(out, "org/m-7b");

    /* nested "model" keys are not the top-level one */
    assert_int_equal(find("{\"a\":{\"model\":\"x\"},\"model\":\"y\"}", out,
                          sizeof(out)), DS_JSON_OK);
    assert_string_equal(out, "y");

    /* escapes in keys and values */
    assert_int_equal(find("{\"mod\\u0065l\":\"a\\/b\\u00e9\"}", out,
                          sizeof(out)), DS_JSON_OK);
    assert_string_equal(out, "a/b\xc3\xa9");

    assert_int_equal(find("{\"model\":\"\\ud83d\\ude00\"}", out,
                          sizeof(out)), DS_JSON_OK);
    assert_string_equal(out, "\xf0\x9f\x98\x80");
}


static void
test_missing_and_not_string(void **state)
{
    char  out[64];

    (void) state;

    assert_int_equal(find("{}", out, sizeof(out)), DS_JSON_MISSING);
    assert_int_equal(find("{\"messages\":[1,2.5e3,-0.1,true,false,null]}",
                          out, sizeof(out)), DS_JSON_MISSING);
    assert_int_equal(find("{\"model\":5}", out, sizeof(out)),
                     DS_JSON_NOT_STRING);
    assert_int_equal(find("{\"model\":null}", out, sizeof(out)),
                     DS_JSON_NOT_STRING);
    assert_int_equal(find("{\"model\":[\"a\"]}", out, sizeof(out)),
                     DS_JSON_NOT_STRING);
}


static void
test_invalid(void **state)
{
    static const char *bad[] = {
        "", " ", "[]", "\"model\"", "{", "{\"model\":\"a\"", "{\"model\"}",
        "{\"model\":\"a\",}", "{\"model\":\"a\"} x", "{model:\"a\"}",
        "{\"model\":'a'}", "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}",
        "{\"a\":-}", "{\"a\":1e}", "{\"a\":tru}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12\"}", "{\"a\":\"tab\there\"}", "{\"a\":[1,]}",
        "{\"a\":[1 2]}", "{\"model\":\"a\",\"model\":\"b\"}",
        "{\"a\":1}{\"b\":2}",
    };
    size_t       i, len, off;
    int          esc;
    const char  *val;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ds_json_find_string(bad[i], strlen(bad[i]), "model", &val, &len,
                                &esc, &off) != DS_JSON_INVALID)
        {
            fail_msg("accepted invalid JSON: %s", bad[i]);
        }
    }
}


static void
test_depth_limit(void **state)
{
    char    buf[4096];
    size_t  i, n = 0, len, off;
    int     esc;
    const char *val;

    (void) state;

    buf[n++] = '{';
    memcpy(buf + n, "\"a\":", 4);
    n += 4;
    for (i = 0; i < 1000; i++) {
        buf[n++] = '[';
    }
    for (i = 0; i < 1000; i++) {
        buf[n++] = ']';
    }
    buf[n++] = '}';

    assert_int_equal(ds_json_find_string(buf, n, "model", &val, &len, &esc,
                                         &off), DS_JSON_INVALID);
}


static void
test_unescape_rejects(void **state)
{
    char  out[16];

    (void) state;

    assert_true(ds_json_unescape("\\u0000", 6, out) == (size_t) -1);
    assert_true(ds_json_unescape("\\ud800", 6, out) == (size_t) -1);
    assert_true(ds_json_unescape("\\udc00", 6, out) == (size_t) -1);
    assert_true(ds_json_unescape("\\q", 2, out) == (size_t) -1);
}


static void
test_usage_any_split(void **state)
{
    size_t       i, j, len;
    ds_usage_t   u;
    const char  *resp =
        "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":"
        "\"prompt_tokens: 99\"}}],\"usage\": {\"prompt_tokens\" : 12,"
        "\n \"completion_tokens\":345, \"total_tokens\":357}}";

    (void) state;

    len = strlen(resp);

    /* every split into three pieces gives the same counts */
    for (i = 0; i <= len; i++) {
        for (j = i; j <= len; j += 7) {
            memset(&u, 0, sizeof(u));
            ds_usage_scan(&u, resp, i);
            ds_usage_scan(&u, resp + i, j - i);
            ds_usage_scan(&u, resp + j, len - j);
            assert_true(u.seen);
            assert_int_equal(u.prompt, 12);
            assert_int_equal(u.completion, 345);
        }
    }
}


static void
test_usage_stream(void **state)
{
    ds_usage_t   u;
    const char  *chunks[] = {
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,",
        "\"completion_tokens\":7}}\n\ndata: [DONE]\n\n",
    };
    size_t       i;

    (void) state;

    memset(&u, 0, sizeof(u));
    for (i = 0; i < 3; i++) {
        ds_usage_scan(&u, chunks[i], strlen(chunks[i]));
    }

    assert_int_equal(u.prompt, 5);
    assert_int_equal(u.completion, 7);

    memset(&u, 0, sizeof(u));
    ds_usage_scan(&u, "{\"prompt_tokens\":\"x\"}", 21);
    assert_false(u.seen);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_finds_model),
        cmocka_unit_test(test_missing_and_not_string),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_unescape_rejects),
        cmocka_unit_test(test_usage_any_split),
        cmocka_unit_test(test_usage_stream),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
