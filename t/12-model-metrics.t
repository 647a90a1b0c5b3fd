#!/usr/bin/perl
# Metrics per model on the OpenAI endpoint: requests, errors, time to the
# answer's header, and the token counts the replica reports in "usage",
# read as the answer streams by (plain JSON and SSE with include_usage).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use Test::More;
use File::Temp qw(tempfile);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $JSON = $DsTest::JSON;
my $t = DsTest->new(workers => 2);
my $GW = 'gateway.' . $t->domain;
DsOpenAI::add_gateway($t);
my $addr = DsOpenAI::server($t, name => 'srv-m');

$t->seed([
    { op => 'service', name => 'm', auth => DsTest::false,
      model => 'metered' },
    { op => 'replicas', service => 'm',
      replicas => [{ addr => $addr, state => 'ready' }] },
]);
$t->start;

sub chat {
    my (%o) = @_;
    my $body = { model => 'metered', max_tokens => $o{n} // 3,
                 messages => [{ role => 'user',
                                content => $o{content} // 'one two three' }] };
    if ($o{stream}) {
        $body->{stream} = JSON::PP::true;
        $body->{stream_options} = { include_usage => JSON::PP::true };
    }
    return $t->request('POST', '/v1/chat/completions', host => $GW,
        headers => { 'Content-Type' => 'application/json',
                     %{ $o{headers} // {} } },
        body => $JSON->encode($body), timeout => 20);
}

my ($prompt, $completion) = (0, 0);

my $r = chat(n => 3, headers => { 'X-Test-Header-Delay-Ms' => 300 });
is($r->{status}, 200, 'a chat completion');
my $u = $r->{json}{usage};
ok($u && $u->{prompt_tokens} && $u->{completion_tokens},
    'the replica reports usage') or diag $r->{body};
$prompt += $u->{prompt_tokens};
$completion += $u->{completion_tokens};

$r = chat(n => 5, stream => 1, content => 'a b c d e f g');
is($r->{status}, 200, 'a streamed chat completion');
my ($last) = grep { /"usage"\s*:\s*\{/ } split /\n\n/, $r->{body};
ok($last, 'the stream carries a usage chunk') or diag $r->{body};
my ($json) = ($last // '') =~ /^data: (.*)$/m;
my $su = eval { $JSON->decode($json)->{usage} } // {};
$prompt += $su->{prompt_tokens} // 0;
$completion += $su->{completion_tokens} // 0;

$r = chat(headers => { 'X-Test-Status' => 500 });
is($r->{status}, 500, 'a failing completion');

$r = $t->request('POST', '/v1/chat/completions', host => $GW,
    body => '{"model":"nope"}');
is($r->{status}, 404, 'an unknown model is no request of a model');

my $m;
ok(DsTest::wait_until(sub {
    $m = ($t->service_stats('m') // {})->{model} // {};
    ($m->{requests} // 0) >= 3 }), 'model requests counted');
is($m->{requests}, 3, 'three requests reached the model');
is($m->{errors}, 1, 'one of them failed');
is($m->{prompt_tokens}, $prompt, "prompt tokens add up ($prompt)");
is($m->{completion_tokens}, $completion,
    "completion tokens add up ($completion)");
cmp_ok($m->{ttfb_ms_sum}, '>=', 300,
    'time to the header is summed (one answer waited 300 ms)');
cmp_ok($m->{ttfb_ms_sum}, '<', 5000, '... and only the wait is counted');

my $text = $t->metrics;
like($text, qr/^dstack_model_tokens_total\{service="m",type="prompt"\} $prompt$/m,
    'Prometheus: prompt tokens');
like($text, qr/^dstack_model_requests_total\{service="m"\} 3$/m,
    'Prometheus: model requests');
SKIP: {
    skip 'promtool not installed', 1 unless `which promtool 2>/dev/null`;
    my ($fh, $file) = tempfile();
    print $fh $text;
    close $fh;
    my $out = `promtool check metrics < $file 2>&1`;
    is($?, 0, 'promtool accepts the metrics') or diag $out;
    unlink $file;
}

$t->done;
