/*
 * Privilege separation (privsep.c): the messages between the root parent
 * and the unprivileged API process, their framing on a socketpair,
 * descriptor passing, and starting and confining the API process.
 *
 * A frame is a struct ps_hdr and len bytes of payload: one of the structs
 * below, sometimes followed by text.  Both ends are the same binary, so
 * the structs go as they are; the receiver checks every length, that text
 * ends in NUL, and every value, as input from elsewhere.
 */

#ifndef CONTROLD_PRIVSEP_H
#define CONTROLD_PRIVSEP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ds_state.h"

/* the API process's descriptors after exec */
#define PS_API_LISTEN_FD        3
#define PS_API_CHAN_FD          4
#define PS_API_TCP_FD           5       /* api_listen's, when set (the
                                           API process is told by -M) */

/* a frame's payload: the largest JSON body re-serialised, and more */
#define PS_FRAME_MAX            (16U * 1024 * 1024)
/* the parent's queue to a process that does not read: it gets killed */
#define PS_QUEUE_MAX            (64U * 1024 * 1024)

/* frame types; PS_HAS_FD: a descriptor came with the frame */
#define PS_AUTH                 1       /* api -> parent: ps_auth */
#define PS_AUTH_RESULT          2       /* parent -> api: ps_auth_result */
#define PS_REQUEST              3       /* api -> parent: ps_request + text */
#define PS_RESPONSE             4       /* parent -> api: ps_response + text */
#define PS_LOG                  5       /* parent -> api: ps_log (+ fd) */
#define PS_STREAM_CHECK         6       /* api -> parent: ps_stream_check */
#define PS_STREAM_STATE         7       /* parent -> api: ps_stream_state
                                           (+ fd) */
#define PS_HAS_FD               0x80000000U

struct ps_hdr {
    uint32_t        len;                /* payload bytes */
    uint32_t        type;
    uint32_t        id;                 /* the API process's; echoed */
};

/* the bearer token is hashed in the API process: only its hash goes */
struct ps_auth {
    uint8_t         token[DS_TOKEN_HASH_LEN];
};

struct ps_auth_result {
    uint32_t        result;             /* AUTH_* of tokens.h */
    char            name[DS_NAME_MAX + 1];
};

/* what the API process asks of the parent, one per endpoint */
enum ps_op {
    PS_OP_HEALTH = 1,
    PS_OP_METRICS,
    PS_OP_PLAN,
    PS_OP_APPLY,
    PS_OP_RUNS,
    PS_OP_RUN,
    PS_OP_STOP,
    PS_OP_LOGS,
    PS_OP_TOKENS,
    PS_OP_TOKEN_CREATE,
    PS_OP_TOKEN_REVOKE,
    PS_OP_FLEETS,
    PS_OP_FLEET,
    PS_OP_FLEET_PLAN,
    PS_OP_FLEET_APPLY,
    PS_OP_FLEET_DELETE,
    PS_OP_SECRETS,
    PS_OP_SECRET_SET,
    PS_OP_SECRET_GET,
    PS_OP_SECRET_DELETE,
    PS_OP_CLUSTER,
    PS_OP_PROJECTS,
    PS_OP_PROJECT_CREATE,
    PS_OP_PROJECT_DELETE,
    PS_OP_MEMBER_SET,
    PS_OP_MEMBER_REMOVE,
    PS_OP_USERS,
    PS_OP_USER_ME,
    PS_OP_USER_CREATE,
    PS_OP_USER_DELETE,
    PS_OP_USER_TOKEN,
    PS_OP_AUDIT,
    PS_OP_SERIES,
    PS_OP_SCALE,
    PS_OP_TOKEN_UPDATE,
    PS_OP_MAX
};

#define PS_RQ_ALL               0x01    /* runs: ?all=1 */
#define PS_RQ_ABORT             0x02    /* stop: {"abort":true} */
#define PS_RQ_FOLLOW            0x04    /* logs: ?follow=1 */
#define PS_RQ_NUM               0x08    /* logs: ?replica=N */
/* the text is a 400 message the API process found; the parent answers
 * it after the checks that come first (the run's name) */
#define PS_RQ_ERROR             0x10

/* followed by NUL-terminated text: the JSON body, re-serialised, or an
 * error message (PS_RQ_ERROR); "" when none */
struct ps_request {
    uint8_t         token[DS_TOKEN_HASH_LEN];
    uint32_t        op;                 /* enum ps_op */
    uint32_t        flags;              /* PS_RQ_* */
    int32_t         num;                /* logs: the replica; scale: the
                                           replicas */
    uint32_t        since;              /* logs, series: unix seconds,
                                           0: all */
    char            param[128];         /* run, fleet or token name */
    char            param2[DS_NAME_MAX + 1]; /* a member's user */
    char            project[DS_NAME_MAX + 1]; /* ?project=, "" when none */
};

/* followed by NUL-terminated text: the JSON answer, or the message of
 * an error */
struct ps_response {
    uint32_t        status;
    uint32_t        error;              /* the text is a message */
};

/* the answer to PS_OP_LOGS: the replica, and its log when it exists */
struct ps_log {
    int32_t         num;
    int32_t         version;
    uint32_t        live;               /* the replica still writes */
    uint64_t        start;              /* since: the byte that time
                                           starts at (logrotate.c) */
};

/* about once a second for each log stream that follows */
struct ps_stream_check {
    uint8_t         token[DS_TOKEN_HASH_LEN];
    char            run[DS_NAME_MAX + 1];
    int32_t         num;
    int32_t         version;
    uint32_t        want_fd;            /* the log did not exist yet */
};

struct ps_stream_state {
    uint32_t        live;               /* the replica still writes */
    uint32_t        token_ok;
};

/* one end of the socketpair, non-blocking, with its queues */
struct ps_frame;

struct ps_chan {
    int             fd;
    int             recv_fds;           /* accept descriptors (API side) */
    char           *in;
    size_t          in_len;
    size_t          in_cap;
    size_t          in_off;             /* start of the next frame */
    int             fds[8];             /* received, not yet taken */
    int             nfds;
    struct ps_frame *out_head;
    struct ps_frame *out_tail;
    size_t          out_bytes;
};

/* a received frame: payload valid until the next ps_read or ps_get */
struct ps_msg {
    uint32_t        type;               /* without PS_HAS_FD */
    uint32_t        id;
    const void     *data;
    size_t          len;
    int             fd;                 /* -1 when none; the taker owns it */
};

void ps_chan_init(struct ps_chan *ch, int fd, int recv_fds);
void ps_chan_close(struct ps_chan *ch);
/* queues a frame of hdr_data then text (either may be empty); fd, when
 * >= 0, goes with it and is closed here once sent */
void ps_send(struct ps_chan *ch, uint32_t type, uint32_t id,
    const void *data, size_t len, const char *text, int fd);
/* 0, or -1 when the other end is gone */
int ps_flush(struct ps_chan *ch);
/* reads what is there: 0, or -1 at EOF or on an error */
int ps_read(struct ps_chan *ch);
/* 1 and the next whole frame, 0 when none, -1 when the stream is not
 * frames (too large, a descriptor missing) */
int ps_get(struct ps_chan *ch, struct ps_msg *m);
/* text after a struct of n bytes: NULL unless it ends in its only NUL */
const char *ps_text(const struct ps_msg *m, size_t n);

/* starts argv (this binary) with listen_fd as PS_API_LISTEN_FD, its
 * end of a new socketpair as PS_API_CHAN_FD and tcp_fd (-1: none) as
 * PS_API_TCP_FD, in directory dir, nothing else open but stdin/stdout/
 * stderr; the pid, *chan_fd the parent's end */
pid_t ps_spawn(char *const argv[], int listen_fd, int tcp_fd,
    const char *dir, int *chan_fd, char *err, size_t n);
/* in the child: uid 0 becomes uid/gid (and checks that it cannot come
 * back); 0, or -1 with a message */
int ps_drop(uid_t uid, gid_t gid, char *err, size_t n);

#endif /* CONTROLD_PRIVSEP_H */
