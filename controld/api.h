/*
 * The JSON API (api.c, controld/API.md) on a unix socket.
 */

#ifndef CONTROLD_API_H
#define CONTROLD_API_H

#include <stddef.h>

struct pollfd;

int api_start(char *err, size_t n);
void api_stop(void);
int api_fill(struct pollfd *pfd, int max);
void api_process(void);
int api_timeout_ms(void);
/* resumes log streams waiting for new bytes */
void api_tick(void);

#endif /* CONTROLD_API_H */
