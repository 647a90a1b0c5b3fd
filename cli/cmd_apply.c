/*
 * dstackctl apply -f FILE [-y] [-d] [-n NAME] [-e K=V]...
 * dstackctl run DIR -f FILE ...          (dstack's older spelling)
 *
 * A fleet file (type: fleet) creates or updates an SSH fleet instead
 * (cmd_fleet.c).
 *
 * Parse and validate the file (nothing is sent when it is wrong), ask the
 * server for a plan, show it with the offers (and, for a run that
 * exists, what changes), confirm, pack and upload the working directory,
 * submit, then follow the run until it serves (or fails) and print where
 * it is published.  Ctrl-C while following detaches: the run goes on.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ds_state.h"
#include "dstackctl.h"


#define DSCTL_APPLY_USAGE \
    "dstackctl apply -f FILE|- [-y] [-d] [--force] [-n NAME] [-e K=V]...\n" \
    "       [--cpu SPEC] [--gpu SPEC] [--memory SPEC] [--disk SPEC]"
#define DSCTL_RUN_USAGE \
    "dstackctl run DIR -f FILE [-y] [-d] [--force] [-n NAME] [-e K=V]..."

#define DSCTL_OFFERS_SHOWN      3


static void
dsctl_apply_help(int run)
{
    printf("usage: %s\n\n", run ? DSCTL_RUN_USAGE : DSCTL_APPLY_USAGE);
    printf("%s",
        run ? "Submit the service in FILE with DIR as its code (the same as "
              "apply run from DIR).\n\n"
            : "Submit the service in FILE, or update the run of that name, "
              "with the\ncurrent directory as its code.\n\n");
    printf(
        "  -f, --file FILE   the .dstack.yml (default: .dstack.yml); a "
        "fleet's\n"
        "                    (type: fleet) creates or updates that fleet; "
        "\"-\"\n"
        "                    reads it from stdin\n"
        "      --force       a new deployment even when nothing changed "
        "(the\n"
        "                    replicas are replaced one at a time)\n"
        "      --cpu SPEC    override resources.cpu (e.g. 4.., 2..8)\n"
        "      --gpu SPEC    override resources.gpu (e.g. 24GB..80GB:2, "
        "H100)\n"
        "      --memory SPEC override resources.memory (e.g. 16GB..)\n"
        "      --disk SPEC   override resources.disk (e.g. 200GB..)\n"
        "  -y, --yes         do not ask for confirmation\n"
        "  -d, --detach      return once submitted, do not follow the run\n"
        "  -n, --name NAME   the run name (default: the file's \"name\", "
        "else a\n"
        "                    generated one such as yellow-cat-1)\n"
        "  -e, --env K=V     set an env variable (a bare K takes it from "
        "this\n"
        "                    environment); may be repeated\n"
        "      --project P   the project (else DSTACK_PROJECT, else\n"
        "                    \"project:\" in the config file, else main)\n"
        "  -h, --help        this help\n"
        "\n"
        "The working directory is packed honouring .gitignore, "
        ".dstackignore\n"
        "and git's global excludes (never .git), and uploaded.  Ctrl-C "
        "while\nfollowing detaches: the run keeps running.\n");
}


/* ---- the plan ---------------------------------------------------------------- */

/* a JSON value as one short line: strings bare, the rest compact */
static void
dsctl_short_value(const cJSON *v, char *buf, size_t n)
{
    char  *s;

    if (v == NULL || cJSON_IsNull(v)) {
        snprintf(buf, n, "-");
        return;
    }
    if (cJSON_IsString(v)) {
        snprintf(buf, n, "%s", v->valuestring);
    } else {
        s = cJSON_PrintUnformatted(v);
        snprintf(buf, n, "%s", s != NULL ? s : "?");
        free(s);
    }
    /* long values are cut with an ellipsis */
    if (strlen(buf) > 40) {
        strcpy(buf + 37, "...");
    }
}


static void
dsctl_print_plan(const dsctl_config_t *cfg, const dsctl_spec_t *sp,
    const char *name)
{
    dsctl_table_t  *t;
    dsctl_str_t     res = { 0 }, rep = { 0 };
    const char     *spot, *model;
    char            price[32];
    double          max_price;

    dsctl_spec_resources(sp->spec, &res);
    dsctl_spec_replicas(sp->spec, &rep);
    spot = dsctl_json_str(sp->spec, "spot_policy");
    max_price = dsctl_json_num(sp->spec, "max_price", 0);
    if (max_price > 0) {
        dsctl_fmt_price(price, sizeof(price), max_price);
    } else {
        snprintf(price, sizeof(price), "-");
    }
    model = dsctl_spec_model(sp->spec);

    t = dsctl_table_new(2, NULL);
    dsctl_table_addv(t, "Project", cfg->project);
    dsctl_table_addv(t, "Configuration", sp->file);
    dsctl_table_addv(t, "Run name", name);
    dsctl_table_addv(t, "Type", "service");
    dsctl_table_addv(t, "Resources", res.s);
    dsctl_table_addv(t, "Replicas", rep.s);
    if (model != NULL) {
        dsctl_table_addv(t, "Model", model);
    }
    dsctl_table_addv(t, "Spot policy", spot != NULL ? spot : "on-demand");
    dsctl_table_addv(t, "Max price", price);
    dsctl_table_print(t, stdout);
    dsctl_table_free(t);
    dsctl_str_free(&res);
    dsctl_str_free(&rep);
}


static void
dsctl_print_changes(const char *name, const cJSON *changes, int force)
{
    static const char *const  hdr[] = { "FIELD", "OLD", "NEW", "UPDATE" };
    dsctl_table_t  *t;
    const cJSON    *c;
    char            a[64], b[64];
    int             rolling = 0;

    if (cJSON_GetArraySize(changes) == 0 && force) {
        printf("\n Run %s exists and its configuration is unchanged: "
            "--force makes a\n new deployment (a rolling restart)\n", name);
        return;
    }
    if (cJSON_GetArraySize(changes) == 0) {
        printf("\n Run %s exists and its configuration is unchanged "
            "(the code is uploaded and compared)\n", name);
        return;
    }
    printf("\n Run %s exists; these changes will be applied:\n\n", name);
    t = dsctl_table_new(4, hdr);
    cJSON_ArrayForEach(c, changes) {
        dsctl_short_value(cJSON_GetObjectItemCaseSensitive(c, "old"),
            a, sizeof(a));
        dsctl_short_value(cJSON_GetObjectItemCaseSensitive(c, "new"),
            b, sizeof(b));
        if (!dsctl_json_bool(c, "in_place")) {
            rolling = 1;
        }
        dsctl_table_addv(t, dsctl_json_str(c, "field"), a, b,
            dsctl_json_bool(c, "in_place") ? "in place" : "rolling");
    }
    dsctl_table_print(t, stdout);
    dsctl_table_free(t);
    if (rolling) {
        printf(" Rolling changes replace the replicas one at a time, each "
            "new one ready\n before an old one drains.\n");
    }
}


/* ---- following the run ------------------------------------------------------ */

typedef struct {
    const char     *status;
    const char     *message;
    int             ready;
    int             starting;   /* on their way: not failed, not ready */
    int             old;        /* of an older version, still there */
    int             total;
    int             rollout_failed; /* the new version gave up */
    const char     *pulling;    /* a replica's image pull, as it goes */
} dsctl_runstate_t;


static void
dsctl_run_state(const cJSON *run, dsctl_runstate_t *rs)
{
    const cJSON  *reps, *r;
    const char   *st;
    double        version;

    memset(rs, 0, sizeof(*rs));
    rs->status = dsctl_json_str(run, "status");
    rs->message = dsctl_json_str(run, "message");
    if (rs->status == NULL) {
        rs->status = "unknown";
    }
    if (rs->message == NULL) {
        rs->message = "";
    }
    rs->rollout_failed = dsctl_json_bool(
        cJSON_GetObjectItemCaseSensitive(run, "rollout"), "failed");
    /* after an update, replicas of an older version are on their way
     * out: the rollout is done when only the new version serves */
    version = dsctl_json_num(run, "version", 0);
    reps = cJSON_GetObjectItemCaseSensitive(run, "replicas");
    cJSON_ArrayForEach(r, reps) {
        st = dsctl_json_str(r, "status");
        if (st == NULL) {
            continue;
        }
        if (strcmp(st, "terminated") == 0 || strcmp(st, "aborted") == 0
            || strcmp(st, "done") == 0)
        {
            continue;           /* old replicas on their way out */
        }
        rs->total++;
        if (strcmp(st, "pulling") == 0 && rs->pulling == NULL) {
            rs->pulling = dsctl_json_str(r, "message");
        }
        if (version > 0 && dsctl_json_num(r, "version", version) < version
            && strcmp(st, "failed") != 0)
        {
            rs->old++;
        } else if (dsctl_json_bool(r, "ready")) {
            rs->ready++;
        } else if (strcmp(st, "failed") != 0
                   && strcmp(st, "terminating") != 0)
        {
            rs->starting++;
        }
    }
}


/* 1 serving, -1 over (failed, stopped), 0 still on its way */
static int
dsctl_run_settled(const dsctl_runstate_t *rs)
{
    const char  *s = rs->status;

    if (strcmp(s, "failed") == 0 || strcmp(s, "terminated") == 0
        || strcmp(s, "terminating") == 0 || strcmp(s, "done") == 0
        || strcmp(s, "aborted") == 0)
    {
        return -1;
    }
    /* the old version serves on, the new one did not start */
    if (rs->rollout_failed) {
        return -1;
    }
    if (strcmp(s, "running") == 0 && rs->ready > 0 && rs->starting == 0
        && rs->old == 0)
    {
        return 1;
    }
    /* scaled to zero: the gateway holds the first request and starts one */
    if (strcmp(s, "pending") == 0 && rs->total == 0
        && strstr(rs->message, "waiting for requests") != NULL)
    {
        return 1;
    }
    return 0;
}


static void
dsctl_state_line(const char *name, const dsctl_runstate_t *rs,
    dsctl_str_t *out)
{
    out->len = 0;
    dsctl_str_addf(out, "%s  %s", name, rs->status);
    if (rs->total > 0) {
        dsctl_str_addf(out, "  %d/%d replica%s ready", rs->ready,
            rs->total - rs->old, rs->total - rs->old == 1 ? "" : "s");
    }
    if (rs->old > 0) {
        dsctl_str_addf(out, ", %d old", rs->old);
    }
    if (rs->pulling != NULL && rs->pulling[0] != '\0') {
        /* what a first start waits for the longest: the image */
        dsctl_str_addf(out, "  (%s)", rs->pulling);
    } else if (rs->message[0] != '\0') {
        dsctl_str_addf(out, "  (%s)", rs->message);
    }
}


static double
dsctl_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/*
 * Polls the run until it serves or is over.  Returns 1 serving (*final
 * holds the run), 0 detached by Ctrl-C, -1 failed (printed).
 */
static int
dsctl_follow(const char *name, cJSON **final)
{
    static const char   spin[] = "|/-\\";
    dsctl_resp_t        resp;
    dsctl_runstate_t    rs;
    dsctl_str_t         path = { 0 }, line = { 0 }, last = { 0 };
    char               *ename;
    double              start;
    int                 tty, tick = 0, rc = 0, settled, errors = 0;

    tty = dsctl_isatty_out();
    ename = dsctl_url_escape(name);
    dsctl_str_addf(&path, "/api/runs/%s", ename);
    free(ename);
    start = dsctl_now();
    dsctl_str_add(&last, "", 0);

    dsctl_catch_interrupt();
    while (!dsctl_interrupted) {
        if (dsctl_api_call("GET", path.s, NULL, DSCTL_API_QUIET, &resp)
            != 0)
        {
            if (dsctl_interrupted) {
                dsctl_resp_free(&resp);
                break;
            }
            /* a server restarting under us: a few tries, then give up */
            if (dsctl_api_transient(&resp)
                && ++errors < DSCTL_POLL_RETRIES)
            {
                dsctl_resp_free(&resp);
                dsctl_sleep_ms(500);
                continue;
            }
            if (tty) {
                fputs("\r\033[K", stdout);
            }
            if (resp.err_msg[0] != '\0') {
                dsctl_error("%s", resp.err_msg);
            } else {
                dsctl_error("cannot follow the run \"%s\": the server "
                    "answered HTTP %ld", name, resp.status);
            }
            dsctl_resp_free(&resp);
            rc = -1;
            break;
        }
        errors = 0;

        dsctl_run_state(resp.json, &rs);
        dsctl_state_line(name, &rs, &line);
        settled = dsctl_run_settled(&rs);

        if (tty) {
            printf("\r\033[K%c %s  %.0fs", settled ? ' ' : spin[tick++ % 4],
                line.s, dsctl_now() - start);
            fflush(stdout);
        } else if (strcmp(line.s, last.s) != 0) {
            printf("%s\n", line.s);
            fflush(stdout);
            last.len = 0;
            dsctl_str_add(&last, line.s, line.len);
        }

        if (settled != 0) {
            if (tty) {
                printf("\r\033[K%s\n", line.s);
            }
            if (settled < 0 && rs.rollout_failed) {
                dsctl_error("run \"%s\": the update did not roll out: %s",
                    name, rs.message);
                dsctl_resp_free(&resp);
                rc = -1;
                break;
            }
            if (settled < 0) {
                dsctl_error("run \"%s\" %s%s%s (see dstackctl logs %s)",
                    name, rs.status, rs.message[0] ? ": " : "", rs.message,
                    name);
                dsctl_resp_free(&resp);
                rc = -1;
                break;
            }
            *final = resp.json;
            resp.json = NULL;
            dsctl_resp_free(&resp);
            rc = 1;
            break;
        }
        dsctl_resp_free(&resp);
        dsctl_sleep_ms(200);
    }
    dsctl_release_interrupt();

    if (rc == 0) {
        if (tty) {
            fputs("\r\033[K", stdout);
        }
        printf("Detached: the run %s keeps running (dstackctl ps to watch "
            "it, dstackctl stop %s to stop it)\n", name, name);
    }
    dsctl_str_free(&path);
    dsctl_str_free(&line);
    dsctl_str_free(&last);
    return rc;
}


/* "http://x.example.com" -> "http://gateway.example.com" + prefix */
static void
dsctl_model_url(const cJSON *run, const cJSON *spec, dsctl_str_t *out)
{
    const cJSON  *m;
    const char   *url, *host, *dot, *mu;

    m = cJSON_GetObjectItemCaseSensitive(run, "model");
    mu = dsctl_json_str(m, "url");
    if (mu != NULL) {
        dsctl_str_add(out, mu, strlen(mu));
        return;
    }
    url = dsctl_json_str(run, "url");
    if (url == NULL) {
        return;
    }
    host = strstr(url, "://");
    host = host != NULL ? host + 3 : url;
    dot = strchr(host, '.');
    if (dot == NULL) {
        return;
    }
    dsctl_str_add(out, url, (size_t) (host - url));
    dsctl_str_addf(out, "gateway%s%s", dot, dsctl_spec_model_prefix(spec));
}


static void
dsctl_print_published(const cJSON *run, const cJSON *spec, int ready)
{
    const char   *url, *model;
    dsctl_str_t   murl = { 0 };

    url = dsctl_json_str(run, "url");
    if (url != NULL) {
        printf("\nService %s published at:\n  %s\n",
            ready ? "is" : "will be", url);
    }
    model = dsctl_spec_model(spec);
    if (model != NULL) {
        dsctl_model_url(run, spec, &murl);
        if (murl.len > 0) {
            printf("Model %s %s published at:\n  %s\n", model,
                ready ? "is" : "will be", murl.s);
        }
    }
    dsctl_str_free(&murl);
}


const char  dsctl_apply_short[] = ":f:ydn:e:h";

const struct option  dsctl_apply_opts[] = {
    { "file", required_argument, NULL, 'f' },
    { "yes", no_argument, NULL, 'y' },
    { "detach", no_argument, NULL, 'd' },
    { "name", required_argument, NULL, 'n' },
    { "env", required_argument, NULL, 'e' },
    { "force", no_argument, NULL, 'F' },
    { "cpu", required_argument, NULL, 'C' },
    { "gpu", required_argument, NULL, 'G' },
    { "memory", required_argument, NULL, 'M' },
    { "disk", required_argument, NULL, 'D' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


/* ---- the command -------------------------------------------------------------- */

static int
dsctl_apply(int argc, char **argv, int run)
{
    const char      *usage = run ? DSCTL_RUN_USAGE : DSCTL_APPLY_USAGE;
    dsctl_resource_opt_t  ro = { NULL, NULL, NULL, NULL };
    int              force = 0;
    const char      *file = NULL, *name = NULL, *dir = ".", *pname;
    char           **envs;
    int              n_envs = 0, yes = 0, detach = 0, c, rc, exists;
    dsctl_spec_t     sp;
    dsctl_config_t   cfg;
    dsctl_resp_t     plan, applied;
    cJSON           *req, *final = NULL;
    char             hash[65], files[65];
    dsctl_str_t      q = { 0 }, fpath = { 0 };

    envs = dsctl_xmalloc(sizeof(char *) * (argc + 1));
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_apply_short,
            dsctl_apply_opts, NULL)) != -1)
    {
        switch (c) {
        case 'f': file = optarg; break;
        case 'y': yes = 1; break;
        case 'd': detach = 1; break;
        case 'n': name = optarg; break;
        case 'e': envs[n_envs++] = optarg; break;
        case 'F': force = 1; break;
        case 'C': ro.cpu = optarg; break;
        case 'G': ro.gpu = optarg; break;
        case 'M': ro.memory = optarg; break;
        case 'D': ro.disk = optarg; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_apply_help(run); free(envs); return DSCTL_EXIT_OK;
        default:
            free(envs);
            return dsctl_opt_error(usage, c, argv);
        }
    }

    if (run) {
        if (optind >= argc) {
            free(envs);
            return dsctl_usage(usage, "run needs the working directory "
                "(\"dstackctl run . -f FILE\")");
        }
        dir = argv[optind++];
    }
    if (optind < argc) {
        free(envs);
        return dsctl_usage(usage, "unexpected argument \"%s\"", argv[optind]);
    }
    if (name != NULL && !ds_valid_run_name(name, strlen(name))) {
        free(envs);
        return dsctl_usage(usage, "invalid run name \"%s\": lowercase "
            "letters, digits and \"-\", starting with a letter, 2 to 41 "
            "characters", name);
    }
    if (file == NULL) {
        /* dstack's default: .dstack.yml in the working directory */
        dsctl_str_addf(&fpath, "%s/.dstack.yml", dir);
        if (access(fpath.s, F_OK) != 0) {
            dsctl_str_free(&fpath);
            free(envs);
            return dsctl_usage(usage, "no configuration file: give one "
                "with -f FILE");
        }
        file = strcmp(dir, ".") == 0 ? ".dstack.yml" : fpath.s;
    }

    /* a fleet goes its own way: no code, no offers */
    if (dsctl_fleet_is_file(file)) {
        if (force || DSCTL_RESOURCE_OPTS_SET(&ro)) {
            dsctl_str_free(&fpath);
            free(envs);
            return dsctl_usage(usage, "--force, --cpu, --gpu, --memory and "
                "--disk are for a service, \"%s\" is a fleet", file);
        }
        rc = dsctl_fleet_apply(file, name, envs, n_envs, yes, detach);
        dsctl_str_free(&fpath);
        free(envs);
        return rc;
    }

    if (dsctl_spec_load(&sp, file, envs, n_envs, 1) != 0) {
        dsctl_str_free(&fpath);
        free(envs);
        return DSCTL_EXIT_FAIL;
    }
    free(envs);
    /* dstack's profile options: over the file's resources, checked */
    if (dsctl_spec_overrides(sp.spec, &ro) != 0) {
        dsctl_spec_free(&sp);
        dsctl_str_free(&fpath);
        return DSCTL_EXIT_USAGE;
    }
    if (name == NULL) {
        name = dsctl_json_str(sp.spec, "name");
    }

    if (dsctl_config_load(&cfg) != 0) {
        dsctl_spec_free(&sp);
        dsctl_str_free(&fpath);
        return DSCTL_EXIT_FAIL;
    }
    if (dsctl_api_init(&cfg) != 0) {
        rc = DSCTL_EXIT_FAIL;
        goto done_cfg;
    }

    /* the plan */
    req = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(req, "spec", sp.spec);
    if (name != NULL) {
        cJSON_AddStringToObject(req, "name", name);
    }
    rc = dsctl_api_call("POST", "/api/runs/plan", req, 0, &plan);
    cJSON_Delete(req);
    if (rc != 0) {
        dsctl_resp_free(&plan);
        rc = DSCTL_EXIT_FAIL;
        goto done_cfg;
    }
    pname = dsctl_json_str(plan.json, "name");
    if (pname == NULL) {
        pname = name;
    }
    if (pname == NULL) {
        dsctl_error("the server's plan has no run name");
        rc = DSCTL_EXIT_FAIL;
        goto done_plan;
    }
    exists = dsctl_json_bool(plan.json, "exists");

    dsctl_print_plan(&cfg, &sp, pname);
    printf("\n");
    dsctl_print_offers(cJSON_GetObjectItemCaseSensitive(plan.json, "offers"),
        (int) dsctl_json_num(plan.json, "total", 0), DSCTL_OFFERS_SHOWN);
    if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(plan.json,
            "offers")) == 0)
    {
        dsctl_error("no offers match the requirements of \"%s\"", file);
        rc = DSCTL_EXIT_FAIL;
        goto done_plan;
    }
    if (exists) {
        dsctl_print_changes(pname,
            cJSON_GetObjectItemCaseSensitive(plan.json, "changes"), force);
    }
    printf("\n");

    if (!yes) {
        dsctl_str_addf(&q, "%s the run %s?", exists ? "Update" : "Submit",
            pname);
        c = dsctl_confirm(q.s);
        dsctl_str_free(&q);
        if (c < 0) {
            dsctl_error("not submitting \"%s\": no terminal to confirm on "
                "(use -y)", pname);
            rc = DSCTL_EXIT_USAGE;
            goto done_plan;
        }
        if (c == 0) {
            rc = DSCTL_EXIT_OK;
            goto done_plan;
        }
    }

    /* the code and the spec's files, then the run */
    if (dsctl_pack_upload(dir, hash) != 0
        || dsctl_pack_upload_files(dir, sp.spec, files) != 0)
    {
        rc = DSCTL_EXIT_FAIL;
        goto done_plan;
    }
    req = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(req, "spec", sp.spec);
    cJSON_AddStringToObject(req, "name", pname);
    cJSON_AddStringToObject(req, "code", hash);
    if (files[0] != '\0') {
        cJSON_AddStringToObject(req, "files", files);
    }
    if (force) {
        cJSON_AddTrueToObject(req, "force");
    }
    rc = dsctl_api_call("POST", "/api/runs/apply", req, 0, &applied);
    cJSON_Delete(req);
    if (rc != 0) {
        dsctl_resp_free(&applied);
        rc = DSCTL_EXIT_FAIL;
        goto done_plan;
    }
    printf("Run %s %s\n", pname, applied.status == 201 || !exists
        ? "submitted" : "updated");

    if (detach) {
        dsctl_print_published(applied.json, sp.spec, 0);
        dsctl_resp_free(&applied);
        rc = DSCTL_EXIT_OK;
        goto done_plan;
    }
    dsctl_resp_free(&applied);

    fflush(stdout);
    switch (dsctl_follow(pname, &final)) {
    case 1:
        dsctl_print_published(final, sp.spec, 1);
        cJSON_Delete(final);
        rc = DSCTL_EXIT_OK;
        break;
    case 0:
        rc = DSCTL_EXIT_OK;
        break;
    default:
        rc = DSCTL_EXIT_FAIL;
        break;
    }

done_plan:
    dsctl_resp_free(&plan);
done_cfg:
    dsctl_config_free(&cfg);
    dsctl_spec_free(&sp);
    dsctl_str_free(&fpath);
    return rc;
}


int
cmd_apply(int argc, char **argv)
{
    return dsctl_apply(argc, argv, 0);
}


int
cmd_run(int argc, char **argv)
{
    return dsctl_apply(argc, argv, 1);
}
