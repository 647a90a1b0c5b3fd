#!/usr/bin/perl
# Scale to zero and back, end to end: a service with min 0 whose replica
# takes 2 s to start.  N concurrent requests to the idle service are all
# held at the gateway and all get 200 once the replica is ready; with no
# traffic the last replica drains and stops after scale_down_delay and
# the run is pending, "waiting for requests" (API and dstackctl ps -v);
# then N requests again, all 200.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

my $N = 8;
my ($t, $s) = DsStack::stack(hold => 1);

my $code = $s->upload($s->app_files);
my $r = $s->apply($s->app_spec(
    replicas => '0..2',
    env => ['START_DELAY=2'],
    scaling => { metric => 'rps', target => 100, window => '30s',
                 scale_up_delay => '1s', scale_down_delay => '3s' },
), name => 'zero', code => $code);
is($r->{status}, 201, 'min 0: 201') or diag $r->{body};
is($r->{json}{status}, 'pending', 'pending from the start');
is($r->{json}{message}, 'waiting for requests', 'waiting for requests');

sub cli {
    my @args = @_;
    my %env = (%{ $t->_san_env }, DSTACK_CONFIG => $s->client_config,
        HOME => $s->dir);
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        $ENV{$_} = $env{$_} for keys %env;
        delete @ENV{qw(DSTACK_SERVER DSTACK_TOKEN DSTACK_PROJECT)};
        exec "$DsTest::BUILD/dstackctl", @args or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh>;
    close $fh;
    return ($? >> 8, $out // '');
}

sub burst {
    my $label = shift;
    my $t0 = time;
    my @res = $t->parallel([ map { ['GET', '/', host => 'zero.'
        . $t->domain, timeout => 60] } 1 .. $N ]);
    my $took = time - $t0;
    my @ok = grep { $_->{status} == 200 } @res;
    is(scalar @ok, $N, sprintf('%s: all %d concurrent requests get 200 '
        . '(%.2f s)', $label, $N, $took))
        or diag explain [ map { "$_->{status} " . ($_->{error} // '') } @res ];
    return $took;
}

# idle: nothing runs
sleep 1;
my @pids = $s->run_pids('zero');
is(scalar @pids, 0, 'idle: no replica process');

my $took = burst('from zero');
cmp_ok($took, '>=', 1.9, 'they waited for the replica to start (2 s)');
like($s->log_text, qr/run "zero": a request waits: scaling 0 -> 1/,
    'controld heard of the held requests');
my $st = $t->service_stats('zero');
cmp_ok($st->{hold}{total}, '>=', $N, "the module held them ($st->{hold}{total})");
cmp_ok($st->{hold}{cold_starts}, '>=', 1, 'one cold start counted');
my $run = $s->run('zero');
is($run->{status}, 'running', 'running');
is($run->{scaling}{desired}, 1, 'desired 1');

# idle again: after the window (30 s) and scale_down_delay: zero
my $t_idle = time;
$run = $s->wait_run('zero', sub {
    $_[0]{status} eq 'pending' && !@{ $_[0]{replicas} }
}, timeout => 60, interval => 0.5);
ok($run, sprintf('idle: back to zero after %.1f s', time - $t_idle))
    or diag explain $s->last_run;
is($run && $run->{message}, 'waiting for requests', 'waiting for requests');
is($run && $run->{scaling}{desired}, 0, 'desired 0');
like($run ? $run->{scaling}{reason} : '', qr/^rps 0\.00 over 30s/,
    'why: no requests in the window');
like($s->log_text, qr/run "zero": replica 0 v\d+ draining/,
    'the last replica drained first');
ok(DsTest::wait_until(sub { !$s->run_pids('zero') }, timeout => 10),
    'its process is gone');

my ($rc, $out) = cli('ps');
is($rc, 0, 'dstackctl ps') or diag $out;
like($out, qr/zero\s.*pending \(waiting for requests\)/, 'ps: pending '
    . '(waiting for requests)') or diag $out;
unlike($out, qr/desired/, 'ps without -v: no scaling lines');
($rc, $out) = cli('ps', '-v');
like($out, qr/^ zero  rps: 0 desired, 0 current \(0 ready\): rps 0\.00 over 30s/m,
    'ps -v: desired vs current, and why') or diag $out;

burst('from zero again');

$s->finish;
$t->done;
