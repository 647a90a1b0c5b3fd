/*
 * Durations ("30s", "5m", "1h"), sizes ("8GB"; a bare number is GB in
 * a file as in dstack, MB in JSON), counts, and ranges of either
 * ("2..8", "24GB..", {min, max}).
 */

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds_spec_impl.h"


/* 30, "30", "30s", "5m", "1h", "1d", "1w" -> seconds */
int
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


int
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
int
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
int
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
int
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
int
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
int
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
    { "min", ds_v_f_end_int, 0, NULL },
    { "max", ds_v_f_end_int, 0, NULL },
};

static const ds_vfield_t  ds_range_mem_fields[] = {
    { "min", ds_v_f_end_mem, 0, NULL },
    { "max", ds_v_f_end_mem, 0, NULL },
};


/* a number, a string range or {min, max} */
int
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


int
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


int
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


int
ds_v_range_default(ds_vctx_t *c, uint64_t min, cJSON **out)
{
    ds_vrange_t  r;

    memset(&r, 0, sizeof(r));
    r.has_min = 1;
    r.min = min;

    return ds_v_range_json(c, &r, out);
}
