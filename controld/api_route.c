/*
 * The API's routes: a path and a method to what the request is, with the
 * parameter it names (a run, a token, a code hash).  Pure: no
 * connection, no state.
 */

#include <string.h>

#include "api_route.h"
#include "ds_state.h"
#include "util.h"


/* the name up to the next "/" into param; what follows it, or NULL */
static const char *
route_name(const char *p, char *param, size_t n)
{
    const char  *slash;
    size_t       len;

    slash = strchr(p, '/');
    len = slash ? (size_t) (slash - p) : strlen(p);
    if (len >= n) {
        len = n - 1;
    }
    memcpy(param, p, len);
    param[len] = '\0';
    return slash;
}


/*
 * Splits the path into a route and its parameter; *allow gets the methods
 * of the route.  MHD has already percent-decoded the path, so "%2e%2e"
 * arrives as ".." and is refused by the name check of the handler.
 */
int
api_route(const char *url, char *param, size_t n, const char **allow)
{
    const char  *p, *slash;

    param[0] = '\0';
    *allow = NULL;

    if (strncmp(url, "/api/", 5) != 0) {
        return R_NONE;
    }
    p = url + 5;

    if (strcmp(p, "health") == 0) {
        *allow = "GET";
        return R_HEALTH;
    }

    if (strcmp(p, "cluster") == 0) {
        *allow = "GET";
        return R_CLUSTER;
    }

    if (strcmp(p, "metrics") == 0) {
        *allow = "GET";
        return R_METRICS;
    }

    if (strncmp(p, "code/", 5) == 0) {
        if (fmt(param, n, "%s", p + 5) != 0) {
            param[0] = '\0';
        }
        *allow = "HEAD, PUT";
        return R_CODE;
    }

    if (strcmp(p, "runs") == 0 || strcmp(p, "runs/") == 0) {
        *allow = "GET";
        return R_RUNS;
    }
    if (strcmp(p, "runs/plan") == 0) {
        *allow = "POST";
        return R_PLAN;
    }
    if (strcmp(p, "runs/apply") == 0) {
        *allow = "POST";
        return R_APPLY;
    }
    if (strncmp(p, "runs/", 5) == 0) {
        slash = route_name(p + 5, param, n);
        if (!ds_valid_run_name(param, strlen(param))) {
            *allow = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
            return R_BADNAME;
        }
        if (slash == NULL) {
            *allow = "GET";
            return R_RUN;
        }
        if (strcmp(slash, "/stop") == 0) {
            *allow = "POST";
            return R_STOP;
        }
        if (strcmp(slash, "/logs") == 0) {
            *allow = "GET";
            return R_LOGS;
        }
        if (strcmp(slash, "/series") == 0) {
            *allow = "GET";
            return R_SERIES;
        }
        if (strcmp(slash, "/scale") == 0) {
            *allow = "POST";
            return R_SCALE;
        }
        return R_NONE;
    }

    if (strcmp(p, "fleets") == 0 || strcmp(p, "fleets/") == 0) {
        *allow = "GET";
        return R_FLEETS;
    }
    if (strcmp(p, "fleets/plan") == 0) {
        *allow = "POST";
        return R_FLEET_PLAN;
    }
    if (strcmp(p, "fleets/apply") == 0) {
        *allow = "POST";
        return R_FLEET_APPLY;
    }
    if (strncmp(p, "fleets/", 7) == 0) {
        slash = route_name(p + 7, param, n);
        if (!ds_valid_run_name(param, strlen(param))) {
            *allow = "GET, POST";
            return R_BADNAME;
        }
        if (slash == NULL) {
            *allow = "GET";
            return R_FLEET;
        }
        if (strcmp(slash, "/delete") == 0) {
            *allow = "POST";
            return R_FLEET_DELETE;
        }
        return R_NONE;
    }

    /* names in bodies, as dstack's API: a secret's name is no path */
    if (strcmp(p, "secrets") == 0 || strcmp(p, "secrets/") == 0) {
        *allow = "GET";
        return R_SECRETS;
    }
    if (strcmp(p, "secrets/set") == 0) {
        *allow = "POST";
        return R_SECRET_SET;
    }
    if (strcmp(p, "secrets/get") == 0) {
        *allow = "POST";
        return R_SECRET_GET;
    }
    if (strcmp(p, "secrets/delete") == 0) {
        *allow = "POST";
        return R_SECRET_DELETE;
    }

    if (strcmp(p, "tokens") == 0) {
        *allow = "GET, POST";
        return R_TOKENS;
    }

    if (strcmp(p, "projects") == 0 || strcmp(p, "projects/") == 0) {
        *allow = "GET, POST";
        return R_PROJECTS;
    }
    if (strncmp(p, "projects/", 9) == 0) {
        slash = route_name(p + 9, param, n);
        if (slash == NULL) {
            *allow = "DELETE";
            return R_PROJECT;
        }
        if (strcmp(slash, "/members") == 0) {
            *allow = "POST";
            return R_MEMBERS;
        }
        if (strncmp(slash, "/members/", 9) == 0
            && strchr(slash + 9, '/') == NULL && slash[9] != '\0'
            && strlen(param) + 1 + strlen(slash + 9) < n)
        {
            /* "P/U": the API process splits it */
            strcat(param, "/");
            strcat(param, slash + 9);
            *allow = "DELETE";
            return R_MEMBER;
        }
        return R_NONE;
    }

    if (strcmp(p, "users") == 0 || strcmp(p, "users/") == 0) {
        *allow = "GET, POST";
        return R_USERS;
    }
    if (strcmp(p, "users/me") == 0) {
        *allow = "GET";
        return R_USER_ME;
    }
    if (strncmp(p, "users/", 6) == 0) {
        slash = route_name(p + 6, param, n);
        if (slash == NULL) {
            *allow = "DELETE";
            return R_USER;
        }
        if (strcmp(slash, "/tokens") == 0) {
            *allow = "POST";
            return R_USER_TOKENS;
        }
        return R_NONE;
    }

    if (strcmp(p, "audit") == 0) {
        *allow = "GET";
        return R_AUDIT;
    }
    if (strncmp(p, "tokens/", 7) == 0) {
        if (fmt(param, n, "%s", p + 7) != 0) {
            param[0] = '\0';
        }
        *allow = "DELETE, PATCH";
        return R_TOKEN;
    }

    return R_NONE;
}


int
api_method_ok(const char *allow, const char *method)
{
    size_t       ml;
    const char  *p;

    ml = strlen(method);
    for (p = allow; (p = strstr(p, method)) != NULL; p += ml) {
        if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0')) {
            return 1;
        }
    }
    return 0;
}


int
api_has_body(int route)
{
    return route == R_PLAN || route == R_APPLY || route == R_STOP
           || route == R_SCALE
           || route == R_TOKENS || route == R_CODE || route == R_FLEET_PLAN
           || route == R_FLEET_APPLY || route == R_FLEET_DELETE
           || route == R_SECRET_SET || route == R_SECRET_GET
           || route == R_SECRET_DELETE || route == R_PROJECTS
           || route == R_MEMBERS || route == R_USERS
           || route == R_USER_TOKENS || route == R_TOKEN;
}
