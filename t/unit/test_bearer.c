/* ds_bearer: the token of an Authorization header, for gateway and API */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ds_bearer.h"


/* the token of a NUL-terminated header value into out, or the code */
static int
bearer(const char *value, char *out, size_t outlen)
{
    int          rc;
    size_t       len;
    const char  *tok;

    out[0] = '\0';
    tok = NULL;
    len = 0;

    rc = ds_bearer_token(value, value ? strlen(value) : 0, &tok, &len);
    if (rc == DS_BEARER_OK) {
        assert_non_null(tok);
        assert_true(tok >= value && tok + len <= value + strlen(value));
        assert_true(len < outlen);
        memcpy(out, tok, len);
        out[len] = '\0';
    }

    return rc;
}


static void
test_token(void **state)
{
    char  out[600];

    (void) state;

    assert_int_equal(bearer("Bearer dst_abc", out, sizeof(out)),
                     DS_BEARER_OK);
    assert_string_equal(out, "dst_abc");

    /* the scheme is case-insensitive (RFC 6750 via RFC 7235) */
    assert_int_equal(bearer("bearer x", out, sizeof(out)), DS_BEARER_OK);
    assert_string_equal(out, "x");
    assert_int_equal(bearer("BEARER x", out, sizeof(out)), DS_BEARER_OK);
    assert_string_equal(out, "x");

    /* spaces around the token are not part of it */
    assert_int_equal(bearer("Bearer    tok  ", out, sizeof(out)),
                     DS_BEARER_OK);
    assert_string_equal(out, "tok");

    /* inner spaces are the client's business: the lookup fails later */
    assert_int_equal(bearer("Bearer a b", out, sizeof(out)), DS_BEARER_OK);
    assert_string_equal(out, "a b");
}


static void
test_missing(void **state)
{
    char  out[16];

    (void) state;

    assert_int_equal(bearer(NULL, out, sizeof(out)), DS_BEARER_MISSING);
}


static void
test_invalid(void **state)
{
    char  out[16];

    (void) state;

    assert_int_equal(bearer("", out, sizeof(out)), DS_BEARER_INVALID);
    assert_int_equal(bearer("Bearer", out, sizeof(out)), DS_BEARER_INVALID);
    assert_int_equal(bearer("Bearer ", out, sizeof(out)), DS_BEARER_INVALID);
    assert_int_equal(bearer("Bearer     ", out, sizeof(out)),
                     DS_BEARER_INVALID);
    assert_int_equal(bearer("Basic dXNlcjpwYXNz", out, sizeof(out)),
                     DS_BEARER_INVALID);
    assert_int_equal(bearer("Bearerx", out, sizeof(out)), DS_BEARER_INVALID);
    assert_int_equal(bearer("Bearer\tx", out, sizeof(out)),
                     DS_BEARER_INVALID);
    assert_int_equal(bearer(" Bearer x", out, sizeof(out)),
                     DS_BEARER_INVALID);
    assert_int_equal(bearer("dst_abc", out, sizeof(out)), DS_BEARER_INVALID);
}


static void
test_length(void **state)
{
    char    value[8 + DS_BEARER_TOKEN_MAX + 2], out[DS_BEARER_TOKEN_MAX + 2];
    size_t  n;

    (void) state;

    memcpy(value, "Bearer ", 7);
    memset(value + 7, 'a', DS_BEARER_TOKEN_MAX);
    value[7 + DS_BEARER_TOKEN_MAX] = '\0';

    assert_int_equal(bearer(value, out, sizeof(out)), DS_BEARER_OK);
    assert_int_equal(strlen(out), DS_BEARER_TOKEN_MAX);

    /* trailing spaces do not count against the limit */
    n = 7 + DS_BEARER_TOKEN_MAX;
    value[n] = ' ';
    value[n + 1] = '\0';
    assert_int_equal(bearer(value, out, sizeof(out)), DS_BEARER_OK);

    value[n] = 'a';
    assert_int_equal(bearer(value, out, sizeof(out)), DS_BEARER_INVALID);
}


static void
test_not_terminated(void **state)
{
    size_t       len;
    const char  *tok;

    (void) state;

    /* nginx header values are not NUL-terminated: only len counts */
    assert_int_equal(ds_bearer_token("Bearer abcdef", 10, &tok, &len),
                     DS_BEARER_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(tok, "abc", 3);

    assert_int_equal(ds_bearer_token("Bearer abcdef", 7, &tok, &len),
                     DS_BEARER_INVALID);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_length),
        cmocka_unit_test(test_not_terminated),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
