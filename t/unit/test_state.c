/*
 * Unit tests of the shared state: the codec (round trips, and refusal of
 * truncated, garbage and out-of-limit input), SHA-256 and tokens,
 * addresses and names, and the LMDB writer and reader on a real
 * environment in a temporary directory.
 *
 * The writer and the reader of one environment live in different
 * processes in production (controld, nginx workers); LMDB forbids
 * opening one environment twice in a process, so the tests that need
 * both run the writer's part in a forked child.
 */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "ds_state.h"


#define S(s)    ((ds_str_t) { (s), (uint32_t) (sizeof(s) - 1) })

static char  state_dir[64];


/* ---- helpers ----------------------------------------------------------- */

static int
str_is(ds_str_t s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.data, c, s.len) == 0;
}


static void
make_service(ds_service_t *svc)
{
    ds_service_init(svc);

    svc->name = S("llama");
    svc->model = S("meta-llama/Llama-3-8B");
    svc->model_prefix = S("/v1");
    svc->model_format = DS_MODEL_TGI;
    svc->uid = 42;
    svc->slot = 7;
    svc->flags = DS_SERVICE_AUTH | DS_SERVICE_HTTPS;
    svc->max_body_size = 1234567;
    svc->read_timeout_ms = 60000;
    svc->connect_timeout_ms = 2000;

    svc->n_rate_limits = 2;
    svc->rate_limits[0].prefix = S("/");
    svc->rate_limits[0].key_type = DS_RL_KEY_IP;
    svc->rate_limits[0].rps_milli = 2500;
    svc->rate_limits[0].burst = 3;
    svc->rate_limits[1].prefix = S("/v1/chat");
    svc->rate_limits[1].header = S("X-Api-Key");
    svc->rate_limits[1].key_type = DS_RL_KEY_HEADER;
    svc->rate_limits[1].rps_milli = 100;
    svc->rate_limits[1].burst = 0;
}


static void
make_replica(ds_replica_t *r, const char *addr, uint8_t state)
{
    memset(r, 0, sizeof(*r));
    assert_int_equal(ds_replica_parse_addr(r, addr, strlen(addr)), DS_OK);
    r->state = state;
    r->weight = 1;
    r->version = 3;
    r->uid = 999;                       /* the writer ignores these */
    r->slot = 12345;
}


/* every proper prefix of a valid record must be refused, with a reason */
typedef int (*decode_fn)(const void *data, size_t len, ds_err_t *err);

static void
assert_truncations_fail(const uint8_t *data, size_t len, decode_fn decode)
{
    size_t    i;
    uint8_t  *copy;
    ds_err_t  err;

    for (i = 0; i < len; i++) {
        /* an exact-size heap copy lets ASan/valgrind catch overreads */
        copy = malloc(i ? i : 1);
        assert_non_null(copy);
        memcpy(copy, data, i);

        err.msg[0] = '\0';
        assert_int_equal(decode(copy, i, &err), DS_EINVAL);
        assert_true(err.msg[0] != '\0');

        free(copy);
    }
}


static int
decode_service(const void *data, size_t len, ds_err_t *err)
{
    ds_service_t  svc;

    return ds_service_decode(data, len, &svc, err);
}


static int
decode_replicas(const void *data, size_t len, ds_err_t *err)
{
    ds_replica_set_t  set;

    return ds_replicas_decode(data, len, &set, err);
}


static int
decode_token(const void *data, size_t len, ds_err_t *err)
{
    ds_token_t  tok;

    return ds_token_decode(data, len, &tok, err);
}


static int
decode_member(const void *data, size_t len, ds_err_t *err)
{
    ds_member_t  m;

    return ds_member_decode(data, len, &m, err);
}


static int
decode_model(const void *data, size_t len, ds_err_t *err)
{
    ds_model_t  m;

    return ds_model_decode(data, len, &m, err);
}


/* a valid record with one byte changed must decode to `rc` */
static void
assert_patched(const ds_buf_t *b, size_t off, uint8_t byte, decode_fn decode,
    const char *msg)
{
    uint8_t   copy[4096];
    ds_err_t  err;

    assert_true(b->len <= sizeof(copy));
    memcpy(copy, b->data, b->len);
    copy[off] = byte;

    err.msg[0] = '\0';
    assert_int_equal(decode(copy, b->len, &err), DS_EINVAL);
    if (strstr(err.msg, msg) == NULL) {
        fail_msg("\"%s\" does not contain \"%s\"", err.msg, msg);
    }
}


static void
assert_msg(const ds_err_t *err, const char *msg)
{
    if (strstr(err->msg, msg) == NULL) {
        fail_msg("\"%s\" does not contain \"%s\"", err->msg, msg);
    }
}


/* ---- services ---------------------------------------------------------- */

static void
test_service_init(void **state)
{
    ds_service_t  svc;

    (void) state;

    ds_service_init(&svc);
    assert_int_equal(svc.max_body_size, DS_DEFAULT_MAX_BODY);
    assert_int_equal(svc.read_timeout_ms, DS_DEFAULT_READ_TIMEOUT_MS);
    assert_int_equal(svc.connect_timeout_ms, DS_DEFAULT_CONNECT_TIMEOUT_MS);
    assert_int_equal(svc.slot, DS_SLOT_NONE);
    assert_int_equal(svc.n_rate_limits, 0);
    assert_int_equal(svc.name.len, 0);
}


static void
test_service_roundtrip(void **state)
{
    ds_buf_t      b, b2;
    ds_err_t      err;
    ds_service_t  in, out;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));

    make_service(&in);
    assert_int_equal(ds_service_encode(&in, &b, &err), DS_OK);
    assert_memory_equal(b.data, "DSVC\x01\x00\x00\x00", 8);

    assert_int_equal(ds_service_decode(b.data, b.len, &out, &err), DS_OK);
    assert_true(str_is(out.name, "llama"));
    assert_true(str_is(out.model, "meta-llama/Llama-3-8B"));
    assert_true(str_is(out.model_prefix, "/v1"));
    assert_int_equal(out.model_format, DS_MODEL_TGI);
    assert_int_equal(out.uid, 42);
    assert_int_equal(out.slot, 7);
    assert_int_equal(out.flags, DS_SERVICE_AUTH | DS_SERVICE_HTTPS);
    assert_int_equal(out.max_body_size, 1234567);
    assert_int_equal(out.read_timeout_ms, 60000);
    assert_int_equal(out.connect_timeout_ms, 2000);
    assert_int_equal(out.n_rate_limits, 2);
    assert_true(str_is(out.rate_limits[0].prefix, "/"));
    assert_int_equal(out.rate_limits[0].header.len, 0);
    assert_int_equal(out.rate_limits[0].key_type, DS_RL_KEY_IP);
    assert_int_equal(out.rate_limits[0].rps_milli, 2500);
    assert_int_equal(out.rate_limits[0].burst, 3);
    assert_true(str_is(out.rate_limits[1].prefix, "/v1/chat"));
    assert_true(str_is(out.rate_limits[1].header, "X-Api-Key"));
    assert_int_equal(out.rate_limits[1].key_type, DS_RL_KEY_HEADER);
    assert_int_equal(out.rate_limits[1].rps_milli, 100);

    /* the encoding is canonical */
    assert_int_equal(ds_service_encode(&out, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    /* a minimal service, and buffer reuse */
    ds_service_init(&in);
    in.name = S("ab");
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_OK);
    assert_int_equal(ds_service_decode(b2.data, b2.len, &out, &err), DS_OK);
    assert_true(str_is(out.name, "ab"));
    assert_int_equal(out.model.len, 0);
    assert_int_equal(out.slot, DS_SLOT_NONE);

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


/* a model with affinity routing: version 2, the routing tail; its
 * model record carries the same */
static void
test_service_routing(void **state)
{
    ds_buf_t      b, b2;
    ds_err_t      err;
    ds_model_t    m, mo;
    ds_service_t  in, out;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));

    make_service(&in);
    in.routing.affinity = DS_AFFINITY_SESSION;
    in.routing.prefix_bytes = 512;
    in.routing.load_factor = 1250;
    in.routing.session_header = S("x-session-id");

    assert_int_equal(ds_service_encode(&in, &b, &err), DS_OK);
    assert_memory_equal(b.data, "DSVC\x02\x00\x00\x00", 8);
    assert_int_equal(ds_service_decode(b.data, b.len, &out, &err), DS_OK);
    assert_int_equal(out.routing.affinity, DS_AFFINITY_SESSION);
    assert_int_equal(out.routing.prefix_bytes, 512);
    assert_int_equal(out.routing.load_factor, 1250);
    assert_true(str_is(out.routing.session_header, "x-session-id"));
    assert_int_equal(out.n_rate_limits, 2);

    assert_int_equal(ds_service_encode(&out, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    /* one encoding: version 2 without an affinity is version 1's */
    assert_patched(&b, b.len - 26, 0, decode_service, "without an affinity");
    assert_patched(&b, b.len - 26, 9, decode_service, "affinity 9");
    assert_truncations_fail(b.data, b.len, decode_service);

    /* out of range, refused by the encoder */
    in.routing.load_factor = 500;
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    assert_msg(&err, "load factor 500");
    in.routing.load_factor = 1250;
    in.routing.prefix_bytes = 0;
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    in.routing.prefix_bytes = 512;
    in.routing.affinity = DS_AFFINITY_PREFIX;
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    assert_msg(&err, "session header");
    in.routing.affinity = DS_AFFINITY_NONE;
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    assert_msg(&err, "without an affinity");

    memset(&m, 0, sizeof(m));
    m.name = S("m");
    m.service = S("llama");
    m.prefix = S("/v1");
    m.routing.affinity = DS_AFFINITY_PREFIX;
    m.routing.prefix_bytes = 64;
    m.routing.load_factor = 1000;
    assert_int_equal(ds_model_encode(&m, &b2, &err), DS_OK);
    assert_memory_equal(b2.data, "DMOD\x02\x00\x00\x00", 8);
    assert_int_equal(ds_model_decode(b2.data, b2.len, &mo, &err), DS_OK);
    assert_int_equal(mo.routing.affinity, DS_AFFINITY_PREFIX);
    assert_int_equal(mo.routing.prefix_bytes, 64);
    assert_int_equal(mo.routing.load_factor, 1000);

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


static void make_token(ds_token_t *tok);


/* token budgets: a model's in its service and model records (version
 * 3, the routing tail then the budget), a token's in version 3 */
static void
test_budget_codec(void **state)
{
    ds_buf_t      b, b2;
    ds_err_t      err;
    ds_model_t    m, mo;
    ds_token_t    tin, tout;
    ds_service_t  in, out;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));

    make_service(&in);
    in.budget.rpm = 60;
    in.budget.tpm = 10000;
    in.budget.tpd = 5000000000ULL;
    in.budget.max_tokens = 512;

    assert_int_equal(ds_service_encode(&in, &b, &err), DS_OK);
    assert_memory_equal(b.data, "DSVC\x03\x00\x00\x00", 8);
    assert_int_equal(ds_service_decode(b.data, b.len, &out, &err), DS_OK);
    assert_int_equal(out.budget.rpm, 60);
    assert_int_equal(out.budget.tpm, 10000);
    assert_true(out.budget.tpd == 5000000000ULL);
    assert_int_equal(out.budget.max_tokens, 512);
    assert_int_equal(out.routing.affinity, DS_AFFINITY_NONE);
    assert_int_equal(ds_service_encode(&out, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    assert_truncations_fail(b.data, b.len, decode_service);

    /* one encoding: a version-3 record without a limit is older */
    memset(b.data + b.len - 20, 0, 16);
    assert_int_equal(ds_service_decode(b.data, b.len, &out, &err),
                     DS_EINVAL);
    assert_msg(&err, "version 3 without a budget");

    /* max_tokens only with a limit, and bounded */
    memset(&in.budget, 0, sizeof(in.budget));
    in.budget.max_tokens = 10;
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    assert_msg(&err, "max_tokens without a limit");
    in.budget.rpm = 1;
    in.budget.max_tokens = DS_BUDGET_MAX_TOKENS_MAX + 1;
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    assert_msg(&err, "max_tokens");
    in.budget.max_tokens = 0;
    in.model = S("");
    in.model_prefix = S("");
    assert_int_equal(ds_service_encode(&in, &b2, &err), DS_EINVAL);
    assert_msg(&err, "budget set without a model");

    /* a model record with routing and a budget */
    memset(&m, 0, sizeof(m));
    m.name = S("m");
    m.service = S("llama");
    m.prefix = S("/v1");
    m.routing.affinity = DS_AFFINITY_PREFIX;
    m.routing.prefix_bytes = 64;
    m.routing.load_factor = 1000;
    m.budget.tpm = 100;
    assert_int_equal(ds_model_encode(&m, &b2, &err), DS_OK);
    assert_memory_equal(b2.data, "DMOD\x03\x00\x00\x00", 8);
    assert_int_equal(ds_model_decode(b2.data, b2.len, &mo, &err), DS_OK);
    assert_int_equal(mo.routing.load_factor, 1000);
    assert_int_equal(mo.budget.tpm, 100);
    assert_int_equal(mo.budget.rpm, 0);
    assert_truncations_fail(b2.data, b2.len, decode_model);

    /* a token: version 3 with its budget; none of max_tokens */
    make_token(&tin);
    tin.n_services = 0;
    tin.budget.rpm = DS_BUDGET_UNLIMITED;
    tin.budget.tpd = 1000;
    assert_int_equal(ds_token_encode(&tin, NULL, &b, &err), DS_OK);
    assert_int_equal(b.data[4], 3);
    assert_int_equal(ds_token_decode(b.data, b.len, &tout, &err), DS_OK);
    assert_true(tout.budget.rpm == DS_BUDGET_UNLIMITED);
    assert_int_equal(tout.budget.tpm, 0);
    assert_int_equal(tout.budget.tpd, 1000);
    assert_int_equal(tout.user.len, 0);
    assert_int_equal(ds_token_encode(&tout, NULL, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    assert_truncations_fail(b.data, b.len, decode_token);
    tin.budget.max_tokens = 5;
    assert_int_equal(ds_token_encode(&tin, NULL, &b2, &err), DS_EINVAL);
    assert_msg(&err, "a token's budget has no max_tokens");

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


static void
test_service_decode_rejects(void **state)
{
    uint8_t       big[1024];
    ds_buf_t      b;
    ds_err_t      err;
    ds_service_t  svc;
    size_t        off;

    (void) state;
    memset(&b, 0, sizeof(b));

    make_service(&svc);
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_OK);

    assert_truncations_fail(b.data, b.len, decode_service);

    assert_patched(&b, 0, 'X', decode_service, "bad magic");
    assert_patched(&b, 4, 4, decode_service, "version 4 is not supported");
    /* version 2 is a version-1 record with a routing tail */
    assert_patched(&b, 4, 2, decode_service, "truncated");
    assert_patched(&b, 6, 1, decode_service, "reserved");
    assert_patched(&b, 20, 0x80, decode_service, "unknown flags 0x80");
    assert_patched(&b, 48, 9, decode_service, "model format 9 is unknown");
    assert_patched(&b, 50, 17, decode_service,
                   "17 rate limits exceed the maximum of 16");
    assert_patched(&b, 50, 3, decode_service, "truncated");
    assert_patched(&b, 50, 1, decode_service, "trailing bytes");

    assert_patched(&b, 52, 0, decode_service, "service record: name is empty");
    assert_patched(&b, 52, 64, decode_service,
                   "service record: name length 64 exceeds 63");

    /* trailing garbage */
    memcpy(big, b.data, b.len);
    big[b.len] = 0;
    assert_int_equal(ds_service_decode(big, b.len + 1, &svc, &err),
                     DS_EINVAL);
    assert_msg(&err, "1 trailing bytes");

    /* the first rate limit's key type, then its prefix length: 300 */
    off = 52 + 2 + 5 + 2 + 21 + 2 + 3;
    assert_int_equal(b.data[off], DS_RL_KEY_IP);
    assert_patched(&b, off, 7, decode_service,
                   "rate limit 0 key type 7 is unknown");

    memcpy(big, b.data, b.len);
    big[off + 10] = 300 & 0xff;
    big[off + 11] = 300 >> 8;
    assert_int_equal(ds_service_decode(big, b.len, &svc, &err), DS_EINVAL);
    assert_msg(&err, "service record: rate limit 0 prefix length 300 "
               "exceeds 255");

    /* the prefix "/" replaced by "x" */
    assert_patched(&b, off + 12, 'x', decode_service,
                   "rate limit 0 prefix does not start with '/'");

    /* zero rate */
    memcpy(big, b.data, b.len);
    memset(big + off + 2, 0, 4);
    assert_int_equal(ds_service_decode(big, b.len, &svc, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 0 rate is zero");

    /* slot out of range */
    memcpy(big, b.data, b.len);
    big[16] = 0;
    big[17] = 0;
    big[18] = 0x10;
    big[19] = 0;
    assert_int_equal(ds_service_decode(big, b.len, &svc, &err), DS_EINVAL);
    assert_msg(&err, "slot 1048576 is out of range");

    assert_int_equal(ds_service_decode(NULL, 0, &svc, &err), DS_EINVAL);
    assert_msg(&err, "truncated");

    ds_buf_free(&b);
}


static void
test_service_encode_rejects(void **state)
{
    char          name[DS_NAME_MAX + 2];
    ds_buf_t      b;
    ds_err_t      err;
    ds_service_t  svc;

    (void) state;
    memset(&b, 0, sizeof(b));

    make_service(&svc);
    svc.name = S("");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "service record: name is empty");

    memset(name, 'a', sizeof(name));
    make_service(&svc);
    svc.name.data = name;
    svc.name.len = DS_NAME_MAX + 1;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "name length 64 exceeds 63");
    svc.name.len = DS_NAME_MAX;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_OK);

    make_service(&svc);
    svc.rate_limits[1].prefix = S("v1");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 1 prefix does not start with '/'");

    make_service(&svc);
    svc.rate_limits[1].prefix = S("");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 1 prefix is empty");

    make_service(&svc);
    svc.rate_limits[0].header = S("X-Key");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 0 keys on the client address");

    make_service(&svc);
    svc.rate_limits[1].header = S("");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 1 header name is empty");

    make_service(&svc);
    svc.rate_limits[1].key_type = 5;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 1 key type 5 is unknown");

    make_service(&svc);
    svc.n_rate_limits = DS_RATE_LIMITS_MAX + 1;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "17 rate limits exceed the maximum of 16");

    make_service(&svc);
    svc.model = S("");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "model prefix set without a model");

    make_service(&svc);
    svc.model_prefix = S("v1");
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "model prefix does not start with '/'");

    make_service(&svc);
    svc.model_format = 2;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "model format 2 is unknown");

    make_service(&svc);
    svc.flags = 0x100;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "unknown flags 0x100");

    make_service(&svc);
    svc.slot = DS_SERVICE_SLOTS_MAX;
    assert_int_equal(ds_service_encode(&svc, &b, &err), DS_EINVAL);
    assert_msg(&err, "slot 65536 is out of range");

    ds_buf_free(&b);
}


/* ---- replicas ---------------------------------------------------------- */

static void
test_replicas_roundtrip(void **state)
{
    ds_buf_t          b, b2;
    ds_err_t          err;
    ds_replica_t      in[3], out;
    ds_replica_set_t  set;
    uint32_t          i;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));

    make_replica(&in[0], "127.0.0.1:8001", DS_REPLICA_READY);
    make_replica(&in[1], "[::1]:8002", DS_REPLICA_DRAINING);
    make_replica(&in[2], "[2001:db8::1:2]:65535", DS_REPLICA_READY);
    for (i = 0; i < 3; i++) {
        in[i].uid = 100 + i;
        in[i].slot = i == 2 ? DS_SLOT_NONE : 10 + i;
    }

    /* bytes beyond an inet address are not encoded */
    in[0].addr[10] = 0xaa;

    assert_int_equal(ds_replicas_encode(77, in, 3, &b, &err), DS_OK);
    assert_int_equal(b.len, 24 + 3 * DS_REPLICA_WIRE_SIZE);
    assert_memory_equal(b.data, "DRPS\x01\x00\x00\x00", 8);

    assert_int_equal(ds_replicas_decode(b.data, b.len, &set, &err), DS_OK);
    assert_int_equal(set.generation, 77);
    assert_int_equal(set.count, 3);

    for (i = 0; i < 3; i++) {
        ds_replica_at(&set, i, &out);
        assert_int_equal(out.uid, in[i].uid);
        assert_int_equal(out.slot, in[i].slot);
        assert_int_equal(out.version, 3);
        assert_int_equal(out.weight, 1);
        assert_int_equal(out.state, in[i].state);
        assert_int_equal(out.family, in[i].family);
        assert_int_equal(out.port, in[i].port);
        assert_memory_equal(out.addr, in[i].addr,
                            in[i].family == DS_AF_INET ? 4 : 16);
    }

    ds_replica_at(&set, 0, &out);
    assert_int_equal(out.addr[10], 0);
    assert_int_equal(out.port, 8001);

    /* re-encoding what was decoded gives the same bytes */
    for (i = 0; i < 3; i++) {
        ds_replica_at(&set, i, &in[i]);
    }
    assert_int_equal(ds_replicas_encode(77, in, 3, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    /* an empty set: a service scaled to zero */
    assert_int_equal(ds_replicas_encode(1, NULL, 0, &b2, &err), DS_OK);
    assert_int_equal(ds_replicas_decode(b2.data, b2.len, &set, &err), DS_OK);
    assert_int_equal(set.count, 0);
    assert_int_equal(set.generation, 1);

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


static void
test_replicas_rejects(void **state)
{
    uint8_t           big[512];
    ds_buf_t          b;
    ds_err_t          err;
    ds_replica_t      r[2];
    ds_replica_set_t  set;
    size_t            e;

    (void) state;
    memset(&b, 0, sizeof(b));

    make_replica(&r[0], "10.0.0.1:80", DS_REPLICA_READY);
    make_replica(&r[1], "[fe80::1]:80", DS_REPLICA_READY);
    r[0].slot = r[1].slot = 0;
    assert_int_equal(ds_replicas_encode(5, r, 2, &b, &err), DS_OK);

    assert_truncations_fail(b.data, b.len, decode_replicas);

    e = 24;     /* the first entry */
    assert_patched(&b, 0, 'X', decode_replicas, "bad magic");
    assert_patched(&b, 4, 0, decode_replicas, "version 0 is not supported");
    assert_patched(&b, 20, 1, decode_replicas, "reserved field is 1");
    assert_patched(&b, 16, 3, decode_replicas, "truncated");
    assert_patched(&b, 16, 1, decode_replicas, "40 trailing bytes");
    assert_patched(&b, 18, 1, decode_replicas,
                   "replicas exceed the maximum of 65535");
    assert_patched(&b, e + 18, 0, decode_replicas,
                   "replica 0 state 0 is unknown");
    assert_patched(&b, e + 18, 3, decode_replicas,
                   "replica 0 state 3 is unknown");
    assert_patched(&b, e + 19, 5, decode_replicas,
                   "replica 0 address family 5 is unknown");
    assert_patched(&b, e + 30, 1, decode_replicas,
                   "replica 0 inet address has non-zero bytes");
    assert_patched(&b, e + 38, 1, decode_replicas,
                   "replica 0 padding is not zero");
    assert_patched(&b, e + 40 + 39, 1, decode_replicas,
                   "replica 1 padding is not zero");

    memcpy(big, b.data, b.len);
    big[e + 20] = 0;
    big[e + 21] = 0;
    assert_int_equal(ds_replicas_decode(big, b.len, &set, &err), DS_EINVAL);
    assert_msg(&err, "replica 0 port is 0");

    /* the slot of an entry indexes a shared array: it must be in range */
    memcpy(big, b.data, b.len);
    big[e + 8 + 2] = 0x04;      /* 262144 */
    assert_int_equal(ds_replicas_decode(big, b.len, &set, &err), DS_EINVAL);
    assert_msg(&err, "replica 0 slot 262144 is out of range");

    r[1].state = 9;
    assert_int_equal(ds_replicas_encode(5, r, 2, &b, &err), DS_EINVAL);
    assert_msg(&err, "replica 1 state 9 is unknown");

    r[1].state = DS_REPLICA_READY;
    r[1].family = 0;
    assert_int_equal(ds_replicas_encode(5, r, 2, &b, &err), DS_EINVAL);
    assert_msg(&err, "replica 1 address family 0 is unknown");

    assert_int_equal(ds_replicas_encode(5, r, DS_REPLICAS_MAX + 1, &b, &err),
                     DS_EINVAL);
    assert_msg(&err, "65536 replicas exceed the maximum of 65535");

    ds_buf_free(&b);
}


/* ---- tokens ------------------------------------------------------------ */

static void
make_token(ds_token_t *tok)
{
    memset(tok, 0, sizeof(*tok));
    ds_sha256("dst_secret", 10, tok->hash);
    tok->name = S("ci");
    tok->flags = 0;
    tok->created = 1700000000;
    tok->expires = 1800000000;
    tok->n_services = 2;
}


static void
test_token_roundtrip(void **state)
{
    ds_buf_t    b, b2;
    ds_err_t    err;
    ds_str_t    services[2], s;
    ds_token_t  in, out;
    uint32_t    off;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));

    services[0] = S("alpha");
    services[1] = S("beta-2");

    make_token(&in);
    assert_int_equal(ds_token_encode(&in, services, &b, &err), DS_OK);
    assert_memory_equal(b.data, "DTOK\x01\x00\x00\x00", 8);

    assert_int_equal(ds_token_decode(b.data, b.len, &out, &err), DS_OK);
    assert_memory_equal(out.hash, in.hash, DS_TOKEN_HASH_LEN);
    assert_true(str_is(out.name, "ci"));
    assert_int_equal(out.flags, 0);
    assert_int_equal(out.created, 1700000000);
    assert_int_equal(out.expires, 1800000000);
    assert_int_equal(out.n_services, 2);
    assert_int_equal(out.scope_len, 2 + 5 + 2 + 6);

    off = 0;
    assert_true(ds_token_scope_next(&out, &off, &s));
    assert_true(str_is(s, "alpha"));
    assert_true(ds_token_scope_next(&out, &off, &s));
    assert_true(str_is(s, "beta-2"));
    assert_false(ds_token_scope_next(&out, &off, &s));

    assert_true(ds_token_allows(&out, "alpha", 5));
    assert_true(ds_token_allows(&out, "beta-2", 6));
    assert_false(ds_token_allows(&out, "beta", 4));
    assert_false(ds_token_allows(&out, "alpha2", 6));
    assert_false(ds_token_allows(&out, "", 0));

    /* re-encoding a decoded token keeps its scope as is */
    assert_int_equal(ds_token_encode(&out, NULL, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    /* admin and all-services open everything */
    in.n_services = 0;
    in.flags = DS_TOKEN_ALL_SERVICES;
    assert_int_equal(ds_token_encode(&in, NULL, &b2, &err), DS_OK);
    assert_int_equal(ds_token_decode(b2.data, b2.len, &out, &err), DS_OK);
    assert_true(ds_token_allows(&out, "anything", 8));

    in.flags = DS_TOKEN_ADMIN;
    assert_int_equal(ds_token_encode(&in, NULL, &b2, &err), DS_OK);
    assert_int_equal(ds_token_decode(b2.data, b2.len, &out, &err), DS_OK);
    assert_true(ds_token_allows(&out, "x", 1));

    in.flags = 0;
    assert_int_equal(ds_token_encode(&in, NULL, &b2, &err), DS_OK);
    assert_int_equal(ds_token_decode(b2.data, b2.len, &out, &err), DS_OK);
    assert_false(ds_token_allows(&out, "x", 1));

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


static void
test_token_rejects(void **state)
{
    ds_buf_t    b;
    ds_err_t    err;
    ds_str_t    services[DS_TOKEN_SCOPE_MAX + 1];
    ds_token_t  tok;
    size_t      i, name_off;

    (void) state;
    memset(&b, 0, sizeof(b));

    for (i = 0; i <= DS_TOKEN_SCOPE_MAX; i++) {
        services[i] = S("svc");
    }

    make_token(&tok);
    assert_int_equal(ds_token_encode(&tok, services, &b, &err), DS_OK);
    assert_truncations_fail(b.data, b.len, decode_token);

    name_off = 8 + 32 + 4 + 8 + 8;
    assert_patched(&b, 0, 'D' + 1, decode_token, "bad magic");
    assert_patched(&b, 40, 8, decode_token, "unknown flags 0x8");
    assert_patched(&b, 40, 4, decode_token, "a user token needs its user");
    assert_patched(&b, name_off, 0, decode_token, "name is empty");
    assert_patched(&b, name_off + 4, 3, decode_token, "truncated");
    assert_patched(&b, name_off + 4, 1, decode_token, "trailing bytes");
    assert_patched(&b, name_off + 6, 0, decode_token,
                   "scope 0 service is empty");
    assert_patched(&b, name_off + 6, 200, decode_token,
                   "scope 0 service length 200 exceeds 63");
    assert_patched(&b, name_off + 5, 1, decode_token,
                   "services in the scope exceed the maximum of 256");

    tok.n_services = DS_TOKEN_SCOPE_MAX + 1;
    assert_int_equal(ds_token_encode(&tok, services, &b, &err), DS_EINVAL);
    assert_msg(&err, "257 services in the scope exceed the maximum of 256");

    tok.n_services = DS_TOKEN_SCOPE_MAX;
    assert_int_equal(ds_token_encode(&tok, services, &b, &err), DS_OK);

    make_token(&tok);
    services[1] = S("");
    assert_int_equal(ds_token_encode(&tok, services, &b, &err), DS_EINVAL);
    assert_msg(&err, "scope 1 service is empty");

    make_token(&tok);
    tok.name = S("");
    assert_int_equal(ds_token_encode(&tok, services, &b, &err), DS_EINVAL);
    assert_msg(&err, "token record: name is empty");

    make_token(&tok);
    tok.flags = 0x10;
    assert_int_equal(ds_token_encode(&tok, services, &b, &err), DS_EINVAL);
    assert_msg(&err, "unknown flags 0x10");

    /* a raw scope that does not hold n_services names */
    make_token(&tok);
    tok.scope = (const uint8_t *) "\x01\x00" "a";
    tok.scope_len = 3;
    assert_int_equal(ds_token_encode(&tok, NULL, &b, &err), DS_EINVAL);
    assert_msg(&err, "truncated");

    ds_buf_free(&b);
}


/* #18: a user's token and a project's, version 2; memberships */
static void
test_token_teams(void **state)
{
    ds_buf_t     b, b2;
    ds_err_t     err;
    ds_str_t     services[1], p;
    ds_token_t   in, out;
    ds_member_t  m, m2;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));

    /* a token of before: version 1, byte for byte */
    make_token(&in);
    in.n_services = 0;
    assert_int_equal(ds_token_encode(&in, NULL, &b, &err), DS_OK);
    assert_int_equal(b.data[4], 1);

    /* a user's token: version 2, round trip */
    in.flags = DS_TOKEN_USER;
    in.user = S("bob");
    assert_int_equal(ds_token_encode(&in, NULL, &b, &err), DS_OK);
    assert_int_equal(b.data[4], 2);
    assert_int_equal(ds_token_decode(b.data, b.len, &out, &err), DS_OK);
    assert_true(str_is(out.user, "bob"));
    assert_int_equal(out.project.len, 0);
    assert_int_equal(out.flags, DS_TOKEN_USER);
    assert_int_equal(ds_token_encode(&out, NULL, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);
    /* by itself it opens nothing: membership decides */
    assert_false(ds_token_allows(&out, "web", 3));

    /* the flag and the user go together */
    in.user = S("");
    assert_int_equal(ds_token_encode(&in, NULL, &b2, &err), DS_EINVAL);
    assert_msg(&err, "a user token needs its user");
    in.flags = 0;
    in.user = S("bob");
    assert_int_equal(ds_token_encode(&in, NULL, &b2, &err), DS_EINVAL);
    assert_msg(&err, "a user token needs its user");

    /* a project's all-services token opens that project's services */
    in.user = S("");
    in.flags = DS_TOKEN_ALL_SERVICES;
    in.project = S("team");
    assert_int_equal(ds_token_encode(&in, NULL, &b, &err), DS_OK);
    assert_int_equal(ds_token_decode(b.data, b.len, &out, &err), DS_OK);
    assert_true(ds_token_allows(&out, "web--team", 9));
    assert_false(ds_token_allows(&out, "web", 3));
    assert_false(ds_token_allows(&out, "web--teams", 10));
    assert_false(ds_token_allows(&out, "web--other", 10));

    /* main's all-services token: main's services only */
    in.project = S("");
    assert_int_equal(ds_token_encode(&in, NULL, &b2, &err), DS_OK);
    assert_int_equal(ds_token_decode(b2.data, b2.len, &out, &err), DS_OK);
    assert_true(ds_token_allows(&out, "web", 3));
    assert_false(ds_token_allows(&out, "web--team", 9));

    /* a scoped token names keys */
    services[0] = S("web--team");
    in.flags = 0;
    in.project = S("team");
    in.n_services = 1;
    assert_int_equal(ds_token_encode(&in, services, &b2, &err), DS_OK);
    assert_int_equal(ds_token_decode(b2.data, b2.len, &out, &err), DS_OK);
    assert_true(ds_token_allows(&out, "web--team", 9));
    assert_false(ds_token_allows(&out, "web", 3));

    /* version 2 with neither user nor project is not an encoding */
    in.n_services = 0;
    in.project = S("t");
    assert_int_equal(ds_token_encode(&in, NULL, &b, &err), DS_OK);
    assert_int_equal(b.data[4], 2);
    b.data[8 + 32 + 4 + 8 + 8 + 2 + in.name.len + 2] = 0; /* project len */
    memmove(b.data + 8 + 32 + 4 + 8 + 8 + 2 + in.name.len + 4,
            b.data + 8 + 32 + 4 + 8 + 8 + 2 + in.name.len + 5,
            b.len - (8 + 32 + 4 + 8 + 8 + 2 + in.name.len + 5));
    assert_int_equal(ds_token_decode(b.data, b.len - 1, &out, &err),
                     DS_EINVAL);
    assert_msg(&err, "version 2 without a user or a project");
    b.data[4] = 4;
    assert_int_equal(ds_token_decode(b.data, b.len, &out, &err), DS_EINVAL);
    assert_msg(&err, "version 4 is not supported");

    /* the project of a service key */
    ds_service_project("web", 3, &p);
    assert_int_equal(p.len, 0);
    ds_service_project("web--team", 9, &p);
    assert_true(str_is(p, "team"));
    ds_service_project("a-b--c-d", 8, &p);
    assert_true(str_is(p, "c-d"));

    /* member records */
    m.role = DS_ROLE_MANAGER;
    m.created = 1700000000;
    assert_int_equal(ds_member_encode(&m, &b, &err), DS_OK);
    assert_int_equal(ds_member_decode(b.data, b.len, &m2, &err), DS_OK);
    assert_int_equal(m2.role, DS_ROLE_MANAGER);
    assert_int_equal(m2.created, 1700000000);
    assert_truncations_fail(b.data, b.len, decode_member);
    assert_patched(&b, 8, 4, decode_member, "role 4 is not one of 1..3");
    assert_patched(&b, 8, 0, decode_member, "role 0 is not one of 1..3");
    m.role = 0;
    assert_int_equal(ds_member_encode(&m, &b, &err), DS_EINVAL);

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


/* ---- models ------------------------------------------------------------ */

static void
test_model_roundtrip(void **state)
{
    ds_buf_t    b, b2;
    ds_err_t    err;
    ds_model_t  in, out;

    (void) state;
    memset(&b, 0, sizeof(b));
    memset(&b2, 0, sizeof(b2));
    memset(&in, 0, sizeof(in));

    in.name = S("mistral-7b");
    in.service = S("mistral");
    in.prefix = S("/v1");
    in.format = DS_MODEL_OPENAI;
    in.created = 1717171717;

    assert_int_equal(ds_model_encode(&in, &b, &err), DS_OK);
    assert_memory_equal(b.data, "DMOD\x01\x00\x00\x00", 8);
    assert_int_equal(ds_model_decode(b.data, b.len, &out, &err), DS_OK);
    assert_true(str_is(out.name, "mistral-7b"));
    assert_true(str_is(out.service, "mistral"));
    assert_true(str_is(out.prefix, "/v1"));
    assert_int_equal(out.format, DS_MODEL_OPENAI);
    assert_int_equal(out.created, 1717171717);

    assert_int_equal(ds_model_encode(&out, &b2, &err), DS_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.data, b.data, b.len);

    assert_truncations_fail(b.data, b.len, decode_model);
    assert_patched(&b, 3, 'X', decode_model, "bad magic");
    assert_patched(&b, 5, 1, decode_model, "version 257 is not supported");
    assert_patched(&b, 8, 2, decode_model, "format 2 is unknown");
    assert_patched(&b, 20, 0, decode_model, "model record: name is empty");
    assert_patched(&b, 20 + 2 + 10, 0, decode_model, "service is empty");
    assert_patched(&b, 20 + 2 + 10 + 2 + 7 + 2, 'v', decode_model,
                   "prefix does not start with '/'");

    in.service = S("");
    assert_int_equal(ds_model_encode(&in, &b, &err), DS_EINVAL);
    assert_msg(&err, "model record: service is empty");

    ds_buf_free(&b);
    ds_buf_free(&b2);
}


/* ---- crypto ------------------------------------------------------------ */

static void
assert_sha256(const void *data, size_t len, const char *hex)
{
    char     got[65];
    uint8_t  md[32];
    int      i;

    ds_sha256(data, len, md);
    for (i = 0; i < 32; i++) {
        snprintf(got + 2 * i, 3, "%02x", md[i]);
    }

    assert_string_equal(got, hex);
}


static void
test_sha256(void **state)
{
    char  *a;

    (void) state;

    /* FIPS 180-4 examples and the NIST long-message vector */
    assert_sha256("", 0,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_sha256("abc", 3,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        56,
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

    a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    assert_sha256(a, 1000000,
        "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

    /* lengths around the padding boundary: one block or two (Python's
     * hashlib gave the expected values) */
    assert_sha256(a, 55,
        "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    assert_sha256(a, 56,
        "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
    assert_sha256(a, 63,
        "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34");
    assert_sha256(a, 64,
        "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
    assert_sha256(a, 65,
        "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0");
    assert_sha256(a, 119,
        "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb");
    assert_sha256(a, 120,
        "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c");

    free(a);
}


static void
test_ct_equal(void **state)
{
    uint8_t  a[32], b[32];
    int      i;

    (void) state;

    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    assert_int_equal(ds_ct_equal(a, b, 32), 1);
    assert_int_equal(ds_ct_equal(a, b, 0), 1);

    for (i = 0; i < 32; i++) {
        b[i] ^= 0x01;
        assert_int_equal(ds_ct_equal(a, b, 32), 0);
        b[i] ^= 0x81;
        assert_int_equal(ds_ct_equal(a, b, 32), 0);
        b[i] ^= 0x80;
    }

    assert_int_equal(ds_ct_equal(a, b, 32), 1);

    /* every length, every position, every bit: the word-wise loop and
     * its tail */
    {
        int  len, bit;

        for (len = 1; len <= 32; len++) {
            for (i = 0; i < len; i++) {
                for (bit = 0; bit < 8; bit++) {
                    b[i] ^= (uint8_t) (1 << bit);
                    assert_int_equal(ds_ct_equal(a, b, len), 0);
                    b[i] ^= (uint8_t) (1 << bit);
                }
            }
            assert_int_equal(ds_ct_equal(a, b, len), 1);
        }
    }
}


static void
test_token_generate(void **state)
{
    char      t1[DS_TOKEN_TEXT_LEN + 1], t2[DS_TOKEN_TEXT_LEN + 1];
    size_t    i;
    ds_err_t  err;

    (void) state;

    assert_int_equal(ds_token_generate(t1, &err), DS_OK);
    assert_int_equal(ds_token_generate(t2, &err), DS_OK);

    assert_int_equal(strlen(t1), DS_TOKEN_TEXT_LEN);
    assert_int_equal(strncmp(t1, "dst_", 4), 0);
    assert_string_not_equal(t1, t2);

    for (i = 4; i < DS_TOKEN_TEXT_LEN; i++) {
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "abcdefghijklmnopqrstuvwxyz0123456789-_",
                               t1[i]));
    }
}


/* ---- addresses and names ----------------------------------------------- */

static void
assert_addr(const char *in, int family, uint16_t port, const char *out)
{
    char          buf[DS_REPLICA_ADDR_LEN];
    ds_replica_t  r;

    memset(&r, 0xee, sizeof(r));
    assert_int_equal(ds_replica_parse_addr(&r, in, strlen(in)), DS_OK);
    assert_int_equal(r.family, family);
    assert_int_equal(r.port, port);

    assert_int_equal(ds_replica_format_addr(&r, buf, sizeof(buf)),
                     strlen(out));
    assert_string_equal(buf, out);
}


static void
test_addr(void **state)
{
    static const char  *bad[] = {
        "", ":80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
        "127.0.0.1:65536", "127.0.0.1:080", "127.0.0.1:8o", "127.0.0.1: 80",
        "127.0.0.1:-1", "256.0.0.1:80", "1.2.3:80", "localhost:80",
        "::1:80", "[::1]", "[::1]80", "[::1]:", "[::1:80", "[]:80",
        "[127.0.0.1]:80", "[fe80::1%eth0]:80", "[::1]:8080x", " 1.2.3.4:1",
        "[gggg::1]:80",
        "[1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc]:80",
    };

    char          buf[DS_REPLICA_ADDR_LEN];
    size_t        i;
    ds_replica_t  r;

    (void) state;

    assert_addr("127.0.0.1:8000", DS_AF_INET, 8000, "127.0.0.1:8000");
    assert_addr("10.1.2.3:1", DS_AF_INET, 1, "10.1.2.3:1");
    assert_addr("[::1]:8000", DS_AF_INET6, 8000, "[::1]:8000");
    assert_addr("[2001:DB8:0:0:0:0:0:1]:65535", DS_AF_INET6, 65535,
                "[2001:db8::1]:65535");
    assert_addr("[::ffff:1.2.3.4]:443", DS_AF_INET6, 443,
                "[::ffff:1.2.3.4]:443");
    assert_addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                DS_AF_INET6, 65535,
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ds_replica_parse_addr(&r, bad[i], strlen(bad[i])) != DS_EINVAL) {
            fail_msg("address \"%s\" was accepted", bad[i]);
        }
    }

    /* the length bounds the input, which need not be NUL-terminated */
    assert_int_equal(ds_replica_parse_addr(&r, "1.2.3.4:80000", 10), DS_OK);
    assert_int_equal(r.port, 80);

    /* a buffer too small gives 0 and an empty string */
    assert_int_equal(ds_replica_format_addr(&r, buf, 8), 0);
    assert_string_equal(buf, "");

    r.family = 0;
    assert_int_equal(ds_replica_format_addr(&r, buf, sizeof(buf)), 0);
}


static void
test_run_names(void **state)
{
    static const char  *good[] = {
        "ab", "a1", "my-service", "a-",
        "x0123456789012345678901234567890123456789"
    };
    static const char  *bad[] = {
        "", "a", "1a", "-a", "Ab", "aB", "a_b", "a.b", "a b",
        "x01234567890123456789012345678901234567890"
    };

    size_t  i;

    (void) state;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        if (!ds_valid_run_name(good[i], strlen(good[i]))) {
            fail_msg("run name \"%s\" was refused", good[i]);
        }
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (ds_valid_run_name(bad[i], strlen(bad[i]))) {
            fail_msg("run name \"%s\" was accepted", bad[i]);
        }
    }

    assert_true(ds_valid_run_name("abc\0", 3));
    assert_false(ds_valid_run_name("abc\0", 4));
}


/* ---- LMDB: fixtures and helpers ---------------------------------------- */

static int
dir_setup(void **state)
{
    (void) state;

    snprintf(state_dir, sizeof(state_dir), "/tmp/ds-test-XXXXXX");
    if (mkdtemp(state_dir) == NULL) {
        return -1;
    }

    /* the state directory itself is created by ds_state_open */
    strncat(state_dir, "/st", sizeof(state_dir) - strlen(state_dir) - 1);
    return 0;
}


static int
dir_teardown(void **state)
{
    char  path[128];

    (void) state;

    snprintf(path, sizeof(path), "%s/data.mdb", state_dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/lock.mdb", state_dir);
    unlink(path);
    rmdir(state_dir);
    *strrchr(state_dir, '/') = '\0';
    rmdir(state_dir);
    return 0;
}


static ds_state_t *
open_writer(void)
{
    ds_err_t     err;
    ds_state_t  *st;

    if (ds_state_open(&st, state_dir, DS_STATE_CREATE, 0660, &err) != DS_OK)
    {
        fail_msg("ds_state_open: %s", err.msg);
    }

    return st;
}


static ds_txn_t *
begin(ds_state_t *st, int write)
{
    ds_err_t   err;
    ds_txn_t  *txn;

    if (ds_txn_begin(st, write, &txn, &err) != DS_OK) {
        fail_msg("ds_txn_begin: %s", err.msg);
    }

    return txn;
}


static void
commit(ds_txn_t *txn)
{
    ds_err_t  err;

    if (ds_txn_commit(txn, &err) != DS_OK) {
        fail_msg("ds_txn_commit: %s", err.msg);
    }
}


/*
 * Opening the state while another process commits as fast as it can:
 * the check that lock.mdb belongs to data.mdb must tell a commit between
 * its reads from a lock of another file (it took a busy controld for the
 * latter once: t/21's dstack-seed --dump, CI of stop 25).
 */
static void
test_state_open_while_committing(void **state)
{
    int          i, failed, status;
    char         val[32];
    pid_t        pid;
    ds_err_t     err;
    ds_txn_t    *txn;
    ds_state_t  *st, *rd;

    (void) state;

    st = open_writer();
    txn = begin(st, 1);
    assert_int_equal(ds_put_setting(txn, "n", "0", 1, &err), DS_OK);
    commit(txn);
    ds_state_close(st);

    pid = fork();
    assert_true(pid >= 0);

    if (pid == 0) {
        st = open_writer();
        for (i = 0; i < 20000; i++) {
            if (ds_txn_begin(st, 1, &txn, &err) != DS_OK) {
                _exit(1);
            }
            snprintf(val, sizeof(val), "%d", i);
            if (ds_put_setting(txn, "n", val, strlen(val), &err) != DS_OK
                || ds_txn_commit(txn, &err) != DS_OK)
            {
                _exit(1);
            }
        }
        _exit(0);
    }

    failed = 0;

    for (i = 0; i < 300; i++) {
        if (ds_state_open(&rd, state_dir, DS_STATE_RDONLY, 0660, &err)
            != DS_OK)
        {
            print_message("open %d: %s\n", i, err.msg);
            failed++;
            continue;
        }
        ds_state_close(rd);
    }

    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);

    assert_int_equal(failed, 0);
}


static void
put_service(ds_txn_t *txn, ds_service_t *svc)
{
    ds_err_t  err;

    if (ds_put_service(txn, svc, &err) != DS_OK) {
        fail_msg("ds_put_service: %s", err.msg);
    }
}


static void
simple_service(ds_service_t *svc, const char *name, const char *model)
{
    ds_service_init(svc);
    svc->name.data = name;
    svc->name.len = (uint32_t) strlen(name);

    if (model != NULL) {
        svc->model.data = model;
        svc->model.len = (uint32_t) strlen(model);
        svc->model_prefix = S("/v1");
    }
}


/* ---- LMDB: services ---------------------------------------------------- */

static void
test_state_service(void **state)
{
    char          path[128];
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_state_t   *st;
    struct stat   sb;
    ds_service_t  svc, got;

    (void) state;

    st = open_writer();

    /* the files get exactly the mode asked for, whatever the umask */
    snprintf(path, sizeof(path), "%s/lock.mdb", state_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0660);
    snprintf(path, sizeof(path), "%s/data.mdb", state_dir);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0660);
    assert_int_equal(stat(state_dir, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0750);

    txn = begin(st, 1);
    make_service(&svc);
    put_service(txn, &svc);

    /* the writer's uid and slot, not the caller's */
    assert_int_equal(svc.uid, 1);
    assert_int_equal(svc.slot, 0);

    /* a write transaction reads its own writes */
    assert_int_equal(ds_get_service(txn, "llama", 5, &got, &err), DS_OK);
    assert_int_equal(got.uid, 1);
    commit(txn);

    txn = begin(st, 0);
    assert_int_equal(ds_get_service(txn, "llama", 5, &got, &err), DS_OK);
    assert_int_equal(got.uid, 1);
    assert_int_equal(got.slot, 0);
    assert_int_equal(got.flags, DS_SERVICE_AUTH | DS_SERVICE_HTTPS);
    assert_int_equal(got.n_rate_limits, 2);
    assert_true(str_is(got.rate_limits[1].header, "X-Api-Key"));
    assert_true(str_is(got.model, "meta-llama/Llama-3-8B"));

    assert_int_equal(ds_get_service(txn, "other", 5, &got, &err),
                     DS_NOTFOUND);
    assert_msg(&err, "service \"other\" not found");
    assert_int_equal(ds_get_service(txn, "", 0, &got, &err), DS_NOTFOUND);

    /* writers refuse a read transaction */
    assert_int_equal(ds_put_service(txn, &svc, &err), DS_EINVAL);
    assert_msg(&err, "read transaction");
    assert_int_equal(ds_del_service(txn, "llama", 5, &err), DS_EINVAL);
    assert_int_equal(ds_put_setting(txn, "k", "v", 1, &err), DS_EINVAL);
    ds_txn_abort(txn);

    /* an invalid record is refused and the transaction stays usable */
    txn = begin(st, 1);
    svc.rate_limits[0].prefix = S("nope");
    assert_int_equal(ds_put_service(txn, &svc, &err), DS_EINVAL);
    assert_msg(&err, "rate limit 0 prefix does not start with '/'");
    assert_int_equal(ds_get_service(txn, "llama", 5, &got, &err), DS_OK);
    ds_txn_abort(txn);

    ds_state_close(st);
}


static void
test_state_uid_slot(void **state)
{
    static const char  *names[] = { "aa", "bb", "cc" };

    int           i;
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_state_t   *st;
    ds_service_t  svc, got;

    (void) state;

    st = open_writer();

    txn = begin(st, 1);
    for (i = 0; i < 3; i++) {
        simple_service(&svc, names[i], NULL);
        put_service(txn, &svc);
        assert_int_equal(svc.uid, i + 1);
        assert_int_equal(svc.slot, i);
    }
    commit(txn);

    /* an update keeps uid and slot whatever the caller says */
    txn = begin(st, 1);
    simple_service(&svc, "aa", NULL);
    svc.uid = 77;
    svc.slot = 5000000;
    svc.flags = DS_SERVICE_AUTH;
    put_service(txn, &svc);
    assert_int_equal(svc.uid, 1);
    assert_int_equal(svc.slot, 0);
    assert_int_equal(ds_get_service(txn, "aa", 2, &got, &err), DS_OK);
    assert_int_equal(got.flags, DS_SERVICE_AUTH);
    assert_int_equal(got.uid, 1);

    /* a freed slot is reused; a uid never is */
    assert_int_equal(ds_del_service(txn, "bb", 2, &err), DS_OK);
    assert_int_equal(ds_del_service(txn, "bb", 2, &err), DS_NOTFOUND);
    assert_msg(&err, "service \"bb\" not found");

    simple_service(&svc, "dd", NULL);
    put_service(txn, &svc);
    assert_int_equal(svc.uid, 4);
    assert_int_equal(svc.slot, 1);

    simple_service(&svc, "ee", NULL);
    put_service(txn, &svc);
    assert_int_equal(svc.uid, 5);
    assert_int_equal(svc.slot, 3);
    commit(txn);

    /* an aborted transaction hands out nothing */
    txn = begin(st, 1);
    simple_service(&svc, "ff", NULL);
    put_service(txn, &svc);
    assert_int_equal(svc.uid, 6);
    ds_txn_abort(txn);

    txn = begin(st, 1);
    simple_service(&svc, "ff", NULL);
    put_service(txn, &svc);
    assert_int_equal(svc.uid, 6);
    assert_int_equal(svc.slot, 4);
    commit(txn);

    ds_state_close(st);

    /* the counters survive a restart of the writer */
    st = open_writer();
    txn = begin(st, 1);
    simple_service(&svc, "gg", NULL);
    put_service(txn, &svc);
    assert_int_equal(svc.uid, 7);
    assert_int_equal(svc.slot, 5);
    commit(txn);
    ds_state_close(st);
}


static void
test_state_models(void **state)
{
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_model_t    m;
    ds_state_t   *st;
    ds_service_t  svc;

    (void) state;

    st = open_writer();
    txn = begin(st, 1);

    simple_service(&svc, "aa", "m1");
    svc.model_format = DS_MODEL_TGI;
    put_service(txn, &svc);

    assert_int_equal(ds_get_model(txn, "m1", 2, &m, &err), DS_OK);
    assert_true(str_is(m.name, "m1"));
    assert_true(str_is(m.service, "aa"));
    assert_true(str_is(m.prefix, "/v1"));
    assert_int_equal(m.format, DS_MODEL_TGI);
    assert_true(m.created > 0);

    /* one model, one service */
    simple_service(&svc, "bb", "m1");
    assert_int_equal(ds_put_service(txn, &svc, &err), DS_EINVAL);
    assert_msg(&err, "model \"m1\" is already served by service \"aa\"");
    assert_int_equal(ds_get_service(txn, "bb", 2, &svc, &err), DS_NOTFOUND);

    /* putting the same service again is fine */
    simple_service(&svc, "aa", "m1");
    put_service(txn, &svc);

    /* a model change removes the old entry */
    simple_service(&svc, "aa", "m2");
    put_service(txn, &svc);
    assert_int_equal(ds_get_model(txn, "m1", 2, &m, &err), DS_NOTFOUND);
    assert_int_equal(ds_get_model(txn, "m2", 2, &m, &err), DS_OK);
    assert_true(str_is(m.service, "aa"));

    /* now bb may serve m1 */
    simple_service(&svc, "bb", "m1");
    put_service(txn, &svc);
    assert_int_equal(ds_get_model(txn, "m1", 2, &m, &err), DS_OK);
    assert_true(str_is(m.service, "bb"));

    /* dropping the model drops the entry */
    simple_service(&svc, "aa", NULL);
    put_service(txn, &svc);
    assert_int_equal(ds_get_model(txn, "m2", 2, &m, &err), DS_NOTFOUND);
    commit(txn);

    ds_state_close(st);
}


static int count_model(void *arg, const ds_model_t *m);


/* the services of the models one project's iteration gives, in order,
 * separated by spaces */
static int
list_model(void *arg, const ds_model_t *m)
{
    char  *out = arg;

    if (*out != '\0') {
        strcat(out, " ");
    }
    strncat(out, m->name.data, m->name.len);
    strcat(out, "@");
    strncat(out, m->service.data, m->service.len);
    return 0;
}


static void
project_models(ds_txn_t *txn, const char *project, char *out)
{
    ds_err_t  err;

    out[0] = '\0';
    assert_int_equal(ds_foreach_project_model(txn, project, strlen(project),
                                              list_model, out, &err),
                     DS_OK);
}


/* a project's models are its own: the same name in two projects, each
 * found by its project only, kept and removed with its service */
static void
test_state_project_models(void **state)
{
    int           n;
    char          key[DS_MODEL_KEY_MAX], list[512];
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_model_t    m;
    ds_state_t   *st;
    ds_service_t  svc;

    (void) state;

    assert_int_equal(ds_model_key("", 0, "llama", 5, key), 5);
    assert_memory_equal(key, "llama", 5);
    assert_int_equal(ds_model_key("team", 4, "llama", 5, key), 10);
    assert_memory_equal(key, "team\0llama", 10);
    assert_int_equal(ds_model_key("", 0, "a\0b", 3, key), 0);
    assert_int_equal(ds_model_key("t\0", 2, "ab", 2, key), 0);
    assert_int_equal(ds_model_key("", 0, "", 0, key), 0);

    st = open_writer();
    txn = begin(st, 1);

    simple_service(&svc, "web", "llama");
    put_service(txn, &svc);
    simple_service(&svc, "web--team", "llama");
    put_service(txn, &svc);
    simple_service(&svc, "chat--team", "mistral");
    put_service(txn, &svc);
    simple_service(&svc, "web--ops", "llama");
    put_service(txn, &svc);
    simple_service(&svc, "zz", "zeta");
    put_service(txn, &svc);

    assert_int_equal(ds_get_model(txn, "llama", 5, &m, &err), DS_OK);
    assert_true(str_is(m.service, "web"));
    assert_int_equal(ds_get_project_model(txn, "team", 4, "llama", 5, &m,
                                          &err), DS_OK);
    assert_true(str_is(m.name, "llama"));
    assert_true(str_is(m.service, "web--team"));
    assert_int_equal(ds_get_project_model(txn, "ops", 3, "llama", 5, &m,
                                          &err), DS_OK);
    assert_true(str_is(m.service, "web--ops"));

    /* each project sees its own only; main's are the bare keys */
    assert_int_equal(ds_get_model(txn, "mistral", 7, &m, &err),
                     DS_NOTFOUND);
    assert_int_equal(ds_get_project_model(txn, "ops", 3, "mistral", 7, &m,
                                          &err), DS_NOTFOUND);
    assert_int_equal(ds_get_project_model(txn, "nope", 4, "llama", 5, &m,
                                          &err), DS_NOTFOUND);
    /* a NUL in a name never reaches another project's key */
    assert_int_equal(ds_get_model(txn, "team\0llama", 10, &m, &err),
                     DS_NOTFOUND);

    project_models(txn, "", list);
    assert_string_equal(list, "llama@web zeta@zz");
    project_models(txn, "team", list);
    assert_string_equal(list, "llama@web--team mistral@chat--team");
    project_models(txn, "ops", list);
    assert_string_equal(list, "llama@web--ops");
    project_models(txn, "te", list);
    assert_string_equal(list, "");

    n = 0;
    assert_int_equal(ds_foreach_model(txn, count_model, &n, &err), DS_OK);
    assert_int_equal(n, 5);

    /* one model, one service of the project */
    simple_service(&svc, "other--team", "llama");
    assert_int_equal(ds_put_service(txn, &svc, &err), DS_EINVAL);
    assert_msg(&err, "model \"llama\" is already served by service "
               "\"web--team\"");

    /* a model name with a NUL byte is refused */
    simple_service(&svc, "nul", NULL);
    svc.model.data = "a\0b";
    svc.model.len = 3;
    svc.model_prefix = S("/v1");
    assert_int_equal(ds_put_service(txn, &svc, &err), DS_EINVAL);
    assert_int_equal(ds_get_service(txn, "nul", 3, &svc, &err), DS_NOTFOUND);

    /* a model change and a deletion touch the project's entry only */
    simple_service(&svc, "web--team", "llama-2");
    put_service(txn, &svc);
    assert_int_equal(ds_get_project_model(txn, "team", 4, "llama", 5, &m,
                                          &err), DS_NOTFOUND);
    assert_int_equal(ds_get_project_model(txn, "team", 4, "llama-2", 7, &m,
                                          &err), DS_OK);
    assert_int_equal(ds_get_model(txn, "llama", 5, &m, &err), DS_OK);

    assert_int_equal(ds_del_service(txn, "web--ops", 8, &err), DS_OK);
    assert_int_equal(ds_get_project_model(txn, "ops", 3, "llama", 5, &m,
                                          &err), DS_NOTFOUND);
    assert_int_equal(ds_get_model(txn, "llama", 5, &m, &err), DS_OK);
    assert_true(str_is(m.service, "web"));

    assert_int_equal(ds_del_service(txn, "web", 3, &err), DS_OK);
    assert_int_equal(ds_get_model(txn, "llama", 5, &m, &err), DS_NOTFOUND);
    project_models(txn, "team", list);
    assert_string_equal(list, "llama-2@web--team mistral@chat--team");
    commit(txn);

    ds_state_close(st);
}


/* ---- LMDB: replicas ---------------------------------------------------- */

static void
get_replica(ds_txn_t *txn, const char *name, uint32_t i, ds_replica_t *r,
    uint64_t *generation, uint32_t *count)
{
    ds_err_t          err;
    ds_replica_set_t  set;

    if (ds_get_replicas(txn, name, strlen(name), &set, &err) != DS_OK) {
        fail_msg("ds_get_replicas: %s", err.msg);
    }

    *generation = set.generation;
    *count = set.count;

    if (i < set.count) {
        ds_replica_at(&set, i, r);
    }
}


static void
test_state_replicas(void **state)
{
    ds_err_t          err;
    ds_txn_t         *txn;
    uint32_t          count;
    uint64_t          gen;
    ds_state_t       *st;
    ds_replica_t      r[3], got;
    ds_service_t      svc;
    ds_replica_set_t  set;

    (void) state;

    st = open_writer();
    txn = begin(st, 1);

    make_replica(&r[0], "10.0.0.1:8000", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 1, &err), DS_NOTFOUND);
    assert_msg(&err, "service \"aa\" not found");

    simple_service(&svc, "aa", NULL);
    put_service(txn, &svc);                           /* uid 1 */

    assert_int_equal(ds_get_replicas(txn, "aa", 2, &set, &err), DS_NOTFOUND);

    make_replica(&r[0], "10.0.0.1:8000", DS_REPLICA_READY);
    make_replica(&r[1], "[::1]:8000", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 2, &err), DS_OK);
    assert_int_equal(r[0].uid, 2);
    assert_int_equal(r[0].slot, 0);
    assert_int_equal(r[1].uid, 3);
    assert_int_equal(r[1].slot, 1);

    get_replica(txn, "aa", 1, &got, &gen, &count);
    assert_int_equal(gen, 1);
    assert_int_equal(count, 2);
    assert_int_equal(got.uid, 3);
    assert_int_equal(got.slot, 1);
    assert_int_equal(got.family, DS_AF_INET6);
    commit(txn);

    /* the v6 one stays (now draining), the v4 one goes, a new one comes */
    txn = begin(st, 1);
    make_replica(&r[0], "10.0.0.2:8000", DS_REPLICA_READY);
    make_replica(&r[1], "[::1]:8000", DS_REPLICA_DRAINING);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 2, &err), DS_OK);
    assert_int_equal(r[1].uid, 3);
    assert_int_equal(r[1].slot, 1);
    assert_int_equal(r[0].uid, 4);
    assert_int_equal(r[0].slot, 2);           /* not the one just freed */

    get_replica(txn, "aa", 1, &got, &gen, &count);
    assert_int_equal(gen, 2);
    assert_int_equal(got.state, DS_REPLICA_DRAINING);
    assert_int_equal(got.uid, 3);

    /* the same address on another port is another replica */
    make_replica(&r[2], "10.0.0.2:8001", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 3, &err), DS_OK);
    assert_int_equal(r[0].uid, 4);
    assert_int_equal(r[1].uid, 3);
    assert_int_equal(r[2].uid, 5);
    assert_int_equal(r[2].slot, 0);           /* freed by the previous put */

    /* duplicates are refused, the set stays */
    make_replica(&r[2], "10.0.0.2:8000", DS_REPLICA_DRAINING);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 3, &err), DS_EINVAL);
    assert_msg(&err, "duplicate address 10.0.0.2:8000");
    get_replica(txn, "aa", 2, &got, &gen, &count);
    assert_int_equal(gen, 3);
    assert_int_equal(count, 3);

    r[2].state = 0;
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 3, &err), DS_EINVAL);
    assert_msg(&err, "replica 2 state 0 is unknown");

    /* scaled to zero: an empty set, every slot freed */
    assert_int_equal(ds_put_replicas(txn, "aa", 2, NULL, 0, &err), DS_OK);
    get_replica(txn, "aa", 0, &got, &gen, &count);
    assert_int_equal(gen, 4);
    assert_int_equal(count, 0);

    make_replica(&r[0], "10.0.0.9:8000", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 1, &err), DS_OK);
    assert_int_equal(r[0].slot, 0);
    assert_int_equal(r[0].uid, 6);
    commit(txn);

    ds_state_close(st);
}


static void
test_state_delete_cascades(void **state)
{
    ds_err_t          err;
    ds_txn_t         *txn;
    ds_model_t        m;
    ds_state_t       *st;
    ds_replica_t      r[2];
    ds_service_t      svc;
    ds_replica_set_t  set;

    (void) state;

    st = open_writer();
    txn = begin(st, 1);

    simple_service(&svc, "aa", "m1");
    put_service(txn, &svc);
    make_replica(&r[0], "10.0.0.1:80", DS_REPLICA_READY);
    make_replica(&r[1], "10.0.0.2:80", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, r, 2, &err), DS_OK);
    commit(txn);

    txn = begin(st, 1);
    assert_int_equal(ds_del_service(txn, "aa", 2, &err), DS_OK);
    assert_int_equal(ds_get_service(txn, "aa", 2, &svc, &err), DS_NOTFOUND);
    assert_int_equal(ds_get_replicas(txn, "aa", 2, &set, &err), DS_NOTFOUND);
    assert_int_equal(ds_get_model(txn, "m1", 2, &m, &err), DS_NOTFOUND);
    commit(txn);

    /* every slot came back */
    txn = begin(st, 1);
    simple_service(&svc, "bb", "m1");
    put_service(txn, &svc);
    assert_int_equal(svc.slot, 0);
    assert_int_equal(svc.uid, 4);
    make_replica(&r[0], "10.0.0.3:80", DS_REPLICA_READY);
    make_replica(&r[1], "10.0.0.4:80", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "bb", 2, r, 2, &err), DS_OK);
    assert_int_equal(r[0].slot, 0);
    assert_int_equal(r[1].slot, 1);
    commit(txn);

    ds_state_close(st);
}


/* ---- LMDB: tokens, settings, runs, iteration --------------------------- */

static int
count_service(void *arg, const ds_service_t *svc)
{
    (void) svc;
    return ++*(int *) arg >= 2;     /* stop after two */
}


static int
find_token(void *arg, const ds_token_t *tok)
{
    if (str_is(tok->name, "deploy")) {
        ++*(int *) arg;
    }

    return 0;
}


static int
count_model(void *arg, const ds_model_t *m)
{
    (void) m;
    ++*(int *) arg;
    return 0;
}


static int
check_setting(void *arg, const ds_str_t *key, const ds_str_t *val)
{
    int  *n;

    n = arg;
    if (*n == 0) {
        assert_true(str_is(*key, "a.key"));
        assert_true(str_is(*val, "one"));
    }

    (*n)++;
    return 0;
}


static void
test_state_misc(void **state)
{
    int           n;
    uint8_t       hash[32];
    ds_err_t      err;
    ds_str_t      val, services[1];
    ds_txn_t     *txn;
    ds_token_t    tok, got;
    ds_state_t   *st;
    ds_service_t  svc;

    (void) state;

    st = open_writer();
    txn = begin(st, 1);

    ds_sha256("dst_abc", 7, hash);
    memset(&tok, 0, sizeof(tok));
    memcpy(tok.hash, hash, 32);
    tok.name = S("deploy");
    tok.n_services = 1;
    services[0] = S("aa");
    assert_int_equal(ds_put_token(txn, &tok, services, &err), DS_OK);

    assert_int_equal(ds_get_token(txn, hash, &got, &err), DS_OK);
    assert_true(str_is(got.name, "deploy"));
    assert_true(ds_token_allows(&got, "aa", 2));
    assert_false(ds_token_allows(&got, "bb", 2));

    assert_int_equal(ds_put_setting(txn, "a.key", "one", 3, &err), DS_OK);
    assert_int_equal(ds_put_setting(txn, "b.key", "", 0, &err), DS_OK);
    assert_int_equal(ds_put_setting(txn, "", "x", 1, &err), DS_EINVAL);
    assert_int_equal(ds_put_run(txn, "aa", 2, "{}", 2, &err), DS_OK);

    simple_service(&svc, "aa", "m1");
    put_service(txn, &svc);
    simple_service(&svc, "bb", NULL);
    put_service(txn, &svc);
    simple_service(&svc, "cc", "m3");
    put_service(txn, &svc);
    commit(txn);

    txn = begin(st, 0);
    assert_int_equal(ds_get_setting(txn, "a.key", &val, &err), DS_OK);
    assert_true(str_is(val, "one"));
    assert_int_equal(ds_get_setting(txn, "b.key", &val, &err), DS_OK);
    assert_int_equal(val.len, 0);
    assert_int_equal(ds_get_setting(txn, "zz", &val, &err), DS_NOTFOUND);
    assert_msg(&err, "setting \"zz\" not found");
    assert_int_equal(ds_get_run(txn, "aa", 2, &val, &err), DS_OK);
    assert_true(str_is(val, "{}"));

    n = 0;
    assert_int_equal(ds_foreach_service(txn, count_service, &n, &err),
                     DS_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(ds_foreach_token(txn, find_token, &n, &err), DS_OK);
    assert_int_equal(n, 1);
    n = 0;
    assert_int_equal(ds_foreach_model(txn, count_model, &n, &err), DS_OK);
    assert_int_equal(n, 2);
    n = 0;
    assert_int_equal(ds_foreach_setting(txn, check_setting, &n, &err),
                     DS_OK);
    assert_int_equal(n, 2);
    ds_txn_abort(txn);

    txn = begin(st, 1);
    assert_int_equal(ds_del_token(txn, hash, &err), DS_OK);
    assert_int_equal(ds_del_token(txn, hash, &err), DS_NOTFOUND);
    assert_msg(&err, "not found");
    assert_int_equal(ds_get_token(txn, hash, &got, &err), DS_NOTFOUND);
    assert_int_equal(ds_del_run(txn, "aa", 2, &err), DS_OK);
    assert_int_equal(ds_del_run(txn, "aa", 2, &err), DS_NOTFOUND);
    commit(txn);

    ds_state_close(st);
}


/* ---- LMDB: a reader in another process than the writer ----------------- */

/*
 * The writer's part: this program run again with --child-write, in a
 * fresh process (exec, not only fork, so that valgrind and the cmocka
 * state of the parent stay out of it).
 */
static int
child_write(const char *dir, const char *name)
{
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_state_t   *st;
    ds_service_t  svc;

    if (ds_state_open(&st, dir, DS_STATE_CREATE, 0660, &err) != DS_OK) {
        fprintf(stderr, "child: %s\n", err.msg);
        return 1;
    }

    ds_service_init(&svc);
    svc.name.data = name;
    svc.name.len = (uint32_t) strlen(name);

    if (ds_txn_begin(st, 1, &txn, &err) != DS_OK
        || ds_put_service(txn, &svc, &err) != DS_OK
        || ds_txn_commit(txn, &err) != DS_OK)
    {
        fprintf(stderr, "child: %s\n", err.msg);
        ds_state_close(st);
        return 1;
    }

    ds_state_close(st);
    return 0;
}


static const char  *self_path;

/* runs a write in another process, as controld would; its exit status */
static int
write_in_child(const char *name)
{
    int    status;
    pid_t  pid;

    fflush(NULL);

    pid = fork();
    if (pid == -1) {
        return -1;
    }

    if (pid == 0) {
        execl(self_path, self_path, "--child-write", state_dir, name,
              (char *) NULL);
        _exit(127);
    }

    if (waitpid(pid, &status, 0) != pid) {
        return -1;
    }

    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}


/*
 * What the module's per-worker cache relies on: the id of the newest
 * commit without a transaction, and records copied out of the map that
 * stay intact after the transaction ends and later commits.
 */
static void
test_state_reader_copies(ds_state_t *rd)
{
    uint64_t      id;
    ds_buf_t      buf = { 0 };
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_service_t  svc;

    txn = begin(rd, 0);
    id = ds_state_last_txnid(rd);
    assert_true(id > 0);
    assert_int_equal(id, ds_txn_id(txn));

    assert_int_equal(ds_copy_service(txn, "cc", 2, &svc, &buf, &err), DS_OK);
    assert_true((const uint8_t *) svc.name.data >= buf.data
                && (const uint8_t *) svc.name.data < buf.data + buf.len);
    assert_int_equal(ds_copy_service(txn, "zz", 2, &svc, &buf, &err),
                     DS_NOTFOUND);
    assert_int_equal(ds_copy_service(txn, "cc", 2, &svc, &buf, &err), DS_OK);
    ds_txn_abort(txn);

    /* a commit elsewhere: the newest id moves, the copy does not */
    assert_int_equal(write_in_child("dd"), 0);
    assert_true(ds_state_last_txnid(rd) > id);
    assert_int_equal(svc.name.len, 2);
    assert_memory_equal(svc.name.data, "cc", 2);
    assert_int_equal(svc.uid, 3);

    ds_buf_free(&buf);
}


static void
test_state_reader(void **state)
{
    int           i;
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_state_t   *rd, *st;
    ds_service_t  svc;

    (void) state;

    /* not initialized: no directory, then an empty directory */
    assert_int_equal(ds_state_open(&rd, state_dir, DS_STATE_RDONLY, 0660,
                                   &err), DS_ERROR);
    assert_msg(&err, "is not initialized");
    assert_null(rd);

    assert_int_equal(mkdir(state_dir, 0700), 0);
    assert_int_equal(ds_state_open(&rd, state_dir, DS_STATE_RDONLY, 0660,
                                   &err), DS_ERROR);
    assert_msg(&err, "is not initialized");

    assert_int_equal(write_in_child("aa"), 0);

    assert_int_equal(ds_state_open(&rd, state_dir, DS_STATE_RDONLY, 0660,
                                   &err), DS_OK);

    assert_int_equal(ds_txn_begin(rd, 1, &txn, &err), DS_EINVAL);
    assert_msg(&err, "read-only");

    txn = begin(rd, 0);
    assert_int_equal(ds_get_service(txn, "aa", 2, &svc, &err), DS_OK);
    assert_int_equal(ds_get_service(txn, "bb", 2, &svc, &err), DS_NOTFOUND);

    /* a snapshot: a commit made meanwhile is not seen ... */
    assert_int_equal(write_in_child("bb"), 0);
    assert_int_equal(ds_get_service(txn, "bb", 2, &svc, &err), DS_NOTFOUND);

    /* ... until the transaction is reset and renewed, as per request */
    ds_txn_reset(txn);
    assert_int_equal(ds_txn_renew(txn, &err), DS_OK);
    assert_int_equal(ds_get_service(txn, "bb", 2, &svc, &err), DS_OK);
    assert_int_equal(svc.uid, 2);

    for (i = 0; i < 3; i++) {
        ds_txn_reset(txn);
        assert_int_equal(ds_txn_renew(txn, &err), DS_OK);
    }

    /* a reset transaction can be committed (= ended) too */
    ds_txn_reset(txn);
    assert_int_equal(ds_txn_commit(txn, &err), DS_OK);

    assert_int_equal(ds_state_reader_check(rd), 0);

    /* a reader does not block the writer, another process */
    txn = begin(rd, 0);
    assert_int_equal(write_in_child("cc"), 0);
    ds_txn_abort(txn);

    test_state_reader_copies(rd);

    ds_state_close(rd);

    /* the writer in this process again */
    st = open_writer();
    txn = begin(st, 0);
    assert_int_equal(ds_get_service(txn, "cc", 2, &svc, &err), DS_OK);
    assert_int_equal(svc.uid, 3);
    ds_txn_abort(txn);
    ds_state_close(st);
}


/* writes a meta record behind the library's back */
static void
put_meta(const char *key, const void *data, size_t len)
{
    MDB_env  *env;
    MDB_txn  *txn;
    MDB_dbi   dbi;
    MDB_val   k, v;

    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, state_dir, 0, 0660), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);

    k.mv_data = (void *) key;
    k.mv_size = strlen(key);
    v.mv_data = (void *) data;
    v.mv_size = len;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}


static void
set_schema(uint32_t schema)
{
    uint8_t  b[4];

    b[0] = (uint8_t) schema;
    b[1] = (uint8_t) (schema >> 8);
    b[2] = (uint8_t) (schema >> 16);
    b[3] = (uint8_t) (schema >> 24);

    put_meta("schema", b, sizeof(b));
}


/* every slot taken: DS_EFULL, and nothing changes */
static void
test_state_full(void **state)
{
    uint8_t      *bits;
    ds_err_t      err;
    ds_txn_t     *txn;
    ds_state_t   *st;
    ds_replica_t  r;
    ds_service_t  svc;

    (void) state;

    st = open_writer();
    txn = begin(st, 1);
    simple_service(&svc, "aa", NULL);
    put_service(txn, &svc);
    commit(txn);
    ds_state_close(st);

    bits = malloc(DS_REPLICA_SLOTS_MAX / 8);
    assert_non_null(bits);
    memset(bits, 0xff, DS_REPLICA_SLOTS_MAX / 8);
    put_meta("slots.s", bits, DS_SERVICE_SLOTS_MAX / 8);
    put_meta("slots.r", bits, DS_REPLICA_SLOTS_MAX / 8);
    free(bits);

    st = open_writer();
    txn = begin(st, 1);

    simple_service(&svc, "bb", NULL);
    assert_int_equal(ds_put_service(txn, &svc, &err), DS_EFULL);
    assert_msg(&err, "no free service slot for \"bb\": all 65536 are in use");
    assert_int_equal(ds_get_service(txn, "bb", 2, &svc, &err), DS_NOTFOUND);

    /* an existing service keeps its slot */
    simple_service(&svc, "aa", NULL);
    put_service(txn, &svc);
    assert_int_equal(svc.slot, 0);

    make_replica(&r, "10.0.0.1:80", DS_REPLICA_READY);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, &r, 1, &err), DS_EFULL);
    assert_msg(&err, "no free replica slot for service \"aa\"");

    /* a corrupt bitmap is reported, not trusted */
    ds_txn_abort(txn);
    ds_state_close(st);

    bits = calloc(1, DS_REPLICA_SLOTS_MAX / 8 + 1);
    assert_non_null(bits);
    put_meta("slots.r", bits, DS_REPLICA_SLOTS_MAX / 8 + 1);
    free(bits);

    st = open_writer();
    txn = begin(st, 1);
    assert_int_equal(ds_put_replicas(txn, "aa", 2, &r, 1, &err), DS_EINVAL);
    assert_msg(&err, "meta \"slots.r\" is corrupt");
    ds_txn_abort(txn);
    ds_state_close(st);
}


static void
test_state_schema_guard(void **state)
{
    ds_err_t     err;
    ds_state_t  *st;

    (void) state;

    st = open_writer();
    ds_state_close(st);

    set_schema(2);

    assert_int_equal(ds_state_open(&st, state_dir, DS_STATE_CREATE, 0660,
                                   &err), DS_ERROR);
    assert_string_equal(err.msg,
                        "state schema 2 is newer than this program (1)");
    assert_null(st);

    assert_int_equal(ds_state_open(&st, state_dir, DS_STATE_RDONLY, 0660,
                                   &err), DS_ERROR);
    assert_string_equal(err.msg,
                        "state schema 2 is newer than this program (1)");

    set_schema(1);
    st = open_writer();
    ds_state_close(st);
}



/* a copy of FILE renamed over it: a new inode at the same path, as an
 * operator restoring a backup makes */
static void
replace_by_copy(const char *file)
{
    char     tmp[160], buf[65536];
    FILE    *in, *out;
    size_t   n;

    snprintf(tmp, sizeof(tmp), "%s.restore", file);
    in = fopen(file, "rb");
    out = fopen(tmp, "wb");
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        assert_int_equal(fwrite(buf, 1, n, out), n);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);
    assert_int_equal(rename(tmp, file), 0);
}


/* data.mdb or lock.mdb replaced or removed: the environment open on the
 * old file says so, and names the file; one opened again is fine */
static void
test_state_files(void **state)
{
    ds_state_t  *st, *rd;
    ds_err_t     err;
    char         data[128], lock[128];

    (void) state;

    snprintf(data, sizeof(data), "%s/data.mdb", state_dir);
    snprintf(lock, sizeof(lock), "%s/lock.mdb", state_dir);

    st = open_writer();
    assert_int_equal(ds_state_open(&rd, state_dir, DS_STATE_RDONLY, 0, &err),
                     DS_OK);
    assert_int_equal(ds_state_check_files(st, &err), DS_OK);
    assert_int_equal(ds_state_check_files(rd, &err), DS_OK);

    replace_by_copy(data);
    assert_int_equal(ds_state_check_files(st, &err), DS_ERROR);
    assert_non_null(strstr(err.msg, "data.mdb was replaced"));
    assert_int_equal(ds_state_check_files(rd, &err), DS_ERROR);
    assert_non_null(strstr(err.msg, data));
    ds_state_close(rd);
    ds_state_close(st);

    st = open_writer();
    assert_int_equal(ds_state_check_files(st, &err), DS_OK);

    replace_by_copy(lock);
    assert_int_equal(ds_state_check_files(st, &err), DS_ERROR);
    assert_non_null(strstr(err.msg, "lock.mdb was replaced"));
    ds_state_close(st);

    st = open_writer();
    assert_int_equal(ds_state_check_files(st, &err), DS_OK);
    assert_int_equal(unlink(data), 0);
    assert_int_equal(ds_state_check_files(st, &err), DS_ERROR);
    assert_non_null(strstr(err.msg, "data.mdb was removed"));
    ds_state_close(st);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_service_init),
        cmocka_unit_test(test_service_roundtrip),
        cmocka_unit_test(test_service_decode_rejects),
        cmocka_unit_test(test_service_routing),
        cmocka_unit_test(test_budget_codec),
        cmocka_unit_test(test_service_encode_rejects),
        cmocka_unit_test(test_replicas_roundtrip),
        cmocka_unit_test(test_replicas_rejects),
        cmocka_unit_test(test_token_roundtrip),
        cmocka_unit_test(test_token_rejects),
        cmocka_unit_test(test_token_teams),
        cmocka_unit_test(test_model_roundtrip),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_ct_equal),
        cmocka_unit_test(test_token_generate),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_run_names),
        cmocka_unit_test_setup_teardown(test_state_open_while_committing,
                                        dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_service, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_uid_slot, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_project_models,
                                        dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_models, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_replicas, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_delete_cascades,
                                        dir_setup, dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_misc, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_reader, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_schema_guard, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_full, dir_setup,
                                        dir_teardown),
        cmocka_unit_test_setup_teardown(test_state_files, dir_setup,
                                        dir_teardown),
    };

    if (argc == 4 && strcmp(argv[1], "--child-write") == 0) {
        return child_write(argv[2], argv[3]);
    }

    self_path = argv[0];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
