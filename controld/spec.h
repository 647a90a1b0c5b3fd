/*
 * The daemon's side of service specs (spec.c): validation of what the API
 * receives, and what the rest of controld derives from a spec.
 */

#ifndef CONTROLD_SPEC_H
#define CONTROLD_SPEC_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ds_spec.h"
#include "ds_state.h"

/*
 * Validates a spec from the API (ds_spec_from_json) into sp, and checks
 * what only the daemon can: every env value resolved.  0, or -1 with the
 * validator's message ("spec.resources.gpu: ...") in err.
 */
int spec_load(const cJSON *json, ds_spec_t *sp, char *err, size_t n);
/* the fields a loaded spec has that are accepted but ignored, as an
 * array of "spec.tags: ignored: why" (NULL: out of memory) */
cJSON *spec_warnings(const cJSON *json);
/* the service record for LMDB; its strings point into sp */
void spec_service(const ds_spec_t *sp, const char *name, ds_service_t *svc);
/* the fields of two normalized specs that differ, as API changes; sets
 * *rollout when a change needs new replicas (anything but replicas and
 * scaling) */
cJSON *spec_changes(const cJSON *old, const cJSON *new_, int *rollout);
/* "2..xCPU, 8GB.., 100GB.. (disk), A100:80GB:1" */
void spec_resources_text(const ds_spec_t *sp, char *buf, size_t n);
/* the commands as one bash script */
char *spec_script(const ds_spec_t *sp);
const char *spec_method_name(int method);

#endif /* CONTROLD_SPEC_H */
