/*
 * GPUs of a host given to replicas, exclusively, whichever backend
 * runs them (the replica's host: "" for this one, a fleet's host) (processes see theirs in CUDA_VISIBLE_DEVICES, containers
 * get them as devices).
 */

#include <string.h>

#include "gpus.h"
#include "offers.h"
#include "run.h"


static int
gpu_taken(int index, const struct replica *self)
{
    struct run      *r;
    struct replica  *rep;
    int              i;

    TAILQ_FOREACH(r, &runs, entry) {
        TAILQ_FOREACH(rep, &r->replicas, entry) {
            /* GPUs are a host's: replicas elsewhere hold others */
            if (rep == self || !rep->active
                || strcmp(rep->host, self->host) != 0)
            {
                continue;
            }
            for (i = 0; i < rep->n_gpus; i++) {
                if (rep->gpus[i] == index) {
                    return 1;
                }
            }
        }
    }
    return 0;
}


int
gpus_assign(const struct host_desc *h, struct replica *rep)
{
    const ds_spec_t  *sp = &rep->run->spec;
    int               per, i, got = 0, picked[REPLICA_GPUS_MAX];

    per = gpus_per_replica(sp);
    if (per > REPLICA_GPUS_MAX) {
        per = REPLICA_GPUS_MAX;
    }
    for (i = 0; i < h->n_gpus && got < per; i++) {
        if (gpu_matches(sp, &h->gpus[i]) && !gpu_taken(h->gpus[i].index, rep))
        {
            picked[got++] = h->gpus[i].index;
        }
    }
    if (got < per) {
        return -1;
    }
    memcpy(rep->gpus, picked, sizeof(int) * got);
    rep->n_gpus = got;
    return 0;
}
