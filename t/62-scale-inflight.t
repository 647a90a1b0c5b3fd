#!/usr/bin/perl
# metric: inflight (our extension), end to end: three clients with slow
# requests (3 s each) keep 3 requests in flight; with target 1 the
# service goes from 1 to 3 replicas within seconds, not after a window.
# One of the new replicas fails to start: it is retried with backoff and
# shown (API, dstackctl ps) while the running ones serve on, without a
# failed request; once it can start it gets ready.  Without load the
# service stays up for the window (the peak of the window) and then
# comes down to 1 after scale_down_delay.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack(netns => 1);

my $flag = $s->dir . '/replica-2-fails';
my $spec = $s->app_spec(
    replicas => '1..3',
    scaling => { metric => 'inflight', target => 1, window => '30s',
                 scale_up_delay => '1s', scale_down_delay => '2s' },
);
$spec->{commands} = [
    'date +%s.%N > exec.txt',
    qq{if [ "\$DSTACK_REPLICA_NUM" = 2 ] && [ -e $flag ]; then }
        . qq{echo "replica 2 fails on purpose"; exit 3; fi},
    "exec python3 app.py $spec->{port}",
];
my $code = $s->upload($s->app_files);
my $r = $s->apply($spec, name => 'llm', code => $code);
is($r->{status}, 201, 'metric inflight: 201') or diag $r->{body};
ok($s->wait_ready('llm', 1, timeout => 60), 'one replica ready')
    or diag explain $s->last_run;
is($s->run('llm')->{scaling}{metric}, 'inflight', 'metric inflight');

DsTest::_write($flag, '');
my $t0 = time;
my @loads = map { $s->start_load('llm', path => '/slow?ms=3000',
    interval => 0) } 1 .. 3;

my $up = $s->wait_run('llm', sub { $_[0]{desired} == 3 }, timeout => 20,
    interval => 0.1);
my $took = time - $t0;
ok($up, sprintf('3 slow requests in flight: desired 3 after %.1f s', $took))
    or diag explain $s->last_run;
cmp_ok($took, '<', 10, 'within seconds (stats every second), not a window');
like($up ? $up->{scaling}{reason} : '',
    qr/^in-flight [1-3] \(peak over 30s, now \d+\) \/ target 1 -> [23]/,
    'why: the in-flight count') or diag explain $up->{scaling};

# replica 2 cannot start: retried with backoff, shown, the others serve
my $failing = $s->wait_run('llm', sub {
    my ($rep) = grep { $_->{num} == 2 } @{ $_[0]{replicas} };
    return $rep && $rep->{restarts} >= 1
        && $rep->{message} =~ /exited with status 3/;
}, timeout => 30, interval => 0.2);
ok($failing, 'the replica that fails to start is retried')
    or diag explain $s->last_run;
is($failing && $failing->{status}, 'running', 'the run stays running');
ok($s->wait_run('llm', sub { $s->ready_count($_[0]) == 2 }, timeout => 30),
    'the two others are ready') or diag explain $s->last_run;
like($s->log_text, qr/run "llm": replica 2 v\d+ failed: .*restart in \d+ s/,
    'controld says it restarts it later (backoff)');

my $ps = `DSTACK_CONFIG=@{[ $s->client_config ]} HOME=@{[ $s->dir ]} $DsTest::BUILD/dstackctl ps -v 2>&1`;
like($ps, qr/replica=2 .*(failed|provisioning|submitted)/, 'ps shows it')
    or diag $ps;
like($ps, qr/^ llm  inflight: 3 desired, 3 current \([23] ready\): in-flight/m,
    'ps -v: desired vs current and why') or diag $ps;

unlink $flag;
ok($s->wait_ready('llm', 3, timeout => 90, interval => 0.25),
    'once it can start, it gets ready (backoff)')
    or diag explain $s->last_run;

# a slow request takes 3 s: give each client the time for one answer,
# however fast the replicas came up
my $since = time - $t0;
sleep(3.5 - $since) if $since < 3.5;
my ($total, @failed) = (0);
for (@loads) {
    my $x = $s->stop_load($_);
    $total += $x->{total};
    push @failed, @{ $x->{failed} };
}
ok($total >= 3, "the slow clients got $total answers");
is_deeply(\@failed, [], 'not one request failed');

# no load: the window's peak keeps 3 for a while, then down to 1
my $t_idle = time;
sleep 5;
is($s->run('llm')->{desired}, 3, 'a lull does not scale down at once');
my $down = $s->wait_run('llm', sub { $_[0]{desired} == 1 }, timeout => 60,
    interval => 0.5);
ok($down, sprintf('down to 1 after the window (%.1f s idle)',
    time - $t_idle)) or diag explain $s->last_run;

$s->finish;
$t->done;
