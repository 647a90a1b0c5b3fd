/*
 * The service a request is for, from its host: "<run>.<domain>", or
 * "<run>--<project>.<domain>" for a run of a project other than main
 * (one DNS label, so that the "*.<domain>" wildcard record and
 * certificate cover every project).  Pure, so
 * that the gateway module (ngx_http_dstack_handler.c) and the tests and
 * fuzz targets share it.
 */

#ifndef DS_HOST_H
#define DS_HOST_H

#include <stddef.h>

#define DS_HOST_OK              0
#define DS_HOST_NOT_OURS        1   /* not "<label>.<domain>" */
#define DS_HOST_BAD_NAME        2   /* the label is not a run name */

/*
 * host: as nginx validated it (lower case, no port, no trailing dot);
 * domain: the gateway's.  The name is exactly one label in front of
 * ".<domain>", and a service key (ds_valid_service_key); on DS_HOST_OK,
 * *name and *name_len point into host.  Neither string needs a NUL.
 */
int ds_host_run_name(const char *host, size_t host_len, const char *domain,
    size_t domain_len, const char **name, size_t *name_len);

/*
 * 1 when the label ds_host_run_name found is a model endpoint's:
 * "gateway" (main's; *project_len 0) or "gateway--<project>" (*project
 * points into name).  "gateway" is no run name in any project.
 */
int ds_host_gateway_project(const char *name, size_t len,
    const char **project, size_t *project_len);

#endif /* DS_HOST_H */
