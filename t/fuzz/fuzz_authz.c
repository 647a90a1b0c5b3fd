/*
 * libFuzzer target for ds_authz_decide (#18): the decision table of
 * project roles and actions.  The input picks a caller (global admin or
 * not, a project role 0..5, including ones that do not exist), an action
 * (0 .. DS_ACT_COUNT + 2, including unknown ones) and whether the object
 * is the caller's own, and checks what must hold whatever the table says:
 *
 *   - a global admin is always allowed a known action;
 *   - no role, or one out of range, is hidden (404) unless global admin,
 *     for a known action (an unknown one is FORBID before anything:
 *     no caller can name one, it is a programming error);
 *   - a higher role never gets less than a lower one (ALLOW > FORBID >
 *     HIDE), nor the caller's own object less than another's;
 *   - an unknown action is never allowed, to anyone;
 *   - every answer is one of the three, and every known action has a
 *     name for messages;
 *   - ds_role_parse(ds_role_name(r)) == r for the roles that have names,
 *     and names of nothing parse to DS_ROLE_NONE.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ds_authz.h"
#include "ds_state.h"

#define FZ_ROLES    6                   /* 0..5: NONE, USER..ADMIN, junk */
#define FZ_ACTIONS  (DS_ACT_COUNT + 3)  /* the known ones and 3 more */


/* ALLOW 2, FORBID 1, HIDE 0: "never less" compares these */
static int
rank(enum ds_authz a)
{
    switch (a) {
    case DS_AUTHZ_ALLOW:
        return 2;
    case DS_AUTHZ_FORBID:
        return 1;
    case DS_AUTHZ_HIDE:
        return 0;
    default:
        abort();                        /* not an answer at all */
    }
}


static int
is_role(unsigned role)
{
    return role >= DS_ROLE_USER && role <= DS_ROLE_ADMIN;
}


static void
check_one(int gadmin, unsigned role, unsigned act, int own)
{
    enum ds_authz  a;
    int            known;

    known = act < DS_ACT_COUNT;
    a = ds_authz_decide(gadmin, role, (enum ds_action) act, own);
    (void) rank(a);

    if (!known && a == DS_AUTHZ_ALLOW) {
        abort();                        /* unknown actions: nobody */
    }
    if (known && gadmin && a != DS_AUTHZ_ALLOW) {
        abort();
    }
    if (known && !gadmin && !is_role(role) && a != DS_AUTHZ_HIDE) {
        abort();
    }
    if (known && ds_action_name((enum ds_action) act) == NULL) {
        abort();
    }
}


/* role r1 < r2 (both members) never gets more than r2 */
static void
check_order(int gadmin, unsigned act, int own)
{
    unsigned       r;
    enum ds_authz  lo, hi;

    for (r = DS_ROLE_USER; r < DS_ROLE_ADMIN; r++) {
        lo = ds_authz_decide(gadmin, r, (enum ds_action) act, own);
        hi = ds_authz_decide(gadmin, r + 1, (enum ds_action) act, own);
        if (rank(hi) < rank(lo)) {
            abort();
        }
    }

    /* a member never gets less than a non-member */
    lo = ds_authz_decide(gadmin, DS_ROLE_NONE, (enum ds_action) act, own);
    hi = ds_authz_decide(gadmin, DS_ROLE_USER, (enum ds_action) act, own);
    if (act < DS_ACT_COUNT && rank(hi) < rank(lo)) {
        abort();
    }
}


static void
check_roles(unsigned role, const uint8_t *data, size_t size)
{
    const char  *name;
    char        *s;

    name = ds_role_name(role);
    if (is_role(role)) {
        if (name == NULL || ds_role_parse(name) != role) {
            abort();
        }
    } else if (name != NULL) {
        abort();                        /* a name for no role */
    }

    /* any other string: a role only when it is one of the names */
    s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    role = ds_role_parse(s);
    if (role != DS_ROLE_NONE
        && (!is_role(role) || strcmp(ds_role_name(role), s) != 0))
    {
        abort();
    }
    free(s);

    if (ds_role_parse(NULL) != DS_ROLE_NONE) {
        abort();
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int       gadmin, own;
    unsigned  role, act;

    if (size < 4) {
        return 0;
    }

    gadmin = data[0] & 1;
    role = data[1] % FZ_ROLES;
    act = data[2] % FZ_ACTIONS;
    own = data[3] & 1;

    check_one(gadmin, role, act, own);

    /* own never gets less than another's, whatever the caller */
    if (rank(ds_authz_decide(gadmin, role, (enum ds_action) act, 1))
        < rank(ds_authz_decide(gadmin, role, (enum ds_action) act, 0)))
    {
        abort();
    }

    check_order(gadmin, act, own);
    check_roles(role, data + 4, size - 4);

    return 0;
}
