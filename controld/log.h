/*
 * Logging, in the manner of OpenBSD daemons: to stderr in the foreground
 * (-d), to syslog otherwise.  log_warn appends strerror(errno); the x
 * variants do not.  fatal and fatalx log and exit(1).
 */

#ifndef CONTROLD_LOG_H
#define CONTROLD_LOG_H

#include <stdarg.h>

#define LOG_LEVEL_WARN      0
#define LOG_LEVEL_INFO      1
#define LOG_LEVEL_DEBUG     2

void log_init(int foreground, int level);
void log_setlevel(int level);
int log_getlevel(void);

void log_warn(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif /* CONTROLD_LOG_H */
