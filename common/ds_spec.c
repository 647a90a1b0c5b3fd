/*
 * .dstack.yml -> the normalized service spec of ds_spec.h.
 *
 * Two stages.  The loader turns libyaml's events into a cJSON tree and
 * records, for every node, where it was in the file (a side table keyed
 * by the node's address, since cJSON has no room for it) and, for plain
 * scalars read as numbers or booleans, their text ("3.10" stays "3.10"
 * for python and env values).  The validator walks a tree against the
 * schema and builds the normalized tree; it never copies a subtree of
 * its input blindly, so whatever it returns it has checked.  The daemon
 * runs the validator alone, without locations: its errors then name the
 * field's path instead of a line and column.
 *
 * The YAML is read with YAML 1.1 resolution for plain scalars as PyYAML
 * (which dstack uses) does for what matters here: yes/no/on/off are
 * booleans (so "max_duration: off" works), "~" and empty are null;
 * quoted scalars are always strings.  Anchors and aliases are expanded
 * within the node budget; merge keys and other tags are refused.
 */

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yaml.h>

#include "ds_spec.h"


#define DS_SPEC_PATH_MAX        160
#define DS_SPEC_QUOTE_MAX       40      /* characters of a quoted value */
#define DS_SPEC_KEYS_MAX        4096    /* keys in one YAML mapping */
#define DS_SPEC_COUNT_MAX       1000000 /* CPU and GPU counts */
#define DS_SPEC_MEM_MAX_MB      (1ULL << 40)
#define DS_SPEC_DURATION_MAX    0x7fffffff
#define DS_SPEC_PORT_LOCAL      80      /* dstack's local_port for "8000" */
#define DS_SPEC_URL_MAX         2048
#define DS_SPEC_HEADER_NAME_MAX 256
#define DS_SPEC_HEADER_VALUE_MAX 2048
#define DS_SPEC_BODY_MAX        2048
#define DS_SPEC_RPS_MAX         4000000 /* rps_milli fits in a u32 */

#define DS_SPEC_DEFAULT_CPU     2
#define DS_SPEC_DEFAULT_MEM_MB  (8 * 1024)
#define DS_SPEC_DEFAULT_DISK_MB (100 * 1024)
#define DS_SPEC_DEFAULT_WINDOW  60
#define DS_SPEC_DEFAULT_UP      300
#define DS_SPEC_DEFAULT_DOWN    600
#define DS_SPEC_DEFAULT_STOP    300
#define DS_SPEC_DEFAULT_RETRY   3600
#define DS_SPEC_PROBE_TIMEOUT   10
#define DS_SPEC_PROBE_INTERVAL  15
#define DS_SPEC_MODEL_PROBE_TIMEOUT 30

#define DS_YAML_TAG_PREFIX      "tag:yaml.org,2002:"


/* ---- messages ------------------------------------------------------------ */

typedef struct {
    char            s[4 * DS_SPEC_QUOTE_MAX + 8];
} ds_qbuf_t;


/* "value" for a message: escaped, cut after DS_SPEC_QUOTE_MAX characters */
static const char *
ds_q(ds_qbuf_t *b, const char *s)
{
    size_t          i, n;
    unsigned char   ch;

    i = 0;
    n = 0;
    b->s[i++] = '"';

    for ( /* void */ ; *s; s++) {
        ch = (unsigned char) *s;

        /* room for this byte escaped, "...", the quote and the NUL */
        if (((ch & 0xc0) != 0x80 && n == DS_SPEC_QUOTE_MAX)
            || i + 4 + 3 + 2 > sizeof(b->s))
        {
            memcpy(b->s + i, "...", 3);
            i += 3;
            break;
        }

        if ((ch & 0xc0) != 0x80) {
            n++;
        }

        if (ch == '"' || ch == '\\') {
            b->s[i++] = '\\';
            b->s[i++] = (char) ch;

        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(b->s + i, 5, "\\x%02x", ch);
            i += 4;

        } else {
            b->s[i++] = (char) ch;
        }
    }

    b->s[i++] = '"';
    b->s[i] = '\0';

    return b->s;
}


static const char *
ds_tname(const cJSON *v)
{
    if (v == NULL || cJSON_IsNull(v)) {
        return "null";
    }
    if (cJSON_IsBool(v)) {
        return "a boolean";
    }
    if (cJSON_IsNumber(v)) {
        return "a number";
    }
    if (cJSON_IsString(v)) {
        return "a string";
    }
    if (cJSON_IsArray(v)) {
        return "a list";
    }
    if (cJSON_IsObject(v)) {
        return "a mapping";
    }
    return "an unknown value";
}


/* err = head + msg, cut to fit */
static void
ds_err_put(ds_err_t *err, const char *head, const char *msg)
{
    size_t  n, m;

    n = strlen(head);
    if (n > sizeof(err->msg) - 1) {
        n = sizeof(err->msg) - 1;
    }
    memcpy(err->msg, head, n);

    m = strlen(msg);
    if (m > sizeof(err->msg) - 1 - n) {
        m = sizeof(err->msg) - 1 - n;
    }
    memcpy(err->msg + n, msg, m);
    err->msg[n + m] = '\0';
}


/* edit distance, ignoring case; SIZE_MAX for long strings */
static size_t
ds_lev(const char *a, const char *b)
{
    size_t  la, lb, i, j, prev, cur, tmp;
    size_t  row[65];

    la = strlen(a);
    lb = strlen(b);

    if (la > 64 || lb > 64) {
        return SIZE_MAX;
    }

    for (j = 0; j <= lb; j++) {
        row[j] = j;
    }

    for (i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;

        for (j = 1; j <= lb; j++) {
            tmp = row[j];
            cur = prev + (tolower((unsigned char) a[i - 1])
                          != tolower((unsigned char) b[j - 1]));
            if (row[j] + 1 < cur) {
                cur = row[j] + 1;
            }
            if (row[j - 1] + 1 < cur) {
                cur = row[j - 1] + 1;
            }
            row[j] = cur;
            prev = tmp;
        }
    }

    return row[lb];
}


/* the nearest candidate within 2 edits (and fewer than s has letters) */
static const char *
ds_suggest(const char *s, const char *const *cand, size_t n)
{
    size_t       i, d, best_d, len;
    const char  *best;

    len = strlen(s);
    best = NULL;
    best_d = 3;

    for (i = 0; i < n; i++) {
        d = ds_lev(s, cand[i]);
        if (d < best_d && d < len) {
            best = cand[i];
            best_d = d;
        }
    }

    return best;
}


/* ---- where nodes were: a map from node address to line and column -------- */

typedef struct {
    const cJSON    *node;
    uint32_t        line;
    uint32_t        col;
    uint32_t        key_line;       /* its key, inside a mapping */
    uint32_t        key_col;
    char           *raw;            /* text of a plain number or boolean */
} ds_loc_t;

typedef struct {
    ds_loc_t       *v;
    size_t          n;
    size_t          cap;
    uint32_t       *tab;            /* index + 1; 0: empty */
    size_t          tab_size;       /* a power of two */
} ds_locs_t;


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
    ds_yframe_t     st[DS_SPEC_DEPTH_MAX];
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
 * value (numbers and booleans); the result is NULL only without memory.
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

    *raw = 0;

    if (n == 0 || ds_y_word(s, n, nulls)) {
        return cJSON_CreateNull();
    }
    if (ds_y_word(s, n, trues)) {
        *raw = 1;
        return cJSON_CreateTrue();
    }
    if (ds_y_word(s, n, falses)) {
        *raw = 1;
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
        *raw = 1;
        v = cJSON_CreateNumber(d);

    } else {
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


static int
ds_y_scalar_tag(ds_yload_t *y, const yaml_event_t *ev, int *is_str)
{
    const char  *tag;
    ds_qbuf_t    qb;

    tag = (const char *) ev->data.scalar.tag;
    *is_str = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;

    if (tag == NULL) {
        return DS_OK;
    }

    if (strcmp(tag, "!") == 0 || strcmp(tag, DS_YAML_TAG_PREFIX "str") == 0) {
        *is_str = 1;
        return DS_OK;
    }

    return ds_y_mfail(y, &ev->start_mark, "unsupported YAML tag %s",
                      ds_y_tag(&qb, tag));
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

    if (ds_y_scalar_tag(y, ev, &is_str) != DS_OK) {
        return DS_EINVAL;
    }

    if (memchr(s, '\0', n) != NULL) {
        return ds_y_mfail(y, &ev->start_mark,
                          "NUL characters are not allowed in keys");
    }

    if (!is_str && n == 2 && memcmp(s, "<<", 2) == 0) {
        return ds_y_mfail(y, &ev->start_mark,
                          "merge keys (<<) are not supported");
    }

    if (++p->nkeys > DS_SPEC_KEYS_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many keys in a mapping (more than %d)",
                          DS_SPEC_KEYS_MAX);
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

    if (ds_y_scalar_tag(y, ev, &is_str) != DS_OK) {
        return DS_EINVAL;
    }

    if (memchr(s, '\0', n) != NULL) {
        return ds_y_mfail(y, &ev->start_mark,
                          "NUL characters are not allowed in strings");
    }

    if (++y->nodes > DS_SPEC_NODES_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many values (more than %d)",
                          DS_SPEC_NODES_MAX);
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

    if (y->sp == DS_SPEC_DEPTH_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "nesting too deep (more than %d levels)",
                          DS_SPEC_DEPTH_MAX);
    }

    if (++y->nodes > DS_SPEC_NODES_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many values (more than %d)",
                          DS_SPEC_NODES_MAX);
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

    if (y->sp + a->depth > DS_SPEC_DEPTH_MAX) {
        return ds_y_mfail(y, &ev->start_mark,
                          "nesting too deep (more than %d levels)",
                          DS_SPEC_DEPTH_MAX);
    }

    if (a->count > DS_SPEC_NODES_MAX - y->nodes) {
        return ds_y_mfail(y, &ev->start_mark,
                          "too many values (more than %d)",
                          DS_SPEC_NODES_MAX);
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


static int
ds_y_load(const char *file, const char *text, size_t len, ds_locs_t *locs,
    cJSON **root, ds_err_t *err)
{
    int            rc, end;
    yaml_parser_t  p;
    yaml_event_t   ev;
    ds_yload_t     y;

    memset(&y, 0, sizeof(y));
    y.file = file;
    y.text = text;
    y.len = len;
    y.locs = locs;
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

    if (rc == DS_OK && (!y.have_root || cJSON_IsNull(y.root))) {
        rc = ds_y_fail(&y, 1, 1,
                       "empty file: expected a service configuration "
                       "(\"type: service\", ...)");
    }

    if (rc != DS_OK) {
        cJSON_Delete(y.root);
        return rc;
    }

    *root = y.root;
    return DS_OK;
}


/* ---- the validator: helpers ---------------------------------------------- */

typedef struct {
    const char       *file;         /* the CLI: "FILE:LINE:COL: " */
    const ds_locs_t  *locs;
    int               file_units;   /* a bare size is GB, not MB */
    ds_err_t         *err;
    size_t            plen;
    char              path[DS_SPEC_PATH_MAX];
} ds_vctx_t;

typedef int (*ds_vfn_t)(ds_vctx_t *c, const cJSON *in, cJSON **out);

#define DS_VF_REQUIRED  0x01

typedef struct {
    const char       *name;
    ds_vfn_t          fn;
    unsigned          flags;
} ds_vfield_t;

typedef struct {
    const char       *name;
    const char       *why;          /* after the quoted name */
} ds_vunsup_t;

#define DS_NFIELDS(f)   (sizeof(f) / sizeof((f)[0]))

#define DS_V_INT        0           /* counts */
#define DS_V_MEM        1           /* sizes in MB */

typedef struct {
    int               has_min;
    int               has_max;
    uint64_t          min;
    uint64_t          max;
} ds_vrange_t;


static int ds_v_fail(ds_vctx_t *c, const cJSON *at, int key, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));


/*
 * at: the node the message is about; key: point at its key rather than
 * its value (unknown and duplicate keys).  Without locations, the path
 * names the place: the caller has pushed the value's path, or, for a
 * key, left the mapping's.
 */
static int
ds_v_fail(ds_vctx_t *c, const cJSON *at, int key, const char *fmt, ...)
{
    char             msg[sizeof(c->err->msg)], head[sizeof(c->err->msg)];
    va_list          ap;
    const ds_loc_t  *loc;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    if (c->file == NULL) {
        snprintf(head, sizeof(head), "spec%s: ", c->path);

    } else if ((loc = ds_locs_find(c->locs, at)) == NULL) {
        snprintf(head, sizeof(head), "%s: ", c->file);

    } else if (key && loc->key_line) {
        snprintf(head, sizeof(head), "%s:%u:%u: ", c->file, loc->key_line,
                 loc->key_col);

    } else {
        snprintf(head, sizeof(head), "%s:%u:%u: ", c->file, loc->line,
                 loc->col);
    }

    ds_err_put(c->err, head, msg);

    return DS_EINVAL;
}


static int
ds_v_oom(ds_vctx_t *c)
{
    snprintf(c->err->msg, sizeof(c->err->msg), "out of memory");
    return DS_ERROR;
}


static size_t
ds_v_push(ds_vctx_t *c, const char *name)
{
    size_t  old;

    old = c->plen;
    snprintf(c->path + old, sizeof(c->path) - old, ".%s", name);
    c->plen += strlen(c->path + old);

    return old;
}


static size_t
ds_v_pushi(ds_vctx_t *c, int i)
{
    size_t  old;

    old = c->plen;
    snprintf(c->path + old, sizeof(c->path) - old, "[%d]", i);
    c->plen += strlen(c->path + old);

    return old;
}


static void
ds_v_pop(ds_vctx_t *c, size_t old)
{
    c->plen = old;
    c->path[old] = '\0';
}


/* takes item (NULL: allocation failed) */
static int
ds_v_add(ds_vctx_t *c, cJSON *obj, const char *name, cJSON *item)
{
    if (item == NULL) {
        return ds_v_oom(c);
    }
    if (!cJSON_AddItemToObject(obj, name, item)) {
        cJSON_Delete(item);
        return ds_v_oom(c);
    }
    return DS_OK;
}


static int
ds_v_append(ds_vctx_t *c, cJSON *arr, cJSON *item)
{
    if (item == NULL) {
        return ds_v_oom(c);
    }
    if (!cJSON_AddItemToArray(arr, item)) {
        cJSON_Delete(item);
        return ds_v_oom(c);
    }
    return DS_OK;
}


static void
ds_v_free_slots(cJSON **s, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        cJSON_Delete(s[i]);
        s[i] = NULL;
    }
}


/* the value, or NULL when absent or null */
static const cJSON *
ds_v_get(const cJSON *obj, const char *name)
{
    const cJSON  *v;

    v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNull(v) ? NULL : v;
}


/* a duplicate of member m among the ones before it (JSON input) */
static int
ds_v_dups(ds_vctx_t *c, const cJSON *obj, const cJSON *m)
{
    const cJSON  *p;
    ds_qbuf_t     qb;

    /* a tree built by hand may lack a key; a parsed one never does */
    if (m->string == NULL) {
        return ds_v_fail(c, m, 0, "a member of a mapping has no key");
    }

    for (p = obj->child; p && p != m; p = p->next) {
        if (p->string && strcmp(p->string, m->string) == 0) {
            return ds_v_fail(c, m, 1, "duplicate key %s", ds_q(&qb,
                             m->string));
        }
    }
    return DS_OK;
}


/*
 * Walks the members of a mapping in their order, so that the first
 * error in the file is the one reported: each known key's value goes
 * through its field's function into slot[i]; unknown and unsupported
 * keys are errors.  A null value counts as absent, except for a
 * required field, whose function then says what it expected.
 */
static int
ds_v_object(ds_vctx_t *c, const cJSON *in, const ds_vfield_t *f, size_t nf,
    const ds_vunsup_t *u, cJSON **slot)
{
    int           rc;
    size_t        i, old;
    const cJSON  *m;
    const char   *cand[32], *near;
    ds_qbuf_t     qa, qb;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping, got %s",
                         ds_tname(in));
    }

    for (m = in->child; m; m = m->next) {
        if (ds_v_dups(c, in, m) != DS_OK) {
            return DS_EINVAL;
        }

        for (i = 0; i < nf; i++) {
            if (strcmp(m->string, f[i].name) == 0) {
                break;
            }
        }

        if (i == nf) {
            for ( /* void */ ; u && u->name; u++) {
                if (strcmp(m->string, u->name) == 0) {
                    return ds_v_fail(c, m, 1, "%s %s", ds_q(&qa, u->name),
                                     u->why);
                }
            }

            for (i = 0; i < nf && i < DS_NFIELDS(cand); i++) {
                cand[i] = f[i].name;
            }
            near = ds_suggest(m->string, cand, i);

            if (near) {
                return ds_v_fail(c, m, 1,
                                 "unknown key %s (did you mean %s?)",
                                 ds_q(&qa, m->string), ds_q(&qb, near));
            }
            return ds_v_fail(c, m, 1, "unknown key %s",
                             ds_q(&qa, m->string));
        }

        if (cJSON_IsNull(m) && !(f[i].flags & DS_VF_REQUIRED)) {
            continue;
        }

        old = ds_v_push(c, f[i].name);
        rc = f[i].fn(c, m, &slot[i]);
        ds_v_pop(c, old);

        if (rc != DS_OK) {
            return rc;
        }
    }

    for (i = 0; i < nf; i++) {
        if ((f[i].flags & DS_VF_REQUIRED)
            && cJSON_GetObjectItemCaseSensitive(in, f[i].name) == NULL)
        {
            return ds_v_fail(c, in, 0, "missing required field %s",
                             ds_q(&qa, f[i].name));
        }
    }

    return DS_OK;
}


/* the normalized mapping, fields in their table's order; takes slots */
static int
ds_v_assemble(ds_vctx_t *c, const ds_vfield_t *f, size_t nf, cJSON **slot,
    cJSON **out)
{
    size_t  i;
    cJSON  *o, *item;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0; i < nf; i++) {
        item = slot[i] ? slot[i] : cJSON_CreateNull();
        slot[i] = NULL;
        if (ds_v_add(c, o, f[i].name, item) != DS_OK) {
            cJSON_Delete(o);
            return DS_ERROR;
        }
    }

    *out = o;
    return DS_OK;
}


/* "a, b or c" */
static void
ds_v_list_words(char *buf, size_t size, const char *const *w, size_t n)
{
    size_t  i, len;

    buf[0] = '\0';
    for (i = 0; i < n; i++) {
        len = strlen(buf);
        snprintf(buf + len, size - len, "%s%s",
                 i == 0 ? "" : (i + 1 == n ? " or " : ", "), w[i]);
    }
}


/* one of the words; *idx its index */
static int
ds_v_enum(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *const *w, size_t n, size_t *idx)
{
    size_t       i;
    char         list[160];
    const char  *near;
    ds_qbuf_t    qa, qb;

    ds_v_list_words(list, sizeof(list), w, n);

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected %s, got %s", list,
                         ds_tname(in));
    }

    for (i = 0; i < n; i++) {
        if (strcmp(in->valuestring, w[i]) == 0) {
            *idx = i;
            return DS_OK;
        }
    }

    near = ds_suggest(in->valuestring, w, n);
    if (near) {
        return ds_v_fail(c, in, 0,
                         "invalid %s %s: expected %s (did you mean %s?)",
                         what, ds_q(&qa, in->valuestring), list,
                         ds_q(&qb, near));
    }

    return ds_v_fail(c, in, 0, "invalid %s %s: expected %s", what,
                     ds_q(&qa, in->valuestring), list);
}


/* an enum whose canonical spelling is also its normalized value */
static int
ds_v_enum_string(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *const *w, size_t n, cJSON **out)
{
    size_t  i;

    if (ds_v_enum(c, in, what, w, n, &i) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateString(w[i]);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_is_whole(double d)
{
    return d >= -9007199254740992.0 && d <= 9007199254740992.0
           && d == (double) (int64_t) d;
}


/* an integer in [min, max] */
static int
ds_v_uint(ds_vctx_t *c, const cJSON *in, uint64_t min, uint64_t max,
    uint64_t *v)
{
    double  d;

    *v = 0;

    if (!cJSON_IsNumber(in)) {
        return ds_v_fail(c, in, 0, "expected an integer, got %s",
                         ds_tname(in));
    }

    d = in->valuedouble;

    if (!ds_v_is_whole(d)) {
        return ds_v_fail(c, in, 0, "expected an integer, got %.15g", d);
    }

    if (d < (double) min || d > (double) max) {
        if (max == UINT64_MAX) {
            return ds_v_fail(c, in, 0, "expected an integer >= %llu, got %.15g",
                             (unsigned long long) min, d);
        }
        return ds_v_fail(c, in, 0, "expected an integer from %llu to %llu, "
                         "got %.15g", (unsigned long long) min,
                         (unsigned long long) max, d);
    }

    *v = (uint64_t) d;
    return DS_OK;
}


static int
ds_v_has_space(const char *s)
{
    for ( /* void */ ; *s; s++) {
        if ((unsigned char) *s <= 0x20 || *s == 0x7f) {
            return 1;
        }
    }
    return 0;
}


static int
ds_v_has_ctl(const char *s)
{
    for ( /* void */ ; *s; s++) {
        if (((unsigned char) *s < 0x20 && *s != '\t') || *s == 0x7f) {
            return 1;
        }
    }
    return 0;
}


/* a non-empty string */
static int
ds_v_str(ds_vctx_t *c, const cJSON *in, const char **s)
{
    *s = "";

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }
    if (in->valuestring[0] == '\0') {
        return ds_v_fail(c, in, 0, "expected a non-empty string");
    }
    *s = in->valuestring;
    return DS_OK;
}


/*
 * The text of a scalar: a string as is; a number or boolean as written
 * in the file, or formatted when it came as JSON.  -1 for lists,
 * mappings and null.
 */
static int
ds_v_text(ds_vctx_t *c, const cJSON *in, const char **s, char *buf,
    size_t size)
{
    const ds_loc_t  *loc;
    double           d;

    if (cJSON_IsString(in)) {
        *s = in->valuestring;
        return 0;
    }

    if (!cJSON_IsNumber(in) && !cJSON_IsBool(in)) {
        return -1;
    }

    loc = ds_locs_find(c->locs, in);
    if (loc && loc->raw) {
        *s = loc->raw;
        return 0;
    }

    if (cJSON_IsBool(in)) {
        *s = cJSON_IsTrue(in) ? "true" : "false";
        return 0;
    }

    d = in->valuedouble;
    if (ds_v_is_whole(d)) {
        snprintf(buf, size, "%lld", (long long) d);
    } else {
        snprintf(buf, size, "%.15g", d);
        if (strtod(buf, NULL) != d) {
            snprintf(buf, size, "%.17g", d);
        }
    }

    *s = buf;
    return 0;
}


/* ---- durations ----------------------------------------------------------- */

/* 30, "30", "30s", "5m", "1h", "1d", "1w" -> seconds */
static int
ds_v_duration(ds_vctx_t *c, const cJSON *in, uint64_t *secs)
{
    uint64_t     v, mul;
    const char  *s, *p;
    ds_qbuf_t    qb;

    *secs = 0;

    if (cJSON_IsNumber(in)) {
        if (!ds_v_is_whole(in->valuedouble)) {
            return ds_v_fail(c, in, 0, "invalid duration %.15g: expected "
                             "whole seconds", in->valuedouble);
        }
        if (in->valuedouble < 0) {
            return ds_v_fail(c, in, 0, "invalid duration %.15g: must not be "
                             "negative", in->valuedouble);
        }
        if (in->valuedouble > DS_SPEC_DURATION_MAX) {
            return ds_v_fail(c, in, 0, "duration %.15g is too long",
                             in->valuedouble);
        }
        *secs = (uint64_t) in->valuedouble;
        return DS_OK;
    }

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a duration (e.g. 30s, 5m, 1h), "
                         "got %s", ds_tname(in));
    }

    s = in->valuestring;
    v = 0;

    for (p = s; isdigit((unsigned char) *p); p++) {
        v = v * 10 + (uint64_t) (*p - '0');
        if (v > DS_SPEC_DURATION_MAX) {
            return ds_v_fail(c, in, 0, "duration %s is too long",
                             ds_q(&qb, s));
        }
    }

    if (p == s) {
        goto invalid;
    }

    while (*p == ' ') {
        p++;
    }

    switch (*p) {
    case '\0':
    case 's':
        mul = 1;
        break;
    case 'm':
        mul = 60;
        break;
    case 'h':
        mul = 3600;
        break;
    case 'd':
        mul = 86400;
        break;
    case 'w':
        mul = 7 * 86400;
        break;
    default:
        goto invalid;
    }

    if (*p != '\0' && p[1] != '\0') {
        goto invalid;
    }

    if (*p == '\0' && p != s + strspn(s, "0123456789")) {
        goto invalid;                   /* "30 " */
    }

    if (v * mul > DS_SPEC_DURATION_MAX) {
        return ds_v_fail(c, in, 0, "duration %s is too long", ds_q(&qb, s));
    }

    *secs = v * mul;
    return DS_OK;

invalid:

    return ds_v_fail(c, in, 0, "invalid duration %s: expected seconds or a "
                     "number with s, m, h, d or w (e.g. 30s, 5m, 1h)",
                     ds_q(&qb, s));
}


static int
ds_v_f_duration(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  secs;

    if (ds_v_duration(c, in, &secs) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateNumber((double) secs);
    return *out ? DS_OK : ds_v_oom(c);
}


/* a duration, or "off" (also false); true: the default (null here) */
static int
ds_v_f_offable(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsTrue(in)) {
        return DS_OK;
    }

    if (cJSON_IsFalse(in)
        || (cJSON_IsString(in) && strcmp(in->valuestring, "off") == 0))
    {
        *out = cJSON_CreateString("off");
        return *out ? DS_OK : ds_v_oom(c);
    }

    if (!cJSON_IsNumber(in) && !cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a duration (e.g. 30s, 5m, 1h) "
                         "or \"off\", got %s", ds_tname(in));
    }

    return ds_v_f_duration(c, in, out);
}


/* ---- sizes, counts and ranges -------------------------------------------- */

/* "8GB", "512MB", "1.5TB", "16" -> MB; -1 invalid, -2 too large */
static int
ds_v_parse_mem(const char *s, size_t n, int file_units, uint64_t *mb)
{
    char    num[32];
    size_t  i, k, dots;
    double  d, mul;

    mul = file_units ? 1024 : 1;

    if (n >= 2) {
        switch (tolower((unsigned char) s[n - 2])) {
        case 'm':
            mul = 1;
            break;
        case 'g':
            mul = 1024;
            break;
        case 't':
            mul = 1024.0 * 1024;
            break;
        default:
            goto bare;
        }

        if (tolower((unsigned char) s[n - 1]) != 'b') {
            return -1;
        }
        n -= 2;
    }

bare:

    if (n == 0 || n >= sizeof(num)) {
        return -1;
    }

    dots = 0;
    k = 0;
    for (i = 0; i < n; i++) {
        if (s[i] == '.') {
            dots++;
        } else if (!isdigit((unsigned char) s[i])) {
            return -1;
        } else {
            k++;
        }
        num[i] = s[i];
    }
    num[n] = '\0';

    if (dots > 1 || k == 0) {
        return -1;
    }

    d = strtod(num, NULL) * mul;
    if (d > (double) DS_SPEC_MEM_MAX_MB) {
        return -2;
    }

    *mb = (uint64_t) (d + 0.5);
    return 0;
}


/* decimal digits only; -1 invalid, -2 above max */
static int
ds_v_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *v)
{
    size_t  i;

    if (n == 0) {
        return -1;
    }

    *v = 0;
    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char) s[i])) {
            return -1;
        }
        *v = *v * 10 + (uint64_t) (s[i] - '0');
        if (*v > max) {
            return -2;
        }
    }

    return 0;
}


/* one end of a range, written in a string */
static int
ds_v_part(ds_vctx_t *c, const cJSON *at, int kind, const char *what,
    const char *whole, const char *s, size_t n, uint64_t *v)
{
    int        rc;
    ds_qbuf_t  qb;

    *v = 0;

    if (kind == DS_V_MEM) {
        rc = ds_v_parse_mem(s, n, c->file_units, v);
    } else {
        rc = ds_v_parse_uint(s, n, DS_SPEC_COUNT_MAX, v);
    }

    if (rc == -2) {
        return ds_v_fail(c, at, 0, "%s %s is too large", what,
                         ds_q(&qb, whole));
    }

    if (rc != 0) {
        if (kind == DS_V_MEM) {
            return ds_v_fail(c, at, 0, "invalid %s %s: expected a size with "
                             "MB, GB or TB (e.g. 8GB) or a range (e.g. "
                             "24GB..80GB)", what, ds_q(&qb, whole));
        }
        return ds_v_fail(c, at, 0, "invalid %s %s: expected a number or a "
                         "range (e.g. 2, 1..4, 2..)", what, ds_q(&qb, whole));
    }

    return DS_OK;
}


/* one end of a range, written as a number */
static int
ds_v_part_num(ds_vctx_t *c, const cJSON *at, int kind, const char *what,
    double d, uint64_t *v)
{
    *v = 0;

    if (!(d >= 0)) {
        return ds_v_fail(c, at, 0, "invalid %s %.15g: must not be negative",
                         what, d);
    }

    if (kind == DS_V_MEM) {
        if (d * (c->file_units ? 1024 : 1) > (double) DS_SPEC_MEM_MAX_MB) {
            return ds_v_fail(c, at, 0, "%s %.15g is too large", what, d);
        }
        *v = (uint64_t) (d * (c->file_units ? 1024 : 1) + 0.5);
        return DS_OK;
    }

    if (!ds_v_is_whole(d)) {
        return ds_v_fail(c, at, 0, "invalid %s %.15g: expected a whole "
                         "number", what, d);
    }
    if (d > DS_SPEC_COUNT_MAX) {
        return ds_v_fail(c, at, 0, "%s %.15g is too large", what, d);
    }

    *v = (uint64_t) d;
    return DS_OK;
}


/* copies s without spaces (dstack ignores them in ranges) */
static int
ds_v_nospace(const char *s, char *buf, size_t size)
{
    size_t  n;

    for (n = 0; *s; s++) {
        if (*s == ' ') {
            continue;
        }
        if (n + 1 == size) {
            return -1;
        }
        buf[n++] = *s;
    }
    buf[n] = '\0';

    return 0;
}


/* "N", "A..B", "A..", "..B" */
static int
ds_v_range_str(ds_vctx_t *c, const cJSON *at, int kind, const char *what,
    const char *s, ds_vrange_t *r)
{
    char        buf[128], *dots;
    size_t      lo, hi;
    ds_qbuf_t   qb;

    memset(r, 0, sizeof(*r));

    if (ds_v_nospace(s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, at, 0, "invalid %s %s: too long", what,
                         ds_q(&qb, s));
    }

    dots = strstr(buf, "..");

    if (dots == NULL) {
        if (ds_v_part(c, at, kind, what, s, buf, strlen(buf), &r->min)
            != DS_OK)
        {
            return DS_EINVAL;
        }
        r->max = r->min;
        r->has_min = r->has_max = 1;
        return DS_OK;
    }

    lo = (size_t) (dots - buf);
    hi = strlen(dots + 2);

    if (lo == 0 && hi == 0) {
        return ds_v_fail(c, at, 0, "invalid %s %s: set a minimum, a maximum "
                         "or both", what, ds_q(&qb, s));
    }

    if (lo && ds_v_part(c, at, kind, what, s, buf, lo, &r->min) != DS_OK) {
        return DS_EINVAL;
    }
    if (hi && ds_v_part(c, at, kind, what, s, dots + 2, hi, &r->max)
        != DS_OK)
    {
        return DS_EINVAL;
    }

    r->has_min = lo > 0;
    r->has_max = hi > 0;

    if (r->has_min && r->has_max && r->min > r->max) {
        return ds_v_fail(c, at, 0, "invalid %s %s: the minimum is greater "
                         "than the maximum", what, ds_q(&qb, s));
    }

    return DS_OK;
}


/* an end of a range in the mapping form: a number, a string or null */
static int
ds_v_f_end(ds_vctx_t *c, const cJSON *in, cJSON **out, int kind)
{
    char        buf[64];
    uint64_t    v;
    const char *what;
    ds_qbuf_t   qb;

    what = kind == DS_V_MEM ? "size" : "number";

    if (cJSON_IsNumber(in)) {
        if (ds_v_part_num(c, in, kind, what, in->valuedouble, &v) != DS_OK) {
            return DS_EINVAL;
        }

    } else if (cJSON_IsString(in)) {
        if (ds_v_nospace(in->valuestring, buf, sizeof(buf)) != 0
            || strstr(buf, "..") != NULL)
        {
            return ds_v_fail(c, in, 0, "invalid %s %s", what,
                             ds_q(&qb, in->valuestring));
        }
        if (ds_v_part(c, in, kind, what, in->valuestring, buf, strlen(buf),
                      &v) != DS_OK)
        {
            return DS_EINVAL;
        }

    } else {
        return ds_v_fail(c, in, 0, "expected a %s, got %s", what,
                         ds_tname(in));
    }

    *out = cJSON_CreateNumber((double) v);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_end_int(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_end(c, in, out, DS_V_INT);
}


static int
ds_v_f_end_mem(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_f_end(c, in, out, DS_V_MEM);
}


static const ds_vfield_t  ds_range_int_fields[] = {
    { "min", ds_v_f_end_int, 0 },
    { "max", ds_v_f_end_int, 0 },
};

static const ds_vfield_t  ds_range_mem_fields[] = {
    { "min", ds_v_f_end_mem, 0 },
    { "max", ds_v_f_end_mem, 0 },
};


/* a number, a string range or {min, max} */
static int
ds_v_range(ds_vctx_t *c, const cJSON *in, int kind, const char *what,
    ds_vrange_t *r)
{
    int     rc;
    cJSON  *s[2] = { NULL, NULL };

    memset(r, 0, sizeof(*r));

    if (cJSON_IsNumber(in)) {
        if (ds_v_part_num(c, in, kind, what, in->valuedouble, &r->min)
            != DS_OK)
        {
            return DS_EINVAL;
        }
        r->max = r->min;
        r->has_min = r->has_max = 1;
        return DS_OK;
    }

    if (cJSON_IsString(in)) {
        return ds_v_range_str(c, in, kind, what, in->valuestring, r);
    }

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a %s (e.g. %s), got %s", what,
                         kind == DS_V_MEM ? "8GB or 8GB.." : "2 or 1..4",
                         ds_tname(in));
    }

    rc = ds_v_object(c, in, kind == DS_V_MEM ? ds_range_mem_fields
                                            : ds_range_int_fields,
                     2, NULL, s);
    if (rc != DS_OK) {
        ds_v_free_slots(s, 2);
        return rc;
    }

    if (s[0]) {
        r->has_min = 1;
        r->min = (uint64_t) s[0]->valuedouble;
    }
    if (s[1]) {
        r->has_max = 1;
        r->max = (uint64_t) s[1]->valuedouble;
    }
    ds_v_free_slots(s, 2);

    if (!r->has_min && !r->has_max) {
        return ds_v_fail(c, in, 0, "invalid %s: set a minimum, a maximum or "
                         "both", what);
    }

    if (r->has_min && r->has_max && r->min > r->max) {
        return ds_v_fail(c, in, 0, "invalid %s: the minimum %llu is greater "
                         "than the maximum %llu", what,
                         (unsigned long long) r->min,
                         (unsigned long long) r->max);
    }

    return DS_OK;
}


static int
ds_v_range_json(ds_vctx_t *c, const ds_vrange_t *r, cJSON **out)
{
    cJSON  *o;

    o = cJSON_CreateObject();
    if (o == NULL) {
        return ds_v_oom(c);
    }

    if (ds_v_add(c, o, "min", r->has_min ? cJSON_CreateNumber((double) r->min)
                                         : cJSON_CreateNull()) != DS_OK
        || ds_v_add(c, o, "max",
                    r->has_max ? cJSON_CreateNumber((double) r->max)
                               : cJSON_CreateNull()) != DS_OK)
    {
        cJSON_Delete(o);
        return DS_ERROR;
    }

    *out = o;
    return DS_OK;
}


static int
ds_v_range_field(ds_vctx_t *c, const cJSON *in, cJSON **out, int kind,
    const char *what)
{
    int          rc;
    ds_vrange_t  r;

    rc = ds_v_range(c, in, kind, what, &r);
    if (rc != DS_OK) {
        return rc;
    }
    return ds_v_range_json(c, &r, out);
}


static int
ds_v_range_default(ds_vctx_t *c, uint64_t min, cJSON **out)
{
    ds_vrange_t  r;

    memset(&r, 0, sizeof(r));
    r.has_min = 1;
    r.min = min;

    return ds_v_range_json(c, &r, out);
}


/* ---- simple fields ------------------------------------------------------- */

static int
ds_v_f_bool(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsString(in)
        && (strcmp(in->valuestring, "true") == 0
            || strcmp(in->valuestring, "false") == 0))
    {
        return ds_v_fail(c, in, 0, "expected true or false, got a string "
                         "(write %s without quotes)", in->valuestring);
    }

    if (!cJSON_IsBool(in)) {
        return ds_v_fail(c, in, 0, "expected true or false, got %s",
                         ds_tname(in));
    }

    *out = cJSON_CreateBool(cJSON_IsTrue(in));
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_str(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


/* any string, even empty */
static int
ds_v_f_anystr(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }

    *out = cJSON_CreateString(in->valuestring);
    return *out ? DS_OK : ds_v_oom(c);
}


/* a non-empty scalar as text: "user: 1000" is the string "1000" */
static int
ds_v_f_text(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    char         buf[64];
    const char  *s;

    if (ds_v_text(c, in, &s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }
    if (s[0] == '\0') {
        return ds_v_fail(c, in, 0, "expected a non-empty string");
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static const char *const  ds_other_types[] = {
    "task", "dev-environment", "fleet", "gateway", "volume"
};


static int
ds_v_f_type(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t                    i;
    static const char *const  service[] = { "service" };
    ds_qbuf_t                 qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected \"service\", got %s",
                         ds_tname(in));
    }

    if (strcmp(in->valuestring, "service") == 0) {
        *out = cJSON_CreateString("service");
        return *out ? DS_OK : ds_v_oom(c);
    }

    for (i = 0; i < DS_NFIELDS(ds_other_types); i++) {
        if (strcmp(in->valuestring, ds_other_types[i]) == 0) {
            return ds_v_fail(c, in, 0, "type %s is not supported: only "
                             "services", ds_q(&qb, in->valuestring));
        }
    }

    if (ds_suggest(in->valuestring, service, 1)) {
        return ds_v_fail(c, in, 0, "unknown type %s (did you mean "
                         "\"service\"?)", ds_q(&qb, in->valuestring));
    }

    return ds_v_fail(c, in, 0, "unknown type %s: expected \"service\"",
                     ds_q(&qb, in->valuestring));
}


static int
ds_v_f_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (!ds_valid_run_name(s, strlen(s))) {
        return ds_v_fail(c, in, 0, "invalid run name %s: expected 2 to 41 "
                         "lowercase letters, digits or \"-\", starting with "
                         "a letter", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_portnum(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  p;

    if (ds_v_uint(c, in, 1, 65535, &p) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateNumber((double) p);
    return *out ? DS_OK : ds_v_oom(c);
}


static const ds_vfield_t  ds_port_fields[] = {
    { "container_port", ds_v_f_portnum, DS_VF_REQUIRED },
    { "local_port", ds_v_f_portnum, 0 },
};


/* 8000, "8000", "80:8000" or {container_port, local_port} */
static int
ds_v_f_port(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc;
    const char  *s, *colon;
    uint64_t     cport, lport;
    cJSON       *slot[2] = { NULL, NULL };
    ds_qbuf_t    qb;

    cport = 0;
    lport = DS_SPEC_PORT_LOCAL;

    if (cJSON_IsNumber(in)) {
        if (ds_v_uint(c, in, 1, 65535, &cport) != DS_OK) {
            return DS_EINVAL;
        }

    } else if (cJSON_IsString(in)) {
        s = in->valuestring;
        colon = strchr(s, ':');

        if (colon == NULL) {
            rc = ds_v_parse_uint(s, strlen(s), 65535, &cport);
        } else {
            rc = ds_v_parse_uint(s, (size_t) (colon - s), 65535, &lport);
            if (rc == 0) {
                rc = ds_v_parse_uint(colon + 1, strlen(colon + 1), 65535,
                                     &cport);
            }
        }

        if (rc == 0 && (cport == 0 || lport == 0)) {
            rc = -2;
        }
        if (rc == -2) {
            return ds_v_fail(c, in, 0, "invalid port %s: ports are 1 to "
                             "65535", ds_q(&qb, s));
        }
        if (rc != 0) {
            return ds_v_fail(c, in, 0, "invalid port %s: expected a port "
                             "number or \"LOCAL:CONTAINER\"", ds_q(&qb, s));
        }

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_port_fields, 2, NULL, slot);
        if (rc != DS_OK) {
            ds_v_free_slots(slot, 2);
            return rc;
        }
        cport = (uint64_t) slot[0]->valuedouble;
        if (slot[1]) {
            lport = (uint64_t) slot[1]->valuedouble;
        }
        ds_v_free_slots(slot, 2);

    } else {
        return ds_v_fail(c, in, 0, "expected a port number, "
                         "\"LOCAL:CONTAINER\" or a mapping, got %s",
                         ds_tname(in));
    }

    *out = cJSON_CreateObject();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    if (ds_v_add(c, *out, "container_port", cJSON_CreateNumber(cport))
        != DS_OK
        || ds_v_add(c, *out, "local_port", cJSON_CreateNumber(lport))
           != DS_OK)
    {
        return DS_ERROR;                /* the caller frees *out */
    }

    return DS_OK;
}


static int
ds_v_f_commands(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i;
    size_t        old;
    char          buf[64];
    const char   *s;
    const cJSON  *it;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a list of shell commands, "
                         "got %s", ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_COMMANDS_MAX) {
        return ds_v_fail(c, in, 0, "too many commands (more than %d)",
                         DS_SPEC_COMMANDS_MAX);
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        if (ds_v_text(c, it, &s, buf, sizeof(buf)) != 0) {
            old = ds_v_pushi(c, i);
            if (cJSON_IsObject(it)) {
                ds_v_fail(c, it, 0, "expected a command string, got a "
                          "mapping (quote lines that contain \": \")");
            } else {
                ds_v_fail(c, it, 0, "expected a command string, got %s",
                          ds_tname(it));
            }
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        if (ds_v_append(c, *out, cJSON_CreateString(s)) != DS_OK) {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static int
ds_v_f_image(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (ds_v_has_space(s)) {
        return ds_v_fail(c, in, 0, "invalid image %s: must not contain "
                         "spaces", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_python(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t                    i;
    char                      buf[64];
    const char               *s;
    static const char *const  versions[] = {
        "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"
    };
    ds_qbuf_t                 qb;

    if (cJSON_IsString(in)) {
        s = in->valuestring;

    } else if (cJSON_IsNumber(in)) {
        ds_v_text(c, in, &s, buf, sizeof(buf));
        if (strcmp(s, "3.1") == 0) {
            s = "3.10";                 /* python: 3.10 read as a float */
        }

    } else {
        return ds_v_fail(c, in, 0, "expected a python version (e.g. "
                         "\"3.11\"), got %s", ds_tname(in));
    }

    for (i = 0; i < DS_NFIELDS(versions); i++) {
        if (strcmp(s, versions[i]) == 0) {
            *out = cJSON_CreateString(s);
            return *out ? DS_OK : ds_v_oom(c);
        }
    }

    return ds_v_fail(c, in, 0, "unsupported python version %s: expected "
                     "3.9 to 3.14", ds_q(&qb, s));
}


/* [A-Za-z_][A-Za-z0-9_]*: the length of the name at s, 0 if none */
static size_t
ds_v_env_name(const char *s)
{
    size_t  n;

    if (!(isalpha((unsigned char) s[0]) || s[0] == '_')) {
        return 0;
    }

    for (n = 1; isalnum((unsigned char) s[n]) || s[n] == '_'; n++) {
        /* void */
    }

    return n;
}


/* ["K=V", "K"] or {K: V, K: null} -> {K: "V", K: null} */
static int
ds_v_f_env(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i;
    size_t        n, old;
    char          buf[64], *name;
    const char   *s;
    const cJSON  *it;
    cJSON        *v;
    ds_qbuf_t     qb;

    if (!cJSON_IsArray(in) && !cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a list of NAME=VALUE or a "
                         "mapping, got %s", ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_ENV_MAX) {
        return ds_v_fail(c, in, 0, "too many environment variables (more "
                         "than %d)", DS_SPEC_ENV_MAX);
    }

    *out = cJSON_CreateObject();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {

        if (cJSON_IsArray(in)) {
            old = ds_v_pushi(c, i);

            if (!cJSON_IsString(it)) {
                ds_v_fail(c, it, 0, "expected NAME=VALUE or NAME, got %s",
                          ds_tname(it));
                ds_v_pop(c, old);
                return DS_EINVAL;
            }

            s = it->valuestring;
            n = ds_v_env_name(s);

            if (n == 0 || (s[n] != '\0' && s[n] != '=')) {
                ds_v_fail(c, it, 0, "invalid environment variable %s: "
                          "expected NAME=VALUE or NAME", ds_q(&qb, s));
                ds_v_pop(c, old);
                return DS_EINVAL;
            }

            name = strndup(s, n);
            if (name == NULL) {
                return ds_v_oom(c);
            }

            if (cJSON_GetObjectItemCaseSensitive(*out, name)) {
                ds_v_fail(c, it, 0, "duplicate environment variable %s",
                          ds_q(&qb, name));
                free(name);
                ds_v_pop(c, old);
                return DS_EINVAL;
            }
            ds_v_pop(c, old);

            v = s[n] == '=' ? cJSON_CreateString(s + n + 1)
                            : cJSON_CreateNull();

            if (ds_v_add(c, *out, name, v) != DS_OK) {
                free(name);
                return DS_ERROR;
            }
            free(name);
            continue;
        }

        if (ds_v_dups(c, in, it) != DS_OK) {
            return DS_EINVAL;
        }

        n = ds_v_env_name(it->string);
        if (n == 0 || it->string[n] != '\0') {
            return ds_v_fail(c, it, 1, "invalid environment variable name "
                             "%s", ds_q(&qb, it->string));
        }

        if (cJSON_IsNull(it)) {
            v = cJSON_CreateNull();

        } else if (ds_v_text(c, it, &s, buf, sizeof(buf)) == 0) {
            v = cJSON_CreateString(s);

        } else {
            old = ds_v_push(c, it->string);
            ds_v_fail(c, it, 0, "expected a string, got %s", ds_tname(it));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        if (ds_v_add(c, *out, it->string, v) != DS_OK) {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static int
ds_v_f_shell(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (strcmp(s, "sh") != 0 && strcmp(s, "bash") != 0
        && (s[0] != '/' || ds_v_has_ctl(s)))
    {
        return ds_v_fail(c, in, 0, "invalid shell %s: expected sh, bash or "
                         "an absolute path", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


/* USER[:GROUP], each a name or a numeric id */
static int
ds_v_f_user(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    char         buf[64];
    const char  *s, *colon;
    ds_qbuf_t    qb;

    if (ds_v_text(c, in, &s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "expected a user name or id, got %s",
                         ds_tname(in));
    }

    colon = strchr(s, ':');

    if (s[0] == '\0' || s[0] == ':' || ds_v_has_space(s)
        || (colon && (colon[1] == '\0' || strchr(colon + 1, ':'))))
    {
        return ds_v_fail(c, in, 0, "invalid user %s: expected USER or "
                         "USER:GROUP", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_working_dir(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (ds_v_has_ctl(s)) {
        return ds_v_fail(c, in, 0, "invalid working_dir %s",
                         ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


/* ---- resources ----------------------------------------------------------- */

static const char *
ds_v_arch(const char *s)
{
    if (strcasecmp(s, "x86") == 0 || strcasecmp(s, "x86_64") == 0
        || strcasecmp(s, "amd64") == 0)
    {
        return "x86";
    }
    if (strcasecmp(s, "arm") == 0 || strcasecmp(s, "arm64") == 0
        || strcasecmp(s, "aarch64") == 0)
    {
        return "arm";
    }
    return NULL;
}


static int
ds_v_f_arch(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *a;
    ds_qbuf_t    qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected x86 or arm, got %s",
                         ds_tname(in));
    }

    a = ds_v_arch(in->valuestring);
    if (a == NULL) {
        return ds_v_fail(c, in, 0, "invalid CPU architecture %s: expected "
                         "x86 or arm", ds_q(&qb, in->valuestring));
    }

    *out = cJSON_CreateString(a);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_cpu_count(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_INT, "CPU count");
}


static const ds_vfield_t  ds_cpu_fields[] = {
    { "arch", ds_v_f_arch, 0 },
    { "count", ds_v_f_cpu_count, 0 },
};


/* 4, "2..8", "x86:8..", {arch, count} or {min, max} */
static int
ds_v_f_cpu(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc;
    char         buf[128], *tok, *next;
    const char  *arch;
    cJSON       *s[2] = { NULL, NULL };
    ds_vrange_t  r;
    ds_qbuf_t    qa, qb;

    rc = DS_OK;

    if (cJSON_IsNumber(in)
        || (cJSON_IsObject(in)
            && (cJSON_GetObjectItemCaseSensitive(in, "min")
                || cJSON_GetObjectItemCaseSensitive(in, "max"))))
    {
        rc = ds_v_f_cpu_count(c, in, &s[1]);

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_cpu_fields, 2, NULL, s);

    } else if (cJSON_IsString(in)) {
        if (ds_v_nospace(in->valuestring, buf, sizeof(buf)) != 0) {
            return ds_v_fail(c, in, 0, "invalid CPU spec %s: too long",
                             ds_q(&qa, in->valuestring));
        }

        for (tok = buf; tok && rc == DS_OK; tok = next) {
            next = strchr(tok, ':');
            if (next) {
                *next++ = '\0';
            }

            if (*tok == '\0') {
                rc = ds_v_fail(c, in, 0, "invalid CPU spec %s: empty part",
                               ds_q(&qa, in->valuestring));

            } else if (strstr(tok, "..") || strspn(tok, "0123456789")
                                            == strlen(tok))
            {
                if (s[1]) {
                    rc = ds_v_fail(c, in, 0, "invalid CPU spec %s: more than "
                                   "one count", ds_q(&qa, in->valuestring));
                } else {
                    rc = ds_v_range_str(c, in, DS_V_INT, "CPU count", tok,
                                        &r);
                    if (rc == DS_OK) {
                        rc = ds_v_range_json(c, &r, &s[1]);
                    }
                }

            } else if ((arch = ds_v_arch(tok)) == NULL) {
                rc = ds_v_fail(c, in, 0, "invalid CPU architecture %s: "
                               "expected x86 or arm", ds_q(&qb, tok));

            } else if (s[0]) {
                rc = ds_v_fail(c, in, 0, "invalid CPU spec %s: more than one "
                               "architecture", ds_q(&qa, in->valuestring));

            } else {
                s[0] = cJSON_CreateString(arch);
                rc = s[0] ? DS_OK : ds_v_oom(c);
            }
        }

    } else {
        return ds_v_fail(c, in, 0, "expected a CPU count (e.g. 4, 2..8, "
                         "x86:8..), got %s", ds_tname(in));
    }

    if (rc == DS_OK && s[1] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_CPU, &s[1]);
    }

    if (rc == DS_OK) {
        rc = ds_v_assemble(c, ds_cpu_fields, 2, s, out);
    }

    ds_v_free_slots(s, 2);
    return rc;
}


static int
ds_v_f_memory(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "memory size");
}


static int
ds_v_f_disk_size(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "disk size");
}


static const ds_vfield_t  ds_disk_fields[] = {
    { "size", ds_v_f_disk_size, DS_VF_REQUIRED },
};


static int
ds_v_f_disk(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int  rc;

    if (cJSON_IsObject(in)
        && cJSON_GetObjectItemCaseSensitive(in, "min") == NULL
        && cJSON_GetObjectItemCaseSensitive(in, "max") == NULL)
    {
        rc = ds_v_object(c, in, ds_disk_fields, 1, NULL, out);
        if (rc != DS_OK) {
            cJSON_Delete(*out);
            *out = NULL;
        }
        return rc;
    }

    return ds_v_f_disk_size(c, in, out);
}


static int
ds_v_f_shm_size(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsString(in) && strstr(in->valuestring, "..")) {
        return ds_v_fail(c, in, 0, "expected a size (e.g. 8GB), not a "
                         "range");
    }

    return ds_v_f_end(c, in, out, DS_V_MEM);
}


static const struct {
    const char  *name;
    const char  *canon;
} ds_vendors[] = {
    { "nvidia", "nvidia" },
    { "amd", "amd" },
    { "google", "google" },
    { "tpu", "google" },
    { "intel", "intel" },
    { "tenstorrent", "tenstorrent" },
    { "tt", "tenstorrent" },
};


static const char *
ds_v_vendor(const char *s)
{
    size_t  i;

    for (i = 0; i < DS_NFIELDS(ds_vendors); i++) {
        if (strcasecmp(s, ds_vendors[i].name) == 0) {
            return ds_vendors[i].canon;
        }
    }
    return NULL;
}


static int
ds_v_f_vendor(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t                    i;
    const char               *v;
    static const char *const  names[] = {
        "nvidia", "amd", "google", "intel", "tenstorrent"
    };

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a GPU vendor, got %s",
                         ds_tname(in));
    }

    v = ds_v_vendor(in->valuestring);
    if (v == NULL) {
        return ds_v_enum(c, in, "GPU vendor", names, DS_NFIELDS(names), &i);
    }

    *out = cJSON_CreateString(v);
    return *out ? DS_OK : ds_v_oom(c);
}


/* appends a GPU name to the list *names (created on demand) */
static int
ds_v_gpu_name(ds_vctx_t *c, const cJSON *at, const char *s, size_t n,
    cJSON **names)
{
    size_t     i;
    char       name[DS_NAME_MAX + 1];
    ds_qbuf_t  qb;

    for (i = 0; i < n && i < DS_NAME_MAX; i++) {
        name[i] = s[i];
    }
    name[i] = '\0';

    if (n == 0 || n > DS_NAME_MAX
        || strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                        "0123456789-_.") != n)
    {
        return ds_v_fail(c, at, 0, "invalid GPU name %s", ds_q(&qb, name));
    }

    if (*names == NULL) {
        *names = cJSON_CreateArray();
        if (*names == NULL) {
            return ds_v_oom(c);
        }
    }

    if (cJSON_GetArraySize(*names) >= DS_SPEC_LIST_MAX) {
        return ds_v_fail(c, at, 0, "too many GPU names (more than %d)",
                         DS_SPEC_LIST_MAX);
    }

    return ds_v_append(c, *names, cJSON_CreateString(name));
}


static int
ds_v_f_gpu_names(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i, rc;
    size_t        old;
    const cJSON  *it;

    if (cJSON_IsString(in)) {
        return ds_v_gpu_name(c, in, in->valuestring, strlen(in->valuestring),
                             out);
    }

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a GPU name or a list of names, "
                         "got %s", ds_tname(in));
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        old = ds_v_pushi(c, i);
        if (!cJSON_IsString(it)) {
            ds_v_fail(c, it, 0, "expected a GPU name, got %s",
                      ds_tname(it));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }
        rc = ds_v_gpu_name(c, it, it->valuestring, strlen(it->valuestring),
                           out);
        ds_v_pop(c, old);
        if (rc != DS_OK) {
            return rc;
        }
    }

    return DS_OK;
}


static int
ds_v_f_gpu_count(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_INT, "GPU count");
}


static int
ds_v_f_gpu_memory(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "GPU memory");
}


static int
ds_v_f_gpu_total(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_range_field(c, in, out, DS_V_MEM, "total GPU memory");
}


enum { G_VENDOR, G_NAME, G_COUNT, G_MEMORY, G_TOTAL, G_N };

static const ds_vfield_t  ds_gpu_fields[G_N] = {
    { "vendor", ds_v_f_vendor, 0 },
    { "name", ds_v_f_gpu_names, 0 },
    { "count", ds_v_f_gpu_count, 0 },
    { "memory", ds_v_f_gpu_memory, 0 },
    { "total_memory", ds_v_f_gpu_total, 0 },
};

static const ds_vunsup_t  ds_gpu_unsup[] = {
    { "compute_capability", "is not supported yet" },
    { NULL, NULL }
};


/* "nvidia:A100,H100:80GB:2" in any order */
static int
ds_v_gpu_tokens(ds_vctx_t *c, const cJSON *in, cJSON **s)
{
    int           rc;
    char          buf[256], *tok, *next, *p, *comma;
    const char   *v;
    ds_vrange_t   r;
    ds_qbuf_t     qa;

    if (ds_v_nospace(in->valuestring, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "invalid GPU spec %s: too long",
                         ds_q(&qa, in->valuestring));
    }

    if (buf[0] == '\0') {
        return ds_v_fail(c, in, 0, "invalid GPU spec \"\": expected e.g. "
                         "A100, 24GB.. or H100:2");
    }

    for (tok = buf; tok; tok = next) {
        next = strchr(tok, ':');
        if (next) {
            *next++ = '\0';
        }

        if (*tok == '\0') {
            return ds_v_fail(c, in, 0, "invalid GPU spec %s: empty part",
                             ds_q(&qa, in->valuestring));
        }

        if ((v = ds_v_vendor(tok)) != NULL) {
            if (s[G_VENDOR]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one vendor", ds_q(&qa, in->valuestring));
            }
            s[G_VENDOR] = cJSON_CreateString(v);
            if (s[G_VENDOR] == NULL) {
                return ds_v_oom(c);
            }

        } else if (isalpha((unsigned char) tok[0])) {
            if (s[G_NAME]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one name part (write A100,H100 for "
                                 "either)", ds_q(&qa, in->valuestring));
            }
            for (p = tok; p; p = comma) {
                comma = strchr(p, ',');
                if (comma == p || *p == '\0') {
                    return ds_v_fail(c, in, 0, "invalid GPU spec %s: empty "
                                     "name", ds_q(&qa, in->valuestring));
                }
                rc = ds_v_gpu_name(c, in, p,
                                   comma ? (size_t) (comma - p) : strlen(p),
                                   &s[G_NAME]);
                if (rc != DS_OK) {
                    return rc;
                }
                if (comma) {
                    comma++;
                }
            }

        } else if (strpbrk(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "abcdefghijklmnopqrstuvwxyz"))
        {
            if (s[G_MEMORY]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one memory size",
                                 ds_q(&qa, in->valuestring));
            }
            rc = ds_v_range_str(c, in, DS_V_MEM, "GPU memory", tok, &r);
            if (rc == DS_OK) {
                rc = ds_v_range_json(c, &r, &s[G_MEMORY]);
            }
            if (rc != DS_OK) {
                return rc;
            }

        } else {
            if (s[G_COUNT]) {
                return ds_v_fail(c, in, 0, "invalid GPU spec %s: more than "
                                 "one count", ds_q(&qa, in->valuestring));
            }
            rc = ds_v_range_str(c, in, DS_V_INT, "GPU count", tok, &r);
            if (rc == DS_OK) {
                rc = ds_v_range_json(c, &r, &s[G_COUNT]);
            }
            if (rc != DS_OK) {
                return rc;
            }
        }
    }

    return DS_OK;
}


static int
ds_v_f_gpu(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[G_N] = { NULL };

    if (cJSON_IsNumber(in)) {
        rc = ds_v_f_gpu_count(c, in, &s[G_COUNT]);

    } else if (cJSON_IsString(in)) {
        rc = ds_v_gpu_tokens(c, in, s);

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_gpu_fields, G_N, ds_gpu_unsup, s);

    } else {
        return ds_v_fail(c, in, 0, "expected a GPU spec (e.g. A100, 24GB.., "
                         "H100:2), got %s", ds_tname(in));
    }

    /* asking for a GPU means at least one */
    if (rc == DS_OK && s[G_COUNT] == NULL) {
        rc = ds_v_range_default(c, 1, &s[G_COUNT]);
    }

    if (rc == DS_OK) {
        rc = ds_v_assemble(c, ds_gpu_fields, G_N, s, out);
    }

    ds_v_free_slots(s, G_N);
    return rc;
}


enum { R_CPU, R_MEMORY, R_DISK, R_GPU, R_SHM_SIZE, R_N };

static const ds_vfield_t  ds_resources_fields[R_N] = {
    { "cpu", ds_v_f_cpu, 0 },
    { "memory", ds_v_f_memory, 0 },
    { "disk", ds_v_f_disk, 0 },
    { "gpu", ds_v_f_gpu, 0 },
    { "shm_size", ds_v_f_shm_size, 0 },
};


/* in NULL: the defaults */
static int
ds_v_f_resources(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[R_N] = { NULL };
    cJSON  *sub[G_N] = { NULL };

    rc = DS_OK;

    if (in) {
        rc = ds_v_object(c, in, ds_resources_fields, R_N, NULL, s);
    }

    if (rc == DS_OK && s[R_CPU] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_CPU, &sub[1]);
        if (rc == DS_OK) {
            rc = ds_v_assemble(c, ds_cpu_fields, 2, sub, &s[R_CPU]);
        }
        ds_v_free_slots(sub, G_N);
    }

    if (rc == DS_OK && s[R_MEMORY] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_MEM_MB, &s[R_MEMORY]);
    }

    if (rc == DS_OK && s[R_DISK] == NULL) {
        rc = ds_v_range_default(c, DS_SPEC_DEFAULT_DISK_MB, &s[R_DISK]);
    }

    /* no gpu: any number, none included */
    if (rc == DS_OK && s[R_GPU] == NULL) {
        rc = ds_v_range_default(c, 0, &sub[G_COUNT]);
        if (rc == DS_OK) {
            rc = ds_v_assemble(c, ds_gpu_fields, G_N, sub, &s[R_GPU]);
        }
        ds_v_free_slots(sub, G_N);
    }

    if (rc == DS_OK) {
        rc = ds_v_assemble(c, ds_resources_fields, R_N, s, out);
    }

    ds_v_free_slots(s, R_N);
    return rc;
}


/* ---- replicas and scaling ------------------------------------------------ */

static int
ds_v_f_replicas(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc;
    ds_vrange_t  r;
    ds_qbuf_t    qb;

    if (cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "replica groups are not supported yet");
    }

    rc = ds_v_range(c, in, DS_V_INT, "number of replicas", &r);
    if (rc != DS_OK) {
        return rc;
    }

    if (!r.has_max) {
        if (cJSON_IsString(in)) {
            return ds_v_fail(c, in, 0, "invalid replicas %s: the maximum "
                             "number of replicas is required",
                             ds_q(&qb, in->valuestring));
        }
        return ds_v_fail(c, in, 0, "the maximum number of replicas is "
                         "required");
    }

    if (!r.has_min) {
        r.has_min = 1;
        r.min = 0;
    }

    if (r.max == 0) {
        return ds_v_fail(c, in, 0, "the maximum number of replicas must be "
                         "at least 1");
    }

    if (r.max > DS_REPLICAS_MAX) {
        return ds_v_fail(c, in, 0, "too many replicas: %llu (at most %d)",
                         (unsigned long long) r.max, DS_REPLICAS_MAX);
    }

    return ds_v_range_json(c, &r, out);
}


static int
ds_v_f_metric(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  metrics[] = { "rps", "inflight" };

    return ds_v_enum_string(c, in, "metric", metrics, 2, out);
}


static int
ds_v_positive(ds_vctx_t *c, const cJSON *in, const char *what, double max,
    cJSON **out)
{
    double  d;

    if (!cJSON_IsNumber(in)) {
        return ds_v_fail(c, in, 0, "expected a number, got %s",
                         ds_tname(in));
    }

    d = in->valuedouble;

    if (!(d > 0)) {
        return ds_v_fail(c, in, 0, "%s must be greater than 0, got %.15g",
                         what, d);
    }
    if (!(d <= max)) {
        return ds_v_fail(c, in, 0, "%s must be at most %.15g, got %.15g",
                         what, max, d);
    }

    *out = cJSON_CreateNumber(d);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_target(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_positive(c, in, "target", 1e9, out);
}


static int
ds_v_f_window(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  secs;

    if (ds_v_duration(c, in, &secs) != DS_OK) {
        return DS_EINVAL;
    }

    if (secs != 30 && secs != 60 && secs != 300) {
        return ds_v_fail(c, in, 0, "window must be 30s, 60s or 300s, got "
                         "%llus", (unsigned long long) secs);
    }

    *out = cJSON_CreateNumber((double) secs);
    return *out ? DS_OK : ds_v_oom(c);
}


enum { SC_METRIC, SC_TARGET, SC_WINDOW, SC_UP, SC_DOWN, SC_N };

static const ds_vfield_t  ds_scaling_fields[SC_N] = {
    { "metric", ds_v_f_metric, DS_VF_REQUIRED },
    { "target", ds_v_f_target, DS_VF_REQUIRED },
    { "window", ds_v_f_window, 0 },
    { "scale_up_delay", ds_v_f_duration, 0 },
    { "scale_down_delay", ds_v_f_duration, 0 },
};


static int
ds_v_f_scaling(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[SC_N] = { NULL };

    rc = ds_v_object(c, in, ds_scaling_fields, SC_N, NULL, s);

    if (rc == DS_OK && s[SC_WINDOW] == NULL) {
        s[SC_WINDOW] = cJSON_CreateNumber(DS_SPEC_DEFAULT_WINDOW);
        rc = s[SC_WINDOW] ? DS_OK : ds_v_oom(c);
    }
    if (rc == DS_OK && s[SC_UP] == NULL) {
        s[SC_UP] = cJSON_CreateNumber(DS_SPEC_DEFAULT_UP);
        rc = s[SC_UP] ? DS_OK : ds_v_oom(c);
    }
    if (rc == DS_OK && s[SC_DOWN] == NULL) {
        s[SC_DOWN] = cJSON_CreateNumber(DS_SPEC_DEFAULT_DOWN);
        rc = s[SC_DOWN] ? DS_OK : ds_v_oom(c);
    }

    if (rc == DS_OK) {
        rc = ds_v_assemble(c, ds_scaling_fields, SC_N, s, out);
    }

    ds_v_free_slots(s, SC_N);
    return rc;
}


static int
ds_v_f_https(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    ds_qbuf_t  qb;

    if (cJSON_IsString(in) && strcmp(in->valuestring, "auto") == 0) {
        *out = cJSON_CreateString("auto");
        return *out ? DS_OK : ds_v_oom(c);
    }

    if (cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "invalid https %s: expected true, false "
                         "or \"auto\"", ds_q(&qb, in->valuestring));
    }

    if (!cJSON_IsBool(in)) {
        return ds_v_fail(c, in, 0, "expected true, false or \"auto\", "
                         "got %s", ds_tname(in));
    }

    return ds_v_f_bool(c, in, out);
}


/* ---- model --------------------------------------------------------------- */

static int
ds_v_f_model_type(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  types[] = { "chat" };

    return ds_v_enum_string(c, in, "model type", types, 1, out);
}


static int
ds_v_f_model_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (strlen(s) > DS_NAME_MAX) {
        return ds_v_fail(c, in, 0, "model name %s is longer than %d "
                         "characters", ds_q(&qb, s), DS_NAME_MAX);
    }

    if (ds_v_has_ctl(s) || strchr(s, '\t')) {
        return ds_v_fail(c, in, 0, "invalid model name %s", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_model_format(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  formats[] = { "openai", "tgi" };

    return ds_v_enum_string(c, in, "model format", formats, 2, out);
}


/* a URL path prefix: "/" then no spaces, backslashes or braces */
static int
ds_v_f_prefix(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a path prefix (e.g. \"/\"), "
                         "got %s", ds_tname(in));
    }

    s = in->valuestring;

    if (s[0] != '/') {
        return ds_v_fail(c, in, 0, "invalid prefix %s: must start with "
                         "\"/\"", ds_q(&qb, s));
    }

    if (ds_v_has_space(s) || strpbrk(s, "\\{}")) {
        return ds_v_fail(c, in, 0, "invalid prefix %s: must not contain "
                         "spaces, \"\\\", \"{\" or \"}\"", ds_q(&qb, s));
    }

    if (strlen(s) > DS_PREFIX_MAX) {
        return ds_v_fail(c, in, 0, "prefix is longer than %d characters",
                         DS_PREFIX_MAX);
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


enum { M_TYPE, M_NAME, M_FORMAT, M_PREFIX, M_TEMPLATE, M_EOS, M_N };

static const ds_vfield_t  ds_model_fields[M_N] = {
    { "type", ds_v_f_model_type, 0 },
    { "name", ds_v_f_model_name, DS_VF_REQUIRED },
    { "format", ds_v_f_model_format, DS_VF_REQUIRED },
    { "prefix", ds_v_f_prefix, 0 },
    { "chat_template", ds_v_f_anystr, 0 },
    { "eos_token", ds_v_f_anystr, 0 },
};


/* "name" (openai at /v1) or {type, name, format, ...} */
static int
ds_v_f_model(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc, tgi;
    size_t        i;
    const cJSON  *m;
    cJSON        *s[M_N] = { NULL };
    ds_qbuf_t     qb;

    if (cJSON_IsString(in)) {
        rc = ds_v_f_model_name(c, in, &s[M_NAME]);
        if (rc == DS_OK) {
            s[M_FORMAT] = cJSON_CreateString("openai");
            rc = s[M_FORMAT] ? DS_OK : ds_v_oom(c);
        }

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_model_fields, M_N, NULL, s);

    } else {
        return ds_v_fail(c, in, 0, "expected a model name or a mapping, "
                         "got %s", ds_tname(in));
    }

    if (rc != DS_OK) {
        goto done;
    }

    tgi = strcmp(s[M_FORMAT]->valuestring, "tgi") == 0;

    for (i = M_PREFIX; i < M_N; i++) {
        if (s[i] && (i == M_PREFIX) == tgi) {
            m = cJSON_GetObjectItemCaseSensitive(in, ds_model_fields[i].name);
            rc = ds_v_fail(c, m, 1, "%s is only for format %s",
                           ds_q(&qb, ds_model_fields[i].name),
                           tgi ? "openai" : "tgi");
            goto done;
        }
    }

    if (s[M_TYPE] == NULL) {
        s[M_TYPE] = cJSON_CreateString("chat");
    }
    if (!tgi && s[M_PREFIX] == NULL) {
        s[M_PREFIX] = cJSON_CreateString("/v1");
    }
    if (s[M_TYPE] == NULL || (!tgi && s[M_PREFIX] == NULL)) {
        rc = ds_v_oom(c);
        goto done;
    }

    /* openai: type, name, format, prefix; tgi: without prefix */
    rc = ds_v_assemble(c, ds_model_fields, tgi ? M_N : M_TEMPLATE, s, out);
    if (rc == DS_OK && tgi) {
        cJSON_DeleteItemFromObjectCaseSensitive(*out, "prefix");
    }

done:

    ds_v_free_slots(s, M_N);
    return rc;
}


/* ---- rate limits --------------------------------------------------------- */

static int
ds_v_f_key_type(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  types[] = { "ip_address", "header" };

    return ds_v_enum_string(c, in, "key type", types, 2, out);
}


static int
ds_v_f_key_header(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    if (strlen(s) > DS_NAME_MAX
        || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789-_") != strlen(s))
    {
        return ds_v_fail(c, in, 0, "invalid header name %s: expected up to "
                         "%d letters, digits, \"-\" or \"_\"", ds_q(&qb, s),
                         DS_NAME_MAX);
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static const ds_vfield_t  ds_key_fields[] = {
    { "type", ds_v_f_key_type, DS_VF_REQUIRED },
    { "header", ds_v_f_key_header, 0 },
};


static int
ds_v_f_key(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int          rc, header;
    cJSON       *s[2] = { NULL, NULL };

    rc = ds_v_object(c, in, ds_key_fields, 2, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    header = strcmp(s[0]->valuestring, "header") == 0;

    if (header && s[1] == NULL) {
        rc = ds_v_fail(c, in, 0, "missing required field \"header\"");
        goto done;
    }

    if (!header && s[1]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "header"), 1,
                       "\"header\" is only for key type header");
        goto done;
    }

    rc = ds_v_assemble(c, ds_key_fields, header ? 2 : 1, s, out);

done:

    ds_v_free_slots(s, 2);
    return rc;
}


static int
ds_v_f_rps(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsNumber(in) && in->valuedouble > 0
        && in->valuedouble < 0.001)
    {
        return ds_v_fail(c, in, 0, "rps must be at least 0.001, got %.15g",
                         in->valuedouble);
    }

    return ds_v_positive(c, in, "rps", DS_SPEC_RPS_MAX, out);
}


static int
ds_v_f_burst(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  v;

    if (ds_v_uint(c, in, 0, UINT32_MAX, &v) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateNumber((double) v);
    return *out ? DS_OK : ds_v_oom(c);
}


enum { RL_PREFIX, RL_KEY, RL_RPS, RL_BURST, RL_N };

static const ds_vfield_t  ds_rl_fields[RL_N] = {
    { "prefix", ds_v_f_prefix, 0 },
    { "key", ds_v_f_key, 0 },
    { "rps", ds_v_f_rps, DS_VF_REQUIRED },
    { "burst", ds_v_f_burst, 0 },
};


/*
 * A list of at most `max` mappings, each validated by `item` (which sees
 * the items accepted so far, to refuse duplicates); errors carry the
 * index in their path.
 */
typedef int (*ds_v_item_pt)(ds_vctx_t *c, const cJSON *in,
    const cJSON *done, cJSON **out);

static int
ds_v_list(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *expected, int max, ds_v_item_pt item, cJSON **out)
{
    int           i, rc;
    size_t        old;
    const cJSON  *it;
    cJSON        *one;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected %s, got %s", expected,
                         ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > max) {
        return ds_v_fail(c, in, 0, "too many %s (more than %d)", what, max);
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        one = NULL;
        old = ds_v_pushi(c, i);
        rc = item(c, it, *out, &one);
        ds_v_pop(c, old);

        if (rc != DS_OK || ds_v_append(c, *out, one) != DS_OK) {
            return rc != DS_OK ? rc : DS_ERROR;
        }
    }

    return DS_OK;
}


static int
ds_v_rate_limit(ds_vctx_t *c, const cJSON *in, const cJSON *done,
    cJSON **out)
{
    int           rc;
    const cJSON  *prev, *at;
    cJSON        *s[RL_N] = { NULL };
    ds_qbuf_t     qb;

    rc = ds_v_object(c, in, ds_rl_fields, RL_N, NULL, s);

    if (rc == DS_OK && s[RL_PREFIX] == NULL) {
        s[RL_PREFIX] = cJSON_CreateString("/");
        rc = s[RL_PREFIX] ? DS_OK : ds_v_oom(c);
    }

    if (rc == DS_OK && s[RL_KEY] == NULL) {
        s[RL_KEY] = cJSON_CreateObject();
        rc = s[RL_KEY] ? ds_v_add(c, s[RL_KEY], "type",
                                  cJSON_CreateString("ip_address"))
                       : ds_v_oom(c);
    }

    if (rc == DS_OK && s[RL_BURST] == NULL) {
        s[RL_BURST] = cJSON_CreateNumber(0);
        rc = s[RL_BURST] ? DS_OK : ds_v_oom(c);
    }

    if (rc != DS_OK) {
        goto done;
    }

    /* the longest prefix wins, so two limits on one prefix make no sense */
    for (prev = done->child; prev; prev = prev->next) {
        if (strcmp(cJSON_GetObjectItemCaseSensitive(prev, "prefix")
                       ->valuestring, s[RL_PREFIX]->valuestring) == 0)
        {
            at = ds_v_get(in, "prefix");
            rc = ds_v_fail(c, at ? at : in, 0, "duplicate rate limit prefix "
                           "%s", ds_q(&qb, s[RL_PREFIX]->valuestring));
            goto done;
        }
    }

    rc = ds_v_assemble(c, ds_rl_fields, RL_N, s, out);

done:

    ds_v_free_slots(s, RL_N);
    return rc;
}


static int
ds_v_f_rate_limits(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "rate limits", "a list of rate limits",
                     DS_RATE_LIMITS_MAX, ds_v_rate_limit, out);
}


/* ---- probes -------------------------------------------------------------- */

static int
ds_v_f_probe_type(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  types[] = { "http" };

    return ds_v_enum_string(c, in, "probe type", types, 1, out);
}


static int
ds_v_f_url(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    ds_qbuf_t    qb;

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a URL path (e.g. \"/health\"), "
                         "got %s", ds_tname(in));
    }

    s = in->valuestring;

    if (s[0] != '/') {
        return ds_v_fail(c, in, 0, "invalid url %s: must start with \"/\"",
                         ds_q(&qb, s));
    }

    if (ds_v_has_space(s)) {
        return ds_v_fail(c, in, 0, "invalid url %s: must not contain spaces "
                         "or control characters", ds_q(&qb, s));
    }

    if (strlen(s) > DS_SPEC_URL_MAX) {
        return ds_v_fail(c, in, 0, "url is longer than %d characters",
                         DS_SPEC_URL_MAX);
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static const char *const  ds_methods[] = {
    "get", "post", "put", "delete", "patch", "head"
};


static int
ds_v_f_method(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    size_t  i;

    if (ds_v_enum(c, in, "method", ds_methods, DS_NFIELDS(ds_methods), &i)
        != DS_OK)
    {
        return DS_EINVAL;
    }

    *out = cJSON_CreateString(ds_methods[i]);
    return *out ? DS_OK : ds_v_oom(c);
}


/* an HTTP token (RFC 9110) */
static int
ds_v_f_header_name(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    const char  *s;
    size_t       n;
    ds_qbuf_t    qb;

    if (ds_v_str(c, in, &s) != DS_OK) {
        return DS_EINVAL;
    }

    n = strlen(s);

    if (n > DS_SPEC_HEADER_NAME_MAX
        || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789!#$%&'*+-.^_`|~") != n)
    {
        return ds_v_fail(c, in, 0, "invalid header name %s", ds_q(&qb, s));
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_header_value(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    char         buf[64];
    const char  *s;
    ds_qbuf_t    qb;

    if (ds_v_text(c, in, &s, buf, sizeof(buf)) != 0) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }

    if (s[0] == '\0' || strlen(s) > DS_SPEC_HEADER_VALUE_MAX
        || ds_v_has_ctl(s))
    {
        return ds_v_fail(c, in, 0, "invalid header value %s: expected 1 to "
                         "%d characters, no line breaks", ds_q(&qb, s),
                         DS_SPEC_HEADER_VALUE_MAX);
    }

    *out = cJSON_CreateString(s);
    return *out ? DS_OK : ds_v_oom(c);
}


static const ds_vfield_t  ds_header_fields[] = {
    { "name", ds_v_f_header_name, DS_VF_REQUIRED },
    { "value", ds_v_f_header_value, DS_VF_REQUIRED },
};


static int
ds_v_header(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int     rc;
    cJSON  *s[2];

    (void) done;
    s[0] = s[1] = NULL;

    rc = ds_v_object(c, in, ds_header_fields, 2, NULL, s);
    if (rc == DS_OK) {
        rc = ds_v_assemble(c, ds_header_fields, 2, s, out);
    }

    ds_v_free_slots(s, 2);
    return rc;
}


static int
ds_v_f_headers(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "headers", "a list of {name, value}",
                     DS_SPEC_HEADERS_MAX, ds_v_header, out);
}


static int
ds_v_f_body(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected a string, got %s",
                         ds_tname(in));
    }

    if (in->valuestring[0] == '\0'
        || strlen(in->valuestring) > DS_SPEC_BODY_MAX)
    {
        return ds_v_fail(c, in, 0, "body must have 1 to %d characters",
                         DS_SPEC_BODY_MAX);
    }

    *out = cJSON_CreateString(in->valuestring);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_probe_secs(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  secs;

    if (ds_v_duration(c, in, &secs) != DS_OK) {
        return DS_EINVAL;
    }

    if (secs < 1) {
        return ds_v_fail(c, in, 0, "expected at least 1s, got 0");
    }

    *out = cJSON_CreateNumber((double) secs);
    return *out ? DS_OK : ds_v_oom(c);
}


static int
ds_v_f_ready_after(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    uint64_t  v;

    if (ds_v_uint(c, in, 1, 1000000, &v) != DS_OK) {
        return DS_EINVAL;
    }

    *out = cJSON_CreateNumber((double) v);
    return *out ? DS_OK : ds_v_oom(c);
}


enum { P_TYPE, P_URL, P_METHOD, P_HEADERS, P_BODY, P_TIMEOUT, P_INTERVAL,
       P_READY_AFTER, P_UNTIL_READY, P_N };

static const ds_vfield_t  ds_probe_fields[P_N] = {
    { "type", ds_v_f_probe_type, DS_VF_REQUIRED },
    { "url", ds_v_f_url, 0 },
    { "method", ds_v_f_method, 0 },
    { "headers", ds_v_f_headers, 0 },
    { "body", ds_v_f_body, 0 },
    { "timeout", ds_v_f_probe_secs, 0 },
    { "interval", ds_v_f_probe_secs, 0 },
    { "ready_after", ds_v_f_ready_after, 0 },
    { "until_ready", ds_v_f_bool, 0 },
};


static int
ds_v_probe(ds_vctx_t *c, const cJSON *in, const cJSON *done, cJSON **out)
{
    int           rc, i;
    const char   *method;
    const cJSON  *prev;
    cJSON        *s[P_N] = { NULL };

    rc = ds_v_object(c, in, ds_probe_fields, P_N, NULL, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[P_URL] == NULL) {
        s[P_URL] = cJSON_CreateString("/");
    }
    if (s[P_METHOD] == NULL) {
        s[P_METHOD] = cJSON_CreateString("get");
    }
    if (s[P_HEADERS] == NULL) {
        s[P_HEADERS] = cJSON_CreateArray();
    }
    if (s[P_TIMEOUT] == NULL) {
        s[P_TIMEOUT] = cJSON_CreateNumber(DS_SPEC_PROBE_TIMEOUT);
    }
    if (s[P_INTERVAL] == NULL) {
        s[P_INTERVAL] = cJSON_CreateNumber(DS_SPEC_PROBE_INTERVAL);
    }
    if (s[P_READY_AFTER] == NULL) {
        s[P_READY_AFTER] = cJSON_CreateNumber(1);
    }
    if (s[P_UNTIL_READY] == NULL) {
        s[P_UNTIL_READY] = cJSON_CreateFalse();
    }

    for (i = 0; i < P_N; i++) {
        if (s[i] == NULL && i != P_BODY) {
            rc = ds_v_oom(c);
            goto done;
        }
    }

    method = s[P_METHOD]->valuestring;
    if (s[P_BODY]
        && (strcmp(method, "get") == 0 || strcmp(method, "head") == 0))
    {
        rc = ds_v_fail(c, ds_v_get(in, "body"), 0, "a request body is not "
                       "allowed with method %s", method);
        goto done;
    }

    rc = ds_v_assemble(c, ds_probe_fields, P_N, s, out);
    if (rc != DS_OK) {
        goto done;
    }

    for (i = 1, prev = done->child; prev; i++, prev = prev->next) {
        if (cJSON_Compare(prev, *out, 1)) {
            rc = ds_v_fail(c, in, 0, "duplicate probe (the same as probe "
                           "%d)", i);
            cJSON_Delete(*out);
            *out = NULL;
            goto done;
        }
    }

done:

    ds_v_free_slots(s, P_N);
    return rc;
}


static int
ds_v_f_probes(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_list(c, in, "probes", "a list of probes",
                     DS_SPEC_PROBES_MAX, ds_v_probe, out);
}


/* ---- profile fields ------------------------------------------------------ */

static int
ds_v_f_spot_policy(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    static const char *const  policies[] = { "on-demand", "spot", "auto" };

    return ds_v_enum_string(c, in, "spot_policy", policies, 3, out);
}


static int
ds_v_f_max_price(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_positive(c, in, "max_price", 1e9, out);
}


/* a list of distinct names; backends: lowercase words */
static int
ds_v_names(ds_vctx_t *c, const cJSON *in, cJSON **out, const char *what,
    int backend)
{
    int           i;
    size_t        old;
    const cJSON  *it, *p;
    ds_qbuf_t     qb;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a list of %ss, got %s", what,
                         ds_tname(in));
    }

    if (cJSON_GetArraySize(in) > DS_SPEC_LIST_MAX) {
        return ds_v_fail(c, in, 0, "too many %ss (more than %d)", what,
                         DS_SPEC_LIST_MAX);
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (i = 0, it = in->child; it; i++, it = it->next) {
        old = ds_v_pushi(c, i);

        if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
            ds_v_fail(c, it, 0, "expected a %s name, got %s", what,
                      cJSON_IsString(it) ? "an empty string" : ds_tname(it));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        if (ds_v_has_space(it->valuestring)
            || (backend
                && strspn(it->valuestring, "abcdefghijklmnopqrstuvwxyz"
                                           "0123456789-_")
                   != strlen(it->valuestring)))
        {
            ds_v_fail(c, it, 0, "invalid %s name %s", what,
                      ds_q(&qb, it->valuestring));
            ds_v_pop(c, old);
            return DS_EINVAL;
        }

        for (p = in->child; p != it; p = p->next) {
            if (strcmp(p->valuestring, it->valuestring) == 0) {
                ds_v_fail(c, it, 0, "duplicate %s %s", what,
                          ds_q(&qb, it->valuestring));
                ds_v_pop(c, old);
                return DS_EINVAL;
            }
        }

        ds_v_pop(c, old);

        if (ds_v_append(c, *out, cJSON_CreateString(it->valuestring))
            != DS_OK)
        {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static int
ds_v_f_backends(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_names(c, in, out, "backend", 1);
}


static int
ds_v_f_regions(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    return ds_v_names(c, in, out, "region", 0);
}


static const char *const  ds_events[] = {
    "no-capacity", "interruption", "error"
};


static int
ds_v_f_events(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           i, rc;
    size_t        old, k;
    unsigned      seen;
    const cJSON  *it;
    ds_qbuf_t     qb;

    if (!cJSON_IsArray(in)) {
        return ds_v_fail(c, in, 0, "expected a list of events, got %s",
                         ds_tname(in));
    }

    if (in->child == NULL) {
        return ds_v_fail(c, in, 0, "expected at least one event (omit "
                         "\"on_events\" to retry on all)");
    }

    seen = 0;

    for (i = 0, it = in->child; it; i++, it = it->next) {
        old = ds_v_pushi(c, i);
        rc = ds_v_enum(c, it, "event", ds_events, 3, &k);
        if (rc == DS_OK && (seen & (1u << k))) {
            rc = ds_v_fail(c, it, 0, "duplicate event %s",
                           ds_q(&qb, ds_events[k]));
        }
        ds_v_pop(c, old);

        if (rc != DS_OK) {
            return rc;
        }
        seen |= 1u << k;
    }

    *out = cJSON_CreateArray();
    if (*out == NULL) {
        return ds_v_oom(c);
    }

    for (k = 0; k < 3; k++) {
        if ((seen & (1u << k))
            && ds_v_append(c, *out, cJSON_CreateString(ds_events[k]))
               != DS_OK)
        {
            return DS_ERROR;
        }
    }

    return DS_OK;
}


static const ds_vfield_t  ds_retry_fields[] = {
    { "on_events", ds_v_f_events, 0 },
    { "duration", ds_v_f_duration, 0 },
};


/* false -> null; true -> every event for an hour */
static int
ds_v_f_retry(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int     rc;
    cJSON  *s[2] = { NULL, NULL };
    cJSON  *empty;

    if (cJSON_IsFalse(in)) {
        return DS_OK;
    }

    if (cJSON_IsTrue(in)) {
        rc = DS_OK;

    } else if (cJSON_IsObject(in)) {
        rc = ds_v_object(c, in, ds_retry_fields, 2, NULL, s);

    } else {
        return ds_v_fail(c, in, 0, "expected true, false or a mapping, "
                         "got %s", ds_tname(in));
    }

    if (rc == DS_OK && s[0] == NULL) {
        empty = cJSON_CreateArray();
        rc = empty ? DS_OK : ds_v_oom(c);
        if (rc == DS_OK) {
            cJSON_AddItemToArray(empty, cJSON_CreateString("no-capacity"));
            cJSON_AddItemToArray(empty, cJSON_CreateString("interruption"));
            cJSON_AddItemToArray(empty, cJSON_CreateString("error"));
            s[0] = empty;
            if (cJSON_GetArraySize(empty) != 3) {
                rc = ds_v_oom(c);
            }
        }
    }

    if (rc == DS_OK && s[1] == NULL) {
        s[1] = cJSON_CreateNumber(DS_SPEC_DEFAULT_RETRY);
        rc = s[1] ? DS_OK : ds_v_oom(c);
    }

    if (rc == DS_OK) {
        rc = ds_v_assemble(c, ds_retry_fields, 2, s, out);
    }

    ds_v_free_slots(s, 2);
    return rc;
}


static int
ds_v_f_gateway(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    if (cJSON_IsBool(in)) {
        return ds_v_f_bool(c, in, out);
    }

    if (!cJSON_IsString(in)) {
        return ds_v_fail(c, in, 0, "expected true, false or a gateway name, "
                         "got %s", ds_tname(in));
    }

    return ds_v_f_str(c, in, out);
}


/* ---- the service --------------------------------------------------------- */

enum { S_TYPE, S_NAME, S_PORT, S_COMMANDS, S_IMAGE, S_PYTHON, S_ENV,
       S_WORKING_DIR, S_ENTRYPOINT, S_SHELL, S_USER, S_RESOURCES,
       S_REPLICAS, S_SCALING, S_AUTH, S_HTTPS, S_MODEL, S_RATE_LIMITS,
       S_PROBES, S_SPOT_POLICY, S_MAX_PRICE, S_BACKENDS, S_REGIONS, S_RETRY,
       S_MAX_DURATION, S_STOP_DURATION, S_STRIP_PREFIX, S_GATEWAY, S_N };

static const ds_vfield_t  ds_service_fields[S_N] = {
    { "type", ds_v_f_type, DS_VF_REQUIRED },
    { "name", ds_v_f_name, 0 },
    { "port", ds_v_f_port, DS_VF_REQUIRED },
    { "commands", ds_v_f_commands, 0 },
    { "image", ds_v_f_image, 0 },
    { "python", ds_v_f_python, 0 },
    { "env", ds_v_f_env, 0 },
    { "working_dir", ds_v_f_working_dir, 0 },
    { "entrypoint", ds_v_f_text, 0 },
    { "shell", ds_v_f_shell, 0 },
    { "user", ds_v_f_user, 0 },
    { "resources", ds_v_f_resources, 0 },
    { "replicas", ds_v_f_replicas, 0 },
    { "scaling", ds_v_f_scaling, 0 },
    { "auth", ds_v_f_bool, 0 },
    { "https", ds_v_f_https, 0 },
    { "model", ds_v_f_model, 0 },
    { "rate_limits", ds_v_f_rate_limits, 0 },
    { "probes", ds_v_f_probes, 0 },
    { "spot_policy", ds_v_f_spot_policy, 0 },
    { "max_price", ds_v_f_max_price, 0 },
    { "backends", ds_v_f_backends, 0 },
    { "regions", ds_v_f_regions, 0 },
    { "retry", ds_v_f_retry, 0 },
    { "max_duration", ds_v_f_offable, 0 },
    { "stop_duration", ds_v_f_offable, 0 },
    { "strip_prefix", ds_v_f_bool, 0 },
    { "gateway", ds_v_f_gateway, 0 },
};

/* dstack fields we refuse by name rather than ignore, and misplaced ones */
static const ds_vunsup_t  ds_service_unsup[] = {
    { "volumes", "is not supported yet" },
    { "privileged", "is not supported yet" },
    { "registry_auth", "is not supported yet" },
    { "docker", "is not supported yet" },
    { "nvcc", "is not supported yet" },
    { "repos", "is not supported yet" },
    { "files", "is not supported yet" },
    { "dstack", "is not supported yet" },
    { "single_branch", "is not supported yet" },
    { "priority", "is not supported yet" },
    { "instance_types", "is not supported yet" },
    { "availability_zones", "is not supported yet" },
    { "reservation", "is not supported yet" },
    { "creation_policy", "is not supported yet" },
    { "idle_duration", "is not supported yet" },
    { "utilization_policy", "is not supported yet" },
    { "startup_order", "is not supported yet" },
    { "stop_criteria", "is not supported yet" },
    { "schedule", "is not supported yet" },
    { "fleets", "is not supported yet" },
    { "instances", "is not supported yet" },
    { "tags", "is not supported yet" },
    { "backend_options", "is not supported yet" },
    { "groups", "(replica groups) is not supported yet" },
    { "cpu", "belongs under \"resources\"" },
    { "memory", "belongs under \"resources\"" },
    { "disk", "belongs under \"resources\"" },
    { "gpu", "belongs under \"resources\"" },
    { "shm_size", "belongs under \"resources\"" },
    { "setup", "is deprecated: put the lines in \"commands\"" },
    { "home_dir", "is deprecated and not supported" },
    { NULL, NULL }
};


static int
ds_v_service(ds_vctx_t *c, const cJSON *in, cJSON **out)
{
    int           rc, ranged;
    size_t        old;
    const cJSON  *t, *r;
    cJSON        *s[S_N] = { NULL };
    ds_vrange_t   one;

    if (!cJSON_IsObject(in)) {
        return ds_v_fail(c, in, 0, "expected a mapping (a service "
                         "configuration), got %s", ds_tname(in));
    }

    /* the type first: for a task, its other keys are no news */
    t = cJSON_GetObjectItemCaseSensitive(in, "type");
    if (t == NULL) {
        return ds_v_fail(c, in, 0, "missing required field \"type\" "
                         "(expected \"type: service\")");
    }

    old = ds_v_push(c, "type");
    rc = ds_v_f_type(c, t, &s[S_TYPE]);
    ds_v_pop(c, old);
    ds_v_free_slots(s, 1);

    if (rc != DS_OK) {
        return rc;
    }

    rc = ds_v_object(c, in, ds_service_fields, S_N, ds_service_unsup, s);
    if (rc != DS_OK) {
        goto done;
    }

    if (s[S_PYTHON] && s[S_IMAGE]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "python"), 1,
                       "\"python\" and \"image\" are mutually exclusive");
        goto done;
    }

    if (s[S_IMAGE] == NULL
        && (s[S_COMMANDS] == NULL || s[S_COMMANDS]->child == NULL))
    {
        rc = ds_v_fail(c, in, 0, "either \"commands\" or \"image\" must be "
                       "set");
        goto done;
    }

    memset(&one, 0, sizeof(one));
    one.has_min = one.has_max = 1;
    one.min = one.max = 1;

    if (s[S_REPLICAS] == NULL
        && (rc = ds_v_range_json(c, &one, &s[S_REPLICAS])) != DS_OK)
    {
        goto done;
    }

    r = s[S_REPLICAS];
    ranged = cJSON_GetObjectItemCaseSensitive(r, "min")->valuedouble
             != cJSON_GetObjectItemCaseSensitive(r, "max")->valuedouble;

    if (ranged && s[S_SCALING] == NULL) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "replicas"), 0,
                       "replicas set to a range requires \"scaling\"");
        goto done;
    }

    if (!ranged && s[S_SCALING]) {
        rc = ds_v_fail(c, cJSON_GetObjectItemCaseSensitive(in, "scaling"), 1,
                       "\"scaling\" requires replicas set to a range (e.g. "
                       "1..4)");
        goto done;
    }

    if (s[S_RESOURCES] == NULL
        && (rc = ds_v_f_resources(c, NULL, &s[S_RESOURCES])) != DS_OK)
    {
        goto done;
    }

    if (s[S_COMMANDS] == NULL) {
        s[S_COMMANDS] = cJSON_CreateArray();
    }
    if (s[S_ENV] == NULL) {
        s[S_ENV] = cJSON_CreateObject();
    }
    if (s[S_AUTH] == NULL) {
        s[S_AUTH] = cJSON_CreateTrue();
    }
    if (s[S_HTTPS] == NULL) {
        s[S_HTTPS] = cJSON_CreateTrue();
    }
    if (s[S_RATE_LIMITS] == NULL) {
        s[S_RATE_LIMITS] = cJSON_CreateArray();
    }
    if (s[S_SPOT_POLICY] == NULL) {
        s[S_SPOT_POLICY] = cJSON_CreateString("on-demand");
    }
    if (s[S_MAX_DURATION] == NULL) {
        s[S_MAX_DURATION] = cJSON_CreateString("off");
    }
    if (s[S_STOP_DURATION] == NULL) {
        s[S_STOP_DURATION] = cJSON_CreateNumber(DS_SPEC_DEFAULT_STOP);
    }
    if (s[S_STRIP_PREFIX] == NULL) {
        s[S_STRIP_PREFIX] = cJSON_CreateTrue();
    }

    if (s[S_COMMANDS] == NULL || s[S_ENV] == NULL || s[S_AUTH] == NULL
        || s[S_HTTPS] == NULL || s[S_RATE_LIMITS] == NULL
        || s[S_SPOT_POLICY] == NULL || s[S_MAX_DURATION] == NULL
        || s[S_STOP_DURATION] == NULL || s[S_STRIP_PREFIX] == NULL)
    {
        rc = ds_v_oom(c);
        goto done;
    }

    rc = ds_v_assemble(c, ds_service_fields, S_N, s, out);

done:

    ds_v_free_slots(s, S_N);
    return rc;
}


/* ---- the API ------------------------------------------------------------- */

int
ds_spec_parse_yaml(const char *filename, const char *text, size_t len,
    cJSON **normalized, ds_err_t *err)
{
    int        rc;
    cJSON     *root;
    ds_locs_t  locs;
    ds_vctx_t  c;

    *normalized = NULL;
    root = NULL;

    if (filename == NULL) {
        filename = "<input>";
    }

    if (len > DS_SPEC_INPUT_MAX) {
        snprintf(err->msg, sizeof(err->msg), "%s:1:1: file too large: %zu "
                 "bytes (the limit is 1 MiB)", filename, len);
        return DS_EINVAL;
    }

    if (text == NULL) {
        text = "";
        len = 0;
    }

    memset(&locs, 0, sizeof(locs));

    rc = ds_y_load(filename, text, len, &locs, &root, err);
    if (rc != DS_OK) {
        ds_locs_free(&locs);
        return rc;
    }

    memset(&c, 0, sizeof(c));
    c.file = filename;
    c.locs = &locs;
    c.file_units = 1;
    c.err = err;

    rc = ds_v_service(&c, root, normalized);

    cJSON_Delete(root);
    ds_locs_free(&locs);

    return rc;
}


int
ds_spec_validate_json(const cJSON *in, cJSON **normalized, ds_err_t *err)
{
    ds_vctx_t  c;

    *normalized = NULL;

    memset(&c, 0, sizeof(c));
    c.err = err;

    return ds_v_service(&c, in, normalized);
}


static int
ds_spec_env_set(cJSON *env, const char *name, const char *value,
    ds_err_t *err)
{
    cJSON  *v;

    v = cJSON_CreateString(value);
    if (v == NULL) {
        goto oom;
    }

    if (cJSON_GetObjectItemCaseSensitive(env, name)) {
        if (!cJSON_ReplaceItemInObjectCaseSensitive(env, name, v)) {
            cJSON_Delete(v);
            goto oom;
        }
        return DS_OK;
    }

    if (cJSON_GetArraySize(env) >= DS_SPEC_ENV_MAX) {
        cJSON_Delete(v);
        snprintf(err->msg, sizeof(err->msg), "too many environment "
                 "variables (more than %d)", DS_SPEC_ENV_MAX);
        return DS_EINVAL;
    }

    if (!cJSON_AddItemToObject(env, name, v)) {
        cJSON_Delete(v);
        goto oom;
    }

    return DS_OK;

oom:

    snprintf(err->msg, sizeof(err->msg), "out of memory");
    return DS_ERROR;
}


int
ds_spec_resolve_env(cJSON *normalized, const char *const *overrides,
    char *(*getenv_fn)(const char *), ds_err_t *err)
{
    int          rc;
    char        *name;
    size_t       n;
    cJSON       *env, *it;
    const char  *o, *value;
    ds_qbuf_t    qb;

    if (getenv_fn == NULL) {
        getenv_fn = getenv;
    }

    env = cJSON_GetObjectItemCaseSensitive(normalized, "env");
    if (!cJSON_IsObject(env)) {
        snprintf(err->msg, sizeof(err->msg), "spec.env: expected a mapping");
        return DS_EINVAL;
    }

    for ( /* void */ ; overrides && *overrides; overrides++) {
        o = *overrides;
        n = ds_v_env_name(o);

        if (n == 0 || (o[n] != '\0' && o[n] != '=')) {
            snprintf(err->msg, sizeof(err->msg), "invalid environment "
                     "variable %s: expected NAME=VALUE or NAME",
                     ds_q(&qb, o));
            return DS_EINVAL;
        }

        name = strndup(o, n);
        if (name == NULL) {
            snprintf(err->msg, sizeof(err->msg), "out of memory");
            return DS_ERROR;
        }

        value = o[n] == '=' ? o + n + 1 : getenv_fn(name);

        if (value == NULL) {
            snprintf(err->msg, sizeof(err->msg), "environment variable %s "
                     "is not set", ds_q(&qb, name));
            free(name);
            return DS_EINVAL;
        }

        rc = ds_spec_env_set(env, name, value, err);
        free(name);

        if (rc != DS_OK) {
            return rc;
        }
    }

    for (it = env->child; it; it = it->next) {
        if (!cJSON_IsNull(it)) {
            continue;
        }

        value = getenv_fn(it->string);
        if (value == NULL) {
            snprintf(err->msg, sizeof(err->msg), "environment variable %s "
                     "is not set", ds_q(&qb, it->string));
            return DS_EINVAL;
        }

        /* replacing frees it; the new item takes its place in the list */
        name = strdup(it->string);
        if (name == NULL) {
            snprintf(err->msg, sizeof(err->msg), "out of memory");
            return DS_ERROR;
        }

        rc = ds_spec_env_set(env, name, value, err);
        it = cJSON_GetObjectItemCaseSensitive(env, name);
        free(name);

        if (rc != DS_OK) {
            return rc;
        }
    }

    return DS_OK;
}


/* ---- the typed view ------------------------------------------------------ */

typedef struct {
    const char            **commands;
    ds_spec_env_t          *env;
    const char            **gpu_names;
    ds_spec_rate_limit_t   *rate_limits;
    ds_spec_probe_t        *probes;
    ds_spec_header_t       *headers;
    const char            **backends;
    const char            **regions;
    char                   *probe_url;
    char                   *probe_body;     /* cJSON_free() */
} ds_spec_priv_t;


static const cJSON *
ds_j(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}


static const char *
ds_j_str(const cJSON *o, const char *k)
{
    const cJSON  *v;

    v = ds_j(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}


static double
ds_j_num(const cJSON *o, const char *k)
{
    const cJSON  *v;

    v = ds_j(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}


static void
ds_j_range(const cJSON *o, ds_spec_range_t *r)
{
    const cJSON  *v;

    r->min = 0;
    r->max = DS_SPEC_UNLIMITED;

    if (!cJSON_IsObject(o)) {
        return;
    }

    v = ds_j(o, "min");
    if (cJSON_IsNumber(v)) {
        r->min = (uint64_t) v->valuedouble;
    }

    v = ds_j(o, "max");
    if (cJSON_IsNumber(v)) {
        r->max = (uint64_t) v->valuedouble;
    }
}


/* a NULL-terminated copy of the list's strings (pointing into it) */
static const char **
ds_j_strs(const cJSON *a, size_t *n)
{
    size_t         i;
    const cJSON   *it;
    const char   **v;

    *n = (size_t) cJSON_GetArraySize(a);

    v = calloc(*n + 1, sizeof(char *));
    if (v == NULL) {
        return NULL;
    }

    for (i = 0, it = a ? a->child : NULL; it; i++, it = it->next) {
        v[i] = it->valuestring;
    }

    return v;
}


static int
ds_spec_enum(const char *s, const char *const *w, size_t n)
{
    size_t  i;

    for (i = 0; s && i < n; i++) {
        if (strcmp(s, w[i]) == 0) {
            return (int) i;
        }
    }
    return 0;
}


static int
ds_spec_fill_resources(ds_spec_t *spec, ds_spec_priv_t *priv,
    const cJSON *res)
{
    size_t                    i;
    const char               *a;
    const cJSON              *cpu, *gpu;
    static const char *const  vendors[] = {
        "", "nvidia", "amd", "google", "intel", "tenstorrent"
    };

    cpu = ds_j(res, "cpu");
    a = ds_j_str(cpu, "arch");
    spec->resources.cpu_arch = a == NULL ? DS_SPEC_ARCH_ANY
                               : strcmp(a, "x86") == 0 ? DS_SPEC_ARCH_X86
                               : DS_SPEC_ARCH_ARM;
    ds_j_range(ds_j(cpu, "count"), &spec->resources.cpu);
    ds_j_range(ds_j(res, "memory"), &spec->resources.memory_mb);
    ds_j_range(ds_j(res, "disk"), &spec->resources.disk_mb);
    spec->resources.shm_size_mb = (uint64_t) ds_j_num(res, "shm_size");

    gpu = ds_j(res, "gpu");
    spec->resources.gpu.vendor = ds_spec_enum(ds_j_str(gpu, "vendor"),
                                              vendors, 6);
    ds_j_range(ds_j(gpu, "count"), &spec->resources.gpu.count);
    ds_j_range(ds_j(gpu, "memory"), &spec->resources.gpu.memory_mb);
    ds_j_range(ds_j(gpu, "total_memory"),
               &spec->resources.gpu.total_memory_mb);

    if (cJSON_IsArray(ds_j(gpu, "name"))) {
        priv->gpu_names = ds_j_strs(ds_j(gpu, "name"), &i);
        if (priv->gpu_names == NULL) {
            return DS_ERROR;
        }
        spec->resources.gpu.names = priv->gpu_names;
        spec->resources.gpu.n_names = i;
    }

    return DS_OK;
}


static int
ds_spec_fill_rate_limits(ds_spec_t *spec, ds_spec_priv_t *priv,
    const cJSON *a)
{
    size_t                 i;
    const cJSON           *it, *key;
    ds_spec_rate_limit_t  *rl;

    priv->rate_limits = calloc((size_t) cJSON_GetArraySize(a) + 1,
                               sizeof(ds_spec_rate_limit_t));
    if (priv->rate_limits == NULL) {
        return DS_ERROR;
    }

    for (i = 0, it = a->child; it; i++, it = it->next) {
        rl = &priv->rate_limits[i];
        key = ds_j(it, "key");

        rl->prefix = ds_j_str(it, "prefix");
        rl->header = ds_j_str(key, "header");
        rl->key_type = rl->header ? DS_RL_KEY_HEADER : DS_RL_KEY_IP;
        rl->rps = ds_j_num(it, "rps");
        rl->rps_milli = (uint32_t) (rl->rps * 1000 + 0.5);
        rl->burst = (uint32_t) ds_j_num(it, "burst");
    }

    spec->rate_limits = priv->rate_limits;
    spec->n_rate_limits = i;

    return DS_OK;
}


static int
ds_spec_fill_probes(ds_spec_t *spec, ds_spec_priv_t *priv, const cJSON *a)
{
    size_t            i, nh;
    const cJSON      *it, *h;
    ds_spec_probe_t  *p;

    nh = 0;
    for (it = a->child; it; it = it->next) {
        nh += (size_t) cJSON_GetArraySize(ds_j(it, "headers"));
    }

    priv->probes = calloc((size_t) cJSON_GetArraySize(a) + 1,
                          sizeof(ds_spec_probe_t));
    priv->headers = calloc(nh + 1, sizeof(ds_spec_header_t));
    if (priv->probes == NULL || priv->headers == NULL) {
        return DS_ERROR;
    }

    nh = 0;

    for (i = 0, it = a->child; it; i++, it = it->next) {
        p = &priv->probes[i];

        p->url = ds_j_str(it, "url");
        p->method = ds_spec_enum(ds_j_str(it, "method"), ds_methods,
                                 DS_NFIELDS(ds_methods));
        p->body = ds_j_str(it, "body");
        p->timeout = (uint32_t) ds_j_num(it, "timeout");
        p->interval = (uint32_t) ds_j_num(it, "interval");
        p->ready_after = (uint32_t) ds_j_num(it, "ready_after");
        p->until_ready = cJSON_IsTrue(ds_j(it, "until_ready"));

        p->headers = &priv->headers[nh];
        for (h = ds_j(it, "headers")->child; h; h = h->next) {
            priv->headers[nh].name = ds_j_str(h, "name");
            priv->headers[nh].value = ds_j_str(h, "value");
            nh++;
            p->n_headers++;
        }
    }

    spec->probes = priv->probes;
    spec->n_probes = i;

    return DS_OK;
}


/* dstack's default for an openai model: one chat completion token */
static int
ds_spec_model_probe(ds_spec_t *spec, ds_spec_priv_t *priv)
{
    int                             ok;
    size_t                          n;
    cJSON                          *body, *msgs, *msg;
    static const ds_spec_header_t   json_header = {
        "Content-Type", "application/json"
    };

    n = strlen(spec->model.prefix);
    while (n > 0 && spec->model.prefix[n - 1] == '/') {
        n--;
    }

    priv->probe_url = malloc(n + sizeof("/chat/completions"));
    priv->probes = calloc(2, sizeof(ds_spec_probe_t));
    if (priv->probe_url == NULL || priv->probes == NULL) {
        return DS_ERROR;
    }

    memcpy(priv->probe_url, spec->model.prefix, n);
    memcpy(priv->probe_url + n, "/chat/completions",
           sizeof("/chat/completions"));

    /* {"model":NAME,"messages":[{"role":"user","content":"hi"}],
        "max_tokens":1} */
    body = cJSON_CreateObject();
    ok = body != NULL
         && cJSON_AddStringToObject(body, "model", spec->model.name) != NULL
         && (msgs = cJSON_AddArrayToObject(body, "messages")) != NULL
         && (msg = cJSON_CreateObject()) != NULL;

    if (ok && !cJSON_AddItemToArray(msgs, msg)) {
        cJSON_Delete(msg);
        ok = 0;
    }

    ok = ok
         && cJSON_AddStringToObject(msg, "role", "user") != NULL
         && cJSON_AddStringToObject(msg, "content", "hi") != NULL
         && cJSON_AddNumberToObject(body, "max_tokens", 1) != NULL
         && (priv->probe_body = cJSON_PrintUnformatted(body)) != NULL;

    cJSON_Delete(body);

    if (!ok) {
        return DS_ERROR;
    }

    priv->probes[0].url = priv->probe_url;
    priv->probes[0].method = DS_SPEC_METHOD_POST;
    priv->probes[0].headers = &json_header;
    priv->probes[0].n_headers = 1;
    priv->probes[0].body = priv->probe_body;
    priv->probes[0].timeout = DS_SPEC_MODEL_PROBE_TIMEOUT;
    priv->probes[0].interval = DS_SPEC_PROBE_INTERVAL;
    priv->probes[0].ready_after = 1;

    spec->probes = priv->probes;
    spec->n_probes = 1;
    spec->probes_default = 1;

    return DS_OK;
}


int
ds_spec_from_json(const cJSON *normalized, ds_spec_t *spec, ds_err_t *err)
{
    int                       rc;
    size_t                    i;
    const char               *s;
    const cJSON              *j, *v, *it;
    ds_spec_priv_t           *priv;
    static const char *const  spot[] = { "on-demand", "spot", "auto" };

    memset(spec, 0, sizeof(*spec));

    rc = ds_spec_validate_json(normalized, &spec->json, err);
    if (rc != DS_OK) {
        return rc;
    }

    priv = calloc(1, sizeof(ds_spec_priv_t));
    if (priv == NULL) {
        goto oom;
    }
    spec->priv = priv;
    j = spec->json;

    spec->name = ds_j_str(j, "name");
    spec->port = (uint16_t) ds_j_num(ds_j(j, "port"), "container_port");
    spec->local_port = (uint16_t) ds_j_num(ds_j(j, "port"), "local_port");

    priv->commands = ds_j_strs(ds_j(j, "commands"), &spec->n_commands);
    if (priv->commands == NULL) {
        goto oom;
    }
    spec->commands = priv->commands;

    spec->image = ds_j_str(j, "image");
    spec->python = ds_j_str(j, "python");

    v = ds_j(j, "env");
    priv->env = calloc((size_t) cJSON_GetArraySize(v) + 1,
                       sizeof(ds_spec_env_t));
    if (priv->env == NULL) {
        goto oom;
    }
    for (i = 0, it = v->child; it; i++, it = it->next) {
        priv->env[i].name = it->string;
        priv->env[i].value = cJSON_IsString(it) ? it->valuestring : NULL;
    }
    spec->env = priv->env;
    spec->n_env = i;

    spec->working_dir = ds_j_str(j, "working_dir");
    spec->entrypoint = ds_j_str(j, "entrypoint");
    spec->shell = ds_j_str(j, "shell");
    spec->user = ds_j_str(j, "user");

    if (ds_spec_fill_resources(spec, priv, ds_j(j, "resources")) != DS_OK) {
        goto oom;
    }

    ds_j_range(ds_j(j, "replicas"), &spec->replicas);

    v = ds_j(j, "scaling");
    if (cJSON_IsObject(v)) {
        spec->scaling.enabled = 1;
        s = ds_j_str(v, "metric");
        spec->scaling.metric = strcmp(s, "inflight") == 0
                               ? DS_SPEC_METRIC_INFLIGHT : DS_SPEC_METRIC_RPS;
        spec->scaling.target = ds_j_num(v, "target");
        spec->scaling.window = (uint32_t) ds_j_num(v, "window");
        spec->scaling.scale_up_delay = (uint32_t) ds_j_num(v,
                                                           "scale_up_delay");
        spec->scaling.scale_down_delay =
            (uint32_t) ds_j_num(v, "scale_down_delay");
    }

    spec->auth = cJSON_IsTrue(ds_j(j, "auth"));
    v = ds_j(j, "https");
    spec->https = cJSON_IsString(v) ? DS_SPEC_HTTPS_AUTO
                  : cJSON_IsTrue(v) ? DS_SPEC_HTTPS_ON : DS_SPEC_HTTPS_OFF;

    v = ds_j(j, "model");
    if (cJSON_IsObject(v)) {
        spec->model.enabled = 1;
        spec->model.name = ds_j_str(v, "name");
        spec->model.format = strcmp(ds_j_str(v, "format"), "tgi") == 0
                             ? DS_MODEL_TGI : DS_MODEL_OPENAI;
        spec->model.prefix = ds_j_str(v, "prefix");
        spec->model.chat_template = ds_j_str(v, "chat_template");
        spec->model.eos_token = ds_j_str(v, "eos_token");
    }

    if (ds_spec_fill_rate_limits(spec, priv, ds_j(j, "rate_limits"))
        != DS_OK)
    {
        goto oom;
    }

    v = ds_j(j, "probes");
    if (cJSON_IsArray(v)) {
        if (ds_spec_fill_probes(spec, priv, v) != DS_OK) {
            goto oom;
        }

    } else if (spec->model.enabled && spec->model.format == DS_MODEL_OPENAI) {
        if (ds_spec_model_probe(spec, priv) != DS_OK) {
            goto oom;
        }
    }

    spec->spot_policy = ds_spec_enum(ds_j_str(j, "spot_policy"), spot, 3);
    spec->max_price = ds_j_num(j, "max_price");

    if (cJSON_IsArray(ds_j(j, "backends"))) {
        priv->backends = ds_j_strs(ds_j(j, "backends"), &spec->n_backends);
        if (priv->backends == NULL) {
            goto oom;
        }
        spec->backends = priv->backends;
    }

    if (cJSON_IsArray(ds_j(j, "regions"))) {
        priv->regions = ds_j_strs(ds_j(j, "regions"), &spec->n_regions);
        if (priv->regions == NULL) {
            goto oom;
        }
        spec->regions = priv->regions;
    }

    v = ds_j(j, "retry");
    if (cJSON_IsObject(v)) {
        spec->retry.enabled = 1;
        spec->retry.duration = (uint32_t) ds_j_num(v, "duration");
        for (it = ds_j(v, "on_events")->child; it; it = it->next) {
            spec->retry.on_events |= 1u << ds_spec_enum(it->valuestring,
                                                        ds_events, 3);
        }
    }

    v = ds_j(j, "max_duration");
    spec->max_duration = cJSON_IsString(v) ? DS_SPEC_OFF
                                           : (uint32_t) v->valuedouble;
    v = ds_j(j, "stop_duration");
    spec->stop_duration = cJSON_IsString(v) ? DS_SPEC_OFF
                                            : (uint32_t) v->valuedouble;

    spec->strip_prefix = cJSON_IsTrue(ds_j(j, "strip_prefix"));

    v = ds_j(j, "gateway");
    if (cJSON_IsString(v)) {
        spec->gateway = DS_SPEC_GATEWAY_NAMED;
        spec->gateway_name = v->valuestring;
    } else if (cJSON_IsBool(v)) {
        spec->gateway = cJSON_IsTrue(v) ? DS_SPEC_GATEWAY_ANY
                                        : DS_SPEC_GATEWAY_NONE;
    }

    return DS_OK;

oom:

    snprintf(err->msg, sizeof(err->msg), "out of memory");
    return DS_ERROR;
}


void
ds_spec_free(ds_spec_t *spec)
{
    ds_spec_priv_t  *priv;

    priv = spec->priv;

    if (priv) {
        free(priv->commands);
        free(priv->env);
        free(priv->gpu_names);
        free(priv->rate_limits);
        free(priv->probes);
        free(priv->headers);
        free(priv->backends);
        free(priv->regions);
        free(priv->probe_url);
        cJSON_free(priv->probe_body);
        free(priv);
    }

    cJSON_Delete(spec->json);
    memset(spec, 0, sizeof(*spec));
}
