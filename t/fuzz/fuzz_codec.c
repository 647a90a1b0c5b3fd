/*
 * libFuzzer target for the record codec.  The first byte picks the
 * decoder, the rest is the record.  What decodes must re-encode to the
 * same bytes (the encoding is canonical) and decode again to the same
 * values; an address that parses must format and parse back the same.
 *
 * Built by the Makefile (make fuzz-smoke) with clang
 * -fsanitize=fuzzer,address,undefined and every common source; run as
 * build/fuzz/fuzz_codec -max_total_time=60 CORPUS_DIR.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_state.h"


#define check(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fuzz_codec: %s:%d: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                   \
            abort();                                                          \
        }                                                                     \
    } while (0)


static int
str_eq(ds_str_t a, ds_str_t b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}


static int
routing_eq(const ds_routing_t *a, const ds_routing_t *b)
{
    return a->affinity == b->affinity && a->prefix_bytes == b->prefix_bytes
           && a->load_factor == b->load_factor
           && str_eq(a->session_header, b->session_header);
}


static void
check_same_bytes(const ds_buf_t *b, const uint8_t *data, size_t size)
{
    check(!b->failed);
    check(b->len == size);
    check(memcmp(b->data, data, size) == 0);
}


static void
fuzz_service(const uint8_t *data, size_t size)
{
    uint32_t      i;
    ds_buf_t      b;
    ds_err_t      err;
    ds_service_t  s1, s2;

    if (ds_service_decode(data, size, &s1, &err) != DS_OK) {
        check(err.msg[0] != '\0');
        return;
    }

    memset(&b, 0, sizeof(b));
    check(ds_service_encode(&s1, &b, &err) == DS_OK);
    check_same_bytes(&b, data, size);
    check(ds_service_decode(b.data, b.len, &s2, &err) == DS_OK);

    check(str_eq(s1.name, s2.name));
    check(str_eq(s1.model, s2.model));
    check(str_eq(s1.model_prefix, s2.model_prefix));
    check(s1.model_format == s2.model_format);
    check(routing_eq(&s1.routing, &s2.routing));
    check(s1.uid == s2.uid && s1.slot == s2.slot && s1.flags == s2.flags);
    check(s1.max_body_size == s2.max_body_size);
    check(s1.read_timeout_ms == s2.read_timeout_ms);
    check(s1.connect_timeout_ms == s2.connect_timeout_ms);
    check(s1.n_rate_limits == s2.n_rate_limits);

    for (i = 0; i < s1.n_rate_limits; i++) {
        check(str_eq(s1.rate_limits[i].prefix, s2.rate_limits[i].prefix));
        check(str_eq(s1.rate_limits[i].header, s2.rate_limits[i].header));
        check(s1.rate_limits[i].key_type == s2.rate_limits[i].key_type);
        check(s1.rate_limits[i].rps_milli == s2.rate_limits[i].rps_milli);
        check(s1.rate_limits[i].burst == s2.rate_limits[i].burst);
    }

    ds_buf_free(&b);
}


static void
fuzz_replicas(const uint8_t *data, size_t size)
{
    uint32_t          i;
    ds_buf_t          b;
    ds_err_t          err;
    ds_replica_t     *r, x;
    ds_replica_set_t  s1, s2;

    if (ds_replicas_decode(data, size, &s1, &err) != DS_OK) {
        check(err.msg[0] != '\0');
        return;
    }

    r = malloc((s1.count ? s1.count : 1) * sizeof(ds_replica_t));
    check(r != NULL);

    for (i = 0; i < s1.count; i++) {
        ds_replica_at(&s1, i, &r[i]);
        check(r[i].state == DS_REPLICA_READY
              || r[i].state == DS_REPLICA_DRAINING);
        check(r[i].family == DS_AF_INET || r[i].family == DS_AF_INET6);
    }

    memset(&b, 0, sizeof(b));
    check(ds_replicas_encode(s1.generation, r, s1.count, &b, &err) == DS_OK);
    check_same_bytes(&b, data, size);
    check(ds_replicas_decode(b.data, b.len, &s2, &err) == DS_OK);
    check(s2.generation == s1.generation && s2.count == s1.count);

    for (i = 0; i < s2.count; i++) {
        ds_replica_at(&s2, i, &x);
        check(x.uid == r[i].uid && x.slot == r[i].slot);
        check(x.version == r[i].version && x.weight == r[i].weight);
        check(x.state == r[i].state && x.family == r[i].family);
        check(x.port == r[i].port);
        check(memcmp(x.addr, r[i].addr, sizeof(x.addr)) == 0);
    }

    free(r);
    ds_buf_free(&b);
}


static void
fuzz_token(const uint8_t *data, size_t size)
{
    uint32_t    i, off;
    ds_buf_t    b;
    ds_err_t    err;
    ds_str_t    name;
    ds_token_t  t1, t2;

    if (ds_token_decode(data, size, &t1, &err) != DS_OK) {
        check(err.msg[0] != '\0');
        return;
    }

    /* every name of the scope is allowed, and the walk ends on time */
    off = 0;
    for (i = 0; i < t1.n_services; i++) {
        check(ds_token_scope_next(&t1, &off, &name));
        check(name.len > 0 && name.len <= DS_NAME_MAX);
        check(ds_token_allows(&t1, name.data, name.len));
    }
    check(!ds_token_scope_next(&t1, &off, &name));
    check(off == t1.scope_len);

    memset(&b, 0, sizeof(b));
    check(ds_token_encode(&t1, NULL, &b, &err) == DS_OK);
    check_same_bytes(&b, data, size);
    check(ds_token_decode(b.data, b.len, &t2, &err) == DS_OK);

    check(memcmp(t1.hash, t2.hash, DS_TOKEN_HASH_LEN) == 0);
    check(str_eq(t1.name, t2.name));
    check(t1.flags == t2.flags);
    check(t1.created == t2.created && t1.expires == t2.expires);
    check(t1.n_services == t2.n_services);
    check(t1.scope_len == t2.scope_len);
    check(memcmp(t1.scope, t2.scope, t1.scope_len) == 0);

    ds_buf_free(&b);
}


static void
fuzz_model(const uint8_t *data, size_t size)
{
    ds_buf_t    b;
    ds_err_t    err;
    ds_model_t  m1, m2;

    if (ds_model_decode(data, size, &m1, &err) != DS_OK) {
        check(err.msg[0] != '\0');
        return;
    }

    memset(&b, 0, sizeof(b));
    check(ds_model_encode(&m1, &b, &err) == DS_OK);
    check_same_bytes(&b, data, size);
    check(ds_model_decode(b.data, b.len, &m2, &err) == DS_OK);

    check(str_eq(m1.name, m2.name));
    check(str_eq(m1.service, m2.service));
    check(str_eq(m1.prefix, m2.prefix));
    check(m1.format == m2.format && m1.created == m2.created);
    check(routing_eq(&m1.routing, &m2.routing));

    ds_buf_free(&b);
}


static void
fuzz_addr(const uint8_t *data, size_t size)
{
    char          buf[DS_REPLICA_ADDR_LEN];
    size_t        n;
    ds_replica_t  r1, r2;

    (void) ds_valid_run_name((const char *) data, size);

    memset(&r1, 0, sizeof(r1));
    if (ds_replica_parse_addr(&r1, (const char *) data, size) != DS_OK) {
        return;
    }

    check(r1.port != 0);
    check(r1.family == DS_AF_INET || r1.family == DS_AF_INET6);

    n = ds_replica_format_addr(&r1, buf, sizeof(buf));
    check(n > 0 && n < sizeof(buf) && buf[n] == '\0');

    memset(&r2, 0, sizeof(r2));
    check(ds_replica_parse_addr(&r2, buf, n) == DS_OK);
    check(r1.family == r2.family && r1.port == r2.port);
    check(memcmp(r1.addr, r2.addr, sizeof(r1.addr)) == 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }

    switch (data[0] % 5) {
    case 0:
        fuzz_service(data + 1, size - 1);
        break;
    case 1:
        fuzz_replicas(data + 1, size - 1);
        break;
    case 2:
        fuzz_token(data + 1, size - 1);
        break;
    case 3:
        fuzz_model(data + 1, size - 1);
        break;
    default:
        fuzz_addr(data + 1, size - 1);
        break;
    }

    return 0;
}
