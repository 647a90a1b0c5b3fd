/*
 * Backends: what turns a replica of a run into a process somewhere with an
 * address the gateway can reach, and tells what it can run (offers).
 *
 * The reconciler calls a backend only from the main loop and expects no
 * call to block: start() forks and returns; whatever takes time (network
 * setup, unpacking the code) happens in the replica's own process before
 * it runs the user's commands, and the backend reports how that went
 * through backend_setup_done() / a failure message when the replica ends.
 *
 * One backend exists today: local (backend_local.c), the controld host.
 */

#ifndef CONTROLD_BACKEND_H
#define CONTROLD_BACKEND_H

#include <stddef.h>

struct replica;
struct pollfd;

#define BACKEND_STARTED         0       /* a process runs (pid set) */
#define BACKEND_FAILED         -1       /* rep->message says why */
#define BACKEND_WAIT            1       /* resources busy: try later */

struct backend_ops {
    const char *name;

    /* detects the host; called at start and on SIGHUP */
    int   (*init)(char *err, size_t n);

    /*
     * Offers for a spec of run `name` (new or re-applied) and a replica
     * count, as API offer objects in `offers`; 0, or an HTTP status (422:
     * nothing matches) with a message naming the requirement and what
     * the backend has.
     */
    int   (*offers)(const ds_spec_t *sp, const char *name, int replicas,
              cJSON *offers, char *err, size_t n);

    int   (*start)(struct replica *rep);
    /* signals the replica's process group */
    void  (*signal)(struct replica *rep, int sig);
    /* adopted replicas (not our children): still the same process? */
    int   (*alive)(struct replica *rep);
    /* the process group is gone: free its network, GPUs, files;
     * final: the replica leaves for good (its working directory goes) */
    void  (*release)(struct replica *rep, int final);

    /* descriptors of replicas being set up, for the main loop */
    int   (*fill)(struct pollfd *pfd, int max);
    void  (*process)(struct pollfd *pfd, int n);
};

extern const struct backend_ops  *backend;
extern const struct backend_ops   backend_local;

/* per replica log file: <replicas_dir>/<run>/<num>-<version>.log */
int backend_log_path(const struct replica *rep, char *buf, size_t n);
/* "NVIDIA H100 80GB HBM3" for a host GPU index */
const char *backend_gpu_name(int index);
/* "netns" or "host" */
const char *backend_network_name(void);
/* removes network namespaces no known replica owns (after a restart) */
void backend_gc(void);

/* reconcile.c: the replica's process ran the user's commands, or its
 * setup failed with a message */
void reconcile_setup_done(struct replica *rep, const char *error);

#endif /* CONTROLD_BACKEND_H */
