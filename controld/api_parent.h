/*
 * The parent's side of the API (api_parent.c): the listening socket,
 * the API process (api.c) it starts and starts again, and the answers to
 * that process's messages (privsep.h), executed with actions, views and
 * tokens.
 */

#ifndef CONTROLD_API_PARENT_H
#define CONTROLD_API_PARENT_H

#include <stddef.h>
#include <sys/types.h>

struct pollfd;

/* the socket and the API process's user (before daemon()); foreground:
 * the API process logs to stderr too */
int api_parent_start(int foreground, char *err, size_t n);
/* starts the API process (after daemon(): it is this process's child) */
void api_parent_run(void);
void api_parent_stop(void);
int api_parent_fill(struct pollfd *pfd, int max);
void api_parent_process(struct pollfd *pfd, int n);
/* 1 when pid was the API process (it is started again by the tick) */
int api_parent_exited(pid_t pid, int status);
void api_parent_tick(void);

#endif /* CONTROLD_API_PARENT_H */
