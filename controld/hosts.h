/*
 * The hosts of fleets, connected and watched (hosts.c).
 *
 * Each host has one master SSH connection.  On (re)connection controld
 * uploads its agent (agent.sh) and runs its discovery (CPUs, memory,
 * disk, GPUs, container engine); then one long session (agent.sh watch)
 * prints how the host's replicas are, every second: a heartbeat that
 * costs no new session (a session costs 10 to 500 ms on the host: the
 * login shell and its rc files).  No heartbeat for 2.5 s, the session
 * ending, or the master connection ending, make the host unreachable:
 * 2.5 to 3.5 s after a host dies or its network goes, its replicas are
 * out.  A missed beat is forgiven: a busy host or a packet that TCP
 * resends (200 ms and more) is no reason to move replicas.
 *
 * What happens to replicas is backend_ssh.c's: it hears of it through
 * the events given to hosts_init().
 */

#ifndef CONTROLD_HOSTS_H
#define CONTROLD_HOSTS_H

#include <sys/types.h>

#include "fleets.h"

#define HOST_SILENCE_MS         2500    /* no heartbeat: unreachable */
#define HOST_FIRST_BEAT_MS      15000   /* after the watch starts */
#define HOST_RETRY_MS           2000    /* after a loss or a failure */
#define HOST_FAILED_RETRY_MS    30000   /* after a refusal */
#define HOST_DISCOVER_WAIT_MS   30000

struct host_events {
    /* connected and discovered (again): its replicas can be checked */
    void  (*up)(struct fleet_host *h);
    /* a heartbeat: the agent's status lines ("replica TAG running
     * PID"...) */
    void  (*status)(struct fleet_host *h, char *lines);
    /* stopped answering, or refused us: its replicas are lost */
    void  (*lost)(struct fleet_host *h);
};

void hosts_init(const struct host_events *ev);
/* (re)starts a host's connection: a new host, or a fleet re-applied */
void hosts_connect(struct fleet_host *h);
/* a fleet re-applied: the host's connection goes on as `to` */
void hosts_move(struct fleet_host *from, struct fleet_host *to);
/* "up", "unreachable"... */
const char *hosts_status_name(int status);
/* a host leaves: its commands and connection end */
void hosts_forget(struct fleet_host *h);
/* the agent's command line on the host: "sh '<dir>/agent.sh' " + args */
char *hosts_agent_cmd(const struct fleet_host *h, const char *args);

void hosts_tick(void);
int hosts_timeout_ms(void);
/* a child ended: 1 when it was a host's master */
int hosts_reap(pid_t pid, int status);

#endif /* CONTROLD_HOSTS_H */
