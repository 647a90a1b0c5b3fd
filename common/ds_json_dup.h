/*
 * Duplicate keys in a parsed JSON document.  cJSON keeps every member
 * of an object, and its look-ups return the first while loops see all:
 * {"scope":"services","scope":"admin"} means one thing to one reader and
 * another to the next.  Input from outside is refused when any object in
 * it names a key twice (compared byte for byte, as JSON does: "Name"
 * and "name" differ).
 */

#ifndef DS_JSON_DUP_H
#define DS_JSON_DUP_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* objects with more members than this are checked by sorting */
#define DS_JSON_DUP_LINEAR      16

/*
 * Walks the whole tree (objects in arrays too).  Returns 0 when no
 * object has a key twice; -1 with err set to "<where>: duplicate key
 * \"<key>\"", where is `base` for the top level ("body") and
 * base.member[index]... below it, for the first object in document order
 * that has one, and its first repeated key; -1 with "out of memory" too.
 * O(n log n) in the number of members; the depth is cJSON's own limit.
 */
int ds_json_dup_check(const cJSON *root, const char *base, char *err,
    size_t n);

#endif /* DS_JSON_DUP_H */
