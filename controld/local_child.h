/*
 * The replica's process of the local backend (local_child.c): what runs
 * between fork and the exec of the user's commands, and the helpers
 * other children (namespace setup, cleanup) share with it.
 */

#ifndef CONTROLD_LOCAL_CHILD_H
#define CONTROLD_LOCAL_CHILD_H

struct replica;

/* what the replica's process needs besides the replica */
struct child_args {
    struct replica             *rep;
    const char                 *addr;       /* DSTACK_REPLICA_ADDRESS */
    const char                 *netns;      /* its namespace's path, or
                                               NULL: the host network */
    const char                 *work;       /* NULL: the path is too long */
    int                         host_gpus;  /* the host has GPUs */
    char *const                *env;        /* the spec's env values,
                                               secrets resolved */
};


/* right after fork: a session of its own, default signals, output to
 * log_fd; setup errors go to pipe_fd (close-on-exec) */
void child_begin(int pipe_fd, int log_fd);
/* stdin from /dev/null, stdout and stderr to out_fd (-1: /dev/null);
 * no other descriptor of controld's passes an exec */
void child_stdio(int out_fd);
/* the working directory, the code, the user, the environment, and the
 * exec of the commands; never returns */
void child_exec(const struct child_args *a)
    __attribute__((noreturn));

/* reports a setup error to the loop and to the replica's log; exits */
void child_fail(const char *f, ...)
    __attribute__((format(printf, 1, 2), noreturn));
/* runs argv with stdin from `input` (NULL: ours), output to ours;
 * returns the exit status */
int child_run(char *const argv[], const char *input);

#endif /* CONTROLD_LOCAL_CHILD_H */
