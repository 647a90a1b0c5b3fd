/*
 * SSH to the hosts of fleets (ssh.c), through the OpenSSH client.
 *
 * Why the client rather than a library: it is what the hosts' admins
 * already trust and configure, it keeps the cryptography and the host
 * key checks out of controld's memory, and it brings what a library
 * leaves to us: one multiplexed connection per host (ControlMaster) that
 * commands, forwarded ports and log streams share, ProxyJump, keepalives
 * (ServerAliveInterval) and every key type.
 *
 * Nothing here blocks: a command is a child process whose output comes
 * back through the main loop, with a deadline after which it is killed.
 * Every invocation ignores the user's ssh configuration (-F /dev/null),
 * pins host keys on first contact in a known_hosts file of controld's
 * own (StrictHostKeyChecking=accept-new: a changed key is refused) and
 * never asks anything (BatchMode).
 */

#ifndef CONTROLD_SSH_H
#define CONTROLD_SSH_H

#include <stddef.h>
#include <sys/types.h>

struct pollfd;

/* how to reach one host */
struct ssh_host {
    char            user[64];
    char            hostname[256];
    int             port;
    char            key[4096];          /* identity file, mode 0600 */
    char            known_hosts[4096];  /* pinned host keys */
    char            ctl[108];           /* ControlPath (a unix socket) */
    /* the jump host: hostname "" when none */
    char            jump_user[64];
    char            jump_hostname[256];
    int             jump_port;
    char            jump_key[4096];
};

#define SSH_OUT_MAX         (1024 * 1024)   /* bytes of output kept */

/*
 * A command's end: status is the remote exit code (255: ssh itself
 * failed), -1 when it was killed at its deadline; out holds stdout and
 * stderr together, NUL-terminated.
 */
typedef void (*ssh_done_fn)(void *arg, int status, char *out, size_t len);

struct ssh_cmd;

/* a block of a watched command's output: the text up to a line "end" */
typedef void (*ssh_block_fn)(void *arg, char *block);

/*
 * Runs `remote` on the host through its master connection (or alone
 * when none runs); `in` (len bytes, may be NULL) or the file at
 * in_path is its standard input.  NULL when it could not start (done
 * is not called then).
 */
struct ssh_cmd *ssh_run(const struct ssh_host *h, const char *remote,
    const char *in, size_t len, const char *in_path, int timeout_ms,
    ssh_done_fn done, void *arg);
/*
 * Like ssh_run, for a command that goes on printing blocks ended by a
 * line "end" (agent.sh watch): block is called for each, done at the
 * end, which has no deadline.
 */
struct ssh_cmd *ssh_watch(const struct ssh_host *h, const char *remote,
    ssh_block_fn block, ssh_done_fn done, void *arg);
/* its done gets arg instead */
void ssh_rearg(struct ssh_cmd *c, void *arg);
/* forgets a command: killed, done never called */
void ssh_cancel(struct ssh_cmd *c);

/*
 * Starts the host's master connection, in a session of its own so that
 * it outlives a controld restart; its messages go to err_fd.  The pid,
 * or -1.
 */
pid_t ssh_master(const struct ssh_host *h, int err_fd);
/* a master of an earlier controld, still there? (its control socket
 * answers: ssh -O check, run at once: quick, local) */
int ssh_master_alive(const struct ssh_host *h);
/* ends the master and everything through it */
void ssh_master_stop(const struct ssh_host *h);

/*
 * A process streaming a remote command's output into out_fd (a log
 * follower): the pid, or -1.
 */
pid_t ssh_stream(const struct ssh_host *h, const char *remote, int out_fd);

/* forwards local 127.0.0.1:lport to to_host:to_port through the master;
 * 0 or -1 (run at once: quick, local) */
int ssh_forward(const struct ssh_host *h, int lport, const char *to_host,
    int to_port);
/* forwards the local unix socket path to the host's (an engine's) */
int ssh_forward_socket(const struct ssh_host *h, const char *local,
    const char *remote);
void ssh_forward_cancel(const struct ssh_host *h, int lport,
    const char *to_host, int to_port);

/* "'it'\''s'": a word for a remote shell */
char *ssh_quote(const char *s);

/* for the main loop */
int ssh_fill(struct pollfd *pfd, int max);
void ssh_process(struct pollfd *pfd, int n);
int ssh_timeout_ms(void);
/* a child ended: 1 when it was a command of ours */
int ssh_reap(pid_t pid, int status);

#endif /* CONTROLD_SSH_H */
