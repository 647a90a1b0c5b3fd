#!/usr/bin/perl
# dstackctl on its own, no server needed: help and version, usage errors
# (exit 2), spec errors as file:line:col with nothing sent (exit 1),
# configuration errors, an unreachable server, and the code it would pack
# (.gitignore honoured, .git never, the archive reproducible).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use Test::More;

DsCli->require_built('cli');

my $t = DsTest->new;
my $c = DsCli->new($t);
my $dir = $t->dir;

# a server that is not there: anything that reaches the network fails
# with "cannot reach", so a different error proves nothing was sent
my %nowhere = (DSTACK_SERVER => "unix:$dir/nowhere.sock",
    DSTACK_TOKEN => 'x');

# ---- help and version ----------------------------------------------------

my $r = $c->cli(['--help']);
is($r->{rc}, 0, '--help exits 0');
like($r->{out}, qr/^usage: dstackctl /m, '--help prints the usage');
for my $cmd (qw(apply run ps stop logs offer token)) {
    like($r->{out}, qr/^\s+\Q$cmd\E\s+\S/m, "--help lists $cmd");
}
unlike($r->{out}, qr/__/, '--help does not list the hidden commands');

$r = $c->cli(['--version']);
is($r->{rc}, 0, '--version exits 0');
like($r->{out}, qr/^dstackctl \d+\.\d+\.\d+$/m, '--version prints it');

for my $cmd (qw(apply run ps stop logs offer token)) {
    $r = $c->cli([$cmd, '--help']);
    is($r->{rc}, 0, "$cmd --help exits 0");
    like($r->{out}, qr/^usage: dstackctl \Q$cmd\E\b/m,
        "$cmd --help starts with its usage");
    is($r->{err}, '', "$cmd --help writes nothing on stderr");
    $r = $c->cli(['help', $cmd]);
    like($r->{out}, qr/^usage: dstackctl \Q$cmd\E\b/m, "help $cmd too");
}

# ---- usage errors: exit 2, a lowercase message, the usage -----------------

my @usage = (
    [[], qr/^usage: dstackctl/m],
    [['frobnicate'], qr/^dstackctl: "frobnicate" is not a dstackctl command/],
    [['--frob'], qr/^dstackctl: unknown option "--frob"/],
    [['apply', '-z'], qr/^dstackctl: option "-z" is unknown\nusage: dstackctl apply/],
    [['apply', '--bogus=1'], qr/^dstackctl: option "--bogus" is unknown/],
    [['apply', '-f'], qr/^dstackctl: option "-f" needs a value/],
    [['apply', '-f', 'x.yml', 'extra'], qr/^dstackctl: unexpected argument "extra"/],
    [['apply', '-f', 'x.yml', '-n', 'Bad_Name'],
        qr/^dstackctl: invalid run name "Bad_Name"/],
    [['apply', '-f', 'x.yml', '-n', 'a'], qr/^dstackctl: invalid run name "a"/],
    [['apply'], qr/^dstackctl: no configuration file: give one with -f FILE/],
    [['run'], qr/^dstackctl: run needs the working directory/],
    [['ps', 'extra'], qr/^dstackctl: unexpected argument "extra"/],
    [['ps', '-w', '--json'], qr/-w and --json do not go together/],
    [['stop'], qr/^dstackctl: stop needs the run name/],
    [['stop', 'UPPER'], qr/^dstackctl: invalid run name "UPPER"/],
    [['logs'], qr/^dstackctl: logs needs the run name/],
    [['logs', 'abc', '--replica', 'x'], qr/^dstackctl: invalid replica number "x"/],
    [['logs', 'abc', '--replica', '-1'], qr/^dstackctl: invalid replica number "-1"/],
    [['offer'], qr/^dstackctl: offer needs -f FILE/],
    [['token'], qr/^dstackctl: token needs a subcommand/],
    [['token', 'frob'], qr/^dstackctl: unknown token subcommand "frob"/],
    [['token', 'create'], qr/^dstackctl: token create needs a name/],
    [['token', 'create', 'x', '--scope', 'root'], qr/^dstackctl: invalid scope "root"/],
    [['token', 'create', 'x', '--scope', 'services:Bad'],
        qr/^dstackctl: invalid run name "Bad" in the scope/],
    [['token', 'create', 'x', '--scope', 'services:'],
        qr/^dstackctl: the scope "services:" names no run/],
    [['token', 'create', 'x', '--expires', '3x'], qr/^dstackctl: invalid duration "3x"/],
    [['token', 'revoke'], qr/^dstackctl: token revoke needs a name/],
);
for my $u (@usage) {
    my ($args, $re) = @$u;
    $r = $c->cli($args, env => \%nowhere);
    is($r->{rc}, 2, "dstackctl @$args: exit 2") or diag $r->{err};
    like($r->{err}, $re, "dstackctl @$args: the message") or diag $r->{err};
    unlike($r->{err}, qr/cannot reach/, "dstackctl @$args: nothing sent");
}

# ---- the service file --------------------------------------------------------

my $app = $c->app_dir('app', {
    'ok.dstack.yml' => "type: service\nport: 8000\ncommands:\n  - echo hi\n",
    'typo.dstack.yml' => "type: service\nport: 8000\ncommands:\n"
        . "  - echo hi\nresources:\n  gpus: 1\n",
    'noport.dstack.yml' => "type: service\ncommands:\n  - echo hi\n",
    'broken.dstack.yml' => "type: service\nport: [8000\n",
});

$r = $c->cli(['apply', '-f', 'missing.dstack.yml', '-y'], dir => $app,
    env => \%nowhere);
is($r->{rc}, 1, 'a missing file: exit 1');
like($r->{err}, qr/^dstackctl: cannot read "missing\.dstack\.yml": No such file/,
    'a missing file: the message names it');

for my $case (
    ['typo.dstack.yml', qr/^typo\.dstack\.yml:6:3: .*"gpus".*\(did you mean "gpu"\?\)$/m],
    ['noport.dstack.yml', qr/^noport\.dstack\.yml:\d+:\d+: .*port/m],
    ['broken.dstack.yml', qr/^broken\.dstack\.yml:\d+:\d+: /m],
) {
    my ($f, $re) = @$case;
    for my $cmd (['apply', '-f', $f, '-y'], ['offer', '-f', $f],
        ['run', '.', '-f', $f, '-y'])
    {
        $r = $c->cli($cmd, dir => $app, env => \%nowhere);
        is($r->{rc}, 1, "@$cmd: exit 1");
        like($r->{err}, $re, "@$cmd: file:line:col: message") or diag $r->{err};
        unlike($r->{err}, qr/cannot reach/, "@$cmd: nothing sent");
        is($r->{out}, '', "@$cmd: no plan printed");
    }
}

# a valid file gets as far as the server
$r = $c->cli(['apply', '-f', 'ok.dstack.yml', '-y'], dir => $app,
    env => \%nowhere);
is($r->{rc}, 1, 'no server: exit 1');
like($r->{err}, qr/^dstackctl: cannot reach the server "unix:\Q$dir\E\/nowhere\.sock": /,
    'no server: the message names the server');

# ---- configuration ----------------------------------------------------------------

$r = $c->cli(['ps'], env => { DSTACK_CONFIG => undef });
is($r->{rc}, 1, 'no configuration: exit 1');
like($r->{err}, qr/^dstackctl: no server configured: set DSTACK_SERVER and DSTACK_TOKEN, or write "server:" and "token:" in "\Q$dir\E\/home\/\.dstack\/config\.yml"$/,
    'no configuration: says where to put it');

$r = $c->cli(['ps'], env => { DSTACK_CONFIG => "$dir/none.yml" });
is($r->{rc}, 1, 'DSTACK_CONFIG naming a missing file: exit 1');
like($r->{err}, qr/^dstackctl: cannot read "\Q$dir\E\/none\.yml": No such file/,
    'DSTACK_CONFIG naming a missing file: the message names it');

DsTest::_write("$dir/bad.yml", "server: [x\n");
$r = $c->cli(['ps'], env => { DSTACK_CONFIG => "$dir/bad.yml" });
is($r->{rc}, 1, 'a broken configuration: exit 1');
like($r->{err}, qr/^dstackctl: \Q$dir\E\/bad\.yml:2:1: /,
    'a broken configuration: file:line:col');

# the loader of the service files: the same places, the same refusals
for my $case (
    ["server: unix:/x.sock\ntoken:\n  - t\n",
     qr/^dstackctl: \Q$dir\E\/bad2\.yml:3:3: token: expected a string$/m,
     'a list where a string goes'],
    ["server: unix:/x.sock\ntoken: t\nserver: unix:/y.sock\n",
     qr/^dstackctl: \Q$dir\E\/bad2\.yml:3:1: duplicate key "server" \(first at line 1\)$/m,
     'a duplicate key'],
    ["server: unix:/x.sock\n\ttoken: t\n",
     qr/^dstackctl: \Q$dir\E\/bad2\.yml:2:1: tabs cannot indent YAML: use spaces$/m,
     'a tab'],
    ["- server\n",
     qr/^dstackctl: \Q$dir\E\/bad2\.yml:1:1: expected a mapping with "server:" and "token:"$/m,
     'not a mapping'],
) {
    my ($text, $re, $name) = @$case;
    DsTest::_write("$dir/bad2.yml", $text);
    $r = $c->cli(['ps'], env => { DSTACK_CONFIG => "$dir/bad2.yml" });
    is($r->{rc}, 1, "a bad configuration, $name: exit 1");
    like($r->{err}, $re, "a bad configuration, $name: file:line:col")
        or diag $r->{err};
}

DsTest::_write("$dir/notoken.yml", "server: unix:$dir/x.sock\n");
$r = $c->cli(['ps'], env => { DSTACK_CONFIG => "$dir/notoken.yml" });
is($r->{rc}, 1, 'a server without a token: exit 1');
like($r->{err}, qr/^dstackctl: no token configured for "unix:\Q$dir\E\/x\.sock"/,
    'a server without a token: says so');

$r = $c->cli(['ps'], env => { DSTACK_SERVER => 'ftp://x', DSTACK_TOKEN => 't' });
is($r->{rc}, 1, 'a server URL of another scheme: exit 1');
like($r->{err}, qr/^dstackctl: invalid server "ftp:\/\/x" \(from DSTACK_SERVER\)/,
    'a server URL of another scheme: says so');

# ~/.dstack/config.yml in dstack's own layout is read
mkdir "$dir/home/.dstack";
DsTest::_write("$dir/home/.dstack/config.yml",
    "projects:\n- name: main\n  url: unix:$dir/dstack.sock\n  token: t\n"
    . "  default: true\nrepos: []\n");
$r = $c->cli(['ps'], env => { DSTACK_CONFIG => undef });
like($r->{err}, qr/^dstackctl: cannot reach the server "unix:\Q$dir\E\/dstack\.sock"/,
    "dstack's ~/.dstack/config.yml is read");

# ---- the code: .gitignore ------------------------------------------------------------

my $code = $c->app_dir('code', {
    '.gitignore' => "# build output\n*.o\n/build/\nlogs/*\n!logs/keep.txt\n"
        . "**/cache\n\\#literal\n",
    'main.c' => "int main(void) { return 0; }\n",
    'main.o' => "obj",
    'build/out' => "x",
    'src/build/kept-because-anchored' => "x",
    'logs/a.log' => "x",
    'logs/keep.txt' => "x",
    'deep/er/cache/x' => "x",
    '#literal' => "x",
    '.git/HEAD' => "ref: refs/heads/main\n",
    'sub/.gitignore' => "*.tmp\n!wanted.o\n",
    'sub/a.tmp' => "x",
    'sub/wanted.o' => "x",
    'sub/b.txt' => "x",
    '-dash name' => "x",
    'with space' => "x",
});
symlink 'main.c', "$code/link.c";

$r = $c->cli(['__ignore-check', $code]);
is($r->{rc}, 0, '__ignore-check exits 0');
is($r->{out}, join('', map { "$_\n" } qw(-dash_name .gitignore deep/ deep/er/
    link.c logs/ logs/keep.txt main.c src/ src/build/
    src/build/kept-because-anchored sub/ sub/.gitignore sub/b.txt
    sub/wanted.o with_space)) =~ s/_/ /gr,
    'the packed paths honour .gitignore and leave .git out')
    or diag $r->{out};

$r = $c->cli(['__pack', $code, "$dir/code.tar.gz"]);
is($r->{rc}, 0, '__pack exits 0') or diag $r->{err};
my ($hash, $files) = $r->{out} =~ /^([0-9a-f]{64}) (\d+)$/m;
ok($hash, '__pack prints the sha256');
is($files, 10, '__pack counts the files');
my $list = `tar -tzf $dir/code.tar.gz`;
like($list, qr/^-dash name$/m, 'a name starting with "-" is packed as a name');
unlike($list, qr/main\.o|\.git\/|a\.log|a\.tmp/, 'ignored files are not in the archive');
like($list, qr/^sub\/wanted\.o$/m, 'a re-included file is');
my $sha = `sha256sum $dir/code.tar.gz`;
like($sha, qr/^\Q$hash\E /, 'the hash is the archive\'s sha256');
$r = $c->cli(['__pack', $code, "$dir/code2.tar.gz"]);
like($r->{out}, qr/^\Q$hash\E /, 'the same tree packs to the same bytes');

$r = $c->cli(['__ignore-check', "$dir/nonexistent"]);
is($r->{rc}, 1, '__ignore-check of a missing directory: exit 1');
like($r->{err}, qr/^dstackctl: cannot read "\Q$dir\E\/nonexistent"/,
    'and the message names it');

$t->done;
