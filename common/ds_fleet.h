/*
 * Fleet files: dstack's SSH fleets (`type: fleet` with `ssh_config`),
 * parsed, validated and normalized by the validator of service specs
 * (ds_spec_impl.h), so that both ends read them alike: dstackctl reads
 * the file, controld validates the JSON it is sent again.
 *
 * Errors in a file name the place and the field, because one line of a
 * long host list says little alone:
 *
 *   fleet.dstack.yml:12:5: ssh_config.hosts[1].port: must be 1..65535,
 *   got 70000
 *
 * and in JSON the field only ("spec.ssh_config.hosts[1].port: ...").
 * Cloud fleets' keys (nodes, resources, backends, ...) are refused by
 * name: only SSH fleets are supported.
 *
 * The normalized JSON is the wire format.  Every field is present, in a
 * fixed order; each host has its fields resolved from ssh_config's, so
 * that the daemon never needs to know about inheritance:
 *
 *   {"type":"fleet", "name":null|"my-fleet", "placement":"any"|"cluster",
 *    "env":{"K":"V","FROM_CLI_ENV":null}, "blocks":1|"auto",
 *    "ssh_config":{"user":null|"ubuntu", "port":22,
 *                  "identity_file":null|"~/.ssh/id_rsa",
 *                  "proxy_jump":null|{"hostname":"...","port":22,
 *                                     "user":null|"...",
 *                                     "identity_file":null|"..."},
 *                  "hosts":[{"hostname":"10.0.0.1","port":22,
 *                            "user":"ubuntu",
 *                            "identity_file":"~/.ssh/id_rsa",
 *                            "proxy_jump":null|{"hostname","port",
 *                                               "user","identity_file"},
 *                            "internal_ip":null|"10.0.0.5",
 *                            "blocks":1|"auto"}]}}
 *
 * A host's port defaults to ssh_config's, else 22; its user and
 * identity_file to ssh_config's (one of the two must set them); its
 * proxy_jump to ssh_config's, whose user and identity_file default to
 * the host's; its blocks to the fleet's (1 by default).  No two hosts
 * share a hostname and port.  Hostnames are DNS names or IP addresses
 * that cannot pass for ssh options (no leading "-", no spaces, "@" or
 * ":" but in IPv6 addresses); users are [a-z_][a-z0-9_.-]*.
 * identity_file is the path on the CLI's machine, as written ("~/"
 * unexpanded): the CLI sends the keys' text beside the spec, under these
 * names.  "env" values of null are bare names still to be taken from the
 * CLI's environment (ds_fleet_resolve_env).
 *
 * The validator accepts its own output unchanged.
 */

#ifndef DS_FLEET_H
#define DS_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "ds_spec.h"


#define DS_FLEET_HOSTS_MAX      256
#define DS_FLEET_BLOCKS_MAX     1024    /* a host's share of its GPUs */
#define DS_FLEET_HOSTNAME_MAX   253     /* characters, as DNS */
#define DS_FLEET_USER_MAX       32      /* characters, as useradd */
#define DS_FLEET_SSH_PORT       22

#define DS_FLEET_PLACEMENT_ANY      0
#define DS_FLEET_PLACEMENT_CLUSTER  1

#define DS_FLEET_BLOCKS_AUTO    0       /* "auto": one per GPU */


typedef struct {
    const char         *hostname;
    uint16_t            port;
    const char         *user;
    const char         *identity_file;
} ds_fleet_jump_t;

typedef struct {
    const char         *hostname;
    uint16_t            port;
    const char         *user;
    const char         *identity_file;
    const ds_fleet_jump_t *proxy_jump;  /* NULL: a direct connection */
    const char         *internal_ip;    /* NULL: none given */
    uint32_t            blocks;         /* DS_FLEET_BLOCKS_AUTO or N */
} ds_fleet_host_t;

/*
 * The typed view of a normalized fleet.  Strings point into `json` (the
 * normalized tree, owned) and stay valid until ds_fleet_free().
 */
typedef struct {
    cJSON              *json;           /* the normalized fleet, owned */

    const char         *name;           /* NULL: the server picks one */
    int                 placement;      /* DS_FLEET_PLACEMENT_* */
    uint32_t            blocks;         /* DS_FLEET_BLOCKS_AUTO or N */
    const ds_spec_env_t *env;
    size_t              n_env;
    const ds_fleet_host_t *hosts;
    size_t              n_hosts;

    void               *priv;           /* allocations behind the arrays */
} ds_fleet_t;


/*
 * The CLI's side: text (len bytes) of the file `filename` -> a new
 * normalized tree.  Returns DS_OK, DS_EINVAL (err: "FILE:LINE:COL:
 * PATH: message") or DS_ERROR (out of memory).
 */
int ds_fleet_parse_yaml(const char *filename, const char *text, size_t len,
    cJSON **normalized, ds_err_t *err);

/*
 * The daemon's side: any JSON fleet -> a new normalized tree.  Errors
 * name the field: "spec.ssh_config.hosts[1].port: ...".
 */
int ds_fleet_validate_json(const cJSON *in, cJSON **normalized,
    ds_err_t *err);

/* ds_spec_resolve_env() for a fleet's "env": the same rules */
int ds_fleet_resolve_env(cJSON *normalized, const char *const *overrides,
    char *(*getenv_fn)(const char *), ds_err_t *err);

/*
 * Validates (as ds_fleet_validate_json) and fills fleet, which then
 * owns a normalized copy; free it with ds_fleet_free() whatever this
 * returns.
 */
int ds_fleet_from_json(const cJSON *normalized, ds_fleet_t *fleet,
    ds_err_t *err);
void ds_fleet_free(ds_fleet_t *fleet);

#endif /* DS_FLEET_H */
