/*
 * A validating JSON scanner that finds one top-level string member
 * without building a tree: the gateway reads "model" from OpenAI request
 * bodies with it, in one pass, allocating nothing.
 */

#ifndef DS_JSON_SCAN_H
#define DS_JSON_SCAN_H

#include <stddef.h>
#include <stdint.h>

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
 * The raw text of the top-level members keys[n] of a JSON object (a
 * string's with its quotes), each as it stands in buf: the affinity key
 * of the model endpoint hashes a prompt's bytes as sent.  A span is
 * empty (data NULL) when its member is absent; the first of two wins.
 * The caller has validated buf (ds_json_find_string): this scan stops
 * at the object's end.  DS_JSON_OK or DS_JSON_INVALID.
 */
typedef struct {
    const char     *data;
    size_t          len;
} ds_json_span_t;

int ds_json_find_raw(const char *buf, size_t len, const char *const *keys,
    size_t n, ds_json_span_t *spans);

/*
 * Resolves the escapes of a raw JSON string into out (at least len
 * bytes; the result is never longer).  Returns the length written, or
 * (size_t) -1 when the string has an invalid escape or encodes NUL.
 */
size_t ds_json_unescape(const char *raw, size_t len, char *out);


/*
 * Token counts from OpenAI responses ("usage": {"prompt_tokens": N,
 * "completion_tokens": M}), found by a byte-at-a-time state machine that
 * runs over a response as it streams by, in pieces of any size, without
 * buffering or copying.  The last values seen win (a stream repeats or
 * ends with its usage chunk).
 */
typedef struct {
    uint64_t        prompt;         /* last "prompt_tokens" value */
    uint64_t        completion;     /* last "completion_tokens" value */
    uint64_t        value;          /* digits being read */
    unsigned        match[2];       /* progress in each key */
    unsigned        key;            /* key matched: 1 prompt, 2 completion */
    unsigned        state;          /* 0 scan, 1 after key, 2 digits */
    unsigned        seen;           /* any value stored */
} ds_usage_t;

void ds_usage_scan(ds_usage_t *u, const char *buf, size_t len);

#endif /* DS_JSON_SCAN_H */
