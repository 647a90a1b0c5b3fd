#!/usr/bin/perl
# Latency per model and per replica on the OpenAI endpoint: time to the
# first byte of the answer's body (TTFT) and time per output token
# (TPOT), against replicas that stream at a set pace, as p50/p99 over
# the stats' windows and as Prometheus histograms.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $JSON = $DsTest::JSON;
my $t = DsTest->new(workers => 2);
my $GW = 'gateway.' . $t->domain;
DsOpenAI::add_gateway($t);
my $a1 = DsOpenAI::server($t, name => 'srv-l1');
my $a2 = DsOpenAI::server($t, name => 'srv-l2');
my $a3 = DsOpenAI::server($t, name => 'srv-l3');

$t->seed([
    { op => 'service', name => 'paced', auth => DsTest::false,
      model => 'paced' },
    { op => 'replicas', service => 'paced',
      replicas => [{ addr => $a1, state => 'ready' },
                   { addr => $a2, state => 'ready' }] },
    { op => 'service', name => 'plain', auth => DsTest::false,
      model => 'plain' },
    { op => 'replicas', service => 'plain',
      replicas => [{ addr => $a3, state => 'ready' }] },
]);
$t->start;

my ($FIRST, $PACE, $N, $STREAMS) = (150, 20, 8, 6);

sub chat {
    my ($model, %o) = @_;
    my $body = { model => $model, max_tokens => $N,
                 messages => [{ role => 'user', content => 'count' }] };
    if ($o{stream}) {
        $body->{stream} = JSON::PP::true;
        $body->{stream_options} = { include_usage => JSON::PP::true };
    }
    return $t->request('POST', '/v1/chat/completions', host => $GW,
        headers => { 'Content-Type' => 'application/json',
                     %{ $o{headers} // {} } },
        body => $JSON->encode($body), timeout => 20);
}

# one at a time: least in-flight ties go round (in each worker)
for my $i (1 .. $STREAMS) {
    my $r = chat('paced', stream => 1,
        headers => { 'X-Test-First-Ms' => $FIRST,
                     'X-Test-Delay-Ms' => $PACE });
    is($r->{status}, 200, "stream $i answered") or diag $r->{body};
}
for my $i (1 .. 3) {
    my $r = chat('plain', headers => { 'X-Test-Header-Delay-Ms' => 100 });
    is($r->{status}, 200, "plain answer $i");
}

my ($s, $p);
ok(DsTest::wait_until(sub {
    $s = $t->service_stats('paced') // {};
    my $n = ((($s->{model} // {})->{tpot_ms} // {})->{30} // {})->{n};
    ($n // 0) >= $STREAMS }), 'the streams are counted');

my $m = $s->{model};
for my $w (qw(30 60 300)) {
    is($m->{ttft_ms}{$w}{n}, $STREAMS, "TTFT: $STREAMS answers in ${w}s");
    is($m->{tpot_ms}{$w}{n}, $STREAMS, "TPOT: $STREAMS answers in ${w}s");
}
my $ttft = $m->{ttft_ms}{30};
my $tpot = $m->{tpot_ms}{30};
cmp_ok(abs($ttft->{p50} - $FIRST), '<=', 15,
    "service TTFT p50 $ttft->{p50} ms is the first token's $FIRST ms");
cmp_ok($ttft->{p99}, '>=', $ttft->{p50}, 'TTFT p99 is no less than p50');
cmp_ok($ttft->{p99} - $FIRST, '<=', 30, "TTFT p99 $ttft->{p99} ms");
cmp_ok(abs($tpot->{p50} - $PACE), '<=', 3,
    "service TPOT p50 $tpot->{p50} ms is the pace, $PACE ms");
cmp_ok(abs($tpot->{p99} - $PACE), '<=', 5, "TPOT p99 $tpot->{p99} ms");

my $sum = 0;
for my $rep (@{ $s->{replicas} }) {
    my ($rt, $rp) = ($rep->{ttft_ms}{300}, $rep->{tpot_ms}{300});
    cmp_ok($rt->{n}, '>=', 1, "replica $rep->{addr}: $rt->{n} answers");
    is($rp->{n}, $rt->{n}, "replica $rep->{addr}: a TPOT each");
    cmp_ok(abs($rt->{p50} - $FIRST), '<=', 15,
        "replica $rep->{addr}: TTFT p50 $rt->{p50} ms");
    cmp_ok(abs($rp->{p50} - $PACE), '<=', 3,
        "replica $rep->{addr}: TPOT p50 $rp->{p50} ms");
    $sum += $rt->{n};
}
is($sum, $STREAMS, 'the replicas add up to the service');

# a plain answer: TTFT is its body's first byte, no TPOT
$p = $t->service_stats('plain') // {};
my $pt = $p->{model}{ttft_ms}{30};
is($pt->{n}, 3, 'plain answers are counted in TTFT');
cmp_ok(abs($pt->{p50} - 100), '<=', 15,
    "plain TTFT p50 $pt->{p50} ms is the answer's 100 ms");
is($p->{model}{tpot_ms}{30}{n}, 0, 'a plain answer has no TPOT');

# errors are not latency
my $r = chat('plain', headers => { 'X-Test-Status' => 500 });
is($r->{status}, 500, 'a failing answer');
DsTest::wait_until(sub {
    ((($t->service_stats('plain') // {})->{model} // {})->{errors} // 0) });
is($t->service_stats('plain')->{model}{ttft_ms}{30}{n}, 3,
    'a failing answer has no TTFT');

my $text = $t->metrics;
for my $h (qw(ttft tpot)) {
    my ($inf) = $text =~ /^dstack_model_${h}_seconds_bucket\{service="paced",le="\+Inf"\} (\d+)$/m;
    is($inf, $STREAMS, "Prometheus: $h histogram of the service counts all");
    my ($cnt) = $text =~ /^dstack_model_${h}_seconds_count\{service="paced"\} (\d+)$/m;
    is($cnt, $STREAMS, "Prometheus: $h count");
    my @reps = $text =~ /^dstack_model_${h}_seconds_count\{service="paced",replica="[^"]+"\} (\d+)$/mg;
    my $rs = 0;
    $rs += $_ for @reps;
    is(scalar @reps, 2, "Prometheus: $h of each replica");
    is($rs, $STREAMS, "Prometheus: the replicas' $h counts add up");
}
my ($le) = $text =~ /^dstack_model_ttft_seconds_bucket\{service="paced",le="0.1"\} (\d+)$/m;
is($le, 0, 'Prometheus: no TTFT under 100 ms');
($le) = $text =~ /^dstack_model_ttft_seconds_bucket\{service="paced",le="0.25"\} (\d+)$/m;
is($le, $STREAMS, 'Prometheus: all TTFTs under 250 ms');

$t->done;
