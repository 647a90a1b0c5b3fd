/*
 * The API's routes (api_route.c).
 */

#ifndef CONTROLD_API_ROUTE_H
#define CONTROLD_API_ROUTE_H

#include <stddef.h>

enum api_route {
    R_NONE = 0,
    R_HEALTH,
    R_METRICS,
    R_CODE,
    R_PLAN,
    R_APPLY,
    R_RUNS,
    R_RUN,
    R_STOP,
    R_LOGS,
    R_TOKENS,
    R_TOKEN,
    R_FLEETS,
    R_FLEET_PLAN,
    R_FLEET_APPLY,
    R_FLEET,
    R_FLEET_DELETE,
    R_BADNAME,      /* /api/runs/<not a run name>...: 400, not 404 */
    R_SECRETS,
    R_SECRET_SET,
    R_SECRET_GET,
    R_SECRET_DELETE,
    R_CLUSTER,
    R_PROJECTS,     /* GET, POST /api/projects */
    R_PROJECT,      /* DELETE /api/projects/<P> */
    R_MEMBERS,      /* POST /api/projects/<P>/members */
    R_MEMBER,       /* DELETE /api/projects/<P>/members/<U>: "P/U" */
    R_USERS,        /* GET, POST /api/users */
    R_USER_ME,      /* GET /api/users/me */
    R_USER,         /* DELETE /api/users/<U> */
    R_USER_TOKENS,  /* POST /api/users/<U>/tokens */
    R_AUDIT,
    R_SERIES,       /* GET /api/runs/<name>/series */
    R_SCALE         /* POST /api/runs/<name>/scale */
};

/*
 * The route of a path under /api/ (R_NONE: none), its parameter into
 * param (n bytes), and in *allow the methods it takes ("GET, POST").
 */
int api_route(const char *url, char *param, size_t n, const char **allow);
/* 1 when method is one of allow's */
int api_method_ok(const char *allow, const char *method);
/* 1 when the route reads a body */
int api_has_body(int route);

#endif /* CONTROLD_API_ROUTE_H */
