/*
 * The run a request is for, from its host (ds_host.h).
 */

#include <string.h>

#include "ds_host.h"
#include "ds_state.h"


#define DS_HOST_GATEWAY         "gateway"


int
ds_host_run_name(const char *host, size_t host_len, const char *domain,
    size_t domain_len, const char **name, size_t *name_len)
{
    size_t  len;

    /* at least one byte of label and the dot; an empty domain never
     * matches (every host would) */
    if (domain_len == 0 || host_len <= domain_len + 1) {
        return DS_HOST_NOT_OURS;
    }
    len = host_len - domain_len - 1;
    if (host[len] != '.' || memcmp(host + len + 1, domain, domain_len) != 0)
    {
        return DS_HOST_NOT_OURS;
    }

    /* one label: a dot in it fails the name's characters */
    if (!ds_valid_service_key(host, len)) {
        return DS_HOST_BAD_NAME;
    }

    *name = host;
    *name_len = len;
    return DS_HOST_OK;
}


int
ds_host_gateway_project(const char *name, size_t len, const char **project,
    size_t *project_len)
{
    size_t  n;

    n = sizeof(DS_HOST_GATEWAY) - 1;

    if (len < n || memcmp(name, DS_HOST_GATEWAY, n) != 0) {
        return 0;
    }

    if (len == n) {
        *project = name + n;
        *project_len = 0;
        return 1;
    }

    if (len < n + 2 || name[n] != '-' || name[n + 1] != '-'
        || !ds_valid_project_name(name + n + 2, len - n - 2))
    {
        return 0;
    }

    *project = name + n + 2;
    *project_len = len - n - 2;
    return 1;
}
