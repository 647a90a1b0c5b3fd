#!/usr/bin/perl
# dstackctl token create/list/revoke against real controld and nginx:
# a service token opens its service through the gateway and nothing
# else; revoked, it opens nothing; a service token cannot drive the API;
# a bad admin token gets a clear message.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t);
$c->start_controld;
$t->start;

my $app = $c->app_dir('app', {
    'svc.dstack.yml' => <<'EOF',
type: service
port: 8000
commands:
  - echo "$DSTACK_RUN_NAME" > index.html
  - exec python3 -m http.server 8000
EOF
});

# two runs with generated names, detached
my @names;
for (1 .. 2) {
    my $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '-d'],
        dir => $app, timeout => 60);
    is($r->{rc}, 0, 'apply -y -d exits 0') or diag $r->{err};
    my ($name) = $r->{out} =~ /^Run (\S+) submitted$/m;
    like($name // '', qr/^[a-z]+-[a-z]+-\d+$/,
        'the server picked an <adjective>-<animal>-<N> name');
    like($r->{out}, qr/^Service will be published at:\n  http:\/\/\Q$name\E\./m,
        '-d says where the service will be');
    push @names, $name;
}
isnt($names[0], $names[1], 'two generated names differ');

sub ready {
    my $name = shift;
    return DsTest::wait_until(sub {
        my $run = $c->run_named($name);
        $run && $run->{status} eq 'running'
            && grep { $_->{ready} } @{ $run->{replicas} };
    }, timeout => 60, interval => 0.2);
}
ok(ready($_), "$_ becomes ready") for @names;

# ---- create ------------------------------------------------------------------

my $r = $c->cli(['token', 'create', 'ci', '--scope', "services:$names[0]",
    '--expires', '1h']);
is($r->{rc}, 0, 'token create exits 0') or diag $r->{err};
my ($tok) = $r->{out} =~ /^(dst_\S+)$/m;
ok($tok, 'token create prints the token alone on stdout') or diag $r->{out};
is($r->{out}, "$tok\n", 'and nothing else');

my $res = $t->get($names[0], '/', headers => { Authorization => "Bearer $tok" });
is($res->{status}, 200, 'the service token opens its service');
is($res->{body}, "$names[0]\n", 'and reaches its replica');
$res = $t->get($names[1], '/', headers => { Authorization => "Bearer $tok" });
is($res->{status}, 403, 'but not another service (403)');

$r = $c->cli(['ps'], env => { DSTACK_CONFIG => undef,
    DSTACK_SERVER => 'unix:' . $c->api_socket, DSTACK_TOKEN => $tok });
is($r->{rc}, 1, 'a service token cannot use the API: exit 1');
like($r->{err}, qr/^dstackctl: \S/, 'with the server\'s message');

$r = $c->cli(['token', 'create', 'all', '--json']);
is($r->{rc}, 0, 'token create --json exits 0');
my $j = eval { decode_json($r->{out}) };
is($j->{name}, 'all', 'token create --json: the name') if $j;
like($j->{token} // '', qr/^dst_/, 'token create --json: the token') if $j;
$res = $t->get($names[1], '/',
    headers => { Authorization => "Bearer $j->{token}" }) if $j;
is($res->{status}, 200, 'a services token opens every service');

$r = $c->cli(['token', 'create', 'ci']);
is($r->{rc}, 1, 'a second token of the same name: exit 1');
like($r->{err}, qr/^dstackctl: .*"?ci"?/, 'and the message names it');

# ---- list -----------------------------------------------------------------------

$r = $c->cli(['token', 'list']);
is($r->{rc}, 0, 'token list exits 0');
like($r->{out}, qr/^ NAME\s+SCOPE\s+SERVICES\s+CREATED\s+EXPIRES$/m,
    'token list prints its header');
like($r->{out}, qr/^ ci\s+services\s+\Q$names[0]\E\s+now\s+\d{4}-\d\d-\d\d \d\d:\d\d$/m,
    'a row for the scoped token with its expiry');
like($r->{out}, qr/^ all\s+services\s+all\s+now\s+never$/m,
    'a row for the all-services token');
unlike($r->{out}, qr/dst_/, 'no secret is listed');

$r = $c->cli(['token', 'list', '--json']);
my $list = eval { decode_json($r->{out}) };
ok(ref $list eq 'ARRAY' && (grep { $_->{name} eq 'ci' } @$list),
    'token list --json lists the tokens') or diag $r->{out};

# ---- revoke -------------------------------------------------------------------------

$r = $c->cli(['token', 'revoke', 'ci']);
is($r->{rc}, 0, 'token revoke exits 0') or diag $r->{err};
like($r->{out}, qr/^Revoked token ci$/m, 'and says so');
$res = $t->get($names[0], '/', headers => { Authorization => "Bearer $tok" });
is($res->{status}, 401, 'the revoked token opens nothing');
$r = $c->cli(['token', 'revoke', 'ci']);
is($r->{rc}, 1, 'revoking it again: exit 1');
like($r->{err}, qr/^dstackctl: .*ci/, 'and the message names it');

# ---- logs -f with an admin token that is revoked meanwhile -------------------------

$r = $c->cli(['token', 'create', 'watcher', '--scope', 'admin']);
is($r->{rc}, 0, 'an admin token for a follower') or diag $r->{err};
my ($wtok) = $r->{out} =~ /^(dst_\S+)$/m;
my $bg = $c->cli_bg(['logs', $names[0], '-f'],
    env => { DSTACK_TOKEN => $wtok });
sleep 0.5;
$r = $c->cli(['token', 'revoke', 'watcher']);
is($r->{rc}, 0, 'revoked while it follows');
ok(DsTest::wait_until(sub { waitpid($bg->{pid}, POSIX::WNOHANG()) > 0 },
    timeout => 10), 'logs -f ends by itself');
my $bgrc = $? >> 8;
is($bgrc, 1, 'with exit 1');
like(DsTest::_slurp($bg->{err}),
    qr/^dstackctl: the server ended the stream early: the token may have been revoked/m,
    'and says why it may have ended');

# ---- through nginx ----------------------------------------------------------------

$r = $c->cli(['ps', '--json'], env => $c->via_nginx);
is($r->{rc}, 0, 'ps through nginx (http://) exits 0') or diag $r->{err};
like($r->{out}, qr/"\Q$names[0]\E"/, 'and lists the runs');
$r = $c->cli(['ps'], env => { %{ $c->via_nginx }, DSTACK_TOKEN => $tok });
is($r->{rc}, 1, 'a revoked token through nginx: exit 1');

# ---- a wrong admin token --------------------------------------------------------

$r = $c->cli(['ps'], env => { DSTACK_TOKEN => 'dst_wrong' });
is($r->{rc}, 1, 'a wrong token: exit 1');
like($r->{err}, qr/^dstackctl: .*\(check the token: DSTACK_TOKEN or "token:" in the config file\)$/m,
    'a wrong token: says to check the token');

$r = $c->cli(['stop', '-x', '-y', $_], timeout => 60) for @names;
is($r->{rc}, 0, 'stop -x exits 0');
like($r->{out}, qr/^Run \S+ aborted$/m, 'stop -x says aborted');

$c->finish;
$t->done;
