#!/usr/bin/perl
# Replicas as a range with scaling: a service with min 0 starts scaled to
# zero (pending, "waiting for requests"); the first request is held by
# the gateway, controld hears of it (notify_socket) and starts a replica,
# and the request gets its 200 without a retry; with no traffic the
# service goes back to zero after scale_down_delay, draining first.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack(hold => 1);

my $code = $s->upload($s->app_files);
my $spec = $s->app_spec(
    replicas => '0..2',
    scaling => { metric => 'rps', target => 100, window => '30s', scale_up_delay => '1s',
                 scale_down_delay => '3s' },
);
my $r = $s->apply($spec, name => 'lazy', code => $code);
is($r->{status}, 201, 'a service that scales from zero: 201')
    or diag $r->{body};
is($r->{json}{status}, 'pending', 'it is pending');
is($r->{json}{message}, 'waiting for requests', 'waiting for requests');
is_deeply($r->{json}{replicas}, [], 'with no replica');
sleep 0.5;
is_deeply($s->run_pids('lazy') ? 1 : 0, 0, 'no process runs');

# the first request waits at the gateway for the first replica
my $t0 = time;
my $res = $s->get('lazy', '/', timeout => 30);
my $took = time - $t0;
is($res->{status}, 200, sprintf('the first request is held and gets its '
    . '200 (%.2f s)', $took)) or diag explain $res;
like($s->log_text, qr/run "lazy": a request waits: scaling 0 -> 1/,
    'controld heard of it');
my $run = $s->run('lazy');
is($run->{status}, 'running', 'the run is running');
is($s->ready_count($run), 1, 'one replica');

# no traffic: back to zero after scale_down_delay
# (the window is 30 s: the request leaves it 30 s later)
$run = $s->wait_run('lazy', sub { $_[0]{status} eq 'pending' },
    timeout => 50, interval => 0.5);
ok($run, 'without requests it scales back to zero')
    or diag explain $s->last_run;
like($s->log_text, qr/run "lazy": scaling 1 -> 0 replicas/,
    'controld says so');
ok(DsTest::wait_until(sub { !$s->run_pids('lazy') }, timeout => 10),
    'the replica process is gone');

# and up again
$res = $s->get('lazy', '/', timeout => 30);
is($res->{status}, 200, 'the next request starts it again');

$s->finish;
$t->done;
