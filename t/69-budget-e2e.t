#!/usr/bin/perl
# Token budgets end to end: a service file's model.budget applied through
# controld, a token made through the API, requests through the real
# gateway and replica (t/lib/openai_server.py): the model's limit refuses
# with 429 at its figure, the token's usage per model comes back in GET
# /api/tokens (controld sums the module's counters from the gateway's
# stats), and a budget changed with PATCH applies at the next request.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsOpenAI;
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $JSON = $DsTest::JSON;
my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
DsOpenAI::add_gateway($t);
$s->start_controld;
$t->start;
my $GW = 'gateway.' . $t->domain;

my $server = DsTest::_slurp("$DsTest::REPO/t/lib/openai_server.py");
my $code = $s->upload($s->app_files({ 'openai_server.py' => $server }));

my $spec = $s->app_spec(auth => JSON::PP::true, probes => [],
    model => { name => 'llm', format => 'openai',
               budget => { rpm => 3, tpm => 100000, max_tokens => 16 } });
$spec->{commands} = ["exec python3 openai_server.py --name r1 "
    . "--host 0.0.0.0 --port $spec->{port} --prefix /v1"];

my $r = $s->apply($spec, name => 'llm', code => $code);
is($r->{status}, 201, 'a service with model.budget: 201') or diag $r->{body};
ok($s->wait_ready('llm', 1, timeout => 60), 'its replica is ready')
    or diag explain $s->last_run;

$r = $s->api('POST', '/api/tokens',
    json => { name => 'caller', scope => 'services', services => ['llm'] });
is($r->{status}, 201, 'a service token') or diag $r->{body};
my $token = $r->{json}{token};

sub chat {
    return $t->request('POST', '/v1/chat/completions', host => $GW,
        headers => { 'Content-Type' => 'application/json',
                     Authorization => "Bearer $token" },
        body => $JSON->encode({ model => 'llm', max_tokens => 4,
            messages => [{ role => 'user', content => 'one two three' }] }),
        timeout => 20);
}

my @r = map { chat() } 1 .. 4;
is(join(' ', map { $_->{status} } @r), '200 200 200 429',
    'the model\'s rpm 3: the fourth request of the minute is refused')
    or diag explain [map { $_->{body} } @r];
is($r[0]{headers}{'x-ratelimit-limit-requests'}, 3,
    'x-ratelimit-limit-requests: the service file\'s figure');
is($r[0]{headers}{'x-ratelimit-limit-tokens'}, 100000,
    'x-ratelimit-limit-tokens');
is($r[3]{json}{error}{code}, 'rate_limit_exceeded', 'OpenAI\'s 429');

my ($prompt, $completion) = (0, 0);
for (@r[0 .. 2]) {
    $prompt += $_->{json}{usage}{prompt_tokens};
    $completion += $_->{json}{usage}{completion_tokens};
}

# controld reads the gateway's stats once a second
my $use;
ok(DsTest::wait_until(sub {
    my $l = $s->api('GET', '/api/tokens');
    my ($tok) = grep { $_->{name} eq 'caller' } @{ $l->{json}{tokens} || [] };
    ($use) = grep { $_->{model} eq 'llm' } @{ ($tok || {})->{usage} || [] };
    $use && $use->{requests} == 3 && $use->{completion_tokens} == $completion
}, timeout => 15, interval => 0.2), 'GET /api/tokens: the token\'s usage of the model')
    or diag explain $use;
is($use->{refused}, 1, 'usage: 1 refused');
is($use->{prompt_tokens}, $prompt, "usage: $prompt prompt tokens");
is($use->{day_tokens}, $prompt + $completion, 'usage: today\'s tokens');
is($use->{service}, 'llm', 'usage: the service');

# the token's own limit, set later, replaces the model's at once
$r = $s->api('PATCH', '/api/tokens/caller', json => { budget => { rpm => 10 } });
is($r->{status}, 200, 'PATCH the token\'s rpm to 10') or diag $r->{body};
$r = chat();
is($r->{status}, 200, 'the next request passes, no reload');
is($r->{headers}{'x-ratelimit-limit-requests'}, 10,
    '... under the token\'s own limit');
$r = $s->api('PATCH', '/api/tokens/caller',
    json => { budget => { rpm => 'unlimited' } });
is($r->{status}, 200, 'PATCH it to unlimited');
$r = chat();
is($r->{status}, 200, 'unlimited: passes');
ok(!exists $r->{headers}{'x-ratelimit-limit-requests'},
    '... without a requests limit');
is($r->{headers}{'x-ratelimit-limit-tokens'}, 100000,
    '... the model\'s tokens per minute still apply');

$s->finish;
$t->done;
