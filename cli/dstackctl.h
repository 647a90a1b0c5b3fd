/*
 * dstackctl: the CLI.  One file per command (cmd_*.c), one per concern
 * (api.c: HTTP client, config.c: server and token, pack.c: the code
 * archive, ignore.c: .gitignore rules, table.c: aligned tables, term.c:
 * messages, prompts and formatting).
 *
 * Exit codes: 0 ok, 1 failure, 2 usage error.  Errors go to stderr as
 * "dstackctl: <message>", lowercase, no final period, subjects quoted.
 */

#ifndef DSTACKCTL_H
#define DSTACKCTL_H

#include <stddef.h>
#include <stdio.h>
#include <signal.h>
#include <getopt.h>

#include <cjson/cJSON.h>

#include "ds_state.h"

#define DSCTL_VERSION           "0.1.0"

#define DSCTL_EXIT_OK           0
#define DSCTL_EXIT_FAIL         1
#define DSCTL_EXIT_USAGE        2

#define DSCTL_ATTR_PRINTF(a, b) __attribute__((format(printf, a, b)))


/* ---- the command table (main.c) ---------------------------------------- */

#define DSCTL_CMD_HIDDEN        0x01    /* not listed in --help */

typedef struct {
    const char     *name;
    int           (*fn)(int argc, char **argv);
    unsigned        flags;
    const char     *summary;            /* one line for dstackctl --help */
} dsctl_cmd_t;

int cmd_apply(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_logs(int argc, char **argv);
int cmd_offer(int argc, char **argv);
int cmd_token(int argc, char **argv);
int cmd_secret(int argc, char **argv);
int cmd_fleet(int argc, char **argv);
int cmd_project(int argc, char **argv);
int cmd_user(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_ignore_check(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_completion(int argc, char **argv);

/* ---- the options of each command (cmd_*.c), for completion ---------- */

extern const char          dsctl_apply_short[];
extern const struct option dsctl_apply_opts[];
extern const char          dsctl_offer_short[];
extern const struct option dsctl_offer_opts[];
extern const char          dsctl_ps_short[];
extern const struct option dsctl_ps_opts[];
extern const char          dsctl_logs_short[];
extern const struct option dsctl_logs_opts[];
extern const char          dsctl_stop_short[];
extern const struct option dsctl_stop_opts[];
extern const char          dsctl_secret_short[];
extern const struct option dsctl_secret_opts[];
extern const char          dsctl_secret_delete_short[];
extern const struct option dsctl_secret_delete_opts[];
extern const char          dsctl_token_create_short[];
extern const struct option dsctl_token_create_opts[];
extern const char          dsctl_token_list_short[];
extern const struct option dsctl_token_list_opts[];
extern const char          dsctl_token_update_short[];
extern const struct option dsctl_token_update_opts[];
extern const char          dsctl_token_revoke_short[];
extern const struct option dsctl_token_revoke_opts[];
extern const char          dsctl_fleet_list_short[];
extern const struct option dsctl_fleet_list_opts[];
extern const char          dsctl_fleet_delete_short[];
extern const struct option dsctl_fleet_delete_opts[];
extern const char          dsctl_project_list_short[];
extern const struct option dsctl_project_list_opts[];
extern const char          dsctl_project_plain_short[];
extern const struct option dsctl_project_plain_opts[];
extern const char          dsctl_project_delete_short[];
extern const struct option dsctl_project_delete_opts[];
extern const char          dsctl_project_member_short[];
extern const struct option dsctl_project_member_opts[];
extern const char          dsctl_user_list_short[];
extern const struct option dsctl_user_list_opts[];
extern const char          dsctl_user_create_short[];
extern const struct option dsctl_user_create_opts[];
extern const char          dsctl_user_delete_short[];
extern const struct option dsctl_user_delete_opts[];
extern const char          dsctl_user_token_short[];
extern const struct option dsctl_user_token_opts[];
extern const char          dsctl_audit_short[];
extern const struct option dsctl_audit_opts[];

/*
 * --project NAME, which every command that talks about a project's
 * things takes: getopt_long's value for it, past any letter, and the
 * line of an options table.  The command hands optarg to
 * dsctl_project_select() (project.c).
 */
#define DSCTL_OPT_PROJECT       0x100
#define DSCTL_PROJECT_OPTION \
    { "project", required_argument, NULL, DSCTL_OPT_PROJECT }

/* dstackctl completion bash|zsh (cmd_completion.c): the command table
 * main.c dispatches from, as it is */
const dsctl_cmd_t *dsctl_command_table(size_t *n);


/* ---- messages, prompts, formatting (term.c) ---------------------------- */

/* "dstackctl: " + message + newline on stderr */
void dsctl_error(const char *fmt, ...) DSCTL_ATTR_PRINTF(1, 2);

/*
 * A usage error: the message, then "usage: <usage>" and a hint to --help,
 * on stderr.  Returns DSCTL_EXIT_USAGE for "return dsctl_usage(...)".
 */
int dsctl_usage(const char *usage, const char *fmt, ...)
    DSCTL_ATTR_PRINTF(2, 3);

/* the usage error for getopt_long's ':' (missing value) or '?' */
int dsctl_opt_error(const char *usage, int c, char **argv);

/* the one operand after the options, a valid run name: DSCTL_EXIT_OK and
 * *name, or the usage error ("CMD needs the run name", ...) */
int dsctl_run_name_operand(int argc, char **argv, const char *cmd,
    const char *usage, const char **name);

int dsctl_isatty_out(void);
int dsctl_isatty_in(void);

/*
 * Asks QUESTION "[y/n]: " on the terminal.  Returns 1 yes, 0 no, -1 when
 * stdin is not a terminal (the caller says to use -y).
 */
int dsctl_confirm(const char *question);

/*
 * Ctrl-C while following: dsctl_catch_interrupt() installs a SIGINT
 * handler (no SA_RESTART, so sleeps and reads return) that only sets
 * dsctl_interrupted; dsctl_release_interrupt() restores the default.
 */
extern volatile sig_atomic_t dsctl_interrupted;
void dsctl_catch_interrupt(void);
void dsctl_release_interrupt(void);
/* sleeps ms milliseconds or until interrupted; 0 when interrupted */
int dsctl_sleep_ms(long ms);

/* "now", "5 secs ago", "3 mins ago", "2 hours ago", "yesterday", date */
void dsctl_fmt_ago(char *buf, size_t n, double when, double now);
/* "$0", "$1.595", "$0.5" */
void dsctl_fmt_price(char *buf, size_t n, double price);
/* "512MB", "8GB", "1.5TB" from megabytes */
void dsctl_fmt_mb(char *buf, size_t n, double mb);
/* "1.2 MB" from bytes */
void dsctl_fmt_bytes(char *buf, size_t n, double bytes);
/* "30s", "5m", "1h", "7d", "2w" or plain seconds; -1 when invalid */
long long dsctl_parse_duration(const char *s);
/*
 * logs --since: a duration back from now ("10m", "1h", "2d", seconds) or
 * an RFC 3339 time ("2024-05-01T10:30:00Z", "+02:00", no zone: local;
 * a bare date is its midnight) -> unix seconds (at least 1); -1 when
 * it is neither
 */
long long dsctl_parse_since(const char *s, long long now);

/* a growable string */
typedef struct {
    char           *s;
    size_t          len;
    size_t          cap;
} dsctl_str_t;

void dsctl_str_add(dsctl_str_t *b, const char *s, size_t len);
void dsctl_str_addf(dsctl_str_t *b, const char *fmt, ...)
    DSCTL_ATTR_PRINTF(2, 3);
void dsctl_str_free(dsctl_str_t *b);

void *dsctl_xmalloc(size_t n);
void *dsctl_xrealloc(void *p, size_t n);
char *dsctl_xstrdup(const char *s);

/* reads a whole file (NUL-terminated); NULL with errno set on failure */
char *dsctl_read_file(const char *path, size_t *len);

/* JSON helpers: NULL / 0 / "" when absent or of another type */
const char *dsctl_json_str(const cJSON *o, const char *key);
double dsctl_json_num(const cJSON *o, const char *key, double dflt);
int dsctl_json_bool(const cJSON *o, const char *key);


/* ---- config (config.c) ------------------------------------------------- */

typedef struct {
    char           *server;     /* "http(s)://host[:port]" or "unix:/path" */
    char           *token;
    char           *project;    /* the calls' project; "main" by default */
    const char     *project_from;   /* "--project", "DSTACK_PROJECT", the
                                       config file, or NULL: the default */
    char           *ca;         /* PEM file of the CA an https:// server's
                                   certificate is checked against (e.g.
                                   controld's own CA); NULL: the system's */
    char           *source;     /* where server came from, for messages */
} dsctl_config_t;

/*
 * Server and token: DSTACK_SERVER / DSTACK_TOKEN, else the file named by
 * DSTACK_CONFIG, else ~/.dstack/config.yml.  The file has top-level keys
 * "server:" and "token:" (and optionally "project:" and "ca:"; DSTACK_CA
 * wins over "ca:"), or dstack's own
 * layout ("projects:" with url/token/name/default).  The project:
 * --project, DSTACK_PROJECT, the file (read for it alone when the
 * environment gives server and token), "main".  Prints the error and
 * returns -1 when no server or token can be found.
 */
int dsctl_config_load(dsctl_config_t *cfg);
/* the file dsctl_config_load reads: DSTACK_CONFIG, else
 * ~/.dstack/config.yml; free it */
char *dsctl_config_path(int *explicit);
void dsctl_config_free(dsctl_config_t *cfg);
/* parses a config file's text; err (if not NULL) gets a message */
int dsctl_config_parse(dsctl_config_t *cfg, const char *path,
    const char *text, size_t len, char *err, size_t errlen);


/* ---- the API client (api.c) -------------------------------------------- */

/* Answer of a call that reached the server. */
typedef struct {
    long            status;
    cJSON          *json;       /* parsed body, NULL if not JSON */
    const char     *err_type;   /* error.type of a 4xx/5xx, or "" */
    const char     *err_msg;    /* error.message of a 4xx/5xx, or "" */
} dsctl_resp_t;

int dsctl_api_init(const dsctl_config_t *cfg);
/* dsctl_config_load + dsctl_api_init; -1 after a message, cfg freed */
int dsctl_client_open(dsctl_config_t *cfg);
void dsctl_api_cleanup(void);

/*
 * A JSON call.  Returns 0 with a 2xx answer; -1 otherwise, after printing
 * "dstackctl: <message>" unless DSCTL_API_QUIET is set.  resp->json is
 * kept either way (free with dsctl_resp_free).  body may be NULL.
 */
#define DSCTL_API_QUIET         0x01
int dsctl_api_call(const char *method, const char *path, const cJSON *body,
    unsigned flags, dsctl_resp_t *resp);
void dsctl_resp_free(dsctl_resp_t *resp);
/*
 * 1 for a failure worth retrying while polling: the server unreachable
 * or, behind nginx, not answering (502, 503, 504), as while controld
 * restarts.
 */
int dsctl_api_transient(const dsctl_resp_t *resp);
#define DSCTL_POLL_RETRIES      60      /* tries 500 ms apart: 30 s */

/* PUT of raw bytes (the code archive), with a progress bar on a TTY */
int dsctl_api_upload(const char *path, const void *data, size_t len,
    const char *content_type, const char *label, dsctl_resp_t *resp);

/*
 * A streamed GET (logs): the body goes to out as it arrives.  Returns 0
 * at the end of the stream or when interrupted (dsctl_interrupted).
 */
int dsctl_api_stream(const char *path, FILE *out);

/* percent-encodes s for a path segment or query value */
char *dsctl_url_escape(const char *s);


/* ---- the project (project.c) ------------------------------------------- */

/* --project's value (NULL: none given) */
void dsctl_project_select(const char *name);
const char *dsctl_project_selected(void);
/* 1 for "main" (or none): nothing to send */
int dsctl_project_is_default(const char *project);
/* adds s percent-encoded (RFC 3986: all but unreserved characters) */
void dsctl_pct_encode(dsctl_str_t *out, const char *s);
/*
 * path, with "?project=NAME" (or "&project=NAME" after a query) when it
 * is a call of a project's (runs, tokens, secrets, fleets) and project
 * is not the default
 */
void dsctl_project_path(const char *path, const char *project,
    dsctl_str_t *out);
/* 1 when name can be written bare in YAML: letters, digits, "-_." */
int dsctl_project_name_plain(const char *name);
/* a config file's text with "project: NAME" set, the rest kept */
void dsctl_config_with_project(const char *text, size_t len,
    const char *project, dsctl_str_t *out);
/* replaces path with data, mode 0600; -1 after a message */
int dsctl_write_private(const char *path, const char *data, size_t len);


/* ---- tables (table.c) -------------------------------------------------- */

typedef struct dsctl_table_s  dsctl_table_t;

#define DSCTL_ALIGN_LEFT        0
#define DSCTL_ALIGN_RIGHT       1

/* headers: ncols strings, or NULL for a table without a header row */
dsctl_table_t *dsctl_table_new(int ncols, const char *const *headers);
void dsctl_table_align(dsctl_table_t *t, int col, int align);
/* adds a row of ncols cells (NULL = empty); the table copies them */
void dsctl_table_add(dsctl_table_t *t, const char *const *cells);
void dsctl_table_addv(dsctl_table_t *t, ...);   /* ncols const char * */
int dsctl_table_rows(const dsctl_table_t *t);
/* columns separated by two spaces, one space of margin, no trailing */
void dsctl_table_print(const dsctl_table_t *t, FILE *out);
void dsctl_table_render(const dsctl_table_t *t, dsctl_str_t *out);
void dsctl_table_free(dsctl_table_t *t);
/* display width of UTF-8 text (code points; no wide characters) */
size_t dsctl_text_width(const char *s);


/* ---- .gitignore rules (ignore.c) --------------------------------------- */

typedef struct dsctl_ignore_s  dsctl_ignore_t;

dsctl_ignore_t *dsctl_ignore_new(void);
void dsctl_ignore_free(dsctl_ignore_t *ig);
/*
 * Adds the rules of one .gitignore whose directory is base ("" for the
 * root, else "sub/dir/" relative to the root, with the final slash).
 * Rules added later (deeper files) take precedence.
 */
void dsctl_ignore_add(dsctl_ignore_t *ig, const char *base,
    const char *text, size_t len);
/* forgets the rules added since mark (dsctl_ignore_mark) */
size_t dsctl_ignore_mark(const dsctl_ignore_t *ig);
void dsctl_ignore_pop(dsctl_ignore_t *ig, size_t mark);
/* 1 when path (relative to the root, no leading or trailing slash) is
 * ignored; the parents' verdicts are the caller's business (walk) */
int dsctl_ignore_match(const dsctl_ignore_t *ig, const char *path,
    int is_dir);
/* git's wildmatch with WM_PATHNAME: 1 when text matches pattern */
int dsctl_wildmatch(const char *pattern, const char *text);

/*
 * Walks root honouring .gitignore files (and never .git): cb gets each
 * kept path relative to root ("a", "a/b.txt"; directories too, with
 * is_dir set), in name order, parents before children.  Returns 0, or
 * -1 after printing an error.
 */
typedef int (*dsctl_walk_cb)(void *arg, const char *path, int is_dir);
int dsctl_walk(const char *root, dsctl_walk_cb cb, void *arg);
/*
 * git's config: the last value of section.key in text (names caseless,
 * quotes and escapes undone, comments cut), or NULL; free it.
 */
char *dsctl_git_config_get(const char *text, size_t len,
    const char *section, const char *key);
/* where git's global excludes are (core.excludesFile or the default);
 * NULL when HOME and XDG_CONFIG_HOME are unset; free it */
char *dsctl_git_excludes_file(void);


/* ---- the code archive (pack.c) ----------------------------------------- */

typedef struct {
    char           *path;       /* temporary file, removed by free */
    void           *data;       /* mapped archive */
    size_t          len;
    size_t          files;
    char            hash[65];   /* sha256 hex */
} dsctl_pack_t;

/* tar.gz of dir honouring .gitignore; -1 after printing an error */
int dsctl_pack(const char *dir, dsctl_pack_t *pk);
/* tar.gz of the spec's files at the places they go (files: none, an
 * empty pk); -1 after printing an error */
int dsctl_pack_files(const char *dir, const cJSON *spec, dsctl_pack_t *pk);
void dsctl_pack_free(dsctl_pack_t *pk);
/* packs dir and PUTs it to /api/code/<hash>; fills hash */
int dsctl_pack_upload(const char *dir, char hash[65]);
/* the spec's files, packed and uploaded: hash "" when it has none */
int dsctl_pack_upload_files(const char *dir, const cJSON *spec,
    char hash[65]);


/* ---- spec helpers (spec.c) --------------------------------------------- */

typedef struct {
    char           *file;       /* as given */
    cJSON          *spec;       /* normalized, env resolved */
} dsctl_spec_t;

/*
 * Reads, parses and validates FILE (errors "file:line:col: message" on
 * stderr), then fills env from the environment and the -e overrides
 * (K=V strings) when resolve is set (apply and offer; the fleet
 * check does not).  Returns 0, or -1 after
 * printing the errors.
 */
/* a YAML document's parser and env resolution (ds_spec_*, ds_fleet_*) */
typedef int (*dsctl_parse_fn)(const char *filename, const char *text,
    size_t len, cJSON **normalized, ds_err_t *err);
typedef int (*dsctl_resolve_fn)(cJSON *normalized,
    const char *const *overrides, char *(*getenv_fn)(const char *),
    ds_err_t *err);
int dsctl_doc_load(dsctl_spec_t *sp, const char *file, char **overrides,
    int n_overrides, dsctl_parse_fn parse, dsctl_resolve_fn resolve,
    const char *what);
int dsctl_spec_load(dsctl_spec_t *sp, const char *file,
    char **overrides, int n_overrides, int resolve);
void dsctl_spec_free(dsctl_spec_t *sp);
/* a file's text, or stdin's (read once, kept) for "-"; free it */
char *dsctl_read_input(const char *file, size_t *len);

/* --cpu, --gpu, --memory, --disk (dstack's syntax, as in a file) */
typedef struct {
    const char     *cpu;
    const char     *gpu;
    const char     *memory;
    const char     *disk;
} dsctl_resource_opt_t;
#define DSCTL_RESOURCE_OPTS_SET(ro) \
    ((ro)->cpu != NULL || (ro)->gpu != NULL || (ro)->memory != NULL \
     || (ro)->disk != NULL)
/* replaces resources.KEY of a normalized spec with VALUE's; -1 after
 * printing "--KEY: why" (the spec may then be half changed) */
int dsctl_spec_override(cJSON *spec, const char *key, const char *value);
int dsctl_spec_overrides(cJSON *spec, const dsctl_resource_opt_t *ro);
/* a normalized spec with only these resources (offer without -f) */
cJSON *dsctl_spec_resources_only(const dsctl_resource_opt_t *ro);
/* one-line summaries for the plan table */
void dsctl_spec_resources(const cJSON *spec, dsctl_str_t *out);
void dsctl_spec_replicas(const cJSON *spec, dsctl_str_t *out);
/* "name" of the spec's model, or NULL */
const char *dsctl_spec_model(const cJSON *spec);
const char *dsctl_spec_model_prefix(const cJSON *spec);

/* offers: "16xCPU, 62GB, 100GB (disk), 1xH100 (80GB)" */
void dsctl_offer_resources(const cJSON *res, dsctl_str_t *out);
/* the offers table: at most max rows (0 = all), cheapest first */
void dsctl_print_offers(const cJSON *offers, int total, int max);


/* ---- SSH fleets (fleet.c, cmd_fleet.c) ---------------------------------- */

/* 1 when FILE is a fleet's ("type: fleet"), for apply to choose */
int dsctl_fleet_is_file(const char *file);
/* as dsctl_spec_load, for a fleet file (env always resolved) */
int dsctl_fleet_load(dsctl_spec_t *sp, const char *file, char **overrides,
    int n_overrides);
/*
 * {"<identity_file as in the spec>": "<PEM>"} for every host and proxy
 * jump; NULL after printing which file of which host is wrong.
 */
cJSON *dsctl_fleet_keys(const cJSON *spec);
/* a host's "4xCPU, 8GB, 100GB, 1xH100", or "-" */
void dsctl_host_resources(const cJSON *res, dsctl_str_t *out);
/* the plan's hosts table */
void dsctl_print_hosts(const cJSON *hosts);
/* apply for a fleet file: plan, confirm, apply, follow the hosts */
int dsctl_fleet_apply(const char *file, const char *name, char **envs,
    int n_envs, int yes, int detach);

#endif /* DSTACKCTL_H */
