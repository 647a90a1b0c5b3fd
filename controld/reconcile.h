/*
 * The reconciler (reconcile.c): desired runs -> replicas, and the
 * lifecycle of each replica.
 */

#ifndef CONTROLD_RECONCILE_H
#define CONTROLD_RECONCILE_H

#include "backend.h"

struct run;

/* what backends report, handed to backend->init() */
extern const struct backend_events  reconcile_events;

/* hands the probes their callback */
void reconcile_init(void);
void reconcile_tick(void);
void reconcile_adopt(void);
/* a finished run replaced by a new one of its name: out of `runs` */
void reconcile_forget(struct run *r);
/* stops a run: draining first unless abort */
void reconcile_stop(struct run *r, int abort);
/* set by actions and events: run the reconciler right after this batch */
extern int  reconcile_now;

#endif /* CONTROLD_RECONCILE_H */
