#!/usr/bin/perl
# Latency per model and per replica on the OpenAI endpoint: time to the
# first byte of the answer's body (TTFT) and time per output token
# (TPOT), against replicas that stream at a set pace, as p50/p99 over
# the stats' windows and as Prometheus histograms: each figure at the
# set pace and within a few ms of what the client saw of the same
# answers (the machine's load delays both alike).

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
    { op => 'service', name => 's-web', auth => DsTest::false },
    { op => 'replicas', service => 's-web',
      replicas => [{ addr => $a3, state => 'ready' }] },
]);
$t->start;

# the first token and the pace sit inside a bucket (150..250, 20..30 ms),
# so that what the machine's load adds moves no sample across a bound
my ($FIRST, $PACE, $N, $STREAMS) = (180, 25, 8, 6);

# the client's view of each answer, ms: the gateway's lies within it
# (admission comes after the client sent, the first byte reaches nginx
# before the client), and on a busy machine both see the replica late
my (@client_ttft, @client_tpot, @client_plain);
# the median: a p50 is the mean of its bucket, which leaves out the odd
# answer a busy machine delays into the next one
sub median {
    my @v = sort { $a <=> $b } @_;
    return 0 unless @v;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}
sub max { my $m = shift; $_ > $m and $m = $_ for @_; return $m }
sub min { my $m = shift; $_ < $m and $m = $_ for @_; return $m }

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
    my @c = @{ $r->{chunks} // [] };
    my ($usage) = grep { $_->{data} =~ /"usage": \{/ } @c;
    next unless @c && $usage;
    push @client_ttft, ($c[0]{t} - $r->{t_start}) * 1000;
    push @client_tpot, ($usage->{t} - $c[0]{t}) * 1000 / ($N - 1);
}
is(scalar @client_tpot, $STREAMS, 'the client timed each stream');
for my $i (1 .. 3) {
    my $r = chat('plain', headers => { 'X-Test-Header-Delay-Ms' => 100 });
    is($r->{status}, 200, "plain answer $i");
    push @client_plain, ($r->{t_end} - $r->{t_start}) * 1000;
}
my ($cttft, $ctpot, $cplain) =
    (median(@client_ttft), median(@client_tpot), median(@client_plain));
diag(sprintf('the client saw TTFT %.1f ms, TPOT %.1f ms, plain %.1f ms',
    $cttft, $ctpot, $cplain));

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
cmp_ok($ttft->{p50}, '>=', $FIRST,
    "service TTFT p50 $ttft->{p50} ms: the first token's $FIRST ms ...");
cmp_ok(abs($ttft->{p50} - $cttft), '<=', 15,
    sprintf('... within 15 ms of what the client saw (%.1f)', $cttft));
cmp_ok($ttft->{p99}, '>=', $ttft->{p50}, 'TTFT p99 is no less than p50');
cmp_ok($ttft->{p99}, '<=', max(@client_ttft) + 15,
    "TTFT p99 $ttft->{p99} ms: at most the client's slowest");
cmp_ok($tpot->{p50}, '>=', $PACE - 1,
    "service TPOT p50 $tpot->{p50} ms: the pace, $PACE ms ...");
cmp_ok(abs($tpot->{p50} - $ctpot), '<=', 3,
    sprintf('... within 3 ms of what the client saw (%.1f)', $ctpot));
cmp_ok($tpot->{p99}, '<=', max(@client_tpot) + 3,
    "TPOT p99 $tpot->{p99} ms: at most the client's slowest");

my $sum = 0;
for my $rep (@{ $s->{replicas} }) {
    my ($rt, $rp) = ($rep->{ttft_ms}{300}, $rep->{tpot_ms}{300});
    cmp_ok($rt->{n}, '>=', 1, "replica $rep->{addr}: $rt->{n} answers");
    is($rp->{n}, $rt->{n}, "replica $rep->{addr}: a TPOT each");
    # which stream went where the client does not know: within the
    # range it saw
    ok($rt->{p50} >= $FIRST && $rt->{p50} >= min(@client_ttft) - 15
        && $rt->{p50} <= max(@client_ttft) + 15,
        "replica $rep->{addr}: TTFT p50 $rt->{p50} ms");
    ok($rp->{p50} >= min(@client_tpot) - 3
        && $rp->{p50} <= max(@client_tpot) + 3,
        "replica $rep->{addr}: TPOT p50 $rp->{p50} ms");
    $sum += $rt->{n};
}
is($sum, $STREAMS, 'the replicas add up to the service');

# a plain answer: TTFT is its body's first byte, no TPOT
$p = $t->service_stats('plain') // {};
my $pt = $p->{model}{ttft_ms}{30};
is($pt->{n}, 3, 'plain answers are counted in TTFT');
cmp_ok($pt->{p50}, '>=', 100, "plain TTFT p50 $pt->{p50} ms: the "
    . "answer's 100 ms ...");
cmp_ok(abs($pt->{p50} - $cplain), '<=', 15,
    sprintf('... within 15 ms of what the client saw (%.1f)', $cplain));
is($p->{model}{tpot_ms}{30}{n}, 0, 'a plain answer has no TPOT');

# errors are not latency
my $r = chat('plain', headers => { 'X-Test-Status' => 500 });
is($r->{status}, 500, 'a failing answer');
DsTest::wait_until(sub {
    ((($t->service_stats('plain') // {})->{model} // {})->{errors} // 0) });
is($t->service_stats('plain')->{model}{ttft_ms}{30}{n}, 3,
    'a failing answer has no TTFT');

my $text = $t->metrics;
my $line = sub {
    my ($name, $labels) = @_;
    my ($v) = $text =~ /^\Q$name\E\{\Q$labels\E\} (\d+)$/m;
    return $v;
};
for my $h (qw(ttft tpot)) {
    my $f = "dstack_model_${h}_seconds";
    is($line->("${f}_bucket", 'service="paced",le="+Inf"'), $STREAMS,
        "Prometheus: $h histogram of the service counts all");
    is($line->("${f}_count", 'service="paced"'), $STREAMS,
        "Prometheus: $h count");
    my @reps = $text =~
        /^${f}_count\{service="paced",replica="[^"]+"\} (\d+)$/mg;
    my $rs = 0;
    $rs += $_ for @reps;
    is(scalar @reps, 2, "Prometheus: $h of each replica");
    is($rs, $STREAMS, "Prometheus: the replicas' $h counts add up");
}
is($line->('dstack_model_ttft_seconds_bucket', 'service="paced",le="0.15"'),
    0, 'Prometheus: no TTFT under 150 ms');
my $under = grep { $_ <= 250 } @client_ttft;
cmp_ok($line->('dstack_model_ttft_seconds_bucket',
               'service="paced",le="0.25"'), '>=', $under,
    "Prometheus: TTFTs under 250 ms, as many as the client saw ($under)");
unlike($text, qr/^dstack_model_ttft_seconds\w*\{service="s-/m,
    'no latency lines for a service without a model');
ok(!exists(($t->service_stats('s-web') // {})->{model}{ttft_ms}),
    '... nor latency in its JSON');
SKIP: {
    skip 'promtool not installed', 1 unless `which promtool 2>/dev/null`;
    my $file = $t->dir . '/metrics.txt';
    DsTest::_write($file, $text);
    my $out = `promtool check metrics < $file 2>&1`;
    is($?, 0, 'promtool accepts the histograms') or diag $out;
}

$t->done;
