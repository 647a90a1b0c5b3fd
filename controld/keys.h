/*
 * The cluster's keys in shared mode (keys.c): secrets.key (which seals
 * the secrets) and the local CA (which the clients trust) are files of
 * each controller's state_dir.  The leader publishes their identity (a
 * key id derived from secrets.key, never the key; the CA certificate's
 * SHA-256) as two settings records every follower mirrors, and a
 * controller whose files are not those does not compete for leadership:
 * it would make new keys, seal nothing the replicas can open and serve a
 * certificate no client trusts.  --keys-export / --keys-import move the
 * keys from one controller to another.
 */

#ifndef CONTROLD_KEYS_H
#define CONTROLD_KEYS_H

#include <stddef.h>

/*
 * Whether this controller may lead: 1 when the cluster has published no
 * identity yet or its files are the cluster's; 0 when they differ or are
 * missing, said once, loudly, with what to do (and once when that is
 * fixed).  Reads the files and the mirror each call (once a second).
 */
int keys_may_lead(void);
/* 1 while the last keys_may_lead() said no (dstack_instances' role) */
int keys_differ(void);
/* the leader, once its keys are loaded or made: publishes their identity
 * when the cluster has none; 0, or -1 logged */
int keys_publish(void);

/* dstack-controld --keys-export / --keys-import: exit statuses, the
 * reason on stderr */
int keys_export(const char *file, int force);
int keys_import(const char *file, int force);

#endif /* CONTROLD_KEYS_H */
