/*
 * The API process (api.c, controld/API.md): HTTP on the unix socket,
 * unprivileged; what it may not do itself it asks the parent
 * (api_parent.c) over the socketpair (privsep.h).
 */

#ifndef CONTROLD_API_H
#define CONTROLD_API_H

/*
 * The process's main, after the parent's exec (main.c -A): who is
 * "uid:gid" to become, or "-"; the listening socket and the socketpair
 * are PS_API_LISTEN_FD and PS_API_CHAN_FD.  Returns when the parent is
 * gone or on SIGTERM.
 */
/* limits: "connections:header_s:body_s" (controld.yml's api_*), or NULL */
int api_main(const char *who, const char *limits, int foreground,
    int level);

#endif /* CONTROLD_API_H */
