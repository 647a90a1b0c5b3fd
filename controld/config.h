/*
 * controld.yml: what the daemon reads at start and on SIGHUP (config.c).
 */

#ifndef CONTROLD_CONFIG_H
#define CONTROLD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define CONTROLD_VERSION        "0.1.0"
#define CONTROLD_CONF           "/etc/dstack/controld.yml"

#define CONTROLD_TICK_MS        100     /* the reconciler's period */

#define ROLE_CONTROLLER         0       /* shared mode: may lead */
#define ROLE_GATEWAY            1       /* shared mode: follows only */

#define NET_AUTO                0       /* netns when root, else host */
#define NET_NETNS               1       /* one network namespace/replica */
#define NET_HOST                2       /* host network, 1 replica/run */

struct local_conf {
    int             enabled;
    int             network;            /* NET_* */
    uint32_t        subnet;             /* host order, e.g. 10.213.0.0 */
    int             subnet_bits;        /* prefix length, <= 28 */
    int             gpus;               /* 1: detect with nvidia-smi */
    char           *nvidia_smi;         /* the command to run */
    char           *amd_smi;            /* AMD's, when nvidia_smi finds
                                           none */
    char           *rocm_smi;           /* AMD's older, without amd_smi */
    unsigned        stop_grace_ms;      /* SIGTERM .. SIGKILL */
    unsigned        drain_unknown_ms;   /* drain bound without stats */
    unsigned        max_failures;       /* before a run fails */
    uint64_t        log_max_size;       /* bytes of a replica's log, 0:
                                           no limit (logrotate.c) */
};

/* backends.container: images through a Docker Engine API */
struct container_conf {
    int             enabled;
    char           *socket;             /* the engine's unix socket */
};

/* tls: in controld.yml; certificates (tls.c) */
struct tls_conf {
    int             acme;               /* tls.acme is set */
    char           *directory;          /* ACME directory URL */
    char           *email;              /* account contact, or NULL */
    char           *eab_kid;            /* external account binding */
    char           *eab_hmac_key;       /* base64url */
    char           *webroot;            /* nginx serves the challenges */
    char           *client;             /* uacme */
    char           *dns_hook;           /* dns-01 wildcard, or NULL */
    long long       renew_before_ms;
    unsigned        retry_ms;           /* first retry after a failure */
};

struct config {
    char           *file;
    char           *state_dir;
    char           *domain;
    char           *api_socket;
    unsigned        api_socket_mode;
    char           *stats_url;          /* URLs separated by a space; ""
                                           when not configured */
    char           *api_listen;         /* "ADDR:PORT": the API on TCP
                                           as well, or NULL */
    char           *replicas_dir;
    char           *service_url;        /* "{name}" is replaced */
    char           *gateway_url;        /* gateway.<domain>: the API and
                                           the model endpoint, no "/" */
    char           *client_config;      /* written at first start */
    char           *notify_socket;      /* module's hold notices, or NULL */
    char           *group;              /* nginx's group: state, sockets */
    char           *api_user;           /* the API process's, when root */
    unsigned        api_connections;    /* open at once, streams too */
    unsigned        api_header_timeout_ms;  /* idle, before a token */
    unsigned        api_body_timeout_ms;    /* idle, an admin's request */
    char           *pidfile;            /* written once ready, or NULL */
    int             log_level;
    char           *state;              /* shared mode: a libpq URI, or
                                           NULL (embedded mode) */
    char           *instance;           /* shared mode: this one's name */
    int             role;               /* ROLE_* */
    unsigned        leader_lease_ms;
    int             shared_keys;        /* any of the above was given */
    struct local_conf local;
    struct container_conf container;
    struct tls_conf tls;
};

extern struct config   *conf;

struct config *config_load(const char *file, char *err, size_t errlen);
void config_free(struct config *c);
/* a libpq URI with any password replaced by "***", for logs and errors */
const char *config_redact_uri(const char *uri, char *buf, size_t len);

#endif /* CONTROLD_CONFIG_H */
