#!/usr/bin/perl
# Replica choice: least in-flight across workers (shared memory), ties
# round-robin, another replica when a connect fails, draining replicas
# finish what they have and get nothing new, 503 + Retry-After when no
# replica is ready, a removed replica stops getting requests at once.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2, retry_after => 7);
my %addr = map { $_ => $t->backend(name => $_) } qw(ra rb rc rd);
$addr{slow} = $t->backend(name => 'slow', delay_ms => 1000, nodelay => 1);
$addr{fast} = $t->backend(name => 'fast', nodelay => 1);
$addr{v6} = $t->backend(name => 'v6', host => '::1');
# an address where nothing listens: a replica whose connect is refused
my $dead = '127.0.0.1:' . DsTest::free_port();
my $dead2 = '127.0.0.1:' . DsTest::free_port();

sub rep {
    my ($addr, $state) = @_;
    return { addr => $addr, state => $state // 'ready', version => 1 };
}

sub service {
    my ($svc, @reps) = @_;
    return ({ op => 'service', name => $svc, auth => DsTest::false },
            { op => 'replicas', service => $svc, replicas => [@reps] });
}

sub replicas {
    my ($svc, @reps) = @_;
    $t->seed([{ op => 'replicas', service => $svc, replicas => [@reps] }]);
}

$t->seed([
    service('lif', rep($addr{ra})),
    service('sf', rep($addr{slow}), rep($addr{fast})),
    service('tie', rep($addr{ra}), rep($addr{rb}), rep($addr{rc})),
    service('dead', rep($addr{rd}), rep($dead)),
    service('alldead', rep($dead), rep($dead2)),
    service('drain', rep($addr{ra})),
    service('none', rep($addr{ra}, 'draining'), rep($addr{rb}, 'draining')),
    service('empty'),
    { op => 'service', name => 'norec', auth => DsTest::false },
    service('rm', rep($addr{ra}), rep($addr{rb}), rep($addr{rc})),
    service('six', rep($addr{v6})),
]);
$t->start;

sub who {
    my $r = shift;
    return "status $r->{status}" . ($r->{error} ? " ($r->{error})" : '')
        unless $r->{status} == 200;
    return $r->{headers}{'x-replica'} // 'no X-Replica';
}

sub tally {
    my %n;
    $n{ who($_) }++ for @_;
    return \%n;
}

sub show { my $h = shift; join ', ', map { "$_=$h->{$_}" } sort keys %$h }

# the replica entry with address ADDR in the stats of service SVC
sub rstats {
    my ($svc, $addr, $stats) = @_;
    my $s = $t->service_stats($svc, $stats) or return undef;
    my ($r) = grep { $_->{addr} eq $addr } @{ $s->{replicas} || [] };
    return $r;
}

# sends a request and leaves it running; returns the socket
sub hold {
    my ($svc, $path) = @_;
    my $s = DsTest::_connect($t->port, 5) or die "connect: $!";
    DsTest::_send_all($s, $t->build_request('GET', $path,
        host => "$svc.test.local"), time + 5);
    return $s;
}

# ---- least in-flight: held requests keep new ones away ------------------------

# Four slow requests on ra (the only replica then), then rb joins: every
# new request must go to rb, whichever worker takes it, while ra has 4 in
# flight.  Round-robin would send half of them to ra.
my @held = map { hold('lif', '/slow?ms=4000') } 1 .. 4;
my $t_held = time;
ok(DsTest::wait_until(sub { (rstats('lif', $addr{ra}) || {})->{inflight}
    == 4 }, timeout => 3), 'four slow requests in flight on ra')
    or diag explain $t->service_stats('lif');
replicas('lif', rep($addr{ra}), rep($addr{rb}));
my @res = map { $t->get('lif', "/q$_") } 1 .. 20;
my $n = tally(@res);
is($n->{rb} // 0, 20, 'while ra holds 4 requests, all 20 new ones go to rb')
    or diag show($n);
my %w = map { ($_->{headers}{'x-ds-worker'} // '?') => 1 } @res;
note 'workers that answered: ' . join ', ', sort keys %w;
my $still = rstats('lif', $addr{ra});
ok(time - $t_held < 3.5 && $still && $still->{inflight} == 4,
    'and ra still had its 4 requests meanwhile (the check meant something)')
    or diag sprintf('%.1f s; ra: %s', time - $t_held, explain $still);
my @slow = map { DsTest::_read_response($_, timeout => 10) } @held;
close $_ for @held;
is(show(tally(@slow)), 'ra=4', 'the held requests complete on ra');
# with both idle again, ra gets its share back
$n = tally(map { $t->get('lif', "/r$_") } 1 .. 10);
ok(($n->{ra} // 0) >= 3 && ($n->{rb} // 0) >= 3,
    'once ra is idle it gets requests again') or diag show($n);

# ---- least in-flight under load: a slow and a fast replica ----------------------

# 6 clients in a loop for 3 s against a replica that answers in 1 s and
# one that answers at once: the fast one must take clearly more.  With
# round-robin both would get the same number.
my $load = $t->start_load(clients => 6, host => 'sf.test.local',
    path => '/sf', keep => 1);
sleep 3;
my $res = $t->stop_load($load);
is($res->{ok}, $res->{total}, "slow/fast: every request answered 200 "
    . "($res->{ok} of $res->{total})")
    or diag join "\n", @{ $res->{errors} }[0 .. 9];
is($res->{retried}, 0, 'slow/fast: no keep-alive connection closed under '
    . 'a client');
my ($ns, $nf) = map { $res->{replicas}{$_} // 0 } qw(slow fast);
note "slow got $ns, fast got $nf";
cmp_ok($ns, '>', 0, 'the slow replica got some requests');
cmp_ok($nf, '>=', 3 * $ns, 'the fast replica got at least 3 times as many')
    or diag "slow $ns, fast $nf";
# in-flight counts return to 0 (free() undoes every get())
ok(DsTest::wait_until(sub {
    my $s = $t->service_stats('sf');
    return $s && $s->{inflight} == 0
        && !grep { $_->{inflight} != 0 } @{ $s->{replicas} };
}, timeout => 3), 'nothing in flight once the load stopped')
    or diag explain $t->service_stats('sf');

# ---- ties: round-robin --------------------------------------------------------------

# requests one after the other: all three always have 0 in flight
@res = map { $t->get('tie', "/t$_") } 1 .. 90;
$n = tally(@res);
is(($n->{ra} // 0) + ($n->{rb} // 0) + ($n->{rc} // 0), 90,
    'ties: all 90 answered by the replicas') or diag show($n);
ok(!grep({ ($n->{$_} // 0) < 22 || ($n->{$_} // 0) > 38 } qw(ra rb rc)),
    'ties: each of 3 equal replicas gets about a third (22..38 of 90)')
    or diag show($n);
# and per worker, since each worker has its own rotation
my %per;
$per{ $_->{headers}{'x-ds-worker'} // '?' }{ who($_) }++ for @res;
for my $wk (sort keys %per) {
    my $m = 0;
    $m += $_ for values %{ $per{$wk} };
    next if $m < 12;
    ok(!grep({ ($per{$wk}{$_} // 0) < $m / 6 } qw(ra rb rc)),
        "ties: worker $wk spreads its $m requests over all three")
        or diag show($per{$wk});
}

# concurrent clients on new connections: both workers, still even
$load = $t->start_load(clients => 4, host => 'tie.test.local', path => '/c');
sleep 2;
$res = $t->stop_load($load);
is($res->{ok}, $res->{total}, "ties under load: all 200 ($res->{total})")
    or diag join "\n", @{ $res->{errors} }[0 .. 9];
my $tot = $res->{total} || 1;
ok(!grep({ ($res->{replicas}{$_} // 0) < 0.2 * $tot
    || ($res->{replicas}{$_} // 0) > 0.47 * $tot } qw(ra rb rc)),
    'ties under load: each replica gets 20%..47%')
    or diag show($res->{replicas});
is(scalar keys %{ $res->{workers} }, 2, 'both workers took part')
    or diag show($res->{workers});

# ---- a dead replica: retried on another one ------------------------------------

my $rd_before = scalar $t->backend_requests('rd');
@res = map { $t->get('dead', "/d$_") } 1 .. 40;
$n = tally(@res);
is($n->{rd} // 0, 40, 'a replica refusing connections: all 40 requests '
    . 'answered 200 by the live one') or diag show($n);
is(scalar $t->backend_requests('rd') - $rd_before, 40,
    'the live replica received each request once');
my $st = $t->stats;
my ($sd, $sl) = (rstats('dead', $dead, $st), rstats('dead', $addr{rd}, $st));
ok($sd && $sd->{failures} >= 5,
    'the stats count failures for the dead replica (tried in turn)')
    or diag explain $t->service_stats('dead', $st);
is($sd && $sd->{failures}, $sd && $sd->{requests},
    'every try of the dead replica is a failure');
is($sl && $sl->{failures}, 0, 'the live replica has no failure');
is($sl && $sl->{requests}, 40, 'the live replica counts its 40 requests');
is($sd && $sd->{inflight}, 0, 'nothing stays in flight on the dead one');
like($t->access_log, qr/up=\Q$dead\E, \Q$addr{rd}\E us=502, 200 /,
    'the access log shows the failed try, then the live replica');

my $t0 = time;
my $r = $t->get('alldead', '/', timeout => 10);
is($r->{status}, 502, 'every replica refusing: 502');
cmp_ok(time - $t0, '<', 5, 'and at once, not after a timeout');
$t->allow_log(qr/connect\(\) failed \(111: Connection refused\)/);

# ---- draining -----------------------------------------------------------------------

my $ra_before = scalar $t->backend_requests('ra');
my $long = hold('drain', '/slow?ms=2500');
ok(DsTest::wait_until(sub { (rstats('drain', $addr{ra}) || {})->{inflight}
    == 1 }, timeout => 2), 'a long request runs on ra');
replicas('drain', rep($addr{ra}, 'draining'), rep($addr{rb}));
@res = map { $t->get('drain', "/n$_") } 1 .. 20;
$n = tally(@res);
is($n->{rb} // 0, 20, 'ra draining: all 20 new requests go to rb')
    or diag show($n);
$st = rstats('drain', $addr{ra});
is($st && $st->{state}, 'draining', 'the stats show ra draining');
$r = DsTest::_read_response($long, timeout => 10);
close $long;
is($r->{status}, 200, 'the request already on ra completes with 200');
is(who($r), 'ra', 'answered by ra');
is(scalar $t->backend_requests('ra') - $ra_before, 1,
    'ra got nothing but that one request');
@res = map { $t->get('drain', "/m$_") } 1 .. 6;
is(show(tally(@res)), 'rb=6', 'ra drained and idle: still no new request');

# ---- no ready replica: 503 + Retry-After ---------------------------------------

for my $case (['none', 'only draining replicas'], ['empty', 'an empty set'],
    ['norec', 'no replica set at all'])
{
    my ($svc, $what) = @$case;
    $r = $t->get($svc, '/', timeout => 5);
    is($r->{status}, 503, "$what: 503") or diag who($r);
    is($r->{headers}{'retry-after'}, 7,
        "$what: Retry-After from dstack_retry_after");
    is($r->{headers}{'content-type'}, 'application/json',
        "$what: JSON answer");
    is(ref $r->{json} && $r->{json}{error}{type}, 'unavailable',
        "$what: error type unavailable") or diag $r->{body};
}
# a draining replica does not come back by itself, a ready one does
replicas('none', rep($addr{ra}, 'draining'), rep($addr{rb}, 'ready'));
is(who($t->get('none', '/')), 'rb', 'one replica ready again: it answers');

# ---- a removed replica stops getting requests at once -----------------------------

$n = tally(map { $t->get('rm', "/a$_") } 1 .. 15);
ok(($n->{rb} // 0) > 0, 'rb gets requests while in the set') or diag show($n);
my $rb_before = scalar $t->backend_requests('rb');
replicas('rm', rep($addr{ra}), rep($addr{rc}));
@res = map { $t->get('rm', "/b$_") } 1 .. 30;
$n = tally(@res);
is(($n->{ra} // 0) + ($n->{rc} // 0), 30,
    'rb removed: the next 30 requests all go to ra and rc') or diag show($n);
ok(($n->{ra} // 0) >= 5 && ($n->{rc} // 0) >= 5, 'shared by both')
    or diag show($n);
is(scalar $t->backend_requests('rb'), $rb_before,
    'rb received nothing after its removal');
ok(!rstats('rm', $addr{rb}), 'rb is gone from the stats');

# ---- an IPv6 replica ----------------------------------------------------------------

is(who($t->get('six', '/v6')), 'v6', 'a replica at an IPv6 address answers');
# the log line is written after the answer is sent: wait for it
ok(DsTest::wait_until(sub { $t->access_log =~ /"GET \/v6 / }, timeout => 5),
    'the request is logged');
like($t->access_log, qr/"GET \/v6 .* up=\Q$addr{v6}\E us=200 /,
    'its address in $upstream_addr is [::1]:port');

$t->done;
