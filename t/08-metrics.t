#!/usr/bin/perl
# Metrics in shared memory: per service requests by status class (refused
# apart), 30/60/300 s windows, in-flight and request time; per replica
# in-flight, requests and failures.  JSON for controld, Prometheus text
# that promtool accepts; both survive a reload.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my %addr = map { $_ => $t->backend(name => $_) } qw(r1 r2 r3);
my $tok = 'dst_metrics_' . ('m' x 30);

$t->seed([
    { op => 'service', name => 'mone', auth => DsTest::true },
    { op => 'replicas', service => 'mone', replicas => [
        { addr => $addr{r1}, state => 'ready', version => 3 },
        { addr => $addr{r2}, state => 'ready', version => 3 }] },
    { op => 'service', name => 'mtwo', auth => DsTest::false },
    { op => 'replicas', service => 'mtwo', replicas => [
        { addr => $addr{r3}, state => 'ready', version => 1 }] },
    { op => 'service', name => 'idle', auth => DsTest::false },
    { op => 'token', token => $tok, name => 'm', admin => DsTest::false,
      all => DsTest::false, services => ['mone'], expires => 0 },
]);
$t->start;

my $stats = $t->stats;
is($stats->{version}, 1, 'stats: version 1');
cmp_ok(abs(($stats->{time} // 0) - time), '<', 5, 'stats: time is now');
is(ref $stats->{services}, 'ARRAY', 'stats: services is a list');
my ($mone0) = grep { $_->{name} eq 'mone' } @{ $stats->{services} || [] };
ok($mone0, 'mone is listed before any traffic');
is($mone0->{requests}{'2xx'}, 0, 'and has no requests yet') if $mone0;

# ---- known traffic -------------------------------------------------------------

my %auth = (headers => { Authorization => "Bearer $tok" });
my @expect_status;
push @expect_status, $t->get('mone', '/', %auth)->{status} for 1 .. 5;
push @expect_status, $t->get('mone', '/status?code=404', %auth)->{status}
    for 1 .. 3;
push @expect_status, $t->get('mone', '/status?code=500', %auth)->{status}
    for 1 .. 2;
push @expect_status, $t->get('mone', '/status?code=302', %auth)->{status};
push @expect_status, $t->get('mone', '/')->{status} for 1 .. 4;   # 401
push @expect_status, $t->get('mtwo', '/')->{status} for 1 .. 7;
push @expect_status, $t->get('mtwo', '/status?code=201')->{status};
push @expect_status, $t->get('mtwo', '/slow?ms=300')->{status};
is("@expect_status",
    join(' ', (200) x 5, (404) x 3, (500) x 2, 302, (401) x 4, (200) x 7,
        201, 200),
    'the traffic got the statuses it was meant to');

my %want = (
    mone => { refused => 4, '1xx' => 0, '2xx' => 5, '3xx' => 1, '4xx' => 3,
              '5xx' => 2 },
    mtwo => { refused => 0, '1xx' => 0, '2xx' => 9, '3xx' => 0, '4xx' => 0,
              '5xx' => 0 },
    idle => { refused => 0, '1xx' => 0, '2xx' => 0, '3xx' => 0, '4xx' => 0,
              '5xx' => 0 },
);
my @classes = qw(refused 1xx 2xx 3xx 4xx 5xx);

# counts land at the log phase, just after the answer: poll briefly
my $settled = DsTest::wait_until(sub {
    $stats = $t->stats;
    my $s = $t->service_stats('mone', $stats);
    my $u = $t->service_stats('mtwo', $stats);
    return $s && $u && ($s->{requests}{'5xx'} // 0) == 2
        && ($u->{requests}{'2xx'} // 0) == 9;
}, timeout => 3);
ok($settled, 'the counts arrive') or diag explain $stats;

for my $name (sort keys %want) {
    my $s = $t->service_stats($name, $stats);
    ok($s, "$name is in the stats") or next;
    is_deeply({ map { $_ => $s->{requests}{$_} } @classes }, $want{$name},
        "$name: requests by class") or diag explain $s->{requests};
    like($s->{uid}, qr/^[1-9]\d*$/, "$name: uid");
    like($s->{slot}, qr/^\d+$/, "$name: slot");
    is($s->{inflight}, 0, "$name: nothing in flight");
    my $admitted = 0;
    $admitted += $want{$name}{$_} for grep { $_ ne 'refused' } @classes;
    for my $w (qw(30 60 300)) {
        my $win = $s->{windows}{$w};
        ok($win, "$name: window $w") or next;
        is_deeply({ map { $_ => $win->{$_} } @classes }, $want{$name},
            "$name: window $w holds the same counts")
            or diag explain $win;
        is($win->{arrivals}, $admitted,
            "$name: window $w arrivals = $admitted admitted requests");
    }
}

my $mone = $t->service_stats('mone', $stats);
my $mtwo = $t->service_stats('mtwo', $stats);
my %uids = map { $_->{uid} => 1 } grep { defined $_->{uid} }
    @{ $stats->{services} };
is(scalar keys %uids, 3, 'services have distinct uids');
cmp_ok($mtwo->{request_time_ms_sum} // 0, '>=', 300,
    'mtwo: request time includes the 300 ms request');
cmp_ok($mtwo->{request_time_ms_sum} // 0, '<', 5000,
    'mtwo: request time is not absurd');

# replicas
my @reps = @{ $mone->{replicas} || [] };
is(scalar @reps, 2, 'mone: two replicas');
is_deeply([sort map { $_->{addr} } @reps], [sort @addr{qw(r1 r2)}],
    'mone: replica addresses');
my $sum = 0;
for my $rep (@reps) {
    is($rep->{state}, 'ready', "replica $rep->{addr}: ready");
    is($rep->{version}, 3, "replica $rep->{addr}: version");
    is($rep->{inflight}, 0, "replica $rep->{addr}: nothing in flight");
    is($rep->{failures}, 0, "replica $rep->{addr}: no failures");
    like($rep->{uid}, qr/^[1-9]\d*$/, "replica $rep->{addr}: uid");
    $sum += $rep->{requests} // 0;
}
is($sum, 11, 'mone: the replicas count the 11 admitted requests');
my %by_name = map { $_ => scalar $t->backend_requests($_) } qw(r1 r2);
for my $rep (@reps) {
    my ($n) = grep { $addr{$_} eq $rep->{addr} } qw(r1 r2);
    is($rep->{requests}, $by_name{$n},
        "replica $rep->{addr}: requests = what $n received");
}
is($mtwo->{replicas}[0]{requests}, 9, 'mtwo: its replica counts 9');

# ---- in flight ------------------------------------------------------------------

my $sock = DsTest::_connect($t->port, 5);
DsTest::_send_all($sock, $t->build_request('GET', '/slow?ms=1500',
    host => 'mtwo.test.local'), time + 5);
my $inflight = DsTest::wait_until(sub {
    my $s = $t->service_stats('mtwo');
    return $s->{inflight} == 1 && $s->{replicas}[0]{inflight} == 1;
}, timeout => 1.2);
ok($inflight, 'a slow request is in flight for the service and its replica');
my $r = DsTest::_read_response($sock, timeout => 5);
is($r->{status}, 200, 'the slow request completes');
ok(DsTest::wait_until(sub { $t->service_stats('mtwo')->{inflight} == 0 },
    timeout => 2), 'and is no longer in flight');

# ---- Prometheus -----------------------------------------------------------------

my $prom = $t->metrics;
for my $f (qw(dstack_requests_total dstack_inflight_requests
    dstack_request_duration_seconds dstack_replica_requests_total))
{
    like($prom, qr/^# TYPE $f \w+$/m, "prometheus: family $f");
}
my %sample;
for (split /\n/, $prom) {
    next if /^#/ || !/\S/;
    my ($k, $v) = /^(\S+(?:\{.*\})?)\s+(\S+)$/ or next;
    $sample{$k} = $v;
}
for my $c (@classes) {
    is($sample{"dstack_requests_total{service=\"mone\",class=\"$c\"}"},
        $want{mone}{$c}, "prometheus: mone $c");
}
is($sample{'dstack_inflight_requests{service="mtwo"}'}, 0,
    'prometheus: mtwo in flight');
is($sample{'dstack_request_duration_seconds_count{service="mone"}'}, 11,
    'prometheus: mone duration count = admitted requests');
is($sample{"dstack_replica_requests_total{service=\"mone\",replica=\"$addr{r1}\"}"},
    $by_name{r1}, 'prometheus: replica r1 requests');

SKIP: {
    my $promtool = `command -v promtool 2>/dev/null`;
    chomp $promtool;
    skip 'promtool not installed (Debian package prometheus)', 2
        unless $promtool;
    my ($rc, $out, $err) = DsTest::_run([$promtool, 'check', 'metrics'],
        stdin => $prom);
    is($rc, 0, 'promtool check metrics accepts /metrics')
        or diag "$out$err\n---\n$prom";
    is("$out$err", '', 'without any lint remark') or diag "$out$err";
}

# ---- survives a reload -------------------------------------------------------------

my $before = $t->service_stats('mone');
$t->reload(wait_old => 1);
my $after = $t->service_stats('mone');
is_deeply($after->{requests}, $before->{requests},
    'counts survive nginx -s reload');
is($after->{windows}{300}{arrivals}, $before->{windows}{300}{arrivals},
    'windows survive nginx -s reload');
is($t->get('mtwo', '/')->{status}, 200, 'traffic after the reload');
ok(DsTest::wait_until(sub {
    $t->service_stats('mtwo')->{requests}{'2xx'} == 11 }, timeout => 3),
    'and is counted on top');

# ---- ?active=1: only the services with something to tell -------------------------

my $act = $t->request('GET', '/stats?active=1', host => '127.0.0.1',
    port => $t->stats_port);
is($act->{status}, 200, 'GET /stats?active=1: 200');
my %listed = map { $_->{name} => 1 } @{ ($act->{json} || {})->{services} || [] };
ok($listed{mone} && $listed{mtwo}, 'it lists the services that had traffic')
    or diag explain \%listed;
ok(!$listed{idle}, 'and not the idle one');
is_deeply([sort keys %listed], [sort grep { $_ ne 'idle' }
    map { $_->{name} } @{ $t->stats->{services} }],
    'the same as the full list, less the idle service');
my ($mact) = grep { $_->{name} eq 'mtwo' } @{ $act->{json}{services} };
is_deeply($mact->{windows}, $t->service_stats('mtwo')->{windows},
    'with the same windows');

# a request in flight makes a quiet service active at once
$t->seed([{ op => 'replicas', service => 'idle', replicas => [
    { addr => $addr{r1}, state => 'ready', version => 1 }] }]);
my $held = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $t->port)
    or die "connect: $!";
DsTest::_send_all($held, $t->build_request('GET', '/slow?ms=1500',
    host => 'idle.' . $t->domain), time + 5);
ok(DsTest::wait_until(sub {
    my $x = $t->request('GET', '/stats?active=1', host => '127.0.0.1',
        port => $t->stats_port);
    return grep { $_->{name} eq 'idle' && $_->{inflight} == 1 }
        @{ ($x->{json} || {})->{services} || [] };
}, timeout => 3), 'a service with a request in flight is listed');
close $held;

# ---- a deleted service leaves the stats -------------------------------------------

$t->seed([{ op => 'del_service', name => 'idle' }]);
ok(!$t->service_stats('idle'), 'a deleted service is no longer listed');

$r = $t->request('POST', '/stats', host => '127.0.0.1',
    port => $t->stats_port, body => '{}');
ok($r->{status} >= 200 && $r->{status} < 500,
    'POST /stats: an answer, never 5xx') or diag $r->{status};

$t->done;
