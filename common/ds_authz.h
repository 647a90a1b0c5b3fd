/*
 * Who may do what in a project (#18): the decision table of roles and
 * actions, pure, shared by controld's API and the fuzz target.
 *
 * The answer is ALLOW, FORBID (403: a member whose role does not allow
 * it) or HIDE (404: not a member, so the project and what is in it stay
 * unnamed).  A global admin may do everything everywhere.
 */

#ifndef DS_AUTHZ_H
#define DS_AUTHZ_H

enum ds_action {
    DS_ACT_PROJECT_READ = 0,    /* see the project, its members, runs */
    DS_ACT_RUN_READ,            /* a run's state */
    DS_ACT_RUN_APPLY,           /* apply or plan: a new run, or one's own */
    DS_ACT_RUN_STOP,
    DS_ACT_RUN_LOGS,
    DS_ACT_SERVICE_CALL,        /* the gateway: a service or model */
    DS_ACT_SECRET_READ,         /* list names, get a value */
    DS_ACT_SECRET_WRITE,
    DS_ACT_TOKEN_READ,          /* the project's service tokens */
    DS_ACT_TOKEN_WRITE,
    DS_ACT_FLEET_READ,
    DS_ACT_FLEET_WRITE,
    DS_ACT_MEMBERS_WRITE,       /* add, remove, change roles */
    DS_ACT_PROJECT_DELETE,
    DS_ACT_AUDIT_READ,
    DS_ACT_COUNT
};

enum ds_authz {
    DS_AUTHZ_ALLOW = 0,
    DS_AUTHZ_FORBID,            /* 403 */
    DS_AUTHZ_HIDE               /* 404 */
};

/*
 * global_admin: the caller's global role is admin.  role: DS_ROLE_* of
 * the caller in the project (DS_ROLE_NONE: not a member).  own: the
 * object is the caller's (a run they applied first; a new run is).
 */
enum ds_authz ds_authz_decide(int global_admin, unsigned role,
    enum ds_action action, int own);
/* "apply runs", "read secrets": for messages */
const char *ds_action_name(enum ds_action action);
/* "admin", "manager", "user"; NULL for others */
const char *ds_role_name(unsigned role);
/* DS_ROLE_* of a name, DS_ROLE_NONE when it is none */
unsigned ds_role_parse(const char *s);

#endif /* DS_AUTHZ_H */
