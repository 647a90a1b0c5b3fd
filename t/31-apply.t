#!/usr/bin/perl
# dstackctl end to end through real nginx (with the module), real
# dstack-controld (local backend) and real replica processes:
# offer, apply (plan, offers, upload honouring .gitignore, follow, the
# published URL), traffic through the gateway on both replicas, ps, logs,
# re-apply with a change (shown, rolled out), stop (gone from routing,
# processes gone).

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
my $domain = $t->domain;
my $port = $t->port;
my $admin = $c->admin_token;
ok($admin, 'controld wrote a client config with an admin token');

# A small app from python3's standard library: each replica serves the
# uploaded directory and an index naming itself.
my $app = $c->app_dir('app', {
    'svc.dstack.yml' => <<'EOF',
type: service
name: hello
port: 8000
replicas: 2
env:
  - GREETING=hi
commands:
  - echo "$GREETING from replica $DSTACK_REPLICA_NUM" > index.html
  - exec python3 -m http.server 8000
EOF
    '.gitignore' => "secret.txt\n",
    'secret.txt' => "not uploaded\n",
    'data.txt' => "uploaded\n",
});

sub get {
    my ($path, %h) = @_;
    return $t->get('hello', $path,
        headers => { Authorization => "Bearer " . ($h{token} // $admin) });
}

# ---- offer ------------------------------------------------------------------

my $r = $c->cli(['offer', '-f', 'svc.dstack.yml'], dir => $app);
is($r->{rc}, 0, 'offer exits 0') or diag $r->{err};
like($r->{out}, qr/^ #\s+BACKEND\s+REGION\s+RESOURCES\s+INSTANCE-TYPE\s+SPOT\s+PRICE$/m,
    'offer prints the offers table');
like($r->{out}, qr/^ 1\s+local\s+/m, 'the local backend offers the host');

$r = $c->cli(['offer', '-f', 'svc.dstack.yml', '--json'], dir => $app);
is($r->{rc}, 0, 'offer --json exits 0');
my $offers = eval { decode_json($r->{out}) };
ok($offers && @{ $offers->{offers} } >= 1, 'offer --json gives the offers')
    or diag $r->{out};
is($offers->{offers}[0]{backend}, 'local', 'with their backend') if $offers;

# ---- apply ----------------------------------------------------------------------

$r = $c->cli(['apply', '-f', 'svc.dstack.yml'], dir => $app);
is($r->{rc}, 2, 'apply without -y and without a terminal: exit 2');
like($r->{err}, qr/^dstackctl: not submitting "hello": no terminal to confirm on \(use -y\)$/m,
    'and it says to use -y');
like($r->{out}, qr/^ Run name\s+hello$/m, 'the plan was shown first');
is($c->run_named('hello'), undef, 'nothing was submitted');

$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y'], dir => $app,
    timeout => 90);
is($r->{rc}, 0, 'apply -y exits 0') or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/^ Project\s+main$/m, 'the plan names the project');
like($r->{out}, qr/^ Type\s+service$/m, 'the plan says service');
like($r->{out}, qr/^ Resources\s+\S.*xCPU/m, 'the plan shows the resources');
like($r->{out}, qr/^ Spot policy\s+on-demand$/m, 'and the spot policy');
like($r->{out}, qr/^ Max price\s+-$/m, 'and the max price');
like($r->{out}, qr/^ #\s+BACKEND/m, 'and the offers');
unlike($r->{out}, qr/Submit the run/, '-y asks nothing');
like($r->{out}, qr/^Run hello submitted$/m, 'says the run is submitted');
like($r->{out}, qr/^hello  running  2\/2 replicas ready$/m,
    'follows the run until both replicas are ready');
like($r->{out},
    qr/^Service is published at:\n  http:\/\/hello\.\Q$domain\E:$port\n\z/m,
    'and ends with the published URL');
unlike($r->{out}, qr/\e\[/, 'no terminal escapes without a terminal');

# traffic through the gateway reaches both replicas
my %seen;
for (1 .. 20) {
    my $res = get('/');
    is($res->{status}, 200, 'GET / through the gateway: 200') or last;
    $seen{$1}++ if $res->{body} =~ /^hi from replica (\d+)$/m;
}
is_deeply([sort keys %seen], [0, 1], 'both replicas answered')
    or diag explain \%seen;

is(get('/data.txt')->{body}, "uploaded\n", 'the uploaded code is there');
is(get('/secret.txt')->{status}, 404, 'a .gitignored file was not uploaded');
is($t->get('hello', '/')->{status}, 401, 'without a token: 401');

# ---- ps, logs ----------------------------------------------------------------------

$r = $c->cli(['ps']);
is($r->{rc}, 0, 'ps exits 0');
like($r->{out}, qr/^ NAME\s+BACKEND\s+GPU\s+PRICE\s+STATUS\s+SUBMITTED$/m,
    'ps prints its header');
like($r->{out}, qr/^ hello\s+running\s+\S/m, 'a row for the run');
like($r->{out}, qr/^   replica=0\s+local\s+-\s+\$0\s+running\s/m,
    'a row for replica 0');
like($r->{out}, qr/^   replica=1\s+local\s+-\s+\$0\s+running\s/m,
    'a row for replica 1');

my $run = $c->run_named('hello');
ok($run, 'ps --json lists the run');
is($run->{status}, 'running', 'ps --json: running');
is(scalar @{ $run->{replicas} }, 2, 'ps --json: two replicas');
my @pids = grep { $_ } map { $_->{pid} } @{ $run->{replicas} };
is(scalar @pids, 2, 'ps --json: each replica has a pid');
ok(kill(0, $_), "replica process $_ runs") for @pids;

$r = $c->cli(['logs', 'hello', '--replica', '1']);
is($r->{rc}, 0, 'logs exits 0') or diag $r->{err};
like($r->{out}, qr/"GET \/ HTTP\/1\.[01]" 200/, 'logs show the requests');

$r = $c->cli(['logs', 'nosuch']);
is($r->{rc}, 1, 'logs of an unknown run: exit 1');
like($r->{err}, qr/^dstackctl: .*nosuch/, 'and the message names it');

# logs -f follows until Ctrl-C
my $bg = $c->cli_bg(['logs', 'hello', '-f', '--replica', '0']);
sleep 0.5;
get('/followed') for 1 .. 4;
ok(DsTest::wait_until(sub { DsTest::_slurp($bg->{out}) =~ /GET \/followed/ },
    timeout => 10), 'logs -f shows new lines as they come');
kill 'INT', $bg->{pid};
$r = $c->reap($bg);
is($r->{rc}, 0, 'Ctrl-C ends logs -f with exit 0');

# ---- re-apply with a change ------------------------------------------------------------

my $loop = fork // die;
if (!$loop) {
    # a request loop during the rollout; it writes the failures it saw
    my $fails = 0;
    my $end = time + 60;
    while (time < $end && !-e "$t->{dir}/stop-loop") {
        my $res = get('/');
        $fails++ if $res->{status} != 200;
    }
    DsTest::_write("$t->{dir}/loop-fails", $fails);
    POSIX::_exit(0);
}

$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '-e', 'GREETING=hello'],
    dir => $app, timeout => 120);
is($r->{rc}, 0, 're-apply with a changed env exits 0')
    or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/^ Run hello exists; these changes will be applied:$/m,
    're-apply says the run exists');
like($r->{out}, qr/^ FIELD\s+OLD\s+NEW\s+UPDATE$/m, 'and shows the changes');
like($r->{out}, qr/^ env\s+.*GREETING.*hi.*hello.*rolling$/m,
    'the env change rolls out');
like($r->{out}, qr/^Run hello updated$/m, 'says updated');
like($r->{out}, qr/^Service is published at:$/m, 'and where it is');

DsTest::_write("$t->{dir}/stop-loop", '');
waitpid($loop, 0);
is(DsTest::_slurp("$t->{dir}/loop-fails"), '0',
    'no request failed during the rollout');

%seen = ();
for (1 .. 20) {
    my $res = get('/');
    $seen{$1}++ if $res->{body} =~ /^hello from replica (\d+)$/m;
}
is_deeply([sort keys %seen], [0, 1], 'both replicas run the new env')
    or diag explain \%seen;

# ---- an update that never starts -------------------------------------------------------

DsTest::_write("$app/broken.dstack.yml", <<'YML');
type: service
name: hello
port: 8000
replicas: 2
env:
  - GREETING=hello
commands:
  - echo "model weights not found" >&2
  - exit 3
YML
$r = $c->cli(['apply', '-f', 'broken.dstack.yml', '-y'], dir => $app,
    timeout => 120);
is($r->{rc}, 1, 'an update whose replicas never start: apply exits 1')
    or diag "$r->{out}\n$r->{err}";
like($r->{err}, qr/^dstackctl: run "hello": the update did not roll out: version \d+ failed to start, version \d+ keeps serving: replica \d failed 3 times in a row \(see: dstackctl logs hello --replica \d\): exited with status 3/m,
    'and says which version failed, why, where to look and what serves')
    or diag $r->{err};
is(get('/')->{status}, 200, 'the previous version still serves');


$run = $c->run_named('hello');
@pids = grep { $_ } map { $_->{pid} } @{ $run->{replicas} };

$r = $c->cli(['stop', 'hello']);
is($r->{rc}, 2, 'stop without -y and without a terminal: exit 2');
like($r->{err}, qr/^dstackctl: not stopping "hello": no terminal to confirm on \(use -y\)$/m,
    'and it says to use -y');
is(get('/')->{status}, 200, 'the run still serves');

$r = $c->cli(['stop', 'hello', '-y'], timeout => 120);
is($r->{rc}, 0, 'stop -y exits 0') or diag $r->{err};
like($r->{out}, qr/^Run hello stopped$/m, 'says stopped');
my $res = get('/');
ok($res->{status} == 404 || $res->{status} == 503,
    'the gateway no longer routes to it') or diag $res->{status};
ok(DsTest::wait_until(sub { !grep { kill 0, $_ } @pids }, timeout => 10),
    'the replica processes are gone');
$r = $c->cli(['ps']);
unlike($r->{out}, qr/^ hello\b/m, 'ps no longer lists it');
$r = $c->cli(['ps', '-a']);
like($r->{out}, qr/^ hello\s.*terminated/m, 'ps -a lists it as terminated');

$r = $c->cli(['stop', 'hello', '-y']);
is($r->{rc}, 0, 'stopping a stopped run exits 0');
like($r->{out}, qr/^Run hello is already terminated$/m, 'and says so');

$c->finish;
$t->done;
