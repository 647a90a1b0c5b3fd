/*
 * The run a request is for, from its host: "<run>.<domain>".  Pure, so
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
 * ".<domain>", and a valid run name (ds_valid_run_name); on DS_HOST_OK,
 * *name and *name_len point into host.  Neither string needs a NUL.
 */
int ds_host_run_name(const char *host, size_t host_len, const char *domain,
    size_t domain_len, const char **name, size_t *name_len);

#endif /* DS_HOST_H */
