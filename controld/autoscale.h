/*
 * The autoscaler (autoscale.c): desired replicas from the module's stats.
 */

#ifndef CONTROLD_AUTOSCALE_H
#define CONTROLD_AUTOSCALE_H

#include <stdint.h>

struct run;

/* desired replicas of a run from the module's stats (every tick) */
void autoscale_run(struct run *r, int64_t now);
/* a request waits for a service scaled to zero: one replica at once */
void autoscale_hold(const char *name);

#endif /* CONTROLD_AUTOSCALE_H */
