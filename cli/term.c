/*
 * Messages, prompts, Ctrl-C, formatting of times, prices and sizes, and
 * the small allocation helpers the rest of the CLI leans on.
 */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ds_state.h"
#include "dstackctl.h"


volatile sig_atomic_t  dsctl_interrupted;


void
dsctl_error(const char *fmt, ...)
{
    va_list  ap;

    fflush(stdout);
    fputs("dstackctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}


int
dsctl_usage(const char *usage, const char *fmt, ...)
{
    va_list  ap;

    fflush(stdout);
    if (fmt != NULL) {
        fputs("dstackctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    fprintf(stderr, "usage: %s\n", usage);
    return DSCTL_EXIT_USAGE;
}


int
dsctl_opt_error(const char *usage, int c, char **argv)
{
    const char  *arg = argv[optind - 1];
    const char  *what = c == ':' ? "needs a value" : "is unknown";
    int          n;

    /* "--name=x" and "--name" name themselves; "-yz" needs optopt */
    if (strncmp(arg, "--", 2) == 0) {
        n = (int) strcspn(arg, "=");
        return dsctl_usage(usage, "option \"%.*s\" %s", n, arg, what);
    }
    return dsctl_usage(usage, "option \"-%c\" %s", optopt, what);
}


int
dsctl_run_name_operand(int argc, char **argv, const char *cmd,
    const char *usage, const char **name)
{
    if (optind >= argc) {
        return dsctl_usage(usage, "%s needs the run name", cmd);
    }
    *name = argv[optind++];
    if (optind < argc) {
        return dsctl_usage(usage, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (!ds_valid_run_name(*name, strlen(*name))) {
        return dsctl_usage(usage, "invalid run name \"%s\"", *name);
    }
    return DSCTL_EXIT_OK;
}


int
dsctl_isatty_out(void)
{
    return isatty(STDOUT_FILENO);
}


int
dsctl_isatty_in(void)
{
    return isatty(STDIN_FILENO);
}


int
dsctl_confirm(const char *question)
{
    char  line[64];
    char *p;

    if (!dsctl_isatty_in()) {
        return -1;
    }

    for ( ;; ) {
        fprintf(stdout, "%s [y/n]: ", question);
        fflush(stdout);
        if (fgets(line, sizeof(line), stdin) == NULL) {
            fputc('\n', stdout);
            return 0;
        }
        for (p = line; isspace((unsigned char) *p); p++) { /* void */ }
        if (*p == 'y' || *p == 'Y') {
            return 1;
        }
        if (*p == 'n' || *p == 'N') {
            return 0;
        }
    }
}


static void
dsctl_on_sigint(int signo)
{
    (void) signo;
    dsctl_interrupted = 1;
}


void
dsctl_catch_interrupt(void)
{
    struct sigaction  sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = dsctl_on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;            /* no SA_RESTART: interrupt the waits */
    sigaction(SIGINT, &sa, NULL);
}


void
dsctl_release_interrupt(void)
{
    signal(SIGINT, SIG_DFL);
}


int
dsctl_sleep_ms(long ms)
{
    struct timespec  ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (!dsctl_interrupted && nanosleep(&ts, &ts) == -1
           && errno == EINTR)
    {
        /* a signal other than SIGINT: go on sleeping */
    }
    return !dsctl_interrupted;
}


void
dsctl_fmt_ago(char *buf, size_t n, double when, double now)
{
    double      d;
    time_t      t;
    struct tm   tm;

    if (when <= 0) {
        snprintf(buf, n, "-");
        return;
    }
    d = now - when;
    if (d < 5) {
        snprintf(buf, n, "now");
    } else if (d < 60) {
        snprintf(buf, n, "%d secs ago", (int) d);
    } else if (d < 120) {
        snprintf(buf, n, "1 min ago");
    } else if (d < 3600) {
        snprintf(buf, n, "%d mins ago", (int) (d / 60));
    } else if (d < 7200) {
        snprintf(buf, n, "1 hour ago");
    } else if (d < 86400) {
        snprintf(buf, n, "%d hours ago", (int) (d / 3600));
    } else if (d < 2 * 86400) {
        snprintf(buf, n, "yesterday");
    } else {
        t = (time_t) when;
        localtime_r(&t, &tm);
        strftime(buf, n, "%b %d, %Y", &tm);
    }
}


void
dsctl_fmt_price(char *buf, size_t n, double price)
{
    char  *p;

    if (price <= 0) {
        snprintf(buf, n, "$0");
        return;
    }
    snprintf(buf, n, "$%.4f", price);
    /* $1.5950 -> $1.595, $2.0000 -> $2 */
    p = buf + strlen(buf) - 1;
    while (p > buf && *p == '0') {
        *p-- = '\0';
    }
    if (*p == '.') {
        *p = '\0';
    }
}


static void
dsctl_fmt_unit(char *buf, size_t n, double v, const char *const *units,
    int nunits, double step, const char *sep)
{
    int  i;

    for (i = 0; i < nunits - 1 && v >= step; i++) {
        v /= step;
    }
    if (v == (double) (long long) v || v >= 100) {
        snprintf(buf, n, "%.0f%s%s", v, sep, units[i]);
    } else {
        snprintf(buf, n, "%.1f%s%s", v, sep, units[i]);
        /* 8.0GB -> 8GB */
        if (strstr(buf, ".0") != NULL) {
            snprintf(buf, n, "%.0f%s%s", v, sep, units[i]);
        }
    }
}


void
dsctl_fmt_mb(char *buf, size_t n, double mb)
{
    static const char *const units[] = { "MB", "GB", "TB", "PB" };

    dsctl_fmt_unit(buf, n, mb, units, 4, 1024, "");
}


void
dsctl_fmt_bytes(char *buf, size_t n, double bytes)
{
    static const char *const units[] = { "B", "KB", "MB", "GB", "TB" };

    dsctl_fmt_unit(buf, n, bytes, units, 5, 1024, " ");
}


long long
dsctl_parse_duration(const char *s)
{
    char       *end;
    long long   v, mul;

    if (s == NULL || !isdigit((unsigned char) *s)) {
        return -1;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || v < 0) {
        return -1;
    }
    switch (*end) {
    case '\0': mul = 1; break;
    case 's': mul = 1; break;
    case 'm': mul = 60; break;
    case 'h': mul = 3600; break;
    case 'd': mul = 86400; break;
    case 'w': mul = 7 * 86400; break;
    default: return -1;
    }
    if (*end != '\0' && end[1] != '\0') {
        return -1;
    }
    if (v > INT64_MAX / mul) {
        return -1;
    }
    return v * mul;
}


/* n digits at *pp into *v; 0, or -1 when they are not there */
static int
dsctl_digits(const char **pp, int n, int *v)
{
    int  i;

    *v = 0;
    for (i = 0; i < n; i++) {
        if (!isdigit((unsigned char) (*pp)[i])) {
            return -1;
        }
        *v = *v * 10 + ((*pp)[i] - '0');
    }
    *pp += n;
    return 0;
}


long long
dsctl_parse_since(const char *s, long long now)
{
    struct tm    tm;
    const char  *p = s;
    long long    d, t;
    int          y, mo, da, h = 0, mi = 0, se = 0, zh, zm, sign, zone = 0;
    int          zoff = 0;

    d = dsctl_parse_duration(s);
    if (d >= 0) {
        return now - d > 0 ? now - d : 1;
    }
    /* RFC 3339, as dstack takes it: 2024-05-01T10:30:00Z, or a date, or
     * a time without its zone (this machine's) */
    if (s == NULL || dsctl_digits(&p, 4, &y) != 0 || *p++ != '-'
        || dsctl_digits(&p, 2, &mo) != 0 || *p++ != '-'
        || dsctl_digits(&p, 2, &da) != 0)
    {
        return -1;
    }
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (dsctl_digits(&p, 2, &h) != 0 || *p++ != ':'
            || dsctl_digits(&p, 2, &mi) != 0)
        {
            return -1;
        }
        if (*p == ':') {
            p++;
            if (dsctl_digits(&p, 2, &se) != 0) {
                return -1;
            }
            if (*p == '.') {
                for (p++; isdigit((unsigned char) *p); p++) {
                    /* fractions of a second: the index has seconds */
                }
            }
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
            zone = 1;
        } else if (*p == '+' || *p == '-') {
            sign = *p++ == '-' ? -1 : 1;
            if (dsctl_digits(&p, 2, &zh) != 0) {
                return -1;
            }
            if (*p == ':') {
                p++;
            }
            if (dsctl_digits(&p, 2, &zm) != 0 || zh > 23 || zm > 59) {
                return -1;
            }
            zone = 1;
            zoff = sign * (zh * 3600 + zm * 60);
        }
    }
    if (*p != '\0' || mo < 1 || mo > 12 || da < 1 || da > 31 || h > 23
        || mi > 59 || se > 60 || y < 1970)
    {
        return -1;
    }
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = da;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = se;
    tm.tm_isdst = -1;
    t = zone ? (long long) timegm(&tm) - zoff : (long long) mktime(&tm);
    /* mktime and timegm carry over (Feb 31 is Mar 3): not a date */
    if (tm.tm_mday != da || tm.tm_mon != mo - 1) {
        return -1;
    }
    return t > 0 ? t : 1;
}


void *
dsctl_xmalloc(size_t n)
{
    void  *p = malloc(n ? n : 1);

    if (p == NULL) {
        dsctl_error("out of memory");
        exit(DSCTL_EXIT_FAIL);
    }
    return p;
}


void *
dsctl_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        dsctl_error("out of memory");
        exit(DSCTL_EXIT_FAIL);
    }
    return p;
}


char *
dsctl_xstrdup(const char *s)
{
    size_t  n = strlen(s) + 1;

    return memcpy(dsctl_xmalloc(n), s, n);
}


void
dsctl_str_add(dsctl_str_t *b, const char *s, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        if (b->cap < 64) {
            b->cap = 64;
        }
        b->s = dsctl_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, len);
    b->len += len;
    b->s[b->len] = '\0';
}


void
dsctl_str_addf(dsctl_str_t *b, const char *fmt, ...)
{
    va_list  ap;
    char     small[256];
    char    *big;
    int      n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t) n < sizeof(small)) {
        dsctl_str_add(b, small, (size_t) n);
        return;
    }
    big = dsctl_xmalloc((size_t) n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t) n + 1, fmt, ap);
    va_end(ap);
    dsctl_str_add(b, big, (size_t) n);
    free(big);
}


void
dsctl_str_free(dsctl_str_t *b)
{
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}


char *
dsctl_read_file(const char *path, size_t *len)
{
    FILE    *f;
    char    *buf = NULL;
    size_t   n = 0, cap = 0, r;
    int      e;

    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    for ( ;; ) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 8192;
            buf = dsctl_xrealloc(buf, cap);
        }
        r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) {
            break;
        }
    }
    if (ferror(f)) {
        e = errno ? errno : EIO;
        fclose(f);
        free(buf);
        errno = e;
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL) {
        *len = n;
    }
    return buf;
}


const char *
dsctl_json_str(const cJSON *o, const char *key)
{
    const cJSON  *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}


double
dsctl_json_num(const cJSON *o, const char *key, double dflt)
{
    const cJSON  *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}


int
dsctl_json_bool(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}
