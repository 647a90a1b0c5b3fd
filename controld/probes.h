/*
 * Readiness probes (probes.c), non-blocking, driven from the main loop.
 * Results go to the callback given to probes_init(), never to the
 * reconciler by name.
 */

#ifndef CONTROLD_PROBES_H
#define CONTROLD_PROBES_H

struct pollfd;
struct replica;

/* ok: every probe passed (ready); !ok: the replica failed enough probes
 * in a row to leave routing, why says which */
typedef void (*probe_result_fn)(struct replica *rep, int ok,
    const char *why);

void probes_init(probe_result_fn on_result);
void probes_start(struct replica *rep);
void probes_cancel(struct replica *rep);
int probes_fill(struct pollfd *pfd, int max);
void probes_process(struct pollfd *pfd, int n);
int probes_timeout_ms(void);
void probes_tick(void);

#endif /* CONTROLD_PROBES_H */
