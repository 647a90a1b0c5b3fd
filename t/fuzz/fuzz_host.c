/*
 * libFuzzer target for ds_host_run_name, the gateway's run from the
 * Host: the input is "<domain>\n<host>" (no newline: the host, for the
 * domain "gw.example").  Never reads outside either string (exact-size
 * copies), and its answer is right: DS_HOST_OK only for "<name>.<domain>"
 * with a service key (a run name, or "<run>--<project>"), the name at the
 * host's start; DS_HOST_BAD_NAME only when the suffix is there and the
 * label is not one.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds_host.h"
#include "ds_state.h"


/* the service key rule the long way: split at every "--" */
static int
service_key(const char *s, size_t n)
{
    size_t  i, parts, start;

    if (n > DS_NAME_MAX) {
        return 0;
    }

    parts = 0;
    start = 0;

    for (i = 0; i + 1 < n; i++) {
        if (s[i] == '-' && s[i + 1] == '-') {
            if (parts++ > 0 || !ds_valid_run_name(s, i)) {
                return 0;
            }
            start = i + 2;
        }
    }

    if (parts == 0) {
        return ds_valid_run_name(s, n);
    }

    /* the project: a run name's rules, not ending in '-' (no "--" is
     * left in it: parts is 1) */
    return ds_valid_run_name(s + start, n - start) && s[n - 1] != '-';
}


static char *
copy(const uint8_t *p, size_t n)
{
    char  *c;

    c = malloc(n ? n : 1);
    memcpy(c, p, n);
    return c;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t  *nl;
    const char     *name;
    char           *domain, *host;
    size_t          dlen, hlen, len, label;
    int             rc, suffix;

    nl = memchr(data, '\n', size);
    if (nl != NULL) {
        dlen = (size_t) (nl - data);
        domain = copy(data, dlen);
        hlen = size - dlen - 1;
        host = copy(nl + 1, hlen);
    } else {
        dlen = strlen("gw.example");
        domain = copy((const uint8_t *) "gw.example", dlen);
        hlen = size;
        host = copy(data, size);
    }

    /* what the answer must be, worked out the long way */
    suffix = dlen > 0 && hlen > dlen + 1
             && host[hlen - dlen - 1] == '.'
             && memcmp(host + hlen - dlen, domain, dlen) == 0;
    label = suffix ? hlen - dlen - 1 : 0;

    name = NULL;
    len = 0;
    rc = ds_host_run_name(host, hlen, domain, dlen, &name, &len);

    switch (rc) {
    case DS_HOST_OK:
        if (!suffix || name != host || len != label
            || !service_key(name, len) || memchr(name, '.', len))
        {
            abort();
        }
        break;
    case DS_HOST_BAD_NAME:
        if (!suffix || service_key(host, label)) {
            abort();
        }
        break;
    case DS_HOST_NOT_OURS:
        if (suffix) {
            abort();
        }
        break;
    default:
        abort();
    }

    free(domain);
    free(host);
    return 0;
}
