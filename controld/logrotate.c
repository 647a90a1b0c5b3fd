/*
 * Replica logs stay under local.log_max_size.  A replica writes its
 * stdout and stderr to <replicas_dir>/<run>/<num>-<version>.log, opened
 * with O_APPEND; once a second the logs of live replicas are checked,
 * and one that is over the limit is copied to "<log>.1" (the one older
 * part kept, replacing the previous one) and emptied in place: the
 * replica carries on writing at the start of the same file, and a
 * follower of the log (api.c) starts again from the start when it sees
 * the file shorter than where it was.  Lines written between the copy
 * and the emptying (microseconds) are lost.
 *
 * The same tick keeps "<log>.idx" for "logs --since": a line "SECONDS
 * SIZE" whenever the log grew, so that every byte below SIZE was written
 * by then.  The replica writes the log itself, controld never sees its
 * lines: this is the only clock they get, good to the second.  Emptying
 * the log drops the index with it.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "config.h"
#include "log.h"
#include "logrotate.h"
#include "run.h"
#include "util.h"


#define LOGROTATE_CHECK_MS  1000


static int
logrotate_copy(const char *from, const char *to, off_t size)
{
    int      in, out, rc = -1;
    off_t    off = 0;
    ssize_t  n;

    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
        return -1;
    }
    out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (out < 0) {
        close(in);
        return -1;
    }
    while (off < size) {
        n = sendfile(out, in, &off, (size_t) (size - off));
        if (n <= 0) {
            break;
        }
    }
    if (off >= size) {
        rc = 0;
    }
    close(in);
    if (close(out) != 0) {
        rc = -1;
    }
    return rc;
}


static void
logrotate_one(struct replica *rep)
{
    char         path[4096], old[4100], tmp[4104], idx[4100];
    struct stat  sb;

    if (replica_log_path(rep, path, sizeof(path)) != 0
        || stat(path, &sb) != 0
        || (uint64_t) sb.st_size <= conf->local.log_max_size)
    {
        return;
    }
    if (fmt(old, sizeof(old), "%s.1", path) != 0
        || fmt(tmp, sizeof(tmp), "%s.1.tmp", path) != 0)
    {
        return;
    }
    if (logrotate_copy(path, tmp, sb.st_size) != 0
        || rename(tmp, old) != 0)
    {
        log_warn("logs of run \"%s\" replica %d: cannot keep %s", rep->run->name,
                 rep->num, old);
        unlink(tmp);
        return;
    }
    if (truncate(path, 0) != 0) {
        log_warn("logs of run \"%s\" replica %d: cannot empty %s",
                 rep->run->name, rep->num, path);
        return;
    }
    /* the offsets it holds are of the text just moved away */
    if (fmt(idx, sizeof(idx), "%s.idx", path) == 0) {
        unlink(idx);
    }
    rep->log_indexed = 0;
    log_info("logs of run \"%s\" replica %d: %lld bytes moved to %s",
             rep->run->name, rep->num, (long long) sb.st_size, old);
}


/* "SECONDS SIZE" into <log>.idx when the log grew since the last one */
static void
logrotate_index(struct replica *rep)
{
    char         path[4096], idx[4100], line[64];
    struct stat  sb;
    int          fd, n;

    if (replica_log_path(rep, path, sizeof(path)) != 0
        || stat(path, &sb) != 0 || sb.st_size == rep->log_indexed
        || fmt(idx, sizeof(idx), "%s.idx", path) != 0)
    {
        return;
    }
    n = snprintf(line, sizeof(line), "%lld %lld\n", (long long) time(NULL),
                 (long long) sb.st_size);
    fd = open(idx, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        return;
    }
    /* a lost line only makes --since show a second more */
    if (write(fd, line, (size_t) n) == n) {
        rep->log_indexed = sb.st_size;
    }
    close(fd);
}


long long
logrotate_since(const char *log_path, long long since, long long size)
{
    char        idx[4100], line[64];
    long long   t, at, off = 0;
    FILE       *f;

    /* nothing is written in the future: what comes, comes after now
     * (a follower gets it); the index may not have the last second */
    if (since >= (long long) time(NULL)) {
        return size;
    }
    if (fmt(idx, sizeof(idx), "%s.idx", log_path) != 0) {
        return 0;
    }
    f = fopen(idx, "re");
    if (f == NULL) {
        return 0;               /* no index: all of it */
    }
    /* the last checkpoint at or before since: all below it is older */
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "%lld %lld", &t, &at) != 2 || t > since) {
            break;
        }
        off = at;
    }
    fclose(f);
    /* an index older than a rotation points past the end */
    return off <= size ? off : 0;
}


void
logrotate_tick(void)
{
    static int64_t         next;
    struct run            *r;
    struct replica        *rep;
    int64_t                now;

    now = now_ms();
    if (now < next) {
        return;
    }
    next = now + LOGROTATE_CHECK_MS;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            if (rep->pid <= 0) {
                continue;
            }
            if (conf->local.log_max_size != 0) {
                logrotate_one(rep);
            }
            logrotate_index(rep);
        }
    }
}
