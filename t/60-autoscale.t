#!/usr/bin/perl
# Autoscaling on rps, end to end: a bounded load through the gateway
# takes a service 1 -> 3 replicas, a light load brings it back to 1.
# The replica counts are sampled over time; scale_up_delay and
# scale_down_delay are honoured between steps (controld's log times);
# the replicas leaving drain first and not one request fails.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use Time::Local qw(timelocal);
use Test::More;

my ($t, $s) = DsStack::stack(netns => 1);

my ($UP, $DOWN) = (4, 5);
my $code = $s->upload($s->app_files);
my $r = $s->apply($s->app_spec(
    replicas => '1..3',
    scaling => { metric => 'rps', target => 4, window => '30s',
                 scale_up_delay => "${UP}s", scale_down_delay => "${DOWN}s" },
), name => 'auto', code => $code);
is($r->{status}, 201, 'a service that scales on rps: 201') or diag $r->{body};
ok($s->wait_ready('auto', 1, timeout => 60), 'one replica ready')
    or diag explain $s->last_run;

my $run = $s->run('auto');
is($run->{scaling}{metric}, 'rps', 'the run shows its scaling: metric');
is($run->{scaling}{desired}, 1, '... desired 1');
ok(DsTest::wait_until(sub {
    ($s->run('auto')->{scaling}{reason} // '') =~ /^rps [\d.]+ over 30s/
}, timeout => 10), '... and why (rps over the window)')
    or diag explain $s->run('auto')->{scaling};

# samples of (time, desired, ready, live) every 0.25 s in a child
sub start_sampler {
    my $file = $s->dir . '/samples.txt';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open my $out, '>', $file or POSIX::_exit(1);
        $out->autoflush(1);
        my $stop = 0;
        local $SIG{TERM} = sub { $stop = 1 };
        while (!$stop) {
            my $x = $s->run('auto');
            if ($x) {
                my @reps = @{ $x->{replicas} };
                printf $out "%.3f %d %d %d\n", time, $x->{desired},
                    scalar(grep { $_->{ready} } @reps),
                    scalar(grep { $_->{status} ne 'terminated' } @reps);
            }
            sleep 0.25;
        }
        POSIX::_exit(0);
    }
    return { pid => $pid, file => $file };
}

sub stop_sampler {
    my $h = shift;
    kill 'TERM', $h->{pid};
    waitpid($h->{pid}, 0);
    return [ map { [ split ' ' ] } split /\n/, DsTest::_slurp($h->{file}) ];
}

# "2026-11-25 20:24:13.123 info run "auto": scaling 1 -> 3 replicas: ..."
sub scaling_events {
    my @e;
    for (split /\n/, $s->log_text) {
        next unless /^(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)\.(\d+) .*run "auto": scaling (\d+) -> (\d+) replicas/;
        my $ts = timelocal($6, $5, $4, $3, $2 - 1, $1) + $7 / 1000;
        push @e, { t => $ts, from => $8, to => $9 };
    }
    return @e;
}

my $sampler = start_sampler();
my $t_load = time;

# two clients at most 20 rps each: 3 replicas once the 30 s window
# holds more than 8 rps on average
my @heavy = map { $s->start_load('auto', interval => 0.05) } 1 .. 2;
my $up = $s->wait_run('auto', sub { $_[0]{desired} == 3 },
    timeout => 90, interval => 0.25);
ok($up, sprintf('under load desired reaches 3 (%.1f s)', time - $t_load))
    or diag explain $s->last_run;
ok($s->wait_ready('auto', 3, timeout => 60), 'three replicas ready')
    or diag explain $s->last_run;
like($s->run('auto')->{scaling}{reason}, qr/^rps [\d.]+ over 30s \/ target 4 -> \d/,
    'the reason names the rps and the target');
my $hv = { total => 0, failed => [] };
for (@heavy) {
    my $x = $s->stop_load($_);
    $hv->{total} += $x->{total};
    push @{ $hv->{failed} }, @{ $x->{failed} };
}

# a light load (about 1 rps) while the window empties: back to 1
my $light = $s->start_load('auto', interval => 1);
my $t_light = time;
my $down = $s->wait_run('auto', sub {
    my $x = shift;
    return $x->{desired} == 1
        && 1 == grep { $_->{status} ne 'terminated' } @{ $x->{replicas} };
}, timeout => 90, interval => 0.25);
ok($down, sprintf('with a light load it goes back to one replica (%.1f s)',
    time - $t_light)) or diag explain $s->last_run;
sleep 1;
my $lt = $s->stop_load($light);
my $samples = stop_sampler($sampler);

ok($hv->{total} > 100, "the heavy load sent $hv->{total} requests");
is_deeply($hv->{failed}, [], 'no request of the heavy load failed');
ok($lt->{total} > 10, "the light load sent $lt->{total} requests");
is_deeply($lt->{failed}, [], 'no request failed during the scale-down');

# what the samples saw over time
my ($max_ready, $saw3, $after) = (0, 0, 0);
for my $x (@$samples) {
    $max_ready = $x->[2] if $x->[2] > $max_ready;
    $saw3 = 1 if $x->[1] == 3;
    $after = 1 if $saw3 && $x->[1] == 1;
}
is($max_ready, 3, 'the samples saw 3 ready replicas');
ok($saw3 && $after, 'and then desired 1 again');
my $last = $samples->[-1];
is("$last->[1] $last->[2] $last->[3]", '1 1 1', 'last sample: 1 desired, '
    . '1 ready, 1 live');

# the steps and the delays between them
my @ev = scaling_events();
ok(@ev >= 2, 'controld logged the steps: '
    . join(', ', map { "$_->{from}->$_->{to}" } @ev));
my $prev;
my $bad = 0;
for my $e (@ev) {
    if ($prev) {
        my $gap = $e->{t} - $prev->{t};
        my $need = $e->{to} > $e->{from} ? $UP : $DOWN;
        if ($gap < $need) {
            $bad++;
            diag sprintf('%d->%d only %.2f s after %d->%d (delay %d s)',
                $e->{from}, $e->{to}, $gap, $prev->{from}, $prev->{to},
                $need);
        }
    }
    $prev = $e;
}
is($bad, 0, 'each step waited its delay since the previous one');
ok((grep { $_->{to} < $_->{from} } @ev), 'a scale-down step');
like($s->log_text, qr/run "auto": replica \d+ v\d+ draining/,
    'the replicas leaving drained first');
like($s->log_text, qr/run "auto": \d+ replicas? wanted, \d+ now: .*scale_(up|down)_delay/,
    'a step waiting for its delay is logged with why');

$s->finish;
$t->done;
