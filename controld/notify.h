/*
 * Hold notices from the module (notify.c): a datagram names a service
 * scaled to zero that a request waits for.
 */

#ifndef CONTROLD_NOTIFY_H
#define CONTROLD_NOTIFY_H

#include <stddef.h>

struct pollfd;

int notify_start(char *err, size_t n);
void notify_stop(void);
int notify_fill(struct pollfd *pfd, int max);
void notify_process(struct pollfd *pfd, int n);

#endif /* CONTROLD_NOTIFY_H */
