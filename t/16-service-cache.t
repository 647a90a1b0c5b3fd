#!/usr/bin/perl
# The worker's cache of services (issue 17): a slot of the table is the
# service's hot part (what admission reads), the record behind it.  With
# many more services than slots (200 services, 64 slots: several to a
# slot) requests in turn to all of them, names that are no service
# among them, must each get their own service's settings: its replica,
# whether it wants a token, its body size limit; a commit that changes
# one, or removes one, is seen at the next request, the rest unchanged.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $N = 200;
my $t = DsTest->new(workers => 1, capacity => 'services=8 replicas=4096');
my %addr = map { $_ => $t->backend(name => $_) } qw(r0 r1 r2);
my $tok = 'dst_cache_' . ('c' x 30);
my %auth = (headers => { Authorization => "Bearer $tok" });

sub name { sprintf('c%03d', $_[0]) }

# service i: replica r(i % 3), a token wanted when i is even, bodies of
# at most 1,000 + i bytes
sub svc {
    my ($i, $rep) = @_;
    return ({ op => 'service', name => name($i),
              auth => $i % 2 ? DsTest::false : DsTest::true,
              max_body_size => 1000 + $i },
            { op => 'replicas', service => name($i),
              replicas => [{ addr => $addr{$rep // 'r' . $i % 3},
                             state => 'ready' }] });
}

$t->seed([(map { svc($_) } 0 .. $N - 1),
    { op => 'token', token => $tok, name => 'all', all => DsTest::true }]);
$t->start;

sub who {
    my $r = shift;
    return $r->{status} == 200 ? $r->{headers}{'x-replica'} // 'none'
                               : "status $r->{status}";
}

# every service, in an order that goes round the slots; what did not
# answer as expected, by name
sub pass {
    my (%o) = @_;
    my @bad;
    for my $k (0 .. $N - 1) {
        my $i = ($k * 37) % $N;
        next if $o{skip} && $o{skip}{$i};
        my $want = $o{replica}{$i} // 'r' . $i % 3;
        my $got = who($t->get(name($i), '/', %auth));
        push @bad, name($i) . ": $got, not $want" if $got ne $want;
        my $anon = $t->get(name($i), '/')->{status};
        push @bad, name($i) . " without a token: $anon"
            if $anon != ($i % 2 ? 200 : 401);
        if ($o{scanners}) {
            my $st = $t->get("nosuch$k", '/', %auth)->{status};
            push @bad, "nosuch$k: $st" if $st != 404;
        }
    }
    return @bad;
}

is_deeply([pass()], [], "$N services over 64 slots: each its own replica "
    . 'and auth');
is_deeply([pass()], [], 'again, from the cache');
is_deeply([pass(scanners => 1)], [],
    'with a name that is no service between each two (404)');

# the body size limit comes from the hot part too
my $body = 'x' x 1100;
is($t->request('POST', '/', host => name(51) . '.' . $t->domain,
    body => $body)->{status}, 413, 'c051 allows 1,051 bytes: 1,100 is 413');
is($t->request('POST', '/', host => name(199) . '.' . $t->domain,
    body => $body)->{status}, 200, 'c199 allows 1,199 bytes: 1,100 is 200');

# a commit: c007 moves to r0, c008 to r1, c010 is removed
$t->seed([svc(7, 'r0'), svc(8, 'r1'),
    { op => 'del_service', name => name(10) }]);
is_deeply([pass(replica => { 7 => 'r0', 8 => 'r1' }, skip => { 10 => 1 })],
    [], 'after a commit: the two changed services changed, the rest not');
is($t->get(name(10), '/', %auth)->{status}, 404, 'the removed service: 404');
is_deeply([pass(replica => { 7 => 'r0', 8 => 'r1' }, skip => { 10 => 1 })],
    [], 'and again');

$t->done;
