#!/usr/bin/perl
# The OpenAI-compatible model endpoint on gateway.<domain> ("dstack_openai
# on", the location /v1/ of the shipped conf/nginx/dstack-gateway.conf),
# over raw HTTP against t/lib/openai_server.py replicas: GET /v1/models
# (ready replicas only, filtered by the token, OpenAI's list shape) and
# /v1/models/<id>; POST chat/completions, completions and embeddings
# routed by the body's "model" to the right service, the URI moved under
# the service's model prefix; malformed bodies (400), unknown models
# (404), bodies too large (413), auth (401/403) all in OpenAI's error
# shape; the gateway token kept from the replica; CORS (preflight answered
# by the gateway, Access-Control-Allow-Origin on every answer); SSE passed
# through chunk by chunk; a client that goes away mid-stream closes the
# upstream request; the per-service base URL (Host routing) as well.
#
# One worker, so that "the body read never blocks the worker" is testable.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use Test::More;
use Digest::SHA qw(sha256);
use IO::Select;
use IO::Socket::IP;
use POSIX ();
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $JSON = $DsTest::JSON;

# ---- the gateway server --------------------------------------------------------

# gateway.<domain> with the shipped "location /v1/ { ... }"
# (t/lib/DsOpenAI.pm), one worker
my $t = DsTest->new(workers => 1);
my $D = $t->domain;
my $GW = "gateway.$D";
my $BODY_MAX = DsOpenAI::add_gateway($t);

sub openai_server { DsOpenAI::server($t, @_) }

my %srv = (
    alpha  => openai_server(name => 'srv-alpha'),
    beta   => openai_server(name => 'srv-beta', prefix => '/openai/v1'),
    open   => openai_server(name => 'srv-open'),
    hidden => openai_server(name => 'srv-hidden'),
    cold   => openai_server(name => 'srv-cold'),
);
my @SERVERS = map { "srv-$_" } sort keys %srv;

my %tok = (
    a   => 'dst_alpha_' . ('a' x 30),
    b   => 'dst_beta_' . ('b' x 30),
    all => 'dst_all_' . ('l' x 30),
);

sub svc {
    my ($name, %o) = @_;
    my $state = delete $o{state} // 'ready';
    return ({ op => 'service', name => $name, %o },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $srv{$name}, state => $state,
                             version => 1 }] });
}

my $seeded_at = time;
$t->seed([
    svc('alpha', model => 'alpha-model'),
    svc('beta', model => 'org/beta-7b', model_prefix => '/openai/v1'),
    svc('open', model => 'open-model', auth => DsTest::false),
    svc('hidden', model => 'hidden-model'),
    svc('cold', model => 'cold-model', auth => DsTest::false,
        state => 'draining'),
    { op => 'service', name => 'empty', model => 'empty-model',
      auth => DsTest::false },
    { op => 'service', name => 'plain', auth => DsTest::false },
    { op => 'token', token => $tok{a}, name => 't-a', services => ['alpha'] },
    { op => 'token', token => $tok{b}, name => 't-b', services => ['beta'] },
    { op => 'token', token => $tok{all}, name => 't-all',
      all => DsTest::true },
]);
$t->start;

# ---- helpers --------------------------------------------------------------------

# api(METHOD, PATH, token => KEY of %tok or a raw "Bearer ..." value,
#     body => perl data (JSON-encoded) or bytes, host => (gateway), ...)
sub api {
    my ($method, $path, %o) = @_;
    my @h;
    if (defined $o{token}) {
        push @h, Authorization => $tok{ $o{token} }
            ? "Bearer $tok{ $o{token} }" : $o{token};
    }
    my $body = $o{body};
    $body = $JSON->encode($body) if ref $body;
    push @h, 'Content-Type' => 'application/json' if defined $body;
    push @h, @{ $o{headers} || [] };
    return $t->request($method, $path, host => $o{host} // $GW,
        headers => \@h, timeout => $o{timeout} // 15,
        (defined $body ? (body => $body) : ()),
        ($o{chunked} ? (chunked => 1) : ()));
}

sub chat_body {
    my ($model, %extra) = @_;
    return { model => $model, max_tokens => 3,
        messages => [{ role => 'user', content => 'say hello please' }],
        %extra };
}

sub chat {
    my ($model, %o) = @_;
    return api('POST', $o{path} // '/v1/chat/completions',
        body => chat_body($model, %{ $o{extra} || {} }), %o);
}

# requests (not stream ends) a server logged
sub reqs {
    my $name = shift;
    return grep { ($_->{event} // '') eq 'request' }
        $t->backend_requests($name);
}
sub nreqs { my $n = 0; $n += reqs($_) for @SERVERS; return $n }
sub last_req { my @r = reqs($_[0]); return $r[-1] }

sub is_openai_error {
    my ($r, $status, $desc, %o) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($r->{status}, $status, "$desc: $status")
        or diag($r->{error} // $r->{body});
    my $j = $r->{json};
    my $e = ref $j eq 'HASH' ? $j->{error} : undef;
    ok(ref $e eq 'HASH' && join(',', sort keys %$j) eq 'error'
        && join(',', sort keys %$e) eq 'code,message,param,type'
        && defined $e->{message} && !ref $e->{message}
        && length $e->{message} && defined $e->{type} && !ref $e->{type},
        "$desc: {\"error\":{\"message\",\"type\",\"param\",\"code\"}}")
        or diag($r->{body});
    like($r->{headers}{'content-type'} // '', qr{^application/json\b},
        "$desc: Content-Type application/json");
    is($e && $e->{type}, $o{type}, "$desc: type $o{type}")
        if defined $o{type};
    is($e && $e->{code}, $o{code}, "$desc: code " . ($o{code} // 'null'))
        if exists $o{code};
    is($r->{headers}{'access-control-allow-origin'}, '*',
        "$desc: Access-Control-Allow-Origin: *");
    return $e;
}

# ---- GET /v1/models -----------------------------------------------------------------

sub models {
    my ($token, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = api('GET', '/v1/models', token => $token);
    is($r->{status}, 200, "$desc: GET /v1/models 200")
        or diag($r->{error} // $r->{body});
    is($r->{headers}{'access-control-allow-origin'}, '*',
        "$desc: Access-Control-Allow-Origin");
    like($r->{headers}{'content-type'} // '', qr{^application/json\b},
        "$desc: JSON");
    my $j = $r->{json};
    ok(ref $j eq 'HASH' && join(',', sort keys %$j) eq 'data,object'
        && ($j->{object} // '') eq 'list' && ref $j->{data} eq 'ARRAY',
        "$desc: {\"object\":\"list\",\"data\":[...]}") or diag $r->{body};
    my @data = ref $j eq 'HASH' && ref $j->{data} eq 'ARRAY'
        ? @{ $j->{data} } : ();
    my $now = time;
    my @bad = grep {
        !(ref $_ eq 'HASH'
          && join(',', sort keys %$_) eq 'created,id,object,owned_by'
          && ($_->{object} // '') eq 'model'
          && defined $_->{id} && !ref $_->{id}
          && defined $_->{owned_by} && !ref $_->{owned_by}
          && ($_->{created} // '') =~ /^\d+$/
          && $_->{created} >= int($seeded_at) - 2 && $_->{created} <= $now + 2)
    } @data;
    ok(!@bad, "$desc: every entry is {id, object: \"model\", created (the "
        . "time the model was published), owned_by}") or diag explain \@bad;
    return { map { ref $_ eq 'HASH' ? ($_->{id} => $_) : () } @data };
}

my $before = nreqs();

my $m = models(undef, 'anonymous');
is_deeply([sort keys %$m], ['open-model'],
    'anonymous: only the models of auth: false services with a ready '
    . 'replica') or diag explain $m;
is($m->{'open-model'}{owned_by}, 'open', 'owned_by: the service');

$m = models('a', 'token for alpha');
is_deeply([sort keys %$m], [qw(alpha-model open-model)],
    'token for alpha: its model and the open one') or diag explain $m;
is($m->{'alpha-model'}{owned_by}, 'alpha', 'alpha-model owned_by alpha');

$m = models('b', 'token for beta');
is_deeply([sort keys %$m], [qw(open-model org/beta-7b)],
    'token for beta: its model and the open one') or diag explain $m;

$m = models('all', 'token for all services');
is_deeply([sort keys %$m],
    [qw(alpha-model hidden-model open-model org/beta-7b)],
    'all-services token: every model with a ready replica; not the '
    . 'draining-only one, not the one without replicas')
    or diag explain $m;

is_openai_error(api('GET', '/v1/models', token => 'Bearer dst_nope_'
    . ('x' x 30)), 401, 'GET /v1/models with an unknown token',
    type => 'authentication_error');

# /v1/models/<id>
my $r = api('GET', '/v1/models/alpha-model', token => 'a');
is($r->{status}, 200, 'GET /v1/models/alpha-model: 200') or diag $r->{body};
ok(ref $r->{json} eq 'HASH'
    && join(',', sort keys %{ $r->{json} }) eq 'created,id,object,owned_by'
    && $r->{json}{id} eq 'alpha-model' && $r->{json}{object} eq 'model'
    && $r->{json}{owned_by} eq 'alpha', 'the model object itself')
    or diag $r->{body};
is($r->{headers}{'access-control-allow-origin'}, '*',
    '/v1/models/<id>: Access-Control-Allow-Origin');

$r = api('GET', '/v1/models/org/beta-7b', token => 'b');
is($r->{status}, 200, 'GET /v1/models/org/beta-7b (an id with a slash): '
    . '200') or diag $r->{body};
is(ref $r->{json} eq 'HASH' && $r->{json}{id}, 'org/beta-7b', 'its id');

is_openai_error(api('GET', '/v1/models/org/beta-7b', token => 'a'), 404,
    'a model the token may not use', code => 'model_not_found');
is_openai_error(api('GET', '/v1/models/no-such-model', token => 'all'),
    404, 'an unknown model id', type => 'invalid_request_error',
    code => 'model_not_found');
is_openai_error(api('GET', '/v1/models/cold-model'), 404,
    'a model without a ready replica', code => 'model_not_found');
$r = api('GET', '/v1/models/alpha-model');
ok($r->{status} == 404 || $r->{status} == 401,
    'anonymous, a model of an auth service: 404 or 401')
    or diag "$r->{status} $r->{body}";
unlike($r->{body}, qr/"alpha"/, 'and nothing about it');

is(nreqs(), $before, 'no model listing reached a replica');

# a replica becoming ready shows its model at the next request
$t->seed([svc('cold', model => 'cold-model', auth => DsTest::false)]);
$m = models(undef, 'after a replica of cold became ready');
is_deeply([sort keys %$m], [qw(cold-model open-model)],
    'cold-model is listed at once, without a reload') or diag explain $m;
$t->seed([svc('cold', model => 'cold-model', auth => DsTest::false,
    state => 'draining')]);
$m = models(undef, 'after it drained');
is_deeply([sort keys %$m], ['open-model'], 'and gone when it drains');

# ---- routing by model ------------------------------------------------------------------

$r = chat('alpha-model', token => 'a');
is($r->{status}, 200, 'chat completion for alpha-model: 200')
    or diag($r->{error} // $r->{body});
my $j = ref $r->{json} eq 'HASH' ? $r->{json} : {};
is($j->{object}, 'chat.completion', 'a chat.completion');
is($j->{model}, 'alpha-model', 'model echoed');
like($j->{choices}[0]{message}{content} // '', qr/\bsrv-alpha\b/,
    'answered by alpha\'s replica');
is_deeply($j->{usage}, { prompt_tokens => 3, completion_tokens => 3,
    total_tokens => 6 }, 'usage passes through');
is($r->{headers}{'access-control-allow-origin'}, '*',
    'Access-Control-Allow-Origin on a proxied answer');
my $q = last_req('srv-alpha');
is($q->{path}, '/v1/chat/completions', 'alpha (prefix /v1): same path');
is($q->{body}{model}, 'alpha-model', 'the body reaches the replica');
is($q->{headers}{host}, $GW, 'Host as the client sent it');

$r = chat('org/beta-7b', token => 'b');
is($r->{status}, 200, 'chat completion for org/beta-7b: 200')
    or diag($r->{error} // $r->{body});
like(ref $r->{json} eq 'HASH' ? $r->{json}{choices}[0]{message}{content}
    : '', qr/\bsrv-beta\b/, 'answered by beta\'s replica');
is(last_req('srv-beta')->{path}, '/openai/v1/chat/completions',
    'beta (prefix /openai/v1): the URI moved under the prefix');

$r = chat('org/beta-7b', token => 'b',
    path => '/v1/chat/completions?api-version=2024-01&x=a%20b');
is($r->{status}, 200, 'with a query string: 200');
is(last_req('srv-beta')->{path},
    '/openai/v1/chat/completions?api-version=2024-01&x=a%20b',
    'the arguments are kept after the rewrite');

$r = api('POST', '/v1/completions', token => 'b',
    body => { model => 'org/beta-7b', prompt => 'once upon a time',
              max_tokens => 2 });
is($r->{status}, 200, '/v1/completions: 200') or diag $r->{body};
is(ref $r->{json} eq 'HASH' && $r->{json}{object}, 'text_completion',
    'a text_completion');
like(ref $r->{json} eq 'HASH' ? $r->{json}{choices}[0]{text} : '',
    qr/\bsrv-beta\b/, 'from beta');
is(last_req('srv-beta')->{path}, '/openai/v1/completions',
    '/v1/completions -> /openai/v1/completions');

sub expected_vector {
    my ($text, $dims) = @_;
    my @v;
    for (my $k = 0; @v < $dims; $k++) {
        push @v, map { ($_ - 128) / 128 }
            unpack 'C*', sha256($k ? "$text#$k" : $text);
    }
    return [@v[0 .. $dims - 1]];
}

$r = api('POST', '/v1/embeddings', token => 'b',
    body => { model => 'org/beta-7b', input => ['hello world', 'bye'] });
is($r->{status}, 200, '/v1/embeddings: 200') or diag $r->{body};
is(last_req('srv-beta')->{path}, '/openai/v1/embeddings',
    '/v1/embeddings -> /openai/v1/embeddings');
$j = ref $r->{json} eq 'HASH' ? $r->{json} : {};
is_deeply([map { $_->{embedding} } @{ $j->{data} || [] }],
    [expected_vector('hello world', 8), expected_vector('bye', 8)],
    'the vectors of the replica, unchanged');

$r = api('POST', '/v1/embeddings', token => 'a',
    body => { model => 'alpha-model', input => 'x', dimensions => 40 });
is($r->{status}, 200, '/v1/embeddings on alpha: 200');
is(last_req('srv-alpha')->{path}, '/v1/embeddings', 'at /v1/embeddings');
is_deeply(ref $r->{json} eq 'HASH' ? $r->{json}{data}[0]{embedding} : undef,
    expected_vector('x', 40), '40 dimensions');

# auth: false model: no token needed; a client's own key passes through
my $n_open = reqs('srv-open');
$r = chat('open-model');
is($r->{status}, 200, 'open-model without a token: 200') or diag $r->{body};
like(ref $r->{json} eq 'HASH' ? $r->{json}{choices}[0]{message}{content}
    : '', qr/\bsrv-open\b/, 'from open\'s replica');
$r = chat('open-model', token => 'Bearer sk-client-own-key');
is($r->{status}, 200, 'open-model with the client\'s own key: 200');
is(last_req('srv-open')->{headers}{authorization}, 'Bearer sk-client-own-key',
    'auth: false: the client\'s Authorization reaches the replica');
is(scalar reqs('srv-open'), $n_open + 2, 'both reached it');

# the model field found where it is
$r = api('POST', '/v1/chat/completions', token => 'a',
    body => '{"model":"alpha\u002dmodel","messages":[]}');
is($r->{status}, 200, 'an escaped model name is unescaped: 200')
    or diag $r->{body};
like($r->{body}, qr/srv-alpha/, 'and routed to alpha');

my $big = '{"messages":[{"role":"user","content":"' . ('word ' x (200 * 1024))
    . '"}],"temperature":0.5,"model":"org/beta-7b"}';
$r = api('POST', '/v1/chat/completions', token => 'b', body => $big);
is($r->{status}, 200, '"model" last, after 1 MiB of messages: 200')
    or diag $r->{body};
like($r->{body}, qr/srv-beta/, 'routed to beta');
is(last_req('srv-beta')->{body_len}, length $big,
    'the whole body reached the replica');

my $n = nreqs();
$r = api('POST', '/v1/chat/completions', token => 'b',
    body => { metadata => { model => 'org/beta-7b' },
              messages => [{ role => 'user', content => 'x',
                             model => 'org/beta-7b' }] });
is_openai_error($r, 400, '"model" only inside nested objects',
    type => 'invalid_request_error');

# ---- malformed bodies -----------------------------------------------------------------

for my $case (
    ['{"messages":[]}', 'no model'],
    ['{"model":42,"messages":[]}', 'model a number'],
    ['{"model":null}', 'model null'],
    ['{"model":true}', 'model true'],
    ['{"model":["alpha-model"]}', 'model an array'],
    ['{"model":{"name":"alpha-model"}}', 'model an object'],
    ['{"model":"alpha-model",', 'truncated JSON'],
    ['{"model":"alpha-model"} x', 'junk after the object'],
    ['{"model":"alpha-model" "messages":[]}', 'a missing comma'],
    ["{'model':'alpha-model'}", 'single quotes'],
    ['not json at all', 'not JSON'],
    ['', 'an empty body'],
    ['[{"model":"alpha-model"}]', 'an array'],
    ['"alpha-model"', 'a string'],
    ["{\"model\":\"alpha-model\x00\"}", 'a NUL byte in a string'],
    ["\xff\xfe{}", 'binary junk'],
)
{
    my ($body, $desc) = @$case;
    is_openai_error(api('POST', '/v1/chat/completions', token => 'a',
        body => $body), 400, "$desc: 400", type => 'invalid_request_error');
}
$r = api('POST', '/v1/chat/completions', token => 'a');
is_openai_error($r, 400, 'no body at all', type => 'invalid_request_error');

is_openai_error(chat('no-such-model', token => 'a'), 404,
    'an unknown model', type => 'invalid_request_error',
    code => 'model_not_found');
is_openai_error(chat('no-such-model'), 404,
    'an unknown model, anonymous', code => 'model_not_found');
is_openai_error(chat('ALPHA-MODEL', token => 'a'), 404,
    'model names are case-sensitive', code => 'model_not_found');
is_openai_error(chat('alpha-model ', token => 'a'), 404,
    'a trailing space is part of the name', code => 'model_not_found');
is_openai_error(api('POST', '/v1/embeddings', token => 'a',
    body => { model => 'nope', input => 'x' }), 404,
    'an unknown model on /v1/embeddings', code => 'model_not_found');
$r = chat('', token => 'a');
ok($r->{status} == 400 || $r->{status} == 404, 'an empty model: 400 or 404')
    or diag "$r->{status} $r->{body}";
$r = chat('m' x 10000, token => 'a');
ok($r->{status} == 400 || $r->{status} == 404,
    'a 10000-byte model: 400 or 404') or diag "$r->{status}";
is_openai_error(api('GET', '/v1/chat/completions', token => 'a'), 404,
    'GET on a POST endpoint: an OpenAI error');
is_openai_error(api('POST', '/v1/assistants', token => 'a',
    body => { model => 'alpha-model' }), 404,
    'an endpoint not routed by model');

# ---- bodies too large ---------------------------------------------------------------------

# a body of exactly the limit passes
sub body_of {
    my ($len, $model) = @_;
    my $head = '{"model":"' . $model . '","messages":[{"role":"user",'
        . '"content":"';
    my $tail = '"}]}';
    return $head . ('y' x ($len - length($head) - length($tail))) . $tail;
}

$r = api('POST', '/v1/chat/completions', token => 'a',
    body => body_of($BODY_MAX, 'alpha-model'), timeout => 30);
is($r->{status}, 200, "a body of exactly client_body_buffer_size "
    . "($BODY_MAX bytes): 200") or diag($r->{error} // $r->{body});
is(last_req('srv-alpha')->{body_len}, $BODY_MAX,
    'and all of it reached the replica');

# one byte more, announced by Content-Length: refused before it comes
my $nb = nreqs();
my $hdr = "POST /v1/chat/completions HTTP/1.1\r\nHost: $GW\r\n"
    . "Authorization: Bearer $tok{a}\r\nContent-Type: application/json\r\n"
    . 'Content-Length: ' . ($BODY_MAX + 1) . "\r\nConnection: close\r\n\r\n";
my $t0 = time;
$r = $t->raw($hdr . substr(body_of($BODY_MAX + 1, 'alpha-model'), 0, 65536),
    timeout => 10);
is_openai_error($r, 413, 'Content-Length one byte over the limit',
    type => 'invalid_request_error', code => 'request_too_large');
cmp_ok(time - $t0, '<', 5, 'answered without waiting for the body');

# and the same sent chunked: read, then refused
$r = api('POST', '/v1/chat/completions', token => 'a', chunked => 1,
    body => body_of($BODY_MAX + 1, 'alpha-model'), timeout => 30);
is_openai_error($r, 413, 'a chunked body one byte over the limit');
$r = api('POST', '/v1/chat/completions', token => 'b', chunked => 1,
    body => body_of(3 * $BODY_MAX, 'org/beta-7b'), timeout => 30);
is_openai_error($r, 413, 'a chunked body three times the limit');
is(nreqs(), $nb, 'no body too large reached a replica');

$r = api('POST', '/v1/chat/completions', token => 'b', chunked => 1,
    body => body_of(100_000, 'org/beta-7b'));
is($r->{status}, 200, 'a chunked body within the limit: 200')
    or diag($r->{error} // $r->{body});
is(last_req('srv-beta')->{body_len}, 100_000, 'all of it reached beta');
my $small = $JSON->encode(chat_body('org/beta-7b'));
$r = api('POST', '/v1/chat/completions', token => 'b', chunked => 1,
    body => $small);
is($r->{status}, 200, 'a small body in one chunk: 200')
    or diag($r->{error} // $r->{body});
is(last_req('srv-beta')->{body_len}, length $small, 'all of it reached beta');
is_openai_error(api('POST', '/v1/chat/completions', token => 'b',
    chunked => 1, body => ''), 400, 'an empty chunked body',
    type => 'invalid_request_error');

# ---- auth ----------------------------------------------------------------------------------

$nb = nreqs();
is_openai_error(chat('alpha-model'), 401,
    'no token, a model of an auth service', type => 'authentication_error');
$r = chat('alpha-model');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer\b/,
    '401: WWW-Authenticate: Bearer');
is_openai_error(chat('alpha-model', token => 'Bearer dst_unknown_'
    . ('u' x 30)), 401, 'an unknown token', type => 'authentication_error');
is_openai_error(chat('alpha-model', token => 'b'), 403,
    'the token for beta, alpha-model', type => 'permission_error');
is_openai_error(chat('org/beta-7b', token => 'a'), 403,
    'the token for alpha, org/beta-7b', type => 'permission_error');
is_openai_error(api('POST', '/v1/embeddings', token => 'a',
    body => { model => 'hidden-model', input => 'x' }), 403,
    'the token for alpha, hidden-model embeddings',
    type => 'permission_error');
is(nreqs(), $nb, 'no refused request reached a replica');

$r = chat('hidden-model', token => 'all');
is($r->{status}, 200, 'all-services token: hidden-model 200');
like($r->{body}, qr/srv-hidden/, 'from hidden');

my @auth_seen = map { reqs($_) } qw(srv-alpha srv-beta srv-hidden);
cmp_ok(scalar @auth_seen, '>=', 10, 'requests reached the auth services');
is(scalar(grep { exists $_->{headers}{authorization} } @auth_seen), 0,
    'the replicas of auth services never saw Authorization');
is(scalar(grep { grep { /dst_/ } values %{ $_->{headers} } } @auth_seen), 0,
    'nor the gateway token in any other header');

# ---- CORS ---------------------------------------------------------------------------------

$nb = nreqs();
$r = api('OPTIONS', '/v1/chat/completions', headers => [
    Origin => 'https://app.example.org',
    'Access-Control-Request-Method' => 'POST',
    'Access-Control-Request-Headers' => 'authorization, content-type, '
        . 'x-stainless-os']);
is($r->{status}, 204, 'preflight without a token: 204') or diag $r->{body};
my $h = $r->{headers};
ok(($h->{'access-control-allow-origin'} // '') eq '*'
    || ($h->{'access-control-allow-origin'} // '') eq
        'https://app.example.org', 'preflight: Access-Control-Allow-Origin')
    or diag explain $h;
like($h->{'access-control-allow-methods'} // '', qr/\bPOST\b/,
    'preflight: POST allowed');
for my $want (qw(authorization content-type x-stainless-os)) {
    like(lc($h->{'access-control-allow-headers'} // ''), qr/\b\Q$want\E\b/,
        "preflight: $want allowed");
}
$r = api('OPTIONS', '/v1/models', headers => [
    Origin => 'http://localhost:3000',
    'Access-Control-Request-Method' => 'GET']);
is($r->{status}, 204, 'preflight of /v1/models: 204');
like($r->{headers}{'access-control-allow-methods'} // '', qr/\bGET\b/,
    'GET allowed');
is(nreqs(), $nb, 'no preflight reached a replica');

# ---- streaming ----------------------------------------------------------------------------

# sse_open(PATH, %o like api): sends the request, reads the status and
# headers, returns a handle for sse_next.
sub sse_open {
    my ($path, %o) = @_;
    my @h;
    push @h, Authorization => "Bearer $tok{ $o{token} }" if $o{token};
    push @h, 'Content-Type' => 'application/json', @{ $o{headers} || [] };
    my $bytes = $t->build_request('POST', $path, host => $o{host} // $GW,
        headers => \@h, body => $JSON->encode($o{body}));
    my $sock = IO::Socket::IP->new(PeerHost => '127.0.0.1',
        PeerPort => $t->port, Proto => 'tcp', Timeout => 5)
        or die "connect: $!\n";
    my $s = { sock => $sock, sel => IO::Select->new($sock), raw => '',
        data => '', t0 => time, status => 0, headers => {}, events => [] };
    DsTest::_send_all($sock, $bytes, time + 10);
    my $deadline = time + 10;
    my $he;
    while (($he = index($s->{raw}, "\r\n\r\n")) < 0) {
        _sfill($s, $deadline - time) or return $s;
    }
    my @lines = split /\r\n/, substr($s->{raw}, 0, $he + 4, '');
    ($s->{status}) = (shift(@lines) // '') =~ m{^HTTP/\d\.\d (\d{3})};
    for (@lines) {
        $s->{headers}{ lc $1 } = $2 if /^([^:]+):\s*(.*?)\s*$/;
    }
    $s->{t_headers} = time;
    $s->{chunked} = ($s->{headers}{'transfer-encoding'} // '') =~ /chunked/i;
    return $s;
}

sub _sfill {
    my ($s, $timeout) = @_;
    return 0 if $s->{eof} || $timeout <= 0;
    return 0 unless $s->{sel}->can_read($timeout);
    my $n = sysread($s->{sock}, $s->{raw}, 65536, length $s->{raw});
    $s->{eof} = 1 unless $n;
    return $n ? 1 : 0;
}

sub _sdecode {
    my $s = shift;
    if (!$s->{chunked}) {
        $s->{data} .= $s->{raw};
        $s->{raw} = '';
        return;
    }
    while ((my $le = index($s->{raw}, "\r\n")) >= 0) {
        my ($size) = substr($s->{raw}, 0, $le) =~ /^([0-9a-fA-F]+)/
            or die "bad chunk size line\n";
        $size = hex $size;
        if ($size == 0) {
            $s->{done} = 1;
            $s->{raw} = '';
            return;
        }
        return if length($s->{raw}) < $le + 2 + $size + 2;
        $s->{data} .= substr($s->{raw}, $le + 2, $size);
        substr($s->{raw}, 0, $le + 2 + $size + 2, '');
    }
}

# The next SSE event: { t (arrival), raw (its data), json }, or undef at
# the end of the answer or after TIMEOUT seconds.
sub sse_next {
    my ($s, $timeout) = @_;
    my $deadline = time + ($timeout // 10);
    while (1) {
        _sdecode($s);
        my $i = index($s->{data}, "\n\n");
        if ($i >= 0) {
            my $ev = substr($s->{data}, 0, $i + 2, '');
            my @d = map { s/^data: ?//r } grep { /^data:/ } split /\n/, $ev;
            next unless @d;
            my $d = join "\n", @d;
            my $e = { t => time, raw => $d,
                json => $d eq '[DONE]' ? undef : eval { $JSON->decode($d) } };
            push @{ $s->{events} }, $e;
            return $e;
        }
        return undef if $s->{done} || $s->{eof};
        _sfill($s, $deadline - time) or do {
            return undef if $s->{eof} || time >= $deadline;
        };
    }
}

sub content_events {
    grep { $_->{json} && ref $_->{json}{choices} eq 'ARRAY'
           && @{ $_->{json}{choices} }
           && defined $_->{json}{choices}[0]{delta}{content}
           && length $_->{json}{choices}[0]{delta}{content} } @_;
}

# Checks a complete stream of N content chunks DELAY seconds apart.
sub check_stream {
    my ($s, $n, $delay, $desc, $server) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    is($s->{status}, 200, "$desc: 200");
    like($s->{headers}{'content-type'} // '', qr{^text/event-stream},
        "$desc: text/event-stream");
    1 while sse_next($s, 5);
    my @ev = @{ $s->{events} };
    my $end = time;
    is($ev[-1] && $ev[-1]{raw}, '[DONE]', "$desc: data: [DONE] last");
    ok(!grep({ !$_->{json} && $_->{raw} ne '[DONE]' } @ev)
        && !grep({ $_->{json} && ($_->{json}{object} // '') ne
                   'chat.completion.chunk' } @ev),
        "$desc: every other event is a chat.completion.chunk")
        or diag explain [map { $_->{raw} } @ev];
    my @c = content_events(@ev);
    is(scalar @c, $n, "$desc: $n content chunks");
    like(join('', map { $_->{json}{choices}[0]{delta}{content} } @c),
        qr/\b\Q$server\E\b/, "$desc: from $server");
    return @ev unless @c == $n;
    note sprintf "$desc: headers %.3f s, content at %s, end %.3f s",
        $s->{t_headers} - $s->{t0},
        join(' ', map { sprintf '%.3f', $_->{t} - $s->{t0} } @c),
        $end - $s->{t0};
    cmp_ok($c[-1]{t} - $c[0]{t}, '>=', 0.75 * ($n - 1) * $delay,
        "$desc: the chunks arrive spread over the generation "
        . sprintf('(%.2f s, generated over %.2f s)', $c[-1]{t} - $c[0]{t},
            ($n - 1) * $delay));
    my @late = grep { defined $_->{json}{x_sent_at}
        && $_->{t} - $_->{json}{x_sent_at} > 0.6 * $delay } @c;
    ok(!@late, "$desc: each chunk arrives within "
        . (0.6 * $delay) . ' s of being sent (no buffering)')
        or diag explain [map { sprintf '%.3f s late',
            $_->{t} - $_->{json}{x_sent_at} } @late];
    cmp_ok($s->{t_headers} - $s->{t0}, '<', $delay,
        "$desc: the headers come before the first token");
    return @ev;
}

my ($N, $DELAY) = (6, 0.3);
my $s = sse_open('/v1/chat/completions', token => 'a',
    headers => ['X-Test-Delay-Ms' => $DELAY * 1000],
    body => chat_body('alpha-model', stream => JSON::PP::true,
        max_tokens => $N, stream_options => { include_usage =>
            JSON::PP::true }));
is($s->{headers}{'access-control-allow-origin'}, '*',
    'stream: Access-Control-Allow-Origin');
my @ev = check_stream($s, $N, $DELAY, 'stream through the gateway',
    'srv-alpha');
my ($usage) = grep { $_->{json} && $_->{json}{usage} } @ev;
is_deeply($usage && $usage->{json}{usage}, { prompt_tokens => 3,
    completion_tokens => $N, total_tokens => 3 + $N },
    'stream: the usage chunk (stream_options.include_usage) passes through');
close $s->{sock};
my ($end) = grep { ($_->{event} // '') eq 'stream_end' }
    $t->backend_requests('srv-alpha');
ok($end && $end->{complete}, 'the replica finished the stream');

$s = sse_open('/v1/chat/completions', token => 'b',
    headers => ['X-Test-Delay-Ms' => 200],
    body => chat_body('org/beta-7b', stream => JSON::PP::true,
        max_tokens => 4));
check_stream($s, 4, 0.2, 'stream from beta', 'srv-beta');
is(last_req('srv-beta')->{path}, '/openai/v1/chat/completions',
    'stream from beta: at its prefix');
close $s->{sock};

# a client that goes away mid-stream: the replica's connection closes
$s = sse_open('/v1/chat/completions', token => 'a',
    headers => ['X-Test-Delay-Ms' => 200],
    body => chat_body('alpha-model', stream => JSON::PP::true,
        max_tokens => 50, messages => [{ role => 'user',
            content => 'a long story that nobody reads' }]));
is($s->{status}, 200, 'a long stream: 200');
my $got = 0;
while (my $ev = sse_next($s, 5)) {
    last if content_events($ev) && ++$got == 2;
}
is($got, 2, 'two tokens read');
my ($gone_req) = grep { ($_->{body}{messages}[0]{content} // '') =~
    /nobody reads/ } reqs('srv-alpha');
my $closed_at = time;
close $s->{sock};
my $gone;
DsTest::wait_until(sub {
    ($gone) = grep { ($_->{event} // '') eq 'stream_end'
        && $gone_req && $_->{id} == $gone_req->{id} }
        $t->backend_requests('srv-alpha');
    return $gone;
}, timeout => 5);
ok($gone && !$gone->{complete},
    'the client closed: the replica saw its connection closed mid-stream')
    or diag explain $gone;
ok($gone && $gone->{chunks} < 50, 'before the end of the generation ('
    . ($gone ? $gone->{chunks} : '?') . ' of 50 tokens)');
cmp_ok($gone ? $gone->{t} - $closed_at : 99, '<', 2,
    'within 2 s of the client');

# ---- the body read does not block the worker ------------------------------------------------

{
    my $body = body_of(300_000, 'alpha-model');
    my $sock = IO::Socket::IP->new(PeerHost => '127.0.0.1',
        PeerPort => $t->port, Proto => 'tcp', Timeout => 5) or die $!;
    DsTest::_send_all($sock, "POST /v1/chat/completions HTTP/1.1\r\n"
        . "Host: $GW\r\nAuthorization: Bearer $tok{a}\r\n"
        . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n\r\n"
        . substr($body, 0, 150_000), time + 10);
    sleep 0.3;
    my $t1 = time;
    my $o = api('GET', '/v1/models', token => 'a', timeout => 5);
    is($o->{status}, 200, 'while a body is half sent, the only worker '
        . 'answers another request');
    cmp_ok(time - $t1, '<', 2, 'at once');
    DsTest::_send_all($sock, substr($body, 150_000), time + 10);
    my $res = eval { DsTest::_read_response($sock, timeout => 10) };
    is($res && $res->{status}, 200, 'then the body completes: 200');
    like($res ? $res->{body} : '', qr/srv-alpha/, 'routed to alpha');
    close $sock;
}

# ---- the per-service base URL (Host routing) --------------------------------------------------

$r = chat('alpha-model', token => 'a', host => "alpha.$D");
is($r->{status}, 200, 'https://alpha.<domain>/v1/chat/completions: 200')
    or diag $r->{body};
like(ref $r->{json} eq 'HASH' ? $r->{json}{choices}[0]{message}{content}
    : '', qr/\bsrv-alpha\b/, 'from alpha');
is(last_req('srv-alpha')->{path}, '/v1/chat/completions',
    'at /v1/chat/completions');
ok(!exists last_req('srv-alpha')->{headers}{authorization},
    'without the gateway token');
$r = chat('org/beta-7b', token => 'b', host => "beta.$D",
    path => '/openai/v1/chat/completions');
is($r->{status}, 200, 'https://beta.<domain>/openai/v1/chat/completions: '
    . '200') or diag $r->{body};
like($r->{body}, qr/srv-beta/, 'from beta');
is(last_req('srv-beta')->{path}, '/openai/v1/chat/completions',
    'the path as sent');
is(chat('alpha-model', host => "alpha.$D")->{status}, 401,
    'per-service URL without a token: 401');
is(chat('alpha-model', token => 'b', host => "alpha.$D")->{status}, 403,
    'per-service URL with the other service\'s token: 403');
$s = sse_open('/v1/chat/completions', token => 'a', host => "alpha.$D",
    headers => ['X-Test-Delay-Ms' => 200],
    body => chat_body('alpha-model', stream => JSON::PP::true,
        max_tokens => 4));
check_stream($s, 4, 0.2, 'stream through the per-service URL', 'srv-alpha');
close $s->{sock};

$t->done;
