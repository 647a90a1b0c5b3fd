#!/usr/bin/perl
# Re-apply: plan shows the changes; an unchanged spec changes nothing;
# a changed env rolls out one replica at a time (new version next to the
# old one, ready, then the old one drains) with zero failed requests under
# a load loop; replicas change in place (no new version) both ways, and a
# scale-down drains; new code rolls out too.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack(netns => 1);

my $code = $s->upload($s->app_files);
my $spec = $s->app_spec(replicas => 2, env => { GREETING => 'one' });
my $r = $s->apply($spec, name => 'roll', code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};
ok($s->wait_ready('roll', 2), 'two replicas ready');

# ---- unchanged -----------------------------------------------------------------

$r = $s->apply($spec, name => 'roll', code => $code);
is($r->{status}, 200, 'the same spec again: 200');
is($r->{json}{version}, 1, 'no new version');

# ---- plan -----------------------------------------------------------------------

my $spec2 = $s->app_spec(replicas => 2, env => { GREETING => 'two' });
$r = $s->api('POST', '/api/runs/plan',
    json => { spec => $spec2, name => 'roll', code => $code });
is($r->{status}, 200, 'plan: 200');
is($r->{json}{exists}, JSON::PP::true, 'plan: the run exists');
is_deeply([map { [$_->{field}, $_->{in_place} ? 1 : 0] }
           @{ $r->{json}{changes} }], [['env', 0]],
    'plan: env changes, not in place') or diag explain $r->{json}{changes};
is_deeply($r->{json}{changes}[0]{new}, { GREETING => 'two' },
    'with the new value');
is($s->run('roll')->{version}, 1, 'plan changes nothing');

# ---- rolling update under load -------------------------------------------------------

my $load = $s->start_load('roll');
sleep 0.5;
my $t0 = time;
$r = $s->apply($spec2, name => 'roll', code => $code);
is($r->{status}, 200, 're-apply with a new env: 200');
is($r->{json}{version}, 2, 'version 2');

my ($max_live, $max_v2_ready_with_v1) = (0, 0);
my %messages;
my $run = $s->wait_run('roll', sub {
    my $x = shift;
    $messages{$x->{message}}++ if ($x->{message} // '') =~ /rolling out/;
    my @live = grep { $_->{status} !~ /^(terminated|aborted|failed)$/ }
        @{ $x->{replicas} };
    my @serving = grep { $_->{status} ne 'terminating' } @live;
    $max_live = @serving if @serving > $max_live;
    my @new = grep { $_->{version} == 2 && $_->{ready} } @live;
    return @new == 2 && @live == 2;
}, timeout => 40, interval => 0.02);
ok($run, sprintf('the new version replaced both replicas (%.1f s)',
    time - $t0)) or diag explain $s->last_run;
cmp_ok($max_live, '<=', 3, "one replica at a time: at most 3 replicas "
    . "not draining ($max_live)");
sleep 0.5;
my $res = $s->stop_load($load);
ok($res->{total} > 50, "the load loop ran: $res->{total} requests");
is_deeply($res->{failed}, [], 'zero failed requests during the rollout')
    or diag explain $res;
ok($res->{seen}{'0:1:one'} && $res->{seen}{'0:2:two'},
    'the loop saw the old and the new version') or diag explain $res->{seen};
my %g = map { $_->{json}{greeting} => 1 } map { $s->get('roll', '/') } 1 .. 10;
is_deeply([keys %g], ['two'], 'all replicas run the new env');
ok(%messages, 'the run says it is rolling out')
    or diag explain $s->last_run;
is_deeply([grep { !/^rolling out version 2 \([12] of 2 replicas left\)$/ }
           sort keys %messages], [],
    'the rollout counts replicas of the spec, not the surge one')
    or diag explain \%messages;
like($s->log_text, qr/rolling out version 2 to replica 0 \(next to the old one\)/,
    'controld logs the rollout steps');
is($run->{status}, 'running', 'running') if $run;

# ---- in place: replicas ------------------------------------------------------------

$r = $s->api('POST', '/api/runs/plan', json => { name => 'roll',
    spec => { %$spec2, replicas => 3 }, code => $code });
is_deeply([map { [$_->{field}, $_->{in_place} ? 1 : 0] }
           @{ $r->{json}{changes} }], [['replicas', 1]],
    'plan: replicas change in place');
my @pids = sort map { $_->{pid} } @{ $s->run('roll')->{replicas} };
$r = $s->apply({ %$spec2, replicas => 3 }, name => 'roll', code => $code);
is($r->{status}, 200, 'replicas 2 -> 3: 200');
is($r->{json}{version}, 2, 'same version');
$run = $s->wait_ready('roll', 3);
ok($run, 'three replicas ready') or diag explain $s->last_run;
my @now = sort map { $_->{pid} } grep { $_->{num} < 2 }
    @{ ($run || {})->{replicas} || [] };
is_deeply(\@now, \@pids, 'the two first ones were left alone');

$load = $s->start_load('roll');
sleep 0.3;
$r = $s->apply({ %$spec2, replicas => 1 }, name => 'roll', code => $code);
is($r->{status}, 200, 'replicas 3 -> 1: 200');
$run = $s->wait_ready('roll', 1, only => 1);
ok($run, 'one replica left') or diag explain $s->last_run;
is($run->{replicas}[0]{num}, 0, 'replica 0 stays') if $run;
sleep 0.3;
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], 'no failed request while scaling down')
    or diag explain $res;
like($s->log_text, qr/replica 2 v2 draining/, 'the removed replicas drained');

# ---- new code rolls out --------------------------------------------------------------

my $code2 = $s->upload($s->app_files({ 'v.txt' => "second\n" }));
$r = $s->api('POST', '/api/runs/plan', json => { name => 'roll',
    spec => { %$spec2, replicas => 1 }, code => $code2 });
is_deeply([map { $_->{field} } @{ $r->{json}{changes} }], ['code'],
    'plan: the code changes');
$r = $s->apply({ %$spec2, replicas => 1 }, name => 'roll', code => $code2);
is($r->{json}{version}, 3, 'new code: version 3');
ok($s->wait_run('roll', sub {
    my @v = grep { $_->{ready} } @{ $_[0]{replicas} };
    return @v == 1 && $v[0]{version} == 3
        && @{ $_[0]{replicas} } == 1;
}, timeout => 20), 'rolled out');
is($s->get('roll', '/v.txt')->{status}, 200, 'the new code is served');

# ---- a new version that never starts: the rollout gives up ---------------------------

my $broken = { %$spec2, replicas => 1,
    commands => ['echo "no such model" >&2', 'exit 3'] };
$r = $s->apply($broken, name => 'roll', code => $code2);
is($r->{json}{version}, 4, 'a broken update: version 4');
$load = $s->start_load('roll');
ok($s->wait_run('roll', sub { ($_[0]{rollout} || {})->{failed} },
    timeout => 40), 'the rollout gives up after max_failures failures')
    or diag explain $s->last_run;
$run = $s->last_run;
like($run->{message}, qr/^version 4 failed to start, version 3 keeps serving: replica 0 failed 3 times in a row \(see: dstackctl logs roll --replica 0\): exited with status 3/,
    'the run says which version failed, why, and what serves')
    or diag $run->{message};
is($run->{status}, 'running', 'the run is still running');
is($s->get('roll', '/v.txt')->{status}, 200, 'version 3 still serves');
sleep 1.5;
is(scalar(grep { $_->{version} == 4 && $_->{status} !~ /terminated|aborted/ }
    @{ $s->run('roll')->{replicas} }), 0,
    'no replica of version 4 is started again');
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], 'no failed request meanwhile')
    or diag explain $res;

# fixed: the next apply rolls out
$r = $s->apply({ %$spec2, replicas => 1, env => { GREETING => 'five' } },
    name => 'roll', code => $code2);
is($r->{json}{version}, 5, 'fixed: version 5');
ok($s->wait_run('roll', sub {
    my @v = grep { $_->{ready} } @{ $_[0]{replicas} };
    return @v == 1 && $v[0]{version} == 5 && !$_[0]{rollout};
}, timeout => 20), 'version 5 rolls out') or diag explain $s->last_run;

$s->finish;
$t->done;
