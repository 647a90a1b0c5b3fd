#!/usr/bin/perl
# metric: ttft (our extension), end to end: a model service whose
# replicas (t/lib/openai_server.py) stream their first token 400 ms after
# the request; with target 0.2 (seconds of p99 time to first token) the
# autoscaler takes it from 1 replica to its maximum, 2, and says why.
# And what the spec refuses.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsOpenAI;
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $JSON = $DsTest::JSON;
my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
DsOpenAI::add_gateway($t);
$s->start_controld;
$t->start;
$s->need_netns;
my $GW = 'gateway.' . $t->domain;

my $server = DsTest::_slurp("$DsTest::REPO/t/lib/openai_server.py");
my $code = $s->upload($s->app_files({ 'openai_server.py' => $server }));

sub spec {
    my (%scaling) = @_;
    my $spec = $s->app_spec(model => 'slow', replicas => '1..2', probes => [],
        scaling => { metric => 'ttft', target => 0.2, window => '30s',
                     scale_up_delay => '1s', scale_down_delay => '10m',
                     %scaling });
    $spec->{commands} = ["exec python3 openai_server.py --name "
        . "r\$DSTACK_REPLICA_NUM --host 0.0.0.0 --port $spec->{port} "
        . "--prefix /v1"];
    return $spec;
}

# what the spec refuses, and says why
my $r = $s->apply(spec(metric => 'latency'), name => 'bad', code => $code);
is($r->{status}, 400, 'an unknown metric is refused');
like($r->{body}, qr/metric.*ttft/, '... naming the metrics there are')
    or diag $r->{body};
$r = $s->apply(spec(target => 0), name => 'bad', code => $code);
is($r->{status}, 400, 'metric ttft: a target of 0 is refused');
like($r->{body}, qr/target/, '... naming the target') or diag $r->{body};
my $plain = spec();
delete $plain->{model};
$r = $s->apply($plain, name => 'bad', code => $code);
is($r->{status}, 400, 'metric ttft without a model is refused');
like($r->{body}, qr/scaling\.metric: metric ttft requires \\?"model\\?"/,
    '... saying it needs the model endpoint') or diag $r->{body};
is($s->api('GET', '/api/runs/bad')->{status}, 404, 'and nothing was made');

$r = $s->apply(spec(), name => 'slow', code => $code);
is($r->{status}, 201, 'metric ttft: 201') or diag $r->{body};
ok($s->wait_ready('slow', 1, timeout => 60), 'one replica ready')
    or diag explain $s->last_run;
is($s->run('slow')->{scaling}{metric}, 'ttft', 'the view says metric ttft');

my $t0 = time;
for my $i (1 .. 3) {
    my $body = { model => 'slow', max_tokens => 3, stream => JSON::PP::true,
                 messages => [{ role => 'user', content => 'hi' }] };
    $r = $t->request('POST', '/v1/chat/completions', host => $GW,
        headers => { 'Content-Type' => 'application/json',
                     'X-Test-First-Ms' => 400, 'X-Test-Delay-Ms' => 10 },
        body => $JSON->encode($body), timeout => 20);
    is($r->{status}, 200, "slow answer $i") or diag $r->{body};
}

my $up = $s->wait_run('slow', sub { $_[0]{desired} == 2 }, timeout => 20,
    interval => 0.2);
ok($up, sprintf('p99 TTFT over the target: desired 2 after %.1f s',
    time - $t0)) or diag explain $s->last_run;
my $sc = $up ? $up->{scaling} : {};
cmp_ok(abs(($sc->{value} // 0) - 0.4), '<', 0.05,
    "value: p99 TTFT in seconds ($sc->{value})");
like($sc->{reason} // '',
    qr/^ttft p99 0\.4\d\ds over 30s \(\d+ answers\) \/ target 0\.2s: (?x)
       over\ the\ target\ ->\ [2-9]/,
    'why: p99 time to first token against the target') or diag explain $sc;
ok($s->wait_ready('slow', 2, timeout => 60), 'the second replica is ready')
    or diag explain $s->last_run;

$s->finish;
$t->done;
