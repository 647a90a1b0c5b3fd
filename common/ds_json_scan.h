/*
 * A validating JSON scanner that finds one top-level string member
 * without building a tree: the gateway reads "model" from OpenAI request
 * bodies with it, in one pass, allocating nothing.
 */

#ifndef DS_JSON_SCAN_H
#define DS_JSON_SCAN_H

#include <stddef.h>

#define DS_JSON_OK              0
#define DS_JSON_MISSING         1   /* valid, member absent */
#define DS_JSON_NOT_STRING      2   /* valid, member is not a string */
#define DS_JSON_INVALID        -1   /* not a JSON object */

#define DS_JSON_MAX_DEPTH       64

/*
 * Scans the whole of buf (so that invalid JSON is always reported) and
 * looks for the member `key` of the top-level object.  On DS_JSON_OK,
 * val and val_len give the raw string content between the quotes
 * (escapes not yet resolved) and escaped says whether it holds one.
 * On DS_JSON_INVALID, *err_off is the byte offset of the problem.
 */
int ds_json_find_string(const char *buf, size_t len, const char *key,
    const char **val, size_t *val_len, int *escaped, size_t *err_off);

/*
 * Resolves the escapes of a raw JSON string into out (at least len
 * bytes; the result is never longer).  Returns the length written, or
 * (size_t) -1 when the string has an invalid escape or encodes NUL.
 */
size_t ds_json_unescape(const char *raw, size_t len, char *out);

#endif /* DS_JSON_SCAN_H */
