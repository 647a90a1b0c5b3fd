/*
 * YAML -> cJSON with where each node was: see ds_yaml.h.
 *
 * libyaml's events build the tree directly (its document API would
 * build a second tree to walk), on a stack of open lists and mappings;
 * a side table keyed by node address keeps the places.  An alias is
 * expanded as a deep copy whose nodes are all placed where the alias
 * was, and counts against the node budget as the whole copy, so that
 * a "billion laughs" file stops at the budget instead of memory.
 */

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "ds_msg.h"
#include "ds_yaml.h"


#define DS_YAML_TAG_PREFIX      "tag:yaml.org,2002:"


/* ---- where nodes were: a map from node address to line and column -------- */

typedef struct {
    const cJSON    *node;
    uint32_t        line;
    uint32_t        col;
    uint32_t        key_line;       /* its key, inside a mapping */
    uint32_t        key_col;
    char           *raw;            /* a plain number, boolean or null */
} ds_loc_t;

typedef struct {
    ds_loc_t       *v;
    size_t          n;
    size_t          cap;
    uint32_t       *tab;            /* index + 1; 0: empty */
    size_t          tab_size;       /* a power of two */
} ds_locs_t;

struct ds_yaml_doc_s {
    char           *file;
    cJSON          *root;           /* NULL: an empty file */
    ds_locs_t       locs;
};


static size_t
ds_locs_hash(const void *p, size_t size)
{
    uint64_t  h;

    h = (uint64_t) (uintptr_t) p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;

    return (size_t) h & (size - 1);
}


static int
ds_locs_rehash(ds_locs_t *L, size_t size)
{
    size_t     i, h;
    uint32_t  *tab;

    tab = calloc(size, sizeof(uint32_t));
    if (tab == NULL) {
        return -1;
    }

    for (i = 0; i < L->n; i++) {
        h = ds_locs_hash(L->v[i].node, size);
        while (tab[h] != 0) {
            h = (h + 1) & (size - 1);
        }
        tab[h] = (uint32_t) (i + 1);
    }

    free(L->tab);
    L->tab = tab;
    L->tab_size = size;

    return 0;
}


/* the new entry stays valid until the next ds_locs_add() */
static ds_loc_t *
ds_locs_add(ds_locs_t *L, const cJSON *node)
{
    size_t     h, cap;
    ds_loc_t  *v;

    if (L->n == L->cap) {
        cap = L->cap ? L->cap * 2 : 64;
        v = realloc(L->v, cap * sizeof(ds_loc_t));
        if (v == NULL) {
            return NULL;
        }
        L->v = v;
        L->cap = cap;
    }

    if ((L->n + 1) * 2 > L->tab_size) {
        if (ds_locs_rehash(L, L->tab_size ? L->tab_size * 2 : 128) != 0) {
            return NULL;
        }
    }

    h = ds_locs_hash(node, L->tab_size);
    while (L->tab[h] != 0) {
        h = (h + 1) & (L->tab_size - 1);
    }
    L->tab[h] = (uint32_t) (L->n + 1);

    v = &L->v[L->n++];
    memset(v, 0, sizeof(*v));
    v->node = node;

    return v;
}


static const ds_loc_t *
ds_locs_find(const ds_locs_t *L, const cJSON *node)
{
    size_t  h;

    if (L == NULL || L->tab_size == 0 || node == NULL) {
        return NULL;
    }

    h = ds_locs_hash(node, L->tab_size);
    while (L->tab[h] != 0) {
        if (L->v[L->tab[h] - 1].node == node) {
            return &L->v[L->tab[h] - 1];
        }
        h = (h + 1) & (L->tab_size - 1);
    }

    return NULL;
}


static void
ds_locs_free(ds_locs_t *L)
{
    size_t  i;

    for (i = 0; i < L->n; i++) {
        free(L->v[i].raw);
    }
    free(L->v);
    free(L->tab);
    memset(L, 0, sizeof(*L));
}


/* ---- the loader: libyaml events -> cJSON --------------------------------- */

typedef struct {
    cJSON          *node;
    int             is_map;
    char           *key;            /* maps: the key awaiting its value */
    uint32_t        key_line;
    uint32_t        key_col;
    uint32_t        nkeys;
    uint32_t        count;          /* nodes in this subtree */
    uint32_t        depth;          /* levels in this subtree */
    char           *anchor;
} ds_yframe_t;

typedef struct {
    char           *name;
    const cJSON    *node;
    uint32_t        count;
    uint32_t        depth;
} ds_yanchor_t;

typedef struct {
    const char     *file;
    const char     *text;
    size_t          len;
    ds_locs_t      *locs;
    ds_err_t       *err;
    cJSON          *root;
    int             have_root;
    int             docs;
    uint32_t        nodes;
    int             sp;
    ds_yframe_t     st[DS_YAML_DEPTH_MAX];
    ds_yanchor_t   *anchors;
    size_t          n_anchors;
    size_t          cap_anchors;
} ds_yload_t;


static int ds_y_fail(ds_yload_t *y, size_t line, size_t col,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));


static int
ds_y_fail(ds_yload_t *y, size_t line, size_t col, const char *fmt, ...)
{
    char     msg[sizeof(y->err->msg)], head[sizeof(y->err->msg)];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    snprintf(head, sizeof(head), "%s:%zu:%zu: ", y->file, line, col);
    ds_err_put(y->err, head, msg);

    return DS_EINVAL;
}


static int
ds_y_oom(ds_yload_t *y)
{
    snprintf(y->err->msg, sizeof(y->err->msg), "%s: out of memory",
             y->file);
    return DS_ERROR;
}


#define ds_y_mfail(y, m, ...)                                                \
    ds_y_fail(y, (m)->line + 1, (m)->column + 1, __VA_ARGS__)


/* "!!int" for "tag:yaml.org,2002:int" */
static const char *
ds_y_tag(ds_qbuf_t *b, const char *tag)
{
    char  s[64];

    if (strncmp(tag, DS_YAML_TAG_PREFIX, sizeof(DS_YAML_TAG_PREFIX) - 1)
        == 0)
    {
        snprintf(s, sizeof(s), "!!%s", tag + sizeof(DS_YAML_TAG_PREFIX) - 1);
        return ds_q(b, s);
    }

    return ds_q(b, tag);
}


/* is the character at (line, column), both from 0, a tab? */
static int
ds_y_tab_at(ds_yload_t *y, size_t line, size_t col)
{
    size_t  i;

    for (i = 0; i < y->len && line > 0; i++) {
        if (y->text[i] == '\n') {
            line--;
        }
    }

    for ( /* void */ ; i < y->len && col > 0; i++) {
        if (y->text[i] == '\n') {
            return 0;
        }
        if (((unsigned char) y->text[i] & 0xc0) != 0x80) {
            col--;
        }
    }

    while (i < y->len && ((unsigned char) y->text[i] & 0xc0) == 0x80) {
        i++;
    }

    return i < y->len && y->text[i] == '\t';
}


static int
ds_y_syntax(ds_yload_t *y, const yaml_parser_t *p)
{
    size_t       line, col, i;
    const char  *problem;

    if (p->error == YAML_MEMORY_ERROR) {
        return ds_y_oom(y);
    }

    problem = p->problem ? p->problem : "syntax error";

    if (p->error == YAML_READER_ERROR) {
        /* reader errors carry a byte offset, not a mark */
        line = 1;
        col = 1;
        for (i = 0; i < p->problem_offset && i < y->len; i++) {
            if (y->text[i] == '\n') {
                line++;
                col = 1;
            } else if (((unsigned char) y->text[i] & 0xc0) != 0x80) {
                col++;
            }
        }

        if (p->problem_value != -1) {
            return ds_y_fail(y, line, col, "%s (byte 0x%02x)", problem,
                             (unsigned) p->problem_value & 0xff);
        }
        return ds_y_fail(y, line, col, "%s", problem);
    }

    if (ds_y_tab_at(y, p->problem_mark.line, p->problem_mark.column)) {
        return ds_y_fail(y, p->problem_mark.line + 1,
                         p->problem_mark.column + 1,
                         "tabs cannot indent YAML: use spaces");
    }

    if (p->context) {
        return ds_y_fail(y, p->problem_mark.line + 1,
                         p->problem_mark.column + 1, "%s (%s at line %zu)",
                         problem, p->context, p->context_mark.line + 1);
    }

    return ds_y_fail(y, p->problem_mark.line + 1, p->problem_mark.column + 1,
                     "%s", problem);
}


static int
ds_y_is_int(const char *s, size_t n)
{
    size_t  i;

    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o')) {
        for (i = 2; i < n; i++) {
            if (s[1] == 'x' ? !isxdigit((unsigned char) s[i])
                            : (s[i] < '0' || s[i] > '7'))
            {
                return 0;
            }
        }
        return 1;
    }

    i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    if (i == n) {
        return 0;
    }
    for ( /* void */ ; i < n; i++) {
        if (!isdigit((unsigned char) s[i])) {
            return 0;
        }
    }
    return 1;
}


/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int
ds_y_is_float(const char *s, size_t n)
{
    size_t  i, digits;

    i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    digits = 0;

    while (i < n && isdigit((unsigned char) s[i])) {
        i++;
        digits++;
    }
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && isdigit((unsigned char) s[i])) {
            i++;
            digits++;
        }
    }
    if (digits == 0) {
        return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+')) {
            i++;
        }
        if (i == n) {
            return 0;
        }
        while (i < n && isdigit((unsigned char) s[i])) {
            i++;
        }
    }
    return i == n;
}


static int
ds_y_word(const char *s, size_t n, const char *const *words)
{
    for ( /* void */ ; *words; words++) {
        if (strlen(*words) == n && memcmp(s, *words, n) == 0) {
            return 1;
        }
    }
    return 0;
}


/*
 * A plain scalar's value.  *raw is set when the text matters beyond the
 * value (numbers, booleans and null: "user: 1000", "mode: 0660", "~");
 * the result is NULL only without memory.
 */
static cJSON *
ds_y_resolve(const char *s, size_t n, int *raw)
{
    static const char *const  nulls[] = { "~", "null", "Null", "NULL", NULL };
    static const char *const  trues[] = { "true", "True", "TRUE", "yes",
        "Yes", "YES", "on", "On", "ON", NULL };
    static const char *const  falses[] = { "false", "False", "FALSE", "no",
        "No", "NO", "off", "Off", "OFF", NULL };
    char                     *tmp;
    double                    d;
    cJSON                    *v;

    *raw = 1;

    if (n == 0 || ds_y_word(s, n, nulls)) {
        return cJSON_CreateNull();
    }
    if (ds_y_word(s, n, trues)) {
        return cJSON_CreateTrue();
    }
    if (ds_y_word(s, n, falses)) {
        return cJSON_CreateFalse();
    }

    tmp = malloc(n + 1);
    if (tmp == NULL) {
        return NULL;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';

    if (ds_y_is_int(s, n) || ds_y_is_float(s, n)) {
        if (n > 2 && s[0] == '0' && s[1] == 'x') {
            d = (double) strtoull(tmp + 2, NULL, 16);
        } else if (n > 2 && s[0] == '0' && s[1] == 'o') {
            d = (double) strtoull(tmp + 2, NULL, 8);
        } else {
            d = strtod(tmp, NULL);
        }
        v = cJSON_CreateNumber(d);

    } else {
        *raw = 0;
        v = cJSON_CreateString(tmp);
    }

    free(tmp);
    return v;
}


static int
ds_y_anchor(ds_yload_t *y, const char *name, const cJSON *node,
    uint32_t count, uint32_t depth)
{
    size_t         cap;
    ds_yanchor_t  *a;

    if (y->n_anchors == y->cap_anchors) {
        cap = y->cap_anchors ? y->cap_anchors * 2 : 8;
        a = realloc(y->anchors, cap * sizeof(ds_yanchor_t));
        if (a == NULL) {
            return ds_y_oom(y);
        }
        y->anchors = a;
        y->cap_anchors = cap;
    }

    a = &y->anchors[y->n_anchors];
    a->name = strdup(name);
    if (a->name == NULL) {
        return ds_y_oom(y);
    }
    a->node = node;
    a->count = count;
    a->depth = depth;
    y->n_anchors++;

    return DS_OK;
}


/* links node to its parent (or makes it the root) and records where */
static int
ds_y_attach(ds_yload_t *y, cJSON *node, const yaml_mark_t *m,
    const char *raw, size_t raw_len, uint32_t count, uint32_t depth)
{
    ds_loc_t     *loc;
    ds_yframe_t  *p;

    loc = ds_locs_add(y->locs, node);
    if (loc == NULL) {
        cJSON_Delete(node);
        return ds_y_oom(y);
    }

    loc->line = (uint32_t) m->line + 1;
    loc->col = (uint32_t) m->column + 1;

    if (raw) {
        loc->raw = strndup(raw, raw_len);
        if (loc->raw == NULL) {
            cJSON_Delete(node);
            return ds_y_oom(y);
        }
    }

    if (y->sp == 0) {
        y->root = node;
        y->have_root = 1;
        return DS_OK;
    }

    p = &y->st[y->sp - 1];

    if (p->is_map) {
        loc->key_line = p->key_line;
        loc->key_col = p->key_col;
        if (!cJSON_AddItemToObject(p->node, p->key, node)) {
            cJSON_Delete(node);
            return ds_y_oom(y);
        }
        free(p->key);
        p->key = NULL;

    } else if (!cJSON_AddItemToArray(p->node, node)) {
        cJSON_Delete(node);
        return ds_y_oom(y);
    }

    p->count += count;
    if (depth + 1 > p->depth) {
        p->depth = depth + 1;
    }

    return DS_OK;
}


/* an alias's copy: every node of it is where the alias was */
static int
ds_y_copy_locs(ds_yload_t *y, const cJSON *src, const cJSON *dst,
    const yaml_mark_t *m)
{
    const cJSON     *s, *d;
    const ds_loc_t  *sl;
    ds_loc_t        *loc;
    const char      *raw;

    for (s = src->child, d = dst->child; s && d; s = s->next, d = d->next) {
        sl = ds_locs_find(y->locs, s);
        raw = sl ? sl->raw : NULL;

        loc = ds_locs_add(y->locs, d);
        if (loc == NULL) {
            return ds_y_oom(y);
        }
        loc->line = loc->key_line = (uint32_t) m->line + 1;
        loc->col = loc->key_col = (uint32_t) m->column + 1;
        if (raw) {
            loc->raw = strdup(raw);
            if (loc->raw == NULL) {
                return ds_y_oom(y);
            }
        }

        if (d->child && ds_y_copy_locs(y, s, d, m) != DS_OK) {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


/*
 * A scalar we can take (a key or a value, as `what` says): no tag but
 * the string ones, no NUL; *is_str: quoted or tagged as a string.
 */
static int
ds_y_scalar_check(ds_yload_t *y, const yaml_event_t *ev, const char *what,
    int *is_str)
{
    const char  *tag;
    ds_qbuf_t    qb;

    tag = (const char *) ev->data.scalar.tag;
    *is_str = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;

    if (tag != NULL) {
        if (strcmp(tag, "!") != 0
            && strcmp(tag, DS_YAML_TAG_PREFIX "str") != 0)
        {
            return ds_y_mfail(y, &ev->start_mark, "unsupported YAML tag %s",
                              ds_y_tag(&qb, tag));
        }
        *is_str = 1;
    }

    if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length)
        != NULL)
    {
        return ds_y_mfail(y, &ev->start_mark,
                          "NUL characters are not allowed in %s", what);
    }

    return DS_OK;
}


static int
ds_y_key(ds_yload_t *y, const yaml_event_t *ev)
{
    int              is_str;
    const char      *s;
    size_t           n;
    ds_yframe_t     *p;
    const cJSON     *prev;
    const ds_loc_t  *pl;
    ds_qbuf_t        qb;

    p = &y->st[y->sp - 1];
    s = (const char *) ev->data.scalar.value;
    n = ev->data.scalar.length;

    if (ds_y_scalar_check(y, ev, "keys", &is_str) != DS_OK) {
        return DS_EINVAL;
    }

    if (!is_str && n == 2 && memcmp(s, "<<", 2) == 0) {
        return ds_y_mfail(y, &ev->start_mark,
                          "merge keys (<<) are not supported");
    }

    if (++p->nkeys > DS_YAML_KEYS_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many keys in a mapping (more than %d)",
                          DS_YAML_KEYS_MAX);
    }

    prev = cJSON_GetObjectItemCaseSensitive(p->node, s);
    if (prev) {
        pl = ds_locs_find(y->locs, prev);
        return ds_y_mfail(y, &ev->start_mark,
                          "duplicate key %s (first at line %u)", ds_q(&qb, s),
                          pl ? pl->key_line : 0);
    }

    p->key = strndup(s, n);
    if (p->key == NULL) {
        return ds_y_oom(y);
    }
    p->key_line = (uint32_t) ev->start_mark.line + 1;
    p->key_col = (uint32_t) ev->start_mark.column + 1;

    return DS_OK;
}


static int
ds_y_scalar(ds_yload_t *y, const yaml_event_t *ev)
{
    int          is_str, raw;
    char        *tmp;
    cJSON       *v;
    const char  *s;
    size_t       n;

    s = (const char *) ev->data.scalar.value;
    n = ev->data.scalar.length;

    if (ds_y_scalar_check(y, ev, "strings", &is_str) != DS_OK) {
        return DS_EINVAL;
    }

    if (++y->nodes > DS_YAML_NODES_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many values (more than %d)",
                          DS_YAML_NODES_MAX);
    }

    raw = 0;
    if (is_str) {
        tmp = strndup(s, n);
        if (tmp == NULL) {
            return ds_y_oom(y);
        }
        v = cJSON_CreateString(tmp);
        free(tmp);
    } else {
        v = ds_y_resolve(s, n, &raw);
    }

    if (v == NULL) {
        return ds_y_oom(y);
    }

    if (ds_y_attach(y, v, &ev->start_mark, raw ? s : NULL, n, 1, 0)
        != DS_OK)
    {
        return DS_ERROR;
    }

    if (ev->data.scalar.anchor) {
        return ds_y_anchor(y, (const char *) ev->data.scalar.anchor, v, 1, 0);
    }

    return DS_OK;
}


static int
ds_y_open(ds_yload_t *y, const yaml_event_t *ev, int is_map)
{
    const char   *tag, *anchor;
    cJSON        *v;
    ds_yframe_t  *f;
    ds_qbuf_t     qb;

    if (is_map) {
        tag = (const char *) ev->data.mapping_start.tag;
        anchor = (const char *) ev->data.mapping_start.anchor;
    } else {
        tag = (const char *) ev->data.sequence_start.tag;
        anchor = (const char *) ev->data.sequence_start.anchor;
    }

    if (tag && strcmp(tag, "!") != 0
        && strcmp(tag, is_map ? DS_YAML_TAG_PREFIX "map"
                              : DS_YAML_TAG_PREFIX "seq") != 0)
    {
        return ds_y_mfail(y, &ev->start_mark, "unsupported YAML tag %s",
                          ds_y_tag(&qb, tag));
    }

    if (y->sp == DS_YAML_DEPTH_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "nesting too deep (more than %d levels)",
                          DS_YAML_DEPTH_MAX);
    }

    if (++y->nodes > DS_YAML_NODES_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many values (more than %d)",
                          DS_YAML_NODES_MAX);
    }

    v = is_map ? cJSON_CreateObject() : cJSON_CreateArray();
    if (v == NULL) {
        return ds_y_oom(y);
    }

    /* the subtree's size reaches the parent when it closes */
    if (ds_y_attach(y, v, &ev->start_mark, NULL, 0, 0, 0) != DS_OK) {
        return DS_ERROR;
    }

    f = &y->st[y->sp++];
    memset(f, 0, sizeof(*f));
    f->node = v;
    f->is_map = is_map;
    f->count = 1;
    f->depth = 1;

    if (anchor) {
        f->anchor = strdup(anchor);
        if (f->anchor == NULL) {
            return ds_y_oom(y);
        }
    }

    return DS_OK;
}


static int
ds_y_close(ds_yload_t *y)
{
    int           rc;
    ds_yframe_t  *f, *p;

    f = &y->st[--y->sp];
    rc = DS_OK;

    if (f->anchor) {
        rc = ds_y_anchor(y, f->anchor, f->node, f->count, f->depth);
        free(f->anchor);
        f->anchor = NULL;
    }

    free(f->key);
    f->key = NULL;

    if (y->sp > 0) {
        p = &y->st[y->sp - 1];
        p->count += f->count;
        if (f->depth + 1 > p->depth) {
            p->depth = f->depth + 1;
        }
    }

    return rc;
}


static int
ds_y_alias(ds_yload_t *y, const yaml_event_t *ev)
{
    size_t               i;
    const char          *name;
    cJSON               *v;
    const ds_loc_t      *sl;
    const ds_yanchor_t  *a;

    name = (const char *) ev->data.alias.anchor;
    a = NULL;

    for (i = y->n_anchors; i > 0; i--) {
        if (strcmp(y->anchors[i - 1].name, name) == 0) {
            a = &y->anchors[i - 1];
            break;
        }
    }

    if (a == NULL) {
        return ds_y_mfail(y, &ev->start_mark,
                          "unknown alias \"*%.64s\": no anchor \"&%.64s\" "
                          "before it", name, name);
    }

    if (y->sp + a->depth > DS_YAML_DEPTH_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "nesting too deep (more than %d levels)",
                          DS_YAML_DEPTH_MAX);
    }

    if (a->count > DS_YAML_NODES_MAX - y->nodes) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many values (more than %d)",
                          DS_YAML_NODES_MAX);
    }
    y->nodes += a->count;

    v = cJSON_Duplicate(a->node, 1);
    if (v == NULL) {
        return ds_y_oom(y);
    }

    sl = ds_locs_find(y->locs, a->node);

    if (ds_y_attach(y, v, &ev->start_mark, sl ? sl->raw : NULL,
                    sl && sl->raw ? strlen(sl->raw) : 0, a->count, a->depth)
        != DS_OK)
    {
        return DS_ERROR;
    }

    return ds_y_copy_locs(y, a->node, v, &ev->start_mark);
}


static int
ds_y_event(ds_yload_t *y, const yaml_event_t *ev)
{
    int           want_key;
    ds_yframe_t  *p;

    p = y->sp ? &y->st[y->sp - 1] : NULL;
    want_key = p && p->is_map && p->key == NULL;

    switch (ev->type) {

    case YAML_DOCUMENT_START_EVENT:
        if (++y->docs > 1) {
            return ds_y_mfail(y, &ev->start_mark,
                              "more than one YAML document in the file");
        }
        return DS_OK;

    case YAML_SCALAR_EVENT:
        return want_key ? ds_y_key(y, ev) : ds_y_scalar(y, ev);

    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        if (want_key) {
            return ds_y_mfail(y, &ev->start_mark,
                              "mapping keys must be strings, got %s",
                              ev->type == YAML_MAPPING_START_EVENT
                              ? "a mapping" : "a list");
        }
        return ds_y_open(y, ev, ev->type == YAML_MAPPING_START_EVENT);

    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return ds_y_close(y);

    case YAML_ALIAS_EVENT:
        if (want_key) {
            return ds_y_mfail(y, &ev->start_mark,
                              "aliases cannot be mapping keys");
        }
        return ds_y_alias(y, ev);

    default:
        return DS_OK;
    }
}


static void
ds_y_cleanup(ds_yload_t *y)
{
    size_t  i;

    while (y->sp > 0) {
        y->sp--;
        free(y->st[y->sp].key);
        free(y->st[y->sp].anchor);
    }

    for (i = 0; i < y->n_anchors; i++) {
        free(y->anchors[i].name);
    }
    free(y->anchors);
}


/* the document of text, or an error */
static int
ds_y_load(ds_yaml_doc_t *doc, const char *text, size_t len, ds_err_t *err)
{
    int            rc, end;
    yaml_parser_t  p;
    yaml_event_t   ev;
    ds_yload_t     y;

    memset(&y, 0, sizeof(y));
    y.file = doc->file;
    y.text = text;
    y.len = len;
    y.locs = &doc->locs;
    y.err = err;

    if (!yaml_parser_initialize(&p)) {
        return ds_y_oom(&y);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *) text, len);

    for ( ;; ) {
        if (!yaml_parser_parse(&p, &ev)) {
            rc = ds_y_syntax(&y, &p);
            break;
        }

        rc = ds_y_event(&y, &ev);
        end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);

        if (rc != DS_OK || end) {
            break;
        }
    }

    yaml_parser_delete(&p);
    ds_y_cleanup(&y);

    if (rc != DS_OK) {
        cJSON_Delete(y.root);
        return rc;
    }

    doc->root = y.root;
    return DS_OK;
}


/* ---- the API ------------------------------------------------------------- */

int
ds_yaml_load(const char *file, const char *text, size_t len,
    ds_yaml_doc_t **doc, ds_err_t *err)
{
    int             rc;
    ds_yaml_doc_t  *d;

    *doc = NULL;

    d = calloc(1, sizeof(ds_yaml_doc_t));
    if (d == NULL || (d->file = strdup(file)) == NULL) {
        free(d);
        snprintf(err->msg, sizeof(err->msg), "%s: out of memory", file);
        return DS_ERROR;
    }

    rc = ds_y_load(d, text ? text : "", text ? len : 0, err);
    if (rc != DS_OK) {
        ds_yaml_free(d);
        return rc;
    }

    *doc = d;
    return DS_OK;
}


int
ds_yaml_load_file(const char *path, size_t max, ds_yaml_doc_t **doc,
    ds_err_t *err)
{
    int      rc;
    char    *text;
    FILE    *f;
    size_t   len;

    *doc = NULL;

    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: %s", path,
                 strerror(errno));
        return DS_EINVAL;
    }

    /* one byte more than allowed tells a file too large */
    text = malloc(max + 1);
    if (text == NULL) {
        fclose(f);
        snprintf(err->msg, sizeof(err->msg), "%s: out of memory", path);
        return DS_ERROR;
    }

    len = fread(text, 1, max + 1, f);

    if (ferror(f)) {
        snprintf(err->msg, sizeof(err->msg), "%s: %s", path,
                 strerror(errno));
        rc = DS_EINVAL;

    } else if (len > max) {
        snprintf(err->msg, sizeof(err->msg), "%s:1:1: file too large (the "
                 "limit is %zu bytes)", path, max);
        rc = DS_EINVAL;

    } else {
        rc = ds_yaml_load(path, text, len, doc, err);
    }

    free(text);
    fclose(f);
    return rc;
}


void
ds_yaml_free(ds_yaml_doc_t *doc)
{
    if (doc == NULL) {
        return;
    }
    cJSON_Delete(doc->root);
    ds_locs_free(&doc->locs);
    free(doc->file);
    free(doc);
}


const cJSON *
ds_yaml_root(const ds_yaml_doc_t *doc)
{
    return doc->root;
}


void
ds_yaml_where(const ds_yaml_doc_t *doc, const cJSON *node, int key,
    char *buf, size_t size)
{
    const ds_loc_t  *loc;

    loc = ds_locs_find(&doc->locs, node);

    if (loc == NULL) {
        snprintf(buf, size, "%s: ", doc->file);

    } else if (key && loc->key_line) {
        snprintf(buf, size, "%s:%u:%u: ", doc->file, loc->key_line,
                 loc->key_col);

    } else {
        snprintf(buf, size, "%s:%u:%u: ", doc->file, loc->line, loc->col);
    }
}


const char *
ds_yaml_raw(const ds_yaml_doc_t *doc, const cJSON *node)
{
    const ds_loc_t  *loc;

    loc = doc ? ds_locs_find(&doc->locs, node) : NULL;
    return loc ? loc->raw : NULL;
}


const char *
ds_yaml_text(const ds_yaml_doc_t *doc, const cJSON *node)
{
    if (cJSON_IsString(node)) {
        return node->valuestring;
    }
    if (cJSON_IsArray(node) || cJSON_IsObject(node)) {
        return NULL;
    }
    return ds_yaml_raw(doc, node);
}
