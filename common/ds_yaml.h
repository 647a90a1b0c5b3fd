/*
 * YAML -> cJSON, remembering where every node was.
 *
 * The loader reads one YAML document with libyaml into a cJSON tree and
 * keeps, beside it (cJSON has no room for it), each node's line and
 * column and, for a plain scalar read as a number, a boolean or null,
 * the text as written ("3.10" stays "3.10", "0660" stays "0660").  So
 * whoever checks the tree can say "file:line:col: message" about any
 * node, and can still read a value as the text the user typed.
 *
 * Plain scalars are resolved as YAML 1.1 (PyYAML, which dstack uses)
 * does for what matters here: yes/no/on/off are booleans, "~" and empty
 * are null, decimal, 0x and 0o integers and floats are numbers; quoted
 * scalars are always strings.  Anchors and aliases are expanded within
 * the node budget; duplicate keys, merge keys, tags other than the core
 * ones, keys that are not scalars and more than one document are
 * refused, each with its place.
 */

#ifndef DS_YAML_H
#define DS_YAML_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_state.h"


#define DS_YAML_INPUT_MAX       (1024 * 1024)   /* bytes, for files */
#define DS_YAML_DEPTH_MAX       32              /* nesting levels */
#define DS_YAML_NODES_MAX       65536           /* nodes, aliases
                                                   expanded */
#define DS_YAML_KEYS_MAX        4096            /* keys in one mapping */

typedef struct ds_yaml_doc_s  ds_yaml_doc_t;


/*
 * text (len bytes, not necessarily NUL-terminated) of the file `file`
 * -> a new document.  Returns DS_OK, DS_EINVAL (err: "FILE:LINE:COL:
 * message") or DS_ERROR (err: "FILE: out of memory").  An empty file
 * is a document whose root is NULL; what that means is the caller's.
 */
int ds_yaml_load(const char *file, const char *text, size_t len,
    ds_yaml_doc_t **doc, ds_err_t *err);

/*
 * The same for the file at path, of at most max bytes; errors as above,
 * or "PATH: strerror" when it cannot be read.
 */
int ds_yaml_load_file(const char *path, size_t max, ds_yaml_doc_t **doc,
    ds_err_t *err);

void ds_yaml_free(ds_yaml_doc_t *doc);

/* the document's root: NULL for an empty file (a "~" file gives null) */
const cJSON *ds_yaml_root(const ds_yaml_doc_t *doc);

/*
 * Where node was, for a message, into buf: "FILE:LINE:COL: ", at its
 * key rather than its value when key is set and it has one (unknown or
 * misplaced keys), or "FILE: " for a node not from the file.
 */
void ds_yaml_where(const ds_yaml_doc_t *doc, const cJSON *node, int key,
    char *buf, size_t size);

/* a plain number, boolean or null as written; NULL for anything else */
const char *ds_yaml_raw(const ds_yaml_doc_t *doc, const cJSON *node);

/*
 * A scalar as the text in the file: a string's value, or a number's,
 * boolean's or null's text as written (an empty value is ""); NULL for
 * lists and mappings.
 */
const char *ds_yaml_text(const ds_yaml_doc_t *doc, const cJSON *node);

#endif /* DS_YAML_H */
