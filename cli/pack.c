/*
 * The run's code: a tar.gz of the working directory, honouring
 * .gitignore (ignore.c walks it), uploaded once per content as
 * PUT /api/code/<sha256>.
 *
 * The archive is made by GNU tar from an explicit NUL-separated list
 * (--no-recursion, so an ignored file inside a kept directory stays
 * out), with numeric owner 0 and "gzip -n" so that the same tree gives
 * the same bytes and so the same hash: re-applying unchanged code
 * uploads the same archive and the server can tell nothing changed.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_CODE_MAX          (256ULL * 1024 * 1024)  /* controld's limit */


typedef struct {
    dsctl_str_t     list;       /* NUL-separated paths */
    size_t          files;
} dsctl_pack_list_t;


static int
dsctl_pack_add(void *arg, const char *path, int is_dir)
{
    dsctl_pack_list_t  *pl = arg;

    dsctl_str_add(&pl->list, path, strlen(path) + 1);
    if (!is_dir) {
        pl->files++;
    }
    return 0;
}


/* runs tar with the list on its stdin; the archive goes to fd */
static int
dsctl_pack_tar(const char *dir, const dsctl_str_t *list, int fd)
{
    int           in[2], status;
    pid_t         pid;
    size_t        off;
    ssize_t       w;
    void        (*old)(int);

    if (pipe(in) == -1) {
        dsctl_error("pipe: %s", strerror(errno));
        return -1;
    }
    pid = fork();
    if (pid == -1) {
        dsctl_error("fork: %s", strerror(errno));
        close(in[0]);
        close(in[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        close(in[0]);
        close(in[1]);
        unsetenv("TAR_OPTIONS");
        execlp("tar", "tar", "--create", "--file=-",
            "--directory", dir,
            "--use-compress-program=gzip -n",
            "--owner=0", "--group=0", "--numeric-owner",
            "--no-recursion", "--null", "--verbatim-files-from",
            "--files-from=-", (char *) NULL);
        fprintf(stderr, "dstackctl: cannot run \"tar\": %s\n",
            strerror(errno));
        _exit(127);
    }
    close(in[0]);

    /* tar may die early; a broken pipe is then its story to tell */
    old = signal(SIGPIPE, SIG_IGN);
    for (off = 0; off < list->len; off += (size_t) w) {
        w = write(in[1], list->s + off, list->len - off);
        if (w == -1) {
            if (errno == EINTR) {
                w = 0;
                continue;
            }
            break;
        }
    }
    close(in[1]);
    signal(SIGPIPE, old);

    while (waitpid(pid, &status, 0) == -1) {
        if (errno != EINTR) {
            dsctl_error("waitpid: %s", strerror(errno));
            return -1;
        }
    }
    /* GNU tar exits 1 when a file changed while it was read: keep going */
    if (WIFEXITED(status)
        && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 1))
    {
        return 0;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
        return -1;
    }
    dsctl_error("cannot pack \"%s\": tar failed (%s %d)", dir,
        WIFEXITED(status) ? "exit status" : "signal",
        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return -1;
}


int
dsctl_pack(const char *dir, dsctl_pack_t *pk)
{
    dsctl_pack_list_t   pl;
    dsctl_str_t         tmp = { 0 };
    const char         *tmpdir;
    struct stat         st;
    uint8_t             sum[32];
    char                a[32], b[32];
    int                 fd, i;

    memset(pk, 0, sizeof(*pk));
    memset(&pl, 0, sizeof(pl));

    if (dsctl_walk(dir, dsctl_pack_add, &pl) != 0) {
        dsctl_str_free(&pl.list);
        return -1;
    }

    tmpdir = getenv("TMPDIR");
    dsctl_str_addf(&tmp, "%s/dstackctl-code-XXXXXX",
        tmpdir != NULL && tmpdir[0] != '\0' ? tmpdir : "/tmp");
    fd = mkstemp(tmp.s);
    if (fd == -1) {
        dsctl_error("cannot create \"%s\": %s", tmp.s, strerror(errno));
        dsctl_str_free(&tmp);
        dsctl_str_free(&pl.list);
        return -1;
    }
    pk->path = tmp.s;
    pk->files = pl.files;

    if (dsctl_pack_tar(dir, &pl.list, fd) != 0) {
        close(fd);
        dsctl_str_free(&pl.list);
        dsctl_pack_free(pk);
        return -1;
    }
    dsctl_str_free(&pl.list);

    if (fstat(fd, &st) == -1) {
        dsctl_error("cannot stat \"%s\": %s", pk->path, strerror(errno));
        close(fd);
        dsctl_pack_free(pk);
        return -1;
    }
    if ((unsigned long long) st.st_size > DSCTL_CODE_MAX) {
        dsctl_fmt_bytes(a, sizeof(a), (double) st.st_size);
        dsctl_fmt_bytes(b, sizeof(b), (double) DSCTL_CODE_MAX);
        dsctl_error("the code in \"%s\" packs to %s, more than the %s the "
            "server takes: list big files and directories in .gitignore",
            dir, a, b);
        close(fd);
        dsctl_pack_free(pk);
        return -1;
    }
    pk->len = (size_t) st.st_size;
    if (pk->len > 0) {
        pk->data = mmap(NULL, pk->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (pk->data == MAP_FAILED) {
            pk->data = NULL;
            dsctl_error("cannot map \"%s\": %s", pk->path, strerror(errno));
            close(fd);
            dsctl_pack_free(pk);
            return -1;
        }
    }
    close(fd);

    ds_sha256(pk->data != NULL ? pk->data : "", pk->len, sum);
    for (i = 0; i < 32; i++) {
        snprintf(pk->hash + 2 * i, 3, "%02x", sum[i]);
    }
    return 0;
}


void
dsctl_pack_free(dsctl_pack_t *pk)
{
    if (pk->data != NULL) {
        munmap(pk->data, pk->len);
    }
    if (pk->path != NULL) {
        unlink(pk->path);
        free(pk->path);
    }
    memset(pk, 0, sizeof(*pk));
}


int
dsctl_pack_upload(const char *dir, char hash[65])
{
    dsctl_pack_t   pk;
    dsctl_resp_t   resp;
    dsctl_str_t    path = { 0 }, label = { 0 };
    char           size[32];
    const char    *got;
    int            rc;

    if (dsctl_pack(dir, &pk) != 0) {
        return -1;
    }
    dsctl_fmt_bytes(size, sizeof(size), (double) pk.len);
    dsctl_str_addf(&path, "/api/code/%s", pk.hash);
    dsctl_str_addf(&label, "Uploading the code (%zu files, %s)", pk.files,
        size);

    rc = dsctl_api_upload(path.s, pk.data != NULL ? pk.data : "", pk.len,
        "application/gzip", label.s, &resp);
    if (rc == 0) {
        got = dsctl_json_str(resp.json, "hash");
        if (got != NULL && strcmp(got, pk.hash) != 0) {
            dsctl_error("the server stored the code as \"%s\", not \"%s\"",
                got, pk.hash);
            rc = -1;
        }
        memcpy(hash, pk.hash, 65);
    } else if (strcmp(resp.err_type, "interrupted") == 0) {
        dsctl_error("interrupted while uploading the code: nothing was "
            "submitted");
    }
    dsctl_resp_free(&resp);
    dsctl_str_free(&path);
    dsctl_str_free(&label);
    dsctl_pack_free(&pk);
    return rc;
}
