/*
 * Secret names and references (ds_secret.h): the scanner both the CLI's
 * validator and controld's resolver use, so that what one accepts the
 * other reads the same way.
 */

#include <stdio.h>
#include <string.h>

#include "ds_secret.h"


#define DS_REF_OPEN             "${{"
#define DS_REF_CLOSE            "}}"
#define DS_REF_NS               "secrets."
#define DS_REF_QUOTE_MAX        60      /* reference text in a message */


int
ds_secret_name_ok(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || len > DS_SECRET_NAME_MAX) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
        {
            return 0;
        }
    }
    return 1;
}


/* the reference at p (len bytes from "${{" to "}}" included): its name */
static int
ds_ref_name(const char *p, size_t len, const char **name, size_t *nlen,
    char *err, size_t n)
{
    const char  *a, *b;
    int          q;

    a = p + sizeof(DS_REF_OPEN) - 1;
    b = p + len - (sizeof(DS_REF_CLOSE) - 1);
    while (a < b && (*a == ' ' || *a == '\t')) {
        a++;
    }
    while (b > a && (b[-1] == ' ' || b[-1] == '\t')) {
        b--;
    }

    q = len > DS_REF_QUOTE_MAX ? DS_REF_QUOTE_MAX : (int) len;

    if ((size_t) (b - a) < sizeof(DS_REF_NS) - 1
        || memcmp(a, DS_REF_NS, sizeof(DS_REF_NS) - 1) != 0)
    {
        snprintf(err, n, "invalid reference \"%.*s%s\": expected "
                 "${{ secrets.NAME }}", q, p, (size_t) q < len ? "..." : "");
        return -1;
    }
    a += sizeof(DS_REF_NS) - 1;

    if (!ds_secret_name_ok(a, (size_t) (b - a))) {
        snprintf(err, n, "invalid reference \"%.*s%s\": a secret's name is "
                 "1 to %d letters, digits, \"_\" or \"-\"", q, p,
                 (size_t) q < len ? "..." : "", DS_SECRET_NAME_MAX);
        return -1;
    }

    *name = a;
    *nlen = (size_t) (b - a);
    return 0;
}


int
ds_secret_refs(const char *s, ds_ref_fn fn, void *arg, char *err, size_t n)
{
    const char  *p, *text, *end, *name;
    size_t       nlen, rest;
    int          rc;

    text = s;
    p = s;

    for ( ;; ) {
        p = strchr(p, '$');
        if (p == NULL) {
            break;
        }

        if (p[1] == '$') {
            /* "$$": the text up to and with the first "$" */
            if (fn != NULL && (rc = fn(arg, DS_REF_TEXT, text,
                                       (size_t) (p + 1 - text))) != 0)
            {
                return rc;
            }
            p += 2;
            text = p;
            continue;
        }

        if (strncmp(p, DS_REF_OPEN, sizeof(DS_REF_OPEN) - 1) != 0) {
            p++;
            continue;
        }

        end = strstr(p + sizeof(DS_REF_OPEN) - 1, DS_REF_CLOSE);
        if (end == NULL) {
            rest = strlen(p);
            snprintf(err, n, "unterminated reference \"%.*s%s\" (no \"}}\")",
                     rest > DS_REF_QUOTE_MAX ? DS_REF_QUOTE_MAX : (int) rest,
                     p, rest > DS_REF_QUOTE_MAX ? "..." : "");
            return -1;
        }
        end += sizeof(DS_REF_CLOSE) - 1;

        if (ds_ref_name(p, (size_t) (end - p), &name, &nlen, err, n) != 0) {
            return -1;
        }

        if (fn != NULL) {
            if (p > text
                && (rc = fn(arg, DS_REF_TEXT, text, (size_t) (p - text))) != 0)
            {
                return rc;
            }
            if ((rc = fn(arg, DS_REF_SECRET, name, nlen)) != 0) {
                return rc;
            }
        }
        p = end;
        text = p;
    }

    if (fn != NULL && *text != '\0') {
        return fn(arg, DS_REF_TEXT, text, strlen(text));
    }
    return 0;
}


static int
ds_ref_count(void *arg, int kind, const char *p, size_t len)
{
    (void) p;
    (void) len;
    if (kind == DS_REF_SECRET) {
        (*(int *) arg)++;
    }
    return 0;
}


int
ds_secret_has_refs(const char *s)
{
    char  err[16];
    int   count = 0;

    if (ds_secret_refs(s, ds_ref_count, &count, err, sizeof(err)) != 0) {
        return 0;
    }
    return count > 0;
}
