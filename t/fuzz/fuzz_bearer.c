/*
 * libFuzzer target for ds_bearer: never reads outside the value, and a
 * token it gives is inside it, after a case-insensitive "Bearer ", not
 * empty, not longer than DS_BEARER_TOKEN_MAX, with no space at either
 * end.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ds_bearer.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int          rc;
    char        *copy;
    size_t       len;
    const char  *tok;

    /* a copy of exactly size bytes, so ASan sees any read past the end */
    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    rc = ds_bearer_token(copy, size, &tok, &len);

    if (rc == DS_BEARER_OK) {
        if (size < 7 || strncasecmp(copy, "Bearer ", 7) != 0
            || tok < copy + 7 || tok + len > copy + size
            || len == 0 || len > DS_BEARER_TOKEN_MAX
            || tok[0] == ' ' || tok[len - 1] == ' ')
        {
            abort();
        }

    } else if (rc != DS_BEARER_INVALID) {
        abort();
    }

    free(copy);
    return 0;
}
