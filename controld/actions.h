/*
 * What the API asks of runs (actions.c): plan, apply, stop, scale.  Each
 * returns 0, or an HTTP status with a message in err; nothing changes
 * when it fails.
 */

#ifndef CONTROLD_ACTIONS_H
#define CONTROLD_ACTIONS_H

#include <stddef.h>

#include <cjson/cJSON.h>

struct run;
struct caller;

/* in project (a name; "" or "main" for main), as the caller, whose role
 * there is checked (teams.h) */
int action_plan(const struct caller *c, const char *project,
    const cJSON *req, cJSON **answer, char *err, size_t n);
/* *created: a new run (201), not an update */
int action_apply(const struct caller *c, const char *project,
    const cJSON *req, cJSON **answer, int *created, char *err, size_t n);
int action_stop(struct run *r, int abort, char *err, size_t n);
/*
 * A run of a fixed count (no scaling in its spec) to `replicas` replicas
 * (1 to DS_REPLICAS_MAX, as a spec's replicas), at once and without a
 * new version; kept with the run.  409 with scaling, or once it stops.
 */
int action_scale(struct run *r, int replicas, char *err, size_t n);

#endif /* CONTROLD_ACTIONS_H */
