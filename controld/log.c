/*
 * Logging: stderr with a timestamp and level in the foreground, syslog
 * (daemon facility) otherwise.  Messages never carry secrets: callers
 * name tokens, never print them.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <sys/time.h>

#include "log.h"

static int  log_foreground = 1;
static int  log_level = LOG_LEVEL_INFO;


void
log_init(int foreground, int level)
{
    log_foreground = foreground;
    log_level = level;

    if (!foreground) {
        openlog("dstack-controld", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    }

    tzset();
}


void
log_setlevel(int level)
{
    log_level = level;
}


int
log_getlevel(void)
{
    return log_level;
}


static void
log_vwrite(int pri, const char *tag, const char *fmt, va_list ap,
    const char *suffix)
{
    char            msg[2048], ts[32];
    struct timeval  tv;
    struct tm       tm;

    vsnprintf(msg, sizeof(msg), fmt, ap);

    if (!log_foreground) {
        if (suffix != NULL) {
            syslog(pri, "%s: %s", msg, suffix);
        } else {
            syslog(pri, "%s", msg);
        }
        return;
    }

    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);

    if (suffix != NULL) {
        fprintf(stderr, "%s.%03d %s %s: %s\n", ts, (int) (tv.tv_usec / 1000),
                tag, msg, suffix);
    } else {
        fprintf(stderr, "%s.%03d %s %s\n", ts, (int) (tv.tv_usec / 1000),
                tag, msg);
    }
    fflush(stderr);
}


void
log_warn(const char *fmt, ...)
{
    va_list  ap;
    int      saved = errno;

    va_start(ap, fmt);
    log_vwrite(LOG_ERR, "[warn]", fmt, ap, strerror(saved));
    va_end(ap);
    errno = saved;
}


void
log_warnx(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    log_vwrite(LOG_ERR, "[warn]", fmt, ap, NULL);
    va_end(ap);
}


void
log_info(const char *fmt, ...)
{
    va_list  ap;

    if (log_level < LOG_LEVEL_INFO) {
        return;
    }

    va_start(ap, fmt);
    log_vwrite(LOG_INFO, "[info]", fmt, ap, NULL);
    va_end(ap);
}


void
log_debug(const char *fmt, ...)
{
    va_list  ap;

    if (log_level < LOG_LEVEL_DEBUG) {
        return;
    }

    va_start(ap, fmt);
    log_vwrite(LOG_DEBUG, "[debug]", fmt, ap, NULL);
    va_end(ap);
}


void
fatal(const char *fmt, ...)
{
    va_list  ap;
    int      saved = errno;

    va_start(ap, fmt);
    log_vwrite(LOG_CRIT, "[fatal]", fmt, ap, strerror(saved));
    va_end(ap);
    exit(1);
}


void
fatalx(const char *fmt, ...)
{
    va_list  ap;

    va_start(ap, fmt);
    log_vwrite(LOG_CRIT, "[fatal]", fmt, ap, NULL);
    va_end(ap);
    exit(1);
}
