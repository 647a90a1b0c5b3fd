/*
 * Unit tests of dstackctl's pure parts: .gitignore matching (ignore.c),
 * .dstackignore and git's global excludes (ignore.c), tables (table.c),
 * config files (config.c), durations, --since times and formatting
 * (term.c), the project's selection, its query parameter and the
 * rewrite of "project set-default" (project.c).
 *
 * The Makefile links t/unit/test_*.c with libdscommon.a only, so the CLI
 * sources under test are compiled into this file; none of them needs
 * libcurl.
 */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../cli/term.c"
#include "../../cli/table.c"
#include "../../cli/ignore.c"
#include "../../cli/config.c"
#include "../../cli/project.c"


/* ---- wildmatch ------------------------------------------------------------- */

static void
test_wildmatch(void **state)
{
    static const struct { const char *p, *t; int m; } cases[] = {
        { "foo", "foo", 1 },
        { "foo", "foobar", 0 },
        { "*.o", "main.o", 1 },
        { "*.o", "dir/main.o", 0 },         /* "*" stops at "/" */
        { "*", "", 1 },
        { "a*b", "ab", 1 },
        { "a*b", "axxb", 1 },
        { "a*b", "ax/b", 0 },
        { "?.c", "a.c", 1 },
        { "?.c", "/.c", 0 },
        { "?.c", "ab.c", 0 },
        { "[abc].txt", "b.txt", 1 },
        { "[abc].txt", "d.txt", 0 },
        { "[a-c]x", "bx", 1 },
        { "[!a-c]x", "bx", 0 },
        { "[!a-c]x", "dx", 1 },
        { "[^a-c]x", "dx", 1 },
        { "[]]", "]", 1 },
        { "[", "[", 1 },                    /* unclosed: a plain "[" */
        { "\\*", "*", 1 },
        { "\\*", "a", 0 },
        { "\\#x", "#x", 1 },
        { "**/foo", "foo", 1 },
        { "**/foo", "a/b/foo", 1 },
        { "**/foo", "a/b/foox", 0 },
        { "**/foo/bar", "x/foo/bar", 1 },
        { "abc/**", "abc/x", 1 },
        { "abc/**", "abc/x/y/z", 1 },
        { "abc/**", "abc", 0 },
        { "a/**/b", "a/b", 1 },
        { "a/**/b", "a/x/b", 1 },
        { "a/**/b", "a/x/y/b", 1 },
        { "a/**/b", "a/x/y/c", 0 },
        { "a**b", "axxb", 1 },              /* "**" inside a segment */
        { "a**b", "ax/b", 0 },
        { "doc/*.txt", "doc/a.txt", 1 },
        { "doc/*.txt", "doc/x/a.txt", 0 },
        { "*.tar.gz", "x.tar.gz", 1 },
    };
    char    text[201];
    size_t  i;

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (dsctl_wildmatch(cases[i].p, cases[i].t) != cases[i].m) {
            fail_msg("wildmatch(\"%s\", \"%s\") != %d", cases[i].p,
                cases[i].t, cases[i].m);
        }
    }

    /* every split of 200 "a"s among 10 stars would take for ever */
    memset(text, 'a', 200);
    text[200] = '\0';
    assert_int_equal(dsctl_wildmatch("*a*a*a*a*a*a*a*a*a*a*b", text), 0);
    text[199] = 'b';
    assert_int_equal(dsctl_wildmatch("*a*a*a*a*a*a*a*a*a*a*b", text), 1);
    assert_int_equal(dsctl_wildmatch("**/*a*a*a*a*a*a*a*a*a*/b",
        "x/y/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/c"), 0);
}


/* ---- rules ------------------------------------------------------------------ */

static void
test_ignore_rules(void **state)
{
    static const char  root[] =
        "# a comment\n"
        "\n"
        "*.log\n"
        "!keep.log\n"
        "build/\n"
        "/top.txt\n"
        "docs/*.pdf\n"
        "trailing.txt   \n"
        "escaped\\ \n"
        "\\#hash\n"
        "\\!bang\n"
        "cache/**\n"
        "**/tmp\n"
        "crlf.txt\r\n";
    static const char  sub[] = "!important.log\nlocal\n";
    dsctl_ignore_t    *ig;
    size_t             mark;

    (void) state;
    ig = dsctl_ignore_new();
    dsctl_ignore_add(ig, "", root, sizeof(root) - 1);

    assert_int_equal(dsctl_ignore_match(ig, "a.log", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "x/y/a.log", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "keep.log", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "x/keep.log", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "build", 1), 1);
    assert_int_equal(dsctl_ignore_match(ig, "build", 0), 0); /* a file */
    assert_int_equal(dsctl_ignore_match(ig, "src/build", 1), 1);
    assert_int_equal(dsctl_ignore_match(ig, "top.txt", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "x/top.txt", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "docs/a.pdf", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "x/docs/a.pdf", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "trailing.txt", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "escaped ", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "escaped", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "#hash", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "!bang", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "cache/a/b", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "cache", 1), 0);
    assert_int_equal(dsctl_ignore_match(ig, "tmp", 1), 1);
    assert_int_equal(dsctl_ignore_match(ig, "a/b/tmp", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "crlf.txt", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "main.c", 0), 0);

    /* a nested file overrides and adds, for its directory only */
    mark = dsctl_ignore_mark(ig);
    dsctl_ignore_add(ig, "sub/", sub, sizeof(sub) - 1);
    assert_int_equal(dsctl_ignore_match(ig, "sub/important.log", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "sub/other.log", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "sub/local", 0), 1);
    assert_int_equal(dsctl_ignore_match(ig, "local", 0), 0);
    assert_int_equal(dsctl_ignore_match(ig, "important.log", 0), 1);
    dsctl_ignore_pop(ig, mark);
    assert_int_equal(dsctl_ignore_match(ig, "sub/important.log", 0), 1);

    dsctl_ignore_free(ig);
}


/* ---- the walk over a real tree ---------------------------------------------- */

static void
put(const char *dir, const char *rel, const char *text)
{
    char   path[512], *slash;
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (slash = strchr(path + strlen(dir) + 1, '/'); slash != NULL;
         slash = strchr(slash + 1, '/'))
    {
        *slash = '\0';
        mkdir(path, 0755);
        *slash = '/';
    }
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}


static int
collect(void *arg, const char *path, int is_dir)
{
    dsctl_str_addf(arg, "%s%s\n", path, is_dir ? "/" : "");
    return 0;
}


static void
test_walk(void **state)
{
    char         dir[] = "/tmp/dstackctl-walk-XXXXXX";
    char         cmd[600];
    dsctl_str_t  out = { 0 };

    (void) state;
    assert_non_null(mkdtemp(dir));
    /* git's global excludes of whoever runs this are not ours */
    setenv("HOME", dir, 1);
    unsetenv("XDG_CONFIG_HOME");
    unsetenv("GIT_CONFIG_GLOBAL");
    put(dir, ".gitignore", "*.log\nbuild/\n/data/*\n!/data/keep\n");
    put(dir, "app.py", "print(1)\n");
    put(dir, "debug.log", "x\n");
    put(dir, "build/out.o", "x\n");
    put(dir, "data/big.bin", "x\n");
    put(dir, "data/keep", "x\n");
    put(dir, ".git/config", "x\n");
    put(dir, "src/.gitignore", "secret.txt\n!special.log\n");
    put(dir, "src/main.c", "x\n");
    put(dir, "src/secret.txt", "x\n");
    put(dir, "src/special.log", "x\n");
    put(dir, "src/deep/secret.txt", "x\n");
    put(dir, "src/deep/other.log", "x\n");
    put(dir, "secret.txt", "top\n");

    assert_int_equal(dsctl_walk(dir, collect, &out), 0);
    assert_string_equal(out.s,
        ".gitignore\n"
        "app.py\n"
        "data/\n"
        "data/keep\n"
        "secret.txt\n"
        "src/\n"
        "src/.gitignore\n"
        "src/deep/\n"
        "src/main.c\n"
        "src/special.log\n");
    dsctl_str_free(&out);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}


/* ---- tables ------------------------------------------------------------------ */

static void
test_table(void **state)
{
    static const char *const  hdr[] = { "NAME", "STATUS", "PRICE" };
    dsctl_table_t  *t;
    dsctl_str_t     out = { 0 };

    (void) state;
    t = dsctl_table_new(3, hdr);
    dsctl_table_addv(t, "yellow-cat-1", "running", "$0");
    dsctl_table_addv(t, "a", "provisioning", "$1.595");
    dsctl_table_addv(t, "  replica=0", "", "");
    dsctl_table_addv(t, "b×c", "ok", NULL);        /* UTF-8: 3 columns */
    assert_int_equal(dsctl_table_rows(t), 4);
    dsctl_table_render(t, &out);
    assert_string_equal(out.s,
        " NAME          STATUS        PRICE\n"
        " yellow-cat-1  running       $0\n"
        " a             provisioning  $1.595\n"
        "   replica=0\n"
        " b×c           ok\n");
    dsctl_table_free(t);

    /* right alignment, and a table without a header */
    out.len = 0;
    t = dsctl_table_new(2, NULL);
    dsctl_table_align(t, 1, DSCTL_ALIGN_RIGHT);
    dsctl_table_addv(t, "x", "1");
    dsctl_table_addv(t, "long key", "100");
    assert_int_equal(dsctl_table_rows(t), 2);
    dsctl_table_render(t, &out);
    assert_string_equal(out.s,
        " x           1\n"
        " long key  100\n");
    dsctl_table_free(t);
    dsctl_str_free(&out);
}


/* ---- config files ----------------------------------------------------------- */

static void
test_config(void **state)
{
    static const char  ours[] =
        "server: unix:/var/lib/dstack/api.sock\n"
        "token: dst_abc\n"
        "project: demo\n";
    static const char  dstacks[] =
        "projects:\n"
        "- name: first\n"
        "  url: http://a:3000\n"
        "  token: t1\n"
        "- name: second\n"
        "  url: http://b:3000\n"
        "  token: t2\n"
        "  default: true\n"
        "repos: []\n";
    static const char  bad[] = "server: [unclosed\n";
    static const char  list[] = "- a\n- b\n";
    dsctl_config_t     cfg;
    char               err[256];

    (void) state;
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", ours,
        sizeof(ours) - 1, err, sizeof(err)), 0);
    assert_string_equal(cfg.server, "unix:/var/lib/dstack/api.sock");
    assert_string_equal(cfg.token, "dst_abc");
    assert_string_equal(cfg.project, "demo");
    dsctl_config_free(&cfg);

    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", dstacks,
        sizeof(dstacks) - 1, err, sizeof(err)), 0);
    assert_string_equal(cfg.server, "http://b:3000");
    assert_string_equal(cfg.token, "t2");
    assert_string_equal(cfg.project, "second");
    dsctl_config_free(&cfg);

    /* what is already set (from the environment) wins */
    cfg.token = dsctl_xstrdup("from-env");
    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", ours,
        sizeof(ours) - 1, err, sizeof(err)), 0);
    assert_string_equal(cfg.token, "from-env");
    assert_string_equal(cfg.server, "unix:/var/lib/dstack/api.sock");
    dsctl_config_free(&cfg);

    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", bad,
        sizeof(bad) - 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "c.yml:"));
    dsctl_config_free(&cfg);

    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", list,
        sizeof(list) - 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "c.yml:1:1: expected a mapping"));
    dsctl_config_free(&cfg);

    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", "", 0, err,
        sizeof(err)), 0);
    assert_null(cfg.server);
    dsctl_config_free(&cfg);
}


static void
test_config_load(void **state)
{
    char            dir[] = "/tmp/dstackctl-cfg-XXXXXX";
    char            path[300];
    dsctl_config_t  cfg;

    (void) state;
    assert_non_null(mkdtemp(dir));
    put(dir, "c.yml", "server: http://gw.example.com\ntoken: file-token\n");
    snprintf(path, sizeof(path), "%s/c.yml", dir);

    unsetenv("DSTACK_SERVER");
    unsetenv("DSTACK_TOKEN");
    unsetenv("DSTACK_PROJECT");
    setenv("DSTACK_CONFIG", path, 1);
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.server, "http://gw.example.com");
    assert_string_equal(cfg.token, "file-token");
    assert_string_equal(cfg.project, "main");
    dsctl_config_free(&cfg);

    setenv("DSTACK_TOKEN", "env-token", 1);
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.token, "env-token");
    assert_string_equal(cfg.server, "http://gw.example.com");
    dsctl_config_free(&cfg);

    /* both in the environment: the file is not even read */
    setenv("DSTACK_SERVER", "unix:/x.sock", 1);
    setenv("DSTACK_CONFIG", "/nonexistent/c.yml", 1);
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.server, "unix:/x.sock");
    dsctl_config_free(&cfg);

    /* a named file that is missing is an error; a default one is not */
    unsetenv("DSTACK_SERVER");
    assert_int_equal(dsctl_config_load(&cfg), -1);
    unsetenv("DSTACK_CONFIG");
    unsetenv("DSTACK_TOKEN");
    setenv("HOME", dir, 1);
    assert_int_equal(dsctl_config_load(&cfg), -1);     /* nothing set */

    snprintf(path, sizeof(path), "rm -rf '%s'", dir);
    assert_int_equal(system(path), 0);
}


/* ---- formatting -------------------------------------------------------------- */

static void
test_formats(void **state)
{
    char  b[64];

    (void) state;
    assert_int_equal(dsctl_parse_duration("30"), 30);
    assert_int_equal(dsctl_parse_duration("30s"), 30);
    assert_int_equal(dsctl_parse_duration("5m"), 300);
    assert_int_equal(dsctl_parse_duration("2h"), 7200);
    assert_int_equal(dsctl_parse_duration("30d"), 30 * 86400);
    assert_int_equal(dsctl_parse_duration("1w"), 7 * 86400);
    assert_int_equal(dsctl_parse_duration(""), -1);
    assert_int_equal(dsctl_parse_duration("5x"), -1);
    assert_int_equal(dsctl_parse_duration("5mm"), -1);
    assert_int_equal(dsctl_parse_duration("-5"), -1);
    assert_int_equal(dsctl_parse_duration("m"), -1);

    dsctl_fmt_price(b, sizeof(b), 0);
    assert_string_equal(b, "$0");
    dsctl_fmt_price(b, sizeof(b), 1.595);
    assert_string_equal(b, "$1.595");
    dsctl_fmt_price(b, sizeof(b), 2);
    assert_string_equal(b, "$2");

    dsctl_fmt_mb(b, sizeof(b), 8192);
    assert_string_equal(b, "8GB");
    dsctl_fmt_mb(b, sizeof(b), 512);
    assert_string_equal(b, "512MB");
    dsctl_fmt_mb(b, sizeof(b), 1536);
    assert_string_equal(b, "1.5GB");
    dsctl_fmt_mb(b, sizeof(b), 81920);
    assert_string_equal(b, "80GB");
    dsctl_fmt_mb(b, sizeof(b), 2 * 1024 * 1024);
    assert_string_equal(b, "2TB");
    dsctl_fmt_bytes(b, sizeof(b), 1300);
    assert_string_equal(b, "1.3 KB");

    dsctl_fmt_ago(b, sizeof(b), 1000, 1002);
    assert_string_equal(b, "now");
    dsctl_fmt_ago(b, sizeof(b), 1000, 1030);
    assert_string_equal(b, "30 secs ago");
    dsctl_fmt_ago(b, sizeof(b), 1000, 1000 + 300);
    assert_string_equal(b, "5 mins ago");
    dsctl_fmt_ago(b, sizeof(b), 1000, 1000 + 3 * 3600);
    assert_string_equal(b, "3 hours ago");
    dsctl_fmt_ago(b, sizeof(b), 0, 1000);
    assert_string_equal(b, "-");

    assert_int_equal(dsctl_text_width("×—é"), 3);
}


/* ---- .dstackignore and git's global excludes --------------------------- */

static void
test_git_config(void **state)
{
    static const char  cfg[] =
        "# a comment\n"
        "[user]\n"
        "\texcludesfile = /not/this\n"
        "[Core]\n"
        "\tautocrlf = false\n"
        "\tExcludesFile = ~/first ; a comment\n"
        "[core \"sub\"]\n"
        "\texcludesfile = /not/sub\n"
        "[core]\n"
        "    excludesfile = \"~/with space\\\\x # kept\"  # cut\n"
        "[alias]\n"
        "\texcludesfile = /not/alias\n";
    char  *v;

    (void) state;
    v = dsctl_git_config_get(cfg, sizeof(cfg) - 1, "core", "excludesfile");
    assert_non_null(v);
    /* the last one wins; quotes keep what a comment would cut */
    assert_string_equal(v, "~/with space\\x # kept");
    free(v);
    v = dsctl_git_config_get(cfg, sizeof(cfg) - 1, "core", "autocrlf");
    assert_string_equal(v, "false");
    free(v);
    assert_null(dsctl_git_config_get(cfg, sizeof(cfg) - 1, "core", "nope"));
    assert_null(dsctl_git_config_get("", 0, "core", "excludesfile"));
    v = dsctl_git_config_get("[core] excludesfile=/x\n", 23, "core",
        "excludesfile");
    assert_string_equal(v, "/x");
    free(v);
}


static void
test_walk_excludes(void **state)
{
    char         dir[] = "/tmp/dstackctl-excl-XXXXXX";
    char         cmd[600], home[300], path[400], *x;
    dsctl_str_t  out = { 0 };

    (void) state;
    assert_non_null(mkdtemp(dir));
    snprintf(home, sizeof(home), "%s/home", dir);
    put(dir, "home/.config/git/ignore", "*.key\n");
    put(dir, "w/.gitignore", "*.log\n");
    put(dir, "w/.dstackignore", "data/\n!keep.log\n");
    put(dir, "w/app.py", "x\n");
    put(dir, "w/a.key", "x\n");
    put(dir, "w/debug.log", "x\n");
    put(dir, "w/keep.log", "x\n");
    put(dir, "w/data/big.bin", "x\n");
    put(dir, "w/src/.dstackignore", "*.tmp\n");
    put(dir, "w/src/x.tmp", "x\n");
    put(dir, "w/src/x.c", "x\n");
    put(dir, "w/x.tmp", "x\n");

    /* the default place: ~/.config/git/ignore */
    setenv("HOME", home, 1);
    unsetenv("XDG_CONFIG_HOME");
    unsetenv("GIT_CONFIG_GLOBAL");
    x = dsctl_git_excludes_file();
    snprintf(path, sizeof(path), "%s/.config/git/ignore", home);
    assert_string_equal(x, path);
    free(x);

    snprintf(path, sizeof(path), "%s/w", dir);
    assert_int_equal(dsctl_walk(path, collect, &out), 0);
    /* .dstackignore after .gitignore: its "!keep.log" wins; nested
     * ones apply below their directory only */
    assert_string_equal(out.s,
        ".dstackignore\n"
        ".gitignore\n"
        "app.py\n"
        "keep.log\n"
        "src/\n"
        "src/.dstackignore\n"
        "src/x.c\n"
        "x.tmp\n");

    /* core.excludesFile in ~/.gitconfig, "~/" expanded, wins */
    put(dir, "home/.gitconfig", "[core]\n\texcludesFile = ~/my-ignore\n");
    put(dir, "home/my-ignore", "app.py\n");
    out.len = 0;
    assert_int_equal(dsctl_walk(path, collect, &out), 0);
    assert_null(strstr(out.s, "app.py"));
    assert_non_null(strstr(out.s, "a.key"));

    /* XDG_CONFIG_HOME moves the default and git's own config */
    snprintf(cmd, sizeof(cmd), "rm -f '%s/.gitconfig'", home);
    assert_int_equal(system(cmd), 0);
    put(dir, "xdg/git/ignore", "/x.tmp\nkeep.log\n");
    snprintf(path, sizeof(path), "%s/xdg", dir);
    setenv("XDG_CONFIG_HOME", path, 1);
    snprintf(path, sizeof(path), "%s/w", dir);
    out.len = 0;
    assert_int_equal(dsctl_walk(path, collect, &out), 0);
    assert_null(strstr(out.s, "\nx.tmp"));
    assert_non_null(strstr(out.s, "a.key"));
    /* the weakest rules: the .dstackignore's "!keep.log" still wins */
    assert_non_null(strstr(out.s, "\nkeep.log"));
    unsetenv("XDG_CONFIG_HOME");

    /* no HOME, no XDG: no global excludes, no error */
    unsetenv("HOME");
    assert_null(dsctl_git_excludes_file());
    setenv("HOME", home, 1);

    dsctl_str_free(&out);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}


static void
test_parse_since(void **state)
{
    long long  now = 1700000000;

    (void) state;
    assert_int_equal(dsctl_parse_since("10m", now), now - 600);
    assert_int_equal(dsctl_parse_since("1h", now), now - 3600);
    assert_int_equal(dsctl_parse_since("30", now), now - 30);
    assert_int_equal(dsctl_parse_since("2d", now), now - 2 * 86400);
    assert_int_equal(dsctl_parse_since("2023-11-14T22:13:20Z", now),
        1700000000);
    assert_int_equal(dsctl_parse_since("2023-11-14T22:13:20.25Z", now),
        1700000000);
    assert_int_equal(dsctl_parse_since("2023-11-15T00:13:20+02:00", now),
        1700000000);
    assert_int_equal(dsctl_parse_since("2023-11-14T21:13:20-0100", now),
        1700000000);
    assert_int_equal(dsctl_parse_since("2023-11-14 22:13Z", now),
        1700000000 - 20);
    setenv("TZ", "UTC", 1);
    tzset();
    assert_int_equal(dsctl_parse_since("2023-11-14", now), 1699920000);
    assert_int_equal(dsctl_parse_since("2023-11-14T22:13:20", now),
        1700000000);
    /* far back is the epoch's first second, not a negative time */
    assert_int_equal(dsctl_parse_since("100w", 1000), 1);

    assert_int_equal(dsctl_parse_since("10x", now), -1);
    assert_int_equal(dsctl_parse_since("", now), -1);
    assert_int_equal(dsctl_parse_since("yesterday", now), -1);
    assert_int_equal(dsctl_parse_since("2023-13-01", now), -1);
    assert_int_equal(dsctl_parse_since("2023-02-31", now), -1);
    assert_int_equal(dsctl_parse_since("2023-11-14T25:00Z", now), -1);
    assert_int_equal(dsctl_parse_since("2023-11-14T22:13:20Q", now), -1);
    assert_int_equal(dsctl_parse_since("2023-11-14T22:13:20+2", now), -1);
    assert_int_equal(dsctl_parse_since("1969-12-31", now), -1);
}


/* ---- the project (project.c, config.c) -------------------------------------- */

static void
test_project_path(void **state)
{
    static const struct { const char *path, *project, *want; } cases[] = {
        /* main, or none: as before projects */
        { "/api/runs", "main", "/api/runs" },
        { "/api/runs", NULL, "/api/runs" },
        { "/api/runs", "", "/api/runs" },
        { "/api/runs", "team", "/api/runs?project=team" },
        { "/api/runs?all=1", "team", "/api/runs?all=1&project=team" },
        { "/api/runs/web", "team", "/api/runs/web?project=team" },
        { "/api/runs/web/logs?replica=0&offset=5", "team",
          "/api/runs/web/logs?replica=0&offset=5&project=team" },
        { "/api/runs/plan", "team", "/api/runs/plan?project=team" },
        { "/api/tokens/ci", "team", "/api/tokens/ci?project=team" },
        { "/api/secrets/set", "team", "/api/secrets/set?project=team" },
        { "/api/fleets", "team", "/api/fleets?project=team" },
        /* escaped: a name is a value, never more of the query */
        { "/api/runs", "a&b=c d/é",
          "/api/runs?project=a%26b%3Dc%20d%2F%C3%A9" },
        { "/api/runs", "x-y_z.1~", "/api/runs?project=x-y_z.1~" },
        /* not a project's: left alone */
        { "/api/projects", "team", "/api/projects" },
        { "/api/users/bob/tokens", "team", "/api/users/bob/tokens" },
        { "/api/audit?limit=5", "team", "/api/audit?limit=5" },
        { "/api/code/abc", "team", "/api/code/abc" },
        { "/api/health", "team", "/api/health" },
        { "/api/cluster", "team", "/api/cluster" },
        { "/api/runsx", "team", "/api/runsx" },
        { "/api/secretsx/y", "team", "/api/secretsx/y" },
    };
    dsctl_str_t  out = { 0 };
    size_t       i;

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        out.len = 0;
        dsctl_project_path(cases[i].path, cases[i].project, &out);
        if (strcmp(out.s, cases[i].want) != 0) {
            fail_msg("%s with %s: \"%s\", want \"%s\"", cases[i].path,
                cases[i].project ? cases[i].project : "NULL", out.s,
                cases[i].want);
        }
    }
    dsctl_str_free(&out);
}


static void
test_project_rewrite(void **state)
{
    static const struct { const char *in, *want; } cases[] = {
        /* added, a final newline supplied */
        { "", "project: team\n" },
        { "server: unix:/s\ntoken: t\n",
          "server: unix:/s\ntoken: t\nproject: team\n" },
        { "server: unix:/s\ntoken: t",
          "server: unix:/s\ntoken: t\nproject: team\n" },
        /* replaced in place, comments and the rest kept */
        { "# hi\nserver: unix:/s\nproject: main  # was\ntoken: t\n",
          "# hi\nserver: unix:/s\nproject: team\ntoken: t\n" },
        { "project:\ttest\r\ntoken: t\r\n",
          "project: team\r\ntoken: t\r\n" },
        /* a nested one, or another key, is not the top-level key */
        { "projects:\n- name: a\n  project: x\n",
          "projects:\n- name: a\n  project: x\nproject: team\n" },
    };
    static const char  dstacks[] =
        "projects:\n- name: a\n  url: http://x\n  token: t\n"
        "  default: true\n";
    dsctl_str_t     out = { 0 };
    dsctl_config_t  cfg;
    char            err[256];
    size_t          i;

    (void) state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        out.len = 0;
        dsctl_config_with_project(cases[i].in, strlen(cases[i].in), "team",
            &out);
        if (strcmp(out.s, cases[i].want) != 0) {
            fail_msg("case %zu: \"%s\", want \"%s\"", i, out.s,
                cases[i].want);
        }
    }

    /* dstack's layout: the top-level key wins over the default entry */
    out.len = 0;
    dsctl_config_with_project(dstacks, strlen(dstacks), "team", &out);
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(dsctl_config_parse(&cfg, "c.yml", out.s, out.len, err,
        sizeof(err)), 0);
    assert_string_equal(cfg.project, "team");
    assert_string_equal(cfg.server, "http://x");
    dsctl_config_free(&cfg);
    dsctl_str_free(&out);

    assert_true(dsctl_project_name_plain("team-1.a_b"));
    assert_false(dsctl_project_name_plain(""));
    assert_false(dsctl_project_name_plain("a b"));
    assert_false(dsctl_project_name_plain("a:b"));
    assert_false(dsctl_project_name_plain("#x"));
}


static void
test_project_select(void **state)
{
    char            dir[] = "/tmp/dstackctl-prj-XXXXXX";
    char            path[300], cmd[340];
    struct stat     st;
    dsctl_config_t  cfg;

    (void) state;
    assert_non_null(mkdtemp(dir));
    put(dir, "c.yml", "server: unix:/s.sock\ntoken: t\nproject: fromfile\n");
    snprintf(path, sizeof(path), "%s/c.yml", dir);
    unsetenv("DSTACK_SERVER");
    unsetenv("DSTACK_TOKEN");
    unsetenv("DSTACK_PROJECT");
    setenv("DSTACK_CONFIG", path, 1);

    /* the file, the environment, the flag: each wins over the one before */
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.project, "fromfile");
    assert_string_equal(cfg.project_from, "the config file");
    dsctl_config_free(&cfg);
    setenv("DSTACK_PROJECT", "fromenv", 1);
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.project, "fromenv");
    assert_string_equal(cfg.project_from, "DSTACK_PROJECT");
    dsctl_config_free(&cfg);
    dsctl_project_select("fromflag");
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.project, "fromflag");
    assert_string_equal(cfg.project_from, "--project");
    dsctl_config_free(&cfg);
    dsctl_project_select("");
    assert_int_equal(dsctl_config_load(&cfg), -1);
    dsctl_project_select(NULL);
    unsetenv("DSTACK_PROJECT");

    /* server and token from the environment: the file still says the
     * project, and nothing else */
    setenv("DSTACK_SERVER", "unix:/env.sock", 1);
    setenv("DSTACK_TOKEN", "envtok", 1);
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.server, "unix:/env.sock");
    assert_string_equal(cfg.token, "envtok");
    assert_string_equal(cfg.project, "fromfile");
    dsctl_config_free(&cfg);
    /* a broken file is said, not skipped */
    put(dir, "c.yml", "project: [x\n");
    assert_int_equal(dsctl_config_load(&cfg), -1);
    /* no file: main */
    setenv("DSTACK_CONFIG", "/nonexistent/c.yml", 1);
    assert_int_equal(dsctl_config_load(&cfg), 0);
    assert_string_equal(cfg.project, "main");
    assert_null(cfg.project_from);
    dsctl_config_free(&cfg);
    unsetenv("DSTACK_SERVER");
    unsetenv("DSTACK_TOKEN");
    unsetenv("DSTACK_CONFIG");

    /* the private write: 0600, the content, no temporary left */
    snprintf(path, sizeof(path), "%s/w.yml", dir);
    assert_int_equal(dsctl_write_private(path, "project: a\n", 11), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 11);
    chmod(path, 0644);
    assert_int_equal(dsctl_write_private(path, "x\n", 2), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(cmd, sizeof(cmd), "test $(ls '%s' | wc -l) -eq 2", dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/none/w.yml", dir);
    assert_int_equal(dsctl_write_private(path, "x\n", 2), -1);

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}


int
main(void)
{
    const struct CMUnitTest  tests[] = {
        cmocka_unit_test(test_wildmatch),
        cmocka_unit_test(test_ignore_rules),
        cmocka_unit_test(test_walk),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_config_load),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_git_config),
        cmocka_unit_test(test_walk_excludes),
        cmocka_unit_test(test_parse_since),
        cmocka_unit_test(test_project_path),
        cmocka_unit_test(test_project_rewrite),
        cmocka_unit_test(test_project_select),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
