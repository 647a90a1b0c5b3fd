/*
 * Backends: what turns a replica of a run into a process somewhere with an
 * address the gateway can reach, and tells what it can run (offers).
 * Modelled on dstack's compute interface: offers for a spec; start a
 * replica and report when its commands run (its address is set by then);
 * stop gracefully and by force; status and re-adoption after a controld
 * restart; logs; release.
 *
 * The reconciler calls a backend only from the main loop and expects no
 * call to block: start() returns at once; whatever takes time (network
 * setup, unpacking the code, pulling an image) happens elsewhere, and the
 * backend reports how it went through the events it was given at init()
 * (never by calling the reconciler by name).
 *
 * Logs: whatever the replica writes goes to replica_log_path() on this
 * host, where the API and the rotation find it.
 *
 * Errors are this layer's own: BACKEND_STARTED / BACKEND_WAIT /
 * BACKEND_FAILED from start(), 0 or an HTTP status from offers().
 *
 * Three backends exist: local (backend_local.c), processes on the
 * controld host; container (backend_container.c), images through a
 * Docker Engine API (Docker, or Podman's compatible service); ssh
 * (backend_ssh.c), processes on the hosts of SSH fleets.
 */

#ifndef CONTROLD_BACKEND_H
#define CONTROLD_BACKEND_H

#include <stddef.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "ds_spec.h"

struct replica;
struct pollfd;

#define BACKEND_STARTED         0       /* it runs (its handle is set) */
#define BACKEND_FAILED         -1       /* rep->message says why */
#define BACKEND_WAIT            1       /* resources busy: try later */

/* what a backend reports back, from the main loop */
struct backend_events {
    /* the replica's setup ended: error NULL when its commands run (the
     * address is known), else why it failed (the replica exits next) */
    void  (*setup_done)(struct replica *rep, const char *error);
    /* the replica is gone: status as waitpid's, -1 when unknown */
    void  (*exited)(struct replica *rep, int status);
    /* it waits for its image: progress says how far ("12.5 of 80 MB") */
    void  (*pulling)(struct replica *rep, const char *progress);
    /* its host goes away: drain and stop it (the run replaces it) */
    void  (*evict)(struct replica *rep, const char *why);
};

struct backend_ops {
    const char *name;

    /* detects the host; called at start and on SIGHUP */
    int   (*init)(const struct backend_events *ev, char *err, size_t n);

    /*
     * Offers for a spec of run `name` (new or re-applied) and a replica
     * count, as API offer objects in `offers`; 0, or an HTTP status (422:
     * nothing matches) with a message naming the requirement and what
     * the backend has.
     */
    int   (*offers)(const ds_spec_t *sp, const char *name, int replicas,
              cJSON *offers, char *err, size_t n);

    int   (*start)(struct replica *rep);
    /* asks the replica to end: force 0 at once gracefully (SIGTERM),
     * force 1 now (SIGKILL) */
    void  (*stop)(struct replica *rep, int force);
    /* a replica of an earlier controld, or not our child: still the
     * same one?  (re-adoption and status) */
    int   (*alive)(struct replica *rep);
    /* it is gone: free its network, GPUs, files; final: the replica
     * leaves for good (its working directory goes) */
    void  (*release)(struct replica *rep, int final);
    /* a child process ended: 1 when it was a replica (events->exited
     * was called), 0 when the pid is none of this backend's */
    int   (*reap)(pid_t pid, int status);
    /* after re-adoption: frees what no known replica owns */
    void  (*gc)(void);

    /* "NVIDIA H100 80GB HBM3" for a GPU index of the replica (on its host) */
    const char *(*gpu_name)(const struct replica *rep, int index);
    /* the API's word for how replicas are reached ("netns", "host") */
    const char *(*network)(void);
    /* 1 when two replicas of a run can run at once (a rollout starts
     * the new one next to the old); 0 when they would share a port */
    int   (*side_by_side)(void);

    /* descriptors of replicas being set up, for the main loop, and
     * when to be called anyway (-1: no need; NULL: never) */
    int   (*fill)(struct pollfd *pfd, int max);
    void  (*process)(struct pollfd *pfd, int n);
    int   (*timeout_ms)(void);
};

/* the backends (backend.c): processes on this host, containers
 * through a Docker Engine API, processes on the hosts of fleets */
extern const struct backend_ops   backend_local;
extern const struct backend_ops   backend_container;
extern const struct backend_ops   backend_ssh;
/* image replicas on fleet hosts (backend_container.c, for backend_ssh.c):
 * their host is lost; the containers of ours there that no replica has
 * go (host_id "<fleet>/<host>:<port>", sock its forwarded engine) */
void container_forget(struct replica *rep);
void container_host_gc(const char *host_id, const char *sock);
/* the spec goes to the hosts of fleets (backend_ssh.c) */
int backend_ssh_wanted(const ds_spec_t *sp, const char *pkey);
/* the default: what the API's health names */
extern const struct backend_ops  *backend;

/* the backend that runs a spec of project pkey ("" for main: a project's
 * runs go to its fleets only): an image runs in a container */
const struct backend_ops *backend_for(const ds_spec_t *sp, const char *pkey);
/*
 * The offers for a spec: the backend_for()'s first (its error is the
 * answer's), then those of the others that could run it (the hosts of
 * fleets next to this host's): 0 or an HTTP status
 */
int backends_offers(const ds_spec_t *sp, const char *name, int replicas,
    cJSON *offers, char *err, size_t n);
/* by name, for documents; NULL when unknown */
const struct backend_ops *backend_find(const char *name);

/* what went wrong with replicas, by backend, for the metrics */
enum backend_error {
    BE_START = 0,       /* start() refused it */
    BE_SETUP,           /* its setup failed (archive, image, env) */
    BE_EXIT,            /* it exited or was killed on its own */
    BE_EVICT,           /* its host went away */
    BE_NKINDS
};
const char *backend_error_name(int kind);
void backend_count_error(const struct backend_ops *b, int kind);
/* the i-th backend's name and its counts (BE_NKINDS); NULL past the
 * last */
const char *backends_errors(size_t i, const unsigned long long **counts);

/* every backend at once, for the main loop */
int backends_init(const struct backend_events *ev, char *err, size_t n);
int backends_fill(struct pollfd *pfd, int max);
void backends_process(struct pollfd *pfd, int n);
/* ms until a backend wants to be called, -1: none */
int backends_timeout_ms(void);
void backends_gc(void);
/* a child process ended: 1 when a backend knew it */
int backends_reap(pid_t pid, int status);

#endif /* CONTROLD_BACKEND_H */
