#!/usr/bin/perl
# Failures: a replica killed with -9 is replaced while the other keeps
# serving (a client loop that retries a refused connection sees no
# failure); a replica whose process exits is restarted with backoff; a
# run whose every replica keeps failing fails, with the reason; probes
# from the spec gate readiness; a setup error (bad archive) is reported.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t, extra => <<'EOF');
backends:
  local:
    max_failures: 3
    stop_grace: 2s
EOF
$s->start_controld;
$t->start;
$s->need_netns;

my $code = $s->upload($s->app_files);

# ---- kill -9 of a replica ----------------------------------------------------

my $r = $s->apply($s->app_spec(replicas => 2), name => 'svc', code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};
my $run = $s->wait_ready('svc', 2);
ok($run, 'two replicas ready') or diag explain $s->last_run;

my $load = $s->start_load('svc', retries => 3);
sleep 0.5;
my ($victim) = grep { $_->{num} == 0 } @{ $run->{replicas} };
ok(kill('KILL', -$victim->{pid}), "kill -9 of replica 0 (pid $victim->{pid})");

my $new = $s->wait_run('svc', sub {
    my $x = shift;
    my ($r0) = grep { $_->{num} == 0 } @{ $x->{replicas} };
    return $r0 && $r0->{ready} && $r0->{pid} != $victim->{pid};
}, timeout => 15);
ok($new, 'replica 0 is replaced and ready again')
    or diag explain $s->last_run;
my ($r0) = grep { $_->{num} == 0 } @{ $new->{replicas} || [] };
is($r0->{restarts}, 1, 'it counts one restart') if $r0;
is(scalar @{ $new->{replicas} }, 2, 'still two replicas, no duplicate')
    if $new;
sleep 0.5;
my $res = $s->stop_load($load);
ok($res->{total} > 50, "the loop ran ($res->{total} requests)");
is_deeply($res->{failed}, [], 'no request failed') or diag explain $res;
my %replicas = map { (split /:/)[0] => 1 } keys %{ $res->{seen} };
is_deeply([sort keys %replicas], [0, 1], 'both replicas served it');
like($s->log_text, qr/replica 0 v1 failed: killed by signal 9/,
    'controld logs the failure');

# a replica that exits while serving
$r = $s->get('svc', '/exit?code=3');
is($r->{status}, 200, 'a replica exits on request');
$run = $s->wait_run('svc', sub {
    grep { $_->{message} =~ /exited with status 3/
           && $_->{exit_status} == 3 } @{ $_[0]{replicas} };
}, timeout => 5);
ok($run, 'its exit status is shown') or diag explain $s->last_run;
ok($s->wait_ready('svc', 2, timeout => 15), 'and it comes back');
is($s->get('svc', '/')->{status}, 200, 'serving');

$r = $s->stop('svc', abort => 1);
$s->wait_run('svc', sub { $_[0]{status} eq 'terminated' });

# ---- a replica that never works -----------------------------------------------

my $t0 = time;
$r = $s->apply($s->app_spec(env => { FAIL => '7' }), name => 'broken',
    code => $code);
is($r->{status}, 201, 'a failing app is accepted');
$run = $s->wait_run('broken', sub { $_[0]{status} eq 'failed' },
    timeout => 30);
ok($run, 'the run fails once no replica can run') or diag explain $s->last_run;
my $took = time - $t0;
cmp_ok($took, '>=', 2.5, sprintf('after restarts with backoff (%.1f s)',
    $took));
like($run->{message}, qr/failed 3 times in a row; replica 0: exited with status 7/,
    'the message says why') if $run;
is($run->{replicas}[0]{restarts}, 2, 'two restarts before giving up')
    if $run;
like($s->api('GET', '/api/runs/broken/logs')->{body},
    qr/failing on purpose/, 'its log has the output');
is($s->get('broken', '/')->{status}, 404, 'a failed run is not routed');

# ---- probes ---------------------------------------------------------------------

$r = $s->apply($s->app_spec(
    probes => [{ type => 'http', url => '/health', interval => '1s',
                 ready_after => 1 }],
    commands => ['touch unhealthy', 'exec python3 app.py 8000'],
), name => 'probed', code => $code);
is($r->{status}, 201, 'a run with an HTTP probe');
$run = $s->wait_run('probed', sub {
    $_[0]{replicas}[0] && $_[0]{replicas}[0]{status} eq 'running'
}, timeout => 10);
sleep 1.5;
$run = $s->run('probed');
is($run->{replicas}[0]{ready}, JSON::PP::false,
    'a replica whose probe fails is not ready');
is($run->{status}, 'provisioning', 'the run is provisioning');
is($s->get('probed', '/')->{status}, 503, 'the gateway has no replica yet');
unlink $s->workdir('probed', 0, 1) . '/unhealthy';
ok($s->wait_ready('probed', 1, timeout => 5), 'ready once the probe passes');
is($s->get('probed', '/')->{status}, 200, 'and routed');

# after ready, three failed probes take it out of routing
DsTest::_write($s->workdir('probed', 0, 1) . '/unhealthy', '');
$run = $s->wait_run('probed', sub { !$_[0]{replicas}[0]{ready} },
    timeout => 10);
ok($run, 'failing probes take a ready replica out') or diag explain $s->last_run;
like($run->{replicas}[0]{message}, qr/status 503/, 'saying why') if $run;
unlink $s->workdir('probed', 0, 1) . '/unhealthy';
ok($s->wait_ready('probed', 1, timeout => 5), 'and back in when they pass');

# ---- max_duration ---------------------------------------------------------------

$r = $s->apply($s->app_spec(max_duration => '3s'), name => 'brief',
    code => $code);
is($r->{status}, 201, 'a run with max_duration 3s');
$run = $s->wait_run('brief', sub { $_[0]{status} eq 'terminated' },
    timeout => 20);
ok($run, 'it is stopped once max_duration passed')
    or diag explain $s->last_run;
like($run->{message}, qr/^max_duration \(3s\) reached$/, 'saying so')
    if $run;

# ---- setup errors -------------------------------------------------------------------

$r = $s->apply($s->app_spec(working_dir => 'sub/dir',
    commands => ['pwd', 'exec python3 ../../app.py 8000']),
    name => 'wd', code => $code);
ok($s->wait_ready('wd', 1), 'working_dir is made and used');
like($s->api('GET', '/api/runs/wd/logs')->{body}, qr{/wd/0-1/sub/dir$}m,
    'the commands ran there');

$s->finish;
$t->done;
