/*
 * A slab zone of nodes in an rbtree with an LRU queue, as limit_req's:
 * the rate limit buckets (limit.c) and the token budgets (budget.c).
 * This file makes the zone and keeps it over "nginx -s reload"; what the
 * nodes are, how they are found and when they go is the user's.
 */

#include "ngx_http_dstack_module.h"


static ngx_int_t ngx_http_dstack_lru_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);


/* the zone "name" of size bytes (set by `directive`), its nodes ordered
 * by insert; NULL on error (logged) */
ngx_shm_zone_t *
ngx_http_dstack_lru_zone(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    const char *directive, ngx_rbtree_insert_pt insert)
{
    ngx_shm_zone_t         *shm_zone;
    ngx_http_dstack_lru_t  *lru;

    if (size < 8 * ngx_pagesize) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s of %uz bytes is too small, the minimum is %ui",
                           directive, size, 8 * ngx_pagesize);
        return NULL;
    }

    shm_zone = ngx_shared_memory_add(cf, name, size, &ngx_http_dstack_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        return shm_zone;
    }

    lru = ngx_pcalloc(cf->pool, sizeof(ngx_http_dstack_lru_t));
    if (lru == NULL) {
        return NULL;
    }

    lru->insert = insert;

    shm_zone->init = ngx_http_dstack_lru_init_zone;
    shm_zone->data = lru;

    return shm_zone;
}


static ngx_int_t
ngx_http_dstack_lru_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_dstack_lru_t  *olru = data;

    size_t                  len;
    ngx_http_dstack_lru_t  *lru;

    lru = shm_zone->data;

    if (olru) {
        /* reload: the nodes carry on */
        lru->sh = olru->sh;
        lru->shpool = olru->shpool;

        return NGX_OK;
    }

    lru->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        lru->sh = lru->shpool->data;

        return NGX_OK;
    }

    lru->sh = ngx_slab_alloc(lru->shpool, sizeof(ngx_http_dstack_lru_sh_t));
    if (lru->sh == NULL) {
        return NGX_ERROR;
    }

    lru->shpool->data = lru->sh;

    ngx_rbtree_init(&lru->sh->rbtree, &lru->sh->sentinel, lru->insert);
    ngx_queue_init(&lru->sh->queue);

    len = sizeof(" in dstack zone \"\"") + shm_zone->shm.name.len;

    lru->shpool->log_ctx = ngx_slab_alloc(lru->shpool, len);
    if (lru->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(lru->shpool->log_ctx, " in dstack zone \"%V\"%Z",
                &shm_zone->shm.name);

    /* a full zone is reported by the zone's user */
    lru->shpool->log_nomem = 0;

    return NGX_OK;
}
