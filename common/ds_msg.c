/*
 * Pieces of error messages: see ds_msg.h.
 */

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ds_msg.h"


const char *
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
        if (((ch & 0xc0) != 0x80 && n == DS_MSG_QUOTE_MAX)
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


const char *
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


void
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


/* fewer edits than s has letters: "ab" is not a typo of "cd" */
const char *
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
