/*
 * Replica logs kept under local.log_max_size (logrotate.c).
 */

#ifndef CONTROLD_LOGROTATE_H
#define CONTROLD_LOGROTATE_H

void logrotate_tick(void);

#endif /* CONTROLD_LOGROTATE_H */
