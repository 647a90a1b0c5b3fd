/*
 * Conformance with dstack's configuration schema: every field that
 * dstack's service and fleet configurations have (t/spec/dstack-fields.txt,
 * a checked-in copy of the field list with where it came from) is, in a
 * minimal document, accepted (supported), accepted with a warning that
 * names it (ignored), or refused with a message that names it (refused):
 * never "unknown key", never silently dropped.
 *
 *   KIND FIELD VERDICT VALUE
 *
 * KIND is where the field is: service, service.resources,
 * service.resources.cpu, service.resources.gpu, fleet, fleet.ssh_config,
 * fleet.ssh_config.hosts.  VALUE is YAML on one line; "\n" in it starts
 * another top-level line (what the field needs besides, e.g. replicas
 * for scaling).
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ds_fleet.h"
#include "ds_spec.h"


static const char  *spec_dir = "t/spec";


/* VALUE with "\n" (two characters) as new lines */
static void
unescape(const char *v, char *out, size_t n)
{
    size_t  o = 0;

    for ( /* void */ ; *v && o + 1 < n; v++) {
        if (v[0] == '\\' && v[1] == 'n') {
            out[o++] = '\n';
            v++;
        } else {
            out[o++] = *v;
        }
    }
    out[o] = '\0';
}


/*
 * A minimal valid document with FIELD set to VALUE where KIND says; a
 * field the minimal document has already is replaced, not repeated.
 * extra: what follows a "\n" in the value, as top-level lines.
 */
static void
build(const char *kind, const char *field, const char *value, char *doc,
    size_t n)
{
    char         v[512], *extra;
    const char  *type, *port, *cmds;

    unescape(value, v, sizeof(v));
    extra = strchr(v, '\n');
    if (extra != NULL) {
        *extra++ = '\0';
    }

    if (strncmp(kind, "service", 7) == 0) {
        type = strcmp(field, "type") == 0 && strcmp(kind, "service") == 0
               ? v : "service";
        port = strcmp(field, "port") == 0 && strcmp(kind, "service") == 0
               ? v : "8000";
        cmds = strcmp(field, "commands") == 0 && strcmp(kind, "service") == 0
               ? v : "[echo hi]";
        snprintf(doc, n, "type: %s\nport: %s\ncommands: %s\n", type, port,
                 cmds);

        if (strcmp(kind, "service") == 0) {
            if (strcmp(field, "type") != 0 && strcmp(field, "port") != 0
                && strcmp(field, "commands") != 0)
            {
                snprintf(doc + strlen(doc), n - strlen(doc), "%s: %s\n",
                         field, v);
            }
        } else if (strcmp(kind, "service.resources") == 0) {
            snprintf(doc + strlen(doc), n - strlen(doc),
                     "resources:\n  %s: %s\n", field, v);
        } else {
            snprintf(doc + strlen(doc), n - strlen(doc),
                     "resources:\n  %s:\n    %s: %s\n",
                     kind + strlen("service.resources."), field, v);
        }

    } else if (strcmp(kind, "fleet") == 0) {
        snprintf(doc, n, "type: %s\n", strcmp(field, "type") == 0 ? v
                                                                   : "fleet");
        if (strcmp(field, "ssh_config") == 0) {
            snprintf(doc + strlen(doc), n - strlen(doc), "ssh_config: %s\n",
                     v);
        } else {
            snprintf(doc + strlen(doc), n - strlen(doc), "ssh_config:\n"
                     "  user: u\n  identity_file: ~/.ssh/id\n"
                     "  hosts: [10.0.0.1]\n");
            if (strcmp(field, "type") != 0) {
                snprintf(doc + strlen(doc), n - strlen(doc), "%s: %s\n",
                         field, v);
            }
        }

    } else if (strcmp(kind, "fleet.ssh_config") == 0) {
        snprintf(doc, n, "type: fleet\nssh_config:\n  user: %s\n"
                 "  identity_file: %s\n  hosts: %s\n",
                 strcmp(field, "user") == 0 ? v : "u",
                 strcmp(field, "identity_file") == 0 ? v : "~/.ssh/id",
                 strcmp(field, "hosts") == 0 ? v : "[10.0.0.1]");
        if (strcmp(field, "user") != 0 && strcmp(field, "identity_file") != 0
            && strcmp(field, "hosts") != 0)
        {
            snprintf(doc + strlen(doc), n - strlen(doc), "  %s: %s\n",
                     field, v);
        }

    } else {
        snprintf(doc, n, "type: fleet\nssh_config:\n  user: u\n"
                 "  identity_file: ~/.ssh/id\n  hosts:\n"
                 "    - hostname: %s\n",
                 strcmp(field, "hostname") == 0 ? v : "10.0.0.1");
        if (strcmp(field, "hostname") != 0) {
            snprintf(doc + strlen(doc), n - strlen(doc), "      %s: %s\n",
                     field, v);
        }
    }

    if (extra != NULL) {
        snprintf(doc + strlen(doc), n - strlen(doc), "%s\n", extra);
    }
}


/* the field's path in messages: "resources.gpu.vendor", "tags" */
static void
field_path(const char *kind, const char *field, char *out, size_t n)
{
    const char  *dot;

    dot = strchr(kind, '.');
    if (dot == NULL) {
        snprintf(out, n, "%s", field);
    } else if (strcmp(dot + 1, "ssh_config.hosts") == 0) {
        snprintf(out, n, "ssh_config.hosts[0].%s", field);
    } else {
        snprintf(out, n, "%s.%s", dot + 1, field);
    }
}


/* 0 when the verdict holds, else 1 with a message */
static int
check(const char *kind, const char *field, const char *verdict,
    const char *value)
{
    int           rc, fleet, named;
    char          doc[2048], path[160], key[200], quoted[200];
    cJSON        *out = NULL, *w;
    const cJSON  *it;
    ds_err_t      err;

    build(kind, field, value, doc, sizeof(doc));
    field_path(kind, field, path, sizeof(path));
    snprintf(key, sizeof(key), "%s: ignored: ", path);
    snprintf(quoted, sizeof(quoted), "\"%s\"", field);

    w = cJSON_CreateArray();
    assert_non_null(w);
    memset(&err, 0, sizeof(err));

    fleet = strncmp(kind, "fleet", 5) == 0;
    rc = fleet ? ds_fleet_parse_yaml("f.dstack.yml", doc, strlen(doc), &out,
                                     &err)
               : ds_spec_parse_yaml_warn("f.dstack.yml", doc, strlen(doc),
                                         &out, w, &err);
    cJSON_Delete(out);

    named = 0;
    cJSON_ArrayForEach(it, w) {
        named += strstr(it->valuestring, key) != NULL;
    }

    if (strcmp(verdict, "supported") == 0) {
        if (rc != DS_OK || cJSON_GetArraySize(w) != 0) {
            print_error("%s %s: supported, but %s%s\n%s", kind, field,
                        rc != DS_OK ? err.msg : "warned: ",
                        rc != DS_OK ? "" : w->child->valuestring, doc);
            rc = -1;
        }

    } else if (strcmp(verdict, "ignored") == 0) {
        if (rc != DS_OK || named == 0) {
            print_error("%s %s: ignored, but %s\n%s", kind, field,
                        rc != DS_OK ? err.msg : "no warning names it", doc);
            rc = -1;
        }

    } else if (strcmp(verdict, "refused") == 0) {
        if (rc != DS_EINVAL || strstr(err.msg, "unknown key") != NULL
            || (strstr(err.msg, quoted) == NULL
                && strstr(err.msg, path) == NULL))
        {
            print_error("%s %s: refused by name, but %s\n%s", kind, field,
                        rc == DS_OK ? "accepted" : err.msg, doc);
            rc = -1;
        }

    } else {
        print_error("%s %s: unknown verdict \"%s\"\n", kind, field,
                    verdict);
        rc = -1;
    }

    cJSON_Delete(w);
    return rc == -1;
}


static void
test_dstack_fields(void **state)
{
    int     n, failed, kinds;
    char    path[512], line[1024], kind[64], field[64], verdict[16];
    char    seen[8][64];
    FILE   *f;
    int     off, i;

    (void) state;

    snprintf(path, sizeof(path), "%s/dstack-fields.txt", spec_dir);
    f = fopen(path, "r");
    if (f == NULL) {
        print_error("cannot read %s\n", path);
        fail();
    }

    n = failed = kinds = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '#' || line[0] == '\0') {
            continue;
        }
        assert_int_equal(sscanf(line, "%63s %63s %15s %n", kind, field,
                                verdict, &off), 3);
        failed += check(kind, field, verdict, line + off);
        n++;

        for (i = 0; i < kinds && strcmp(seen[i], kind) != 0; i++) {
            /* void */
        }
        if (i == kinds && kinds < 8) {
            snprintf(seen[kinds++], sizeof(seen[0]), "%s", kind);
        }
    }
    fclose(f);

    print_message("%d dstack fields in %d places\n", n, kinds);
    assert_int_equal(failed, 0);

    /* the list is dstack's whole: a truncated copy would pass too */
    assert_true(n >= 100);
    assert_int_equal(kinds, 7);
}


int
main(int argc, char **argv)
{
    const char  *dir;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dstack_fields),
    };

    dir = argc > 1 ? argv[1] : getenv("T_SPEC_DIR");
    if (dir) {
        spec_dir = dir;
    }

    return cmocka_run_group_tests(tests, NULL, NULL);
}
