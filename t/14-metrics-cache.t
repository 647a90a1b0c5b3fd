#!/usr/bin/perl
# A whole Prometheus scrape comes from the worker's cache of the last
# one (issue 17): the text of services whose numbers did not change is
# sent as it was, the changed ones are rendered.  What must hold: a
# service's figures move between two scrapes when it gets traffic; an
# idle service's lines stay there, unchanged; a scrape with nothing new
# is the same text; many services changed at once, and a commit (a new
# service, new replica addresses, a service gone), make the cache anew
# and every figure still matches dstack_stats json.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $N = 40;         # the cache is made anew past 40 / 16 + 16 = 18 changed
my $t = DsTest->new(workers => 1);
my $be = $t->backend(name => 'b1');

my @ops;
for my $i (0 .. $N - 1) {
    my $name = sprintf('m%02d', $i);
    push @ops, { op => 'service', name => $name, auth => DsTest::false };
    push @ops, { op => 'replicas', service => $name, replicas => [
        { addr => $be, state => 'ready' },
        { addr => "10.9.$i.2:8000", state => 'draining' } ] };
}
$t->seed(\@ops);
$t->start;

# lines by service: { service => [ lines ] }, and the value of each series
sub parse {
    my ($text) = @_;
    my (%by, %val);
    for (split /\n/, $text) {
        next if /^#/;
        my ($svc) = /\{service="([^"]*)"/ or next;
        push @{ $by{$svc} }, $_;
        my ($k, $v) = /^(\S+\})\s+(\S+)$/ or next;
        $val{$k} = $v;
    }
    return (\%by, \%val);
}

sub req { "dstack_requests_total{service=\"$_[0]\",class=\"$_[1]\"}" }
sub win {
    "dstack_window_requests{service=\"$_[0]\",window=\"$_[1]\",class=\"2xx\"}"
}

# the counts land at the log phase, just after the answer
sub traffic {
    my ($name, $n, $want) = @_;
    my $ok = 0;
    for (1 .. $n) {
        $ok++ if $t->get($name, '/')->{status} == 200;
    }
    DsTest::wait_until(sub {
        ($t->service_stats($name)->{requests}{'2xx'} // 0) == $want },
        timeout => 3);
    return $ok;
}

# ---- the first scrape makes the cache; the second finds nothing new ------

my $a = $t->metrics;
my ($a_by, $a_val) = parse($a);
is(scalar keys %$a_by, $N, "first scrape: all $N services");
is($a_val->{ req('m00', '2xx') }, 0, 'm00 has no requests yet');
is($t->metrics, $a, 'a scrape with nothing new is the same text');

# ---- traffic to one service: its figures move, the rest stay ---------------

is(traffic('m00', 3, 3), 3, '3 requests to m00');
my $b = $t->metrics;
my ($b_by, $b_val) = parse($b);
is($b_val->{ req('m00', '2xx') }, 3, 'm00: requests_total moved to 3');
is($b_val->{ win('m00', '30s') }, 3, 'm00: its 30 s window too');
is($b_val->{"dstack_replica_requests_total{service=\"m00\",replica=\"$be\"}"},
    3, 'm00: and its replica\'s requests');
is(scalar(split /\n/, $b), scalar(split /\n/, $a), 'as many lines as before');
is_deeply([grep { $_ ne 'm00' } sort keys %$b_by],
    [grep { $_ ne 'm00' } sort keys %$a_by], 'every other service listed');
my @same = grep { $_ ne 'm00'
    && join("\n", @{ $b_by->{$_} }) eq join("\n", @{ $a_by->{$_} }) }
    keys %$a_by;
is(scalar @same, $N - 1, 'the idle services\' lines are all there, as they '
    . 'were');
is(scalar @{ $b_by->{m00} }, scalar @{ $a_by->{m00} },
    'm00 has as many lines as before');
is($t->metrics, $b, 'scraped again without traffic: the same text');

is(traffic('m00', 2, 5), 2, '2 more requests to m00');
my (undef, $c_val) = parse($t->metrics);
is($c_val->{ req('m00', '2xx') }, 5, 'm00: moved again, to 5');
is($c_val->{ req('m01', '2xx') }, 0, 'm01: still 0');

# ---- many services changed: the cache is made anew -------------------------

my $ok = 0;
$ok += traffic(sprintf('m%02d', $_), 1, 1) for 1 .. 20;
is($ok, 20, 'one request to each of 20 more services');
my $d = $t->metrics;
my (undef, $d_val) = parse($d);
is(scalar(grep { ($d_val->{ req(sprintf('m%02d', $_), '2xx') } // -1) == 1 }
    1 .. 20), 20, 'all 20 show their request');
is($d_val->{ req('m00', '2xx') }, 5, 'm00 keeps its 5');
is($d_val->{ req('m21', '2xx') }, 0, 'm21 none');
is($t->metrics, $d, 'and the next scrape, from the new cache, is the same');

# ---- a commit: a new service, new replica addresses, a service gone -------

$t->seed([
    { op => 'service', name => 'm-new', auth => DsTest::false },
    { op => 'replicas', service => 'm30', replicas => [
        { addr => $be, state => 'ready' },
        { addr => '10.99.0.7:9000', state => 'ready' } ] },
    { op => 'del_service', name => 'm39' },
]);
my $e = $t->metrics;
my ($e_by, $e_val) = parse($e);
ok($e_by->{'m-new'}, 'after the commit: the new service is there');
is($e_val->{ req('m-new', '2xx') }, 0, 'with zeros');
ok(!$e_by->{m39}, 'the deleted one is gone');
ok(defined $e_val->{'dstack_replica_requests_total{service="m30",'
    . 'replica="10.99.0.7:9000"}'}, 'm30 shows its new replica address');
ok(!grep({ /10\.9\.30\.2/ } @{ $e_by->{m30} || [] }), 'and not the old one');
is($e_val->{ req('m00', '2xx') }, 5, 'm00 still 5 (copied from the old '
    . 'cache)');
is(traffic('m05', 2, 3), 2, 'traffic to m05 after the commit');
my (undef, $f_val) = parse($t->metrics);
is($f_val->{ req('m05', '2xx') }, 3, 'm05 moved to 3');

# ---- every figure against dstack_stats json ---------------------------------

my $f = $t->metrics;
my $js = $t->stats;
my (undef, $g_val) = parse($f);
my ($checked, $bad) = (0, 0);
for my $s (@{ $js->{services} }) {
    for my $cls (qw(refused 1xx 2xx 3xx 4xx 5xx)) {
        $checked++;
        $bad++ unless ($g_val->{ req($s->{name}, $cls) } // -1)
            == $s->{requests}{$cls};
    }
    $checked++;
    $bad++ unless ($g_val->{ win($s->{name}, '300s') } // -1)
        == $s->{windows}{300}{'2xx'};
    for my $r (@{ $s->{replicas} }) {
        $checked++;
        $bad++ unless ($g_val->{"dstack_replica_requests_total{service=\""
            . "$s->{name}\",replica=\"$r->{addr}\"}"} // -1) == $r->{requests};
    }
}
cmp_ok($checked, '>', 8 * $N, "$checked figures compared with the json");
is($bad, 0, 'all of them equal');

$t->done;
