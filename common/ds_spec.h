/*
 * Service specs: the `.dstack.yml` of a service, parsed, validated and
 * normalized.
 *
 * One validator serves both ends.  dstackctl reads the file with libyaml
 * into a cJSON tree, remembering where each node was, and validates it:
 * errors read "serve.dstack.yml:12:5: unknown key "gpus" (did you mean
 * "gpu"?)".  controld receives the normalized JSON over its API and runs
 * the same validator again: errors read "spec.resources.gpu: ...".  The
 * validator accepts its own output unchanged (normalize(normalize(x)) ==
 * normalize(x)), so the daemon never trusts the client.
 *
 * The normalized JSON is the wire format.  Every field is present, in a
 * fixed order, with defaults filled in and shorthands expanded:
 *
 *   {"type":"service", "name":null|"my-run",
 *    "port":{"container_port":8000,"local_port":80},
 *    "commands":[...], "image":null|"...", "python":null|"3.11",
 *    "env":{"K":"V","FROM_CLI_ENV":null},
 *    "working_dir":null, "entrypoint":null, "shell":null, "user":null,
 *    "privileged":false,
 *    "registry_auth":null|{"username":"...","password":"..."},
 *    "volumes":[{"instance_path":"/host","path":"/ctr",
 *                "read_only":false,"optional":false}
 *              |{"name":"vol-name","path":"/ctr","read_only":false}],
 *    "files":[{"local_path":"src","path":null|"/ctr/src"}],
 *    "resources":{"cpu":{"arch":null|"x86"|"arm",
 *                        "count":{"min":2,"max":null}},
 *                 "memory":{"min":8192,"max":null},          (MB)
 *                 "disk":{"min":102400,"max":null},          (MB)
 *                 "gpu":{"vendor":null|"nvidia"|...,
 *                        "name":null|["A100","H100"],
 *                        "count":{"min":0,"max":null},
 *                        "memory":null|{"min":81920,"max":81920},
 *                        "total_memory":null|{...}},
 *                 "shm_size":null|MB},
 *    "replicas":{"min":1,"max":1},
 *    "scaling":null|{"metric":"rps"|"inflight"|"ttft","target":10,
 *                    "window":60,"scale_up_delay":300,
 *                    "scale_down_delay":600},
 *    "auth":true, "https":true|false|"auto",
 *    "model":null|{"type":"chat","name":"...","format":"openai",
 *                  "prefix":"/v1"}
 *                |{"type":"chat","name":"...","format":"tgi",
 *                  "chat_template":null,"eos_token":null},
 *                (either with "routing":{"affinity":"prefix"|"session",
 *                  "prefix_bytes":512,"session_header":null|"...",
 *                  "load_factor":1.25} after "format", when set,
 *                 and "budget":{"rpm":null|N,"tpm":null|N,"tpd":null|N,
 *                  "max_tokens":null|N} after it, when set)
 *    "rate_limits":[{"prefix":"/","key":{"type":"ip_address"},
 *                    "rps":10,"burst":0}],
 *    "probes":null|[{"type":"http","url":"/","method":"get",
 *                    "headers":[{"name":"...","value":"..."}],
 *                    "body":null,"timeout":10,"interval":15,
 *                    "ready_after":1,"until_ready":false}],
 *    "spot_policy":"on-demand", "max_price":null|1.5,
 *    "backends":null|["local","ssh"], "regions":null|[...],
 *    "fleets":null|["my-fleet",...],
 *    "retry":null|{"on_events":["no-capacity",...],"duration":3600},
 *    "max_duration":"off"|SECONDS, "stop_duration":300|"off",
 *    "strip_prefix":true, "gateway":null|true|false|"name"}
 *
 * Ranges are {"min","max"} with null for an open end; durations are
 * seconds; sizes are MB.  A bare size without a unit means GB in a file
 * (as in dstack: "memory: 16") and MB in JSON (the wire format), so that
 * the normalized numbers read back unchanged.  "probes": null means the
 * file had none (with an openai model the default probe applies, see
 * ds_spec_from_json); [] means none at all.  "env" values of null are
 * bare names still to be taken from the CLI's environment
 * (ds_spec_resolve_env).
 *
 * Volumes: "/host:/ctr[:ro]" and {instance_path, path, optional} are
 * instance volumes; "vol-name:/ctr[:ro]" and {name, path} are dstack's
 * network volumes, which the daemon maps to named volumes of the
 * container engine.  Paths are absolute, without ".."
 * components, normalized as dstack does (no repeated "/", no "."
 * components, no trailing "/"); no two volumes share a container path.
 * "files" paths null mean the working directory joined with the local
 * path's relative form (the CLI packs the files).  "docker": false is
 * accepted and dropped; true (Docker in Docker) is refused.
 *
 * "backends" are lowercase words; dstack's "remote" (the backend of SSH
 * fleets' hosts) is normalized to "ssh", our name for it.  "fleets"
 * names the SSH fleets (ds_fleet.h) whose hosts a run may take, each a
 * valid run name; null means any.
 *
 * "registry_auth" holds the registry password in clear: it travels to
 * the daemon and on to the container engine, and must never be logged,
 * printed or put in an error message (ds_spec_t.registry_auth too).
 *
 * "env" values and registry_auth's username and password may name
 * secrets, "${{ secrets.NAME }}" (ds_secret.h): the validator checks the
 * references' form, the normalized spec keeps them as written, and
 * controld puts the values in when a replica starts.
 */

#ifndef DS_SPEC_H
#define DS_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_state.h"


#define DS_SPEC_INPUT_MAX       (1024 * 1024)   /* bytes of YAML */
#define DS_SPEC_DEPTH_MAX       32              /* nesting levels */
#define DS_SPEC_NODES_MAX       65536           /* YAML nodes, aliases
                                                   expanded */
#define DS_SPEC_ENV_MAX         1024
#define DS_SPEC_COMMANDS_MAX    4096
#define DS_SPEC_PROBES_MAX      16
#define DS_SPEC_HEADERS_MAX     16
#define DS_SPEC_LIST_MAX        64      /* backends, regions, fleets,
                                           GPU names */
#define DS_SPEC_VOLUMES_MAX     32
#define DS_SPEC_FILES_MAX       64
#define DS_SPEC_FS_PATH_MAX     4095    /* characters of a path */

#define DS_SPEC_UNLIMITED       UINT64_MAX      /* a range's open max */
#define DS_SPEC_OFF             UINT32_MAX      /* a duration set "off" */

#define DS_SPEC_ARCH_ANY        0
#define DS_SPEC_ARCH_X86        1
#define DS_SPEC_ARCH_ARM        2

#define DS_SPEC_VENDOR_ANY      0
#define DS_SPEC_VENDOR_NVIDIA   1
#define DS_SPEC_VENDOR_AMD      2
#define DS_SPEC_VENDOR_GOOGLE   3
#define DS_SPEC_VENDOR_INTEL    4
#define DS_SPEC_VENDOR_TENSTORRENT 5

#define DS_SPEC_HTTPS_OFF       0
#define DS_SPEC_HTTPS_ON        1
#define DS_SPEC_HTTPS_AUTO      2

#define DS_SPEC_METRIC_RPS      0
#define DS_SPEC_METRIC_INFLIGHT 1       /* our extension */
#define DS_SPEC_METRIC_TTFT     2       /* ours: p99 time to first token,
                                           target in seconds */

#define DS_SPEC_SPOT_ONDEMAND   0
#define DS_SPEC_SPOT_SPOT       1
#define DS_SPEC_SPOT_AUTO       2

#define DS_SPEC_METHOD_GET      0
#define DS_SPEC_METHOD_POST     1
#define DS_SPEC_METHOD_PUT      2
#define DS_SPEC_METHOD_DELETE   3
#define DS_SPEC_METHOD_PATCH    4
#define DS_SPEC_METHOD_HEAD     5

#define DS_SPEC_RETRY_NO_CAPACITY   0x01
#define DS_SPEC_RETRY_INTERRUPTION  0x02
#define DS_SPEC_RETRY_ERROR         0x04

#define DS_SPEC_GATEWAY_DEFAULT 0       /* omitted: the default if any */
#define DS_SPEC_GATEWAY_NONE    1       /* false */
#define DS_SPEC_GATEWAY_ANY     2       /* true: the default, required */
#define DS_SPEC_GATEWAY_NAMED   3       /* gateway_name */

#define DS_SPEC_VOLUME_INSTANCE 0       /* a host path */
#define DS_SPEC_VOLUME_NAMED    1       /* a named volume of the engine */


/* min 0 also stands for an open min; max DS_SPEC_UNLIMITED for open */
typedef struct {
    uint64_t            min;
    uint64_t            max;
} ds_spec_range_t;

typedef struct {
    const char         *name;
    const char         *value;          /* NULL: not resolved yet */
} ds_spec_env_t;

typedef struct {
    const char         *name;
    const char         *value;
} ds_spec_header_t;

typedef struct {
    const char         *url;
    int                 method;         /* DS_SPEC_METHOD_* */
    const ds_spec_header_t *headers;
    size_t              n_headers;
    const char         *body;           /* NULL: none */
    uint32_t            timeout;        /* seconds */
    uint32_t            interval;       /* seconds */
    uint32_t            ready_after;
    int                 until_ready;
} ds_spec_probe_t;

typedef struct {
    const char         *prefix;
    uint32_t            key_type;       /* DS_RL_KEY_* */
    const char         *header;         /* DS_RL_KEY_HEADER */
    double              rps;
    uint32_t            rps_milli;      /* as ds_rate_limit_t wants it */
    uint32_t            burst;
} ds_spec_rate_limit_t;

typedef struct {
    int                 kind;           /* DS_SPEC_VOLUME_* */
    const char         *host_path;      /* INSTANCE; NULL for NAMED */
    const char         *name;           /* NAMED; NULL for INSTANCE */
    const char         *path;           /* in the container */
    int                 read_only;
    int                 optional;       /* INSTANCE: a missing host path
                                           is no error */
} ds_spec_volume_t;

typedef struct {
    const char         *local;          /* as written, on the CLI's side */
    const char         *path;           /* NULL: working_dir + local */
} ds_spec_file_t;

/*
 * The typed view of a normalized spec, for the daemon.  Strings point
 * into `json` (the normalized tree, owned) and stay valid until
 * ds_spec_free().
 */
typedef struct {
    cJSON              *json;           /* the normalized spec, owned */

    const char         *name;           /* NULL: the server picks one */
    uint16_t            port;           /* container_port */
    uint16_t            local_port;

    const char *const  *commands;
    size_t              n_commands;
    const char         *image;
    const char         *python;
    const ds_spec_env_t *env;
    size_t              n_env;
    const char         *working_dir;
    const char         *entrypoint;
    const char         *shell;
    const char         *user;
    int                 privileged;

    struct {
        const char     *username;       /* NULL: none */
        const char     *password;       /* never log it */
    } registry_auth;

    const ds_spec_volume_t *volumes;
    size_t              n_volumes;
    const ds_spec_file_t *files;
    size_t              n_files;

    struct {
        int             cpu_arch;       /* DS_SPEC_ARCH_* */
        ds_spec_range_t cpu;
        ds_spec_range_t memory_mb;
        ds_spec_range_t disk_mb;
        uint64_t        shm_size_mb;    /* 0: not set */
        struct {
            int         vendor;         /* DS_SPEC_VENDOR_* */
            const char *const *names;   /* any of them; none: any GPU */
            size_t      n_names;
            ds_spec_range_t count;
            ds_spec_range_t memory_mb;  /* per GPU; 0..unlimited if unset */
            ds_spec_range_t total_memory_mb;
        } gpu;
    } resources;

    ds_spec_range_t     replicas;

    struct {
        int             enabled;        /* replicas is a range */
        int             metric;         /* DS_SPEC_METRIC_* */
        double          target;
        uint32_t        window;
        uint32_t        scale_up_delay;
        uint32_t        scale_down_delay;
    } scaling;

    int                 auth;
    int                 https;          /* DS_SPEC_HTTPS_* */

    struct {
        int             enabled;
        const char     *name;
        uint32_t        format;         /* DS_MODEL_* */
        const char     *prefix;         /* openai: "/v1"; tgi: NULL */
        const char     *chat_template;  /* tgi */
        const char     *eos_token;      /* tgi */
        uint32_t        affinity;       /* DS_AFFINITY_*, NONE: least
                                           in-flight */
        uint32_t        prefix_bytes;
        uint32_t        load_factor;    /* x 1000 */
        const char     *session_header; /* DS_AFFINITY_SESSION */
        ds_budget_t     budget;         /* per token; 0: no limit */
    } model;

    const ds_spec_rate_limit_t *rate_limits;
    size_t              n_rate_limits;

    /*
     * The probes from the file, or, without any and with an openai
     * model, dstack's default: POST {prefix}/chat/completions with
     * max_tokens 1 (probes_default is then 1).
     */
    const ds_spec_probe_t *probes;
    size_t              n_probes;
    int                 probes_default;

    int                 spot_policy;    /* DS_SPEC_SPOT_* */
    double              max_price;      /* 0: no limit */
    const char *const  *backends;       /* NULL: any */
    size_t              n_backends;
    const char *const  *regions;        /* NULL: any */
    size_t              n_regions;
    const char *const  *fleets;         /* NULL: any */
    size_t              n_fleets;

    struct {
        int             enabled;
        unsigned        on_events;      /* DS_SPEC_RETRY_* */
        uint32_t        duration;
    } retry;

    uint32_t            max_duration;   /* seconds or DS_SPEC_OFF */
    uint32_t            stop_duration;  /* seconds or DS_SPEC_OFF */
    int                 strip_prefix;
    int                 gateway;        /* DS_SPEC_GATEWAY_* */
    const char         *gateway_name;

    void               *priv;           /* allocations behind the arrays */
} ds_spec_t;


/*
 * The CLI's side: text (len bytes, not necessarily NUL-terminated) of
 * the file `filename` -> a new normalized tree.  Returns DS_OK, DS_EINVAL
 * (err: "FILE:LINE:COL: message") or DS_ERROR (out of memory).
 */
int ds_spec_parse_yaml(const char *filename, const char *text, size_t len,
    cJSON **normalized, ds_err_t *err);

/*
 * As ds_spec_parse_yaml, and appends to warnings (a cJSON array; NULL:
 * none wanted) a string for each field accepted but ignored, as
 * "FILE:LINE:COL: tags: ignored: why".  On error the warnings so far
 * stay in the array.
 */
int ds_spec_parse_yaml_warn(const char *filename, const char *text,
    size_t len, cJSON **normalized, cJSON *warnings, ds_err_t *err);

/*
 * The daemon's side: any JSON spec (normally one already normalized) ->
 * a new normalized tree.  Errors name the field: "spec.resources.gpu:
 * ...".  Returns DS_OK, DS_EINVAL or DS_ERROR.
 */
int ds_spec_validate_json(const cJSON *in, cJSON **normalized,
    ds_err_t *err);

/* as ds_spec_validate_json, with warnings as "spec.tags: ignored: why" */
int ds_spec_validate_json_warn(const cJSON *in, cJSON **normalized,
    cJSON *warnings, ds_err_t *err);

/*
 * Fills the env values left null (bare names in the file) from
 * getenv_fn (getenv when NULL), after applying overrides: "K=V" sets K,
 * a bare "K" takes K from getenv_fn.  Errors name the variable.
 */
int ds_spec_resolve_env(cJSON *normalized, const char *const *overrides,
    char *(*getenv_fn)(const char *), ds_err_t *err);

/*
 * Validates (as ds_spec_validate_json) and fills spec, which then owns a
 * normalized copy; free it with ds_spec_free() whatever this returns.
 */
int ds_spec_from_json(const cJSON *normalized, ds_spec_t *spec,
    ds_err_t *err);
void ds_spec_free(ds_spec_t *spec);

#endif /* DS_SPEC_H */
