#!/usr/bin/perl
# dstack-controld end to end through its API, real nginx with the module
# and real replica processes: apply with a code archive, the states of
# the run and its replicas, traffic on both replicas through the gateway,
# each replica in its own network namespace (root), logs (offset,
# follow), stop (draining, gone from routing, processes and namespaces
# gone), abort.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack(netns => 1);

my $root = $> == 0;

my $code = $s->upload($s->app_files({ 'data.txt' => "uploaded\n" }));
like($code, qr/^[0-9a-f]{64}$/, 'code archive uploaded');

# ---- apply ------------------------------------------------------------------

my $spec = $s->app_spec(
    replicas => 2,
    env => { GREETING => 'hi' },
    commands => [
        'date +%s.%N > exec.txt',
        'test -f data.txt',
        'exec python3 app.py 8000',
    ],
);
my $r = $s->apply($spec, name => 'hello', code => $code);
is($r->{status}, 201, 'apply: 201 Created') or diag $r->{body};
is($r->{json}{name}, 'hello', 'the run has its name');
like($r->{json}{status}, qr/^(submitted|provisioning)$/,
    "a new run is submitted ($r->{json}{status})");
is($r->{json}{url}, 'http://hello.' . $t->domain . ':' . $t->port,
    'the run has its published URL');
is($r->{json}{version}, 1, 'version 1');

my %statuses;
my $run = $s->wait_run('hello', sub {
    my $x = shift;
    $statuses{$x->{status}}++;
    return $s->ready_count($x) == 2;
}, timeout => 30);
ok($run, 'both replicas get ready') or diag explain $s->last_run;
is($run->{status}, 'running', 'the run is running') if $run;
ok(!$statuses{failed}, 'the run never failed');
ok($statuses{running}, 'the run went through running');

SKIP: {
    skip 'no run', 6 unless $run;
    my @reps = sort { $a->{num} <=> $b->{num} } @{ $run->{replicas} };
    is(scalar @reps, 2, 'two replicas');
    is_deeply([map { $_->{num} } @reps], [0, 1], 'numbered 0 and 1');
    is_deeply([map { $_->{status} } @reps], ['running', 'running'],
        'both running');
    ok((grep { $_->{pid} && kill 0, $_->{pid} } @reps) == 2,
        'both have a live pid');
    if ($root) {
        like($reps[0]{address}, qr/^10\.213\.\d+\.\d+:8000$/,
            'replica 0 listens in its namespace on the spec port');
        isnt($reps[0]{address}, $reps[1]{address},
            'each replica has its own address');
    } else {
        pass('no namespaces without root') for 1 .. 2;
    }
}

# ---- traffic ------------------------------------------------------------------

my %seen;
for (1 .. 30) {
    my $res = $s->get('hello', '/');
    is($res->{status}, 200, 'GET / through the gateway: 200') or last;
    $seen{$res->{json}{replica}}++ if $res->{json};
}
is_deeply([sort keys %seen], [0, 1], 'both replicas answered')
    or diag explain \%seen;
my $res = $s->get('hello', '/');
is($res->{json}{greeting}, 'hi', 'env from the spec');
is($res->{json}{run}, 'hello', 'DSTACK_RUN_NAME');
is($res->{json}{version}, 1, 'DSTACK_REPLICA_VERSION');
is($s->get('hello', '/data.txt')->{status}, 200,
    'the app runs in the unpacked code');

SKIP: {
    skip 'network namespaces need root', 2 unless $root;
    my @ns = $s->netns_list('hello');
    is(scalar @ns, 2, 'one network namespace per replica') or diag "@ns";
    my $ip = `ip -n $ns[0] -4 addr show 2>&1`;
    like($ip, qr/inet 10\.213\./, 'with its /30');
}

# ---- logs ----------------------------------------------------------------------

$r = $s->api('GET', '/api/runs/hello/logs?replica=0');
is($r->{status}, 200, 'logs: 200');
like($r->{headers}{'content-type'}, qr{^text/plain}, 'as text');
like($r->{body}, qr/^listening on 8000$/m, 'the replica log has its output');
like($r->{body}, qr/^GET \/$/m, 'and its requests');
my $end = $r->{headers}{'x-dstack-log-end'};
ok($end && $end == length $r->{body}, 'X-Dstack-Log-End is the log size');

$r = $s->api('GET', '/api/runs/hello/logs?replica=0&offset=' . ($end - 5));
is(length $r->{body}, 5, 'from an offset: the rest');
$r = $s->api('GET', "/api/runs/hello/logs?replica=0&offset=$end");
is($r->{body}, '', 'at the end: nothing');
$r = $s->api('GET', '/api/runs/hello/logs?replica=7');
is($r->{status}, 404, 'an unknown replica: 404');
like($r->{json}{error}{message}, qr/has no replica 7/, 'named');

# follow: a line logged later arrives on the open response
{
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $s->socket_path) or die "connect: $!";
    DsTest::_send_all($sock, "GET /api/runs/hello/logs?replica=1&follow=1"
        . "&offset=$end HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        . $s->admin_token . "\r\n\r\n", time + 5);
    my $buf = '';
    my $sel = IO::Select->new($sock);
    my $deadline = time + 5;
    my $poked = 0;
    while (time < $deadline && $buf !~ m{GET /followed}) {
        if (!$poked && $buf =~ /\r\n\r\n/) {
            $s->get('hello', '/followed') for 1 .. 4;
            $poked = 1;
        }
        next unless $sel->can_read(0.2);
        my $n = sysread($sock, $buf, 65536, length $buf);
        last unless $n;
    }
    like($buf, qr{^HTTP/1\.1 200}, 'follow: 200');
    like($buf, qr{transfer-encoding: chunked}i, 'streamed');
    like($buf, qr{GET /followed}, 'new lines arrive while it is open');
    close $sock;
}

# a follower whose token is revoked loses the stream
{
    my $r = $s->api('POST', '/api/tokens',
        json => { name => 'follower', scope => 'admin' });
    is($r->{status}, 201, 'a second admin token') or diag $r->{body};
    my $ft = $r->{json}{token};
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $s->socket_path) or die "connect: $!";
    DsTest::_send_all($sock, "GET /api/runs/hello/logs?replica=1&follow=1"
        . "&offset=$end HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        . "$ft\r\n\r\n", time + 5);
    my $buf = '';
    my $sel = IO::Select->new($sock);
    my $deadline = time + 5;
    while (time < $deadline && $buf !~ /\r\n\r\n/) {
        next unless $sel->can_read(0.2);
        sysread($sock, $buf, 65536, length $buf) or last;
    }
    like($buf, qr{^HTTP/1\.1 200}, 'follow with it: 200');
    is($s->api('DELETE', '/api/tokens/follower')->{status}, 200,
        'the token is revoked');
    my $t0 = time;
    my $closed = 0;
    $deadline = time + 5;
    while (time < $deadline) {
        next unless $sel->can_read(0.2);
        my $n = sysread($sock, $buf, 65536, length $buf);
        if (!$n) { $closed = 1; last }
    }
    ok($closed, sprintf('the stream ends after the revocation (%.1f s)',
        time - $t0));
    unlike($buf, qr{\r\n0\r\n\r\n$}, 'cut, not a normal end of the log');
    like($s->log_text, qr/logs of hello: the token "follower" is no longer valid/,
        'controld says why');
    close $sock;
}

# ---- listing ---------------------------------------------------------------------

$r = $s->api('GET', '/api/runs');
is($r->{status}, 200, 'GET /api/runs: 200');
is_deeply([map { $_->{name} } @{ $r->{json}{runs} }], ['hello'],
    'lists the run');

# ---- stop ------------------------------------------------------------------------

my @pids = $s->run_pids('hello');
ok(@pids >= 2, 'replica processes before the stop: ' . scalar @pids);

# a request in flight while the stop begins completes
my $inflight = fork // die;
if (!$inflight) {
    my $x = $s->get('hello', '/slow?ms=800', timeout => 10);
    POSIX::_exit($x->{status} == 200 ? 0 : 1);
}
sleep 0.2;
my $t0 = time;
$r = $s->stop('hello');
is($r->{status}, 200, 'stop: 200');
is($r->{json}{status}, 'terminating', 'the run is terminating');
ok((grep { $_->{status} eq 'terminating' } @{ $r->{json}{replicas} }) == 2,
    'its replicas are terminating');
waitpid($inflight, 0);
is($?, 0, 'the request in flight at the stop got its 200');

$run = $s->wait_run('hello', sub { $_[0]{status} eq 'terminated' },
    timeout => 20);
ok($run, 'the run ends terminated') or diag explain $s->last_run;
my $took = time - $t0;
cmp_ok($took, '<', 8, sprintf('the stop took %.1f s (drained, not the '
    . 'whole stop_duration)', $took));
is_deeply([map { $_->{status} } @{ $run->{replicas} || [] }],
    ['terminated', 'terminated'], 'both replicas terminated') if $run;

is($s->get('hello', '/')->{status}, 404,
    'the gateway no longer knows the service');
ok(DsTest::wait_until(sub { !$s->run_pids('hello') }, timeout => 5),
    'the replica processes are gone') or diag join ' ', $s->run_pids('hello');
ok(!kill(0, $_), "pid $_ is gone") for @pids;
SKIP: {
    skip 'network namespaces need root', 1 unless $root;
    ok(DsTest::wait_until(sub { !$s->netns_list('hello') }, timeout => 5),
        'the namespaces are gone') or diag join ' ', $s->netns_list('hello');
}
ok(DsTest::wait_until(sub { !-d $s->workdir('hello', 0, 1) }, timeout => 5),
    'the working directories are gone');
ok(-f $s->replicas_dir . '/hello/0-1.log', 'the logs stay');

$r = $s->api('GET', '/api/runs');
is_deeply($r->{json}{runs}, [], 'GET /api/runs: no run');
$r = $s->api('GET', '/api/runs?all=1');
is($r->{json}{runs}[0]{status}, 'terminated', 'all=1: the terminated run');
ok(!exists $t->dump->{services}{hello}, 'no service left in the state');
$r = $s->stop('hello');
is($r->{status}, 200, 'stopping a terminated run again: 200');

# ---- a generated name, abort ------------------------------------------------------

$r = $s->apply($s->app_spec, code => $code);
is($r->{status}, 201, 'apply without a name: 201');
my $gen = $r->{json}{name} // '';
like($gen, qr/^[a-z]+-[a-z]+-1$/, "a generated name: $gen");
ok($s->wait_ready($gen, 1), 'it gets ready');
is($s->get($gen, '/')->{status}, 200, 'and serves');
@pids = $s->run_pids($gen);
$t0 = time;
$r = $s->stop($gen, abort => 1);
is($r->{status}, 200, 'abort: 200');
$run = $s->wait_run($gen, sub { $_[0]{status} eq 'terminated' },
    timeout => 10);
ok($run, 'the aborted run ends terminated');
cmp_ok(time - $t0, '<', 3, 'at once');
is($run->{replicas}[0]{status}, 'aborted', 'its replica: aborted') if $run;
ok(DsTest::wait_until(sub { !$s->run_pids($gen) }, timeout => 5),
    'its processes are gone');

# the same name again after the run ended: a new run
$r = $s->apply($s->app_spec, name => 'hello', code => $code);
is($r->{status}, 201, 'a terminated name can be applied again: 201');
is($r->{json}{version}, 1, 'as a new run');
ok($s->wait_ready('hello', 1), 'it gets ready');
is($s->get('hello', '/')->{status}, 200, 'and serves');

# ---- what the gateway reads from the service record ------------------------

$r = $s->apply($s->app_spec(auth => JSON::PP::true,
    rate_limits => [{ prefix => '/limited', rps => 1, burst => 0 }]),
    name => 'guarded', code => $code);
is($r->{status}, 201, 'a service with auth and a rate limit');
ok($s->wait_ready('guarded', 1), 'ready');
is($s->get('guarded', '/')->{status}, 401, 'auth: without a token, 401');
my $bearer = { Authorization => 'Bearer ' . $s->admin_token };
is($s->get('guarded', '/', headers => $bearer)->{status}, 200,
    'auth: with a token, 200');
my %codes;
$codes{ $s->get('guarded', '/limited', headers => $bearer)->{status} }++
    for 1 .. 5;
ok($codes{429}, 'rate limit: 429 beyond 1 rps')
    or diag explain \%codes;

like($s->log_text, qr/replica 0 v1 ready/, 'controld logs readiness');
unlike($s->log_text, qr/dst_[A-Za-z0-9_-]{20}/, 'and never a token');

$s->finish;
$t->done;
