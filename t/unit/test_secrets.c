/*
 * ds_secret: secrets' names and the "${{ secrets.NAME }}" references of
 * env values and registry_auth, and the validator's use of them.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ds_secret.h"
#include "ds_spec.h"


/* the pieces of s: text as it is, a secret as <NAME> */
struct render {
    char    out[1024];
    size_t  len;
    int     pieces;
    int     stop_at;        /* the piece whose callback returns 7 */
};


static int
render_cb(void *arg, int kind, const char *p, size_t len)
{
    struct render  *r = arg;

    assert_true(len > 0);
    r->pieces++;
    if (r->pieces == r->stop_at) {
        return 7;
    }
    r->len += (size_t) snprintf(r->out + r->len, sizeof(r->out) - r->len,
                                kind == DS_REF_SECRET ? "<%.*s>" : "%.*s",
                                (int) len, p);
    return 0;
}


/* 0 and the rendering in out, or -1 and the message in out */
static int
refs(const char *s, char *out, size_t n)
{
    struct render  r;
    char           err[256];
    int            rc;

    memset(&r, 0, sizeof(r));
    err[0] = '\0';
    rc = ds_secret_refs(s, render_cb, &r, err, sizeof(err));
    snprintf(out, n, "%s", rc == 0 ? r.out : err);
    /* checking alone agrees with walking */
    assert_int_equal(ds_secret_refs(s, NULL, NULL, err, sizeof(err)), rc);
    return rc;
}


static void
test_names(void **state)
{
    char  name[DS_SECRET_NAME_MAX + 2];

    (void) state;
    assert_true(ds_secret_name_ok("a", 1));
    assert_true(ds_secret_name_ok("HF_TOKEN", 8));
    assert_true(ds_secret_name_ok("db-pass-2", 9));
    assert_true(ds_secret_name_ok("_x", 2));
    assert_false(ds_secret_name_ok("", 0));
    assert_false(ds_secret_name_ok("a.b", 3));
    assert_false(ds_secret_name_ok("a/b", 3));
    assert_false(ds_secret_name_ok("a b", 3));
    assert_false(ds_secret_name_ok("é", strlen("é")));

    memset(name, 'a', sizeof(name));
    assert_true(ds_secret_name_ok(name, DS_SECRET_NAME_MAX));
    assert_false(ds_secret_name_ok(name, DS_SECRET_NAME_MAX + 1));
}


static void
test_text(void **state)
{
    char  out[1024];

    (void) state;
    assert_int_equal(refs("", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(refs("plain", out, sizeof(out)), 0);
    assert_string_equal(out, "plain");

    /* a "$" that starts no reference is itself */
    assert_int_equal(refs("$HOME ${X} $ a$ ${ {x}} $", out, sizeof(out)), 0);
    assert_string_equal(out, "$HOME ${X} $ a$ ${ {x}} $");

    /* "$$" is one "$", as dstack's interpolator has it */
    assert_int_equal(refs("pa$$word $$$$", out, sizeof(out)), 0);
    assert_string_equal(out, "pa$word $$");
    assert_int_equal(refs("$${{ secrets.A }}", out, sizeof(out)), 0);
    assert_string_equal(out, "${{ secrets.A }}");
    assert_false(ds_secret_has_refs("$${{ secrets.A }}"));
}


static void
test_references(void **state)
{
    char  out[1024];

    (void) state;
    assert_int_equal(refs("${{ secrets.HF_TOKEN }}", out, sizeof(out)), 0);
    assert_string_equal(out, "<HF_TOKEN>");
    assert_int_equal(refs("${{secrets.A}}", out, sizeof(out)), 0);
    assert_string_equal(out, "<A>");
    assert_int_equal(refs("${{ \tsecrets.db-pass\t }}", out, sizeof(out)), 0);
    assert_string_equal(out, "<db-pass>");

    assert_int_equal(refs("postgres://u:${{ secrets.p }}@h/${{ secrets.d }}",
                          out, sizeof(out)), 0);
    assert_string_equal(out, "postgres://u:<p>@h/<d>");
    assert_int_equal(refs("${{ secrets.a }}${{ secrets.b }}", out,
                          sizeof(out)), 0);
    assert_string_equal(out, "<a><b>");
    assert_int_equal(refs("$$${{ secrets.a }}", out, sizeof(out)), 0);
    assert_string_equal(out, "$<a>");

    assert_true(ds_secret_has_refs("x ${{ secrets.a }}"));
    assert_false(ds_secret_has_refs("x"));
    assert_false(ds_secret_has_refs("${{ secret.a }}"));
}


static void
test_malformed(void **state)
{
    char  out[1024], long_ref[512];

    (void) state;
    assert_int_equal(refs("${{ secret.X }}", out, sizeof(out)), -1);
    assert_string_equal(out, "invalid reference \"${{ secret.X }}\": "
                        "expected ${{ secrets.NAME }}");
    assert_int_equal(refs("${{ env.X }}", out, sizeof(out)), -1);
    assert_non_null(strstr(out, "expected ${{ secrets.NAME }}"));
    assert_int_equal(refs("${{ X }}", out, sizeof(out)), -1);
    assert_int_equal(refs("${{}}", out, sizeof(out)), -1);

    assert_int_equal(refs("${{ secrets. }}", out, sizeof(out)), -1);
    assert_non_null(strstr(out, "invalid reference \"${{ secrets. }}\": "
                           "a secret's name is 1 to 200"));
    assert_int_equal(refs("${{ secrets.a.b }}", out, sizeof(out)), -1);
    assert_int_equal(refs("${{ secrets.a b }}", out, sizeof(out)), -1);
    assert_int_equal(refs("${{ secrets.a/../b }}", out, sizeof(out)), -1);

    assert_int_equal(refs("x ${{ secrets.HF_TOKEN", out, sizeof(out)), -1);
    assert_string_equal(out, "unterminated reference \"${{ secrets.HF_TOKEN\" "
                        "(no \"}}\")");
    assert_int_equal(refs("${{ secrets.a }} ${{", out, sizeof(out)), -1);
    assert_int_equal(refs("${{ secrets.a }", out, sizeof(out)), -1);

    /* a long reference is cut in the message */
    snprintf(long_ref, sizeof(long_ref), "${{ secrets.%0300d }}", 0);
    assert_int_equal(refs(long_ref, out, sizeof(out)), -1);
    assert_true(strlen(out) < 200);
    assert_non_null(strstr(out, "...\""));
}


static void
test_stop(void **state)
{
    struct render  r;
    char           err[64];

    (void) state;
    memset(&r, 0, sizeof(r));
    r.stop_at = 2;
    assert_int_equal(ds_secret_refs("a${{ secrets.b }}c", render_cb, &r, err,
                                    sizeof(err)), 7);
    assert_string_equal(r.out, "a");
}


/* the validator: "FILE:L:C: env.K: ..." from a file, "spec.env.K: ..."
 * from JSON; well formed references are kept as written */
static void
test_spec(void **state)
{
    cJSON        *n = NULL, *in;
    ds_err_t      err;
    const char   *yaml;
    int           rc;

    (void) state;
    yaml = "type: service\nport: 8000\ncommands: [\"true\"]\nenv:\n"
           "  - HF_TOKEN=${{ secrets.HF_TOKEN }}\n"
           "  - URL=u:${{secrets.p}}@h\n"
           "registry_auth:\n  username: u\n"
           "  password: ${{ secrets.REG }}\n";
    memset(&err, 0, sizeof(err));
    rc = ds_spec_parse_yaml("s.yml", yaml, strlen(yaml), &n, &err);
    assert_int_equal(rc, DS_OK);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(
        cJSON_GetObjectItem(n, "env"), "HF_TOKEN")),
        "${{ secrets.HF_TOKEN }}");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(
        cJSON_GetObjectItem(n, "registry_auth"), "password")),
        "${{ secrets.REG }}");
    cJSON_Delete(n);
    n = NULL;

    yaml = "type: service\nport: 8000\ncommands: [\"true\"]\nenv:\n"
           "  - HF_TOKEN=${{ secret.HF_TOKEN }}\n";
    rc = ds_spec_parse_yaml("s.yml", yaml, strlen(yaml), &n, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_string_equal(err.msg, "s.yml:5:5: env.HF_TOKEN: invalid "
                        "reference \"${{ secret.HF_TOKEN }}\": expected "
                        "${{ secrets.NAME }}");

    yaml = "type: service\nport: 8000\ncommands: [\"true\"]\nenv:\n"
           "  TOK: ${{ secrets.A\n";
    rc = ds_spec_parse_yaml("s.yml", yaml, strlen(yaml), &n, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_non_null(strstr(err.msg, "s.yml:5:"));
    assert_non_null(strstr(err.msg, "env.TOK: unterminated reference"));

    in = cJSON_Parse("{\"type\":\"service\",\"port\":8000,"
                     "\"commands\":[\"true\"],"
                     "\"env\":{\"HF_TOKEN\":\"${{ secrets. }}\"}}");
    rc = ds_spec_validate_json(in, &n, &err);
    cJSON_Delete(in);
    assert_int_equal(rc, DS_EINVAL);
    assert_non_null(strstr(err.msg, "spec.env.HF_TOKEN: invalid reference"));

    in = cJSON_Parse("{\"type\":\"service\",\"port\":8000,"
                     "\"commands\":[\"true\"],\"registry_auth\":"
                     "{\"username\":\"u\",\"password\":\"${{ p }}\"}}");
    rc = ds_spec_validate_json(in, &n, &err);
    cJSON_Delete(in);
    assert_int_equal(rc, DS_EINVAL);
    assert_non_null(strstr(err.msg,
        "spec.registry_auth.password: invalid reference \"${{ p }}\""));
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_stop),
        cmocka_unit_test(test_spec),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
