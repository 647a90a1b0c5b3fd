/*
 * The module's stats (stats.c): a non-blocking HTTP client of the
 * gateways' stats locations, read about once a second, their figures
 * summed over the gateways that answer.
 */

#ifndef CONTROLD_STATS_H
#define CONTROLD_STATS_H

#include <stddef.h>
#include <stdint.h>

#define STATS_SOURCES_MAX       64      /* gateways read at once */

struct pollfd;
struct cJSON;

/*
 * Told of every answer of a source: the module's JSON (valid until the
 * call returns), or NULL when the source failed or is no longer read.
 * Called at most a few times a second per source (series.c).
 */
typedef void (*stats_answer_fn)(const char *url, const struct cJSON *answer);

/* in-flight requests of an address of a service; -1 when unknown */
long stats_replica_inflight(const char *service, const char *addr);
long stats_service_inflight(const char *service);
long stats_service_arrivals(const char *service, unsigned window);
/* the p99 time to first token of a service's model answers over
 * `window` seconds (30, 60 or 300: the module's windows), the highest of
 * the gateways' (ms), and the answers it is of (*n, summed); 0, or -1
 * when no source answers or one has no such figure */
int stats_service_ttft_p99(const char *service, unsigned window,
    double *p99_ms, long *n);
/* requests the module holds for a service scaled to zero */
long stats_service_held(const char *service);
/*
 * A token's use of the models (#16): the "budgets" entries of the token
 * name in the latest answers of the sources that answer, summed per
 * (service key, model) in the order first seen, as [{"model","service",
 * "requests","refused","prompt_tokens","completion_tokens",
 * "day_tokens"}]; day_tokens only of entries whose "day" is `day` (unix
 * time / 86400, UTC).  [] when none answers; NULL out of memory.
 */
struct cJSON *stats_token_usage(const char *token, uint64_t day);
/* the oldest of the latest answers of the sources that answer
 * (monotonic ms), 0 never */
int64_t stats_fresh_ms(void);
/* how many sources answer, of how many */
void stats_sources(size_t *answering, size_t *total);
void stats_on_answer(stats_answer_fn fn);
void stats_request(int64_t soon_ms);
int stats_fill(struct pollfd *pfd, int max);
void stats_process(struct pollfd *pfd, int n);
void stats_tick(void);
/* urls: one http:// URL or several separated by white space
 * (conf->stats_url); an error for a bad or unresolvable one */
int stats_init(const char *urls, char *err, size_t n);
/*
 * Replaces the sources (shared mode: the leader's registered gateways):
 * each entry is one URL or several separated by white space; the same
 * URL twice is read once; a URL that is not http:// is logged and left
 * out.  Sources in both the old and the new set keep their state, so
 * calling it every second with the same set costs nothing and logs
 * nothing.
 */
void stats_set_sources(const char *const *urls, size_t n);

#endif /* CONTROLD_STATS_H */
