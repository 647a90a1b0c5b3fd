/*
 * The decision table of roles and actions (ds_authz.h), as dstack's
 * project roles: admin everything in the project; manager everything but
 * the project itself and its members; user their own runs, and reading
 * and calling what the project serves.
 */

#include <string.h>

#include "ds_authz.h"
#include "ds_state.h"


/* the least role each action needs; own: what a user may do to its own */
static const struct {
    const char  *name;
    unsigned     least;
    unsigned     least_own;
} ds_actions[DS_ACT_COUNT] = {
    [DS_ACT_PROJECT_READ]   = { "see the project", DS_ROLE_USER,
                                DS_ROLE_USER },
    [DS_ACT_RUN_READ]       = { "read runs", DS_ROLE_USER, DS_ROLE_USER },
    [DS_ACT_RUN_APPLY]      = { "apply others' runs", DS_ROLE_MANAGER,
                                DS_ROLE_USER },
    [DS_ACT_RUN_STOP]       = { "stop others' runs", DS_ROLE_MANAGER,
                                DS_ROLE_USER },
    [DS_ACT_RUN_LOGS]       = { "read others' logs", DS_ROLE_MANAGER,
                                DS_ROLE_USER },
    [DS_ACT_SERVICE_CALL]   = { "call services", DS_ROLE_USER,
                                DS_ROLE_USER },
    [DS_ACT_SECRET_READ]    = { "read secrets", DS_ROLE_MANAGER,
                                DS_ROLE_MANAGER },
    [DS_ACT_SECRET_WRITE]   = { "change secrets", DS_ROLE_MANAGER,
                                DS_ROLE_MANAGER },
    [DS_ACT_TOKEN_READ]     = { "read service tokens", DS_ROLE_MANAGER,
                                DS_ROLE_MANAGER },
    [DS_ACT_TOKEN_WRITE]    = { "change service tokens", DS_ROLE_MANAGER,
                                DS_ROLE_MANAGER },
    [DS_ACT_FLEET_READ]     = { "read fleets", DS_ROLE_USER, DS_ROLE_USER },
    [DS_ACT_FLEET_WRITE]    = { "change fleets", DS_ROLE_MANAGER,
                                DS_ROLE_MANAGER },
    [DS_ACT_MEMBERS_WRITE]  = { "change members", DS_ROLE_ADMIN,
                                DS_ROLE_ADMIN },
    [DS_ACT_PROJECT_DELETE] = { "delete the project", DS_ROLE_ADMIN,
                                DS_ROLE_ADMIN },
    [DS_ACT_AUDIT_READ]     = { "read the audit log", DS_ROLE_ADMIN,
                                DS_ROLE_ADMIN },
};


enum ds_authz
ds_authz_decide(int global_admin, unsigned role, enum ds_action action,
    int own)
{
    unsigned  least;

    if ((unsigned) action >= DS_ACT_COUNT) {
        return DS_AUTHZ_FORBID;         /* an unknown action: nobody */
    }

    if (global_admin) {
        return DS_AUTHZ_ALLOW;
    }

    if (role < DS_ROLE_USER || role > DS_ROLE_ADMIN) {
        return DS_AUTHZ_HIDE;
    }

    least = own ? ds_actions[action].least_own : ds_actions[action].least;

    return role >= least ? DS_AUTHZ_ALLOW : DS_AUTHZ_FORBID;
}


const char *
ds_action_name(enum ds_action action)
{
    return (unsigned) action < DS_ACT_COUNT ? ds_actions[action].name
                                            : "do that";
}


const char *
ds_role_name(unsigned role)
{
    switch (role) {
    case DS_ROLE_ADMIN:
        return "admin";
    case DS_ROLE_MANAGER:
        return "manager";
    case DS_ROLE_USER:
        return "user";
    default:
        return NULL;
    }
}


unsigned
ds_role_parse(const char *s)
{
    if (s == NULL) {
        return DS_ROLE_NONE;
    }
    if (strcmp(s, "admin") == 0) {
        return DS_ROLE_ADMIN;
    }
    if (strcmp(s, "manager") == 0) {
        return DS_ROLE_MANAGER;
    }
    if (strcmp(s, "user") == 0) {
        return DS_ROLE_USER;
    }
    return DS_ROLE_NONE;
}
