#!/usr/bin/perl
# What the web console reads and does (controld/API.md, "series" and
# "scale"), against real controld, nginx with the module and replicas.
#
# Series: a load through the gateway shows in GET .../series as 2xx per
# second in the seconds it ran (no gap), none after, summed over the
# window within a few of the requests sent, with a latency; slow requests
# show in flight; ?since= gives only newer seconds; nginx stopped is
# "stats":"missing" and its seconds null.  Scale: a fixed-count run 2 ->
# 3 starts a replica of the same version (no new version), 3 -> 1 drains
# two while a load runs without a failure, a controld restart keeps 1;
# a run with scaling is 409, bad bodies 400 naming replicas, a finished
# run 409, a project user 403 on another's run; scales are audited.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use List::Util qw(sum0 max);
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack(netns => 1);
my $code = $s->upload($s->app_files);

sub series {
    my ($name, $query) = @_;
    return $s->api('GET', "/api/runs/$name/series" . ($query // ''));
}

# the sample of each second: { t => { c2xx, lat, inflight, ... } }
sub by_second {
    my $x = shift;
    my %at;
    for my $i (0 .. $x->{end} - $x->{start}) {
        $at{ $x->{start} + $i } = {
            map({ ("c$_" => $x->{requests}{$_}[$i]) }
                qw(1xx 2xx 3xx 4xx 5xx refused)),
            lat => $x->{latency_ms}[$i],
            inflight => $x->{inflight}[$i],
            held => $x->{held}[$i],
        };
    }
    return \%at;
}

# ---- series -----------------------------------------------------------------

my $r = $s->apply($s->app_spec(replicas => 1), name => 'web', code => $code);
is($r->{status}, 201, 'a service of one replica') or diag $r->{body};
is($r->{json}{scalable}, JSON::PP::true, 'R: a fixed count is scalable');
ok($s->wait_ready('web', 1, timeout => 60), 'ready')
    or diag explain $s->last_run;

# the gateway's first answer only sets where counting starts: the load
# comes after it
ok(DsTest::wait_until(sub { series('web')->{json}{stats} eq 'ok' },
    timeout => 10), 'the gateway answers');
$r = series('web');
is($r->{status}, 200, 'GET .../series') or diag $r->{body};
my $x = $r->{json};
is($x->{name}, 'web', 'it names the run');
is($x->{step}, 1, 'step 1');
is($x->{end} - $x->{start} + 1, 300, 'without since: 300 seconds');
is(scalar @{ $x->{requests}{$_} }, 300, "300 values of $_")
    for qw(1xx 2xx 3xx 4xx 5xx refused);
is(scalar @{ $x->{$_} }, 300, "300 values of $_")
    for qw(latency_ms inflight held);
is($x->{stats}, 'ok', 'stats ok');
ok(abs($x->{end} - time) <= 2, 'it ends at the newest second');
is($x->{totals}{requests}{'2xx'}, 0, 'no request yet');
is($x->{totals}{cold_start_ms_avg}, undef, 'no cold start: null average');

$r = series('nosuch');
is($r->{status}, 404, 'an unknown run: 404');
$r = series('web', '?since=abc');
is($r->{status}, 400, 'since not a number: 400');
like($r->{json}{error}{message} // '', qr/^since: /, '... naming since');
$r = series('web', '?since=-5');
is($r->{status}, 400, 'a negative since: 400');

# a load of about 4 s, counted second by second (DsTest's load: each
# client ends after the answer it waits for, none is cut)
my $t0 = time;
my $load = $t->start_load(clients => 2, host => 'web.' . $t->domain,
    pause => 0.02);
sleep 4;
my $lt = $t->stop_load($load);
my $t1 = time;
ok($lt->{ok} > 40, "the load had $lt->{ok} answers");
is_deeply($lt->{errors}, [], 'none failed');
ok(DsTest::wait_until(sub { series('web')->{json}{end} >= int($t1) + 3 },
    timeout => 6, interval => 0.2), 'seconds after it are in');

$x = series('web')->{json};
my $at = by_second($x);
my $sum = sum0(map { $_ // 0 } @{ $x->{requests}{'2xx'} });
ok(abs($sum - $lt->{ok}) <= 3, "2xx over the window: $sum, sent $lt->{ok}");
my @during = grep { $_ > $t0 + 1 && $_ < $t1 - 1 } sort keys %$at;
ok(@during >= 2, scalar(@during) . ' whole seconds of load');
my @empty = grep { !$at->{$_}{c2xx} } @during;
is_deeply(\@empty, [], 'every second of the load has 2xx > 0')
    or diag explain [ map { "$_: " . ($at->{$_}{c2xx} // 'null') } @during ];
my @nolat = grep { !defined $at->{$_}{lat} } @during;
is_deeply(\@nolat, [], '... and a latency');
ok(!grep({ $at->{$_}{lat} > 1000 } @during), '... in milliseconds');
my @after = grep { $_ > $t1 + 2 && $_ <= $x->{end} } sort keys %$at;
ok(@after >= 1, 'seconds after the load');
is(sum0(map { $at->{$_}{c2xx} // 0 } @after), 0, 'no 2xx after it');
my @early = grep { $_ < $t0 - 1 && ($at->{$_}{c2xx} // 0) > 0 } keys %$at;
is_deeply(\@early, [], 'nor before it');
is(sum0(map { $x->{requests}{$_} ? sum0(map { $_ // 0 }
    @{ $x->{requests}{$_} }) : 0 } qw(1xx 3xx 4xx 5xx refused)), 0,
    'no other class');
is($x->{totals}{requests}{'2xx'}, $sum, 'totals: the 2xx counted');

# since: only newer seconds
my $end = $x->{end};
$r = series('web', '?since=' . ($end - 5));
is($r->{status}, 200, 'since=end-5');
is($r->{json}{start}, $end - 4, 'starts at since + 1');
is(scalar @{ $r->{json}{requests}{'2xx'} },
    $r->{json}{end} - $r->{json}{start} + 1, 'one value per second');
ok(scalar @{ $r->{json}{latency_ms} } <= 8, 'only the newer seconds');
$r = series('web', '?since=4000000000');
is($r->{json}{start}, $r->{json}{end} + 1, 'nothing newer: start = end + 1');
is_deeply($r->{json}{requests}{'2xx'}, [], '... and empty arrays');
$r = series('web', '?since=1');
is($r->{json}{end} - $r->{json}{start} + 1, 300,
    'an old since: the window kept');

# slow requests in flight
my $slow_t0 = int(time) - 1;
my @slow;
for (1 .. 3) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $res = $s->get('web', '/slow?ms=3000', timeout => 10);
        POSIX::_exit($res->{status} == 200 ? 0 : 1);
    }
    push @slow, $pid;
}
my $peak = 0;
DsTest::wait_until(sub {
    my $y = series('web', '?since=' . int(time - 3))->{json};
    $peak = max($peak, map { $_ // 0 } @{ $y->{inflight} || [] });
    return $peak >= 3;
}, timeout => 5, interval => 0.3);
is($peak, 3, 'three slow requests in flight');
my $slow_ok = 0;
for (@slow) { waitpid($_, 0); $slow_ok++ if $? == 0 }
is($slow_ok, 3, 'they were answered');
sleep 2.5;
$x = series('web', '?since=' . int(time - 2))->{json};
ok(@{ $x->{inflight} } && !grep({ $_ } @{ $x->{inflight} }),
    'none in flight after');
$x = series('web', "?since=$slow_t0")->{json};
ok(grep({ defined $_ } @{ $x->{latency_ms} })
    && max(map { $_ // 0 } @{ $x->{latency_ms} }) >= 2900,
    'their latency is about 3 s') or diag explain $x->{latency_ms};

# no stats: missing, and null seconds
$t->stop;
my $stopped = time;
ok(DsTest::wait_until(sub { series('web')->{json}{stats} eq 'missing' },
    timeout => 5), 'nginx stopped: stats missing');
sleep 2;
$x = series('web')->{json};
ok($x->{end} <= $stopped + 1, 'the arrays end at the last second seen');
$t->start;
ok(DsTest::wait_until(sub { series('web')->{json}{stats} eq 'ok' },
    timeout => 5), 'nginx again: stats ok');
sleep 1.5;
$x = series('web')->{json};
$at = by_second($x);
my @gap = grep { !defined $at->{$_}{c2xx} } sort keys %$at;
ok(@gap >= 2 && !grep({ defined $at->{$_}{inflight}
    || defined $at->{$_}{lat} } @gap), scalar(@gap) . ' seconds without '
    . 'an answer: null everywhere');
ok((grep { $_ > $stopped && $_ < time - 0.5 } @gap),
    '... the seconds nginx was stopped');
ok(defined $at->{ $x->{end} }{c2xx}, 'the newest second has values');

# ---- scale ------------------------------------------------------------------

$r = $s->apply($s->app_spec(replicas => 2), name => 'fix', code => $code);
is($r->{status}, 201, 'a service of two replicas') or diag $r->{body};
ok($s->wait_ready('fix', 2, timeout => 60), 'two ready')
    or diag explain $s->last_run;
my $version = $s->run('fix')->{version};

# scale(NAME, BODY, %o): query => '?project=...', token => ...
sub scale {
    my ($name, $body, %o) = @_;
    my $q = delete $o{query} // '';
    return $s->api('POST', "/api/runs/$name/scale$q", json => $body, %o);
}

$r = scale('fix', { replicas => 3 });
is($r->{status}, 200, 'scale 2 -> 3') or diag $r->{body};
is($r->{json}{desired}, 3, 'R: desired 3');
is($r->{json}{version}, $version, 'no new version');
my $run = $s->wait_ready('fix', 3, timeout => 60);
ok($run, 'three ready') or diag explain $s->last_run;
is(join(',', sort map { "$_->{num}:v$_->{version}" }
    grep { $_->{ready} } @{ $run->{replicas} || [] }),
    "0:v$version,1:v$version,2:v$version",
    'the new replica is 2, of the same version');
is($run->{version}, $version, 'the run keeps its version');

$load = $s->start_load('fix', interval => 0.01);
sleep 1;
$r = scale('fix', { replicas => 1 });
is($r->{status}, 200, 'scale 3 -> 1') or diag $r->{body};
$run = $s->wait_run('fix', sub {
    1 == grep { $_->{status} ne 'terminated' } @{ $_[0]{replicas} };
}, timeout => 60);
ok($run, 'one replica left') or diag explain $s->last_run;
sleep 0.5;
$lt = $s->stop_load($load);
ok($lt->{total} > 50, "a load ran meanwhile ($lt->{total} requests)");
is_deeply($lt->{failed}, [], 'not one failed');
like($s->log_text, qr/run "fix": replica 2 v\d+ draining/, 'replica 2 drained');
like($s->log_text, qr/run "fix": replica 1 v\d+ draining/, 'replica 1 drained');
like($s->log_text, qr/run "fix": scaled 3 -> 1 replicas? by user "admin"/,
    'controld logged who scaled');
is(join(',', map { $_->{num} } grep { $_->{ready} } @{ $run->{replicas} }),
    '0', 'replica 0 serves');

# a restart keeps the count
$s->stop_controld;
$s->start_controld;
sleep 2;
$run = $s->run('fix');
is($run->{desired}, 1, 'after a restart: desired 1');
is(scalar(grep { $_->{status} ne 'terminated' } @{ $run->{replicas} }), 1,
    '... and one replica');
is($run->{version}, $version, '... of the same version');

# the same count again: 200, nothing changes
$r = scale('fix', { replicas => 1 });
is($r->{status}, 200, 'the count it has: 200');

# bad bodies: 400 naming replicas, nothing changes
for my $bad (
    [ {}, qr/^replicas: required/, 'no replicas' ],
    [ { replicas => '2' }, qr/^replicas: expected a whole number/, 'a string' ],
    [ { replicas => 1.5 }, qr/^replicas: expected a whole number/, 'not whole' ],
    [ { replicas => 0 }, qr/^replicas: expected a whole number from 1/,
      '0 (not a spec\'s replicas either)' ],
    [ { replicas => 65536 }, qr/^replicas: .* to 65535/, 'too many' ],
    [ { replicas => 2, extra => 1 }, qr/^unknown field "extra"/,
      'an unknown field' ],
) {
    $r = scale('fix', $bad->[0]);
    is($r->{status}, 400, "400: $bad->[2]");
    like($r->{json}{error}{message} // '', $bad->[1], '... says why')
        or diag $r->{body};
}
$r = $s->api('POST', '/api/runs/fix/scale');
is($r->{status}, 400, '400: no body');
like($r->{json}{error}{message} // '', qr/^replicas: required/,
    '... names replicas');
is($s->run('fix')->{desired}, 1, 'still desired 1');
is(scale('nosuch', { replicas => 2 })->{status}, 404, 'an unknown run: 404');
is($s->api('GET', '/api/runs/fix/scale')->{status}, 405, 'GET: 405');

# with scaling: the autoscaler's
$r = $s->apply($s->app_spec(replicas => '0..4',
    scaling => { metric => 'rps', target => 10 }), name => 'auto',
    code => $code);
is($r->{status}, 201, 'a service with scaling') or diag $r->{body};
is($r->{json}{scalable}, JSON::PP::false, 'R: not scalable');
$r = scale('auto', { replicas => 2 });
is($r->{status}, 409, 'scale a run with scaling: 409');
is($r->{json}{error}{message}, 'run "auto" scales itself (scaling: rps, '
    . 'replicas 0..4); change replicas in its file and apply',
    '... and why');
is($s->run('auto')->{desired}, 0, 'nothing changed');

# finished
$s->stop('auto');
ok($s->wait_run('auto', sub { $_[0]{status} eq 'terminated' }),
    'auto terminated');
is($s->run('auto')->{scalable}, JSON::PP::false, 'R: a finished run is not '
    . 'scalable');
$r = scale('auto', { replicas => 1 });
is($r->{status}, 409, 'scale a finished run: 409');
like($r->{json}{error}{message} // '', qr/^run "auto" has finished/,
    '... and why');

# a project user and another's run
my %tok;
for my $u (qw(bob carol)) {
    $r = $s->api('POST', '/api/users', json => { name => $u });
    is($r->{status}, 201, "user $u") or diag $r->{body};
    $tok{$u} = $r->{json}{token};
}
is($s->api('POST', '/api/projects', json => { name => 'team' })->{status},
    201, 'project team');
for my $u (qw(bob carol)) {
    is($s->api('POST', '/api/projects/team/members',
        json => { user => $u, role => 'user' })->{status}, 200,
        "$u is a user of team");
}
$r = $s->api('POST', '/api/runs/apply?project=team', token => $tok{bob},
    json => { spec => $s->app_spec(replicas => 1), name => 'brun',
              code => $code });
is($r->{status}, 201, "bob's run in team") or diag $r->{body};
$r = scale('brun', { replicas => 2 }, query => '?project=team',
    token => $tok{carol});
is($r->{status}, 403, "carol scales bob's run: 403");
like($r->{json}{error}{message} // '',
    qr/run "brun" is user "bob"'s; role user manages only its own runs/,
    '... as for a stop');
is(series('brun')->{status}, 404, 'a run of another project: 404');
$r = $s->api('GET', '/api/runs/brun/series?project=team',
    token => $tok{carol});
is($r->{status}, 200, 'carol reads its series (any member)');
$r = scale('brun', { replicas => 1 }, query => '?project=team',
    token => $tok{bob});
is($r->{status}, 200, 'bob scales his own');

$r = $s->api('GET', '/api/audit?limit=50');
my @ev = grep { $_->{action} eq 'scale' } @{ $r->{json}{events} || [] };
is(join(',', map { "$_->{user}:$_->{object}:$_->{status}" } reverse @ev),
    'admin:fix:200,admin:fix:200,admin:fix:200,admin:auto:409,'
    . 'admin:auto:409,carol:brun:403,bob:brun:200',
    'the audit has every scale, refused ones too');

$s->finish;
$t->done;
