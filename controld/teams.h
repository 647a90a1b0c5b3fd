/*
 * Teams (teams.c, #18): users, projects and their members, and the check
 * of every API call against the caller's role (common/ds_authz.h).
 *
 * A project is named in requests ("main", "team"); records and keys
 * spell main as "" (teams_key) so that a state from before projects is
 * all main's.  Memberships are in LMDB's "members" database, where the
 * gateway reads them too; users and projects are documents.
 */

#ifndef CONTROLD_TEAMS_H
#define CONTROLD_TEAMS_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "ds_authz.h"
#include "tokens.h"

/* "" for main, else the name itself */
const char *teams_key(const char *project);
/* the name of a key: "main" for "" */
const char *teams_name(const char *pkey);

/* the first start (and an upgrade): user "admin", project "main", its
 * membership; 0, or -1 logged */
int teams_bootstrap(void);

/*
 * May the caller do this in project (a name, "" = main)?  0; 404 (not a
 * member, or no such project: the same message) or 403 (the role does
 * not allow it, named), with the message in err.
 */
int teams_check(const struct caller *c, const char *project,
    enum ds_action action, int own, char *err, size_t n);

/* the endpoints (API.md "projects, users and roles"): 0 or an HTTP
 * status with a message */
int teams_projects(const struct caller *c, cJSON **answer, char *err,
    size_t n);
int teams_project_create(const struct caller *c, const cJSON *body,
    cJSON **answer, char *err, size_t n);
int teams_project_delete(const struct caller *c, const char *project,
    cJSON **answer, char *err, size_t n);
int teams_member_set(const struct caller *c, const char *project,
    const cJSON *body, cJSON **answer, char *err, size_t n);
int teams_member_remove(const struct caller *c, const char *project,
    const char *user, cJSON **answer, char *err, size_t n);
int teams_users(const struct caller *c, int me, cJSON **answer, char *err,
    size_t n);
int teams_user_create(const struct caller *c, const cJSON *body,
    cJSON **answer, char *err, size_t n);
int teams_user_delete(const struct caller *c, const char *user,
    cJSON **answer, char *err, size_t n);
int teams_user_token(const struct caller *c, const char *user,
    const cJSON *body, cJSON **answer, char *err, size_t n);

#endif /* CONTROLD_TEAMS_H */
