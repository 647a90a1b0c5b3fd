/*
 * A client of the Docker Engine HTTP API on a unix socket (engine.c):
 * what Docker and Podman's compatible service both speak.  Requests run
 * on libcurl's multi interface from the main loop and never block it;
 * answers arrive through callbacks.
 */

#ifndef CONTROLD_ENGINE_H
#define CONTROLD_ENGINE_H

#include <stddef.h>

struct pollfd;
struct engine_req;

/* the API version the paths carry: both engines answer it */
#define ENGINE_API              "/v1.41"

/*
 * The end of a request: status is the HTTP status, 0 when none came
 * (why says what failed: the socket, a timeout); body is the answer
 * (NUL-terminated, for a request without on_data), or NULL.
 */
typedef void (*engine_done_fn)(void *arg, long status, const char *body,
    size_t len, const char *why);
/* bytes of an answer as they come (logs, pull progress) */
typedef void (*engine_data_fn)(void *arg, const char *data, size_t len);

int engine_init(const char *socket, char *err, size_t n);
void engine_close(void);
const char *engine_socket(void);

/*
 * Sends a request: method, a path under ENGINE_API, a body (JSON unless
 * ctype says otherwise) or NULL.  timeout_ms 0: none (streams, waits).
 * The callbacks run from engine_process(), never from here.  NULL when
 * the request could not be made (out of memory).
 */
struct engine_req *engine_call(const char *method, const char *path,
    const char *ctype, const void *body, size_t len, long timeout_ms,
    engine_data_fn on_data, engine_done_fn on_done, void *arg);
/* the same with an X-Registry-Auth header (a pull), never logged */
struct engine_req *engine_call_auth(const char *method, const char *path,
    const char *registry_auth, long timeout_ms, engine_data_fn on_data,
    engine_done_fn on_done, void *arg);

/* forgets a request: no further callback comes; not from its own
 * on_data */
/*
 * The same on another engine: sock is its unix socket (a fleet host's
 * engine, forwarded over SSH); NULL or "": the configured one.
 */
struct engine_req *engine_call_on(const char *sock, const char *method,
    const char *path, const char *ctype, const void *body, size_t len,
    long timeout_ms, engine_data_fn on_data, engine_done_fn on_done,
    void *arg);
struct engine_req *engine_call_auth_on(const char *sock, const char *method,
    const char *path, const char *registry_auth, long timeout_ms,
    engine_data_fn on_data, engine_done_fn on_done, void *arg);
void engine_cancel(struct engine_req *q);

/* for the start of controld, before the loop runs: waits up to
 * timeout_ms; the answer (malloc'd, NUL-terminated) in *answer */
long engine_call_sync(const char *method, const char *path,
    const char *body, long timeout_ms, char **answer, char *why, size_t n);

/* the main loop */
int engine_fill(struct pollfd *pfd, int max);
void engine_process(struct pollfd *pfd, int n);
int engine_timeout_ms(void);

/* "a%2Fb": a value for a query string (static buffer) */
const char *engine_escape(const char *s);

#endif /* CONTROLD_ENGINE_H */
