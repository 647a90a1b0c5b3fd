/*
 * Network namespaces of the local backend (netns.c): one per replica,
 * joined to the host by a veth pair with a /30 of backends.local.subnet.
 */

#ifndef CONTROLD_NETNS_H
#define CONTROLD_NETNS_H

#include <stddef.h>

#define NETNS_DIR           "/var/run/netns"

struct replica;

/* the tag of this controld's names, from the state directory */
void netns_init(void);
/*
 * Whether replicas get namespaces, as backends.local.network asks and
 * the host allows: 1 or 0, or -1 with err set when "netns" was asked
 * for and cannot be had.
 */
int netns_choose(char *err, size_t n);

/* a free /30 of the subnet, -1 when none is */
int netns_alloc(void);
/* the host's and the replica's address in the idx-th /30 (each
 * INET_ADDRSTRLEN) */
void netns_addrs(int idx, char *host_ip, char *ns_ip);
/* "dstack-<tag>-<run>-<num>-<index>": 0, or -1 when it did not fit */
int netns_name(const struct replica *rep, char *buf, size_t n);

/* in the replica's process: creates namespace `name` with the idx-th
 * /30 and enters it; fails the replica's setup when it cannot */
void netns_enter(const char *name, int idx, const char *host_ip,
    const char *ns_ip);
/* in a child of its own: kills what is left in the namespace, removes
 * it and the host side of its pair */
void netns_destroy(const char *name, int idx);
/* removes this controld's namespaces no live replica owns */
void netns_gc(void);

#endif /* CONTROLD_NETNS_H */
