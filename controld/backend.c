/*
 * The backends, and which one runs what: the hosts of fleets
 * (backend_ssh.c) when the spec names fleets or the ssh backend, or when
 * a fleet has a host that fits it; else an image runs in a container
 * (backend_container.c), anything else as processes on this host
 * (backend_local.c).  The main loop drives them all.
 */

#include <poll.h>
#include <string.h>

#include "backend.h"


static const struct backend_ops *const  all[] = {
    &backend_local,
    &backend_container,
    &backend_ssh,
};

#define N_BACKENDS      (sizeof(all) / sizeof(all[0]))

/* how many descriptors each filled in the last turn of the loop */
static int  filled[N_BACKENDS];
/* replicas that went wrong, by backend and enum backend_error */
static unsigned long long  errors[N_BACKENDS][BE_NKINDS];

const struct backend_ops  *backend = &backend_local;


const struct backend_ops *
backend_for(const ds_spec_t *sp, const char *pkey)
{
    if (backend_ssh_wanted(sp, pkey)) {
        return &backend_ssh;
    }
    return sp->image != NULL ? &backend_container : &backend_local;
}


int
backends_offers(const ds_spec_t *sp, const char *name, int replicas,
    cJSON *offers, char *err, size_t n)
{
    const struct backend_ops  *chosen, *other;
    ds_str_t                   project;
    char                       ignored[256];
    int                        rc;

    /* name is the run's key ("web--team"): its project's backends */
    ds_service_project(name, strlen(name), &project);
    chosen = backend_for(sp, project.data);
    rc = chosen->offers(sp, name, replicas, offers, err, n);
    if (rc != 0) {
        return rc;
    }
    /* the others' next to them, when the spec lets them run it */
    other = chosen == &backend_ssh
            ? (sp->image != NULL ? &backend_container : &backend_local)
            : &backend_ssh;
    if (sp->n_fleets == 0 && sp->n_backends == 0) {
        (void) other->offers(sp, name, replicas, offers, ignored,
                             sizeof(ignored));
    }
    return 0;
}


const struct backend_ops *
backend_find(const char *name)
{
    size_t  i;

    for (i = 0; i < N_BACKENDS; i++) {
        if (strcmp(all[i]->name, name) == 0) {
            return all[i];
        }
    }
    return NULL;
}


int
backends_init(const struct backend_events *ev, char *err, size_t n)
{
    size_t  i;

    for (i = 0; i < N_BACKENDS; i++) {
        if (all[i]->init(ev, err, n) != 0) {
            return -1;
        }
    }
    return 0;
}


int
backends_fill(struct pollfd *pfd, int max)
{
    size_t  i;
    int     n = 0;

    for (i = 0; i < N_BACKENDS; i++) {
        filled[i] = all[i]->fill(pfd + n, max - n);
        n += filled[i];
    }
    return n;
}


void
backends_process(struct pollfd *pfd, int n)
{
    size_t  i;
    int     off = 0;

    for (i = 0; i < N_BACKENDS && off <= n; i++) {
        all[i]->process(pfd + off, filled[i]);
        off += filled[i];
    }
}


int
backends_timeout_ms(void)
{
    size_t  i;
    int     t, best = -1;

    for (i = 0; i < N_BACKENDS; i++) {
        if (all[i]->timeout_ms == NULL) {
            continue;
        }
        t = all[i]->timeout_ms();
        if (t >= 0 && (best < 0 || t < best)) {
            best = t;
        }
    }
    return best;
}


int
backends_reap(pid_t pid, int status)
{
    size_t  i;

    for (i = 0; i < N_BACKENDS; i++) {
        if (all[i]->reap != NULL && all[i]->reap(pid, status)) {
            return 1;
        }
    }
    return 0;
}


void
backends_gc(void)
{
    size_t  i;

    for (i = 0; i < N_BACKENDS; i++) {
        all[i]->gc();
    }
}


const char *
backend_error_name(int kind)
{
    static const char *const  names[BE_NKINDS] = {
        "start", "setup", "exit", "evict"
    };

    return kind >= 0 && kind < BE_NKINDS ? names[kind] : "unknown";
}


void
backend_count_error(const struct backend_ops *b, int kind)
{
    size_t  i;

    if (b == NULL || kind < 0 || kind >= BE_NKINDS) {
        return;
    }
    for (i = 0; i < N_BACKENDS; i++) {
        if (all[i] == b) {
            errors[i][kind]++;
            return;
        }
    }
}


const char *
backends_errors(size_t i, const unsigned long long **counts)
{
    if (i >= N_BACKENDS) {
        return NULL;
    }
    *counts = errors[i];
    return all[i]->name;
}
