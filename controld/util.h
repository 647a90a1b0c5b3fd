/*
 * Small helpers of the daemon (util.c): time, memory, files, formatting.
 */

#ifndef CONTROLD_UTIL_H
#define CONTROLD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

int64_t now_ms(void);                   /* CLOCK_MONOTONIC */
char *xstrdup(const char *s);
void *xcalloc(size_t n, size_t size);
int mkdir_p(const char *path, unsigned mode);
int rm_rf(const char *path);
/* "30s" "5m" "1h" "250ms" or plain seconds -> ms; -1 on error */
long long parse_duration_ms(const char *s);
/* reads /proc/<pid>/stat: 0 and the start time (ticks since boot) when
 * the process exists and is not a zombie, -1 otherwise */
int proc_start_time(pid_t pid, unsigned long long *start);
void hex_encode(const uint8_t *in, size_t n, char *out);
int valid_hex_hash(const char *s);
/* FNV-1a of a string, for the daemon's tables keyed by name */
size_t str_hash(const char *s);
/* a regular file of at most max bytes, whole and NUL-terminated
 * (malloc'd); NULL with errno: open's, EFBIG when it is larger, EINVAL
 * when it is not a regular file, EIO when it could not be read whole */
char *read_file(const char *path, size_t max, size_t *len);
/* writes a file atomically (tmp + rename) with mode */
int write_file_atomic(const char *path, const char *data, size_t len,
    unsigned mode);
/* gives path to the configured group (nginx's); 0 when none is set */
int chgrp_conf(const char *path);
/* the offset of the first NUL in JSON text, raw or "\u0000", or -1:
 * cJSON would cut a C string there ("ab\u0000/../x" checked as "ab") */
long json_nul_at(const char *p, size_t len);
/* snprintf into a fixed buffer; 0 when it fit, -1 when truncated */
int fmt(char *buf, size_t n, const char *f, ...)
    __attribute__((format(printf, 3, 4)));
/* "ADDR:PORT", numeric (IPv6 in brackets) -> a socket address; -1 with
 * why */
int listen_addr_parse(const char *s, struct sockaddr_storage *ss,
    socklen_t *len, char *why, size_t n);

#endif /* CONTROLD_UTIL_H */
