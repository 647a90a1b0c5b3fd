/*
 * The last five minutes of each run's service, second by second
 * (series.c): what the gateways' stats said, for the console's charts,
 * GET /api/runs/<name>/series (API.md, "series").
 */

#ifndef CONTROLD_SERIES_H
#define CONTROLD_SERIES_H

#include <stdint.h>

#include <cjson/cJSON.h>

#define SERIES_SECONDS          300     /* seconds kept per service */

/*
 * stats.c's answer hook (stats_on_answer): a source's answer, or NULL
 * when it failed or is no longer read.  Counted in the wall-clock
 * second it comes in.
 */
void series_answer(const char *url, const cJSON *answer);
/* the same, counted in the unix second `now` (t/unit/test_series.c) */
void series_answer_at(const char *url, const cJSON *answer, uint32_t now);

/*
 * The answer of GET .../series for the service key ("web",
 * "web--team"), named `shown` in it; since: only the seconds after it
 * (0: the whole window).  NULL when out of memory.
 */
cJSON *series_to_api(const char *key, const char *shown, uint32_t since);

#endif /* CONTROLD_SERIES_H */
