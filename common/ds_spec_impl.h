/*
 * The validator's shared internals, for the common/ds_spec*.c files
 * only: the walk over a tree (ds_spec_check.c), durations, sizes and
 * ranges (ds_spec_range.c), and the validators of each section, which
 * the service's field table (ds_spec.c) puts together.
 *
 * Every validator of a field has the shape ds_vfn_t: it checks `in` (a
 * node of the file's tree, or of JSON from the API) and sets *out to a
 * new normalized node, or leaves it NULL for "absent", or returns
 * DS_EINVAL after ds_v_fail() has written the message.  It never copies
 * its input blindly, so whatever it returns it has checked.
 *
 * Messages name their place as "FILE:LINE:COL: " with a YAML document,
 * or as the field's path ("spec.resources.gpu: ") without one: callers
 * push a name or an index before checking a child, and pop it after.
 */

#ifndef DS_SPEC_IMPL_H
#define DS_SPEC_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_msg.h"
#include "ds_spec.h"
#include "ds_yaml.h"


#define DS_SPEC_PATH_MAX        160
#define DS_SPEC_COUNT_MAX       1000000 /* CPU and GPU counts */
#define DS_SPEC_MEM_MAX_MB      (1ULL << 40)
#define DS_SPEC_DURATION_MAX    0x7fffffff
#define DS_SPEC_PORT_LOCAL      80      /* dstack's local_port for "8000" */
#define DS_SPEC_URL_MAX         2048
#define DS_SPEC_HEADER_NAME_MAX 256
#define DS_SPEC_HEADER_VALUE_MAX 2048
#define DS_SPEC_BODY_MAX        2048
#define DS_SPEC_RPS_MAX         4000000 /* rps_milli fits in a u32 */

#define DS_SPEC_DEFAULT_CPU     2
#define DS_SPEC_DEFAULT_MEM_MB  (8 * 1024)
#define DS_SPEC_DEFAULT_DISK_MB (100 * 1024)
#define DS_SPEC_DEFAULT_WINDOW  60
#define DS_SPEC_DEFAULT_UP      300
#define DS_SPEC_DEFAULT_DOWN    600
#define DS_SPEC_DEFAULT_STOP    300
#define DS_SPEC_DEFAULT_RETRY   3600
#define DS_SPEC_PROBE_TIMEOUT   10
#define DS_SPEC_PROBE_INTERVAL  15
#define DS_SPEC_MODEL_PROBE_TIMEOUT 30


typedef struct {
    const ds_yaml_doc_t  *doc;      /* the CLI's file; NULL: JSON */
    int                   file_units;   /* a bare size is GB, not MB */
    int                   file_paths;   /* with doc: the field's path
                                           after the place, as in
                                           "F:L:C: a.b[1].c: " (fleets) */
    ds_err_t             *err;
    cJSON                *warnings;     /* strings appended; NULL: none
                                           wanted */
    size_t                plen;
    char                  path[DS_SPEC_PATH_MAX];
} ds_vctx_t;

typedef int (*ds_vfn_t)(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* a field whose value is one of a few words, normalized to itself */
typedef struct {
    const char         *what;       /* for messages: "model format" */
    const char *const  *words;
    size_t              n;
} ds_venum_t;

/* DS_VENUM("model format", "openai", "tgi") */
#define DS_VENUM(what, ...)                                                  \
    { (what), (const char *const []) { __VA_ARGS__ },                        \
      sizeof((const char *const []) { __VA_ARGS__ }) / sizeof(char *) }

#define DS_VF_REQUIRED  0x01

typedef struct {
    const char       *name;
    ds_vfn_t          fn;           /* NULL: one of `words` */
    unsigned          flags;
    const ds_venum_t *words;
} ds_vfield_t;

typedef struct {
    const char       *name;
    const char       *why;          /* after the quoted name */
} ds_vunsup_t;

#define DS_NFIELDS(f)   (sizeof(f) / sizeof((f)[0]))

#define DS_V_INT        0           /* counts */
#define DS_V_MEM        1           /* sizes in MB */

typedef struct {
    int               has_min;
    int               has_max;
    uint64_t          min;
    uint64_t          max;
} ds_vrange_t;

/*
 * An item of a list (see ds_v_list), which sees the items accepted so
 * far, to refuse duplicates.
 */
typedef int (*ds_v_item_pt)(ds_vctx_t *c, const cJSON *in,
    const cJSON *done, cJSON **out);


/* ---- ds_spec_check.c: the walk, messages and plain values -------------- */

/*
 * The message about node `at` (key: at its key, for unknown and
 * misplaced keys); returns DS_EINVAL.
 */
int ds_v_fail(ds_vctx_t *c, const cJSON *at, int key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int ds_v_oom(ds_vctx_t *c);

/*
 * A warning about node `at`, placed and named as ds_v_fail's messages
 * are, always with the field's path ("F:L:C: tags: ignored: ..."), and
 * appended to c->warnings.  Returns DS_OK, or DS_ERROR out of memory.
 */
int ds_v_warn(ds_vctx_t *c, const cJSON *at, int key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * A file's text through the loader (ds_yaml.c) and its limits, then
 * through the validator fn of its root: the common start of every kind
 * of file.  empty: what an empty file should have held, for its message
 * ("a service configuration (...)"); file_paths: see ds_vctx_t.
 */
int ds_v_yaml(const char *filename, const char *text, size_t len,
    const char *empty, int file_paths, ds_vfn_t fn, cJSON **normalized,
    cJSON *warnings, ds_err_t *err);

/* push a member's name or a list's index onto the path; pop to old */
size_t ds_v_push(ds_vctx_t *c, const char *name);
size_t ds_v_pushi(ds_vctx_t *c, int i);
void ds_v_pop(ds_vctx_t *c, size_t old);

/* take item (NULL: an allocation failed) into obj or arr */
int ds_v_add(ds_vctx_t *c, cJSON *obj, const char *name, cJSON *item);
int ds_v_append(ds_vctx_t *c, cJSON *arr, cJSON *item);
void ds_v_free_slots(cJSON **s, size_t n);
const cJSON *ds_v_get(const cJSON *obj, const char *name);
int ds_v_dups(ds_vctx_t *c, const cJSON *obj, const cJSON *m);

/*
 * A mapping against its field table (f, nf; u: keys refused by name)
 * into slot[nf]; then the normalized mapping, fields in the table's
 * order, nulls for empty slots.
 */
int ds_v_object(ds_vctx_t *c, const cJSON *in, const ds_vfield_t *f,
    size_t nf, const ds_vunsup_t *u, cJSON **slot);
int ds_v_assemble(ds_vctx_t *c, const ds_vfield_t *f, size_t nf,
    cJSON **slot, cJSON **out);

/*
 * The end of a mapping's validator that has filled slot[nf]: when rc
 * is DS_OK, *out = ds_v_assemble(); the slots are freed either way.
 */
int ds_v_finish(ds_vctx_t *c, const ds_vfield_t *f, size_t nf,
    cJSON **slot, int rc, cJSON **out);

/* a list of at most max items, each checked by item */
int ds_v_list(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *expected, int max, ds_v_item_pt item, cJSON **out);

int ds_v_enum(ds_vctx_t *c, const cJSON *in, const char *what,
    const char *const *w, size_t n, size_t *idx);
int ds_v_f_enum(ds_vctx_t *c, const cJSON *in, const ds_venum_t *e,
    cJSON **out);

int ds_v_is_whole(double d);
int ds_v_uint(ds_vctx_t *c, const cJSON *in, uint64_t min, uint64_t max,
    uint64_t *v);
int ds_v_f_uint(ds_vctx_t *c, const cJSON *in, uint64_t min, uint64_t max,
    cJSON **out);
int ds_v_positive(ds_vctx_t *c, const cJSON *in, const char *what,
    double max, cJSON **out);
int ds_v_has_space(const char *s);
int ds_v_has_ctl(const char *s);
int ds_v_str(ds_vctx_t *c, const cJSON *in, const char **s);
int ds_v_out_str(ds_vctx_t *c, const char *s, cJSON **out);

/*
 * What is wrong with a string, after "invalid WHAT \"value\"": a
 * reason (": must not contain spaces"), "" for no more to say, or NULL
 * when it is fine.
 */
typedef const char *(*ds_vwrong_pt)(const char *s);

int ds_v_f_checked(ds_vctx_t *c, const cJSON *in, const char *what,
    ds_vwrong_pt wrong, cJSON **out);
int ds_v_text(ds_vctx_t *c, const cJSON *in, const char **s, char *buf,
    size_t size);

int ds_v_f_bool(ds_vctx_t *c, const cJSON *in, cJSON **out);
const char *ds_v_run_name_wrong(const char *s);
int ds_v_f_name(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_str(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_anystr(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_text(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* a URL path of some kind, for messages and limits */
typedef struct {
    const char       *what;         /* "url" */
    const char       *expected;     /* "a URL path (e.g. \"/health\")" */
    const char       *banned;       /* refused besides spaces */
    const char       *refused;      /* the message's list of them */
    size_t            max;          /* characters */
} ds_vpath_t;

int ds_v_path(ds_vctx_t *c, const cJSON *in, const ds_vpath_t *p,
    cJSON **out);
int ds_v_f_prefix(ds_vctx_t *c, const cJSON *in, cJSON **out);


/* ---- ds_spec_range.c: durations, sizes, counts and ranges -------------- */

int ds_v_duration(ds_vctx_t *c, const cJSON *in, uint64_t *secs);
int ds_v_f_duration(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_offable(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_parse_uint(const char *s, size_t n, uint64_t max, uint64_t *v);
int ds_v_nospace(const char *s, char *buf, size_t size);
int ds_v_f_end(ds_vctx_t *c, const cJSON *in, cJSON **out, int kind);
int ds_v_range_str(ds_vctx_t *c, const cJSON *at, int kind,
    const char *what, const char *s, ds_vrange_t *r);
int ds_v_range(ds_vctx_t *c, const cJSON *in, int kind, const char *what,
    ds_vrange_t *r);
int ds_v_range_json(ds_vctx_t *c, const ds_vrange_t *r, cJSON **out);
int ds_v_range_field(ds_vctx_t *c, const cJSON *in, cJSON **out, int kind,
    const char *what);
int ds_v_range_default(ds_vctx_t *c, uint64_t min, cJSON **out);


/* ---- the sections ------------------------------------------------------ */

/* ds_spec_container.c: what runs, and how */
int ds_v_f_port(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_commands(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_image(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_python(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_env(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_working_dir(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_shell(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_user(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_registry_auth(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_docker(ds_vctx_t *c, const cJSON *in, cJSON **out);
size_t ds_v_env_name(const char *s);

/* ds_spec_volumes.c: what the container mounts and what it is sent */
int ds_v_f_volumes(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_files(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* ds_spec_resources.c: in NULL gives the defaults */
int ds_v_f_resources(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* ds_spec_scaling.c */
int ds_v_f_replicas(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_scaling(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* ds_spec_model.c */
int ds_v_f_model(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* ds_spec_rate_limits.c */
int ds_v_f_rate_limits(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* ds_spec_probes.c; the methods in DS_SPEC_METHOD_* order */
int ds_v_f_probes(ds_vctx_t *c, const cJSON *in, cJSON **out);
extern const ds_venum_t  ds_spec_methods;

/* ds_spec_profile.c: where and how long it runs; events in bit order */
extern const ds_venum_t  ds_spec_spot_policies;    /* DS_SPEC_SPOT_* */
int ds_v_f_max_price(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_backends(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_regions(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_fleets(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_retry(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_gateway(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_spot_policy(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_tags(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_priority(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_idle_duration(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_creation_policy(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_instance_types(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_availability_zones(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_reservation(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_schedule(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_utilization_policy(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_startup_order(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_stop_criteria(ds_vctx_t *c, const cJSON *in, cJSON **out);
int ds_v_f_backend_options(ds_vctx_t *c, const cJSON *in, cJSON **out);

/* backends we have, and whether a name is one ("remote" too) */
extern const char *const  ds_spec_our_backends[3];
int ds_spec_is_our_backend(const char *name);
extern const char *const  ds_spec_events[3];

#endif /* DS_SPEC_IMPL_H */
