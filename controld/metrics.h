/*
 * controld's own metrics (metrics.c): the Prometheus text exposition of
 * its runs, replicas, autoscaler, probes, backends and certificates,
 * built on request from the data model and the counters kept where
 * things happen (struct run_counters, backend.c, tls.c).
 */

#ifndef CONTROLD_METRICS_H
#define CONTROLD_METRICS_H

/* at the start: the time the start-time metric tells */
void metrics_init(void);
/* the exposition text (malloc'd, the caller frees it), NULL when out of
 * memory */
char *metrics_render(void);

#endif /* CONTROLD_METRICS_H */
