/*
 * The run a request is for, from its host (ds_host.h).
 */

#include <string.h>

#include "ds_host.h"
#include "ds_state.h"


#define DS_HOST_GATEWAY         "gateway"


/* a project name as a host label carries it: [a-z0-9][a-z0-9-]*, no
 * "--" (which would make the label ambiguous) */
static int
ds_host_valid_project(const char *s, size_t len)
{
    size_t  i;

    if (len == 0 || s[0] == '-') {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '-'))
        {
            return 0;
        }

        if (s[i] == '-' && i + 1 < len && s[i + 1] == '-') {
            return 0;
        }
    }

    return 1;
}


int
ds_valid_service_label(const char *s, size_t len)
{
    size_t  i;

    if (len > DS_NAME_MAX) {
        return 0;
    }

    for (i = 0; i + 1 < len; i++) {
        if (s[i] == '-' && s[i + 1] == '-') {
            return ds_valid_run_name(s, i)
                   && ds_host_valid_project(s + i + 2, len - i - 2);
        }
    }

    return ds_valid_run_name(s, len);
}


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
    if (!ds_valid_service_label(host, len)) {
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
        || !ds_host_valid_project(name + n + 2, len - n - 2))
    {
        return 0;
    }

    *project = name + n + 2;
    *project_len = len - n - 2;
    return 1;
}
