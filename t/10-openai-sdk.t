#!/usr/bin/perl
# The OpenAI-compatible endpoint as users reach it: the official OpenAI
# SDK (npm package "openai", driven by t/openai/sdk.mjs) against
# gateway.<domain> with two model services (prefix /v1 and /openai/v1)
# and tokens scoped to one of them: models.list and models.retrieve, a
# chat completion, a streamed chat completion whose chunks must arrive
# spread in time, embeddings (the SDK's default base64 encoding and
# float), a legacy completion, the per-service base URL, and the error
# cases as the SDK's error classes (404 NotFoundError, 401
# AuthenticationError, 403 PermissionDeniedError, 400 BadRequestError).
#
# Needs node (>= 18) and the SDK in build/openai-sdk (or OPENAI_SDK_DIR):
#   mkdir -p build/openai-sdk && cp t/openai/package.json build/openai-sdk/ \
#     && npm install --prefix build/openai-sdk --no-audit --no-fund

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use Test::More;
use Digest::SHA qw(sha256);
use IO::Select;
use POSIX ();
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $SDK = $ENV{OPENAI_SDK_DIR} || "$DsTest::REPO/build/openai-sdk";
my $INSTALL = 'mkdir -p build/openai-sdk && cp t/openai/package.json '
    . 'build/openai-sdk/ && npm install --prefix build/openai-sdk '
    . '--no-audit --no-fund';
{
    my $v = `node --version 2>/dev/null` // '';
    plan skip_all => 'node is not installed (apt-get install nodejs npm), '
        . 'the OpenAI SDK tests need it' unless $v =~ /^v(\d+)\./;
    plan skip_all => "node $v is too old for the OpenAI SDK (>= 18)"
        if $1 < 18;
    plan skip_all => "the OpenAI SDK is not installed in $SDK: $INSTALL"
        unless -f "$SDK/node_modules/openai/package.json";
}

my $JSON = $DsTest::JSON;

# ---- the gateway (as in t/09-openai.t) -------------------------------------------

my $t = DsTest->new(workers => 2);
my $D = $t->domain;
my $GW = "gateway.$D";
my $BODY_MAX = DsOpenAI::add_gateway($t);

sub openai_server { DsOpenAI::server($t, @_) }

my %srv = (
    alpha => openai_server(name => 'srv-alpha'),
    beta  => openai_server(name => 'srv-beta', prefix => '/openai/v1'),
    open  => openai_server(name => 'srv-open'),
);
my @SERVERS = map { "srv-$_" } sort keys %srv;

my %tok = (
    a   => 'dst_alpha_' . ('a' x 30),
    b   => 'dst_beta_' . ('b' x 30),
    all => 'dst_all_' . ('l' x 30),
    bad => 'dst_unknown_' . ('u' x 30),
);

sub svc {
    my ($name, %o) = @_;
    return ({ op => 'service', name => $name, %o },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $srv{$name}, state => 'ready',
                             version => 1 }] });
}

$t->seed([
    svc('alpha', model => 'alpha-model'),
    svc('beta', model => 'org/beta-7b', model_prefix => '/openai/v1'),
    svc('open', model => 'open-model', auth => DsTest::false),
    { op => 'token', token => $tok{a}, name => 't-a', services => ['alpha'] },
    { op => 'token', token => $tok{b}, name => 't-b', services => ['beta'] },
    { op => 'token', token => $tok{all}, name => 't-all',
      all => DsTest::true },
]);
$t->start;

# ---- the SDK ---------------------------------------------------------------------

# sdk(OP, {ARGS}, token => KEY, host => 'gateway.<domain>') -> decoded
# result of t/openai/sdk.mjs ({ok => 1, ...} or {ok => 0, error => {...}})
sub sdk {
    my ($op, $args, %o) = @_;
    my $host = $o{host} // $GW;
    my ($rc, $out, $err) = DsTest::_run(['node',
        "$DsTest::REPO/t/openai/sdk.mjs", $op, $JSON->encode($args || {})],
        env => { OPENAI_SDK_DIR => $SDK, DSTACK_CONNECT => '127.0.0.1',
            OPENAI_BASE_URL => "http://$host:" . $t->port
                . ($o{base} // '/v1'),
            OPENAI_API_KEY => $tok{ $o{token} // 'a' } });
    my ($line) = grep { /^\{/ } split /\n/, $out;
    my $res = $line ? eval { $JSON->decode($line) } : undef;
    if (!$res) {
        diag "sdk.mjs $op exited $rc:\n$out$err";
        return { ok => 0, error => { class => 'none', is => {} } };
    }
    return $res;
}

sub reqs {
    my $name = shift;
    return grep { ($_->{event} // '') eq 'request' }
        $t->backend_requests($name);
}
sub nreqs { my $n = 0; $n += reqs($_) for @SERVERS; return $n }
sub last_req { my @r = reqs($_[0]); return $r[-1] }

sub ok_sdk {
    my ($res, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok($res->{ok}, "$desc: the SDK call succeeds")
        or diag explain $res->{error};
    return $res->{ok};
}

# ---- models ----------------------------------------------------------------------

my $res = sdk('models', {}, token => 'a');
ok_sdk($res, 'models.list');
note "OpenAI SDK $res->{sdk}" if $res->{sdk};
is_deeply([sort map { $_->{id} } @{ $res->{data} || [] }],
    [qw(alpha-model open-model)],
    'models.list with the token for alpha: alpha-model and open-model');
is_deeply([sort map { "$_->{object} $_->{owned_by}" }
    @{ $res->{data} || [] }], ['model alpha', 'model open'],
    'object "model", owned_by the service');

$res = sdk('models', {}, token => 'all');
is_deeply([sort map { $_->{id} } @{ $res->{data} || [] }],
    [qw(alpha-model open-model org/beta-7b)],
    'models.list with an all-services token: all three');

$res = sdk('retrieve', { model => 'org/beta-7b' }, token => 'b');
ok_sdk($res, 'models.retrieve("org/beta-7b")');
is($res->{model}{id}, 'org/beta-7b', 'the model');

# ---- chat completions ----------------------------------------------------------------

my $n0 = reqs('srv-alpha');
$res = sdk('chat', { model => 'alpha-model', max_tokens => 4,
    content => 'hello from the sdk' }, token => 'a');
ok_sdk($res, 'chat.completions.create on alpha-model');
my $c = $res->{completion} || {};
is($c->{object}, 'chat.completion', 'a chat.completion');
is($c->{model}, 'alpha-model', 'model echoed');
like($c->{choices}[0]{message}{content} // '', qr/\bsrv-alpha\b/,
    'answered by alpha\'s replica');
is_deeply($c->{usage}, { prompt_tokens => 4, completion_tokens => 4,
    total_tokens => 8 }, 'usage');
is(scalar reqs('srv-alpha'), $n0 + 1, 'one request reached alpha');
my $q = last_req('srv-alpha');
is($q->{path}, '/v1/chat/completions', 'at /v1/chat/completions');
like($q->{headers}{'user-agent'} // '', qr{^OpenAI/JS }, 'sent by the SDK');
ok(!exists $q->{headers}{authorization}, 'without the gateway token');

$res = sdk('chat', { model => 'org/beta-7b' }, token => 'b');
ok_sdk($res, 'chat.completions.create on org/beta-7b');
like($res->{completion}{choices}[0]{message}{content} // '',
    qr/\bsrv-beta\b/, 'answered by beta\'s replica');
is(last_req('srv-beta')->{path}, '/openai/v1/chat/completions',
    'at beta\'s prefix /openai/v1');

$res = sdk('complete', { model => 'org/beta-7b', prompt => 'once upon' },
    token => 'b');
ok_sdk($res, 'completions.create on org/beta-7b');
like($res->{completion}{choices}[0]{text} // '', qr/\bsrv-beta\b/,
    'a text completion from beta');
is(last_req('srv-beta')->{path}, '/openai/v1/completions',
    'at /openai/v1/completions');

# ---- streaming ------------------------------------------------------------------------

my ($N, $DELAY) = (5, 0.3);
$res = sdk('stream', { model => 'alpha-model', max_tokens => $N,
    delay_ms => $DELAY * 1000 }, token => 'a');
ok_sdk($res, 'a streamed chat completion');
my @chunks = @{ $res->{chunks} || [] };
ok(@chunks && !grep({ ($_->{chunk}{object} // '') ne 'chat.completion.chunk' }
    @chunks), 'every chunk a chat.completion.chunk');
my @content = grep { ref $_->{chunk}{choices} eq 'ARRAY'
    && @{ $_->{chunk}{choices} }
    && length($_->{chunk}{choices}[0]{delta}{content} // '') } @chunks;
is(scalar @content, $N, "$N content chunks");
like(join('', map { $_->{chunk}{choices}[0]{delta}{content} } @content),
    qr/\bsrv-alpha\b/, 'from alpha');
my ($usage) = grep { $_->{chunk}{usage} } @chunks;
is_deeply($usage && $usage->{chunk}{usage}, { prompt_tokens => 3,
    completion_tokens => $N, total_tokens => 3 + $N },
    'the usage chunk (stream_options.include_usage)');
SKIP: {
    skip 'not all content chunks came', 4 unless @content == $N;
    note sprintf 'stream: create() resolved after %.3f s; content at %s; '
        . 'end %.3f s', $res->{t_open} - $res->{t0},
        join(' ', map { sprintf '%.3f', $_->{t} - $res->{t0} } @content),
        $res->{t_end} - $res->{t0};
    cmp_ok($content[-1]{t} - $content[0]{t}, '>=', 0.75 * ($N - 1) * $DELAY,
        sprintf('the chunks arrive spread in time (%.2f s from first to '
            . 'last, generated over %.2f s)',
            $content[-1]{t} - $content[0]{t}, ($N - 1) * $DELAY));
    cmp_ok($content[0]{t}, '<', $content[-1]{chunk}{x_sent_at},
        'the first token is read before the last one is even generated');
    my @late = grep { $_->{t} - ($_->{chunk}{x_sent_at} // 0)
        > 0.6 * $DELAY } @content;
    ok(!@late, 'each chunk reaches the SDK within ' . (0.6 * $DELAY)
        . ' s of being sent, not at the end')
        or diag explain [map { sprintf '%.3f s late',
            $_->{t} - $_->{chunk}{x_sent_at} } @late];
    cmp_ok($res->{t_open}, '<', $content[0]{t},
        'create() returns the stream before the first token');
}

# ---- embeddings -----------------------------------------------------------------------

sub expected_vector {
    my ($text, $dims) = @_;
    my @v;
    for (my $k = 0; @v < $dims; $k++) {
        push @v, map { ($_ - 128) / 128 }
            unpack 'C*', sha256($k ? "$text#$k" : $text);
    }
    return [@v[0 .. $dims - 1]];
}

$res = sdk('embed', { model => 'org/beta-7b', input => ['hello', 'world'] },
    token => 'b');
ok_sdk($res, 'embeddings.create (the SDK asks for base64)');
is(last_req('srv-beta')->{body}{encoding_format}, 'base64',
    'the replica got encoding_format base64');
is(last_req('srv-beta')->{path}, '/openai/v1/embeddings',
    'at /openai/v1/embeddings');
is_deeply([map { $_->{embedding} } @{ $res->{embeddings}{data} || [] }],
    [expected_vector('hello', 8), expected_vector('world', 8)],
    'the SDK decodes the replica\'s vectors');

$res = sdk('embed', { model => 'alpha-model', input => 'hello',
    encoding_format => 'float', dimensions => 12 }, token => 'a');
ok_sdk($res, 'embeddings.create with encoding_format float');
is_deeply($res->{embeddings}{data}[0]{embedding},
    expected_vector('hello', 12), 'the same vector, 12 dimensions');

# ---- the per-service base URL ----------------------------------------------------------

$res = sdk('chat', { model => 'alpha-model' }, token => 'a',
    host => "alpha.$D");
ok_sdk($res, 'base URL http://alpha.<domain>/v1');
like($res->{completion}{choices}[0]{message}{content} // '',
    qr/\bsrv-alpha\b/, 'from alpha');
$res = sdk('chat', { model => 'org/beta-7b' }, token => 'b',
    host => "beta.$D", base => '/openai/v1');
ok_sdk($res, 'base URL http://beta.<domain>/openai/v1');
like($res->{completion}{choices}[0]{message}{content} // '',
    qr/\bsrv-beta\b/, 'from beta');

# ---- errors ------------------------------------------------------------------------------

sub sdk_error {
    my ($res, $class, $status, $desc, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    ok(!$res->{ok}, "$desc: the SDK throws");
    my $e = $res->{error} || {};
    ok($e->{is}{$class}, "$desc: $class")
        or diag "got $e->{class}: " . ($e->{message} // '');
    ok($e->{is}{APIError}, "$desc: an APIError");
    is($e->{status}, $status, "$desc: status $status");
    is($e->{code}, $o{code}, "$desc: code $o{code}") if exists $o{code};
    ok(defined $e->{message} && length $e->{message}
        && defined $e->{type}, "$desc: message and type from the answer")
        or diag explain $e;
}

my $before = nreqs();

sdk_error(sdk('chat', { model => 'no-such-model' }, token => 'a'),
    'NotFoundError', 404, 'chat with an unknown model',
    code => 'model_not_found');
sdk_error(sdk('stream', { model => 'no-such-model' }, token => 'a'),
    'NotFoundError', 404, 'a stream with an unknown model',
    code => 'model_not_found');
sdk_error(sdk('embed', { model => 'no-such-model', input => 'x' },
    token => 'a'), 'NotFoundError', 404, 'embeddings, unknown model');
sdk_error(sdk('retrieve', { model => 'org/beta-7b' }, token => 'a'),
    'NotFoundError', 404, 'models.retrieve of a model the token may not use');
sdk_error(sdk('chat', { model => 'alpha-model' }, token => 'bad'),
    'AuthenticationError', 401, 'chat with an unknown key');
sdk_error(sdk('models', {}, token => 'bad'),
    'AuthenticationError', 401, 'models.list with an unknown key');
sdk_error(sdk('chat', { model => 'alpha-model' }, token => 'b'),
    'PermissionDeniedError', 403, 'chat with the token for beta');
sdk_error(sdk('stream', { model => 'org/beta-7b' }, token => 'a'),
    'PermissionDeniedError', 403, 'a stream with the token for alpha');
sdk_error(sdk('raw-chat', { body => { messages => [{ role => 'user',
    content => 'hi' }] } }, token => 'a'),
    'BadRequestError', 400, 'chat without a model');

is(nreqs(), $before, 'no refused call reached a replica');

# ---- a token budget -----------------------------------------------------------------

# alpha gets a budget of 3 requests a minute: the gateway asks a stream
# for its usage and the SDK, which did not, sees none of it; over the
# budget the SDK throws its RateLimitError
$t->seed([svc('alpha', model => 'alpha-model', budget => { rpm => 3 })]);
$res = sdk('stream', { model => 'alpha-model', max_tokens => 3,
    delay_ms => 5, include_usage => JSON::PP::false }, token => 'a');
ok_sdk($res, 'under a budget, a stream without include_usage');
@chunks = @{ $res->{chunks} || [] };
is(scalar(grep { !@{ $_->{chunk}{choices} || [] } } @chunks), 0,
    'every chunk the SDK yields has choices');
is(scalar(grep { $_->{chunk}{usage} } @chunks), 0, 'none has a usage');
is_deeply(last_req('srv-alpha')->{body}{stream_options},
    { include_usage => JSON::PP::true }, 'the replica was asked for it');
ok_sdk(sdk('chat', { model => 'alpha-model', max_tokens => 1 },
    token => 'a'), 'the second request of the minute');
ok_sdk(sdk('chat', { model => 'alpha-model', max_tokens => 1 },
    token => 'a'), 'the third');
$res = sdk('chat', { model => 'alpha-model', max_tokens => 1 }, token => 'a');
sdk_error($res, 'RateLimitError', 429, 'the fourth, over the budget',
    code => 'rate_limit_exceeded');
is($res->{error}{type}, 'requests', 'the error type says requests');
cmp_ok(($res->{error}{headers} || {})->{'retry-after'} // 0, '>=', 1,
    'the SDK sees Retry-After');
is(($res->{error}{headers} || {})->{'x-ratelimit-remaining-requests'}, 0,
    'and x-ratelimit-remaining-requests: 0');

$t->done;
