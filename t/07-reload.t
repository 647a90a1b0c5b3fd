#!/usr/bin/perl
# "nginx -s reload" under load: not one request lost across 3 reloads,
# the shared-memory metrics carry on (counts never go back) and so do the
# rate limit buckets (one spent before the reload is still spent after).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my %addr = map { $_ => $t->backend(name => $_, nodelay => 1) } qw(r1 r2 r3);

$t->seed([
    { op => 'service', name => 'busy', auth => DsTest::false },
    { op => 'replicas', service => 'busy', replicas => [
        { addr => $addr{r1}, state => 'ready', version => 1 },
        { addr => $addr{r2}, state => 'ready', version => 1 }] },
    { op => 'service', name => 'lim', auth => DsTest::false,
      rate_limits => [{ prefix => '/', key => 'ip', rps => 0.01,
                        burst => 4 }] },
    { op => 'replicas', service => 'lim', replicas => [
        { addr => $addr{r3}, state => 'ready', version => 1 }] },
]);
$t->start;

sub two_xx { ($t->service_stats($_[0], $_[1]) || {})->{requests}{'2xx'} // 0 }

sub replica_requests {
    my ($svc, $stats) = @_;
    my $s = $t->service_stats($svc, $stats) || {};
    return { map { $_->{addr} => $_->{requests} } @{ $s->{replicas} || [] } };
}

# ---- some traffic first, counted ------------------------------------------------

is($t->get('busy', '/warm')->{status}, 200, 'busy answers') for 1 .. 10;
ok(DsTest::wait_until(sub { two_xx('busy') == 10 }, timeout => 3),
    'the stats count 10 requests');

# the bucket: burst 4 at 1 request per 100 s -> 5 pass, then 429
my @s = map { $t->get('lim', '/')->{status} } 1 .. 7;
is("@s", '200 200 200 200 200 429 429', 'rate limit spent before the reload');

my $before = $t->stats;
my $busy0 = $t->service_stats('busy', $before);
my $rep0 = replica_requests('busy', $before);

# ---- reloads under load ------------------------------------------------------------

# keep-alive clients and clients that open a connection per request
my $ka = $t->start_load(clients => 3, host => 'busy.test.local',
    path => '/ka', keep => 1);
my $nk = $t->start_load(clients => 2, host => 'busy.test.local',
    path => '/nk');
sleep 1;
my %old = map { $_ => 1 } $t->workers;
for my $i (1 .. 3) {
    $t->reload;
    note "reload $i done";
    sleep 1;
}
my %new = map { $_ => 1 } $t->workers;
sleep 0.5;
my $rk = $t->stop_load($ka);
my $rn = $t->stop_load($nk);

ok(!grep({ $old{$_} } keys %new), 'the workers are new ones');
note "keep-alive clients: $rk->{total} requests, $rk->{retried} sent again "
    . 'after the server closed an idle keep-alive connection';
note "one connection per request: $rn->{total} requests";
note 'workers that answered: ' . join ', ', sort keys %{ $rk->{workers} },
    keys %{ $rn->{workers} };
cmp_ok($rk->{total}, '>=', 100, 'keep-alive clients ran (>= 100 requests)');
cmp_ok($rn->{total}, '>=', 50, 'one-shot clients ran (>= 50 requests)');
is($rk->{ok}, $rk->{total}, 'keep-alive clients: every request got 200')
    or diag join "\n", @{ $rk->{errors} }[0 .. 19];
cmp_ok($rk->{retried}, '<=', 3 * 3, 'at most one closed idle connection '
    . 'per client and reload');
is($rn->{ok}, $rn->{total},
    'one connection per request: every request got 200, no reset')
    or diag join "\n", @{ $rn->{errors} }[0 .. 19];
is(join(',', sort keys %{ $rk->{status} }, keys %{ $rn->{status} }),
    '200,200', 'no status but 200') or diag explain [$rk->{status},
        $rn->{status}];
# requests were answered all along: no gap longer than 1 s
my @times = sort { $a <=> $b } map { $_->{t} } @{ $rk->{requests} },
    @{ $rn->{requests} };
my $gap = 0;
for my $i (1 .. $#times) {
    my $g = $times[$i] - $times[$i - 1];
    $gap = $g if $g > $gap;
}
cmp_ok($gap, '<', 1, 'no pause in the answers across the reloads')
    or diag "longest pause: $gap s";
my %by_worker = (%{ $rk->{workers} }, %{ $rn->{workers} });
ok((grep { $old{$_} } keys %by_worker) && (grep { $new{$_} } keys %by_worker),
    'answers came from old and new workers');

# ---- metrics survive ---------------------------------------------------------------------

my $served = $rk->{ok} + $rn->{ok};
my $after;
my $settled = DsTest::wait_until(sub {
    $after = $t->stats;
    return two_xx('busy', $after) >= $busy0->{requests}{'2xx'} + $served;
}, timeout => 3);
is(two_xx('busy', $after), $busy0->{requests}{'2xx'} + $served,
    "2xx count after the reloads = before + the $served answers since "
    . '(nothing reset, nothing lost)');
my $busy1 = $t->service_stats('busy', $after);
for my $c (qw(refused 1xx 3xx 4xx 5xx)) {
    is($busy1->{requests}{$c}, $busy0->{requests}{$c},
        "class $c unchanged");
}
cmp_ok($busy1->{windows}{300}{arrivals}, '>=',
    $busy0->{windows}{300}{arrivals} + $served,
    'the 300 s window kept its arrivals');
is($busy1->{uid}, $busy0->{uid}, 'same service uid');
my $rep1 = replica_requests('busy', $after);
for my $a (sort keys %$rep0) {
    cmp_ok($rep1->{$a} // 0, '>=', $rep0->{$a}, "replica $a: requests "
        . 'kept');
}
my $sum = 0;
$sum += $rep1->{$_} - ($rep0->{$_} // 0) for keys %$rep1;
is($sum, $served, 'the replicas counted each answer once');
is($busy1->{inflight}, 0, 'nothing left in flight');

# ---- rate limit buckets survive -----------------------------------------------------------

$t->reload(wait_old => 1);
@s = map { $t->get('lim', "/$_") } 1 .. 6;
is(join(' ', map { $_->{status} } @s), '429 429 429 429 429 429',
    'the bucket spent before the reloads is still spent after');
my %w = map { ($_->{headers}{'x-ds-worker'} // '?') => 1 } @s;
note 'answered by ' . join ', ', sort keys %w;
like($s[0]{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
@s = map { $t->get('busy', '/after')->{status} } 1 .. 3;
is("@s", '200 200 200', 'a service without limits still passes');

$t->done;
