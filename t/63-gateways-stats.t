#!/usr/bin/perl
# Two gateways, one controld: two nginx with the module on the same
# state (two front doors on one host, a valid embedded setup), both
# telling controld's notify socket, and controld.yml's stats_url a list
# of their two stats locations.  What autoscaling and draining read is
# the sum:
#   - 200 requests through A alone keep a service at 1 replica (rps 3.33
#     over 60 s, target 5), 200 more through B take it to 2 (6.67): each
#     gateway's own count stays under the target, the sum does not;
#   - a replica draining waits for a slow request in flight through B
#     (A has nothing in flight), which ends 200;
#   - a request held on B wakes a service scaled to zero;
#   - B killed: it is left out of the sums (logged once), autoscaling
#     goes on with A alone (back to 1 replica, the reason an rps, not
#     "no fresh stats"); B started again: logged as answering again.
# Outcomes only: nothing is measured by time.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $a = DsTest->new(seed_empty => 0, workers => 1);
my $s = DsStack->new($a);
my $notify = $s->dir . '/notify.sock';
$a->write_conf(http => "dstack_notify $notify;");
my $b = DsTest->new(seed_empty => 0, workers => 1, state => $a->state,
    http => "dstack_notify $notify;");

my $url_a = 'http://127.0.0.1:' . $a->stats_port . '/stats';
my $url_b = 'http://127.0.0.1:' . $b->stats_port . '/stats';

# ---- -n: the list and its errors --------------------------------------------

my ($rc, $out) = $s->check_conf("domain: a.b\nstats_url: [$url_a, $url_b]\n");
is($rc, 0, '-n: stats_url as a list') or diag $out;
for my $c (
    ["stats_url: [$url_a, $url_a]\n", qr/:2:\d+: stats_url: "\Q$url_a\E" is listed twice$/m, 'the same URL twice'],
    ["stats_url: []\n", qr/:2:12: stats_url: an empty list \(one URL or more\)$/m, 'an empty list'],
    ["stats_url: [$url_a, ftp://x/stats]\n", qr/:2:\d+: stats_url: "ftp:\/\/x\/stats" is not an http:\/\/ URL$/m, 'an item that is not http://'],
    ["stats_url: [$url_a, [x]]\n", qr/:2:\d+: stats_url: expected a string$/m, 'an item that is a list'],
    ["stats_url: \"http://a/x http://b/y\"\n", qr/:2:12: stats_url: "http:\/\/a\/x http:\/\/b\/y" has a space or a control character$/m, 'two URLs in one string'],
) {
    ($rc, $out) = $s->check_conf("domain: a.b\n$c->[0]", 'bad');
    isnt($rc, 0, "-n: $c->[2]: refused");
    like($out, $c->[1], "-n: $c->[2]: says where and why") or diag $out;
}

$s->start_controld(stats_url => "[$url_a, $url_b]",
    extra => "notify_socket: $notify\n");
$a->start;
$b->start;
$s->need_netns;

my $domain = $a->domain;
my $code = $s->upload($s->app_files);

# controld's gauge of its stats sources: "answering failing"
sub sources {
    my $m = $s->api('GET', '/api/metrics')->{body} // '';
    my %n = $m =~ /^dstack_controld_module_stats_sources\{state="(\w+)"\} (\d+)$/mg;
    return join ' ', $n{answering} // '-', $n{failing} // '-';
}
ok(DsTest::wait_until(sub { sources() eq '2 0' }, timeout => 10),
    'both gateways\' stats answer (dstack_controld_module_stats_sources)')
    or diag sources();

# ---- a request held on B wakes a service scaled to zero ----------------------

my $r = $s->apply($s->app_spec(
    replicas => '0..1',
    scaling => { metric => 'rps', target => 100, window => '30s',
                 scale_up_delay => '0s', scale_down_delay => '300s' },
), name => 'zero', code => $code);
is($r->{status}, 201, 'a service scaled to zero: 201') or diag $r->{body};
ok($s->wait_run('zero', sub { $_[0]{status} eq 'pending' }),
    'it waits for requests');
my $held = $b->get('zero', '/', timeout => 60);
is($held->{status}, 200, 'a request to it through gateway B: held, then 200')
    or diag explain $held;
like($s->log_text, qr/run "zero": a request waits: scaling 0 -> 1/,
    'controld heard of it (B told the shared notify socket)');
my $zb = $b->service_stats('zero');
cmp_ok($zb && $zb->{hold}{total}, '>=', 1, 'B held it');
my $za = $a->service_stats('zero');
ok(!$za || !$za->{hold}{total}, 'A held nothing');

# ---- the sum decides: A alone 1 replica, A + B 2 --------------------------------

$r = $s->apply($s->app_spec(
    replicas => '1..2',
    scaling => { metric => 'rps', target => 5, window => '60s',
                 scale_up_delay => '0s', scale_down_delay => '2s' },
), name => 'sum', code => $code);
is($r->{status}, 201, 'a service that scales on rps (target 5 over 60 s)')
    or diag $r->{body};
ok($s->wait_ready('sum', 1, timeout => 60), 'one replica ready')
    or diag explain $s->last_run;

sub burst {
    my ($gw, $run, $n) = @_;
    my $ok = 0;
    for (1 .. $n) {
        $ok++ if $gw->get($run, '/')->{status} == 200;
    }
    return $ok;
}

sub rps_reason {
    my ($run, $target, $want) = @_;
    my $x = $s->run($run) or return;
    my $why = $x->{scaling}{reason} // '';
    return unless $why =~ m{^rps ([\d.]+) over 60s / target $target -> (\d+)};
    return ($1, $2, $x);
}

is(burst($a, 'sum', 200), 200, '200 requests through A: all 200');
my ($rps, $want, $x);
ok(DsTest::wait_until(sub {
    ($rps, $want, $x) = rps_reason('sum', 5);
    return defined $rps && $rps >= 3.3;
}, timeout => 15), "controld counts them: rps $rps") or diag explain $x;
is($want, 1, 'A alone: rps under the target, 1 replica wanted');
is($x->{desired}, 1, 'desired stays 1');

is(burst($b, 'sum', 200), 200, '200 more through B: all 200');
$x = $s->wait_run('sum', sub { $_[0]{desired} == 2 }, timeout => 15);
ok($x, 'A + B: desired 2') or diag explain $s->last_run;
like($x && $x->{scaling}{reason}, qr{^rps 6\.\d+ over 60s / target 5 -> 2},
    'the reason is the sum (6.67 rps)');
for ([A => $a], [B => $b]) {
    my ($name, $gw) = @$_;
    my $st = $gw->service_stats('sum');
    my $n = $st ? $st->{windows}{60}{arrivals} : -1;
    ok($n >= 200 && $n < 300, "$name alone counted $n in 60 s (under "
        . "300, the target's worth)");
}
ok($s->wait_ready('sum', 2, timeout => 60), 'two replicas ready')
    or diag explain $s->last_run;

# ---- draining waits for what is in flight through B ------------------------------

$r = $s->apply($s->app_spec(replicas => 1), name => 'drain', code => $code);
is($r->{status}, 201, 'a service with one replica') or diag $r->{body};
ok($s->wait_ready('drain', 1, timeout => 60), 'ready')
    or diag explain $s->last_run;
my $sock = DsTest::_connect($b->port, 10);
DsTest::_send_all($sock, $b->build_request('GET', '/slow?ms=3000',
    host => "drain.$domain"), time + 10);
ok(DsTest::wait_until(sub {
    my $st = $b->service_stats('drain');
    return $st && $st->{inflight} == 1;
}, timeout => 10), 'a slow request in flight through B');
my $sa = $a->service_stats('drain');
ok(!$sa || !$sa->{inflight}, 'A has nothing in flight for it');
my $mark = length $s->log_text;
$r = $s->stop('drain');
is($r->{status}, 200, 'the service is stopped: its replica drains')
    or diag $r->{body};
my $slow = eval { DsTest::_read_response($sock, timeout => 30,
    method => 'GET') } || { status => 0, error => $@ };
close $sock;
is($slow->{status}, 200, 'the slow request through B ends 200: the drain '
    . 'waited for it') or diag explain $slow;
ok($s->wait_run('drain', sub { $_[0]{status} =~ /^(terminated|stopped|done)$/ },
    timeout => 30), 'the run ends') or diag explain $s->last_run;
my $tail = substr($s->log_text, $mark);
like($tail, qr/run "drain": replica 0 v\d+ drained in \d+ ms/,
    'the drain ended on the stats (in flight 0 at both)');
unlike($tail, qr/run "drain": .*drain ended after .*\(bound\)/,
    'not on its bound');

# ---- B dies: autoscaling goes on with A ------------------------------------------

$mark = length $s->log_text;
$b->stop;
$x = $s->wait_run('sum', sub { $_[0]{desired} == 1 }, timeout => 30);
ok($x, 'B gone: its requests leave the sum, desired back to 1')
    or diag explain $s->last_run;
like($x && $x->{scaling}{reason}, qr{^rps [\d.]+ over 60s / target 5 -> 1},
    'the reason is still an rps (from A), not "no fresh stats"');
is(burst($a, 'sum', 20), 20, 'A still serves');
ok(DsTest::wait_until(sub {
    my ($v) = rps_reason('sum', 5);
    return defined $v && $v > $rps;
}, timeout => 15), 'and its new requests are counted');
$tail = substr($s->log_text, $mark);
my @left = $tail =~ /^.*stats: \Q$url_b\E: .*left out of the sums until it answers; 1 of 2 answers\)$/mg;
is(scalar @left, 1, 'B left out: logged once') or diag $tail;
is(sources(), '1 1', 'the gauge: 1 answering, 1 failing');

$mark = length $s->log_text;
$b->start;
ok(DsTest::wait_until(sub {
    substr($s->log_text, $mark) =~ /stats: \Q$url_b\E answers again/
}, timeout => 15), 'B back: logged as answering again');
ok(DsTest::wait_until(sub { sources() eq '2 0' }, timeout => 10),
    'the gauge: 2 answering') or diag sources();

$b->finish;
$s->finish;
$a->done;
