/*
 * The usage of a streamed answer, for token budgets (budget.c).  A
 * stream tells its token counts only when asked for them
 * ("stream_options": {"include_usage": true}), in one more event before
 * "data: [DONE]" whose "choices" is empty.  When a client with a budget
 * did not ask, the gateway asks for it in the request body it forwards,
 * and takes that event out of the answer the client receives, so that
 * the client gets what it asked for and the budget is settled with what
 * the model counted.
 *
 * Taking it out works on the answer's buffers as they pass: complete
 * events are checked where they lie and a usage event is cut out of its
 * buffer in place; the bytes of an event that a buffer ends inside wait
 * (copied into the request's pool) until the rest of it comes, which
 * delays nothing a client could use, as an event is read whole.
 */

#include "ngx_http_dstack_module.h"

#include <string.h>


#define NGX_HTTP_DSTACK_STREAM_ENDED  3

/* an event longer than this is passed on as it is */
#define NGX_HTTP_DSTACK_STREAM_EVENT_MAX  8192


typedef struct ngx_http_dstack_stream_s {
    u_char                     *pending;    /* an event's first bytes */
    size_t                      len;
    ngx_uint_t                  off;        /* too long an event: passed */
} ngx_http_dstack_stream_t;


static ngx_int_t ngx_http_dstack_stream_insert(ngx_http_request_t *r,
    ngx_str_t *body, size_t at, const char *text, ngx_uint_t comma);
static u_char *ngx_http_dstack_stream_end(u_char *p, u_char *last,
    ngx_uint_t *state);
static ngx_uint_t ngx_http_dstack_stream_is_usage(u_char *p, size_t len);
static ngx_uint_t ngx_http_dstack_stream_member(u_char *p, size_t len,
    const char *key, const char *value);
static ngx_int_t ngx_http_dstack_stream_finish(ngx_http_request_t *r,
    ngx_http_dstack_stream_t *st, ngx_buf_t *b, ngx_chain_t ***ll);
static ngx_int_t ngx_http_dstack_stream_emit(ngx_http_request_t *r,
    u_char *p, size_t len, ngx_chain_t ***ll);
static void ngx_http_dstack_stream_cut(ngx_buf_t *b);
static ngx_int_t ngx_http_dstack_stream_keep(ngx_http_request_t *r,
    ngx_http_dstack_stream_t *st, ngx_buf_t *b);


/*
 * A streamed request ("stream": true) without "include_usage" asks for
 * it: "stream_options":{"include_usage":true} at the start of the body,
 * or "include_usage":true at the start of its "stream_options".  A
 * client that asked, or said false, is left as it is.  NGX_OK (*asked
 * set when the body changed) or NGX_ERROR.
 */
ngx_int_t
ngx_http_dstack_stream_ask_usage(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_uint_t *asked)
{
    size_t           at;
    u_char          *p, *last;
    ngx_str_t       *body;
    ds_json_span_t   span[2], usage[1];

    static const char *const  keys[2] = { "stream", "stream_options" };
    static const char *const  usage_key[1] = { "include_usage" };

    *asked = 0;
    body = &ctx->body;

    if (body->len == 0
        || ds_json_find_raw((const char *) body->data, body->len, keys, 2,
                            span)
           != DS_JSON_OK
        || span[0].len != 4 || ngx_strncmp(span[0].data, "true", 4) != 0)
    {
        return NGX_OK;
    }

    if (span[1].len == 0) {
        /* the body is an object: its '{' is its first byte but spaces */
        for (p = body->data, last = p + body->len; p < last; p++) {
            if (*p == '{') {
                break;
            }
        }

        at = p + 1 - body->data;
        *asked = 1;

        return ngx_http_dstack_stream_insert(r, body, at,
                   "\"stream_options\":{\"include_usage\":true}", 1);
    }

    if (span[1].data[0] != '{'
        || ds_json_find_raw(span[1].data, span[1].len, usage_key, 1, usage)
           != DS_JSON_OK
        || usage[0].len != 0)
    {
        return NGX_OK;
    }

    /* an empty object takes no comma */
    for (p = (u_char *) span[1].data + 1,
         last = (u_char *) span[1].data + span[1].len;
         p < last && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r');
         p++)
    {
        /* void */
    }

    at = (u_char *) span[1].data + 1 - body->data;
    *asked = 1;

    return ngx_http_dstack_stream_insert(r, body, at,
                                         "\"include_usage\":true",
                                         p < last && *p != '}');
}


/* the body with text (and a comma) at `at`, as the request's body */
static ngx_int_t
ngx_http_dstack_stream_insert(ngx_http_request_t *r, ngx_str_t *body,
    size_t at, const char *text, ngx_uint_t comma)
{
    u_char       *p;
    size_t        tlen, len;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    tlen = ngx_strlen(text);
    len = body->len + tlen + (comma ? 1 : 0);

    b = ngx_create_temp_buf(r->pool, len);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(b->last, body->data, at);
    p = ngx_cpymem(p, text, tlen);

    if (comma) {
        *p++ = ',';
    }

    p = ngx_cpymem(p, body->data + at, body->len - at);

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;

    r->request_body->bufs = cl;
    r->headers_in.content_length_n = len;

    body->data = b->pos;
    body->len = len;

    return NGX_OK;
}


/*
 * The answer's buffers without the usage event, in a chain of new links
 * in *out (the buffers shortened in place, the first bytes of an event
 * kept back, kept bytes given back as buffers of their own); the caller
 * frees the links (ngx_http_dstack_stream_free()) when the next filter
 * is done with them.  NGX_OK or NGX_ERROR.
 */
ngx_int_t
ngx_http_dstack_stream_strip(ngx_http_request_t *r,
    ngx_http_dstack_ctx_t *ctx, ngx_chain_t *in, ngx_chain_t **out)
{
    ngx_buf_t                 *b;
    ngx_chain_t               *cl, *ln, **ll;
    ngx_http_dstack_stream_t  *st;

    st = ctx->stream;

    if (st == NULL) {
        st = ngx_pcalloc(r->pool, sizeof(ngx_http_dstack_stream_t));
        if (st == NULL) {
            return NGX_ERROR;
        }

        ctx->stream = st;
    }

    *out = NULL;
    ll = out;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b) && b->last > b->pos) {

            if (st->len
                && ngx_http_dstack_stream_finish(r, st, b, &ll) != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (st->len == 0 && !st->off) {
                ngx_http_dstack_stream_cut(b);

                if (!b->last_buf
                    && ngx_http_dstack_stream_keep(r, st, b) != NGX_OK)
                {
                    return NGX_ERROR;
                }
            }
        }

        /* the end: an event never finished goes as it is */
        if (b->last_buf && st->len) {
            if (ngx_http_dstack_stream_emit(r, st->pending, st->len, &ll)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            st->len = 0;
        }

        /* a buffer emptied here is done with: its owner sees it so */
        if (ngx_buf_in_memory(b) && b->last == b->pos && !ngx_buf_special(b))
        {
            continue;
        }

        ln = ngx_alloc_chain_link(r->pool);
        if (ln == NULL) {
            return NGX_ERROR;
        }

        ln->buf = b;
        *ll = ln;
        ll = &ln->next;
    }

    *ll = NULL;

    return NGX_OK;
}


void
ngx_http_dstack_stream_free(ngx_http_request_t *r, ngx_chain_t *out)
{
    ngx_chain_t  *next;

    for ( /* void */ ; out; out = next) {
        next = out->next;
        ngx_free_chain(r->pool, out);
    }
}


/* the rest of a kept event, from the front of b: passed, or dropped when
 * it is the usage event */
static ngx_int_t
ngx_http_dstack_stream_finish(ngx_http_request_t *r,
    ngx_http_dstack_stream_t *st, ngx_buf_t *b, ngx_chain_t ***ll)
{
    u_char      *end, *p;
    size_t       n;
    ngx_uint_t   state;

    /* where the kept bytes left the line */
    state = 0;
    p = st->pending + (st->len > 2 ? st->len - 2 : 0);
    (void) ngx_http_dstack_stream_end(p, st->pending + st->len, &state);

    end = ngx_http_dstack_stream_end(b->pos, b->last, &state);
    if (end == NULL) {
        end = b->last;
    }

    n = end - b->pos;

    if (st->len + n > NGX_HTTP_DSTACK_STREAM_EVENT_MAX) {
        /* not an event of ours: everything goes as it comes */
        st->off = 1;
        n = st->len;
        st->len = 0;
        return ngx_http_dstack_stream_emit(r, st->pending, n, ll);
    }

    ngx_memcpy(st->pending + st->len, b->pos, n);
    st->len += n;
    b->pos = end;

    if (state != NGX_HTTP_DSTACK_STREAM_ENDED) {
        /* b ended inside the event too */
        return NGX_OK;
    }

    n = st->len;
    st->len = 0;

    if (ngx_http_dstack_stream_is_usage(st->pending, n)) {
        return NGX_OK;
    }

    return ngx_http_dstack_stream_emit(r, st->pending, n, ll);
}


/* a buffer of its own for bytes kept back (a new copy: they were in
 * st->pending, which the next kept event reuses) */
static ngx_int_t
ngx_http_dstack_stream_emit(ngx_http_request_t *r, u_char *p, size_t len,
    ngx_chain_t ***ll)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    b = ngx_create_temp_buf(r->pool, len);
    cl = ngx_alloc_chain_link(r->pool);
    if (b == NULL || cl == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(b->last, p, len);
    b->flush = 1;

    cl->buf = b;
    cl->next = NULL;
    **ll = cl;
    *ll = &cl->next;

    return NGX_OK;
}


/* the complete events of b checked; the usage event cut out in place */
static void
ngx_http_dstack_stream_cut(ngx_buf_t *b)
{
    u_char      *p, *end;
    ngx_uint_t   state;

    for (p = b->pos; p < b->last; p = end) {
        state = 0;
        end = ngx_http_dstack_stream_end(p, b->last, &state);

        if (end == NULL) {
            return;
        }

        if (ngx_http_dstack_stream_is_usage(p, end - p)) {
            ngx_memmove(p, end, b->last - end);
            b->last -= end - p;
            end = p;
        }
    }
}


/* the bytes of b after its last complete event wait for the rest */
static ngx_int_t
ngx_http_dstack_stream_keep(ngx_http_request_t *r,
    ngx_http_dstack_stream_t *st, ngx_buf_t *b)
{
    u_char      *p, *start;
    ngx_uint_t   state;

    start = b->pos;

    for ( ;; ) {
        state = 0;
        p = ngx_http_dstack_stream_end(start, b->last, &state);
        if (p == NULL) {
            break;
        }
        start = p;
    }

    if (start == b->last) {
        return NGX_OK;
    }

    if (b->last - start > NGX_HTTP_DSTACK_STREAM_EVENT_MAX / 2) {
        st->off = 1;
        return NGX_OK;
    }

    if (st->pending == NULL) {
        st->pending = ngx_pnalloc(r->pool, NGX_HTTP_DSTACK_STREAM_EVENT_MAX);
        if (st->pending == NULL) {
            return NGX_ERROR;
        }
    }

    st->len = b->last - start;
    ngx_memcpy(st->pending, start, st->len);
    b->last = start;

    return NGX_OK;
}


/*
 * The end of an event: past the blank line after it ("\n\n", or with
 * CRs, "\r\n\r\n"), or NULL when [p, last) ends first; *state carries
 * where a line stands from one piece to the next (0 inside a line, 1 at
 * a line's start, 2 after a CR there; ENDED once the end is found).
 */
static u_char *
ngx_http_dstack_stream_end(u_char *p, u_char *last, ngx_uint_t *state)
{
    for ( /* void */ ; p < last; p++) {

        switch (*p) {

        case '\n':
            if (*state != 0) {
                *state = NGX_HTTP_DSTACK_STREAM_ENDED;
                return p + 1;
            }

            *state = 1;
            break;

        case '\r':
            *state = (*state == 1) ? 2 : *state;
            break;

        default:
            *state = 0;
        }
    }

    return NULL;
}


/* "data: {...,"choices":[],...,"usage":{...}}": the usage event (spaces
 * between the tokens as a server's JSON writer puts them) */
static ngx_uint_t
ngx_http_dstack_stream_is_usage(u_char *p, size_t len)
{
    return len > sizeof("data:") - 1
           && ngx_strncmp(p, "data:", sizeof("data:") - 1) == 0
           && ngx_http_dstack_stream_member(p, len, "\"choices\"", "[]")
           && ngx_http_dstack_stream_member(p, len, "\"usage\"", "{");
}


/* a member named key whose value starts with the bytes of value, spaces
 * between them allowed */
static ngx_uint_t
ngx_http_dstack_stream_member(u_char *p, size_t len, const char *key,
    const char *value)
{
    u_char  *last, *k;
    size_t   klen;

    last = p + len;
    klen = ngx_strlen(key);

    for ( ;; ) {
        k = memmem(p, last - p, key, klen);

        if (k == NULL) {
            return 0;
        }

        p = k + klen;

        while (p < last && (*p == ' ' || *p == '\t')) {
            p++;
        }

        if (p == last || *p++ != ':') {
            continue;
        }

        for (k = (u_char *) value; *k; k++) {
            while (p < last && (*p == ' ' || *p == '\t')) {
                p++;
            }

            if (p == last || *p != *k) {
                break;
            }

            p++;
        }

        if (*k == '\0') {
            return 1;
        }
    }
}
