#!/usr/bin/perl
# dstackctl's side of teams (#18) against real controld, nginx and
# replicas: user create (the first token, how to use it), project
# create/list/add-member/remove-member/delete, user list/token/delete,
# a run applied by a project member with --project (published at
# <run>--<project>.<domain>), ps --project (the project named above the
# table, the API's "project" in --json), the project chosen by --project
# over DSTACK_PROJECT over "project:" (written by project set-default,
# the rest of the file kept, mode 0600), audit (the table, --json,
# --limit, --project), and errors: the API's message for an unknown
# project or a role that may not, usage errors that send nothing.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use JSON::PP;
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t);
$c->start_controld;
$t->start;
my $dir = $c->dir;
my $domain = $t->domain;
my $port = $t->port;
my $sock = 'unix:' . $c->api_socket;

my $app = $c->app_dir('app', {
    'svc.dstack.yml' => <<'EOF',
type: service
name: web
port: 8000
commands:
  - echo "web of $DSTACK_RUN_NAME" > index.html
  - exec python3 -m http.server 8000
EOF
});

# ---- usage errors: exit 2, nothing sent ----------------------------------

my %nowhere = (DSTACK_SERVER => "unix:$dir/nowhere.sock", DSTACK_TOKEN => 'x');
for my $u (
    [['project'], qr/^dstackctl: project needs a subcommand/],
    [['project', 'frob'], qr/^dstackctl: unknown project subcommand "frob"/],
    [['project', 'create'], qr/^dstackctl: project create needs the project name/],
    [['project', 'create', 'a', 'b'], qr/^dstackctl: unexpected argument "b"/],
    [['project', 'add-member', 'team'],
        qr/^dstackctl: project add-member needs the project and the user/],
    [['project', 'add-member', 'team', 'bob', '--role', 'root'],
        qr/^dstackctl: invalid role "root": admin, manager or user/],
    [['project', 'set-default', 'a b'], qr/^dstackctl: invalid project name "a b"/],
    [['project', 'delete', 'team'], qr/^dstackctl: not deleting "team": no terminal/],
    [['user'], qr/^dstackctl: user needs a subcommand/],
    [['user', 'create'], qr/^dstackctl: user create needs the user name/],
    [['user', 'create', 'x', '--global-role', 'root'],
        qr/^dstackctl: invalid global role "root": admin or user/],
    [['user', 'token', 'x', '--expires-in', '3x'],
        qr/^dstackctl: invalid duration "3x"/],
    [['user', 'delete', 'x'], qr/^dstackctl: not deleting "x": no terminal/],
    [['audit', '--limit', '0'], qr/^dstackctl: --limit: cannot read "0"/],
    [['audit', 'x'], qr/^dstackctl: unexpected argument "x"/],
    [['ps', '--project'], qr/^dstackctl: option "--project" needs a value/],
) {
    my ($args, $re) = @$u;
    my $r = $c->cli($args, env => \%nowhere);
    is($r->{rc}, 2, "dstackctl @$args: exit 2") or diag $r->{err};
    like($r->{err}, $re, "dstackctl @$args: the message") or diag $r->{err};
    unlike($r->{err}, qr/cannot reach/, "dstackctl @$args: nothing sent");
}
my $r = $c->cli(['ps', '--project', ''], env => \%nowhere);
is($r->{rc}, 1, 'an empty --project: exit 1');
like($r->{err}, qr/^dstackctl: --project: the project name is empty$/m,
    'an empty --project: says so');

# the help and the completion know the new commands and --project
$r = $c->cli(['--help']);
like($r->{out}, qr/^\s+$_\s+\S/m, "--help lists $_") for qw(project user audit);
for my $cmd (qw(project user audit)) {
    $r = $c->cli([$cmd, '--help']);
    is($r->{rc}, 0, "$cmd --help exits 0");
    like($r->{out}, qr/^usage: dstackctl \Q$cmd\E\b/m, "$cmd --help: usage");
}
$r = $c->cli(['completion', 'bash']);
like($r->{out}, qr/add-member/, 'bash completion: project add-member');
like($r->{out}, qr/--global-role/, 'bash completion: user create\'s options');
like($r->{out}, qr/--project/, 'bash completion: --project');

# ---- users and projects ---------------------------------------------------

$r = $c->cli(['user', 'create', 'bob']);
is($r->{rc}, 0, 'user create exits 0') or diag $r->{err};
my ($bobtok) = $r->{out} =~ /DSTACK_TOKEN=(dst_\S+)/;
ok($bobtok, 'user create prints the token in the line to use it')
    or diag $r->{out};
like($r->{out}, qr/^Created user bob \(global role user\); its token is shown only this once/m,
    'and says that it is shown once');
like($r->{out}, qr/^    export DSTACK_SERVER=\Q$sock\E DSTACK_TOKEN=/m,
    'with the server to use it with');
my @seen = $r->{out} =~ /(dst_\S+)/g;
is(scalar @seen, 1, 'the token is printed once');

$r = $c->cli(['user', 'create', 'carol', '--json']);
is($r->{rc}, 0, 'user create --json exits 0') or diag $r->{err};
my $carol = eval { decode_json($r->{out}) } || {};
is($carol->{name}, 'carol', 'user create --json: the name');
like($carol->{token} // '', qr/^dst_/, 'user create --json: the token');

$r = $c->cli(['user', 'create', 'bob']);
is($r->{rc}, 1, 'a user that exists: exit 1');
like($r->{err}, qr/^dstackctl: .*bob/, 'with the API\'s message naming it');

# bob's own configuration: the server and his token
DsTest::_write("$dir/bob.yml", "# bob's\nserver: $sock\ntoken: $bobtok\n");
chmod 0600, "$dir/bob.yml";
my %bob = (DSTACK_CONFIG => "$dir/bob.yml");

$r = $c->cli(['project', 'create', 'team']);
is($r->{rc}, 0, 'project create exits 0') or diag $r->{err};
like($r->{out}, qr/^Created project team\b/m, 'and says so');
$r = $c->cli(['project', 'create', 'team']);
is($r->{rc}, 1, 'a project that exists: exit 1');
like($r->{err}, qr/^dstackctl: .*team/, 'with the API\'s message');

$r = $c->cli(['project', 'add-member', 'team', 'bob', '--role', 'user']);
is($r->{rc}, 0, 'project add-member exits 0') or diag $r->{err};
like($r->{out}, qr/^User bob is a user of project team$/m, 'and says so');
$r = $c->cli(['project', 'add-member', 'team', 'carol', '-r', 'manager']);
is($r->{rc}, 0, 'a manager too') or diag $r->{err};
$r = $c->cli(['project', 'add-member', 'team', 'nobody']);
is($r->{rc}, 1, 'an unknown user: exit 1');
like($r->{err}, qr/^dstackctl: .*nobody/, 'with the API\'s message');

# a manager's secret and service token land in the project named
my %carol = (DSTACK_CONFIG => undef, DSTACK_SERVER => $sock,
    DSTACK_TOKEN => $carol->{token});
$r = $c->cli(['secret', 'set', 'TEAMKEY', 'v1', '--project', 'team'],
    env => \%carol);
is($r->{rc}, 0, 'a manager sets a secret of team') or diag $r->{err};
$r = $c->cli(['secret', 'list', '--project', 'team']);
like($r->{out}, qr/^ TEAMKEY\s/m, 'team lists it');
$r = $c->cli(['secret', 'list']);
unlike($r->{out}, qr/TEAMKEY/, 'main does not');
$r = $c->cli(['token', 'create', 'team-ci', '--project', 'team'],
    env => \%carol);
is($r->{rc}, 0, 'a manager makes a service token of team') or diag $r->{err};
$r = $c->cli(['token', 'list', '--json', '--project', 'team']);
my $tl = eval { decode_json($r->{out}) } || [];
my ($tci) = grep { $_->{name} eq 'team-ci' } @$tl;
is($tci && $tci->{project}, 'team', 'token list --project team: it is team\'s');
$r = $c->cli(['fleet', 'list', '--project', 'team']);
is($r->{rc}, 0, 'fleet list --project team exits 0') or diag $r->{err};

$r = $c->cli(['project', 'list']);
is($r->{rc}, 0, 'project list exits 0') or diag $r->{err};
like($r->{out}, qr/^ NAME\s+ROLE\s+MEMBERS$/m, 'project list: the header');
like($r->{out}, qr/^ main\s+admin\s+admin \(admin\)$/m, 'main, mine as admin');
like($r->{out}, qr/^ team\s+admin\s+.*\bbob \(user\)/m,
    'team, with bob as a user');
like($r->{out}, qr/^ team\s+.*\bcarol \(manager\)/m, 'and carol as manager');

$r = $c->cli(['project', 'list'], env => \%bob);
is($r->{rc}, 0, 'bob\'s project list exits 0') or diag $r->{err};
like($r->{out}, qr/^ team\s+user\s/m, 'bob sees team, as a user');
unlike($r->{out}, qr/^ main\s/m, 'and not main, which he is not in');

$r = $c->cli(['project', 'list', '--json'], env => \%bob);
my $plist = eval { decode_json($r->{out}) } || [];
is_deeply([map { $_->{name} } @$plist], ['team'], 'project list --json');

$r = $c->cli(['user', 'list']);
is($r->{rc}, 0, 'user list exits 0') or diag $r->{err};
like($r->{out}, qr/^ NAME\s+GLOBAL ROLE\s+PROJECTS\s+TOKENS\s+CREATED$/m,
    'user list: the header');
like($r->{out}, qr/^ admin\s+admin\s+.*main \(admin\)/m, 'the admin');
like($r->{out}, qr/^ bob\s+user\s+team \(user\)\s+1\s+now$/m,
    'bob: his project, one token');
unlike($r->{out}, qr/dst_/, 'no token is listed');

# ---- a run of the project -----------------------------------------------------

$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '--project', 'team'],
    dir => $app, env => \%bob, timeout => 90);
is($r->{rc}, 0, 'bob applies with --project team') or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/^ Project\s+team$/m, 'the plan names the project');
like($r->{out},
    qr/^Service is published at:\n  http:\/\/web--team\.\Q$domain\E:$port\n\z/m,
    'apply prints the URL of the run\'s answer: <run>--<project>.<domain>');

# (a member's own token on the service is the module's part, t/9x of
# teams; here the gateway's route under that name)
my $res = $t->get('web--team', '/',
    headers => { Authorization => "Bearer " . $c->admin_token });
is($res->{status}, 200, 'the gateway serves it at web--team');
is($res->{body}, "web of web\n", 'from its replica, whose DSTACK_RUN_NAME '
    . 'is the run\'s own name (dstack\'s), not its key web--team');

$r = $c->cli(['ps', '--project', 'team'], env => \%bob);
is($r->{rc}, 0, 'ps --project team exits 0') or diag $r->{err};
like($r->{out}, qr/\A Project: team\n NAME\s+BACKEND\s+GPU\s+PRICE\s+STATUS\s+SUBMITTED\n/,
    'ps names the project above the table');
like($r->{out}, qr/^ web\s+local\s+.*running/m, 'and lists the run');

$r = $c->cli(['ps', '--json', '--project', 'team']);
my $runs = eval { decode_json($r->{out}) } || [];
my ($web) = grep { $_->{name} eq 'web' } @$runs;
ok($web, 'ps --json --project team lists the run (as the admin too)');
is($web->{project}, 'team', 'with the API\'s "project"') if $web;
is($web->{user}, 'bob', 'and who applied it') if $web;
is($web->{project_name}, 'team', 'and dstack\'s project_name') if $web;

$r = $c->cli(['ps']);
is($r->{rc}, 0, 'ps (main) exits 0');
unlike($r->{out}, qr/^ web\s/m, 'main does not list team\'s run');
unlike($r->{out}, qr/Project:/, 'nor names a project');

# the choice: --project over DSTACK_PROJECT over the file
$r = $c->cli(['ps'], env => { DSTACK_PROJECT => 'team' });
like($r->{out}, qr/^ web\s/m, 'DSTACK_PROJECT selects the project');
$r = $c->cli(['ps', '--project', 'main'], env => { DSTACK_PROJECT => 'team' });
unlike($r->{out}, qr/^ web\s/m, '--project wins over DSTACK_PROJECT');

# ---- errors: the API's message, a non-zero status -----------------------------

$r = $c->cli(['ps', '--project', 'nope']);
is($r->{rc}, 1, 'an unknown project: exit 1');
is($r->{err}, "dstackctl: project \"nope\" not found\n",
    'an unknown project: the API\'s 404 message');
$r = $c->cli(['ps'], env => \%bob);
is($r->{rc}, 1, 'a project bob is not in (main): exit 1');
like($r->{err}, qr/^dstackctl: project "main" not found$/m,
    'and it is not found for him');
$r = $c->cli(['secret', 'list', '--project', 'team'], env => \%bob);
is($r->{rc}, 1, 'a user may not read secrets: exit 1');
like($r->{err}, qr/^dstackctl: .*role user/m, 'the API\'s 403 names the role')
    or diag $r->{err};
$r = $c->cli(['logs', 'web', '--project', 'nope']);
is($r->{rc}, 1, 'logs of an unknown project: exit 1');
like($r->{err}, qr/^dstackctl: project "nope" not found$/m,
    'with the API\'s message');

# ---- project set-default ----------------------------------------------------

$r = $c->cli(['project', 'set-default', 'nope'], env => \%bob);
is($r->{rc}, 1, 'set-default of an unknown project: exit 1');
like($r->{err}, qr/^dstackctl: project "nope" not found$/m, 'says so');
unlike(DsTest::_slurp("$dir/bob.yml"), qr/project/,
    'and the file is left alone');

$r = $c->cli(['project', 'set-default', 'team'], env => \%bob);
is($r->{rc}, 0, 'project set-default exits 0') or diag $r->{err};
like($r->{out}, qr/^Default project: team \(in \Q$dir\E\/bob\.yml\)$/m,
    'and says where');
is(DsTest::_slurp("$dir/bob.yml"),
    "# bob's\nserver: $sock\ntoken: $bobtok\nproject: team\n",
    'the file gains "project: team", the rest kept');
is((stat "$dir/bob.yml")[2] & 07777, 0600, 'the file is mode 0600');

$r = $c->cli(['ps'], env => \%bob);
is($r->{rc}, 0, 'ps after set-default exits 0') or diag $r->{err};
like($r->{out}, qr/^ web\s/m, 'and lists the default project\'s run');

# with the server and token from the environment, the file's project holds
$r = $c->cli(['ps'], env => { DSTACK_CONFIG => "$dir/bob.yml",
    DSTACK_SERVER => $sock, DSTACK_TOKEN => $c->admin_token });
like($r->{out}, qr/^ Project: team$/m,
    'DSTACK_SERVER and DSTACK_TOKEN leave the project to the file');

$r = $c->cli(['project', 'set-default', 'main'], env => \%bob);
is($r->{rc}, 1, 'set-default of a project bob is not in: exit 1');
like(DsTest::_slurp("$dir/bob.yml"), qr/^project: team$/m,
    'and the file keeps its project');

# ---- tokens of users ----------------------------------------------------------

$r = $c->cli(['user', 'token', 'bob', '--name', 'bob-ci', '--expires-in', '1h']);
is($r->{rc}, 0, 'user token exits 0') or diag $r->{err};
my ($tok2) = $r->{out} =~ /^(dst_\S+)$/m;
ok($tok2, 'user token prints the token');
is($r->{out}, "$tok2\n", 'alone on stdout');
$r = $c->cli(['ps', '--project', 'team'], env => { DSTACK_CONFIG => undef,
    DSTACK_SERVER => $sock, DSTACK_TOKEN => $tok2 });
like($r->{out}, qr/^ web\s/m, 'the new token is bob\'s');
$r = $c->cli(['user', 'token', 'carol'], env => \%bob);
is($r->{rc}, 1, 'bob cannot make carol\'s tokens: exit 1');
like($r->{err}, qr/^dstackctl: \S/, 'with the API\'s message');
$r = $c->cli(['user', 'token', 'bob', '--json'], env => \%bob);
is($r->{rc}, 0, 'bob makes his own') or diag $r->{err};
my $own = eval { decode_json($r->{out}) } || {};
is($own->{user}, 'bob', 'user token --json: whose');

# ---- members and the end ------------------------------------------------------

$r = $c->cli(['stop', 'web', '-y', '-x'], env => \%bob);
is($r->{rc}, 0, 'bob stops his run in his default project') or diag $r->{err};

$r = $c->cli(['project', 'remove-member', 'team', 'bob']);
is($r->{rc}, 0, 'project remove-member exits 0') or diag $r->{err};
like($r->{out}, qr/^Removed bob from project team$/m, 'and says so');
$r = $c->cli(['ps'], env => \%bob);
is($r->{rc}, 1, 'bob is out of team at once');
like($r->{err}, qr/^dstackctl: project "team" not found$/m,
    'and team is gone for him');

$r = $c->cli(['audit', '--json', '--project', 'team']);
my $ev = eval { decode_json($r->{out}) } || [];
ok(@$ev && !(grep { ($_->{project} // '') ne 'team' } @$ev),
    'audit --project team: team\'s events only') or diag $r->{out};
ok((grep { $_->{action} eq 'apply' && $_->{user} eq 'bob' } @$ev),
    'bob\'s apply among them');

$r = $c->cli(['user', 'delete', 'bob', '-y']);
is($r->{rc}, 0, 'user delete exits 0') or diag $r->{err};
like($r->{out}, qr/^Deleted user bob$/m, 'and says so');
$r = $c->cli(['project', 'list'], env => \%bob);
is($r->{rc}, 1, 'bob\'s token is revoked with him');
like($r->{err}, qr/^dstackctl: .*\(check the token/m, 'a 401');

$r = $c->cli(['project', 'delete', 'team', '-y']);
is($r->{rc}, 0, 'project delete exits 0') or diag $r->{err};
like($r->{out}, qr/^Deleted project team$/m, 'and says so');
$r = $c->cli(['project', 'delete', 'main', '-y']);
is($r->{rc}, 1, 'main cannot be deleted: exit 1');
like($r->{err}, qr/^dstackctl: \S/, 'with the API\'s message');

# ---- audit --------------------------------------------------------------------

$r = $c->cli(['audit']);
is($r->{rc}, 0, 'audit exits 0') or diag $r->{err};
like($r->{out}, qr/^ TIME\s+USER\s+PROJECT\s+ACTION\s+OBJECT\s+STATUS$/m,
    'audit: the header');
my @rows = grep { /^ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d / } split /\n/, $r->{out};
cmp_ok(scalar @rows, '>=', 8, 'audit lists the changes') or diag $r->{out};
# actions are words ("user create"): columns are two spaces apart
like($r->{out}, qr/^ \S+ \S+  bob\s+team\s+apply\s+web\s+201$/m,
    'bob\'s apply in team');
like($r->{out}, qr/^ \S+ \S+  admin\s+main\s+user create\s+bob\s+201$/m,
    'the admin made user bob');
like($r->{out}, qr/^ \S+ \S+  admin\s+main\s+user create\s+bob\s+409$/m,
    'and was refused a second one');
like($r->{out}, qr/^ \S+ \S+  admin\s+team\s+member set\s+bob\s+200$/m,
    'the membership');
like($r->{out}, qr/^ \S+ \S+  admin\s+team\s+member remove\s+bob\s+200$/m,
    'and its end');
like($r->{out}, qr/^ \S+ \S+  bob\s+main\s+user token\s+carol\s+40[34]$/m,
    'bob\'s refused call, with its status');
like($r->{out}, qr/^ \S+ \S+  admin\s+team\s+project delete\s+team\s+200$/m,
    'the project deleted');
unlike($r->{out}, qr/dst_/, 'no token in the audit');

$r = $c->cli(['audit', '--json', '--limit', '3']);
is($r->{rc}, 0, 'audit --json exits 0') or diag $r->{err};
$ev = eval { decode_json($r->{out}) } || [];
is(scalar @$ev, 3, 'audit --limit 3: three events');
ok($ev->[0]{seq} > $ev->[1]{seq} && $ev->[1]{seq} > $ev->[2]{seq},
    'newest first') if @$ev == 3;
like($ev->[0]{action} // '', qr/project/, 'the last: the project deleted')
    if @$ev;


$c->finish;
$t->done;
