#!/usr/bin/perl
# Rate limits from the service record: rps + burst per prefix, the longest
# prefix wins, key = client IP or a header; 429 with Retry-After; exact
# across workers because the buckets live in shared memory.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my %addr = map { $_ => $t->backend(name => $_) } qw(r1 r2 r3);

sub svc {
    my ($name, $replica, @rules) = @_;
    return ({ op => 'service', name => $name, auth => DsTest::false,
              rate_limits => \@rules },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr{$replica}, state => 'ready',
                             version => 1 }] });
}

$t->seed([
    svc('lim', 'r1',
        { prefix => '/', key => 'ip', rps => 1, burst => 2 },
        { prefix => '/api', key => 'ip', rps => 1, burst => 5 }),
    svc('hdr', 'r2',
        { prefix => '/', key => { header => 'X-Key' }, rps => 1,
          burst => 1 }),
    svc('many', 'r3', { prefix => '/', key => 'ip', rps => 0.01,
        burst => 19 }),
    svc('free', 'r3'),
]);
$t->start;

# statuses of N requests sent one after the other, as fast as possible
sub burst {
    my ($service, $path, $n, %o) = @_;
    return map { $t->get($service, $path, %o)->{status} } 1 .. $n;
}

# ---- rps 1, burst 2 on "/" ------------------------------------------------------

my $t0 = time;
my @s = burst('lim', '/x', 6);
my $took = time - $t0;
is("@s", '200 200 200 429 429 429',
    'rps 1 burst 2: the first 3 pass, then 429');
cmp_ok($took, '<', 0.8, 'those 6 requests took well under a second')
    or diag "they took $took s, so the test proves less";

my $r = $t->get('lim', '/x');
is($r->{status}, 429, '429 again');
like($r->{headers}{'retry-after'} // '', qr/^[1-9]\d*$/,
    '429 has Retry-After in whole seconds');
cmp_ok($r->{headers}{'retry-after'} // 99, '<=', 2,
    'Retry-After is about when a request passes again (rps 1)');
is(ref $r->{json} && $r->{json}{error}{type}, 'rate_limit_exceeded',
    '429: JSON error') or diag $r->{body};
is(scalar $t->backend_requests('r1'), 3, 'refused requests never reached the replica');

# ---- longest prefix wins ----------------------------------------------------------

# "/" is spent; "/api" has its own rule: burst 5 -> 6 pass
@s = burst('lim', '/api/v1', 8);
is("@s", '200 200 200 200 200 200 429 429',
    '/api has its own limit (burst 5): 6 pass, then 429');
@s = burst('lim', '/apx', 1);
is("@s", '429', '/apx is not under /api: still limited by "/"');

# ---- recovery ----------------------------------------------------------------------

# one request per second comes back: after ~1 s exactly one passes
sleep 1.1;
my $since = time - $t0;
@s = burst('lim', '/x', 3);
SKIP: {
    skip "the machine is slow: $since s since the burst", 1 if $since > 1.8;
    is("@s", '200 429 429', 'after 1.1 s one request passes again, not more');
}

my $ok = DsTest::wait_until(sub { $t->get('lim', '/x')->{status} == 200 },
    timeout => 3, interval => 0.1);
ok($ok, 'and again after waiting');

# ---- header key: separate buckets ------------------------------------------------------

@s = burst('hdr', '/', 3, headers => { 'X-Key' => 'k1' });
is("@s", '200 200 429', 'X-Key k1: burst 1 -> 2 pass, then 429');
@s = burst('hdr', '/', 3, headers => { 'X-Key' => 'k2' });
is("@s", '200 200 429', 'X-Key k2 has its own bucket');
@s = burst('hdr', '/', 1, headers => { 'X-Key' => 'k1' });
is("@s", '429', 'k1 is still limited');
@s = burst('hdr', '/', 2, headers => { 'X-Key' => 'K1' });
is("@s", '200 200', 'header values are compared exactly (K1 is not k1)');

# ---- other services are not affected ------------------------------------------------------

@s = burst('free', '/', 10);
is("@s", join(' ', ('200') x 10), 'a service without rate limits: no 429');

# ---- exact across workers ------------------------------------------------------------------

# burst 19 and almost no refill: exactly 20 of 100 concurrent requests
# pass, however the two workers share them
my @res = $t->parallel([map { ['GET', "/p$_", host => 'many.test.local'] }
    1 .. 100]);
my %st;
$st{ $_->{status} }++ for @res;
is($st{200} // 0, 20, 'exactly 20 of 100 concurrent requests passed')
    or diag explain \%st;
is($st{429} // 0, 80, 'and 80 got 429') or diag explain \%st;
my %workers;
$workers{ $_->{headers}{'x-ds-worker'} // '?' }++ for @res;
is(scalar keys %workers, 2, 'both workers answered')
    or diag explain \%workers;
my %passed_on;
$passed_on{ $_->{headers}{'x-ds-worker'} }++
    for grep { $_->{status} == 200 } @res;
note 'passed per worker: ' . join ', ',
    map { "$_=$passed_on{$_}" } sort keys %passed_on;

# and a second round: nothing passes
@res = $t->parallel([map { ['GET', "/q$_", host => 'many.test.local'] }
    1 .. 40]);
is(scalar(grep { $_->{status} == 200 } @res), 0,
    'a second round right after: none passes');

# ---- limits change without reload ----------------------------------------------------------

$t->seed([svc('many', 'r3', { prefix => '/', key => 'ip', rps => 1000,
    burst => 1000 })]);
@s = burst('many', '/', 5);
is("@s", '200 200 200 200 200', 'a raised limit applies at the next request');

$t->done;
