/*
 * GPUs of this host given to replicas (gpus.c), whichever backend runs
 * them: a GPU is never shared by two replicas that hold something (a
 * process, a container).
 */

#ifndef CONTROLD_GPUS_H
#define CONTROLD_GPUS_H

struct host_desc;
struct replica;

/* the GPUs rep's spec asks for, free and matching, into rep->gpus;
 * 0, or -1 when not enough are free now */
int gpus_assign(const struct host_desc *h, struct replica *rep);

#endif /* CONTROLD_GPUS_H */
