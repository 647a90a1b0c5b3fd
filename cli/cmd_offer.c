/*
 * dstackctl offer -f FILE [-e K=V]... [--cpu|--gpu|--memory|--disk SPEC]
 *     [--json]
 * dstackctl offer --gpu 24GB..80GB:2 [...]
 *
 * What the backends offer for the service in FILE (env resolved as apply
 * does it, so that a file apply takes offer takes too), or for the
 * resources given as options alone, cheapest first, without submitting
 * anything.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dstackctl.h"


#define DSCTL_OFFER_USAGE \
    "dstackctl offer [-f FILE] [-e K=V]... [--cpu SPEC] [--gpu SPEC]\n" \
    "       [--memory SPEC] [--disk SPEC] [--json]"


static void
dsctl_offer_help(void)
{
    printf("usage: %s\n\n", DSCTL_OFFER_USAGE);
    printf(
        "List the offers that match the resources of the service in FILE,\n"
        "or of the options alone, cheapest first.  Nothing is submitted.\n\n"
        "  -f, --file FILE   the .dstack.yml (\"-\": stdin)\n"
        "  -e, --env K=V     set an env variable, as apply does\n"
        "      --cpu SPEC    CPUs (e.g. 4.., 2..8); over FILE's\n"
        "      --gpu SPEC    GPUs (e.g. 24GB..80GB:2, H100:1)\n"
        "      --memory SPEC memory (e.g. 16GB..)\n"
        "      --disk SPEC   disk (e.g. 200GB..)\n"
        "      --json        {\"offers\":[...],\"total\":N} as the API "
        "gives them\n"
        "      --project P   the project (else DSTACK_PROJECT, else\n"
        "                    \"project:\" in the config file, else main)\n"
        "  -h, --help        this help\n");
}


const char  dsctl_offer_short[] = ":f:e:h";

const struct option  dsctl_offer_opts[] = {
    { "file", required_argument, NULL, 'f' },
    { "env", required_argument, NULL, 'e' },
    { "cpu", required_argument, NULL, 'C' },
    { "gpu", required_argument, NULL, 'G' },
    { "memory", required_argument, NULL, 'M' },
    { "disk", required_argument, NULL, 'D' },
    { "json", no_argument, NULL, 'j' },
    DSCTL_PROJECT_OPTION,
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
};


int
cmd_offer(int argc, char **argv)
{
    dsctl_config_t   cfg;
    dsctl_spec_t     sp;
    dsctl_resp_t     resp;
    dsctl_resource_opt_t  ro = { NULL, NULL, NULL, NULL };
    const char      *file = NULL;
    const cJSON     *offers;
    cJSON           *req, *out;
    char            *text, **envs;
    int              json = 0, c, rc, n_envs = 0;

    envs = dsctl_xmalloc(sizeof(char *) * (argc + 1));
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, dsctl_offer_short,
            dsctl_offer_opts, NULL)) != -1)
    {
        switch (c) {
        case 'f': file = optarg; break;
        case 'e': envs[n_envs++] = optarg; break;
        case 'C': ro.cpu = optarg; break;
        case 'G': ro.gpu = optarg; break;
        case 'M': ro.memory = optarg; break;
        case 'D': ro.disk = optarg; break;
        case 'j': json = 1; break;
        case DSCTL_OPT_PROJECT: dsctl_project_select(optarg); break;
        case 'h': dsctl_offer_help(); free(envs); return DSCTL_EXIT_OK;
        default:
            free(envs);
            return dsctl_opt_error(DSCTL_OFFER_USAGE, c, argv);
        }
    }
    if (optind < argc) {
        free(envs);
        return dsctl_usage(DSCTL_OFFER_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (file == NULL && !DSCTL_RESOURCE_OPTS_SET(&ro)) {
        free(envs);
        return dsctl_usage(DSCTL_OFFER_USAGE, "offer needs -f FILE, or "
            "resources (--cpu, --gpu, --memory, --disk)");
    }
    if (file == NULL && n_envs > 0) {
        free(envs);
        return dsctl_usage(DSCTL_OFFER_USAGE, "-e needs -f FILE: without "
            "a file there is no env to set");
    }

    /* env resolved as apply does: a bare name missing here is the same
     * error as there */
    if (file != NULL) {
        rc = dsctl_spec_load(&sp, file, envs, n_envs, 1);
        free(envs);
        if (rc != 0) {
            return DSCTL_EXIT_FAIL;
        }
        if (dsctl_spec_overrides(sp.spec, &ro) != 0) {
            dsctl_spec_free(&sp);
            return DSCTL_EXIT_USAGE;
        }
    } else {
        free(envs);
        memset(&sp, 0, sizeof(sp));
        sp.spec = dsctl_spec_resources_only(&ro);
        if (sp.spec == NULL) {
            return DSCTL_EXIT_USAGE;
        }
        sp.file = dsctl_xstrdup("--");
    }
    if (dsctl_client_open(&cfg) != 0) {
        dsctl_spec_free(&sp);
        return DSCTL_EXIT_FAIL;
    }

    req = cJSON_CreateObject();
    cJSON_AddItemReferenceToObject(req, "spec", sp.spec);
    rc = dsctl_api_call("POST", "/api/runs/plan", req, 0, &resp);
    cJSON_Delete(req);
    if (rc != 0) {
        rc = DSCTL_EXIT_FAIL;
        goto done;
    }

    offers = cJSON_GetObjectItemCaseSensitive(resp.json, "offers");
    if (json) {
        out = cJSON_CreateObject();
        cJSON_AddItemReferenceToObject(out, "offers", (cJSON *) offers);
        cJSON_AddNumberToObject(out, "total",
            dsctl_json_num(resp.json, "total", cJSON_GetArraySize(offers)));
        text = cJSON_Print(out);
        printf("%s\n", text);
        free(text);
        cJSON_Delete(out);
    } else if (cJSON_GetArraySize(offers) == 0) {
        if (file != NULL) {
            dsctl_error("no offers match the requirements of \"%s\"", file);
        } else {
            dsctl_error("no offers match the resources asked for");
        }
        rc = DSCTL_EXIT_FAIL;
        goto done;
    } else {
        dsctl_print_offers(offers, (int) dsctl_json_num(resp.json, "total",
            0), 0);
    }
    rc = DSCTL_EXIT_OK;

done:
    dsctl_resp_free(&resp);
    dsctl_config_free(&cfg);
    dsctl_spec_free(&sp);
    return rc;
}
