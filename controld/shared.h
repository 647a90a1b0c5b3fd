/*
 * Shared mode (#14, shared.c): controld.yml's state: names a PostgreSQL
 * database; LMDB stays this process's working store and mirrors the
 * records a leader publishes there.  Every process follows; a
 * controller also competes for leadership and, once it leads, does what
 * an embedded controld does (main.c starts it when shared_lead_now()
 * says so), publishing every write before LMDB commits it (store.c).
 *
 * The loop calls shared_fill/shared_process like any other part; what
 * it must do next is asked with the functions below.
 */

#ifndef CONTROLD_SHARED_H
#define CONTROLD_SHARED_H

#include <stddef.h>
#include <stdint.h>

struct pollfd;
struct cJSON;

int shared_enabled(void);
/* logs the mode; the connection is made by the loop (retried) */
int shared_start(void);
void shared_stop(void);
int shared_fill(struct pollfd *pfd, int max);
void shared_process(struct pollfd *pfd, int n);
/* ms until shared_process wants to run again */
int shared_timeout_ms(void);

/* 1 once, when the first catch-up is done (READY=1, the pidfile) */
int shared_ready_now(void);
/* 1 once, when this instance has become the leader and caught up */
int shared_lead_now(void);
/*
 * Whether this instance leads with a valid lease.  Checked right after
 * every wake-up of the loop: a leader that could not renew its lease
 * (paused, cut off) must not reconcile, call a backend or write.
 */
int shared_may_act(void);
/* non-NULL once this process must exit 1 (lease lost, fenced, a schema
 * newer than this program): why */
const char *shared_exit_why(void);
/*
 * GET /api/cluster: {"mode":"embedded"}, or the leader, the revision
 * and every instance with its lag; NULL with err when the database
 * cannot say (503).
 */
struct cJSON *shared_cluster(char *err, size_t n);
/* a gateway's hold notice, forwarded to the leader */
void shared_wake(const char *run);

/*
 * Code archives: a leader keeps the one an apply names in dstack_code
 * before the run is written (0 at once when not shared; -1 with err:
 * the apply's 503); one that starts leading fetches those its live
 * runs name and this state_dir lacks.
 */
int shared_code_publish(const char *hash, char *err, size_t n);
void shared_code_fetch(void);

#endif /* CONTROLD_SHARED_H */
