/*
 * The codec of the hot-path records: services, replica sets, tokens and
 * models.  Little-endian binary, read and written byte by byte so that
 * neither alignment nor host byte order matter.
 *
 * Every record starts with an 8-byte header: a 4-byte magic, a u16
 * version and a u16 reserved (zero).  Strings are a u16 length followed
 * by that many bytes, not NUL-terminated.
 *
 *   service  "DSVC" 1 0
 *            u64 uid, u32 slot, u32 flags, u64 max_body_size,
 *            u32 read_timeout_ms, u32 connect_timeout_ms,
 *            u32 hold_max, u32 hold_timeout_ms, u16 model_format, u16 n_rate_limits,
 *            str name, str model, str model_prefix,
 *            n_rate_limits x { u16 key_type, u32 rps_milli, u32 burst,
 *                              str prefix, str header }
 *            "DSVC" 2 0 (a model with affinity routing; version 1
 *            otherwise, so that one service has one encoding): the same,
 *            then the routing tail
 *
 *            "DSVC" 3 0 (a model with a token budget): the same, then
 *            the routing tail (affinity may be none, all zero) and the
 *            budget tail
 *
 *   routing  u32 affinity, u32 prefix_bytes, u32 load_factor (x 1000),
 *            str session_header
 *
 *   budget   u32 rpm, u32 tpm, u64 tpd, u32 max_tokens
 *
 *   replicas "DRPS" 1 0
 *            u64 generation, u32 count, u32 reserved (0),
 *            count x 40-byte entries: u64 uid, u32 slot, u32 version,
 *            u16 weight, u8 state, u8 family, u16 port, 16 addr bytes
 *            (an inet address in the first 4, the rest zero), 2 pad (0)
 *
 *   token    "DTOK" 1 0
 *            32 hash bytes, u32 flags, u64 created, u64 expires,
 *            str name, u16 n_services, n_services x str (the scope,
 *            which runs to the end of the record)
 *            "DTOK" 2 0 (a user's token, or one of a project other than
 *            main; version 1 otherwise, so that one token has one
 *            encoding): the same with str user, str project after name
 *            "DTOK" 3 0 (a token with a budget): version 2's, then u32
 *            rpm, u32 tpm, u64 tpd before the scope count
 *
 *   member   "DMEM" 1 0
 *            u32 role, u64 created
 *
 *   model    "DMOD" 1 0
 *            u32 format, u64 created, str name, str service, str prefix
 *            "DMOD" 2 0 (affinity routing, as a service's): the same,
 *            then the routing tail
 *            "DMOD" 3 0 (a token budget, as a service's): the same, then
 *            the routing tail and the budget tail
 *
 *   cert     "DCRT" 1 0
 *            u64 uid, u32 flags, u64 not_after, str host,
 *            u32 cert length, cert bytes, u32 key length, key bytes
 *
 * Decoders take input from the map, which a bug or a newer program may
 * have filled with anything: they check every length, accept exactly
 * one encoding of each record (reserved and pad bytes zero, no trailing
 * bytes) and validate the result with the same rules as the encoders.
 * Hence encode(decode(x)) == x for every x that decodes.
 */

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_state.h"


#define DS_RECORD_VERSION       1
#define DS_HEADER_SIZE          8
#define DS_REPLICAS_HEADER_SIZE 24

#define DS_SERVICE_FLAGS_KNOWN                                               \
    (DS_SERVICE_AUTH | DS_SERVICE_HTTPS | DS_SERVICE_HTTPS_AUTO           \
     | DS_SERVICE_HOLD)
#define DS_TOKEN_FLAGS_KNOWN                                                 \
    (DS_TOKEN_ADMIN | DS_TOKEN_ALL_SERVICES | DS_TOKEN_USER)
#define DS_TOKEN_VERSION_TEAMS  2
#define DS_TOKEN_VERSION_BUDGET 3
#define DS_VERSION_ROUTING      2       /* services and models */
#define DS_VERSION_BUDGET       3       /* services and models */

#define DS_RUN_NAME_MIN         2
#define DS_RUN_NAME_MAX         41


/* a cursor over a record being decoded */
typedef struct {
    const uint8_t  *start;
    const uint8_t  *pos;
    const uint8_t  *end;
    const char     *record;         /* "service record", for messages */
    const char     *ctx;            /* "rate limit" inside an element */
    uint32_t        idx;            /* the element's index */
    ds_err_t       *err;
} ds_rd_t;


static void ds_err_set(ds_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));


static void
ds_err_set(ds_err_t *err, const char *fmt, ...)
{
    va_list  ap;

    if (err == NULL) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}


/* ---- buffer ------------------------------------------------------------ */

void
ds_buf_free(ds_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->failed = 0;
}


static int
ds_buf_reserve(ds_buf_t *b, size_t n)
{
    size_t    cap;
    uint8_t  *p;

    if (b->failed) {
        return -1;
    }

    if (b->cap - b->len >= n) {
        return 0;
    }

    cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = 1;
        return -1;
    }

    b->data = p;
    b->cap = cap;
    return 0;
}


int
ds_buf_set(ds_buf_t *b, const void *data, size_t len)
{
    b->failed = 0;
    b->len = 0;

    if (ds_buf_reserve(b, len ? len : 1) != 0) {
        return DS_ERROR;
    }

    memcpy(b->data, data, len);
    b->len = len;

    return DS_OK;
}


static void
ds_put_bytes(ds_buf_t *b, const void *p, size_t n)
{
    if (n == 0 || ds_buf_reserve(b, n) != 0) {
        return;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;
}


static void
ds_put_zero(ds_buf_t *b, size_t n)
{
    if (ds_buf_reserve(b, n) != 0) {
        return;
    }

    memset(b->data + b->len, 0, n);
    b->len += n;
}


static void
ds_put_le(ds_buf_t *b, uint64_t v, size_t n)
{
    uint8_t  tmp[8];
    size_t   i;

    for (i = 0; i < n; i++) {
        tmp[i] = (uint8_t) (v >> (8 * i));
    }

    ds_put_bytes(b, tmp, n);
}


#define ds_put_u8(b, v)     ds_put_le(b, v, 1)
#define ds_put_u16(b, v)    ds_put_le(b, v, 2)
#define ds_put_u32(b, v)    ds_put_le(b, v, 4)
#define ds_put_u64(b, v)    ds_put_le(b, v, 8)


/* the caller has checked that the length fits the limits (< 64 KiB) */
static void
ds_put_str(ds_buf_t *b, const ds_str_t *s)
{
    ds_put_u16(b, s->len);
    ds_put_bytes(b, s->data, s->len);
}


static void
ds_put_header_version(ds_buf_t *b, const char *magic, unsigned version)
{
    b->len = 0;
    b->failed = 0;
    ds_put_bytes(b, magic, 4);
    ds_put_u16(b, (uint16_t) version);
    ds_put_u16(b, 0);
}


static void
ds_put_header(ds_buf_t *b, const char *magic)
{
    ds_put_header_version(b, magic, DS_RECORD_VERSION);
}


static int
ds_buf_done(ds_buf_t *b, const char *record, ds_err_t *err)
{
    if (b->failed) {
        ds_err_set(err, "%s: out of memory", record);
        return DS_ERROR;
    }

    return DS_OK;
}


/* ---- little-endian loads ----------------------------------------------- */

static uint64_t
ds_le(const uint8_t *p, size_t n)
{
    uint64_t  v;
    size_t    i;

    v = 0;
    for (i = 0; i < n; i++) {
        v |= (uint64_t) p[i] << (8 * i);
    }

    return v;
}


/* ---- decoding cursor --------------------------------------------------- */

static void
ds_rd_init(ds_rd_t *rd, const void *data, size_t len, const char *record,
    ds_err_t *err)
{
    static const uint8_t  empty[1];

    /* no arithmetic on a null pointer, even of zero */
    rd->start = (data != NULL) ? data : empty;
    rd->pos = rd->start;
    rd->end = rd->start + len;
    rd->record = record;
    rd->ctx = NULL;
    rd->idx = 0;
    rd->err = err;
}


/* "rate limit 3 prefix" inside an element, "name" outside */
static const char *
ds_rd_where(ds_rd_t *rd, const char *what, char *buf, size_t size)
{
    if (rd->ctx == NULL) {
        return what;
    }

    snprintf(buf, size, "%s %u %s", rd->ctx, rd->idx, what);
    return buf;
}


static int
ds_rd_need(ds_rd_t *rd, size_t n, const char *what)
{
    char    buf[64];
    size_t  have;

    have = (size_t) (rd->end - rd->pos);
    if (have >= n) {
        return 0;
    }

    ds_err_set(rd->err, "%s: truncated at byte %zu reading %s "
               "(%zu bytes needed, %zu left)", rd->record,
               (size_t) (rd->pos - rd->start),
               ds_rd_where(rd, what, buf, sizeof(buf)), n, have);
    return -1;
}


static int
ds_rd_uint(ds_rd_t *rd, size_t n, uint64_t *v, const char *what)
{
    if (ds_rd_need(rd, n, what) != 0) {
        return -1;
    }

    *v = ds_le(rd->pos, n);
    rd->pos += n;
    return 0;
}


static int
ds_rd_u16(ds_rd_t *rd, uint16_t *v, const char *what)
{
    uint64_t  x;

    if (ds_rd_uint(rd, 2, &x, what) != 0) {
        return -1;
    }

    *v = (uint16_t) x;
    return 0;
}


static int
ds_rd_u32(ds_rd_t *rd, uint32_t *v, const char *what)
{
    uint64_t  x;

    if (ds_rd_uint(rd, 4, &x, what) != 0) {
        return -1;
    }

    *v = (uint32_t) x;
    return 0;
}


/*
 * A string whose length is out of [min, max] is refused before its
 * bytes are looked at: the message then says what was wrong with it
 * rather than what a misread length led to later.
 */
static int
ds_rd_str(ds_rd_t *rd, ds_str_t *s, size_t min, size_t max,
    const char *what)
{
    char      buf[64];
    uint16_t  len;

    if (ds_rd_u16(rd, &len, what) != 0) {
        return -1;
    }

    if (len < min) {
        ds_err_set(rd->err, "%s: %s is empty", rd->record,
                   ds_rd_where(rd, what, buf, sizeof(buf)));
        return -1;
    }

    if (len > max) {
        ds_err_set(rd->err, "%s: %s length %u exceeds %zu", rd->record,
                   ds_rd_where(rd, what, buf, sizeof(buf)), len, max);
        return -1;
    }

    if (ds_rd_need(rd, len, what) != 0) {
        return -1;
    }

    s->data = (const char *) rd->pos;
    s->len = len;
    rd->pos += len;
    return 0;
}


/* the header of a record of versions 1 .. max: *version gets which */
static int
ds_rd_header_version(ds_rd_t *rd, const char *magic, unsigned max,
    unsigned *version)
{
    unsigned  reserved;

    if (ds_rd_need(rd, DS_HEADER_SIZE, "the header") != 0) {
        return -1;
    }

    if (memcmp(rd->pos, magic, 4) != 0) {
        ds_err_set(rd->err, "%s: bad magic %02x %02x %02x %02x "
                   "(expected \"%s\")", rd->record, rd->pos[0], rd->pos[1],
                   rd->pos[2], rd->pos[3], magic);
        return -1;
    }

    *version = (unsigned) ds_le(rd->pos + 4, 2);
    reserved = (unsigned) ds_le(rd->pos + 6, 2);
    rd->pos += DS_HEADER_SIZE;

    if (*version < DS_RECORD_VERSION || *version > max) {
        ds_err_set(rd->err, "%s: version %u is not supported (only %u..%u)",
                   rd->record, *version, DS_RECORD_VERSION, max);
        return -1;
    }

    if (reserved != 0) {
        ds_err_set(rd->err, "%s: reserved header field is %u, not 0",
                   rd->record, reserved);
        return -1;
    }

    return 0;
}


static int
ds_rd_header(ds_rd_t *rd, const char *magic)
{
    unsigned  version;

    return ds_rd_header_version(rd, magic, DS_RECORD_VERSION, &version);
}


static int
ds_rd_end(ds_rd_t *rd)
{
    if (rd->pos != rd->end) {
        ds_err_set(rd->err, "%s: %zu trailing bytes after the record",
                   rd->record, (size_t) (rd->end - rd->pos));
        return -1;
    }

    return 0;
}


/* ---- validation shared by encoders and decoders ------------------------ */

/*
 * Checks one string against [min, max]; `ctx`/`idx` name the element it
 * belongs to ("rate limit 3") when there is one.
 */
static int
ds_check_str(const ds_str_t *s, size_t min, size_t max, const char *record,
    const char *ctx, uint32_t idx, const char *what, ds_err_t *err)
{
    char         where[64];
    const char  *why;

    /* on the hot path every record is valid: name the problem only when
     * there is one */
    if (s->len > 0 && s->data == NULL) {
        why = "has a length but no data";

    } else if (s->len < min) {
        why = "is empty";

    } else if (s->len > max) {
        why = NULL;

    } else {
        return 0;
    }

    if (ctx != NULL) {
        snprintf(where, sizeof(where), "%s %u %s", ctx, idx, what);
    } else {
        snprintf(where, sizeof(where), "%s", what);
    }

    if (why != NULL) {
        ds_err_set(err, "%s: %s %s", record, where, why);

    } else {
        ds_err_set(err, "%s: %s length %u exceeds %zu", record, where,
                   s->len, max);
    }

    return -1;
}


static int
ds_check_prefix(const ds_str_t *s, int required, const char *record,
    const char *ctx, uint32_t idx, const char *what, ds_err_t *err)
{
    if (ds_check_str(s, required ? 1 : 0, DS_PREFIX_MAX, record, ctx, idx,
                     what, err)
        != 0)
    {
        return -1;
    }

    if (s->len > 0 && s->data[0] != '/') {
        if (ctx != NULL) {
            ds_err_set(err, "%s: %s %u %s does not start with '/'", record,
                       ctx, idx, what);
        } else {
            ds_err_set(err, "%s: %s does not start with '/'", record, what);
        }
        return -1;
    }

    return 0;
}


static int
ds_check_rate_limit(const ds_rate_limit_t *rl, uint32_t i, const char *rec,
    ds_err_t *err)
{
    if (ds_check_prefix(&rl->prefix, 1, rec, "rate limit", i, "prefix", err)
        != 0)
    {
        return -1;
    }

    switch (rl->key_type) {

    case DS_RL_KEY_IP:
        if (rl->header.len != 0) {
            ds_err_set(err, "%s: rate limit %u keys on the client address "
                       "but names a header", rec, i);
            return -1;
        }
        break;

    case DS_RL_KEY_HEADER:
        if (ds_check_str(&rl->header, 1, DS_NAME_MAX, rec, "rate limit", i,
                         "header name", err)
            != 0)
        {
            return -1;
        }
        break;

    default:
        ds_err_set(err, "%s: rate limit %u key type %u is unknown", rec, i,
                   rl->key_type);
        return -1;
    }

    if (rl->rps_milli == 0) {
        ds_err_set(err, "%s: rate limit %u rate is zero", rec, i);
        return -1;
    }

    return 0;
}


/* NONE: all zero (one encoding); else every field in its range */
static int
ds_check_routing(const ds_routing_t *rt, const char *rec, ds_err_t *err)
{
    if (rt->affinity == DS_AFFINITY_NONE) {
        if (rt->prefix_bytes || rt->load_factor || rt->session_header.len) {
            ds_err_set(err, "%s: routing settings without an affinity",
                       rec);
            return -1;
        }
        return 0;
    }

    if (rt->affinity > DS_AFFINITY_SESSION) {
        ds_err_set(err, "%s: affinity %u is unknown", rec, rt->affinity);
        return -1;
    }

    if (rt->prefix_bytes == 0
        || rt->prefix_bytes > DS_AFFINITY_PREFIX_BYTES_MAX)
    {
        ds_err_set(err, "%s: affinity prefix bytes %u are not 1 to %u", rec,
                   rt->prefix_bytes, DS_AFFINITY_PREFIX_BYTES_MAX);
        return -1;
    }

    if (rt->load_factor < 1000
        || rt->load_factor > DS_AFFINITY_LOAD_FACTOR_MAX)
    {
        ds_err_set(err, "%s: affinity load factor %u is not 1000 to %u",
                   rec, rt->load_factor, DS_AFFINITY_LOAD_FACTOR_MAX);
        return -1;
    }

    /* the header is the session's only: prefix affinity names none */
    return ds_check_str(&rt->session_header,
                        rt->affinity == DS_AFFINITY_SESSION,
                        rt->affinity == DS_AFFINITY_SESSION ? DS_NAME_MAX : 0,
                        rec, NULL, 0, "session header", err);
}


static void
ds_put_routing(ds_buf_t *out, const ds_routing_t *rt)
{
    ds_put_u32(out, rt->affinity);
    ds_put_u32(out, rt->prefix_bytes);
    ds_put_u32(out, rt->load_factor);
    ds_put_str(out, &rt->session_header);
}


/* the routing tail of a version-2 record, which must have an affinity,
 * or of a version-3 one, which may not */
static int
ds_rd_routing(ds_rd_t *rd, ds_routing_t *rt, unsigned version)
{
    if (ds_rd_u32(rd, &rt->affinity, "affinity") != 0
        || ds_rd_u32(rd, &rt->prefix_bytes, "affinity prefix bytes") != 0
        || ds_rd_u32(rd, &rt->load_factor, "affinity load factor") != 0
        || ds_rd_str(rd, &rt->session_header, 0, DS_NAME_MAX,
                     "session header")
           != 0)
    {
        return -1;
    }

    if (rt->affinity == DS_AFFINITY_NONE && version == DS_VERSION_ROUTING) {
        /* one encoding: that is version 1's */
        ds_err_set(rd->err, "%s: version %u without an affinity",
                   rd->record, DS_VERSION_ROUTING);
        return -1;
    }

    return 0;
}


/* a model's budget: max_tokens within bounds and only with a limit (one
 * encoding); a token's (model 0) has no max_tokens */
static int
ds_check_budget(const ds_budget_t *b, int model, const char *rec,
    ds_err_t *err)
{
    if (!model && b->max_tokens != 0) {
        ds_err_set(err, "%s: a token's budget has no max_tokens", rec);
        return -1;
    }

    if (b->max_tokens > DS_BUDGET_MAX_TOKENS_MAX) {
        ds_err_set(err, "%s: budget max_tokens %u exceed %u", rec,
                   b->max_tokens, DS_BUDGET_MAX_TOKENS_MAX);
        return -1;
    }

    if (b->max_tokens != 0 && !ds_budget_set(b)) {
        ds_err_set(err, "%s: budget max_tokens without a limit", rec);
        return -1;
    }

    return 0;
}


static void
ds_put_budget(ds_buf_t *out, const ds_budget_t *b, int model)
{
    ds_put_u32(out, b->rpm);
    ds_put_u32(out, b->tpm);
    ds_put_u64(out, b->tpd);

    if (model) {
        ds_put_u32(out, b->max_tokens);
    }
}


/* the budget tail of a version-3 record, which must set a limit */
static int
ds_rd_budget(ds_rd_t *rd, ds_budget_t *b, int model)
{
    if (ds_rd_u32(rd, &b->rpm, "budget rpm") != 0
        || ds_rd_u32(rd, &b->tpm, "budget tpm") != 0
        || ds_rd_uint(rd, 8, &b->tpd, "budget tpd") != 0
        || (model && ds_rd_u32(rd, &b->max_tokens, "budget max_tokens") != 0))
    {
        return -1;
    }

    if (!ds_budget_set(b)) {
        /* one encoding: that is an older version's */
        ds_err_set(rd->err, "%s: version 3 without a budget", rd->record);
        return -1;
    }

    return 0;
}


/* the version of a service's or a model's record: one encoding each */
static unsigned
ds_model_version(const ds_routing_t *rt, const ds_budget_t *b)
{
    if (ds_budget_set(b)) {
        return DS_VERSION_BUDGET;
    }

    return rt->affinity != DS_AFFINITY_NONE ? DS_VERSION_ROUTING
                                            : DS_RECORD_VERSION;
}


static int
ds_check_service(const ds_service_t *svc, const char *rec, ds_err_t *err)
{
    uint32_t  i;

    if (ds_check_str(&svc->name, 1, DS_NAME_MAX, rec, NULL, 0, "name", err)
        != 0)
    {
        return -1;
    }

    if (svc->slot != DS_SLOT_NONE && svc->slot >= DS_SERVICE_SLOTS_MAX) {
        ds_err_set(err, "%s: slot %u is out of range (%u slots)", rec,
                   svc->slot, DS_SERVICE_SLOTS_MAX);
        return -1;
    }

    if (svc->flags & ~(uint32_t) DS_SERVICE_FLAGS_KNOWN) {
        ds_err_set(err, "%s: unknown flags 0x%x", rec,
                   svc->flags & ~(uint32_t) DS_SERVICE_FLAGS_KNOWN);
        return -1;
    }

    if (ds_check_str(&svc->model, 0, DS_NAME_MAX, rec, NULL, 0, "model name",
                     err)
        != 0
        || ds_check_prefix(&svc->model_prefix, 0, rec, NULL, 0,
                           "model prefix", err)
           != 0)
    {
        return -1;
    }

    if (svc->model.len == 0 && svc->model_prefix.len != 0) {
        ds_err_set(err, "%s: model prefix set without a model", rec);
        return -1;
    }

    if (ds_check_routing(&svc->routing, rec, err) != 0) {
        return -1;
    }

    if (svc->model.len == 0 && svc->routing.affinity != DS_AFFINITY_NONE) {
        ds_err_set(err, "%s: affinity routing set without a model", rec);
        return -1;
    }

    if (ds_check_budget(&svc->budget, 1, rec, err) != 0) {
        return -1;
    }

    if (svc->model.len == 0 && ds_budget_set(&svc->budget)) {
        ds_err_set(err, "%s: a token budget set without a model", rec);
        return -1;
    }

    if (svc->model_format > DS_MODEL_TGI) {
        ds_err_set(err, "%s: model format %u is unknown", rec,
                   svc->model_format);
        return -1;
    }

    if (svc->hold_max > DS_HOLD_MAX_LIMIT) {
        ds_err_set(err, "%s: hold max %u exceeds %u", rec, svc->hold_max,
                   DS_HOLD_MAX_LIMIT);
        return -1;
    }

    if (svc->n_rate_limits > DS_RATE_LIMITS_MAX) {
        ds_err_set(err, "%s: %u rate limits exceed the maximum of %u", rec,
                   svc->n_rate_limits, DS_RATE_LIMITS_MAX);
        return -1;
    }

    for (i = 0; i < svc->n_rate_limits; i++) {
        if (ds_check_rate_limit(&svc->rate_limits[i], i, rec, err) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
ds_check_replica(const ds_replica_t *r, uint32_t i, const char *rec,
    ds_err_t *err)
{
    if (r->state != DS_REPLICA_READY && r->state != DS_REPLICA_DRAINING) {
        ds_err_set(err, "%s: replica %u state %u is unknown", rec, i,
                   r->state);
        return -1;
    }

    if (r->family != DS_AF_INET && r->family != DS_AF_INET6) {
        ds_err_set(err, "%s: replica %u address family %u is unknown", rec,
                   i, r->family);
        return -1;
    }

    if (r->port == 0) {
        ds_err_set(err, "%s: replica %u port is 0", rec, i);
        return -1;
    }

    if (r->slot != DS_SLOT_NONE && r->slot >= DS_REPLICA_SLOTS_MAX) {
        ds_err_set(err, "%s: replica %u slot %u is out of range (%u slots)",
                   rec, i, r->slot, DS_REPLICA_SLOTS_MAX);
        return -1;
    }

    return 0;
}


static int
ds_check_token(const ds_token_t *tok, const char *rec, ds_err_t *err)
{
    if (ds_check_str(&tok->name, 1, DS_NAME_MAX, rec, NULL, 0, "name", err)
        != 0)
    {
        return -1;
    }

    if (tok->flags & ~(uint32_t) DS_TOKEN_FLAGS_KNOWN) {
        ds_err_set(err, "%s: unknown flags 0x%x", rec,
                   tok->flags & ~(uint32_t) DS_TOKEN_FLAGS_KNOWN);
        return -1;
    }

    if (ds_check_str(&tok->user, 0, DS_NAME_MAX, rec, NULL, 0, "user", err)
        != 0
        || ds_check_str(&tok->project, 0, DS_NAME_MAX, rec, NULL, 0,
                        "project", err)
           != 0)
    {
        return -1;
    }

    if (((tok->flags & DS_TOKEN_USER) != 0) != (tok->user.len != 0)) {
        ds_err_set(err, "%s: a user token needs its user, and only a user "
                   "token has one", rec);
        return -1;
    }

    if (tok->n_services > DS_TOKEN_SCOPE_MAX) {
        ds_err_set(err, "%s: %u services in the scope exceed the maximum "
                   "of %u", rec, tok->n_services, DS_TOKEN_SCOPE_MAX);
        return -1;
    }

    return 0;
}


static int
ds_check_model(const ds_model_t *m, const char *rec, ds_err_t *err)
{
    if (ds_check_str(&m->name, 1, DS_NAME_MAX, rec, NULL, 0, "name", err)
        != 0
        || ds_check_str(&m->service, 1, DS_NAME_MAX, rec, NULL, 0,
                        "service", err)
           != 0
        || ds_check_prefix(&m->prefix, 0, rec, NULL, 0, "prefix", err) != 0)
    {
        return -1;
    }

    if (m->format > DS_MODEL_TGI) {
        ds_err_set(err, "%s: format %u is unknown", rec, m->format);
        return -1;
    }

    if (ds_check_routing(&m->routing, rec, err) != 0) {
        return -1;
    }

    return ds_check_budget(&m->budget, 1, rec, err);
}


/* ---- services ---------------------------------------------------------- */

void
ds_service_init(ds_service_t *svc)
{
    memset(svc, 0, sizeof(*svc));

    svc->slot = DS_SLOT_NONE;
    svc->model_format = DS_MODEL_OPENAI;
    svc->max_body_size = DS_DEFAULT_MAX_BODY;
    svc->read_timeout_ms = DS_DEFAULT_READ_TIMEOUT_MS;
    svc->connect_timeout_ms = DS_DEFAULT_CONNECT_TIMEOUT_MS;
    svc->hold_max = DS_DEFAULT_HOLD_MAX;
    svc->hold_timeout_ms = DS_DEFAULT_HOLD_TIMEOUT_MS;
}


int
ds_service_encode(const ds_service_t *svc, ds_buf_t *out, ds_err_t *err)
{
    unsigned                version;
    uint32_t                i;
    const ds_rate_limit_t  *rl;

    if (ds_check_service(svc, "service record", err) != 0) {
        return DS_EINVAL;
    }

    version = ds_model_version(&svc->routing, &svc->budget);

    ds_put_header_version(out, "DSVC", version);
    ds_put_u64(out, svc->uid);
    ds_put_u32(out, svc->slot);
    ds_put_u32(out, svc->flags);
    ds_put_u64(out, svc->max_body_size);
    ds_put_u32(out, svc->read_timeout_ms);
    ds_put_u32(out, svc->connect_timeout_ms);
    ds_put_u32(out, svc->hold_max);
    ds_put_u32(out, svc->hold_timeout_ms);
    ds_put_u16(out, svc->model_format);
    ds_put_u16(out, svc->n_rate_limits);
    ds_put_str(out, &svc->name);
    ds_put_str(out, &svc->model);
    ds_put_str(out, &svc->model_prefix);

    for (i = 0; i < svc->n_rate_limits; i++) {
        rl = &svc->rate_limits[i];
        ds_put_u16(out, rl->key_type);
        ds_put_u32(out, rl->rps_milli);
        ds_put_u32(out, rl->burst);
        ds_put_str(out, &rl->prefix);
        ds_put_str(out, &rl->header);
    }

    if (version >= DS_VERSION_ROUTING) {
        ds_put_routing(out, &svc->routing);
    }

    if (version == DS_VERSION_BUDGET) {
        ds_put_budget(out, &svc->budget, 1);
    }

    return ds_buf_done(out, "service record", err);
}


static int
ds_rate_limit_decode(ds_rd_t *rd, ds_rate_limit_t *rl, uint32_t i)
{
    uint16_t  key_type;

    rd->ctx = "rate limit";
    rd->idx = i;

    if (ds_rd_u16(rd, &key_type, "key type") != 0
        || ds_rd_u32(rd, &rl->rps_milli, "rate") != 0
        || ds_rd_u32(rd, &rl->burst, "burst") != 0
        || ds_rd_str(rd, &rl->prefix, 1, DS_PREFIX_MAX, "prefix") != 0
        || ds_rd_str(rd, &rl->header, 0, DS_NAME_MAX, "header name") != 0)
    {
        return -1;
    }

    rd->ctx = NULL;
    rl->key_type = key_type;
    return 0;
}


int
ds_service_decode(const void *data, size_t len, ds_service_t *svc,
    ds_err_t *err)
{
    uint16_t  format, n;
    uint32_t  i;
    uint64_t  v;
    unsigned  version;
    ds_rd_t   rd;

    ds_rd_init(&rd, data, len, "service record", err);
    memset(svc, 0, sizeof(*svc));

    if (ds_rd_header_version(&rd, "DSVC", DS_VERSION_BUDGET, &version) != 0
        || ds_rd_uint(&rd, 8, &svc->uid, "uid") != 0
        || ds_rd_u32(&rd, &svc->slot, "slot") != 0
        || ds_rd_u32(&rd, &svc->flags, "flags") != 0
        || ds_rd_uint(&rd, 8, &v, "max body size") != 0
        || ds_rd_u32(&rd, &svc->read_timeout_ms, "read timeout") != 0
        || ds_rd_u32(&rd, &svc->connect_timeout_ms, "connect timeout") != 0
        || ds_rd_u32(&rd, &svc->hold_max, "hold max") != 0
        || ds_rd_u32(&rd, &svc->hold_timeout_ms, "hold timeout") != 0
        || ds_rd_u16(&rd, &format, "model format") != 0
        || ds_rd_u16(&rd, &n, "rate limit count") != 0)
    {
        return DS_EINVAL;
    }

    svc->max_body_size = v;
    svc->model_format = format;

    if (n > DS_RATE_LIMITS_MAX) {
        ds_err_set(err, "service record: %u rate limits exceed the maximum "
                   "of %u", n, DS_RATE_LIMITS_MAX);
        return DS_EINVAL;
    }

    svc->n_rate_limits = n;

    if (ds_rd_str(&rd, &svc->name, 1, DS_NAME_MAX, "name") != 0
        || ds_rd_str(&rd, &svc->model, 0, DS_NAME_MAX, "model name") != 0
        || ds_rd_str(&rd, &svc->model_prefix, 0, DS_PREFIX_MAX,
                     "model prefix")
           != 0)
    {
        return DS_EINVAL;
    }

    for (i = 0; i < n; i++) {
        if (ds_rate_limit_decode(&rd, &svc->rate_limits[i], i) != 0) {
            return DS_EINVAL;
        }
    }

    if (version >= DS_VERSION_ROUTING
        && ds_rd_routing(&rd, &svc->routing, version) != 0)
    {
        return DS_EINVAL;
    }

    if (version == DS_VERSION_BUDGET
        && ds_rd_budget(&rd, &svc->budget, 1) != 0)
    {
        return DS_EINVAL;
    }

    if (ds_rd_end(&rd) != 0
        || ds_check_service(svc, "service record", err) != 0)
    {
        return DS_EINVAL;
    }

    return DS_OK;
}


/* ---- replica sets ------------------------------------------------------ */

static void
ds_replica_put(ds_buf_t *b, const ds_replica_t *r)
{
    ds_put_u64(b, r->uid);
    ds_put_u32(b, r->slot);
    ds_put_u32(b, r->version);
    ds_put_u16(b, r->weight);
    ds_put_u8(b, r->state);
    ds_put_u8(b, r->family);
    ds_put_u16(b, r->port);

    /* an inet address is normalized: only its 4 bytes, then zeros */
    if (r->family == DS_AF_INET) {
        ds_put_bytes(b, r->addr, 4);
        ds_put_zero(b, 12);

    } else {
        ds_put_bytes(b, r->addr, 16);
    }

    ds_put_zero(b, 2);
}


int
ds_replicas_encode(uint64_t generation, const ds_replica_t *r, uint32_t n,
    ds_buf_t *out, ds_err_t *err)
{
    uint32_t  i;

    if (n > DS_REPLICAS_MAX) {
        ds_err_set(err, "replica set: %u replicas exceed the maximum of %u",
                   n, DS_REPLICAS_MAX);
        return DS_EINVAL;
    }

    for (i = 0; i < n; i++) {
        if (ds_check_replica(&r[i], i, "replica set", err) != 0) {
            return DS_EINVAL;
        }
    }

    ds_put_header(out, "DRPS");
    ds_put_u64(out, generation);
    ds_put_u32(out, n);
    ds_put_u32(out, 0);

    if (ds_buf_reserve(out, (size_t) n * DS_REPLICA_WIRE_SIZE) == 0) {
        for (i = 0; i < n; i++) {
            ds_replica_put(out, &r[i]);
        }
    }

    return ds_buf_done(out, "replica set", err);
}


void
ds_replica_at(const ds_replica_set_t *set, uint32_t i, ds_replica_t *r)
{
    const uint8_t  *p;

    p = set->entries + (size_t) i * DS_REPLICA_WIRE_SIZE;

    r->uid = ds_le(p, 8);
    r->slot = (uint32_t) ds_le(p + 8, 4);
    r->version = (uint32_t) ds_le(p + 12, 4);
    r->weight = (uint16_t) ds_le(p + 16, 2);
    r->state = p[18];
    r->family = p[19];
    r->port = (uint16_t) ds_le(p + 20, 2);
    memcpy(r->addr, p + 22, 16);
}


static int
ds_replica_entry_check(const ds_replica_set_t *set, uint32_t i,
    ds_err_t *err)
{
    static const uint8_t  zero[12];
    const uint8_t        *p;
    ds_replica_t          r;

    p = set->entries + (size_t) i * DS_REPLICA_WIRE_SIZE;
    ds_replica_at(set, i, &r);

    if (ds_check_replica(&r, i, "replica set", err) != 0) {
        return -1;
    }

    if (r.family == DS_AF_INET && memcmp(p + 26, zero, 12) != 0) {
        ds_err_set(err, "replica set: replica %u inet address has non-zero "
                   "bytes after the first 4", i);
        return -1;
    }

    if (p[38] != 0 || p[39] != 0) {
        ds_err_set(err, "replica set: replica %u padding is not zero", i);
        return -1;
    }

    return 0;
}


int
ds_replicas_decode(const void *data, size_t len, ds_replica_set_t *set,
    ds_err_t *err)
{
    uint32_t  i, count, reserved;
    size_t    size;
    ds_rd_t   rd;

    ds_rd_init(&rd, data, len, "replica set", err);
    memset(set, 0, sizeof(*set));

    if (ds_rd_header(&rd, "DRPS") != 0
        || ds_rd_uint(&rd, 8, &set->generation, "generation") != 0
        || ds_rd_u32(&rd, &count, "count") != 0
        || ds_rd_u32(&rd, &reserved, "reserved") != 0)
    {
        return DS_EINVAL;
    }

    if (reserved != 0) {
        ds_err_set(err, "replica set: reserved field is %u, not 0",
                   reserved);
        return DS_EINVAL;
    }

    if (count > DS_REPLICAS_MAX) {
        ds_err_set(err, "replica set: %u replicas exceed the maximum of %u",
                   count, DS_REPLICAS_MAX);
        return DS_EINVAL;
    }

    size = (size_t) count * DS_REPLICA_WIRE_SIZE;
    if (ds_rd_need(&rd, size, "replica entries") != 0) {
        return DS_EINVAL;
    }

    set->count = count;
    set->entries = rd.pos;
    rd.pos += size;

    if (ds_rd_end(&rd) != 0) {
        return DS_EINVAL;
    }

    for (i = 0; i < count; i++) {
        if (ds_replica_entry_check(set, i, err) != 0) {
            return DS_EINVAL;
        }
    }

    return DS_OK;
}


/* ---- tokens ------------------------------------------------------------ */

/*
 * Walks an encoded scope of n names and checks it: each name non-empty,
 * within DS_NAME_MAX, and nothing after the last.
 */
static int
ds_scope_check(const uint8_t *p, size_t len, uint32_t n, const char *rec,
    ds_err_t *err)
{
    uint32_t  i;
    ds_str_t  name;
    ds_rd_t   rd;

    ds_rd_init(&rd, p, len, rec, err);

    rd.ctx = "scope";

    for (i = 0; i < n; i++) {
        rd.idx = i;

        if (ds_rd_str(&rd, &name, 1, DS_NAME_MAX, "service") != 0) {
            return -1;
        }
    }

    return ds_rd_end(&rd);
}


int
ds_token_encode(const ds_token_t *tok, const ds_str_t *services,
    ds_buf_t *out, ds_err_t *err)
{
    int       teams, budget;
    uint32_t  i;

    if (ds_check_token(tok, "token record", err) != 0) {
        return DS_EINVAL;
    }

    if (services != NULL) {
        for (i = 0; i < tok->n_services; i++) {
            if (ds_check_str(&services[i], 1, DS_NAME_MAX, "token record",
                             "scope", i, "service", err)
                != 0)
            {
                return DS_EINVAL;
            }
        }

    } else {
        /* re-encoding a decoded token: its scope is already encoded */
        if (tok->scope_len > 0 && tok->scope == NULL) {
            ds_err_set(err, "token record: scope has a length but no data");
            return DS_EINVAL;
        }

        if (ds_scope_check(tok->scope, tok->scope_len, tok->n_services,
                           "token record", err)
            != 0)
        {
            return DS_EINVAL;
        }
    }

    if (ds_check_budget(&tok->budget, 0, "token record", err) != 0) {
        return DS_EINVAL;
    }

    budget = ds_budget_set(&tok->budget);
    teams = budget || tok->user.len != 0 || tok->project.len != 0;

    ds_put_header_version(out, "DTOK", budget ? DS_TOKEN_VERSION_BUDGET
                                       : teams ? DS_TOKEN_VERSION_TEAMS
                                       : DS_RECORD_VERSION);
    ds_put_bytes(out, tok->hash, DS_TOKEN_HASH_LEN);
    ds_put_u32(out, tok->flags);
    ds_put_u64(out, tok->created);
    ds_put_u64(out, tok->expires);
    ds_put_str(out, &tok->name);

    if (teams) {
        ds_put_str(out, &tok->user);
        ds_put_str(out, &tok->project);
    }

    if (budget) {
        ds_put_budget(out, &tok->budget, 0);
    }

    ds_put_u16(out, tok->n_services);

    if (services != NULL) {
        for (i = 0; i < tok->n_services; i++) {
            ds_put_str(out, &services[i]);
        }

    } else {
        ds_put_bytes(out, tok->scope, tok->scope_len);
    }

    return ds_buf_done(out, "token record", err);
}


int
ds_token_decode(const void *data, size_t len, ds_token_t *tok,
    ds_err_t *err)
{
    uint16_t  n;
    unsigned  version;
    ds_rd_t   rd;

    ds_rd_init(&rd, data, len, "token record", err);
    memset(tok, 0, sizeof(*tok));
    /* a version-1 token has neither: empty, never NULL, for its readers */
    tok->user.data = "";
    tok->project.data = "";

    if (ds_rd_header_version(&rd, "DTOK", DS_TOKEN_VERSION_BUDGET, &version)
        != 0
        || ds_rd_need(&rd, DS_TOKEN_HASH_LEN, "hash") != 0)
    {
        return DS_EINVAL;
    }

    memcpy(tok->hash, rd.pos, DS_TOKEN_HASH_LEN);
    rd.pos += DS_TOKEN_HASH_LEN;

    if (ds_rd_u32(&rd, &tok->flags, "flags") != 0
        || ds_rd_uint(&rd, 8, &tok->created, "created") != 0
        || ds_rd_uint(&rd, 8, &tok->expires, "expires") != 0
        || ds_rd_str(&rd, &tok->name, 1, DS_NAME_MAX, "name") != 0)
    {
        return DS_EINVAL;
    }

    if (version >= DS_TOKEN_VERSION_TEAMS) {
        if (ds_rd_str(&rd, &tok->user, 0, DS_NAME_MAX, "user") != 0
            || ds_rd_str(&rd, &tok->project, 0, DS_NAME_MAX, "project") != 0)
        {
            return DS_EINVAL;
        }

        if (version == DS_TOKEN_VERSION_BUDGET) {
            if (ds_rd_budget(&rd, &tok->budget, 0) != 0) {
                return DS_EINVAL;
            }

        } else if (tok->user.len == 0 && tok->project.len == 0) {
            /* one encoding per token: this one is version 1's */
            ds_err_set(err, "token record: version 2 without a user or a "
                       "project");
            return DS_EINVAL;
        }
    }

    if (ds_rd_u16(&rd, &n, "scope count") != 0) {
        return DS_EINVAL;
    }

    tok->n_services = n;
    tok->scope = rd.pos;
    tok->scope_len = (uint32_t) (rd.end - rd.pos);

    if (ds_check_token(tok, "token record", err) != 0
        || ds_scope_check(tok->scope, tok->scope_len, n, "token record", err)
           != 0)
    {
        return DS_EINVAL;
    }

    return DS_OK;
}


int
ds_token_scope_next(const ds_token_t *tok, uint32_t *off, ds_str_t *name)
{
    uint32_t  len;

    if (*off + 2 > tok->scope_len) {
        return 0;
    }

    len = (uint32_t) ds_le(tok->scope + *off, 2);
    if (len > tok->scope_len - *off - 2) {
        return 0;
    }

    name->data = (const char *) tok->scope + *off + 2;
    name->len = len;
    *off += 2 + len;
    return 1;
}


void
ds_service_project(const char *name, size_t len, ds_str_t *project)
{
    size_t  i;

    project->data = name + len;
    project->len = 0;

    for (i = 0; i + 2 < len; i++) {
        if (name[i] == '-' && name[i + 1] == '-') {
            project->data = name + i + 2;
            project->len = (uint32_t) (len - i - 2);
            return;
        }
    }
}


size_t
ds_model_key(const char *project, size_t plen, const char *name, size_t len,
    char key[DS_MODEL_KEY_MAX])
{
    if (len == 0 || len > DS_NAME_MAX || plen > DS_NAME_MAX
        || memchr(name, '\0', len) != NULL
        || (plen > 0 && memchr(project, '\0', plen) != NULL))
    {
        return 0;
    }

    if (plen == 0) {
        memcpy(key, name, len);
        return len;
    }

    memcpy(key, project, plen);
    key[plen] = '\0';
    memcpy(key + plen + 1, name, len);

    return plen + 1 + len;
}


int
ds_token_allows(const ds_token_t *tok, const char *name, size_t len)
{
    uint32_t  i, off;
    ds_str_t  s, project;

    if (tok->flags & DS_TOKEN_ADMIN) {
        return 1;
    }

    if (tok->flags & DS_TOKEN_ALL_SERVICES) {
        ds_service_project(name, len, &project);
        /* a version-1 token's project has no data: no memcmp on NULL */
        if (project.len == tok->project.len
            && (project.len == 0
                || memcmp(project.data, tok->project.data, project.len) == 0))
        {
            return 1;
        }
        /* a scope it also names (controld writes none) still opens */
    }

    off = 0;

    for (i = 0; i < tok->n_services; i++) {
        if (!ds_token_scope_next(tok, &off, &s)) {
            return 0;
        }

        if (s.len == len && memcmp(s.data, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/* ---- members ----------------------------------------------------------- */

int
ds_member_encode(const ds_member_t *m, ds_buf_t *out, ds_err_t *err)
{
    if (m->role < DS_ROLE_USER || m->role > DS_ROLE_ADMIN) {
        ds_err_set(err, "member record: role %u is not one of %u..%u",
                   m->role, DS_ROLE_USER, DS_ROLE_ADMIN);
        return DS_EINVAL;
    }

    ds_put_header(out, "DMEM");
    ds_put_u32(out, m->role);
    ds_put_u64(out, m->created);

    return ds_buf_done(out, "member record", err);
}


int
ds_member_decode(const void *data, size_t len, ds_member_t *m,
    ds_err_t *err)
{
    ds_rd_t  rd;

    ds_rd_init(&rd, data, len, "member record", err);
    memset(m, 0, sizeof(*m));

    if (ds_rd_header(&rd, "DMEM") != 0
        || ds_rd_u32(&rd, &m->role, "role") != 0
        || ds_rd_uint(&rd, 8, &m->created, "created") != 0
        || ds_rd_end(&rd) != 0)
    {
        return DS_EINVAL;
    }

    if (m->role < DS_ROLE_USER || m->role > DS_ROLE_ADMIN) {
        ds_err_set(err, "member record: role %u is not one of %u..%u",
                   m->role, DS_ROLE_USER, DS_ROLE_ADMIN);
        return DS_EINVAL;
    }

    return DS_OK;
}


/* ---- models ------------------------------------------------------------ */

int
ds_model_encode(const ds_model_t *m, ds_buf_t *out, ds_err_t *err)
{
    unsigned  version;

    if (ds_check_model(m, "model record", err) != 0) {
        return DS_EINVAL;
    }

    version = ds_model_version(&m->routing, &m->budget);

    ds_put_header_version(out, "DMOD", version);
    ds_put_u32(out, m->format);
    ds_put_u64(out, m->created);
    ds_put_str(out, &m->name);
    ds_put_str(out, &m->service);
    ds_put_str(out, &m->prefix);

    if (version >= DS_VERSION_ROUTING) {
        ds_put_routing(out, &m->routing);
    }

    if (version == DS_VERSION_BUDGET) {
        ds_put_budget(out, &m->budget, 1);
    }

    return ds_buf_done(out, "model record", err);
}


int
ds_model_decode(const void *data, size_t len, ds_model_t *m, ds_err_t *err)
{
    unsigned  version;
    ds_rd_t   rd;

    ds_rd_init(&rd, data, len, "model record", err);
    memset(m, 0, sizeof(*m));

    if (ds_rd_header_version(&rd, "DMOD", DS_VERSION_BUDGET, &version) != 0
        || ds_rd_u32(&rd, &m->format, "format") != 0
        || ds_rd_uint(&rd, 8, &m->created, "created") != 0
        || ds_rd_str(&rd, &m->name, 1, DS_NAME_MAX, "name") != 0
        || ds_rd_str(&rd, &m->service, 1, DS_NAME_MAX, "service") != 0
        || ds_rd_str(&rd, &m->prefix, 0, DS_PREFIX_MAX, "prefix") != 0
        || (version >= DS_VERSION_ROUTING
            && ds_rd_routing(&rd, &m->routing, version) != 0)
        || (version == DS_VERSION_BUDGET
            && ds_rd_budget(&rd, &m->budget, 1) != 0)
        || ds_rd_end(&rd) != 0
        || ds_check_model(m, "model record", err) != 0)
    {
        return DS_EINVAL;
    }

    return DS_OK;
}


/* ---- certificates ------------------------------------------------------ */

#define DS_CERT_FLAGS_KNOWN     (DS_CERT_LOCAL | DS_CERT_ACME)

/* "*.a.b" or "a.b": lower-case DNS labels; a wildcard only in front */
static int
ds_check_cert(const ds_cert_t *c, const char *rec, ds_err_t *err)
{
    uint32_t     i;
    const char  *h;

    if (c->host.len == 0 || c->host.len > DS_HOST_MAX) {
        ds_err_set(err, "%s: host length %u is not 1 to %u", rec,
                   c->host.len, DS_HOST_MAX);
        return -1;
    }

    h = c->host.data;
    for (i = 0; i < c->host.len; i++) {
        if ((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= '0' && h[i] <= '9')
            || h[i] == '-' || (h[i] == '.' && i > 0 && h[i - 1] != '.')
            || (h[i] == '*' && i == 0 && c->host.len > 2 && h[1] == '.'))
        {
            continue;
        }
        ds_err_set(err, "%s: host \"%.*s\" is not a lower-case DNS name",
                   rec, (int) c->host.len, h);
        return -1;
    }

    if (c->flags & ~DS_CERT_FLAGS_KNOWN) {
        ds_err_set(err, "%s: unknown flags 0x%x", rec,
                   c->flags & ~DS_CERT_FLAGS_KNOWN);
        return -1;
    }

    if (c->cert.len == 0 || c->cert.len > DS_PEM_MAX
        || c->key.len == 0 || c->key.len > DS_PEM_MAX)
    {
        ds_err_set(err, "%s: certificate and key must be 1 to %u bytes",
                   rec, DS_PEM_MAX);
        return -1;
    }

    return 0;
}


int
ds_cert_encode(const ds_cert_t *c, ds_buf_t *out, ds_err_t *err)
{
    if (ds_check_cert(c, "certificate record", err) != 0) {
        return DS_EINVAL;
    }

    ds_put_header(out, "DCRT");
    ds_put_u64(out, c->uid);
    ds_put_u32(out, c->flags);
    ds_put_u64(out, c->not_after);
    ds_put_str(out, &c->host);
    ds_put_u32(out, c->cert.len);
    ds_put_bytes(out, c->cert.data, c->cert.len);
    ds_put_u32(out, c->key.len);
    ds_put_bytes(out, c->key.data, c->key.len);

    return ds_buf_done(out, "certificate record", err);
}


static int
ds_rd_blob(ds_rd_t *rd, ds_str_t *s, const char *what)
{
    if (ds_rd_u32(rd, &s->len, what) != 0) {
        return -1;
    }

    if (s->len > DS_PEM_MAX) {
        ds_err_set(rd->err, "%s: %s length %u exceeds %u", rd->record, what,
                   s->len, DS_PEM_MAX);
        return -1;
    }

    if (ds_rd_need(rd, s->len, what) != 0) {
        return -1;
    }

    s->data = (const char *) rd->pos;
    rd->pos += s->len;
    return 0;
}


int
ds_cert_decode(const void *data, size_t len, ds_cert_t *c, ds_err_t *err)
{
    ds_rd_t  rd;

    ds_rd_init(&rd, data, len, "certificate record", err);
    memset(c, 0, sizeof(*c));

    if (ds_rd_header(&rd, "DCRT") != 0
        || ds_rd_uint(&rd, 8, &c->uid, "uid") != 0
        || ds_rd_u32(&rd, &c->flags, "flags") != 0
        || ds_rd_uint(&rd, 8, &c->not_after, "not_after") != 0
        || ds_rd_str(&rd, &c->host, 1, DS_HOST_MAX, "host") != 0
        || ds_rd_blob(&rd, &c->cert, "certificate") != 0
        || ds_rd_blob(&rd, &c->key, "key") != 0
        || ds_rd_end(&rd) != 0
        || ds_check_cert(c, "certificate record", err) != 0)
    {
        return DS_EINVAL;
    }

    return DS_OK;
}


/* ---- addresses --------------------------------------------------------- */

static int
ds_parse_port(const char *s, size_t len, uint16_t *port)
{
    size_t    i;
    uint32_t  v;

    if (len == 0 || len > 5 || s[0] == '0') {
        return -1;
    }

    v = 0;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (uint32_t) (s[i] - '0');
    }

    if (v == 0 || v > 65535) {
        return -1;
    }

    *port = (uint16_t) v;
    return 0;
}


/*
 * "1.2.3.4:80" or "[::1]:80"; host names are not accepted: a replica
 * address is what the backend reports, and resolving here would block.
 */
int
ds_replica_parse_addr(ds_replica_t *r, const char *s, size_t len)
{
    char         host[64];
    const char  *colon, *hs;
    size_t       hlen;
    int          family;
    uint8_t      addr[16];
    uint16_t     port;

    if (len == 0) {
        return DS_EINVAL;
    }

    if (s[0] == '[') {
        colon = memchr(s, ']', len);
        if (colon == NULL || (size_t) (colon - s) + 1 >= len
            || colon[1] != ':')
        {
            return DS_EINVAL;
        }

        hs = s + 1;
        hlen = (size_t) (colon - hs);
        colon++;
        family = AF_INET6;

    } else {
        colon = memchr(s, ':', len);
        if (colon == NULL) {
            return DS_EINVAL;
        }

        hs = s;
        hlen = (size_t) (colon - s);
        family = AF_INET;
    }

    if (hlen == 0 || hlen >= sizeof(host)) {
        return DS_EINVAL;
    }

    memcpy(host, hs, hlen);
    host[hlen] = '\0';

    if (ds_parse_port(colon + 1, len - (size_t) (colon + 1 - s), &port) != 0
        || inet_pton(family, host, addr) != 1)
    {
        return DS_EINVAL;
    }

    memset(r->addr, 0, sizeof(r->addr));

    if (family == AF_INET) {
        memcpy(r->addr, addr, 4);
        r->family = DS_AF_INET;

    } else {
        memcpy(r->addr, addr, 16);
        r->family = DS_AF_INET6;
    }

    r->port = port;
    return DS_OK;
}


size_t
ds_replica_format_addr(const ds_replica_t *r, char *buf, size_t n)
{
    char  host[INET6_ADDRSTRLEN];
    int   len;

    if (r->family == DS_AF_INET) {
        if (inet_ntop(AF_INET, r->addr, host, sizeof(host)) == NULL) {
            return 0;
        }
        len = snprintf(buf, n, "%s:%u", host, r->port);

    } else if (r->family == DS_AF_INET6) {
        if (inet_ntop(AF_INET6, r->addr, host, sizeof(host)) == NULL) {
            return 0;
        }
        len = snprintf(buf, n, "[%s]:%u", host, r->port);

    } else {
        return 0;
    }

    if (len < 0 || (size_t) len >= n) {
        if (n > 0) {
            buf[0] = '\0';
        }
        return 0;
    }

    return (size_t) len;
}


/* ---- names ------------------------------------------------------------- */

int
ds_valid_run_name(const char *s, size_t len)
{
    size_t  i;

    if (len < DS_RUN_NAME_MIN || len > DS_RUN_NAME_MAX) {
        return 0;
    }

    if (s[0] < 'a' || s[0] > 'z') {
        return 0;
    }

    for (i = 1; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


static int
ds_has_separator(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i + 1 < len; i++) {
        if (s[i] == '-' && s[i + 1] == '-') {
            return 1;
        }
    }

    return 0;
}


int
ds_valid_project_name(const char *s, size_t len)
{
    return ds_valid_run_name(s, len) && !ds_has_separator(s, len)
           && s[len - 1] != '-';
}


int
ds_valid_service_key(const char *s, size_t len)
{
    size_t  i;

    for (i = 0; i + 1 < len; i++) {
        if (s[i] == '-' && s[i + 1] == '-') {
            return len <= 63 && ds_valid_run_name(s, i)
                   && !ds_has_separator(s, i)
                   && ds_valid_project_name(s + i + 2, len - i - 2);
        }
    }

    return ds_valid_run_name(s, len);
}
