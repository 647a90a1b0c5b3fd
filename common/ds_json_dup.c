/*
 * Duplicate keys in a parsed JSON document (ds_json_dup.h).
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_json_dup.h"


#define DUP_PATH_MAX    256

struct dup_key {
    const char  *name;
    size_t       pos;           /* the member's place in its object */
};

struct dup_walk {
    char        path[DUP_PATH_MAX];
    size_t      len;            /* of path; may exceed it (truncated) */
    char       *err;
    size_t      n;
};


static int
dup_key_cmp(const void *a, const void *b)
{
    const struct dup_key  *x = a, *y = b;
    int                    c;

    c = strcmp(x->name, y->name);
    if (c != 0) {
        return c;
    }
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}


/*
 * The first member (in the object's order) whose key an earlier member
 * has, or NULL; *oom on an allocation failure.  Small objects pairwise;
 * large ones sorted, the later of two equal neighbours being a repeat.
 */
static const cJSON *
dup_in_object(const cJSON *obj, int *oom)
{
    const cJSON      *a, *b;
    struct dup_key   *keys;
    size_t            k = 0, i, first;

    for (a = obj->child; a != NULL; a = a->next) {
        k++;
    }
    if (k <= DS_JSON_DUP_LINEAR) {
        for (b = obj->child; b != NULL; b = b->next) {
            for (a = obj->child; a != b; a = a->next) {
                if (a->string != NULL && b->string != NULL
                    && strcmp(a->string, b->string) == 0)
                {
                    return b;
                }
            }
        }
        return NULL;
    }

    keys = malloc(k * sizeof(struct dup_key));
    if (keys == NULL) {
        *oom = 1;
        return NULL;
    }
    k = 0;
    for (a = obj->child; a != NULL; a = a->next) {
        keys[k].name = a->string != NULL ? a->string : "";
        keys[k].pos = k;
        k++;
    }
    qsort(keys, k, sizeof(struct dup_key), dup_key_cmp);

    first = k;
    for (i = 1; i < k; i++) {
        if (keys[i].pos < first && strcmp(keys[i].name, keys[i - 1].name)
            == 0)
        {
            first = keys[i].pos;
        }
    }
    free(keys);
    if (first == k) {
        return NULL;
    }
    for (a = obj->child; first > 0; a = a->next) {
        first--;
    }
    return a;
}


/* path += ".name" or "[i]"; the old length to restore */
static size_t
dup_push(struct dup_walk *w, const char *name, int index)
{
    size_t  old = w->len;
    int     r;

    if (w->len < sizeof(w->path)) {
        if (name != NULL) {
            r = snprintf(w->path + w->len, sizeof(w->path) - w->len,
                         ".%.80s", name);
        } else {
            r = snprintf(w->path + w->len, sizeof(w->path) - w->len,
                         "[%d]", index);
        }
        w->len += r > 0 ? (size_t) r : 0;
    }
    return old;
}


static void
dup_pop(struct dup_walk *w, size_t old)
{
    w->len = old;
    if (old < sizeof(w->path)) {
        w->path[old] = '\0';
    }
}


static int
dup_walk(struct dup_walk *w, const cJSON *node)
{
    const cJSON  *it, *dup;
    size_t        old;
    int           oom = 0, i = 0;

    if (cJSON_IsObject(node)) {
        dup = dup_in_object(node, &oom);
        if (oom) {
            snprintf(w->err, w->n, "%s: out of memory", w->path);
            return -1;
        }
        if (dup != NULL) {
            snprintf(w->err, w->n, "%s%s: duplicate key \"%.80s\"",
                     w->path, w->len >= sizeof(w->path) ? "..." : "",
                     dup->string);
            return -1;
        }
    } else if (!cJSON_IsArray(node)) {
        return 0;
    }

    for (it = node->child; it != NULL; it = it->next, i++) {
        if (!cJSON_IsObject(it) && !cJSON_IsArray(it)) {
            continue;
        }
        old = dup_push(w, cJSON_IsObject(node) ? it->string : NULL, i);
        if (dup_walk(w, it) != 0) {
            return -1;
        }
        dup_pop(w, old);
    }
    return 0;
}


int
ds_json_dup_check(const cJSON *root, const char *base, char *err, size_t n)
{
    struct dup_walk  w;

    if (root == NULL) {
        return 0;
    }
    snprintf(w.path, sizeof(w.path), "%.80s", base);
    w.len = strlen(w.path);
    w.err = err;
    w.n = n;
    return dup_walk(&w, root);
}
