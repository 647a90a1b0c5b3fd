/*
 * dstackctl offer -f FILE [--json]
 *
 * What the backends offer for the service in FILE, cheapest first,
 * without submitting anything.
 */

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dstackctl.h"


#define DSCTL_OFFER_USAGE  "dstackctl offer -f FILE [--json]"


static void
dsctl_offer_help(void)
{
    printf("usage: %s\n\n", DSCTL_OFFER_USAGE);
    printf(
        "List the offers that match the resources of the service in FILE,\n"
        "cheapest first.  Nothing is submitted.\n\n"
        "  -f, --file FILE   the .dstack.yml\n"
        "      --json        {\"offers\":[...],\"total\":N} as the API "
        "gives them\n"
        "  -h, --help        this help\n");
}


int
cmd_offer(int argc, char **argv)
{
    static const struct option  opts[] = {
        { "file", required_argument, NULL, 'f' },
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    dsctl_config_t   cfg;
    dsctl_spec_t     sp;
    dsctl_resp_t     resp;
    const char      *file = NULL;
    const cJSON     *offers;
    cJSON           *req, *out;
    char            *text;
    int              json = 0, c, rc;

    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f': file = optarg; break;
        case 'j': json = 1; break;
        case 'h': dsctl_offer_help(); return DSCTL_EXIT_OK;
        default: return dsctl_opt_error(DSCTL_OFFER_USAGE, c, argv);
        }
    }
    if (optind < argc) {
        return dsctl_usage(DSCTL_OFFER_USAGE, "unexpected argument \"%s\"",
            argv[optind]);
    }
    if (file == NULL) {
        return dsctl_usage(DSCTL_OFFER_USAGE, "offer needs -f FILE");
    }

    if (dsctl_spec_load(&sp, file, NULL, 0, 0) != 0) {
        return DSCTL_EXIT_FAIL;
    }
    if (dsctl_config_load(&cfg) != 0) {
        dsctl_spec_free(&sp);
        return DSCTL_EXIT_FAIL;
    }
    if (dsctl_api_init(&cfg) != 0) {
        dsctl_config_free(&cfg);
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
        dsctl_error("no offers match the requirements of \"%s\"", file);
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
