/*
 * Shared state: the LMDB schema, its codec and the reader/writer API.
 *
 * Compiled into all three programs (the nginx module, controld, dstackctl)
 * and the test tools.  Plain C99 + LMDB; no nginx types here.
 *
 * One environment (a directory holding data.mdb and lock.mdb), named
 * databases:
 *
 *   meta      "schema" -> u32 schema version
 *             "seq"    -> u64 last uid handed out
 *             "slots.s", "slots.r" -> bitmaps of used metric slots
 *   services  run name -> service record      (binary, hot path)
 *   replicas  run name -> replica set record  (binary, hot path)
 *   tokens    sha256(token) -> token record   (binary, hot path)
 *   models    model name -> model record      (binary, hot path);
 *             a project's: project "\0" model name (ds_model_key)
 *   certs     host name -> certificate + key (binary, TLS handshakes)
 *   settings  key -> value                    (opaque bytes, control plane)
 *   runs      run name -> run document        (JSON, control plane only)
 *   fleets    fleet name -> fleet document    (JSON, controld only)
 *   secrets   secret name -> encrypted value  (binary, controld only)
 *   members   project "\0" user -> member record (binary, hot path:
 *             a user token opens the services of its user's projects)
 *   users     user name -> user document      (JSON, controld only)
 *   projects  project name -> project document (JSON, controld only)
 *   audit     u64 big-endian seq -> event      (JSON, controld only)
 *
 * Hot-path records are little-endian binary with a 4-byte magic and a
 * 2-byte version first; a decoder rejects what it does not know rather
 * than guessing.  Decoded records point into the value they came from
 * (zero copy): the strings stay valid only until the transaction ends,
 * so a reader copies out what it keeps.
 *
 * The writer keeps the indexes consistent inside one write transaction:
 * putting a service updates the models index, deleting it removes its
 * replicas and frees its metric slots.  Each logical change is one
 * transaction, so readers never see half of it.
 */

#ifndef DS_STATE_H
#define DS_STATE_H

#include <stddef.h>
#include <stdint.h>

#define DS_SCHEMA_VERSION       1

#define DS_OK                   0
#define DS_NOTFOUND             1
#define DS_ERROR               -1      /* LMDB or system failure */
#define DS_EINVAL              -2      /* bad argument or corrupt record */
#define DS_EFULL               -3      /* no free slot, map full */

#define DS_NAME_MAX             63     /* run and model names, header names */
#define DS_PREFIX_MAX           255    /* rate limit and model prefixes */
#define DS_RATE_LIMITS_MAX      16
#define DS_TOKEN_HASH_LEN       32     /* SHA-256 */
#define DS_TOKEN_SCOPE_MAX      256    /* services named in one token */
#define DS_REPLICAS_MAX         65535  /* replicas in one set */

/* Metric slots: indexes into the module's shared-memory arrays. */
#define DS_SLOT_NONE            UINT32_MAX
#define DS_SERVICE_SLOTS_MAX    65536
#define DS_REPLICA_SLOTS_MAX    262144

/* defaults applied by ds_service_init() */
#define DS_DEFAULT_MAX_BODY     (64ULL * 1024 * 1024)
#define DS_DEFAULT_READ_TIMEOUT_MS    (3600U * 1000)   /* between two reads */
#define DS_DEFAULT_CONNECT_TIMEOUT_MS (5U * 1000)
#define DS_DEFAULT_HOLD_MAX     1000        /* requests held per service */
#define DS_DEFAULT_HOLD_TIMEOUT_MS (600U * 1000)
#define DS_HOLD_MAX_LIMIT       1000000


typedef struct {
    char            msg[256];
} ds_err_t;

/* A string inside a record: not NUL-terminated. */
typedef struct {
    const char     *data;
    uint32_t        len;
} ds_str_t;


/* ---- services ---------------------------------------------------------- */

#define DS_SERVICE_AUTH         0x0001  /* require a bearer token */
#define DS_SERVICE_HTTPS        0x0002  /* redirect plain http to https */
#define DS_SERVICE_HTTPS_AUTO   0x0004
#define DS_SERVICE_HOLD         0x0008  /* scaled to zero: requests wait
                                           for a replica instead of 503 */

#define DS_RL_KEY_IP            0
#define DS_RL_KEY_HEADER        1

typedef struct {
    ds_str_t        prefix;         /* URI prefix, starts with '/' */
    ds_str_t        header;         /* DS_RL_KEY_HEADER: the header name */
    uint32_t        key_type;       /* DS_RL_KEY_* */
    uint32_t        rps_milli;      /* rate in 1/1000 requests per second */
    uint32_t        burst;          /* requests above the rate allowed */
} ds_rate_limit_t;

#define DS_MODEL_OPENAI         0
#define DS_MODEL_TGI            1

/*
 * How the model endpoint picks a replica: least in-flight (NONE), or
 * rendezvous hashing of a key with bounded load: the hash of the first
 * prefix_bytes of the request's "messages" or "prompt" (PREFIX), or of
 * its session (SESSION: the session header, else the body's "user",
 * else the prefix), so that requests sharing it reuse a replica's cache.
 * With NONE every other field is zero.
 */
#define DS_AFFINITY_NONE        0
#define DS_AFFINITY_PREFIX      1
#define DS_AFFINITY_SESSION     2

#define DS_AFFINITY_PREFIX_BYTES        512
#define DS_AFFINITY_PREFIX_BYTES_MAX    (1024 * 1024)
#define DS_AFFINITY_LOAD_FACTOR         1250    /* c x 1000 */
#define DS_AFFINITY_LOAD_FACTOR_MAX     100000

typedef struct {
    uint32_t        affinity;       /* DS_AFFINITY_* */
    uint32_t        prefix_bytes;   /* hashed of messages or prompt */
    uint32_t        load_factor;    /* c x 1000, >= 1000 */
    ds_str_t        session_header; /* SESSION: e.g. "x-session-id" */
} ds_routing_t;

/*
 * Token budgets of the model endpoint (#16): requests and tokens (prompt
 * + completion) per minute, and tokens per UTC day, kept per (token,
 * model) by the gateway.  A model's budget is the default of every token
 * that calls it (the anonymous caller of a model without auth is one
 * token); a token's own limits replace it field by field, 0 keeping the
 * model's and DS_BUDGET_UNLIMITED lifting it.  max_tokens is a model's
 * only: what a request that names no max_tokens is reckoned to answer
 * before its usage is known (0: DS_BUDGET_MAX_TOKENS).
 */
#define DS_BUDGET_UNLIMITED     UINT32_MAX      /* rpm, tpm; tpd: ~0ULL */
#define DS_BUDGET_MAX_TOKENS    256
#define DS_BUDGET_MAX_TOKENS_MAX (1U << 24)

typedef struct {
    uint32_t        rpm;            /* requests per minute, 0 = none */
    uint32_t        tpm;            /* tokens per minute, 0 = none */
    uint64_t        tpd;            /* tokens per UTC day, 0 = none */
    uint32_t        max_tokens;     /* a model's completion estimate */
} ds_budget_t;

/* any limit set */
#define ds_budget_set(b)  ((b)->rpm != 0 || (b)->tpm != 0 || (b)->tpd != 0)

typedef struct {
    ds_str_t        name;           /* run name = host label */
    ds_str_t        model;          /* model name, empty if none */
    ds_str_t        model_prefix;   /* e.g. "/v1" */
    uint32_t        model_format;   /* DS_MODEL_* */
    ds_routing_t    routing;        /* of the model endpoint */
    ds_budget_t     budget;         /* of the model endpoint */

    uint64_t        uid;            /* set by the writer when created */
    uint32_t        slot;           /* metric slot, set by the writer */
    uint32_t        flags;          /* DS_SERVICE_* */

    uint64_t        max_body_size;  /* bytes, 0 = unlimited */
    uint32_t        read_timeout_ms;
    uint32_t        connect_timeout_ms;
    uint32_t        hold_max;       /* DS_SERVICE_HOLD: queue depth */
    uint32_t        hold_timeout_ms; /* DS_SERVICE_HOLD: longest wait */

    uint32_t        n_rate_limits;
    ds_rate_limit_t rate_limits[DS_RATE_LIMITS_MAX];
} ds_service_t;


/* ---- replicas ---------------------------------------------------------- */

#define DS_REPLICA_READY        1       /* takes new requests */
#define DS_REPLICA_DRAINING     2       /* finishes what it has, no new */

#define DS_AF_INET              4
#define DS_AF_INET6             6

/*
 * A replica's identity is its address within the service: putting a set
 * whose entry has the address of an entry of the previous set keeps that
 * entry's uid and slot (its metrics continue); a new address gets a new
 * uid and slot; an address that disappears frees its slot.
 */
typedef struct {
    uint64_t        uid;            /* set by the writer */
    uint32_t        slot;           /* set by the writer */
    uint32_t        version;        /* spec version it runs */
    uint16_t        weight;         /* reserved for weighted choice; 1 */
    uint8_t         state;          /* DS_REPLICA_* */
    uint8_t         family;         /* DS_AF_* */
    uint16_t        port;           /* host order */
    uint8_t         addr[16];       /* network order; 4 bytes for inet */
} ds_replica_t;

#define DS_REPLICA_WIRE_SIZE    40  /* bytes per encoded entry */

/* A decoded replica set; entries stay encoded, read with ds_replica_at(). */
typedef struct {
    uint64_t        generation;     /* bumped on every put */
    uint32_t        count;
    const uint8_t  *entries;        /* count * DS_REPLICA_WIRE_SIZE bytes */
} ds_replica_set_t;


/* ---- tokens ------------------------------------------------------------ */

#define DS_TOKEN_ADMIN          0x0001  /* a global admin's: every project */
#define DS_TOKEN_ALL_SERVICES   0x0002  /* every service of its project */
#define DS_TOKEN_USER           0x0004  /* a user's: the API as the user's
                                           roles allow, the services of the
                                           user's projects */

/*
 * Projects (#18).  A service, run, secret or service token belongs to a
 * project; "main" (the default) is spelled as the empty string in
 * records and keys, so that a state from before projects reads as all
 * "main".  A service of project P is keyed (and served) under the host
 * label "<run>--<P>"; names never contain "--", so the label says both.
 */
#define DS_PROJECT_MAIN         "main"
#define DS_PROJECT_SEP          "--"

typedef struct {
    uint8_t         hash[DS_TOKEN_HASH_LEN];
    ds_str_t        name;
    ds_str_t        user;           /* DS_TOKEN_USER: whose; else empty */
    ds_str_t        project;        /* a service token's; "" = main */
    uint32_t        flags;          /* DS_TOKEN_* */
    uint64_t        created;        /* unix seconds */
    uint64_t        expires;        /* unix seconds, 0 = never */
    ds_budget_t     budget;         /* per model; max_tokens 0 */
    uint32_t        n_services;     /* services named in the scope */
    const uint8_t  *scope;          /* encoded names; ds_token_allows() */
    uint32_t        scope_len;
} ds_token_t;


/* ---- models ------------------------------------------------------------ */

/*
 * Model names are per project: the models index keys main's by the bare
 * name and project P's by P "\0" name, so that two projects may serve
 * the same name and each gateway host finds its own with one lookup.
 */
#define DS_MODEL_KEY_MAX        (2 * DS_NAME_MAX + 1)

typedef struct {
    ds_str_t        name;           /* model name */
    ds_str_t        service;        /* service key serving it (its
                                       project: ds_service_project) */
    ds_str_t        prefix;         /* e.g. "/v1" */
    uint32_t        format;         /* DS_MODEL_* */
    uint64_t        created;        /* unix seconds */
    ds_routing_t    routing;        /* the service's */
    ds_budget_t     budget;         /* the service's */
} ds_model_t;


/* ---- certificates ------------------------------------------------------ */

/*
 * A TLS certificate for the gateway, keyed by the host name it is served
 * for: "<run>.<domain>" or the wildcard "*.<domain>" that answers every
 * name without its own.  The module's certificate callback looks the SNI
 * name up per handshake and parses a record once per uid (the writer
 * gives every put a new uid), so a new or renewed certificate is served
 * at the next handshake, without a reload.
 */
#define DS_CERT_LOCAL           0x0001  /* from the private CA */
#define DS_CERT_ACME            0x0002  /* from an ACME server */

#define DS_HOST_MAX             253
#define DS_PEM_MAX              (256U * 1024)

typedef struct {
    ds_str_t        host;           /* key: lower-case, may be "*.d" */
    uint64_t        uid;            /* set by the writer on every put */
    uint32_t        flags;          /* DS_CERT_* */
    uint64_t        not_after;      /* unix seconds */
    ds_str_t        cert;           /* PEM: leaf first, then the chain */
    ds_str_t        key;            /* PEM private key */
} ds_cert_t;


/* ---- codec (pure, no LMDB) --------------------------------------------- */

/*
 * A growable output buffer for encoders; start from all zeros.  Each
 * encoder replaces the buffer's contents with one record, so a buffer
 * can be reused; encoders return DS_OK, DS_EINVAL (the record breaks a
 * rule, err says which) or DS_ERROR (out of memory).  Decoders return
 * DS_OK or DS_EINVAL.
 */
typedef struct {
    uint8_t        *data;
    size_t          len;
    size_t          cap;
    int             failed;         /* allocation failed; len is stale */
} ds_buf_t;

void ds_buf_free(ds_buf_t *b);
/* replaces the contents with a copy of data; DS_OK or DS_ERROR (memory) */
int ds_buf_set(ds_buf_t *b, const void *data, size_t len);

void ds_service_init(ds_service_t *svc);   /* zero + defaults */
int ds_service_encode(const ds_service_t *svc, ds_buf_t *out, ds_err_t *err);
int ds_service_decode(const void *data, size_t len, ds_service_t *svc,
    ds_err_t *err);

int ds_replicas_encode(uint64_t generation, const ds_replica_t *r,
    uint32_t n, ds_buf_t *out, ds_err_t *err);
int ds_replicas_decode(const void *data, size_t len, ds_replica_set_t *set,
    ds_err_t *err);
void ds_replica_at(const ds_replica_set_t *set, uint32_t i, ds_replica_t *r);

/* services: tok->n_services names; NULL re-encodes tok->scope as is */
int ds_token_encode(const ds_token_t *tok, const ds_str_t *services,
    ds_buf_t *out, ds_err_t *err);
int ds_token_decode(const void *data, size_t len, ds_token_t *tok,
    ds_err_t *err);
/*
 * 1 when the token opens the service keyed `name` by itself: a global
 * admin's does, an all-services token the services of its project, a
 * scoped one those it names.  A user token (DS_TOKEN_USER) opens what
 * its user's memberships allow: ds_get_member() on the service's
 * project, which is the caller's second look.
 */
int ds_token_allows(const ds_token_t *tok, const char *name, size_t len);
/* the project part of a service key (run "--" project): empty for main */
void ds_service_project(const char *name, size_t len, ds_str_t *project);
/* walks the scope: *off starts at 0; returns 0 after the last name */
int ds_token_scope_next(const ds_token_t *tok, uint32_t *off,
    ds_str_t *name);

int ds_model_encode(const ds_model_t *m, ds_buf_t *out, ds_err_t *err);
/* the models index key of a model of a project ("" = main) into key: its
 * length, or 0 when the name is empty, too long or has a NUL byte, or
 * the project is too long or has one */
size_t ds_model_key(const char *project, size_t plen, const char *name,
    size_t len, char key[DS_MODEL_KEY_MAX]);
int ds_model_decode(const void *data, size_t len, ds_model_t *m,
    ds_err_t *err);

int ds_cert_encode(const ds_cert_t *c, ds_buf_t *out, ds_err_t *err);
int ds_cert_decode(const void *data, size_t len, ds_cert_t *c,
    ds_err_t *err);

/*
 * "127.0.0.1:8000", "[::1]:8000" <-> replica address fields.  parse sets
 * family, addr and port only (DS_OK or DS_EINVAL); format returns the
 * length written without the NUL, 0 when it does not fit in n.
 */
#define DS_REPLICA_ADDR_LEN     56      /* "[v6]:port" + NUL fits */
int ds_replica_parse_addr(ds_replica_t *r, const char *s, size_t len);
size_t ds_replica_format_addr(const ds_replica_t *r, char *buf, size_t n);

/* run names: ^[a-z][a-z0-9-]{1,40}$ */
int ds_valid_run_name(const char *s, size_t len);
/* project names: a run name's rules, without "--" (which separates run
 * and project in a service key and host label) */
int ds_valid_project_name(const char *s, size_t len);
/* a service key: a run name without "--", or run "--" project, within
 * a DNS label (63) */
int ds_valid_service_key(const char *s, size_t len);


/* ---- members ----------------------------------------------------------- */

#define DS_ROLE_NONE            0
#define DS_ROLE_USER            1       /* own runs; call the services */
#define DS_ROLE_MANAGER         2       /* runs, fleets, secrets, tokens */
#define DS_ROLE_ADMIN           3       /* the project, members included */

typedef struct {
    uint32_t        role;           /* DS_ROLE_USER .. DS_ROLE_ADMIN */
    uint64_t        created;        /* unix seconds */
} ds_member_t;

int ds_member_encode(const ds_member_t *m, ds_buf_t *out, ds_err_t *err);
int ds_member_decode(const void *data, size_t len, ds_member_t *m,
    ds_err_t *err);


/* ---- state (LMDB) ------------------------------------------------------ */

typedef struct ds_state_s  ds_state_t;
typedef struct ds_txn_s    ds_txn_t;

#define DS_STATE_RDONLY         0x01    /* readers: nginx workers, CLI */
#define DS_STATE_CREATE         0x02    /* create the directory and files */
#define DS_STATE_NOWAIT         0x04    /* never sleeps (nginx workers): the
                                           lock check gives up after three
                                           quick tries, to try again later */

/*
 * mode: permissions for created files (e.g. 0660 so that the nginx group
 * may use the lock file); the directory gets mode | 0110 & ~0001-ish bits.
 */
int ds_state_open(ds_state_t **st, const char *dir, int flags,
    unsigned mode, ds_err_t *err);
void ds_state_close(ds_state_t *st);
/* clears reader slots of dead processes; returns how many, or DS_ERROR */
int ds_state_reader_check(ds_state_t *st);
/*
 * Whether data.mdb and lock.mdb at the directory are still the files this
 * environment has open (same device and inode): DS_OK, or DS_ERROR with
 * what happened ("was replaced", "was removed") in err.  A process whose
 * file was replaced by another (a restored copy) or removed must not
 * read or write through this environment any more: it would see, or
 * commit to, a file nobody else opens.
 */
int ds_state_check_files(ds_state_t *st, ds_err_t *err);
/*
 * The id of the newest commit, read from the map without a transaction
 * or a reader slot: cheap enough for every request, to learn whether
 * anything changed since records were last read (0 on failure).
 */
uint64_t ds_state_last_txnid(ds_state_t *st);

/*
 * Transactions.  A read transaction can be reset and renewed many times
 * (the module keeps one per worker and renews it per request); renew
 * handles a map grown by the writer.
 */
int ds_txn_begin(ds_state_t *st, int write, ds_txn_t **txn, ds_err_t *err);
int ds_txn_commit(ds_txn_t *txn, ds_err_t *err);  /* frees txn */
void ds_txn_abort(ds_txn_t *txn);                 /* frees txn */
void ds_txn_reset(ds_txn_t *txn);                 /* read only */
/* the id of the commit a (renewed) read transaction sees */
uint64_t ds_txn_id(ds_txn_t *txn);
int ds_txn_renew(ds_txn_t *txn, ds_err_t *err);   /* read only */

/*
 * Shared mode (controld): change capture and the follower's mirror
 * (ds_state_mirror.c).  With capture on, every put and delete of a write
 * transaction is also kept in order (db index, key, value or deletion)
 * until the transaction ends, for the leader to publish before it
 * commits.  The meta keys "schema" and "follow.rev" are never captured:
 * they belong to this environment alone.  Capture off (the default, and
 * always in nginx and the CLI) costs one test per write.
 *
 * Databases are named by index (0 .. ds_db_count() - 1, a stable order:
 * meta, services, replicas, tokens, models, settings, runs, certs,
 * fleets, secrets), which is how records travel between instances.
 */
typedef int (*ds_change_cb)(void *arg, int db, const void *key,
    size_t klen, const void *val, size_t vlen);  /* val NULL: deleted */

void ds_state_capture(ds_state_t *st, int on);
/* calls cb for each captured change in order; a non-zero return stops
 * and is returned */
int ds_txn_changes(ds_txn_t *txn, ds_change_cb cb, void *arg);
size_t ds_txn_nchanges(ds_txn_t *txn);
int ds_db_count(void);
const char *ds_db_name(int db);
/* the revision of the shared log this environment mirrors: DS_OK,
 * DS_NOTFOUND (never mirrored) or DS_ERROR */
int ds_mirror_rev(ds_txn_t *txn, uint64_t *rev, ds_err_t *err);
int ds_mirror_set_rev(ds_txn_t *txn, uint64_t rev, ds_err_t *err);
/*
 * Since when (unix seconds) the follower cannot reach the shared
 * database; 0: it can (the key is removed).  A local key, never
 * published: a gateway's stats say it (ds_mirror_lost reads it, 0 when
 * absent).
 */
int ds_mirror_set_lost(ds_txn_t *txn, uint64_t since, ds_err_t *err);
int ds_mirror_lost(ds_txn_t *txn, uint64_t *since, ds_err_t *err);
/* one record as published: val NULL deletes (a missing key is fine);
 * DS_EINVAL for a db index out of range or a key LMDB cannot hold */
int ds_mirror_apply(ds_txn_t *txn, int db, const void *key, size_t klen,
    const void *val, size_t vlen, ds_err_t *err);
/* empties every mirrored database, keeping "schema" and "follow.rev" */
int ds_mirror_clear(ds_txn_t *txn, ds_err_t *err);
/* calls cb for every record that is published (all but the two meta keys
 * above); for publishing an embedded state the first time */
int ds_mirror_foreach(ds_txn_t *txn, ds_change_cb cb, void *arg,
    ds_err_t *err);

/* readers: results point into the map until the txn ends or resets */
int ds_get_service(ds_txn_t *txn, const char *name, size_t len,
    ds_service_t *svc, ds_err_t *err);
int ds_get_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_set_t *set, ds_err_t *err);
int ds_get_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_token_t *tok, ds_err_t *err);
/* main's model `name`; ds_get_project_model: a project's ("" = main);
 * a name that is no key (ds_model_key) is DS_NOTFOUND */
int ds_get_model(ds_txn_t *txn, const char *name, size_t len,
    ds_model_t *m, ds_err_t *err);
int ds_get_project_model(ds_txn_t *txn, const char *project, size_t plen,
    const char *name, size_t len, ds_model_t *m, ds_err_t *err);

/* the same, with the record copied into *buf first: results point into
 * *buf and stay valid after the txn, until *buf is reused or freed */
int ds_copy_service(ds_txn_t *txn, const char *name, size_t len,
    ds_service_t *svc, ds_buf_t *buf, ds_err_t *err);
int ds_copy_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_set_t *set, ds_buf_t *buf, ds_err_t *err);
int ds_copy_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_token_t *tok, ds_buf_t *buf, ds_err_t *err);

/* iterate; the callback returns non-zero to stop */
typedef int (*ds_service_cb)(void *arg, const ds_service_t *svc);
int ds_foreach_service(ds_txn_t *txn, ds_service_cb cb, void *arg,
    ds_err_t *err);
typedef int (*ds_token_cb)(void *arg, const ds_token_t *tok);
int ds_foreach_token(ds_txn_t *txn, ds_token_cb cb, void *arg,
    ds_err_t *err);
typedef int (*ds_model_cb)(void *arg, const ds_model_t *m);
/* every project's models; ds_foreach_project_model: one project's */
int ds_foreach_model(ds_txn_t *txn, ds_model_cb cb, void *arg,
    ds_err_t *err);
int ds_foreach_project_model(ds_txn_t *txn, const char *project,
    size_t plen, ds_model_cb cb, void *arg, ds_err_t *err);

/* writers (controld; tests seed through the same calls) */
int ds_put_service(ds_txn_t *txn, ds_service_t *svc, ds_err_t *err);
int ds_del_service(ds_txn_t *txn, const char *name, size_t len,
    ds_err_t *err);
int ds_put_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_t *r, uint32_t n, ds_err_t *err);
int ds_put_token(ds_txn_t *txn, const ds_token_t *tok,
    const ds_str_t *services, ds_err_t *err);
int ds_del_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_err_t *err);

/* certificates: a state made before the "certs" database existed reads
 * as having none */
int ds_get_cert(ds_txn_t *txn, const char *host, size_t len, ds_cert_t *c,
    ds_err_t *err);
int ds_put_cert(ds_txn_t *txn, ds_cert_t *c, ds_err_t *err); /* sets uid */
int ds_del_cert(ds_txn_t *txn, const char *host, size_t len, ds_err_t *err);
typedef int (*ds_cert_cb)(void *arg, const ds_cert_t *c);
int ds_foreach_cert(ds_txn_t *txn, ds_cert_cb cb, void *arg, ds_err_t *err);

int ds_get_setting(ds_txn_t *txn, const char *key, ds_str_t *val,
    ds_err_t *err);
int ds_put_setting(ds_txn_t *txn, const char *key, const void *val,
    size_t len, ds_err_t *err);
int ds_get_run(ds_txn_t *txn, const char *name, size_t len, ds_str_t *doc,
    ds_err_t *err);
int ds_put_run(ds_txn_t *txn, const char *name, size_t len,
    const char *doc, size_t doc_len, ds_err_t *err);
int ds_del_run(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err);
/* settings and runs as raw key -> value, in key order */
typedef int (*ds_kv_cb)(void *arg, const ds_str_t *key, const ds_str_t *val);
int ds_foreach_setting(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err);
int ds_foreach_run(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err);
/* fleets (controld's own: the gateway never reads them) */
int ds_put_fleet(ds_txn_t *txn, const char *name, size_t len,
    const char *doc, size_t doc_len, ds_err_t *err);
int ds_del_fleet(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err);
int ds_foreach_fleet(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err);
/* secrets (controld's only): name -> a record controld encrypted
 * (controld/secrets.c); names up to 200 bytes */
#define DS_SECRET_KEY_MAX       255     /* "<project>/" + a 200-byte name */
int ds_get_secret(ds_txn_t *txn, const char *name, size_t len,
    ds_str_t *rec, ds_err_t *err);
int ds_put_secret(ds_txn_t *txn, const char *name, size_t len,
    const void *rec, size_t rec_len, ds_err_t *err);
int ds_del_secret(ds_txn_t *txn, const char *name, size_t len,
    ds_err_t *err);
int ds_foreach_secret(ds_txn_t *txn, ds_kv_cb cb, void *arg, ds_err_t *err);

/*
 * Teams: memberships (read by the module per request of a user token),
 * and controld's users, projects and audit events as documents.  project
 * "" is main.  A state from before the members database reads as having
 * none (DS_NOTFOUND).
 */
int ds_get_member(ds_txn_t *txn, const char *project, size_t plen,
    const char *user, size_t ulen, ds_member_t *m, ds_err_t *err);
int ds_put_member(ds_txn_t *txn, const char *project, size_t plen,
    const char *user, size_t ulen, const ds_member_t *m, ds_err_t *err);
int ds_del_member(ds_txn_t *txn, const char *project, size_t plen,
    const char *user, size_t ulen, ds_err_t *err);
typedef int (*ds_member_cb)(void *arg, const ds_str_t *project,
    const ds_str_t *user, const ds_member_t *m);
int ds_foreach_member(ds_txn_t *txn, ds_member_cb cb, void *arg,
    ds_err_t *err);

#define DS_DOCS_USERS           0
#define DS_DOCS_PROJECTS        1
#define DS_DOCS_AUDIT           2
int ds_get_team_doc(ds_txn_t *txn, int kind, const void *key, size_t klen,
    ds_str_t *doc, ds_err_t *err);
int ds_put_team_doc(ds_txn_t *txn, int kind, const void *key, size_t klen,
    const char *doc, size_t doc_len, ds_err_t *err);
int ds_del_team_doc(ds_txn_t *txn, int kind, const void *key, size_t klen,
    ds_err_t *err);
int ds_foreach_team_doc(ds_txn_t *txn, int kind, ds_kv_cb cb, void *arg,
    ds_err_t *err);


/* ---- tokens: hashing and comparing ------------------------------------- */

void ds_sha256(const void *data, size_t len, uint8_t out[32]);
/* constant time in len: 1 when equal */
int ds_ct_equal(const void *a, const void *b, size_t len);
/* fills buf with "dst_" + 43 chars of base64url(32 random bytes) + NUL */
#define DS_TOKEN_TEXT_LEN       47
int ds_token_generate(char buf[DS_TOKEN_TEXT_LEN + 1], ds_err_t *err);

#endif /* DS_STATE_H */
