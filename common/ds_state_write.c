/*
 * The writer's records: certificates, services (with their model names
 * and metric slots), replica sets, tokens, settings and run documents.
 *
 * Values returned by mdb_get() in a write transaction may live in dirty
 * pages that the next mdb_put() rewrites, and a caller may pass strings
 * that point into the map.  So the writers copy what they need, read and
 * check everything, encode every record, and only then write: an error
 * leaves the transaction as it was.
 */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lmdb.h>

#include "ds_state_impl.h"


/* a metric-slot bitmap from meta, loaded, changed and stored back */
typedef struct {
    const char     *key;            /* "slots.s" or "slots.r" */
    uint8_t        *bits;           /* nbits / 8 bytes */
    uint32_t        nbits;
    uint32_t        hint;           /* bits below are known to be used */
} ds_slots_t;


/* a replica's identity, sortable with memcmp */
#define DS_IDENT_LEN            19  /* family, 16 addr bytes, port BE */

typedef struct {
    uint8_t         key[DS_IDENT_LEN];
    uint32_t        idx;
} ds_ident_t;


/* ---- certificates ------------------------------------------------------ */
int
ds_put_cert(ds_txn_t *txn, ds_cert_t *c, ds_err_t *err)
{
    int       rc;
    uint64_t  seq;
    ds_buf_t  rec;

    if (!ds_need_write(txn, "store a certificate", err)) {
        return DS_EINVAL;
    }

    rc = ds_seq_load(txn, &seq, err);
    if (rc != DS_OK) {
        return rc;
    }

    c->uid = ++seq;
    memset(&rec, 0, sizeof(rec));

    rc = ds_cert_encode(c, &rec, err);
    if (rc == DS_OK) {
        rc = ds_raw_put(txn, DS_DB_CERTS, c->host.data, c->host.len,
                        rec.data, rec.len, err);
    }
    if (rc == DS_OK) {
        rc = ds_seq_store(txn, seq, err);
    }

    ds_buf_free(&rec);
    return rc;
}


int
ds_del_cert(ds_txn_t *txn, const char *host, size_t len, ds_err_t *err)
{
    if (!ds_need_write(txn, "delete a certificate", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_CERTS, host, len, DS_HOST_MAX, err)) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, DS_DB_CERTS, host, len, err);
}

/* ---- meta: uids and metric slots --------------------------------------- */



/*
 * The bitmap is stored without its trailing zero bytes, so a state with
 * few slots in use keeps a small record; it is loaded at full size.
 */
static int
ds_slots_load(ds_txn_t *txn, ds_slots_t *s, const char *key, uint32_t nbits,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    s->key = key;
    s->nbits = nbits;
    s->hint = 0;

    s->bits = calloc(nbits / 8, 1);
    if (s->bits == NULL) {
        ds_err_set(err, "cannot load meta \"%s\": out of memory", key);
        return DS_ERROR;
    }

    rc = ds_raw_get(txn, DS_DB_META, key, strlen(key), &v, err);
    if (rc == DS_NOTFOUND) {
        return DS_OK;
    }

    if (rc != DS_OK) {
        return rc;
    }

    if (v.mv_size > nbits / 8) {
        ds_err_set(err, "meta \"%s\" is corrupt (%zu bytes, at most %u)",
                   key, v.mv_size, nbits / 8);
        return DS_EINVAL;
    }

    memcpy(s->bits, v.mv_data, v.mv_size);
    return DS_OK;
}


/* the lowest free slot, marked used; DS_SLOT_NONE when all are used */
static uint32_t
ds_slots_alloc(ds_slots_t *s)
{
    uint32_t  i, b;

    for (i = s->hint / 8; i < s->nbits / 8; i++) {
        if (s->bits[i] == 0xff) {
            continue;
        }

        for (b = 0; b < 8; b++) {
            if (!(s->bits[i] & (1u << b))) {
                s->bits[i] |= (uint8_t) (1u << b);
                s->hint = i * 8 + b + 1;
                return i * 8 + b;
            }
        }
    }

    s->hint = s->nbits;
    return DS_SLOT_NONE;
}


static void
ds_slots_mark(ds_slots_t *s, uint32_t slot)
{
    if (slot < s->nbits) {
        s->bits[slot / 8] |= (uint8_t) (1u << (slot % 8));
    }
}


static void
ds_slots_free(ds_slots_t *s, uint32_t slot)
{
    if (slot < s->nbits) {
        s->bits[slot / 8] &= (uint8_t) ~(1u << (slot % 8));

        if (slot < s->hint) {
            s->hint = slot;
        }
    }
}


static int
ds_slots_store(ds_txn_t *txn, ds_slots_t *s, ds_err_t *err)
{
    size_t  len;

    len = s->nbits / 8;
    while (len > 0 && s->bits[len - 1] == 0) {
        len--;
    }

    return ds_raw_put(txn, DS_DB_META, s->key, strlen(s->key), s->bits, len,
                      err);
}


static void
ds_slots_done(ds_slots_t *s)
{
    free(s->bits);
    s->bits = NULL;
}


/* ---- services ---------------------------------------------------------- */

/* a copy of a string that outlives the map pages it may point into */
static void
ds_str_copy(ds_str_t *dst, const ds_str_t *src, char *buf)
{
    if (src->len > 0) {
        memcpy(buf, src->data, src->len);
    }

    dst->data = buf;
    dst->len = src->len;
}


static int
ds_str_eq(const ds_str_t *a, const char *b, size_t len)
{
    return a->len == len && (len == 0 || memcmp(a->data, b, len) == 0);
}


/*
 * Which service serves the model keyed `key` (ds_model_key): DS_OK with
 * m filled, DS_NOTFOUND, or an error.
 */
static int
ds_model_lookup(ds_txn_t *txn, const char *key, size_t klen, ds_model_t *m,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    rc = ds_raw_get(txn, DS_DB_MODELS, key, klen, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_model_decode(v.mv_data, v.mv_size, m, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "model \"%.*s\"", (int) klen, key);
    }

    return rc;
}


/* the models index key of a service's model: its project's, from the
 * service's name; 0 when the model name cannot be a key (err says why) */
static size_t
ds_service_model_key(const ds_str_t *service, const ds_str_t *model,
    char key[DS_MODEL_KEY_MAX], ds_err_t *err)
{
    size_t    klen;
    ds_str_t  project;

    ds_service_project(service->data, service->len, &project);

    klen = ds_model_key(project.data, project.len, model->data, model->len,
                        key);
    if (klen == 0) {
        ds_err_set(err, "service \"%.*s\": model name \"%.*s\" is empty, "
                   "too long or has a NUL byte", (int) service->len,
                   service->data, (int) (model->len > 64 ? 64 : model->len),
                   model->data);
    }

    return klen;
}


int
ds_put_service(ds_txn_t *txn, ds_service_t *svc, ds_err_t *err)
{
    int           rc, is_new, del_old_model;
    char          name[DS_NAME_MAX], model[DS_NAME_MAX];
    char          prefix[DS_PREFIX_MAX], old_model[DS_NAME_MAX];
    char          session_header[DS_NAME_MAX];
    char          mkey[DS_MODEL_KEY_MAX], old_mkey[DS_MODEL_KEY_MAX];
    size_t        mklen, old_mklen;
    uint64_t      seq;
    ds_str_t      old_model_s;
    ds_buf_t      rec, mrec;
    MDB_val       v;
    ds_model_t    m, om;
    ds_slots_t    slots;
    ds_service_t  tmp, old;

    memset(&rec, 0, sizeof(rec));
    memset(&mrec, 0, sizeof(mrec));
    memset(&slots, 0, sizeof(slots));
    old_model_s.len = 0;
    del_old_model = 0;
    mklen = 0;
    old_mklen = 0;
    seq = 0;

    if (!ds_need_write(txn, "store a service", err)) {
        return DS_EINVAL;
    }

    /* validate first: uid and slot are the writer's, not the caller's */
    tmp = *svc;
    tmp.uid = 0;
    tmp.slot = DS_SLOT_NONE;

    rc = ds_service_encode(&tmp, &rec, err);
    if (rc != DS_OK) {
        goto done;
    }

    ds_str_copy(&tmp.name, &svc->name, name);
    ds_str_copy(&tmp.model, &svc->model, model);
    ds_str_copy(&tmp.model_prefix, &svc->model_prefix, prefix);
    ds_str_copy(&tmp.routing.session_header, &svc->routing.session_header,
                session_header);

    rc = ds_raw_get(txn, DS_DB_SERVICES, name, tmp.name.len, &v, err);

    if (rc == DS_OK) {
        rc = ds_service_decode(v.mv_data, v.mv_size, &old, err);
        if (rc != DS_OK) {
            ds_err_prefix(err, "stored service \"%.*s\"", (int) tmp.name.len,
                          name);
            goto done;
        }

        is_new = 0;
        tmp.uid = old.uid;
        tmp.slot = old.slot;
        ds_str_copy(&old_model_s, &old.model, old_model);

    } else if (rc == DS_NOTFOUND) {
        is_new = 1;

    } else {
        goto done;
    }

    /* one model, one service of the project: the gateway routes by the
     * model name on the project's host */
    memset(&m, 0, sizeof(m));
    m.created = (uint64_t) time(NULL);

    if (tmp.model.len > 0) {
        mklen = ds_service_model_key(&tmp.name, &tmp.model, mkey, err);
        if (mklen == 0) {
            rc = DS_EINVAL;
            goto done;
        }

        rc = ds_model_lookup(txn, mkey, mklen, &m, err);

        if (rc == DS_OK) {
            if (!ds_str_eq(&m.service, name, tmp.name.len)) {
                ds_err_set(err, "model \"%.*s\" is already served by "
                           "service \"%.*s\"", (int) tmp.model.len, model,
                           (int) m.service.len, m.service.data);
                rc = DS_EINVAL;
                goto done;
            }

        } else if (rc != DS_NOTFOUND) {
            goto done;
        }
    }

    if (old_model_s.len > 0
        && !ds_str_eq(&old_model_s, model, tmp.model.len))
    {
        old_mklen = ds_service_model_key(&tmp.name, &old_model_s, old_mkey,
                                         err);

        /* a stored name that cannot be a key never was one */
        rc = old_mklen ? ds_model_lookup(txn, old_mkey, old_mklen, &om, err)
                       : DS_NOTFOUND;

        if (rc == DS_OK) {
            /* only the entry that points back at this service */
            del_old_model = ds_str_eq(&om.service, name, tmp.name.len);

        } else if (rc != DS_NOTFOUND) {
            goto done;
        }
    }

    if (is_new || tmp.slot == DS_SLOT_NONE || tmp.uid == 0) {
        rc = ds_seq_load(txn, &seq, err);
        if (rc == DS_OK) {
            rc = ds_slots_load(txn, &slots, DS_KEY_SLOTS_S,
                               DS_SERVICE_SLOTS_MAX, err);
        }

        if (rc != DS_OK) {
            goto done;
        }

        if (tmp.slot == DS_SLOT_NONE) {
            tmp.slot = ds_slots_alloc(&slots);

            if (tmp.slot == DS_SLOT_NONE) {
                ds_err_set(err, "no free service slot for \"%.*s\": all %u "
                           "are in use", (int) tmp.name.len, name,
                           DS_SERVICE_SLOTS_MAX);
                rc = DS_EFULL;
                goto done;
            }
        }

        if (tmp.uid == 0) {
            tmp.uid = ++seq;
        }
    }

    rc = ds_service_encode(&tmp, &rec, err);
    if (rc != DS_OK) {
        goto done;
    }

    if (tmp.model.len > 0) {
        m.name = tmp.model;
        m.service = tmp.name;
        m.prefix = tmp.model_prefix;
        m.format = tmp.model_format;
        m.routing = tmp.routing;
        m.budget = tmp.budget;

        rc = ds_model_encode(&m, &mrec, err);
        if (rc != DS_OK) {
            goto done;
        }
    }

    /* everything is checked and encoded: write */

    rc = ds_raw_put(txn, DS_DB_SERVICES, name, tmp.name.len, rec.data,
                    rec.len, err);

    if (rc == DS_OK && slots.bits != NULL) {
        rc = ds_slots_store(txn, &slots, err);
        if (rc == DS_OK) {
            rc = ds_seq_store(txn, seq, err);
        }
    }

    if (rc == DS_OK && del_old_model) {
        rc = ds_raw_del(txn, DS_DB_MODELS, old_mkey, old_mklen, err);
    }

    if (rc == DS_OK && tmp.model.len > 0) {
        rc = ds_raw_put(txn, DS_DB_MODELS, mkey, mklen, mrec.data, mrec.len,
                        err);
    }

    if (rc == DS_OK) {
        svc->uid = tmp.uid;
        svc->slot = tmp.slot;
    }

done:

    ds_buf_free(&rec);
    ds_buf_free(&mrec);
    ds_slots_done(&slots);
    return rc;
}


/* the slots of a stored replica set, copied out of the map */
static int
ds_replica_slots(ds_txn_t *txn, const char *name, size_t len,
    uint32_t **slots, uint32_t *n, int *found, ds_err_t *err)
{
    int               rc;
    uint32_t          i;
    MDB_val           v;
    ds_replica_t      r;
    ds_replica_set_t  set;

    *slots = NULL;
    *n = 0;
    *found = 0;

    rc = ds_raw_get(txn, DS_DB_REPLICAS, name, len, &v, err);
    if (rc == DS_NOTFOUND) {
        return DS_OK;
    }

    if (rc != DS_OK) {
        return rc;
    }

    *found = 1;

    rc = ds_replicas_decode(v.mv_data, v.mv_size, &set, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "replicas of service \"%.*s\"", (int) len, name);
        return rc;
    }

    *slots = malloc((set.count ? set.count : 1) * sizeof(uint32_t));
    if (*slots == NULL) {
        ds_err_set(err, "cannot read replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &r);
        (*slots)[i] = r.slot;
    }

    *n = set.count;
    return DS_OK;
}


int
ds_del_service(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err)
{
    int           rc, has_replicas, del_model;
    char          key[DS_NAME_MAX], model[DS_NAME_MAX];
    char          mkey[DS_MODEL_KEY_MAX];
    size_t        mklen;
    uint32_t      i, n, *rslots, svc_slot;
    MDB_val       v;
    ds_str_t      model_s, key_s;
    ds_model_t    m;
    ds_slots_t    ss, rs;
    ds_service_t  svc;

    rslots = NULL;
    memset(&ss, 0, sizeof(ss));
    memset(&rs, 0, sizeof(rs));
    del_model = 0;

    if (!ds_need_write(txn, "delete a service", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_SERVICES, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    memcpy(key, name, len);

    rc = ds_raw_get(txn, DS_DB_SERVICES, key, len, &v, err);
    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_service_decode(v.mv_data, v.mv_size, &svc, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "stored service \"%.*s\"", (int) len, key);
        return rc;
    }

    svc_slot = svc.slot;
    ds_str_copy(&model_s, &svc.model, model);

    rc = ds_replica_slots(txn, key, len, &rslots, &n, &has_replicas, err);
    if (rc != DS_OK) {
        goto done;
    }

    key_s.data = key;
    key_s.len = (uint32_t) len;
    mklen = model_s.len ? ds_service_model_key(&key_s, &model_s, mkey, err)
                        : 0;

    if (mklen > 0) {
        rc = ds_model_lookup(txn, mkey, mklen, &m, err);

        if (rc == DS_OK) {
            del_model = ds_str_eq(&m.service, key, len);

        } else if (rc != DS_NOTFOUND) {
            goto done;
        }
    }

    rc = ds_slots_load(txn, &ss, DS_KEY_SLOTS_S, DS_SERVICE_SLOTS_MAX, err);
    if (rc == DS_OK) {
        rc = ds_slots_load(txn, &rs, DS_KEY_SLOTS_R, DS_REPLICA_SLOTS_MAX,
                           err);
    }

    if (rc != DS_OK) {
        goto done;
    }

    ds_slots_free(&ss, svc_slot);
    for (i = 0; i < n; i++) {
        ds_slots_free(&rs, rslots[i]);
    }

    /* everything is read: write */

    rc = ds_raw_del(txn, DS_DB_SERVICES, key, len, err);

    if (rc == DS_OK && has_replicas) {
        rc = ds_raw_del(txn, DS_DB_REPLICAS, key, len, err);
    }

    if (rc == DS_OK && del_model) {
        rc = ds_raw_del(txn, DS_DB_MODELS, mkey, mklen, err);
    }

    if (rc == DS_OK) {
        rc = ds_slots_store(txn, &ss, err);
    }

    if (rc == DS_OK) {
        rc = ds_slots_store(txn, &rs, err);
    }

done:

    free(rslots);
    ds_slots_done(&ss);
    ds_slots_done(&rs);
    return rc;
}


/* ---- replicas ---------------------------------------------------------- */

static void
ds_ident_make(ds_ident_t *id, const ds_replica_t *r, uint32_t idx)
{
    id->key[0] = r->family;
    memset(id->key + 1, 0, 16);
    memcpy(id->key + 1, r->addr, r->family == DS_AF_INET ? 4 : 16);
    id->key[17] = (uint8_t) (r->port >> 8);
    id->key[18] = (uint8_t) r->port;
    id->idx = idx;
}


static int
ds_ident_cmp(const void *a, const void *b)
{
    return memcmp(((const ds_ident_t *) a)->key,
                  ((const ds_ident_t *) b)->key, DS_IDENT_LEN);
}


/* identities of n replicas, sorted */
static ds_ident_t *
ds_idents(const ds_replica_t *r, uint32_t n)
{
    uint32_t     i;
    ds_ident_t  *ids;

    ids = malloc((n ? n : 1) * sizeof(ds_ident_t));
    if (ids == NULL) {
        return NULL;
    }

    for (i = 0; i < n; i++) {
        ds_ident_make(&ids[i], &r[i], i);
    }

    qsort(ids, n, sizeof(ds_ident_t), ds_ident_cmp);
    return ids;
}


/* the previous set, copied out of the map; none is an empty set */
static int
ds_replicas_load(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_t **old, uint32_t *n, uint64_t *generation, ds_err_t *err)
{
    int               rc;
    uint32_t          i;
    MDB_val           v;
    ds_replica_set_t  set;

    *old = NULL;
    *n = 0;
    *generation = 0;

    rc = ds_raw_get(txn, DS_DB_REPLICAS, name, len, &v, err);

    if (rc == DS_NOTFOUND) {
        set.count = 0;
        set.generation = 0;

    } else if (rc != DS_OK) {
        return rc;

    } else {
        rc = ds_replicas_decode(v.mv_data, v.mv_size, &set, err);
        if (rc != DS_OK) {
            ds_err_prefix(err, "stored replicas of service \"%.*s\"",
                          (int) len, name);
            return rc;
        }
    }

    *old = malloc((set.count ? set.count : 1) * sizeof(ds_replica_t));
    if (*old == NULL) {
        ds_err_set(err, "cannot load replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 0; i < set.count; i++) {
        ds_replica_at(&set, i, &(*old)[i]);
    }

    *n = set.count;
    *generation = set.generation;
    return DS_OK;
}


/*
 * Entries whose identity was in the previous set take over its uid and
 * slot; the others get new ones.  Slots are allocated before the
 * vanished ones are freed, so that no slot passes from one replica to
 * another inside one change.
 */
static int
ds_replicas_assign(ds_replica_t *w, uint32_t n, const ds_replica_t *old,
    uint32_t m, ds_slots_t *slots, uint64_t *seq, const char *name,
    size_t len, ds_err_t *err)
{
    uint32_t     i;
    uint8_t     *kept;
    ds_ident_t  *ids, id, *found;

    ids = ds_idents(old, m);
    kept = calloc(m ? m : 1, 1);

    if (ids == NULL || kept == NULL) {
        free(ids);
        free(kept);
        ds_err_set(err, "cannot store replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 0; i < n; i++) {
        ds_ident_make(&id, &w[i], i);
        found = bsearch(&id, ids, m, sizeof(ds_ident_t), ds_ident_cmp);

        if (found != NULL) {
            w[i].uid = old[found->idx].uid;
            w[i].slot = old[found->idx].slot;
            kept[found->idx] = 1;
        }
    }

    for (i = 0; i < n; i++) {
        if (w[i].slot == DS_SLOT_NONE) {
            w[i].slot = ds_slots_alloc(slots);

            if (w[i].slot == DS_SLOT_NONE) {
                free(ids);
                free(kept);
                ds_err_set(err, "no free replica slot for service \"%.*s\": "
                           "all %u are in use", (int) len, name,
                           DS_REPLICA_SLOTS_MAX);
                return DS_EFULL;
            }
        }

        if (w[i].uid == 0) {
            w[i].uid = ++*seq;
        }
    }

    for (i = 0; i < m; i++) {
        if (!kept[i]) {
            ds_slots_free(slots, old[i].slot);
        }
    }

    /* a corrupt old set may have shared a slot: keep the kept ones used */
    for (i = 0; i < n; i++) {
        ds_slots_mark(slots, w[i].slot);
    }

    free(ids);
    free(kept);
    return DS_OK;
}


static int
ds_replicas_unique(const ds_replica_t *w, uint32_t n, const char *name,
    size_t len, ds_err_t *err)
{
    char         addr[DS_REPLICA_ADDR_LEN];
    uint32_t     i;
    ds_ident_t  *ids;

    ids = ds_idents(w, n);
    if (ids == NULL) {
        ds_err_set(err, "cannot store replicas of service \"%.*s\": out of "
                   "memory", (int) len, name);
        return DS_ERROR;
    }

    for (i = 1; i < n; i++) {
        if (ds_ident_cmp(&ids[i - 1], &ids[i]) == 0) {
            ds_replica_format_addr(&w[ids[i].idx], addr, sizeof(addr));
            ds_err_set(err, "replicas of service \"%.*s\": duplicate "
                       "address %s (replicas %u and %u)", (int) len, name,
                       addr, ids[i - 1].idx, ids[i].idx);
            free(ids);
            return DS_EINVAL;
        }
    }

    free(ids);
    return DS_OK;
}


int
ds_put_replicas(ds_txn_t *txn, const char *name, size_t len,
    ds_replica_t *r, uint32_t n, ds_err_t *err)
{
    int            rc;
    char           key[DS_NAME_MAX];
    uint32_t       i, m;
    uint64_t       seq, generation;
    MDB_val        v;
    ds_buf_t       rec;
    ds_slots_t     slots;
    ds_replica_t  *w, *old;

    w = NULL;
    old = NULL;
    seq = 0;
    memset(&rec, 0, sizeof(rec));
    memset(&slots, 0, sizeof(slots));

    if (!ds_need_write(txn, "store replicas", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_SERVICES, name, len, DS_NAME_MAX, err)) {
        return DS_EINVAL;
    }

    memcpy(key, name, len);

    if (n > DS_REPLICAS_MAX) {
        ds_err_set(err, "replicas of service \"%.*s\": %u exceed the "
                   "maximum of %u", (int) len, key, n, DS_REPLICAS_MAX);
        return DS_EINVAL;
    }

    /* a working copy: uids and slots are the writer's to assign */
    w = malloc((n ? n : 1) * sizeof(ds_replica_t));
    if (w == NULL) {
        ds_err_set(err, "cannot store replicas of service \"%.*s\": out of "
                   "memory", (int) len, key);
        return DS_ERROR;
    }

    for (i = 0; i < n; i++) {
        w[i] = r[i];
        w[i].uid = 0;
        w[i].slot = DS_SLOT_NONE;

        if (w[i].family == DS_AF_INET) {
            memset(w[i].addr + 4, 0, 12);
        }
    }

    rc = ds_replicas_encode(0, w, n, &rec, err);
    if (rc != DS_OK) {
        ds_err_prefix(err, "service \"%.*s\"", (int) len, key);
        goto done;
    }

    rc = ds_replicas_unique(w, n, key, len, err);
    if (rc != DS_OK) {
        goto done;
    }

    rc = ds_raw_get(txn, DS_DB_SERVICES, key, len, &v, err);
    if (rc != DS_OK) {
        goto done;
    }

    rc = ds_replicas_load(txn, key, len, &old, &m, &generation, err);

    if (rc == DS_OK) {
        rc = ds_seq_load(txn, &seq, err);
    }

    if (rc == DS_OK) {
        rc = ds_slots_load(txn, &slots, DS_KEY_SLOTS_R, DS_REPLICA_SLOTS_MAX,
                           err);
    }

    if (rc == DS_OK) {
        rc = ds_replicas_assign(w, n, old, m, &slots, &seq, key, len, err);
    }

    if (rc == DS_OK) {
        rc = ds_replicas_encode(generation + 1, w, n, &rec, err);
    }

    if (rc != DS_OK) {
        goto done;
    }

    /* everything is checked and encoded: write */

    rc = ds_raw_put(txn, DS_DB_REPLICAS, key, len, rec.data, rec.len, err);

    if (rc == DS_OK) {
        rc = ds_slots_store(txn, &slots, err);
    }

    if (rc == DS_OK) {
        rc = ds_seq_store(txn, seq, err);
    }

    if (rc == DS_OK) {
        for (i = 0; i < n; i++) {
            r[i].uid = w[i].uid;
            r[i].slot = w[i].slot;
        }
    }

done:

    free(w);
    free(old);
    ds_buf_free(&rec);
    ds_slots_done(&slots);
    return rc;
}


/* ---- tokens ------------------------------------------------------------ */

int
ds_put_token(ds_txn_t *txn, const ds_token_t *tok, const ds_str_t *services,
    ds_err_t *err)
{
    int       rc;
    uint8_t   hash[DS_TOKEN_HASH_LEN];
    ds_buf_t  rec;

    if (!ds_need_write(txn, "store a token", err)) {
        return DS_EINVAL;
    }

    memset(&rec, 0, sizeof(rec));
    memcpy(hash, tok->hash, DS_TOKEN_HASH_LEN);

    rc = ds_token_encode(tok, services, &rec, err);
    if (rc == DS_OK) {
        rc = ds_raw_put(txn, DS_DB_TOKENS, hash, DS_TOKEN_HASH_LEN, rec.data,
                        rec.len, err);
    }

    ds_buf_free(&rec);
    return rc;
}


int
ds_del_token(ds_txn_t *txn, const uint8_t hash[DS_TOKEN_HASH_LEN],
    ds_err_t *err)
{
    uint8_t  key[DS_TOKEN_HASH_LEN];

    if (!ds_need_write(txn, "delete a token", err)) {
        return DS_EINVAL;
    }

    memcpy(key, hash, DS_TOKEN_HASH_LEN);
    return ds_raw_del(txn, DS_DB_TOKENS, key, DS_TOKEN_HASH_LEN, err);
}


/* ---- settings and runs ------------------------------------------------- */

int
ds_get_setting(ds_txn_t *txn, const char *key, ds_str_t *val, ds_err_t *err)
{
    int      rc;
    size_t   len;
    MDB_val  v;

    len = strlen(key);
    if (!ds_name_key_ok(DS_DB_SETTINGS, key, len, DS_SETTING_KEY_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_SETTINGS, key, len, &v, err);
    if (rc == DS_OK) {
        val->data = v.mv_data;
        val->len = (uint32_t) v.mv_size;
    }

    return rc;
}


int
ds_put_setting(ds_txn_t *txn, const char *key, const void *val, size_t len,
    ds_err_t *err)
{
    size_t  klen;

    if (!ds_need_write(txn, "store a setting", err)) {
        return DS_EINVAL;
    }

    klen = strlen(key);
    if (!ds_name_key_ok(DS_DB_SETTINGS, key, klen, DS_SETTING_KEY_MAX, err)) {
        return DS_EINVAL;
    }

    return ds_raw_put(txn, DS_DB_SETTINGS, key, klen, val, len, err);
}


int
ds_get_run(ds_txn_t *txn, const char *name, size_t len, ds_str_t *doc,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (!ds_name_key_ok(DS_DB_RUNS, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_RUNS, name, len, &v, err);
    if (rc == DS_OK) {
        doc->data = v.mv_data;
        doc->len = (uint32_t) v.mv_size;
    }

    return rc;
}


/* a document keyed by name: runs and fleets */
static int
ds_put_doc(ds_txn_t *txn, int db, const char *what, const char *name,
    size_t len, const char *doc, size_t doc_len, ds_err_t *err)
{
    if (!ds_need_write(txn, what, err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(db, name, len, DS_NAME_MAX, err)) {
        return DS_EINVAL;
    }

    return ds_raw_put(txn, db, name, len, doc, doc_len, err);
}


static int
ds_del_doc(ds_txn_t *txn, int db, const char *what, const char *name,
    size_t len, ds_err_t *err)
{
    if (!ds_need_write(txn, what, err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(db, name, len, DS_NAME_MAX, err)) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, db, name, len, err);
}


int
ds_put_run(ds_txn_t *txn, const char *name, size_t len, const char *doc,
    size_t doc_len, ds_err_t *err)
{
    return ds_put_doc(txn, DS_DB_RUNS, "store a run", name, len, doc,
                      doc_len, err);
}


int
ds_del_run(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err)
{
    return ds_del_doc(txn, DS_DB_RUNS, "delete a run", name, len, err);
}


int
ds_put_fleet(ds_txn_t *txn, const char *name, size_t len, const char *doc,
    size_t doc_len, ds_err_t *err)
{
    return ds_put_doc(txn, DS_DB_FLEETS, "store a fleet", name, len, doc,
                      doc_len, err);
}


int
ds_del_fleet(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err)
{
    return ds_del_doc(txn, DS_DB_FLEETS, "delete a fleet", name, len, err);
}


int
ds_get_secret(ds_txn_t *txn, const char *name, size_t len, ds_str_t *rec,
    ds_err_t *err)
{
    int      rc;
    MDB_val  v;

    if (!ds_name_key_ok(DS_DB_SECRETS, name, len, DS_SECRET_KEY_MAX, err)) {
        return DS_NOTFOUND;
    }

    rc = ds_raw_get(txn, DS_DB_SECRETS, name, len, &v, err);
    if (rc == DS_OK) {
        rec->data = v.mv_data;
        rec->len = (uint32_t) v.mv_size;
    }

    return rc;
}


int
ds_put_secret(ds_txn_t *txn, const char *name, size_t len, const void *rec,
    size_t rec_len, ds_err_t *err)
{
    if (!ds_need_write(txn, "store a secret", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_SECRETS, name, len, DS_SECRET_KEY_MAX, err)) {
        return DS_EINVAL;
    }

    return ds_raw_put(txn, DS_DB_SECRETS, name, len, rec, rec_len, err);
}


int
ds_del_secret(ds_txn_t *txn, const char *name, size_t len, ds_err_t *err)
{
    if (!ds_need_write(txn, "delete a secret", err)) {
        return DS_EINVAL;
    }

    if (!ds_name_key_ok(DS_DB_SECRETS, name, len, DS_SECRET_KEY_MAX, err)) {
        return DS_NOTFOUND;
    }

    return ds_raw_del(txn, DS_DB_SECRETS, name, len, err);
}
