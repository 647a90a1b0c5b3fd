/*
 * Replica logs kept under local.log_max_size (logrotate.c).
 */

#ifndef CONTROLD_LOGROTATE_H
#define CONTROLD_LOGROTATE_H

void logrotate_tick(void);
/* logs ?since=: the offset in the log at log_path (size bytes now) from
 * which the lines are of that unix time or later; 0 when unknown */
long long logrotate_since(const char *log_path, long long since,
    long long size);

#endif /* CONTROLD_LOGROTATE_H */
