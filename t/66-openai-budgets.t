#!/usr/bin/perl
# Token budgets of the model endpoint (model.budget, a token's budget):
# requests and tokens per minute and tokens per UTC day, per (token,
# model), refused before admission with OpenAI's 429 and x-ratelimit-*
# headers, exact across workers; settled with the answers' usage,
# streamed answers included (the gateway asks a stream for its usage and
# takes that event out of what the client gets when the client did not
# ask); a token's own limits over the model's; the anonymous caller of a
# model without auth; counters in the stats JSON and in Prometheus; the
# buckets survive a reload.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use POSIX qw(ceil);
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $JSON = $DsTest::JSON;
my $t = DsTest->new(workers => 2);
my $GW = 'gateway.' . $t->domain;
DsOpenAI::add_gateway($t);

my $addr = DsOpenAI::server($t, name => 'm1');
my @replicas = ({ addr => $addr, state => 'ready' });

my %tok = map { $_ => "dst_budget_test_$_" } qw(alice bob carol dave erin frank);

$t->seed([
    { op => 'service', name => 'rpm', model => 'rpm-model',
      budget => { rpm => 5 } },
    { op => 'service', name => 'tpm', model => 'tpm-model',
      budget => { tpm => 100, max_tokens => 7 } },
    { op => 'service', name => 'day', model => 'day-model',
      budget => { tpd => 100 } },
    { op => 'service', name => 'anon', model => 'anon-model',
      auth => DsTest::false, budget => { rpm => 2 } },
    { op => 'service', name => 'free', model => 'free-model' },
    (map { { op => 'replicas', service => $_, replicas => \@replicas } }
        qw(rpm tpm day anon free)),
    { op => 'token', token => $tok{alice}, name => 'alice', admin => DsTest::true },
    { op => 'token', token => $tok{bob}, name => 'bob', admin => DsTest::true,
      budget => { rpm => 'unlimited' } },
    { op => 'token', token => $tok{carol}, name => 'carol', admin => DsTest::true,
      budget => { rpm => 2 } },
    { op => 'token', token => $tok{dave}, name => 'dave', admin => DsTest::true },
    (map { { op => 'token', token => $tok{$_}, name => $_,
             admin => DsTest::true } } qw(erin frank)),
]);
$t->start;

sub body {
    my ($model, %o) = @_;
    return $JSON->encode({ model => $model,
        (defined $o{max_tokens} ? (max_tokens => $o{max_tokens}) : ()),
        ($o{stream} ? (stream => JSON::PP::true) : ()),
        ($o{options} ? (stream_options => $o{options}) : ()),
        messages => [{ role => 'user', content => $o{say} // 'hi there' }] });
}

sub chat_req {
    my ($who, $model, %o) = @_;
    return ['POST', '/v1/chat/completions', host => $GW,
        headers => { 'Content-Type' => 'application/json',
                     ($who ? (Authorization => "Bearer $tok{$who}") : ()),
                     %{ $o{headers} // {} } },
        body => body($model, %o), timeout => 20];
}

sub chat { my $q = chat_req(@_); return $t->request(@$q) }

# the estimate the gateway reserves: a token per 4 body bytes, and the
# request's max_tokens (or the model's)
sub estimate {
    my ($model, %o) = @_;
    return ceil(length(body($model, %o)) / 4) + $o{max_tokens};
}

sub entry {
    my ($token, $model) = @_;
    for (@{ $t->stats->{budgets} || [] }) {
        return $_ if $_->{token} eq $token && $_->{model} eq $model;
    }
    return undef;
}

sub statuses { join ' ', sort map { $_->{status} } @_ }

# ---- requests per minute, exact across workers ---------------------------------

my @r = $t->parallel([ map { chat_req('alice', 'rpm-model', max_tokens => 1,
    headers => { 'X-Test-Header-Delay-Ms' => 300 }) } 1 .. 8 ]);
is(statuses(@r), '200 200 200 200 200 429 429 429',
    'rpm 5: 8 at once across 2 workers, 5 pass') or diag explain \@r;
my @ok = grep { $_->{status} == 200 } @r;
my ($no) = grep { $_->{status} == 429 } @r;
is_deeply([ sort map { $_->{headers}{'x-ratelimit-remaining-requests'} } @ok ],
    [0, 1, 2, 3, 4], 'each success says how many requests are left');
is($_->{headers}{'x-ratelimit-limit-requests'}, 5, 'x-ratelimit-limit-requests')
    for $ok[0], $no;
like($ok[0]{headers}{'x-ratelimit-reset-requests'} // '', qr/^\d+(\.\d+)?m?s$|^\d+m\d+(\.\d+)?s$/,
    'x-ratelimit-reset-requests is a duration');
ok(!exists $ok[0]{headers}{'x-ratelimit-limit-tokens'},
    'no token limit, no token headers');
is($no->{json}{error}{type}, 'requests', '429: type requests');
is($no->{json}{error}{code}, 'rate_limit_exceeded', '429: OpenAI\'s code');
like($no->{json}{error}{message},
    qr/^Rate limit reached for rpm-model on requests per min \(RPM\): Limit 5, Used 5, Requested 1\. Please try again in \d+s\.$/,
    '429: the message says which limit, and when') or diag $no->{body};
cmp_ok($no->{headers}{'retry-after'} // 0, '>=', 1, '429: Retry-After');
cmp_ok($no->{headers}{'retry-after'} // 99, '<=', 12,
    'Retry-After: when one request has come back (60 s / 5)');
is($no->{headers}{'x-ratelimit-remaining-requests'}, 0,
    '429: remaining 0');

my $e = entry('alice', 'rpm-model');
is($e && $e->{requests}, 5, 'stats: 5 admitted');
is($e && $e->{refused}, 3, 'stats: 3 refused');
is($e && $e->{service}, 'rpm', 'stats: the service');

# the buckets are shared memory: a reload keeps them
$t->reload;
is(chat('alice', 'rpm-model', max_tokens => 1)->{status}, 429,
    'after a reload, still over the limit');

# a replica's own x-ratelimit-* headers give way to the gateway's
my $own = chat('erin', 'rpm-model', max_tokens => 1,
    headers => { 'X-Test-Ratelimit' => 1 });
is($own->{status}, 200, 'a replica that sends x-ratelimit-* of its own');
is($own->{headers}{'x-ratelimit-limit-requests'}, 5,
    '... the client sees the gateway\'s limit, once');
is($own->{headers}{'x-ratelimit-remaining-requests'}, 4,
    '... and its remaining count');

# a token's own limit over the model's: unlimited, or its own figure
@r = $t->parallel([ map { chat_req('bob', 'rpm-model', max_tokens => 1) }
    1 .. 7 ]);
is(statuses(@r), join(' ', ('200') x 7), 'bob (rpm unlimited): all pass');
ok(!exists $r[0]{headers}{'x-ratelimit-limit-requests'},
    'no limit, no headers');
@r = map { chat('carol', 'free-model', max_tokens => 1) } 1 .. 3;
is(join(' ', map { $_->{status} } @r), '200 200 429',
    'carol (rpm 2) on a model without a budget: her own applies');
is(chat('dave', 'free-model', max_tokens => 1)->{status}, 200,
    'dave on that model: no budget at all');
ok(!exists chat('dave', 'free-model', max_tokens => 1)->{headers}
    {'x-ratelimit-limit-requests'}, '... and no headers');

# a budget changed in state applies at the next request, no reload
$t->seed([{ op => 'token', token => $tok{dave}, name => 'dave', admin => DsTest::true,
    budget => { rpm => 1 } }]);
@r = map { chat('dave', 'free-model', max_tokens => 1) } 1 .. 2;
is(join(' ', map { $_->{status} } @r), '200 429',
    'dave given rpm 1: the next request counts, the one after is refused');

# the anonymous caller of a model without auth is one caller
@r = map { chat(undef, 'anon-model', max_tokens => 1) } 1 .. 3;
is(join(' ', map { $_->{status} } @r), '200 200 429',
    'no auth: anonymous callers share one budget');
$e = entry('', 'anon-model');
is($e && $e->{refused}, 1, 'stats: the anonymous entry');

# ---- tokens per minute: reserved, then settled ------------------------------------

my $est = estimate('tpm-model', max_tokens => 20);
cmp_ok($est, '<', 50, "an estimate of $est tokens");
# held answers: nothing settles before all five are decided
@r = $t->parallel([ map { chat_req('alice', 'tpm-model', max_tokens => 20,
    headers => { 'X-Test-Header-Delay-Ms' => 400 }) } 1 .. 5 ]);
my $fit = int(100 / $est);
is(statuses(@r), join(' ', ('200') x $fit, ('429') x (5 - $fit)),
    "tpm 100: $fit of 5 reservations of $est fit");
($no) = grep { $_->{status} == 429 } @r;
is($no->{json}{error}{type}, 'tokens', '429: type tokens');
like($no->{json}{error}{message},
    qr/on tokens per min \(TPM\): Limit 100, Used \d+, Requested $est\./,
    '429: the tokens asked for') or diag $no->{body};
is($no->{headers}{'x-ratelimit-limit-tokens'}, 100,
    'x-ratelimit-limit-tokens');
@ok = grep { $_->{status} == 200 } @r;
my %left = map { $_->{headers}{'x-ratelimit-remaining-tokens'} => 1 } @ok;
ok(exists $left{100 - $fit * $est} || exists $left{100 - $fit * $est + 1},
    'the last admitted saw what its reservation left')
    or diag explain [sort keys %left];

# settled: the answers' usage replaces the estimates
my ($prompt, $completion) = (0, 0);
for (@ok) {
    $prompt += $_->{json}{usage}{prompt_tokens};
    $completion += $_->{json}{usage}{completion_tokens};
}
ok(DsTest::wait_until(sub {
    my $x = entry('alice', 'tpm-model');
    $x && $x->{prompt_tokens} == $prompt }), 'settled: prompt tokens');
$e = entry('alice', 'tpm-model');
is($e->{completion_tokens}, $completion, 'settled: completion tokens');
is($e->{day_tokens}, $prompt + $completion,
    'the day counts the usage, not the estimates');
my $r = chat('alice', 'tpm-model', max_tokens => 20);
is($r->{status}, 200, 'after settlement a request fits again');
cmp_ok($r->{headers}{'x-ratelimit-remaining-tokens'}, '>=',
    100 - ($prompt + $completion) - $est,
    'what settlement gave back is there') or diag explain $r->{headers};

# a request larger than a minute's tokens can never pass
$r = chat('alice', 'tpm-model', max_tokens => 500);
is($r->{status}, 429, 'max_tokens 500 under tpm 100: 429');
like($r->{json}{error}{message}, qr/^Request too large for tpm-model/,
    '... "Request too large"');
ok(!exists $r->{headers}{'retry-after'}, '... and no Retry-After');

# the model's max_tokens when the request names none
$est = ceil(length(body('tpm-model')) / 4) + 7;
$r = chat('bob', 'tpm-model');
is($r->{status}, 200, 'no max_tokens: the model\'s (7)');
is($r->{headers}{'x-ratelimit-remaining-tokens'}, 100 - $est,
    "bob's first: 100 less the estimate with max_tokens 7 ($est)");

# an upstream error gives its tokens back
my $before = entry('bob', 'tpm-model')->{day_tokens};
$r = chat('bob', 'tpm-model', max_tokens => 3,
    headers => { 'X-Test-Status' => 500 });
is($r->{status}, 500, 'an upstream 500');
ok(DsTest::wait_until(sub {
    entry('bob', 'tpm-model')->{requests} == 2 }), 'it counts as a request');
is(entry('bob', 'tpm-model')->{day_tokens}, $before,
    '... but its tokens are given back');

# ---- streams -----------------------------------------------------------------------

sub events {
    my ($r) = @_;
    return grep { length } map { s/^data: ?//r } grep { /^data:/ }
        split /\r?\n\r?\n/, $r->{body} // '';
}

for my $case (['', {}], ['compact JSON, split events',
        { 'X-Test-Compact' => 1, 'X-Test-Split-Events' => 7 }],
        ['CRLF, split events',
        { 'X-Test-CRLF' => 1, 'X-Test-Split-Events' => 5 }]) {
    my ($name, $h) = @$case;
    $name = $name ? " ($name)" : '';
    my $b0 = entry('erin', 'tpm-model');
    $r = chat('erin', 'tpm-model', max_tokens => 5, stream => 1,
        headers => { 'X-Test-Delay-Ms' => 5, %$h });
    is($r->{status}, 200, "a stream without include_usage$name");
    my @ev = events($r);
    is($ev[-1], '[DONE]', "it ends with [DONE]$name");
    my @json = map { $JSON->decode($_) } grep { $_ ne '[DONE]' } @ev;
    is(scalar(grep { !@{ $_->{choices} } } @json), 0,
        "no event without choices reaches the client$name")
        or diag $r->{body};
    is(scalar(grep { ref $_->{usage} } @json), 0,
        "no usage reaches the client$name");
    is(scalar(grep { @{ $_->{choices} } && exists $_->{choices}[0]{delta}{content} } @json),
        6, "the role and 5 content events$name");
    my ($q) = grep { $_->{event} eq 'request' } reverse $t->backend_requests('m1');
    is_deeply($q->{body}{stream_options}, { include_usage => JSON::PP::true },
        "the replica was asked for the usage$name");
    ok(DsTest::wait_until(sub {
        my $x = entry('erin', 'tpm-model');
        $x && $x->{completion_tokens} == ($b0 ? $b0->{completion_tokens} : 0) + 5 }),
        "settled with the stream's usage$name");
}

# a client that asked gets the usage event; one that said false is left
$r = chat('erin', 'tpm-model', max_tokens => 3, stream => 1,
    options => { include_usage => JSON::PP::true },
    headers => { 'X-Test-Delay-Ms' => 5 });
is($r->{status}, 200, 'a stream that asks for its usage') or diag $r->{body};
my @json = map { $JSON->decode($_) } grep { $_ ne '[DONE]' } events($r);
is(scalar(grep { ref $_->{usage} } @json), 1,
    'a client that asked for the usage gets it');
$r = chat('erin', 'tpm-model', max_tokens => 3, stream => 1,
    options => { include_usage => JSON::PP::false },
    headers => { 'X-Test-Delay-Ms' => 5 });
my ($q) = grep { $_->{event} eq 'request' } reverse $t->backend_requests('m1');
is_deeply($q->{body}{stream_options}, { include_usage => JSON::PP::false },
    'a client that said false is not overruled');
$r = chat('erin', 'tpm-model', max_tokens => 3, stream => 1,
    options => { continuous_usage_stats => JSON::PP::false },
    headers => { 'X-Test-Delay-Ms' => 5 });
($q) = grep { $_->{event} eq 'request' } reverse $t->backend_requests('m1');
is_deeply($q->{body}{stream_options}, { include_usage => JSON::PP::true,
    continuous_usage_stats => JSON::PP::false },
    'stream_options of its own: include_usage added to them');
@json = map { $JSON->decode($_) } grep { $_ ne '[DONE]' } events($r);
is(scalar(grep { ref $_->{usage} } @json), 0, '... and taken out again');

# a stream of a model without any budget is left alone
$r = chat('frank', 'free-model', max_tokens => 2, stream => 1,
    headers => { 'X-Test-Delay-Ms' => 5 });
is($r->{status}, 200, 'a stream without a budget');
($q) = grep { $_->{event} eq 'request' } reverse $t->backend_requests('m1');
ok(!exists $q->{body}{stream_options}, 'no budget: the body goes as sent');

# ---- the day ------------------------------------------------------------------------

$est = estimate('day-model', max_tokens => 30);
my @day;
push @day, chat('alice', 'day-model', max_tokens => 30) for 1 .. 4;
my @st = map { $_->{status} } @day;
my ($first429) = grep { $st[$_] == 429 } 0 .. $#st;
ok(defined $first429, 'tpd 100: refused within 4 requests')
    or diag "@st";
$no = $day[$first429 // 0];
is($no->{json}{error}{type}, 'tokens_per_day', '429: type tokens_per_day');
like($no->{json}{error}{message}, qr/^Daily token quota reached for day-model: Limit 100/,
    '429: the daily quota') or diag $no->{body};
my $midnight = 86400 - time % 86400;
cmp_ok(abs(($no->{headers}{'retry-after'} // 0) - $midnight), '<=', 3,
    'Retry-After: the next UTC midnight');
is($day[0]{headers}{'x-ratelimit-limit-tokens-day'}, 100,
    'x-ratelimit-limit-tokens-day');
$e = entry('alice', 'day-model');
cmp_ok($e->{day_tokens} + $est, '>', 100,
    "refused because the day's $e->{day_tokens} and $est exceed 100");
is($e->{day}, int(time / 86400), 'the day is today');

# ---- Prometheus ---------------------------------------------------------------------

my $m = $t->metrics;
like($m, qr/^# TYPE dstack_budget_requests_total counter$/m,
    'Prometheus: the requests family');
like($m, qr/^dstack_budget_requests_total\{token="alice",model="rpm-model",service="rpm"\} 5$/m,
    'Prometheus: alice on rpm-model, 5 admitted');
like($m, qr/^dstack_budget_refused_total\{token="alice",model="rpm-model",service="rpm"\} 4$/m,
    'Prometheus: 4 refused (3, then 1 after the reload)');
like($m, qr/^dstack_budget_tokens_total\{token="alice",model="tpm-model",service="tpm",kind="completion"\} \d+$/m,
    'Prometheus: tokens by kind');
like($m, qr/^dstack_budget_day_tokens\{token="",model="anon-model",service="anon"\} \d+$/m,
    'Prometheus: the anonymous caller');

$t->finish;
done_testing;
