/*
 * The audit log (audit.c, #18): every change asked of the API, who asked
 * it and when, and how it ended (also when refused), kept in LMDB's
 * "audit" database, the newest AUDIT_KEEP.
 */

#ifndef CONTROLD_AUDIT_H
#define CONTROLD_AUDIT_H

#include <cjson/cJSON.h>

#include "tokens.h"

#define AUDIT_KEEP              10000

/* records one event: project a name ("" is main), action "apply",
 * object "web", status the HTTP answer; failures are logged only */
void audit_event(const struct caller *c, const char *project,
    const char *action, const char *object, unsigned status);
/* GET /api/audit: the newest limit events (of project, or all when NULL;
 * global admins only may ask for all); 0 or an HTTP status */
int audit_list(const struct caller *c, const char *project, int limit,
    cJSON **answer, char *err, size_t n);

#endif /* CONTROLD_AUDIT_H */
