/*
 * The module's stats (stats.c): a non-blocking HTTP client of the
 * gateway's stats location, read about once a second.
 */

#ifndef CONTROLD_STATS_H
#define CONTROLD_STATS_H

#include <stddef.h>
#include <stdint.h>

struct pollfd;

/* in-flight requests of an address of a service; -1 when unknown */
long stats_replica_inflight(const char *service, const char *addr);
long stats_service_inflight(const char *service);
long stats_service_arrivals(const char *service, unsigned window);
/* requests the module holds for a service scaled to zero */
long stats_service_held(const char *service);
/* when the stats last answered (monotonic ms), 0 never */
int64_t stats_fresh_ms(void);
void stats_request(int64_t soon_ms);
int stats_fill(struct pollfd *pfd, int max);
void stats_process(struct pollfd *pfd, int n);
void stats_tick(void);
int stats_init(const char *url, char *err, size_t n);

#endif /* CONTROLD_STATS_H */
