/*
 * .gitignore rules and the walk of the working directory that honours
 * them: what "dstackctl apply" packs as the run's code.
 *
 * The subset of gitignore(5) we follow: blank lines and "#" comments;
 * trailing spaces dropped unless escaped; "\" escapes ("\#", "\!");
 * "!" re-includes; a trailing "/" matches directories only; a pattern
 * with a slash elsewhere is anchored to its .gitignore's directory (a
 * leading "/" only anchors), one without matches the name at any depth;
 * "*" and "?" do not cross "/", "[a-z]" / "[!a-z]" classes; "**" as a
 * whole path segment spans directories ("**" + "/x", "a/" + "**", "a/" +
 * "**" + "/b").  The last matching rule wins and deeper files override
 * shallower ones; an ignored directory is not entered, so nothing inside
 * it can be re-included (as in git).  .git is never packed;
 * .git/info/exclude is honoured like a root .gitignore.
 *
 * As dstack does, a .dstackignore next to a .gitignore adds its rules
 * (after them, so it wins), and so do git's global excludes
 * (core.excludesFile, else $XDG_CONFIG_HOME/git/ignore or
 * ~/.config/git/ignore), weakest of all.  git's config files are read
 * here, git is never run: a CLI that packs code must not depend on it.
 */

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "dstackctl.h"


typedef struct {
    char       *pattern;
    char       *base;       /* "" or "sub/dir/" */
    int         negate;
    int         dir_only;
    int         anchored;   /* matched against the path, not the name */
} dsctl_rule_t;

struct dsctl_ignore_s {
    dsctl_rule_t   *rules;
    size_t          n;
    size_t          cap;
};


/* ---- wildmatch ----------------------------------------------------------- */

/*
 * As git's wildmatch: besides match / no match, a recursive call can say
 * that no later start can match either (the text ran out: ABORT_ALL), or
 * that a single "*" would have to cross a "/" (ABORT_TO_STARSTAR: only
 * an enclosing "**" may go on).  Cutting the search there keeps patterns
 * such as "*a*a*a*a*b" from trying every split of a long name.
 */
#define WM_MATCH                1
#define WM_NOMATCH              0
#define WM_ABORT_ALL            -1
#define WM_ABORT_TO_STARSTAR    -2

/* a bracket expression at *pp ("[...]"); 1 when c is in it, -1 when the
 * expression is not closed (then "[" is an ordinary character) */
static int
dsctl_wm_class(const char **pp, unsigned char c)
{
    const char     *p = *pp + 1;
    int             negate = 0, found = 0;
    unsigned char   lo, hi;

    if (*p == '!' || *p == '^') {
        negate = 1;
        p++;
    }
    /* a "]" first is a member */
    if (*p == ']') {
        found = (c == ']');
        p++;
    }
    while (*p != ']') {
        if (*p == '\0') {
            return -1;
        }
        if (*p == '\\' && p[1] != '\0') {
            p++;
        }
        lo = (unsigned char) *p++;
        hi = lo;
        if (*p == '-' && p[1] != ']' && p[1] != '\0') {
            p++;
            if (*p == '\\' && p[1] != '\0') {
                p++;
            }
            hi = (unsigned char) *p++;
        }
        if (c >= lo && c <= hi) {
            found = 1;
        }
    }
    *pp = p;                    /* at the closing "]" */
    return (found ^ negate) && c != '/';
}


static int
dsctl_wm(const char *start, const char *p, const char *t)
{
    const char  *stars, *s;
    int          r;

    for ( /* void */ ; *p != '\0'; p++, t++) {
        if (*t == '\0' && *p != '*') {
            return WM_ABORT_ALL;
        }

        switch (*p) {

        case '\\':
            /* an escaped character matches itself; a trailing "\" too */
            if (p[1] != '\0') {
                p++;
            }
            if (*t != *p) {
                return WM_NOMATCH;
            }
            break;

        case '?':
            if (*t == '/') {
                return WM_NOMATCH;
            }
            break;

        case '[':
            s = p;
            r = dsctl_wm_class(&s, (unsigned char) *t);
            if (r == -1) {
                if (*t != '[') {
                    return WM_NOMATCH;
                }
                break;
            }
            if (!r) {
                return WM_NOMATCH;
            }
            p = s;
            break;

        case '*':
            stars = p;
            while (p[1] == '*') {
                p++;
            }
            p++;                /* past the stars */
            if (p - stars >= 2
                && (stars == start || stars[-1] == '/')
                && (*p == '\0' || *p == '/'))
            {
                if (*p == '\0') {
                    return WM_MATCH;            /* "a/" + "**" */
                }
                /* "**" + "/": zero or more whole directories */
                if (dsctl_wm(start, p + 1, t) == WM_MATCH) {
                    return WM_MATCH;
                }
                for (s = t; *s != '\0'; s++) {
                    if (*s == '/'
                        && dsctl_wm(start, p + 1, s + 1) == WM_MATCH)
                    {
                        return WM_MATCH;
                    }
                }
                return WM_NOMATCH;
            }
            /* an ordinary "*" (or "**" inside a segment): not across "/" */
            if (*p == '\0') {
                return strchr(t, '/') == NULL ? WM_MATCH
                                              : WM_ABORT_TO_STARSTAR;
            }
            for ( /* void */ ; *t != '\0'; t++) {
                r = dsctl_wm(start, p, t);
                if (r != WM_NOMATCH) {
                    return r;
                }
                if (*t == '/') {
                    return WM_ABORT_TO_STARSTAR;
                }
            }
            return WM_ABORT_ALL;

        default:
            if (*t != *p) {
                return WM_NOMATCH;
            }
            break;
        }
    }
    return *t == '\0' ? WM_MATCH : WM_NOMATCH;
}


int
dsctl_wildmatch(const char *pattern, const char *text)
{
    return dsctl_wm(pattern, pattern, text) == WM_MATCH;
}


/* ---- rules --------------------------------------------------------------- */

dsctl_ignore_t *
dsctl_ignore_new(void)
{
    dsctl_ignore_t  *ig = dsctl_xmalloc(sizeof(*ig));

    memset(ig, 0, sizeof(*ig));
    return ig;
}


size_t
dsctl_ignore_mark(const dsctl_ignore_t *ig)
{
    return ig->n;
}


void
dsctl_ignore_pop(dsctl_ignore_t *ig, size_t mark)
{
    while (ig->n > mark) {
        ig->n--;
        free(ig->rules[ig->n].pattern);
        free(ig->rules[ig->n].base);
    }
}


void
dsctl_ignore_free(dsctl_ignore_t *ig)
{
    if (ig == NULL) {
        return;
    }
    dsctl_ignore_pop(ig, 0);
    free(ig->rules);
    free(ig);
}


static void
dsctl_ignore_line(dsctl_ignore_t *ig, const char *base, const char *line,
    size_t len)
{
    dsctl_rule_t  r;
    size_t        i;

    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    /* trailing spaces go unless escaped: "a\ " keeps one */
    while (len > 0 && line[len - 1] == ' '
           && !(len >= 2 && line[len - 2] == '\\'))
    {
        len--;
    }
    if (len == 0 || line[0] == '#') {
        return;
    }

    memset(&r, 0, sizeof(r));
    if (line[0] == '!') {
        r.negate = 1;
        line++;
        len--;
    }
    if (len > 0 && line[len - 1] == '/') {
        r.dir_only = 1;
        len--;
    }
    for (i = 0; i < len; i++) {
        if (line[i] == '/') {
            r.anchored = 1;
        }
    }
    if (len > 0 && line[0] == '/') {
        line++;
        len--;
    }
    if (len == 0) {
        return;
    }

    r.pattern = dsctl_xmalloc(len + 1);
    memcpy(r.pattern, line, len);
    r.pattern[len] = '\0';
    r.base = dsctl_xstrdup(base);

    if (ig->n == ig->cap) {
        ig->cap = ig->cap ? ig->cap * 2 : 32;
        ig->rules = dsctl_xrealloc(ig->rules, sizeof(dsctl_rule_t) * ig->cap);
    }
    ig->rules[ig->n++] = r;
}


void
dsctl_ignore_add(dsctl_ignore_t *ig, const char *base, const char *text,
    size_t len)
{
    const char  *p = text, *end = text + len, *nl;

    while (p < end) {
        nl = memchr(p, '\n', (size_t) (end - p));
        if (nl == NULL) {
            nl = end;
        }
        dsctl_ignore_line(ig, base, p, (size_t) (nl - p));
        p = nl + 1;
    }
}


int
dsctl_ignore_match(const dsctl_ignore_t *ig, const char *path, int is_dir)
{
    const dsctl_rule_t  *r;
    const char          *rel, *name;
    size_t               i, blen;

    name = strrchr(path, '/');
    name = name != NULL ? name + 1 : path;

    for (i = ig->n; i-- > 0; ) {
        r = &ig->rules[i];
        if (r->dir_only && !is_dir) {
            continue;
        }
        blen = strlen(r->base);
        if (strncmp(path, r->base, blen) != 0) {
            continue;
        }
        rel = path + blen;
        if (*rel == '\0') {
            continue;
        }
        if (dsctl_wildmatch(r->pattern, r->anchored ? rel : name)) {
            return !r->negate;
        }
    }
    return 0;
}


/* ---- git's global excludes ----------------------------------------------- */

/* a config value's text: quotes dropped, escapes undone, comments cut */
static char *
dsctl_git_value(const char *p, const char *end)
{
    dsctl_str_t  v = { 0 };
    size_t       keep = 0;
    int          quoted = 0;

    dsctl_str_add(&v, "", 0);
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    for ( ; p < end; p++) {
        if (*p == '"') {
            quoted = !quoted;
            keep = v.len;
            continue;
        }
        if (!quoted && (*p == '#' || *p == ';')) {
            break;
        }
        if (*p == '\\' && p + 1 < end) {
            p++;
            dsctl_str_add(&v, *p == 't' ? "\t" : *p == 'n' ? "\n" : p, 1);
            keep = v.len;
            continue;
        }
        dsctl_str_add(&v, p, 1);
        if (quoted || (*p != ' ' && *p != '\t')) {
            keep = v.len;
        }
    }
    /* unquoted trailing blanks are not part of the value */
    v.len = keep;
    v.s[keep] = '\0';
    return v.s;
}


char *
dsctl_git_config_get(const char *text, size_t len, const char *section,
    const char *key)
{
    const char  *p = text, *end = text + len, *nl, *q, *k;
    char        *found = NULL;
    size_t       klen;
    int          in = 0;

    klen = strlen(key);
    for ( ; p < end; p = nl + 1) {
        nl = memchr(p, '\n', (size_t) (end - p));
        if (nl == NULL) {
            nl = end;
        }
        while (p < nl && isspace((unsigned char) *p)) {
            p++;
        }
        if (p == nl || *p == '#' || *p == ';') {
            continue;
        }
        if (*p == '[') {
            /* "[core]" but not "[core \"sub\"]": names are caseless */
            q = memchr(p, ']', (size_t) (nl - p));
            in = q != NULL && (size_t) (q - p - 1) == strlen(section)
                 && strncasecmp(p + 1, section, strlen(section)) == 0;
            if (q == NULL) {
                continue;
            }
            p = q + 1;          /* "[core] key = v" on one line */
            while (p < nl && isspace((unsigned char) *p)) {
                p++;
            }
            if (p == nl) {
                continue;
            }
        }
        if (!in) {
            continue;
        }
        k = p;
        while (p < nl && (isalnum((unsigned char) *p) || *p == '-')) {
            p++;
        }
        if ((size_t) (p - k) != klen || strncasecmp(k, key, klen) != 0) {
            continue;
        }
        while (p < nl && (*p == ' ' || *p == '\t')) {
            p++;
        }
        if (p < nl && *p != '=') {
            continue;
        }
        /* the last one wins, as in git; a bare "key" is true */
        free(found);
        found = p < nl ? dsctl_git_value(p + 1, nl) : dsctl_xstrdup("true");
    }
    return found;
}


/* "~/x" -> "$HOME/x"; NULL when there is no HOME to expand */
static char *
dsctl_expand_home(const char *path)
{
    dsctl_str_t   out = { 0 };
    const char   *home;

    if (strncmp(path, "~/", 2) != 0) {
        return dsctl_xstrdup(path);
    }
    home = getenv("HOME");
    if (home == NULL || home[0] == '\0') {
        return NULL;
    }
    dsctl_str_addf(&out, "%s%s", home, path + 1);
    return out.s;
}


/*
 * core.excludesFile from git's global config files (the later wins:
 * $XDG_CONFIG_HOME/git/config, then ~/.gitconfig; GIT_CONFIG_GLOBAL
 * instead of both), else git's default place.  NULL when neither HOME
 * nor XDG_CONFIG_HOME says where that is.
 */
char *
dsctl_git_excludes_file(void)
{
    const char   *home, *xdg, *g;
    dsctl_str_t   f[2];
    char         *text, *v, *found = NULL, *path;
    size_t        len, i, n = 0;

    home = getenv("HOME");
    xdg = getenv("XDG_CONFIG_HOME");
    if (home != NULL && home[0] == '\0') {
        home = NULL;
    }
    if (xdg != NULL && xdg[0] == '\0') {
        xdg = NULL;
    }
    memset(f, 0, sizeof(f));
    g = getenv("GIT_CONFIG_GLOBAL");
    if (g != NULL && g[0] != '\0') {
        dsctl_str_addf(&f[n++], "%s", g);
    } else {
        if (xdg != NULL) {
            dsctl_str_addf(&f[n++], "%s/git/config", xdg);
        } else if (home != NULL) {
            dsctl_str_addf(&f[n++], "%s/.config/git/config", home);
        }
        if (home != NULL) {
            dsctl_str_addf(&f[n++], "%s/.gitconfig", home);
        }
    }
    for (i = 0; i < n; i++) {
        text = dsctl_read_file(f[i].s, &len);
        if (text != NULL) {
            v = dsctl_git_config_get(text, len, "core", "excludesfile");
            if (v != NULL) {
                free(found);
                found = v;
            }
            free(text);
        }
        dsctl_str_free(&f[i]);
    }
    if (found != NULL && found[0] != '\0') {
        path = dsctl_expand_home(found);
        free(found);
        return path;
    }
    free(found);

    f[0].len = 0;
    if (xdg != NULL) {
        dsctl_str_addf(&f[0], "%s/git/ignore", xdg);
    } else if (home != NULL) {
        dsctl_str_addf(&f[0], "%s/.config/git/ignore", home);
    }
    return f[0].s;
}


/* ---- the walk ------------------------------------------------------------ */

static int
dsctl_cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}


static int
dsctl_load_ignore(dsctl_ignore_t *ig, const char *file, const char *base)
{
    char    *text;
    size_t   len;

    text = dsctl_read_file(file, &len);
    if (text == NULL) {
        if (errno == ENOENT || errno == ENOTDIR) {
            return 0;
        }
        dsctl_error("cannot read \"%s\": %s", file, strerror(errno));
        return -1;
    }
    dsctl_ignore_add(ig, base, text, len);
    free(text);
    return 0;
}


/* the directory's .gitignore, then its .dstackignore (which wins) */
static int
dsctl_load_dir_ignores(dsctl_ignore_t *ig, const char *root, dsctl_str_t *rel)
{
    static const char *const  names[] = { ".gitignore", ".dstackignore" };
    dsctl_str_t  full = { 0 };
    size_t       i;
    int          rc = 0;

    /* the base of a nested file is its directory plus "/" */
    if (rel->len) {
        dsctl_str_add(rel, "/", 1);
    }
    for (i = 0; i < 2 && rc == 0; i++) {
        full.len = 0;
        dsctl_str_addf(&full, "%s/%s%s", root, rel->len ? rel->s : "",
            names[i]);
        rc = dsctl_load_ignore(ig, full.s, rel->len ? rel->s : "");
    }
    if (rel->len) {
        rel->len--;
        rel->s[rel->len] = '\0';
    }
    dsctl_str_free(&full);
    return rc;
}


static int
dsctl_walk_dir(const char *root, dsctl_str_t *rel, dsctl_ignore_t *ig,
    dsctl_walk_cb cb, void *arg)
{
    DIR            *d;
    struct dirent  *de;
    struct stat     st;
    char          **names = NULL;
    size_t          n = 0, cap = 0, i, mark, rlen;
    dsctl_str_t     full = { 0 };
    int             rc = 0, is_dir;

    dsctl_str_addf(&full, "%s/%s", root, rel->len ? rel->s : "");
    d = opendir(full.s);
    if (d == NULL) {
        dsctl_error("cannot read \"%s\": %s", full.s, strerror(errno));
        dsctl_str_free(&full);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0
            || strcmp(de->d_name, ".git") == 0)
        {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            names = dsctl_xrealloc(names, sizeof(char *) * cap);
        }
        names[n++] = dsctl_xstrdup(de->d_name);
    }
    closedir(d);
    if (n > 1) {
        qsort(names, n, sizeof(char *), dsctl_cmp_names);
    }

    mark = dsctl_ignore_mark(ig);
    rc = dsctl_load_dir_ignores(ig, root, rel);

    rlen = rel->len;
    for (i = 0; i < n && rc == 0; i++) {
        rel->len = rlen;
        if (rlen) {
            dsctl_str_add(rel, "/", 1);
        }
        dsctl_str_add(rel, names[i], strlen(names[i]));

        full.len = 0;
        dsctl_str_addf(&full, "%s/%s", root, rel->s);
        if (lstat(full.s, &st) == -1) {
            if (errno == ENOENT) {
                continue;       /* gone while we walked */
            }
            dsctl_error("cannot stat \"%s\": %s", full.s, strerror(errno));
            rc = -1;
            break;
        }
        /* sockets, fifos and devices are no code */
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)
            && !S_ISLNK(st.st_mode))
        {
            continue;
        }
        is_dir = S_ISDIR(st.st_mode);
        if (dsctl_ignore_match(ig, rel->s, is_dir)) {
            continue;
        }
        if (cb(arg, rel->s, is_dir) != 0) {
            rc = -1;
            break;
        }
        if (is_dir) {
            rc = dsctl_walk_dir(root, rel, ig, cb, arg);
        }
    }
    rel->len = rlen;
    if (rel->s != NULL) {
        rel->s[rlen] = '\0';
    }

    dsctl_ignore_pop(ig, mark);
    for (i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    dsctl_str_free(&full);
    return rc;
}


int
dsctl_walk(const char *root, dsctl_walk_cb cb, void *arg)
{
    dsctl_ignore_t  *ig;
    dsctl_str_t      rel = { 0 }, excl = { 0 };
    struct stat      st;
    char            *gx;
    int              rc;

    if (stat(root, &st) == -1) {
        dsctl_error("cannot read \"%s\": %s", root, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        dsctl_error("\"%s\" is not a directory", root);
        return -1;
    }

    ig = dsctl_ignore_new();
    /* the weakest first: the global excludes, then the repository's */
    gx = dsctl_git_excludes_file();
    rc = gx != NULL ? dsctl_load_ignore(ig, gx, "") : 0;
    free(gx);
    dsctl_str_addf(&excl, "%s/.git/info/exclude", root);
    if (rc == 0) {
        rc = dsctl_load_ignore(ig, excl.s, "");
    }
    dsctl_str_free(&excl);
    if (rc == 0) {
        dsctl_str_add(&rel, "", 0);
        rc = dsctl_walk_dir(root, &rel, ig, cb, arg);
    }
    dsctl_str_free(&rel);
    dsctl_ignore_free(ig);
    return rc;
}
