/*
 * Token budgets of the model endpoint (#16): per (token, model), requests
 * per minute, tokens per minute and tokens per UTC day, decided before a
 * request is sent.
 *
 * The limits are the model's budget (the service file's model.budget, in
 * the model record) with the token's own fields over it (ds_budget_t in
 * ds_state.h).  Minutes are token buckets, as OpenAI's limits behave: a
 * bucket holds up to the limit, refills by the limit per 60 s, and a
 * request takes one request and its estimated tokens: what its body
 * weighs (a token per 4 bytes: more than the prompt's tokens, never
 * fewer) plus its max_tokens (or max_completion_tokens, or the model's
 * default).  When the answer ends, its usage replaces the estimate: the
 * difference goes back to the bucket, or is taken from it, which may go
 * below zero (the next requests wait for it).  A day counts the tokens
 * of the requests begun in it, reserved then settled the same way.
 *
 * Buckets of every worker live in the slab zone "dstack_budgets"
 * (dstack_budget_zone), one node per (token, service) in an rbtree with
 * an LRU queue (lru.c), under the zone's mutex, as limit.c's; they
 * survive reload.  A node idle for a day goes when a new one needs its
 * room; a full zone drops the oldest.  Nodes keep the names of their
 * token and model, and counters since they were made, for the stats
 * (stats.c, prom.c).
 *
 * Every answer of a request with a budget carries OpenAI's headers
 * x-ratelimit-{limit,remaining,reset}-{requests,tokens}, and ours for the
 * day: x-ratelimit-{limit,remaining,reset}-tokens-day.
 */

#include "ngx_http_dstack_module.h"


#define NGX_HTTP_DSTACK_BUDGET_KEY      24      /* token hash 16, uid 8 */
#define NGX_HTTP_DSTACK_BUDGET_MINUTE   60000
#define NGX_HTTP_DSTACK_BUDGET_DAY      86400
#define NGX_HTTP_DSTACK_BUDGET_BYTES    4       /* body bytes per token */
/* a header's value: 20 digits, or a duration (at most 24 bytes) */
#define NGX_HTTP_DSTACK_BUDGET_VALUE    32


/* overlays ngx_rbtree_node_t from its "color" member, as limit.c's */
typedef struct {
    u_char                       color;
    u_char                       dummy;
    u_short                      len;       /* of data */
    ngx_queue_t                  queue;
    ngx_msec_t                   last;      /* buckets refilled to */
    time_t                       used;      /* last admission, seconds */
    int64_t                      requests_m; /* requests x 1000 left */
    int64_t                      tokens_m;   /* tokens x 1000 left */
    uint32_t                     rpm;        /* the limits last applied */
    uint32_t                     tpm;
    uint64_t                     tpd;
    uint64_t                     day;        /* unix day of day_tokens */
    uint64_t                     day_tokens;
    ngx_http_dstack_budget_usage_t  usage;
    /* key, then the names: token, service, model, each a length byte
     * and its bytes */
    u_char                       data[1];
} ngx_http_dstack_budget_node_t;


static void ngx_http_dstack_budget_rbtree_insert_value(
    ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel);
static uint32_t ngx_http_dstack_budget_limit32(uint32_t token,
    uint32_t model);
static uint64_t ngx_http_dstack_budget_limit64(uint64_t token,
    uint64_t model);
static uint64_t ngx_http_dstack_budget_estimate(ngx_http_dstack_ctx_t *ctx,
    uint64_t *completion);
static ngx_http_dstack_budget_node_t *ngx_http_dstack_budget_lookup(
    ngx_http_dstack_lru_t *bctx, ngx_http_dstack_budget_t *b);
static ngx_http_dstack_budget_node_t *ngx_http_dstack_budget_create(
    ngx_http_dstack_lru_t *bctx, ngx_http_dstack_budget_t *b,
    const ds_token_t *tok, ngx_http_dstack_ctx_t *ctx);
static void ngx_http_dstack_budget_refill(ngx_http_dstack_budget_node_t *n,
    ngx_http_dstack_budget_t *b, ngx_msec_t now);
static ngx_uint_t ngx_http_dstack_budget_take(
    ngx_http_dstack_budget_node_t *n, ngx_http_dstack_budget_t *b,
    time_t now);
static void ngx_http_dstack_budget_remaining(
    ngx_http_dstack_budget_node_t *n, ngx_http_dstack_budget_t *b,
    time_t now);
static ngx_msec_t ngx_http_dstack_budget_refill_ms(int64_t need_m,
    int64_t have_m, uint32_t limit);
static void ngx_http_dstack_budget_expire(ngx_http_dstack_lru_t *bctx,
    ngx_uint_t force);
static ngx_int_t ngx_http_dstack_budget_refuse(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t over);
static ngx_uint_t ngx_http_dstack_budget_own_headers(ngx_http_request_t *r);
static u_char *ngx_http_dstack_budget_duration(u_char *p, uint64_t ms);
static u_char *ngx_http_dstack_budget_name(u_char *p, const u_char *name,
    size_t len);


ngx_int_t
ngx_http_dstack_budget_zone_init(ngx_conf_t *cf,
    ngx_http_dstack_main_conf_t *dmcf)
{
    ngx_str_t  name = ngx_string("dstack_budgets");

    dmcf->budget_zone = ngx_http_dstack_lru_zone(cf, &name,
                            dmcf->budget_zone_size, "dstack_budget_zone",
                            ngx_http_dstack_budget_rbtree_insert_value);

    return dmcf->budget_zone ? NGX_OK : NGX_ERROR;
}


static void
ngx_http_dstack_budget_rbtree_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t              **p;
    ngx_http_dstack_budget_node_t   *bn, *bnt;

    for ( ;; ) {

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            bn = (ngx_http_dstack_budget_node_t *) &node->color;
            bnt = (ngx_http_dstack_budget_node_t *) &temp->color;

            p = (ngx_memcmp(bn->data, bnt->data,
                            NGX_HTTP_DSTACK_BUDGET_KEY) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


/* a token's field over the model's: 0 keeps the model's, UNLIMITED none */
static uint32_t
ngx_http_dstack_budget_limit32(uint32_t token, uint32_t model)
{
    if (token == DS_BUDGET_UNLIMITED) {
        return 0;
    }

    return token ? token : model;
}


static uint64_t
ngx_http_dstack_budget_limit64(uint64_t token, uint64_t model)
{
    if (token == UINT64_MAX) {
        return 0;
    }

    return token ? token : model;
}


/*
 * Admission of a model endpoint's request, after auth (tok: its token,
 * NULL for the anonymous caller of a model without auth), inside the
 * read transaction.  NGX_OK, or NGX_DONE when answered (429, 503).
 */
ngx_int_t
ngx_http_dstack_budget_admit(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, const ds_token_t *tok)
{
    time_t                          now;
    uint32_t                        rpm, tpm;
    uint64_t                        tpd;
    ngx_uint_t                      over, asked;
    ngx_str_t                       reason;
    ngx_http_dstack_budget_t       *b;
    ngx_http_dstack_lru_t   *bctx;
    ngx_http_dstack_budget_node_t  *n;
    ngx_http_dstack_main_conf_t    *dmcf;
    static const ds_budget_t        none;
    const ds_budget_t              *tb;

    tb = tok ? &tok->budget : &none;

    rpm = ngx_http_dstack_budget_limit32(tb->rpm, ctx->model_budget.rpm);
    tpm = ngx_http_dstack_budget_limit32(tb->tpm, ctx->model_budget.tpm);
    tpd = ngx_http_dstack_budget_limit64(tb->tpd, ctx->model_budget.tpd);

    if (rpm == 0 && tpm == 0 && tpd == 0) {
        return NGX_OK;
    }

    dmcf = ngx_http_get_module_main_conf(r, ngx_http_dstack_module);

    if (dmcf->budget_zone == NULL || dmcf->budget_zone->data == NULL) {
        return NGX_OK;
    }

    bctx = dmcf->budget_zone->data;

    b = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_budget_t));
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->budget = b;
    b->rpm = rpm;
    b->tpm = tpm;
    b->tpd = tpd;

    if (tok) {
        ngx_memcpy(b->key, tok->hash, 16);
    }

    ngx_memcpy(b->key + 16, &ctx->service_uid, 8);
    b->hash = ngx_crc32_short(b->key, NGX_HTTP_DSTACK_BUDGET_KEY);

    b->estimate = ngx_http_dstack_budget_estimate(ctx, &b->completion_estimate);

    now = ngx_time();
    b->day = (uint64_t) now / NGX_HTTP_DSTACK_BUDGET_DAY;

    ngx_shmtx_lock(&bctx->shpool->mutex);

    n = ngx_http_dstack_budget_lookup(bctx, b);

    if (n == NULL) {
        n = ngx_http_dstack_budget_create(bctx, b, tok, ctx);
    }

    if (n == NULL) {
        ngx_shmtx_unlock(&bctx->shpool->mutex);

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "dstack budget zone \"%V\" is full, request of "
                      "\"%V\" refused", &dmcf->budget_zone->shm.name,
                      &ctx->service);

        ngx_str_set(&reason, "token budget state is full");
        return ngx_http_dstack_refuse(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      &reason, 1);
    }

    ngx_http_dstack_budget_refill(n, b, ngx_current_msec);

    over = ngx_http_dstack_budget_take(n, b, now);

    ngx_http_dstack_budget_remaining(n, b, now);

    ngx_shmtx_unlock(&bctx->shpool->mutex);

    if (over) {
        return ngx_http_dstack_budget_refuse(r, ctx, over);
    }

    b->reserved = 1;

    if (ngx_http_dstack_stream_ask_usage(r, ctx, &asked) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->strip_usage = asked;

    return NGX_OK;
}


/* tokens a request may use: its body's, and what it may answer */
static uint64_t
ngx_http_dstack_budget_estimate(ngx_http_dstack_ctx_t *ctx,
    uint64_t *completion)
{
    size_t           i;
    uint64_t         v;
    ds_json_span_t   span[2];

    static const char *const  keys[2] = {
        "max_tokens", "max_completion_tokens"
    };

    *completion = ctx->model_budget.max_tokens ? ctx->model_budget.max_tokens
                                               : DS_BUDGET_MAX_TOKENS;

    if (ctx->body.len
        && ds_json_find_raw((const char *) ctx->body.data, ctx->body.len,
                            keys, 2, span)
           == DS_JSON_OK)
    {
        for (i = 0; i < 2; i++) {
            if (span[i].len == 0 || span[i].len > 9) {
                continue;
            }

            v = 0;
            while (span[i].len && *span[i].data >= '0'
                   && *span[i].data <= '9')
            {
                v = v * 10 + (uint64_t) (*span[i].data++ - '0');
                span[i].len--;
            }

            if (span[i].len == 0) {
                *completion = v;
                break;
            }
        }
    }

    return (ctx->body.len + NGX_HTTP_DSTACK_BUDGET_BYTES - 1)
           / NGX_HTTP_DSTACK_BUDGET_BYTES + *completion;
}


/* called with the zone mutex held */
static ngx_http_dstack_budget_node_t *
ngx_http_dstack_budget_lookup(ngx_http_dstack_lru_t *bctx,
    ngx_http_dstack_budget_t *b)
{
    ngx_int_t                       rc;
    ngx_rbtree_node_t              *node, *sentinel;
    ngx_http_dstack_budget_node_t  *n;

    node = bctx->sh->rbtree.root;
    sentinel = bctx->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (b->hash != node->key) {
            node = (b->hash < node->key) ? node->left : node->right;
            continue;
        }

        n = (ngx_http_dstack_budget_node_t *) &node->color;

        rc = ngx_memcmp(b->key, n->data, NGX_HTTP_DSTACK_BUDGET_KEY);

        if (rc == 0) {
            ngx_queue_remove(&n->queue);
            ngx_queue_insert_head(&bctx->sh->queue, &n->queue);
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* a new node, its buckets full; called with the zone mutex held */
static ngx_http_dstack_budget_node_t *
ngx_http_dstack_budget_create(ngx_http_dstack_lru_t *bctx,
    ngx_http_dstack_budget_t *b, const ds_token_t *tok,
    ngx_http_dstack_ctx_t *ctx)
{
    u_char                         *p;
    size_t                          size, tlen, mlen;
    ngx_rbtree_node_t              *node;
    ngx_http_dstack_budget_node_t  *n;

    tlen = tok ? ngx_min(tok->name.len, 255) : 0;
    mlen = ngx_min(ctx->model_name.len, 255);

    size = offsetof(ngx_rbtree_node_t, color)
           + offsetof(ngx_http_dstack_budget_node_t, data)
           + NGX_HTTP_DSTACK_BUDGET_KEY
           + 3 + tlen + ngx_min(ctx->service.len, 255) + mlen;

    ngx_http_dstack_budget_expire(bctx, 0);

    node = ngx_slab_alloc_locked(bctx->shpool, size);

    if (node == NULL) {
        ngx_http_dstack_budget_expire(bctx, 1);

        node = ngx_slab_alloc_locked(bctx->shpool, size);
        if (node == NULL) {
            return NULL;
        }
    }

    ngx_memzero(node, size);
    node->key = b->hash;

    n = (ngx_http_dstack_budget_node_t *) &node->color;

    n->len = (u_short) (size - offsetof(ngx_rbtree_node_t, color)
                        - offsetof(ngx_http_dstack_budget_node_t, data));
    n->last = ngx_current_msec;
    n->requests_m = (int64_t) b->rpm * 1000;
    n->tokens_m = (int64_t) b->tpm * 1000;
    n->rpm = b->rpm;
    n->tpm = b->tpm;
    n->tpd = b->tpd;
    n->day = b->day;

    p = ngx_cpymem(n->data, b->key, NGX_HTTP_DSTACK_BUDGET_KEY);
    p = ngx_http_dstack_budget_name(p, tok ? (u_char *) tok->name.data
                                           : NULL, tlen);
    p = ngx_http_dstack_budget_name(p, ctx->service.data,
                                    ngx_min(ctx->service.len, 255));
    (void) ngx_http_dstack_budget_name(p, ctx->model_name.data, mlen);

    ngx_rbtree_insert(&bctx->sh->rbtree, node);
    ngx_queue_insert_head(&bctx->sh->queue, &n->queue);

    return n;
}


static u_char *
ngx_http_dstack_budget_name(u_char *p, const u_char *name, size_t len)
{
    *p++ = (u_char) len;

    return len ? ngx_cpymem(p, name, len) : p;
}


/*
 * The buckets refilled to now, at the limits of this request: a limit
 * that changed resizes its bucket, keeping what was used of it.
 */
static void
ngx_http_dstack_budget_refill(ngx_http_dstack_budget_node_t *n,
    ngx_http_dstack_budget_t *b, ngx_msec_t now)
{
    int64_t         full;
    ngx_msec_int_t  ms;

    if (n->rpm != b->rpm) {
        n->requests_m += ((int64_t) b->rpm - (int64_t) n->rpm) * 1000;
        n->rpm = b->rpm;
    }

    if (n->tpm != b->tpm) {
        n->tokens_m += ((int64_t) b->tpm - (int64_t) n->tpm) * 1000;
        n->tpm = b->tpm;
    }

    n->tpd = b->tpd;

    ms = (ngx_msec_int_t) (now - n->last);

    if (ms <= 0) {
        return;
    }

    if (ms > NGX_HTTP_DSTACK_BUDGET_MINUTE) {
        ms = NGX_HTTP_DSTACK_BUDGET_MINUTE;
    }

    /* limit x 1000 per 60,000 ms: limit / 60 per ms, in thousandths */
    full = (int64_t) n->rpm * 1000;
    n->requests_m = ngx_min(full, n->requests_m + (int64_t) n->rpm * ms / 60);

    full = (int64_t) n->tpm * 1000;
    n->tokens_m = ngx_min(full, n->tokens_m + (int64_t) n->tpm * ms / 60);

    n->last = now;
}


/*
 * One request and its estimate from the buckets and the day, or none of
 * them: 0, or the limit it is over (1 requests, 2 tokens, 3 a request
 * larger than the tokens per minute, 4 the day).
 */
static ngx_uint_t
ngx_http_dstack_budget_take(ngx_http_dstack_budget_node_t *n,
    ngx_http_dstack_budget_t *b, time_t now)
{
    int64_t  need;

    if (n->day != b->day) {
        n->day = b->day;
        n->day_tokens = 0;
    }

    need = (int64_t) b->estimate * 1000;

    if (b->rpm && n->requests_m < 1000) {
        b->over = NGX_HTTP_DSTACK_BUDGET_OVER_REQUESTS;

    } else if (b->tpm && b->estimate > b->tpm) {
        b->over = NGX_HTTP_DSTACK_BUDGET_OVER_SIZE;

    } else if (b->tpm && n->tokens_m < need) {
        b->over = NGX_HTTP_DSTACK_BUDGET_OVER_TOKENS;

    } else if (b->tpd && n->day_tokens + b->estimate > b->tpd) {
        b->over = NGX_HTTP_DSTACK_BUDGET_OVER_DAY;
    }

    n->used = now;

    if (b->over) {
        n->usage.refused++;
        return b->over;
    }

    if (b->rpm) {
        n->requests_m -= 1000;
    }

    if (b->tpm) {
        n->tokens_m -= need;
    }

    n->day_tokens += b->estimate;
    n->usage.requests++;

    return 0;
}


/* what the headers tell: what is left, and when it is full again */
static void
ngx_http_dstack_budget_remaining(ngx_http_dstack_budget_node_t *n,
    ngx_http_dstack_budget_t *b, time_t now)
{
    int64_t  need;

    if (b->rpm) {
        b->requests_left = n->requests_m > 0 ? n->requests_m / 1000 : 0;
        b->requests_reset = ngx_http_dstack_budget_refill_ms(
                                (int64_t) b->rpm * 1000, n->requests_m,
                                b->rpm);
        b->retry = ngx_http_dstack_budget_refill_ms(1000, n->requests_m,
                                                    b->rpm);
    }

    if (b->tpm) {
        b->tokens_left = n->tokens_m > 0 ? n->tokens_m / 1000 : 0;
        b->tokens_reset = ngx_http_dstack_budget_refill_ms(
                              (int64_t) b->tpm * 1000, n->tokens_m, b->tpm);

        if (b->over == NGX_HTTP_DSTACK_BUDGET_OVER_TOKENS) {
            need = (int64_t) b->estimate * 1000;
            b->retry = ngx_http_dstack_budget_refill_ms(need, n->tokens_m,
                                                        b->tpm);
        }
    }

    if (b->tpd) {
        b->day_left = n->day_tokens < b->tpd ? b->tpd - n->day_tokens : 0;
        b->day_reset = ((uint64_t) (b->day + 1) * NGX_HTTP_DSTACK_BUDGET_DAY
                        - (uint64_t) now) * 1000;

        if (b->over == NGX_HTTP_DSTACK_BUDGET_OVER_DAY) {
            b->retry = b->day_reset;
        }
    }
}


/* ms until a bucket refilling limit per minute holds need (x 1000) */
static ngx_msec_t
ngx_http_dstack_budget_refill_ms(int64_t need_m, int64_t have_m,
    uint32_t limit)
{
    if (have_m >= need_m) {
        return 0;
    }

    /* limit / 60 thousandths per ms */
    return (ngx_msec_t) (((need_m - have_m) * 60 + limit - 1) / limit);
}


/*
 * The answer ended (the request's pool goes): its usage replaces what was
 * reserved, in the minute and in the day.  Without usage, a 200 keeps
 * its estimate, and anything else gives the tokens back (the request
 * still counts).
 */
void
ngx_http_dstack_budget_settle(ngx_http_dstack_ctx_t *ctx)
{
    int64_t                         diff;
    uint64_t                        prompt, completion, used;
    ngx_http_dstack_budget_t       *b;
    ngx_http_dstack_lru_t   *bctx;
    ngx_http_dstack_budget_node_t  *n;
    ngx_http_dstack_main_conf_t    *dmcf;

    b = ctx->budget;

    if (b == NULL || !b->reserved) {
        return;
    }

    b->reserved = 0;

    if (b->usage_seen) {
        prompt = b->prompt;
        completion = b->completion;

    } else if (b->status == NGX_HTTP_OK) {
        completion = b->completion_estimate;
        prompt = b->estimate - completion;

    } else {
        prompt = 0;
        completion = 0;
    }

    used = prompt + completion;
    diff = (int64_t) b->estimate - (int64_t) used;

    dmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_dstack_module);

    if (dmcf == NULL || dmcf->budget_zone == NULL
        || dmcf->budget_zone->data == NULL)
    {
        return;
    }

    bctx = dmcf->budget_zone->data;

    ngx_shmtx_lock(&bctx->shpool->mutex);

    n = ngx_http_dstack_budget_lookup(bctx, b);

    if (n) {
        if (n->tpm) {
            n->tokens_m = ngx_min((int64_t) n->tpm * 1000,
                                  n->tokens_m + diff * 1000);
        }

        if (n->day == b->day) {
            if (diff < 0) {
                n->day_tokens += (uint64_t) -diff;

            } else {
                n->day_tokens -= ngx_min(n->day_tokens, (uint64_t) diff);
            }
        }

        n->usage.prompt_tokens += prompt;
        n->usage.completion_tokens += completion;
    }

    ngx_shmtx_unlock(&bctx->shpool->mutex);
}


/*
 * force == 0 deletes up to two nodes idle for a day (their minute
 * buckets full again and their day over: as if never asked);
 * force == 1 deletes the oldest by force, then as 0.
 */
static void
ngx_http_dstack_budget_expire(ngx_http_dstack_lru_t *bctx,
    ngx_uint_t force)
{
    ngx_uint_t                      i;
    ngx_queue_t                    *q;
    ngx_rbtree_node_t              *node;
    ngx_http_dstack_budget_node_t  *n;

    for (i = 0; i < 3; i++) {

        if (ngx_queue_empty(&bctx->sh->queue)) {
            return;
        }

        q = ngx_queue_last(&bctx->sh->queue);
        n = ngx_queue_data(q, ngx_http_dstack_budget_node_t, queue);

        if (!(force && i == 0)
            && ngx_time() - n->used < NGX_HTTP_DSTACK_BUDGET_DAY)
        {
            return;
        }

        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ((u_char *) n - offsetof(ngx_rbtree_node_t, color));

        ngx_rbtree_delete(&bctx->sh->rbtree, node);
        ngx_slab_free_locked(bctx->shpool, node);
    }
}


/* 429 in OpenAI's words, Retry-After when the request may pass */
static ngx_int_t
ngx_http_dstack_budget_refuse(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t over)
{
    u_char                    *p;
    time_t                     retry;
    ngx_str_t                  msg, value;
    const char                *type;
    ngx_http_dstack_budget_t  *b;

    b = ctx->budget;

    p = ngx_pnalloc(r->pool, NGX_MAX_ERROR_STR);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    msg.data = p;

    switch (over) {

    case NGX_HTTP_DSTACK_BUDGET_OVER_REQUESTS:
        type = "requests";
        p = ngx_sprintf(p, "Rate limit reached for %V on requests per min "
                        "(RPM): Limit %uD, Used %uD, Requested 1.",
                        &ctx->model_name, b->rpm, b->rpm - b->requests_left);
        break;

    case NGX_HTTP_DSTACK_BUDGET_OVER_SIZE:
        type = "tokens";
        p = ngx_sprintf(p, "Request too large for %V on tokens per min "
                        "(TPM): Limit %uD, Requested %uL. Send fewer "
                        "tokens or a lower max_tokens.",
                        &ctx->model_name, b->tpm, b->estimate);
        break;

    case NGX_HTTP_DSTACK_BUDGET_OVER_TOKENS:
        type = "tokens";
        p = ngx_sprintf(p, "Rate limit reached for %V on tokens per min "
                        "(TPM): Limit %uD, Used %uD, Requested %uL.",
                        &ctx->model_name, b->tpm, b->tpm - b->tokens_left,
                        b->estimate);
        break;

    default: /* NGX_HTTP_DSTACK_BUDGET_OVER_DAY */
        type = "tokens_per_day";
        p = ngx_sprintf(p, "Daily token quota reached for %V: Limit %uL, "
                        "Used %uL, Requested %uL.", &ctx->model_name,
                        b->tpd, b->tpd - b->day_left, b->estimate);
        break;
    }

    if (over != NGX_HTTP_DSTACK_BUDGET_OVER_SIZE) {
        retry = (time_t) ((b->retry + 999) / 1000);
        retry = ngx_max(retry, 1);

        p = ngx_sprintf(p, " Please try again in %Ts.", retry);

        value.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
        if (value.data == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        value.len = ngx_sprintf(value.data, "%T", retry) - value.data;

        if (ngx_http_dstack_add_header(r, "Retry-After", &value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    msg.len = p - msg.data;

    return ngx_http_dstack_fail(r, ctx, NGX_HTTP_TOO_MANY_REQUESTS, type,
                                "rate_limit_exceeded", &msg);
}


/* the x-ratelimit-* headers of an answer (the header filter's): the
 * values in one allocation; a replica's own headers of those names (a
 * proxy of a metered API) give way to ours */
ngx_int_t
ngx_http_dstack_budget_headers(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx)
{
    u_char                    *p;
    ngx_str_t                  v;
    ngx_uint_t                 i, n, own;
    ngx_table_elt_t           *h;
    ngx_http_dstack_budget_t  *b;

    static const char  *names[9] = {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-limit-tokens-day", "x-ratelimit-remaining-tokens-day",
        "x-ratelimit-reset-tokens-day"
    };

    uint64_t  values[9];

    b = ctx->budget;

    if (b == NULL) {
        return NGX_OK;
    }

    b->status = r->headers_out.status;

    /* limit, remaining, ms to full, for each limit set */
    values[0] = b->rpm;
    values[1] = b->requests_left;
    values[2] = b->requests_reset;
    values[3] = b->tpm;
    values[4] = b->tokens_left;
    values[5] = b->tokens_reset;
    values[6] = b->tpd;
    values[7] = b->day_left;
    values[8] = b->day_reset;

    p = ngx_pnalloc(r->pool, 9 * NGX_HTTP_DSTACK_BUDGET_VALUE);
    if (p == NULL) {
        return NGX_ERROR;
    }

    own = ngx_http_dstack_budget_own_headers(r);

    for (n = 0; n < 9; n += 3) {
        if (values[n] == 0) {
            continue;
        }

        for (i = n; i < n + 3; i++) {
            v.data = p;
            p = (i % 3 == 2) ? ngx_http_dstack_budget_duration(p, values[i])
                             : ngx_sprintf(p, "%uL", values[i]);
            v.len = p - v.data;

            h = own ? ngx_http_dstack_find_out_header(r, names[i]) : NULL;

            if (h) {
                h->value = v;

            } else if (ngx_http_dstack_add_header(r, names[i], &v)
                       != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* has the answer an x-ratelimit-* header of its own: one pass */
static ngx_uint_t
ngx_http_dstack_budget_own_headers(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash != 0 && h[i].key.len > sizeof("x-ratelimit-") - 1
            && ngx_strncasecmp(h[i].key.data, (u_char *) "x-ratelimit-",
                               sizeof("x-ratelimit-") - 1)
               == 0)
        {
            return 1;
        }
    }
}


/* as OpenAI writes them: "0s", "120ms", "1.5s", "6m0s", "2h3m4s" */
static u_char *
ngx_http_dstack_budget_duration(u_char *p, uint64_t ms)
{
    uint64_t  h, m, s, frac;

    if (ms < 1000) {
        return ms ? ngx_sprintf(p, "%uLms", ms) : ngx_cpymem(p, "0s", 2);
    }

    h = ms / 3600000;
    m = ms / 60000 % 60;
    s = ms / 1000 % 60;
    frac = ms % 1000;

    if (h) {
        p = ngx_sprintf(p, "%uLh%uLm", h, m);

    } else if (m) {
        p = ngx_sprintf(p, "%uLm", m);
    }

    p = ngx_sprintf(p, "%uL", s);

    if (frac) {
        p = ngx_sprintf(p, ".%03uL", frac);

        /* trailing zeros off */
        while (p[-1] == '0') {
            p--;
        }
    }

    *p++ = 's';

    return p;
}


/*
 * The nodes of the zone, copied for the stats (JSON and Prometheus):
 * an array of ngx_http_dstack_budget_entry_t in pool; NULL without a
 * zone or memory.
 */
ngx_array_t *
ngx_http_dstack_budget_entries(ngx_pool_t *pool)
{
    u_char                          *p;
    ngx_queue_t                     *q;
    ngx_array_t                     *a;
    ngx_http_dstack_lru_t    *bctx;
    ngx_http_dstack_budget_node_t   *n;
    ngx_http_dstack_budget_entry_t  *e;
    ngx_http_dstack_main_conf_t     *dmcf;

    dmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_dstack_module);

    if (dmcf == NULL || dmcf->budget_zone == NULL
        || dmcf->budget_zone->data == NULL)
    {
        return NULL;
    }

    bctx = dmcf->budget_zone->data;

    a = ngx_array_create(pool, 8, sizeof(ngx_http_dstack_budget_entry_t));
    if (a == NULL) {
        return NULL;
    }

    ngx_shmtx_lock(&bctx->shpool->mutex);

    for (q = ngx_queue_head(&bctx->sh->queue);
         q != ngx_queue_sentinel(&bctx->sh->queue);
         q = ngx_queue_next(q))
    {
        n = ngx_queue_data(q, ngx_http_dstack_budget_node_t, queue);

        e = ngx_array_push(a);
        if (e == NULL) {
            break;
        }

        p = n->data + NGX_HTTP_DSTACK_BUDGET_KEY;

        e->token.len = *p++;
        e->token.data = ngx_pnalloc(pool, n->len);
        if (e->token.data == NULL) {
            a->nelts--;
            break;
        }

        /* the names in one piece: token, service, model */
        ngx_memcpy(e->token.data, p, n->len - NGX_HTTP_DSTACK_BUDGET_KEY - 1);

        e->service.data = e->token.data + e->token.len + 1;
        e->service.len = e->token.data[e->token.len];
        e->model.data = e->service.data + e->service.len + 1;
        e->model.len = e->service.data[e->service.len];

        e->usage = n->usage;
        e->day = n->day;
        e->day_tokens = n->day_tokens;
    }

    ngx_shmtx_unlock(&bctx->shpool->mutex);

    return a;
}
