/*
 * Validating JSON scanner (RFC 8259), see ds_json_scan.h.  Recursive
 * descent bounded by DS_JSON_MAX_DEPTH; every read is bounds-checked.
 */

#include <string.h>

#include "ds_json_scan.h"


typedef struct {
    const char     *p;
    const char     *end;
    const char     *start;
    int             depth;
} ds_scan_t;


static int ds_scan_value(ds_scan_t *s);


static void
ds_scan_ws(ds_scan_t *s)
{
    while (s->p < s->end
           && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n'
               || *s->p == '\r'))
    {
        s->p++;
    }
}


static int
ds_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


/* at the opening quote; leaves p after the closing one */
static int
ds_scan_string(ds_scan_t *s, const char **raw, size_t *len, int *escaped)
{
    int          i;
    const char  *begin;

    s->p++;
    begin = s->p;
    *escaped = 0;

    while (s->p < s->end) {
        unsigned char c = (unsigned char) *s->p;

        if (c == '"') {
            *raw = begin;
            *len = (size_t) (s->p - begin);
            s->p++;
            return 0;
        }

        if (c < 0x20) {
            return -1;
        }

        if (c != '\\') {
            s->p++;
            continue;
        }

        *escaped = 1;
        s->p++;

        if (s->p >= s->end) {
            return -1;
        }

        switch (*s->p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            s->p++;
            break;

        case 'u':
            if (s->end - s->p < 5) {
                return -1;
            }

            for (i = 1; i <= 4; i++) {
                if (ds_hex(s->p[i]) < 0) {
                    return -1;
                }
            }

            s->p += 5;
            break;

        default:
            return -1;
        }
    }

    return -1;
}


static int
ds_scan_digits(ds_scan_t *s)
{
    const char  *begin = s->p;

    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
        s->p++;
    }

    return s->p > begin ? 0 : -1;
}


static int
ds_scan_number(ds_scan_t *s)
{
    if (*s->p == '-') {
        s->p++;
    }

    if (s->p < s->end && *s->p == '0') {
        s->p++;

    } else if (ds_scan_digits(s) != 0) {
        return -1;
    }

    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (ds_scan_digits(s) != 0) {
            return -1;
        }
    }

    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) {
            s->p++;
        }
        if (ds_scan_digits(s) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
ds_scan_literal(ds_scan_t *s, const char *lit)
{
    size_t  n = strlen(lit);

    if ((size_t) (s->end - s->p) < n || memcmp(s->p, lit, n) != 0) {
        return -1;
    }

    s->p += n;
    return 0;
}


/* the members of an object or the elements of an array */
static int
ds_scan_container(ds_scan_t *s, char close, int is_object)
{
    int          esc;
    size_t       len;
    const char  *raw;

    if (++s->depth > DS_JSON_MAX_DEPTH) {
        return -1;
    }

    s->p++;
    ds_scan_ws(s);

    if (s->p < s->end && *s->p == close) {
        s->p++;
        s->depth--;
        return 0;
    }

    for ( ;; ) {
        if (is_object) {
            if (s->p >= s->end || *s->p != '"'
                || ds_scan_string(s, &raw, &len, &esc) != 0)
            {
                return -1;
            }

            ds_scan_ws(s);

            if (s->p >= s->end || *s->p != ':') {
                return -1;
            }

            s->p++;
        }

        if (ds_scan_value(s) != 0) {
            return -1;
        }

        ds_scan_ws(s);

        if (s->p >= s->end) {
            return -1;
        }

        if (*s->p == close) {
            s->p++;
            s->depth--;
            return 0;
        }

        if (*s->p != ',') {
            return -1;
        }

        s->p++;
        ds_scan_ws(s);
    }
}


static int
ds_scan_value(ds_scan_t *s)
{
    int          esc;
    size_t       len;
    const char  *raw;

    ds_scan_ws(s);

    if (s->p >= s->end) {
        return -1;
    }

    switch (*s->p) {
    case '{':
        return ds_scan_container(s, '}', 1);
    case '[':
        return ds_scan_container(s, ']', 0);
    case '"':
        return ds_scan_string(s, &raw, &len, &esc);
    case 't':
        return ds_scan_literal(s, "true");
    case 'f':
        return ds_scan_literal(s, "false");
    case 'n':
        return ds_scan_literal(s, "null");
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            return ds_scan_number(s);
        }
        return -1;
    }
}


/* a key matches when its resolved text equals `key` */
static int
ds_key_equal(const char *raw, size_t len, int escaped, const char *key,
    size_t klen)
{
    char    buf[128];
    size_t  n;

    if (!escaped) {
        return len == klen && memcmp(raw, key, klen) == 0;
    }

    if (len > sizeof(buf)) {
        return 0;
    }

    n = ds_json_unescape(raw, len, buf);

    return n == klen && memcmp(buf, key, klen) == 0;
}


int
ds_json_find_string(const char *buf, size_t len, const char *key,
    const char **val, size_t *val_len, int *escaped, size_t *err_off)
{
    int          found, kesc, vesc, rc;
    size_t       klen, rlen, vlen;
    ds_scan_t    s;
    const char  *raw, *vraw;

    s.start = buf;
    s.p = buf;
    s.end = buf + len;
    s.depth = 1;
    klen = strlen(key);
    found = 0;
    rc = DS_JSON_MISSING;

    ds_scan_ws(&s);

    if (s.p >= s.end || *s.p != '{') {
        goto invalid;
    }

    s.p++;
    ds_scan_ws(&s);

    if (s.p < s.end && *s.p == '}') {
        s.p++;
        goto tail;
    }

    for ( ;; ) {
        if (s.p >= s.end || *s.p != '"'
            || ds_scan_string(&s, &raw, &rlen, &kesc) != 0)
        {
            goto invalid;
        }

        ds_scan_ws(&s);

        if (s.p >= s.end || *s.p != ':') {
            goto invalid;
        }

        s.p++;
        ds_scan_ws(&s);

        if (ds_key_equal(raw, rlen, kesc, key, klen)) {
            if (found++) {
                goto invalid;   /* a second "model": ambiguous */
            }

            if (s.p < s.end && *s.p == '"') {
                if (ds_scan_string(&s, &vraw, &vlen, &vesc) != 0) {
                    goto invalid;
                }

                *val = vraw;
                *val_len = vlen;
                *escaped = vesc;
                rc = DS_JSON_OK;

            } else {
                if (ds_scan_value(&s) != 0) {
                    goto invalid;
                }

                rc = DS_JSON_NOT_STRING;
            }

        } else if (ds_scan_value(&s) != 0) {
            goto invalid;
        }

        ds_scan_ws(&s);

        if (s.p >= s.end) {
            goto invalid;
        }

        if (*s.p == '}') {
            s.p++;
            break;
        }

        if (*s.p != ',') {
            goto invalid;
        }

        s.p++;
        ds_scan_ws(&s);
    }

tail:

    ds_scan_ws(&s);

    if (s.p != s.end) {
        goto invalid;
    }

    return rc;

invalid:

    if (err_off) {
        *err_off = (size_t) (s.p - s.start);
    }

    return DS_JSON_INVALID;
}


int
ds_json_find_raw(const char *buf, size_t len, const char *const *keys,
    size_t n, ds_json_span_t *spans)
{
    int          kesc;
    size_t       i, rlen;
    ds_scan_t    s;
    const char  *raw, *value;

    s.start = buf;
    s.p = buf;
    s.end = buf + len;
    s.depth = 1;

    for (i = 0; i < n; i++) {
        spans[i].data = NULL;
        spans[i].len = 0;
    }

    ds_scan_ws(&s);

    if (s.p >= s.end || *s.p != '{') {
        return DS_JSON_INVALID;
    }

    s.p++;
    ds_scan_ws(&s);

    if (s.p < s.end && *s.p == '}') {
        return DS_JSON_OK;
    }

    for ( ;; ) {
        if (s.p >= s.end || *s.p != '"'
            || ds_scan_string(&s, &raw, &rlen, &kesc) != 0)
        {
            return DS_JSON_INVALID;
        }

        ds_scan_ws(&s);

        if (s.p >= s.end || *s.p != ':') {
            return DS_JSON_INVALID;
        }

        s.p++;
        ds_scan_ws(&s);
        value = s.p;

        if (ds_scan_value(&s) != 0) {
            return DS_JSON_INVALID;
        }

        for (i = 0; i < n; i++) {
            if (spans[i].data == NULL
                && ds_key_equal(raw, rlen, kesc, keys[i], strlen(keys[i])))
            {
                spans[i].data = value;
                spans[i].len = (size_t) (s.p - value);
                break;
            }
        }

        ds_scan_ws(&s);

        if (s.p >= s.end) {
            return DS_JSON_INVALID;
        }

        if (*s.p == '}') {
            return DS_JSON_OK;
        }

        if (*s.p != ',') {
            return DS_JSON_INVALID;
        }

        s.p++;
        ds_scan_ws(&s);
    }
}


static size_t
ds_utf8_put(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char) cp;
        return 1;
    }

    if (cp < 0x800) {
        out[0] = (char) (0xc0 | (cp >> 6));
        out[1] = (char) (0x80 | (cp & 0x3f));
        return 2;
    }

    if (cp < 0x10000) {
        out[0] = (char) (0xe0 | (cp >> 12));
        out[1] = (char) (0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char) (0x80 | (cp & 0x3f));
        return 3;
    }

    out[0] = (char) (0xf0 | (cp >> 18));
    out[1] = (char) (0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char) (0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char) (0x80 | (cp & 0x3f));
    return 4;
}


static long
ds_hex4(const char *p)
{
    int   i, h;
    long  v = 0;

    for (i = 0; i < 4; i++) {
        h = ds_hex(p[i]);
        if (h < 0) {
            return -1;
        }
        v = v * 16 + h;
    }

    return v;
}


size_t
ds_json_unescape(const char *raw, size_t len, char *out)
{
    long         cp, lo;
    char        *o = out;
    const char  *p = raw, *end = raw + len;

    while (p < end) {
        if (*p != '\\') {
            *o++ = *p++;
            continue;
        }

        if (++p >= end) {
            return (size_t) -1;
        }

        switch (*p++) {
        case '"':  *o++ = '"';  break;
        case '\\': *o++ = '\\'; break;
        case '/':  *o++ = '/';  break;
        case 'b':  *o++ = '\b'; break;
        case 'f':  *o++ = '\f'; break;
        case 'n':  *o++ = '\n'; break;
        case 'r':  *o++ = '\r'; break;
        case 't':  *o++ = '\t'; break;

        case 'u':
            if (end - p < 4 || (cp = ds_hex4(p)) < 0) {
                return (size_t) -1;
            }

            p += 4;

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u'
                    || (lo = ds_hex4(p + 2)) < 0xdc00 || lo > 0xdfff)
                {
                    return (size_t) -1;
                }

                p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);

            } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
                return (size_t) -1;
            }

            o += ds_utf8_put((unsigned long) cp, o);
            break;

        default:
            return (size_t) -1;
        }
    }

    return (size_t) (o - out);
}


static const char  *ds_usage_keys[2] = {
    "\"prompt_tokens\"", "\"completion_tokens\""
};


static void
ds_usage_store(ds_usage_t *u)
{
    if (u->key == 1) {
        u->prompt = u->value;

    } else {
        u->completion = u->value;
    }

    u->seen = 1;
}


void
ds_usage_scan(ds_usage_t *u, const char *buf, size_t len)
{
    int          k;
    char         c;
    const char  *p, *end = buf + len;

    for (p = buf; p < end; p++) {
        c = *p;

        switch (u->state) {

        case 1:     /* after a key: blanks, ':', blanks, then digits */
            if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ':') {
                continue;
            }

            if (c >= '0' && c <= '9') {
                u->value = (uint64_t) (c - '0');
                u->state = 2;
                continue;
            }

            u->state = 0;
            break;

        case 2:     /* digits */
            if (c >= '0' && c <= '9') {
                if (u->value < UINT64_MAX / 10 - 9) {
                    u->value = u->value * 10 + (uint64_t) (c - '0');
                }
                continue;
            }

            ds_usage_store(u);
            u->state = 0;
            break;
        }

        /* state 0: advance both key matches; keys start and end with '"'
         * and hold no other '"', so a mismatch restarts at '"' or 0 */
        for (k = 0; k < 2; k++) {
            if (c == ds_usage_keys[k][u->match[k]]) {
                u->match[k]++;

                if (ds_usage_keys[k][u->match[k]] == '\0') {
                    u->match[0] = 0;
                    u->match[1] = 0;
                    u->key = (unsigned) k + 1;
                    u->state = 1;
                    break;
                }

            } else {
                u->match[k] = (c == '"') ? 1 : 0;
            }
        }
    }
}
