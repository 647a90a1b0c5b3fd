/*
 * The run a request is for, from its host (ds_host.h).
 */

#include <string.h>

#include "ds_host.h"
#include "ds_state.h"


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

    /* one label: a dot in it fails the run name's characters */
    if (!ds_valid_run_name(host, len)) {
        return DS_HOST_BAD_NAME;
    }

    *name = host;
    *name_len = len;
    return DS_HOST_OK;
}
