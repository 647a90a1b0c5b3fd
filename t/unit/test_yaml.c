/*
 * Unit tests of the YAML loader with locations (common/ds_yaml.c), as
 * controld.yml and the client configuration use it; the service files'
 * cases are in test_spec.c.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ds_yaml.h"


static ds_yaml_doc_t *
load_ok(const char *text)
{
    ds_err_t        err;
    ds_yaml_doc_t  *doc;

    err.msg[0] = '\0';
    if (ds_yaml_load("c.yml", text, strlen(text), &doc, &err) != DS_OK) {
        print_error("unexpected error: %s\n", err.msg);
        fail();
    }
    return doc;
}


static void
load_err(const char *text, const char *expected)
{
    ds_err_t        err;
    ds_yaml_doc_t  *doc;

    assert_int_equal(ds_yaml_load("c.yml", text, strlen(text), &doc, &err),
                     DS_EINVAL);
    assert_null(doc);
    assert_string_equal(err.msg, expected);
}


static void
where_is(const ds_yaml_doc_t *doc, const cJSON *node, int key,
    const char *expected)
{
    char  buf[256];

    ds_yaml_where(doc, node, key, buf, sizeof(buf));
    assert_string_equal(buf, expected);
}


static void
test_places_and_text(void **state)
{
    const cJSON    *root, *local, *mode;
    ds_yaml_doc_t  *doc;

    (void) state;

    doc = load_ok("domain: a.b\n"
                  "api_socket_mode: 0660\n"
                  "backends:\n"
                  "  local:\n"
                  "    enabled: yes\n"
                  "    nvidia_smi:\n"
                  "    token: \"0123\"\n");
    root = ds_yaml_root(doc);
    assert_true(cJSON_IsObject(root));

    mode = cJSON_GetObjectItemCaseSensitive(root, "api_socket_mode");
    assert_true(cJSON_IsNumber(mode));
    assert_string_equal(ds_yaml_text(doc, mode), "0660");
    where_is(doc, mode, 0, "c.yml:2:18: ");
    where_is(doc, mode, 1, "c.yml:2:1: ");

    local = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(root, "backends"), "local");
    where_is(doc, local, 1, "c.yml:4:3: ");
    assert_null(ds_yaml_text(doc, local));

    assert_string_equal(ds_yaml_text(doc,
        cJSON_GetObjectItemCaseSensitive(local, "enabled")), "yes");
    assert_string_equal(ds_yaml_text(doc,
        cJSON_GetObjectItemCaseSensitive(local, "nvidia_smi")), "");
    assert_string_equal(ds_yaml_text(doc,
        cJSON_GetObjectItemCaseSensitive(local, "token")), "0123");
    assert_null(ds_yaml_raw(doc,
        cJSON_GetObjectItemCaseSensitive(local, "token")));

    /* a node not from the file: the file alone */
    where_is(doc, NULL, 0, "c.yml: ");

    ds_yaml_free(doc);
}


static void
test_empty(void **state)
{
    ds_yaml_doc_t  *doc;

    (void) state;

    doc = load_ok("");
    assert_null(ds_yaml_root(doc));
    ds_yaml_free(doc);

    doc = load_ok("# only a comment\n");
    assert_null(ds_yaml_root(doc));
    ds_yaml_free(doc);

    doc = load_ok("~\n");
    assert_true(cJSON_IsNull(ds_yaml_root(doc)));
    ds_yaml_free(doc);
}


static void
test_refusals(void **state)
{
    (void) state;

    load_err("a: 1\na: 2\n",
             "c.yml:2:1: duplicate key \"a\" (first at line 1)");
    load_err("a: 1\n\tb: 2\n",
             "c.yml:2:1: tabs cannot indent YAML: use spaces");
    load_err("a: [1\n", "c.yml:2:1: did not find expected ',' or ']' "
             "(while parsing a flow sequence at line 1)");
    load_err("a: !!binary aGk=\n",
             "c.yml:1:4: unsupported YAML tag \"!!binary\"");
    load_err("a: 1\n---\nb: 2\n",
             "c.yml:2:1: more than one YAML document in the file");
    load_err("a: *x\n",
             "c.yml:1:4: unknown alias \"*x\": no anchor \"&x\" before it");
}


static void
test_file(void **state)
{
    FILE           *f;
    char            path[] = "/tmp/test_yaml_XXXXXX";
    ds_err_t        err;
    ds_yaml_doc_t  *doc;
    int             fd;

    (void) state;

    assert_int_equal(ds_yaml_load_file("/nonexistent/c.yml", 1024, &doc,
                                       &err), DS_EINVAL);
    assert_string_equal(err.msg,
                        "/nonexistent/c.yml: No such file or directory");

    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    fputs("a: 1\nb: [x]\n", f);
    fclose(f);

    assert_int_equal(ds_yaml_load_file(path, 1024, &doc, &err), DS_OK);
    assert_true(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(
        ds_yaml_root(doc), "b")));
    ds_yaml_free(doc);

    /* one byte short of the file */
    assert_int_equal(ds_yaml_load_file(path, 11, &doc, &err), DS_EINVAL);
    assert_non_null(strstr(err.msg, ":1:1: file too large"));

    remove(path);
}


int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_places_and_text),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_file),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
