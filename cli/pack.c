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
#include <limits.h>
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


/* runs argv (tar) with input on its stdin; the archive goes to fd */
static int
dsctl_pack_run(char *const argv[], const dsctl_str_t *input, int fd,
    const char *what)
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
        execvp(argv[0], argv);
        fprintf(stderr, "dstackctl: cannot run \"tar\": %s\n",
            strerror(errno));
        _exit(127);
    }
    close(in[0]);

    /* tar may die early; a broken pipe is then its story to tell */
    old = signal(SIGPIPE, SIG_IGN);
    for (off = 0; input != NULL && off < input->len; off += (size_t) w) {
        w = write(in[1], input->s + off, input->len - off);
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
    dsctl_error("cannot pack %s: tar failed (%s %d)", what,
        WIFEXITED(status) ? "exit status" : "signal",
        WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return -1;
}


/* a temporary file for an archive: its fd, pk->path set; -1 on error */
static int
dsctl_pack_tmp(dsctl_pack_t *pk)
{
    dsctl_str_t   tmp = { 0 };
    const char   *tmpdir;
    int           fd;

    tmpdir = getenv("TMPDIR");
    dsctl_str_addf(&tmp, "%s/dstackctl-code-XXXXXX",
        tmpdir != NULL && tmpdir[0] != '\0' ? tmpdir : "/tmp");
    fd = mkstemp(tmp.s);
    if (fd == -1) {
        dsctl_error("cannot create \"%s\": %s", tmp.s, strerror(errno));
        dsctl_str_free(&tmp);
        return -1;
    }
    pk->path = tmp.s;
    return fd;
}


/* the archive written to fd: mapped and hashed into pk; closes fd */
static int
dsctl_pack_map(dsctl_pack_t *pk, int fd, const char *what, const char *hint)
{
    struct stat   st;
    uint8_t       sum[32];
    char          a[32], b[32];
    int           i;

    if (fstat(fd, &st) == -1) {
        dsctl_error("cannot stat \"%s\": %s", pk->path, strerror(errno));
        close(fd);
        return -1;
    }
    if ((unsigned long long) st.st_size > DSCTL_CODE_MAX) {
        dsctl_fmt_bytes(a, sizeof(a), (double) st.st_size);
        dsctl_fmt_bytes(b, sizeof(b), (double) DSCTL_CODE_MAX);
        dsctl_error("%s packs to %s, more than the %s the server takes: %s",
            what, a, b, hint);
        close(fd);
        return -1;
    }
    pk->len = (size_t) st.st_size;
    if (pk->len > 0) {
        pk->data = mmap(NULL, pk->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (pk->data == MAP_FAILED) {
            pk->data = NULL;
            dsctl_error("cannot map \"%s\": %s", pk->path, strerror(errno));
            close(fd);
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


int
dsctl_pack(const char *dir, dsctl_pack_t *pk)
{
    dsctl_pack_list_t   pl;
    dsctl_str_t         what = { 0 };
    int                 fd, rc;
    char               *argv[] = {
        "tar", "--create", "--file=-", "--directory", (char *) dir,
        "--use-compress-program=gzip -n",
        "--owner=0", "--group=0", "--numeric-owner",
        "--no-recursion", "--null", "--verbatim-files-from",
        "--files-from=-", NULL
    };

    memset(pk, 0, sizeof(*pk));
    memset(&pl, 0, sizeof(pl));

    if (dsctl_walk(dir, dsctl_pack_add, &pl) != 0) {
        dsctl_str_free(&pl.list);
        return -1;
    }
    fd = dsctl_pack_tmp(pk);
    if (fd == -1) {
        dsctl_str_free(&pl.list);
        return -1;
    }
    pk->files = pl.files;

    dsctl_str_addf(&what, "the code in \"%s\"", dir);
    rc = dsctl_pack_run(argv, &pl.list, fd, what.s);
    dsctl_str_free(&pl.list);
    if (rc != 0) {
        close(fd);
    } else {
        rc = dsctl_pack_map(pk, fd, what.s, "list big files and "
                            "directories in .gitignore");
    }
    dsctl_str_free(&what);
    if (rc != 0) {
        dsctl_pack_free(pk);
    }
    return rc;
}


/* ---- the spec's files ------------------------------------------------------ */

/* s with "\" before each character of `special` (for tar's --transform) */
static void
dsctl_pack_escape(dsctl_str_t *out, const char *s, const char *special)
{
    for (; *s != '\0'; s++) {
        if (strchr(special, *s) != NULL) {
            dsctl_str_add(out, "\\", 1);
        }
        dsctl_str_add(out, s, 1);
    }
}


/* a relative path without "." or ".." parts, and not empty */
static int
dsctl_pack_plain_relative(const char *p)
{
    const char  *c = p;
    size_t       n;

    if (p[0] == '/' || p[0] == '\0') {
        return 0;
    }
    while (*c != '\0') {
        n = strcspn(c, "/");
        if ((n == 2 && strncmp(c, "..", 2) == 0)) {
            return 0;
        }
        c += n;
        c += *c == '/';
    }
    return 1;
}


/*
 * Where file i of the spec goes, without the leading "/": its path, or,
 * without one, its local path under the working directory (an image's,
 * default /workflow; without an image, relative to the replica's).
 */
static int
dsctl_pack_file_dest(const cJSON *spec, size_t i, const char *local,
    const char *path, dsctl_str_t *dest)
{
    const char  *image, *wd;

    image = dsctl_json_str(spec, "image");
    if (path != NULL) {
        if (image == NULL) {
            dsctl_error("files[%zu]: a path (\"%s\") places a file in a "
                "container: it needs an image (without one, files go "
                "into the working directory)", i, path);
            return -1;
        }
        dsctl_str_addf(dest, "%s", path + strspn(path, "/"));
        return 0;
    }
    if (!dsctl_pack_plain_relative(local)) {
        dsctl_error("files[%zu]: \"%s\" is not under the working directory: "
            "say where it goes (\"%s:/path\")", i, local, local);
        return -1;
    }
    while (local[0] == '.' && local[1] == '/') {
        local += 2;
    }
    if (image != NULL) {
        wd = dsctl_json_str(spec, "working_dir");
        wd = wd != NULL ? wd : "/workflow";
        dsctl_str_addf(dest, "%s/", wd + strspn(wd, "/"));
    }
    dsctl_str_addf(dest, "%s", local);
    return 0;
}


int
dsctl_pack_files(const char *dir, const cJSON *spec, dsctl_pack_t *pk)
{
    const cJSON  *files, *f;
    const char   *local, *path;
    dsctl_str_t  *args, src = { 0 }, dest = { 0 };
    char         *argv[8 + 3 * 64 + 1], base[PATH_MAX], *real;
    struct stat   st;
    size_t        i, n, a = 0;
    int           fd, rc = -1;

    memset(pk, 0, sizeof(*pk));
    files = cJSON_GetObjectItemCaseSensitive(spec, "files");
    n = (size_t) cJSON_GetArraySize(files);
    if (n == 0) {
        return 0;
    }
    if (n > 64 || realpath(dir, base) == NULL) {
        dsctl_error("files: cannot resolve \"%s\": %s", dir,
            n > 64 ? "more than 64 files" : strerror(errno));
        return -1;
    }
    args = calloc(3 * n, sizeof(dsctl_str_t));
    if (args == NULL) {
        dsctl_error("out of memory");
        return -1;
    }
    argv[a++] = "tar";
    argv[a++] = "--create";
    argv[a++] = "--file=-";
    argv[a++] = "--directory=/";
    argv[a++] = "--use-compress-program=gzip -n";
    argv[a++] = "--owner=0";
    argv[a++] = "--group=0";
    argv[a++] = "--numeric-owner";

    i = 0;
    cJSON_ArrayForEach(f, files) {
        local = dsctl_json_str(f, "local_path");
        path = dsctl_json_str(f, "path");
        src.len = dest.len = 0;
        if (local == NULL) {
            dsctl_error("files[%zu]: no local path", i);
            goto done;
        }
        dsctl_str_addf(&src, "%s%s%s", local[0] == '/' ? "" : base,
            local[0] == '/' ? "" : "/", local);
        real = realpath(src.s, NULL);
        if (real == NULL || stat(real, &st) != 0) {
            dsctl_error("files[%zu]: \"%s\": %s", i, local, strerror(errno));
            free(real);
            goto done;
        }
        if (dsctl_pack_file_dest(spec, i, local, path, &dest) != 0) {
            free(real);
            goto done;
        }
        /* the file itself, and what is under it when it is a directory,
         * renamed to where it goes */
        dsctl_str_add(&args[3 * i], "--transform=s,^", 15);
        dsctl_pack_escape(&args[3 * i], real + 1, "\\.*[]^$,");
        dsctl_str_add(&args[3 * i], "\\($\\|/\\),", 9);
        dsctl_pack_escape(&args[3 * i], dest.s, "\\&,");
        dsctl_str_add(&args[3 * i], "\\1,", 3);
        dsctl_str_addf(&args[3 * i + 2], "%s", real + 1);
        argv[a++] = args[3 * i].s;
        free(real);
        i++;
    }
    argv[a++] = "--";
    for (i = 0; i < n; i++) {
        argv[a++] = args[3 * i + 2].s;
    }
    argv[a] = NULL;

    fd = dsctl_pack_tmp(pk);
    if (fd == -1) {
        goto done;
    }
    pk->files = n;
    if (dsctl_pack_run(argv, NULL, fd, "the spec's files") != 0) {
        close(fd);
    } else {
        rc = dsctl_pack_map(pk, fd, "the spec's files", "mount big ones "
                            "with a volume instead");
    }

done:
    if (rc != 0) {
        dsctl_pack_free(pk);
    }
    for (i = 0; i < 3 * n; i++) {
        dsctl_str_free(&args[i]);
    }
    free(args);
    dsctl_str_free(&src);
    dsctl_str_free(&dest);
    return rc;
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


/* PUT /api/code/<hash> of an archive; what: "code", "files" */
static int
dsctl_pack_send(dsctl_pack_t *pk, const char *what, char hash[65])
{
    dsctl_resp_t   resp;
    dsctl_str_t    path = { 0 }, label = { 0 };
    char           size[32];
    const char    *got;
    int            rc;

    dsctl_fmt_bytes(size, sizeof(size), (double) pk->len);
    dsctl_str_addf(&path, "/api/code/%s", pk->hash);
    dsctl_str_addf(&label, "Uploading the %s (%zu files, %s)", what,
        pk->files, size);

    /* the size before the upload, as dstack says it (a progress bar on
     * a terminal repeats it for a big one) */
    if (!(isatty(STDERR_FILENO) && pk->len > 256 * 1024)) {
        printf("%s\n", label.s);
        fflush(stdout);
    }
    rc = dsctl_api_upload(path.s, pk->data != NULL ? pk->data : "", pk->len,
        "application/gzip", label.s, &resp);
    if (rc == 0) {
        got = dsctl_json_str(resp.json, "hash");
        if (got != NULL && strcmp(got, pk->hash) != 0) {
            dsctl_error("the server stored the %s as \"%s\", not \"%s\"",
                what, got, pk->hash);
            rc = -1;
        }
        memcpy(hash, pk->hash, 65);
    } else if (strcmp(resp.err_type, "interrupted") == 0) {
        dsctl_error("interrupted while uploading the %s: nothing was "
            "submitted", what);
    }
    dsctl_resp_free(&resp);
    dsctl_str_free(&path);
    dsctl_str_free(&label);
    return rc;
}


int
dsctl_pack_upload(const char *dir, char hash[65])
{
    dsctl_pack_t   pk;
    int            rc;

    if (dsctl_pack(dir, &pk) != 0) {
        return -1;
    }
    rc = dsctl_pack_send(&pk, "code", hash);
    dsctl_pack_free(&pk);
    return rc;
}


int
dsctl_pack_upload_files(const char *dir, const cJSON *spec, char hash[65])
{
    dsctl_pack_t   pk;
    int            rc;

    hash[0] = '\0';
    if (dsctl_pack_files(dir, spec, &pk) != 0) {
        return -1;
    }
    rc = pk.files > 0 ? dsctl_pack_send(&pk, "files", hash) : 0;
    dsctl_pack_free(&pk);
    return rc;
}
