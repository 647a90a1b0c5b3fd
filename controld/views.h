/*
 * What the API shows of runs (views.c): the run object R of API.md,
 * built from the data model; nothing here changes a run.
 */

#ifndef CONTROLD_VIEWS_H
#define CONTROLD_VIEWS_H

#include <cjson/cJSON.h>

struct run;

cJSON *run_to_api(const struct run *r);

#endif /* CONTROLD_VIEWS_H */
