/*
 * Unit tests of SSH fleet files (common/ds_fleet.c): good files and
 * their normalized JSON (each host resolved from ssh_config's fields and
 * the fleet's), the round trip through the daemon's validator, the
 * typed view, and bad files, each with its exact message: the place and
 * the field's path ("FILE:LINE:COL: PATH: message"), or in JSON the
 * path alone.
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


static cJSON *
parse_ok(const char *yaml)
{
    int       rc;
    cJSON    *out;
    ds_err_t  err;

    err.msg[0] = '\0';
    rc = ds_fleet_parse_yaml("fleet.dstack.yml", yaml, strlen(yaml), &out,
                             &err);
    if (rc != DS_OK) {
        print_error("unexpected error: %s\n", err.msg);
    }
    assert_int_equal(rc, DS_OK);
    assert_non_null(out);

    return out;
}


/* the file gives exactly `expected` (compact JSON), and so does its
   normalized form when validated again */
static void
normalizes_to(const char *yaml, const char *expected)
{
    char      *s, *s2;
    cJSON     *out, *again;
    ds_err_t   err;

    out = parse_ok(yaml);
    s = cJSON_PrintUnformatted(out);
    assert_string_equal(s, expected);

    err.msg[0] = '\0';
    assert_int_equal(ds_fleet_validate_json(out, &again, &err), DS_OK);
    s2 = cJSON_PrintUnformatted(again);
    assert_string_equal(s2, s);

    cJSON_free(s);
    cJSON_free(s2);
    cJSON_Delete(out);
    cJSON_Delete(again);
}


static void
parse_err(const char *yaml, const char *expected)
{
    int       rc;
    cJSON    *out;
    ds_err_t  err;

    rc = ds_fleet_parse_yaml("fleet.dstack.yml", yaml, strlen(yaml), &out,
                             &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_null(out);
    assert_string_equal(err.msg, expected);
}


static void
json_err(const char *json, const char *expected)
{
    int       rc;
    cJSON    *in, *out;
    ds_err_t  err;

    in = cJSON_Parse(json);
    assert_non_null(in);

    rc = ds_fleet_validate_json(in, &out, &err);
    assert_int_equal(rc, DS_EINVAL);
    assert_null(out);
    assert_string_equal(err.msg, expected);

    cJSON_Delete(in);
}


/* ---- good files -------------------------------------------------------- */

static void
test_minimal(void **state)
{
    (void) state;

    normalizes_to(
        "type: fleet\n"
        "ssh_config:\n"
        "  user: ubuntu\n"
        "  identity_file: ~/.ssh/id_rsa\n"
        "  hosts: [10.0.0.1]\n",
        "{\"type\":\"fleet\",\"name\":null,\"placement\":\"any\","
        "\"env\":{},\"blocks\":1,"
        "\"ssh_config\":{\"user\":\"ubuntu\",\"port\":22,"
        "\"identity_file\":\"~/.ssh/id_rsa\",\"proxy_jump\":null,"
        "\"hosts\":[{\"hostname\":\"10.0.0.1\",\"port\":22,"
        "\"user\":\"ubuntu\",\"identity_file\":\"~/.ssh/id_rsa\","
        "\"proxy_jump\":null,\"internal_ip\":null,\"blocks\":1}]}}");
}


static const char  full_yaml[] =
    "type: fleet\n"
    "name: my-fleet\n"
    "placement: cluster\n"
    "env: [A=1, B]\n"
    "blocks: auto\n"
    "ssh_config:\n"
    "  user: ubuntu\n"
    "  port: 2200\n"
    "  identity_file: ~/.ssh/id_rsa\n"
    "  proxy_jump: {hostname: 1.2.3.4}\n"
    "  hosts:\n"
    "    - 3.255.177.51\n"
    "    - hostname: 3.255.177.52\n"
    "      port: 2222\n"
    "      user: other\n"
    "      identity_file: ~/.ssh/other\n"
    "      proxy_jump: {hostname: jump.example.com, port: 22, user: j}\n"
    "      internal_ip: 10.0.0.5\n"
    "      blocks: 4\n"
    "    - \"fe80::1\"\n";


/* every way a host takes its fields from ssh_config's and the fleet's */
static void
test_inheritance(void **state)
{
    (void) state;

    normalizes_to(full_yaml,
        "{\"type\":\"fleet\",\"name\":\"my-fleet\",\"placement\":\"cluster\","
        "\"env\":{\"A\":\"1\",\"B\":null},\"blocks\":\"auto\","
        "\"ssh_config\":{\"user\":\"ubuntu\",\"port\":2200,"
        "\"identity_file\":\"~/.ssh/id_rsa\","
        "\"proxy_jump\":{\"hostname\":\"1.2.3.4\",\"port\":22,"
        "\"user\":null,\"identity_file\":null},"
        "\"hosts\":["
        "{\"hostname\":\"3.255.177.51\",\"port\":2200,\"user\":\"ubuntu\","
        "\"identity_file\":\"~/.ssh/id_rsa\","
        "\"proxy_jump\":{\"hostname\":\"1.2.3.4\",\"port\":22,"
        "\"user\":\"ubuntu\",\"identity_file\":\"~/.ssh/id_rsa\"},"
        "\"internal_ip\":null,\"blocks\":\"auto\"},"
        "{\"hostname\":\"3.255.177.52\",\"port\":2222,\"user\":\"other\","
        "\"identity_file\":\"~/.ssh/other\","
        "\"proxy_jump\":{\"hostname\":\"jump.example.com\",\"port\":22,"
        "\"user\":\"j\",\"identity_file\":\"~/.ssh/other\"},"
        "\"internal_ip\":\"10.0.0.5\",\"blocks\":4},"
        "{\"hostname\":\"fe80::1\",\"port\":2200,\"user\":\"ubuntu\","
        "\"identity_file\":\"~/.ssh/id_rsa\","
        "\"proxy_jump\":{\"hostname\":\"1.2.3.4\",\"port\":22,"
        "\"user\":\"ubuntu\",\"identity_file\":\"~/.ssh/id_rsa\"},"
        "\"internal_ip\":null,\"blocks\":\"auto\"}]}}");

    /* the hosts alone may carry what ssh_config leaves out; env as a
       mapping; the same host on another port is another host */
    normalizes_to(
        "type: fleet\n"
        "env: {K: v}\n"
        "blocks: 2\n"
        "ssh_config:\n"
        "  hosts:\n"
        "    - {hostname: gpu-1.internal, user: a_b, identity_file: k1}\n"
        "    - {hostname: gpu-1.internal, port: 2222, user: c, "
        "identity_file: k2, blocks: 1}\n",
        "{\"type\":\"fleet\",\"name\":null,\"placement\":\"any\","
        "\"env\":{\"K\":\"v\"},\"blocks\":2,"
        "\"ssh_config\":{\"user\":null,\"port\":22,\"identity_file\":null,"
        "\"proxy_jump\":null,\"hosts\":["
        "{\"hostname\":\"gpu-1.internal\",\"port\":22,\"user\":\"a_b\","
        "\"identity_file\":\"k1\",\"proxy_jump\":null,"
        "\"internal_ip\":null,\"blocks\":2},"
        "{\"hostname\":\"gpu-1.internal\",\"port\":2222,\"user\":\"c\","
        "\"identity_file\":\"k2\",\"proxy_jump\":null,"
        "\"internal_ip\":null,\"blocks\":1}]}}");
}


static void
test_typed(void **state)
{
    cJSON       *out;
    ds_err_t     err;
    ds_fleet_t   fleet;

    (void) state;

    out = parse_ok(full_yaml);
    assert_int_equal(ds_fleet_from_json(out, &fleet, &err), DS_OK);
    cJSON_Delete(out);

    assert_string_equal(fleet.name, "my-fleet");
    assert_int_equal(fleet.placement, DS_FLEET_PLACEMENT_CLUSTER);
    assert_int_equal(fleet.blocks, DS_FLEET_BLOCKS_AUTO);
    assert_int_equal(fleet.n_env, 2);
    assert_string_equal(fleet.env[0].name, "A");
    assert_string_equal(fleet.env[0].value, "1");
    assert_null(fleet.env[1].value);

    assert_int_equal(fleet.n_hosts, 3);
    assert_string_equal(fleet.hosts[0].hostname, "3.255.177.51");
    assert_int_equal(fleet.hosts[0].port, 2200);
    assert_string_equal(fleet.hosts[0].user, "ubuntu");
    assert_string_equal(fleet.hosts[0].identity_file, "~/.ssh/id_rsa");
    assert_null(fleet.hosts[0].internal_ip);
    assert_int_equal(fleet.hosts[0].blocks, DS_FLEET_BLOCKS_AUTO);
    assert_non_null(fleet.hosts[0].proxy_jump);
    assert_string_equal(fleet.hosts[0].proxy_jump->hostname, "1.2.3.4");
    assert_int_equal(fleet.hosts[0].proxy_jump->port, 22);
    assert_string_equal(fleet.hosts[0].proxy_jump->user, "ubuntu");

    assert_int_equal(fleet.hosts[1].port, 2222);
    assert_string_equal(fleet.hosts[1].internal_ip, "10.0.0.5");
    assert_int_equal(fleet.hosts[1].blocks, 4);
    assert_string_equal(fleet.hosts[1].proxy_jump->user, "j");
    assert_string_equal(fleet.hosts[1].proxy_jump->identity_file,
                        "~/.ssh/other");
    assert_string_equal(fleet.hosts[2].hostname, "fe80::1");

    ds_fleet_free(&fleet);

    /* no proxy jump, fixed blocks, the server names it */
    out = parse_ok("type: fleet\nssh_config: {user: u, identity_file: k, "
                   "hosts: [a1]}\n");
    assert_int_equal(ds_fleet_from_json(out, &fleet, &err), DS_OK);
    cJSON_Delete(out);
    assert_null(fleet.name);
    assert_int_equal(fleet.placement, DS_FLEET_PLACEMENT_ANY);
    assert_int_equal(fleet.blocks, 1);
    assert_null(fleet.hosts[0].proxy_jump);
    assert_int_equal(fleet.hosts[0].blocks, 1);
    ds_fleet_free(&fleet);
}


static char *
fake_getenv(const char *name)
{
    return strcmp(name, "B") == 0 ? "from-cli" : NULL;
}


static void
test_resolve_env(void **state)
{
    cJSON       *out;
    ds_err_t     err;
    const char  *ov[] = { "C=3", NULL };

    (void) state;

    out = parse_ok(full_yaml);
    assert_int_equal(ds_fleet_resolve_env(out, ov, fake_getenv, &err),
                     DS_OK);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(out, "env"),
                                            "B")->valuestring, "from-cli");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(out, "env"),
                                            "C")->valuestring, "3");
    cJSON_Delete(out);

    out = parse_ok("type: fleet\nenv: [NOPE]\nssh_config: {user: u, "
                   "identity_file: k, hosts: [a1]}\n");
    assert_int_equal(ds_fleet_resolve_env(out, NULL, fake_getenv, &err),
                     DS_EINVAL);
    assert_string_equal(err.msg, "environment variable \"NOPE\" is not set");
    cJSON_Delete(out);
}


/* ---- bad files ----------------------------------------------------------- */

#define HEAD  "type: fleet\nssh_config:\n  user: ubuntu\n" \
              "  identity_file: ~/.ssh/id_rsa\n  hosts:\n"

static const struct {
    const char  *yaml;
    const char  *err;
} bad[] = {
    { HEAD "    - 10.0.0.1\n    - {hostname: 10.0.0.2, port: 70000}\n",
      "fleet.dstack.yml:7:34: ssh_config.hosts[1].port: must be 1..65535, "
      "got 70000" },
    { HEAD "    - \"-oProxyCommand=x\"\n",
      "fleet.dstack.yml:6:7: ssh_config.hosts[0]: invalid hostname "
      "\"-oProxyCommand=x\": must not start with \"-\" or \".\"" },
    { HEAD "    - user@host\n",
      "fleet.dstack.yml:6:7: ssh_config.hosts[0]: invalid hostname "
      "\"user@host\": expected a DNS name or an IP address (no spaces, "
      "\"@\" or \":\")" },
    { HEAD "    - 10.0.0.1\n    - {hostname: 10.0.0.1, port: 22}\n",
      "fleet.dstack.yml:7:7: ssh_config.hosts[1]: duplicate host "
      "\"10.0.0.1\" port 22 (the same as hosts[0])" },
    { HEAD "    - {hostname: a1, prot: 22}\n",
      "fleet.dstack.yml:6:22: ssh_config.hosts[0]: unknown key \"prot\" "
      "(did you mean \"port\"?)" },
    { HEAD "    - {hostname: a1, internal_ip: 10.0.0.300}\n",
      "fleet.dstack.yml:6:35: ssh_config.hosts[0].internal_ip: invalid "
      "internal_ip \"10.0.0.300\": expected an IPv4 or IPv6 address" },
    { HEAD "    - {hostname: a1, blocks: 0}\n",
      "fleet.dstack.yml:6:30: ssh_config.hosts[0].blocks: expected an "
      "integer from 1 to 1024, got 0" },
    { HEAD "    - {hostname: a1, blocks: many}\n",
      "fleet.dstack.yml:6:30: ssh_config.hosts[0].blocks: invalid blocks "
      "\"many\": expected an integer >= 1 or \"auto\"" },
    { HEAD "    - {hostname: a1, user: Root}\n",
      "fleet.dstack.yml:6:28: ssh_config.hosts[0].user: invalid user "
      "\"Root\": expected lowercase letters, digits, \"_\", \".\" or \"-\", "
      "starting with a letter or \"_\"" },
    { HEAD "    - {hostname: a1, user: -root}\n",
      "fleet.dstack.yml:6:28: ssh_config.hosts[0].user: invalid user "
      "\"-root\": expected lowercase letters, digits, \"_\", \".\" or \"-\", "
      "starting with a letter or \"_\"" },
    { HEAD "    - {hostname: a1, proxy_jump: {port: 22}}\n",
      "fleet.dstack.yml:6:34: ssh_config.hosts[0].proxy_jump: missing "
      "required field \"hostname\"" },
    { HEAD "    - [a1]\n",
      "fleet.dstack.yml:6:7: ssh_config.hosts[0]: expected a hostname or a "
      "mapping (hostname, port, user, ...), got a list" },
    { "type: fleet\nnodes: 2\nresources: {gpu: 1}\n",
      "fleet.dstack.yml:2:1: \"nodes\" is not supported: only SSH fleets "
      "(ssh_config) are" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, hosts: [a1]}\n"
      "spot_policy: spot\n",
      "fleet.dstack.yml:3:1: \"spot_policy\" is not supported: only SSH "
      "fleets (ssh_config) are" },
    { "type: fleet\nname: x\nssh_config: {hosts: [a1]}\n",
      "fleet.dstack.yml:2:7: name: invalid fleet name \"x\": expected 2 to "
      "41 lowercase letters, digits or \"-\", starting with a letter" },
    { "type: fleet\nname: ok-fleet\n",
      "fleet.dstack.yml:1:1: missing required field \"ssh_config\" (only SSH "
      "fleets are supported)" },
    { "type: fleet\nssh_config: {identity_file: k, hosts: [a1, b1, "
      "{hostname: c1, user: u}]}\n",
      "fleet.dstack.yml:2:40: ssh_config.hosts[0]: no user (set "
      "ssh_config.user or the host's)" },
    { "type: fleet\nssh_config:\n  user: u\n  hosts:\n    - a1\n    - b1\n",
      "fleet.dstack.yml:5:7: ssh_config.hosts[0]: no identity_file (set "
      "ssh_config.identity_file or the host's)" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, hosts: []}\n",
      "fleet.dstack.yml:2:48: ssh_config.hosts: expected at least one "
      "host" },
    { "type: fleet\nssh_config: {user: u, identity_file: k}\n",
      "fleet.dstack.yml:2:13: ssh_config: missing required field "
      "\"hosts\"" },
    { "type: fleet\nplacement: clustr\nssh_config: {user: u, "
      "identity_file: k, hosts: [a1]}\n",
      "fleet.dstack.yml:2:12: placement: invalid placement \"clustr\": "
      "expected any or cluster (did you mean \"cluster\"?)" },
    { "type: flet\n",
      "fleet.dstack.yml:1:7: type: unknown type \"flet\" (did you mean "
      "\"fleet\"?)" },
    { "name: abc\n",
      "fleet.dstack.yml:1:1: missing required field \"type\" (expected "
      "\"type: fleet\")" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, hosts: [a1], "
      "ssh_key: x}\n",
      "fleet.dstack.yml:2:54: ssh_config: \"ssh_key\" is not supported: set "
      "\"identity_file\"" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, hots: [a1]}\n",
      "fleet.dstack.yml:2:41: ssh_config: unknown key \"hots\" (did you "
      "mean \"hosts\"?)" },
    { "type: fleet\nenv: [1BAD]\nssh_config: {user: u, identity_file: k, "
      "hosts: [a1]}\n",
      "fleet.dstack.yml:2:7: env[0]: invalid environment variable \"1BAD\": "
      "expected NAME=VALUE or NAME" },
    { "type: fleet\nblocks: -1\nssh_config: {user: u, identity_file: k, "
      "hosts: [a1]}\n",
      "fleet.dstack.yml:2:9: blocks: expected an integer from 1 to 1024, "
      "got -1" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, hosts: "
      "[\"1:2\"]}\n",
      "fleet.dstack.yml:2:49: ssh_config.hosts[0]: invalid hostname \"1:2\": "
      "\":\" is only for IPv6 addresses" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, port: 0, "
      "hosts: [a1]}\n",
      "fleet.dstack.yml:2:47: ssh_config.port: must be 1..65535, got 0" },
    { "type: fleet\nssh_config: {user: u, identity_file: k, hosts: [a1], "
      "proxy_jump: {hostname: \"j k\"}}\n",
      "fleet.dstack.yml:2:77: ssh_config.proxy_jump.hostname: invalid "
      "hostname \"j k\": expected a DNS name or an IP address (no spaces, "
      "\"@\" or \":\")" },
    { "\n# nothing\n",
      "fleet.dstack.yml:1:1: empty file: expected a fleet configuration "
      "(\"type: fleet\", \"ssh_config\", ...)" },
    { "type: fleet\ntype: fleet\n",
      "fleet.dstack.yml:2:1: duplicate key \"type\" (first at line 1)" },
};


static void
test_bad(void **state)
{
    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        print_message("bad[%zu]\n", i);
        parse_err(bad[i].yaml, bad[i].err);
    }
}


static void
test_too_many_hosts(void **state)
{
    int       i;
    char     *yaml;
    size_t    n;

    (void) state;

    yaml = malloc(64 * 1024);
    assert_non_null(yaml);
    n = (size_t) sprintf(yaml, "type: fleet\nssh_config:\n  user: u\n"
                         "  identity_file: k\n  hosts:\n");
    for (i = 0; i <= DS_FLEET_HOSTS_MAX; i++) {
        n += (size_t) sprintf(yaml + n, "    - h%d\n", i);
    }

    parse_err(yaml, "fleet.dstack.yml:6:5: ssh_config.hosts: too many hosts "
              "(more than 256)");
    free(yaml);
}


/* ---- the daemon's side ---------------------------------------------------- */

static void
test_json_paths(void **state)
{
    (void) state;

    json_err("[]", "spec: expected a mapping (a fleet configuration), got "
             "a list");
    json_err("{\"type\":\"fleet\",\"ssh_config\":{\"user\":\"u\","
             "\"identity_file\":\"k\",\"hosts\":[\"a1\","
             "{\"hostname\":\"b1\",\"port\":70000}]}}",
             "spec.ssh_config.hosts[1].port: must be 1..65535, got 70000");
    json_err("{\"type\":\"fleet\",\"ssh_config\":{\"user\":\"u\","
             "\"hosts\":[\"a1\",\"b1\"]}}",
             "spec.ssh_config.hosts[0]: no identity_file (set "
             "ssh_config.identity_file or the host's)");
    json_err("{\"type\":\"fleet\",\"nodes\":1}",
             "spec: \"nodes\" is not supported: only SSH fleets (ssh_config) "
             "are");
    json_err("{\"type\":\"service\"}",
             "spec.type: type \"service\" is not a fleet: expected \"fleet\"");
    json_err("{\"type\":\"fleet\",\"ssh_config\":{\"user\":\"u\","
             "\"identity_file\":\"k\",\"hosts\":[{\"hostname\":\"a1\","
             "\"port\":\"22\"}]}}",
             "spec.ssh_config.hosts[0].port: expected an integer, got a "
             "string");
    json_err("{\"type\":\"fleet\",\"ssh_config\":{\"user\":\"u\","
             "\"identity_file\":\"k\",\"hosts\":[\"a1\"],\"hosts\":[]}}",
             "spec.ssh_config: duplicate key \"hosts\"");
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_inheritance),
        cmocka_unit_test(test_typed),
        cmocka_unit_test(test_resolve_env),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_too_many_hosts),
        cmocka_unit_test(test_json_paths),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
