#!/usr/bin/perl
# The API refuses what it should, with the status and message API.md
# promises, and a refused call changes nothing: tokens (none, bad, basic,
# service, expired, revoked), endpoints and methods, bodies (bad JSON,
# not an object, unknown fields, oversized), specs, code uploads, offers,
# unknown runs, run names and log arguments that try to leave their
# directory, model conflicts, token management.  Also the API through
# nginx (conf/nginx/dstack-api.conf) on gateway.<domain>.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Digest::SHA qw(sha256_hex);
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);

# the API server block of conf/nginx, on the test's port and socket
my $api_conf = DsTest::_slurp("$DsTest::REPO/conf/nginx/dstack-api.conf");
my $domain = $t->domain;
my $port = $t->port;
my $sock = $s->socket_path;
# the plain-HTTP choice its WARNING describes (this test speaks HTTP to
# 127.0.0.1; t/50 and t/95 take the shipped HTTPS default): port 80 in the
# API server, no TLS lines, and the refusing port 80 server removed
$api_conf =~ s/\n# gateway\.<domain> on plain HTTP:.*\z/\n/s;
$api_conf =~ s/^\s*listen (\[::\]:)?443 ssl( http2)?;\n//mg;
$api_conf =~ s/^\s*(ssl_certificate\S*|dstack_ssl) .*\n//mg;
$api_conf =~ s/^\s*#listen \[::\]:80;\n//m;
$api_conf =~ s/#listen 80;/listen 127.0.0.1:$port;/;
die "t/21: the API snippet changed shape" if $api_conf =~ /\b443\b|\bssl_/
    || $api_conf !~ /listen 127\.0\.0\.1:$port;/;
$api_conf =~ s/example\.com/$domain/g;
$api_conf =~ s{unix:/run/dstack/api\.sock}{unix:$sock};
$api_conf =~ s{/etc/dstack/nginx/}{$DsTest::REPO/conf/nginx/}g;
$t->write_conf(http => $api_conf);

$s->start_controld;
$t->start;

sub err_is {
    my ($r, $status, $type, $re, $name) = @_;
    is($r->{status}, $status, "$name: $status") or diag $r->{body};
    is($r->{json}{error}{type}, $type, "$name: type $type");
    like($r->{json}{error}{message} // '', $re, "$name: message")
        or diag $r->{body};
}

my $spec = $s->app_spec;

# ---- tokens ------------------------------------------------------------------

my $r = $s->api('GET', '/api/health', no_token => 1);
err_is($r, 401, 'unauthorized', qr/^an admin token is required/,
    'no token');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/,
    'no token: WWW-Authenticate: Bearer');
err_is($s->api('GET', '/api/health', token => 'dst_nope'), 401,
    'unauthorized', qr/^invalid token$/, 'an unknown token');
err_is($s->api('GET', '/api/health', no_token => 1,
        headers => { Authorization => 'Basic YWRtaW46YWRtaW4=' }),
    401, 'unauthorized', qr/^expected Authorization: Bearer <token>$/,
    'basic auth');
err_is($s->api('POST', '/api/runs/apply', no_token => 1,
        json => { spec => $spec, name => 'sneaky' }),
    401, 'unauthorized', qr/token is required/, 'apply without a token');

$r = $s->api('POST', '/api/tokens',
    json => { name => 'svc', scope => 'services', services => ['a-b'] });
is($r->{status}, 201, 'a service token is created');
my $svc_token = $r->{json}{token};
like($svc_token, qr/^dst_[A-Za-z0-9_-]{43}$/, 'shown once');
err_is($s->api('GET', '/api/runs', token => $svc_token), 403, 'forbidden',
    qr/^token "svc" is not an admin token$/, 'a service token');

$r = $s->api('POST', '/api/tokens',
    json => { name => 'brief', scope => 'admin', expires_in => 2 });
is($r->{status}, 201, 'an admin token that expires in 2 s');
my $brief = $r->{json}{token};
# expiry is kept in whole seconds (created in second T, it stops at T+2),
# so a 1 s token could already be gone when a loaded machine asks
is($s->api('GET', '/api/health', token => $brief)->{status}, 200,
    'works at first');
sleep 2.2;
err_is($s->api('GET', '/api/health', token => $brief), 401, 'unauthorized',
    qr/^the token has expired$/, 'an expired token');

$r = $s->api('POST', '/api/tokens', json => { name => 'gone',
    scope => 'admin' });
my $gone = $r->{json}{token};
is($s->api('DELETE', '/api/tokens/gone')->{status}, 200, 'revoke: 200');
err_is($s->api('GET', '/api/health', token => $gone), 401, 'unauthorized',
    qr/^invalid token$/, 'a revoked token');

# token management errors
err_is($s->api('POST', '/api/tokens', json => { name => 'svc' }), 409,
    'conflict', qr/^name: a token named "svc" exists$/, 'a token name twice');
err_is($s->api('POST', '/api/tokens', json => { name => 'Bad Name' }), 400,
    'invalid_request', qr/^name: "Bad Name" is not a token name/,
    'a bad token name');
err_is($s->api('POST', '/api/tokens', json => { name => 'x1',
        scope => 'root' }), 400, 'invalid_request',
    qr/^scope: expected "admin" or "services"$/, 'a bad scope');
err_is($s->api('POST', '/api/tokens', json => { name => 'x2', ttl => 5 }),
    400, 'invalid_request', qr/^unknown field "ttl"$/,
    'an unknown token field');
err_is($s->api('POST', '/api/tokens', json => { name => 'x3',
        services => ['../etc'] }), 400, 'invalid_request',
    qr/^services\[0\]: not a run name$/, 'a bad service name');
err_is($s->api('DELETE', '/api/tokens/nobody'), 404, 'not_found',
    qr/^no token named "nobody"$/, 'revoking an unknown token');
err_is($s->api('DELETE', '/api/tokens/admin'), 409, 'conflict',
    qr/^"admin" is the last admin token/, 'revoking the last admin token');
$r = $s->api('GET', '/api/tokens');
is($r->{status}, 200, 'token list: 200');
my $listed = $r->{body};
unlike($listed, qr/dst_/, 'token list: no token text');
unlike($listed, qr/[0-9a-f]{64}/, 'token list: no hash');
is_deeply([sort map { $_->{name} } @{ $r->{json}{tokens} }],
    [qw(admin brief svc)], 'token list: the tokens by name');

# ---- endpoints and methods ------------------------------------------------------

err_is($s->api('GET', '/api/nope'), 404, 'not_found',
    qr{^no such endpoint: GET /api/nope$}, 'an unknown endpoint');
err_is($s->api('GET', '/elsewhere'), 404, 'not_found',
    qr{^no such endpoint}, 'outside /api');
$r = $s->api('DELETE', '/api/runs');
err_is($r, 405, 'method_not_allowed',
    qr{^DELETE is not allowed on /api/runs \(allowed: GET\)$},
    'a wrong method');
is($r->{headers}{allow}, 'GET', 'with Allow');
err_is($s->api('GET', '/api/runs/apply'), 405, 'method_not_allowed',
    qr/allowed: POST/, 'GET on apply');

# ---- bodies ----------------------------------------------------------------------

err_is($s->api('POST', '/api/runs/apply', body => '{"spec": {'), 400,
    'invalid_request', qr/^body: invalid JSON at byte \d+$/, 'bad JSON');
err_is($s->api('POST', '/api/runs/apply', body => '[1,2]'), 400,
    'invalid_request', qr/^body: expected a JSON object$/, 'a JSON array');
err_is($s->api('POST', '/api/runs/apply', body => '{} {}'), 400,
    'invalid_request', qr/text after the value/, 'two values');
err_is($s->api('POST', '/api/runs/apply', body => ''), 400,
    'invalid_request', qr/^body: a JSON object is required$/, 'no body');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => $spec, nmae => 'typo' }), 400, 'invalid_request',
    qr/^unknown field "nmae"$/, 'an unknown field');
err_is($s->api('POST', '/api/runs/apply', json => { name => 'x' }), 400,
    'invalid_request', qr/^spec: required$/, 'no spec');
err_is($s->api('POST', '/api/runs/apply', json => { spec => 'type: x' }),
    400, 'invalid_request', qr/^spec: expected an object$/,
    'a spec that is not an object');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, resources => { gpus => 1 } } }), 400,
    'invalid_request', qr/^spec\.resources: unknown key "gpus" \(did you mean "gpu"\?\)$/,
    'an unknown spec key');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, port => 70000 } }), 400,
    'invalid_request', qr/^spec\.port/, 'a bad port');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, env => { K => undef } } }), 400,
    'invalid_request', qr/^spec\.env\.K: no value/,
    'an env name left without a value');
my $big = '{"spec":' . $JSON::PP::true . ',"pad":"' . ('x' x (1024 * 1024))
    . '"}';
err_is($s->api('POST', '/api/runs/apply', body => $big), 413, 'too_large',
    qr/^body: larger than 1 MiB$/, 'a body over 1 MiB');
err_is($s->api('POST', '/api/runs/apply', body => $big, chunked => 1), 413,
    'too_large', qr/^body: larger than 1 MiB$/,
    'a chunked body over 1 MiB');
err_is($s->api('POST', '/api/runs/stop', json => {}), 405,
    'method_not_allowed', qr/allowed: POST/, 'stop needs a run')
    if 0;

# ---- names ------------------------------------------------------------------------

err_is($s->api('POST', '/api/runs/apply',
        json => { spec => $spec, name => '../../etc' }), 400,
    'invalid_request', qr/^name: "\.\.\/\.\.\/etc" is not a valid run name/,
    'a run name with a path');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, name => 'Bad_Name' } }), 400,
    'invalid_request', qr/^spec\.name/, 'a bad name in the spec');
err_is($s->api('GET', '/api/runs/nope'), 404, 'not_found',
    qr/^run "nope" not found$/, 'an unknown run');
err_is($s->api('POST', '/api/runs/nope/stop', json => {}), 404,
    'not_found', qr/^run "nope" not found$/, 'stopping an unknown run');
err_is($s->api('GET', '/api/runs/nope/logs'), 404, 'not_found',
    qr/^run "nope" not found$/, 'logs of an unknown run');
err_is($s->api('GET', '/api/runs/..%2F..%2Fetc/logs'), 400,
    'invalid_request', qr/^name: "\.\." is not a valid run name/,
    'an encoded path in the run name');
err_is($s->api('GET', '/api/runs/x%00y/logs'), 400,
    'invalid_request', qr/is not a valid run name/, 'a NUL in the run name');
err_is($s->api('GET', '/api/runs/../logs'), 400, 'invalid_request',
    qr/^name: "\.\." is not a valid run name/, 'a dot-dot run name');

# ---- code -------------------------------------------------------------------------

my $tgz = $s->archive({ 'a.txt' => "a\n" });
my $hash = sha256_hex($tgz);
err_is($s->api('PUT', '/api/code/' . ('0' x 64), body => $tgz), 400,
    'invalid_request', qr/^body: its SHA-256 is $hash, not 0{64}$/,
    'an archive that does not match its hash');
err_is($s->api('PUT', '/api/code/' . sha256_hex("plain"), body => "plain"),
    400, 'invalid_request', qr/^body: not a gzip archive/,
    'a body that is not gzip');
err_is($s->api('PUT', '/api/code/../../etc/passwd', body => $tgz), 400,
    'invalid_request', qr/is not a SHA-256 in lower-case hex$/,
    'a code path that is not a hash');
{
    # a declared size over the limit is refused before the body comes
    my $u = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock)
        or die "$sock: $!";
    DsTest::_send_all($u, "PUT /api/code/$hash HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer " . $s->admin_token . "\r\n"
        . "Content-Length: " . (300 * 1024 * 1024) . "\r\n\r\n", time + 5);
    my $res = DsTest::_read_response($u, timeout => 5);
    err_is($res, 413, 'too_large', qr/^body: larger than 256 MiB$/,
        'an archive over 256 MiB');
}
ok(!glob($s->dir . '/../state/code/.upload-*'), 'no upload left behind');
$r = $s->api('PUT', "/api/code/$hash", body => $tgz);
is($r->{status}, 201, 'a good archive: 201');
is($s->api('HEAD', "/api/code/$hash")->{status}, 200, 'HEAD: it is there');
is($s->api('PUT', "/api/code/$hash", body => $tgz)->{status}, 200,
    'uploading it again: 200');
is($s->api('HEAD', '/api/code/' . ('1' x 64))->{status}, 404,
    'HEAD of an unknown archive: 404');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => $spec, code => 'f' x 64 }), 400,
    'invalid_request', qr/^code: no archive f{64} on the server: upload it first/,
    'apply with an unknown archive');

# ---- offers -----------------------------------------------------------------------

err_is($s->api('POST', '/api/runs/plan',
        json => { spec => { %$spec, resources => { gpu => 'A100:80GB:2' } } }),
    422, 'no_offers',
    qr/^spec\.resources\.gpu: no GPU of the host matches A100:80GB:2; the host has /,
    'plan: a GPU the host lacks');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, resources => { cpu => 4096 } } }),
    422, 'no_offers', qr/^spec\.resources\.cpu: needs 4096 CPUs, the host has \d+$/,
    'apply: too many CPUs');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, resources => { memory => '64TB' } } }),
    422, 'no_offers', qr/^spec\.resources\.memory: needs 65536GB, the host has/,
    'apply: too much memory');
my ($nopy) = grep {
    my $v = $_;
    !grep { -x "$_/python$v" } split /:/, $ENV{PATH};
} map { "3.$_" } 9 .. 14;
SKIP: {
    skip 'every python from 3.9 to 3.14 is installed', 3 unless $nopy;
    err_is($s->api('POST', '/api/runs/plan',
            json => { spec => { %$spec, python => $nopy } }),
        422, 'no_offers',
        qr/^spec\.python: "\Q$nopy\E" needs python\Q$nopy\E on the host/,
        'a python the host lacks');
}
# dstack's cloud fields are ignored with a warning, not refused
for my $c (
    [{ spot_policy => 'spot' }, qr/^spec\.spot_policy: ignored: /],
    [{ backends => ['aws'] }, qr/^spec\.backends\[0\]: ignored: "aws" is not/],
) {
    my $r = $s->api('POST', '/api/runs/plan',
        json => { spec => { %$spec, %{ $c->[0] } } });
    is($r->{status}, 200, "plan with @{[ keys %{ $c->[0] } ]}: accepted")
        or diag $r->{body};
    ok((grep { $_ =~ $c->[1] } @{ $r->{json}{warnings} || [] }),
        "plan with @{[ keys %{ $c->[0] } ]}: warned") or diag $r->{body};
}
err_is($s->api('POST', '/api/runs/plan',
        json => { spec => { %$spec, backends => ['aws', 'container'] } }),
    422, 'no_offers', qr/^spec\.backends: this server has the local backend only$/,
    'another backend');
if ($s->network ne 'netns') {
    err_is($s->api('POST', '/api/runs/plan',
            json => { spec => { %$spec, replicas => 2 } }), 422, 'no_offers',
        qr/^spec\.replicas: 2 replicas of one service all listen on port 8000/,
        'without root: one replica per port');
}
# what only a container has, and files without their archive: refused
err_is($s->api('POST', '/api/runs/plan',
        json => { spec => { %$spec, volumes => [
            { instance_path => '/srv', path => '/data', read_only =>
              JSON::PP::false, optional => JSON::PP::false } ] } }),
    422, 'no_offers', qr/^spec\.volumes: volumes are mounted into a container: they need an image/,
    'volumes without an image');
err_is($s->api('POST', '/api/runs/plan',
        json => { spec => { %$spec, privileged => JSON::PP::true } }),
    422, 'no_offers', qr/^spec\.privileged: applies to a container/,
    'privileged without an image');
err_is($s->api('POST', '/api/runs/apply',
        json => { spec => { %$spec, files => [
            { local_path => 'x', path => undef } ] } }),
    400, 'invalid_request', qr/^files: the spec lists files but the request has no "files" archive \(dstackctl packs and uploads them\)$/,
    'files in the spec without their archive: refused');

# an image needs a container engine; this controld's socket has none
$r = $s->api('POST', '/api/runs/plan',
    json => { spec => { %$spec, image => 'python:3.11-slim' } });
err_is($r, 422, 'no_offers',
    qr{^spec\.image: running an image needs a container engine: no container engine answers at /\S+/no-engine\.sock \(.+\): start Docker, or Podman's service \(podman system service -t 0 unix:///\S+/no-engine\.sock\), or set backends\.container\.socket in /\S+controld\.yml$},
    'an image without an engine: which socket, and how to start one');

$r = $s->api('POST', '/api/runs/plan', json => { spec => $spec });
is($r->{status}, 200, 'plan: 200');
is($r->{json}{offers}[0]{backend}, 'local', 'plan: the local offer');
is($r->{json}{total}, 1, 'plan: one offer');
like($r->{json}{name}, qr/^[a-z]+-[a-z]+-1$/, 'plan: a generated name');
is($r->{json}{exists}, JSON::PP::false, 'plan: a new run');

# ---- nothing changed ----------------------------------------------------------------

is_deeply($s->api('GET', '/api/runs?all=1')->{json}{runs}, [],
    'after all those refusals: no run');
is_deeply([keys %{ $t->dump->{services} || {} }], [],
    'and no service in the state');

# ---- a model name belongs to one service ------------------------------------------------

my $code = $s->upload($s->app_files);
my $mspec = { %$spec, model => 'shared-model', probes => [] };
$r = $s->apply($mspec, name => 'first', code => $code);
is($r->{status}, 201, 'a service with a model');
is($r->{json}{model}{name}, 'shared-model', 'its model');
is($r->{json}{model}{url}, "http://gateway.$domain:$port/v1",
    'published on the gateway');
err_is($s->apply($mspec, name => 'second', code => $code), 409, 'conflict',
    qr/model "shared-model" is already served by service "first"/,
    'the same model for another service');
is($s->run('second'), undef, 'and that run does not exist');

# ---- a model's routing ------------------------------------------------------------------

err_is($s->apply({ %$mspec, model => { name => 'shared-model',
        format => 'openai', routing => { affinity => 'prefix',
        load_factor => 0.5 } } }, name => 'first', code => $code),
    400, 'invalid_request',
    qr/^spec\.model\.routing\.load_factor: expected a number >= 1, got 0\.5$/,
    'a load factor below 1');
ok(!$t->dump->{services}{first}{routing}, '... and the service is as it was');
my $version = $s->run('first')->{version};
$r = $s->apply({ %$mspec, model => { name => 'shared-model',
    format => 'openai', routing => { affinity => 'session' } } },
    name => 'first', code => $code);
is($r->{status}, 200, 'routing added by a re-apply') or diag $r->{body};
is($r->{json}{version}, $version, '... in place, no rollout');
is_deeply($t->dump->{services}{first}{routing},
    { affinity => 'session', prefix_bytes => 512, load_factor => 1.25,
      session_header => 'x-session-id' },
    '... and in the state with its defaults');

# ---- stop arguments ---------------------------------------------------------------------

err_is($s->api('POST', '/api/runs/first/stop', json => { abort => 'yes' }),
    400, 'invalid_request', qr/^abort: expected true or false$/,
    'abort must be a boolean');
err_is($s->api('POST', '/api/runs/first/stop', json => { force => 1 }),
    400, 'invalid_request', qr/^unknown field "force"$/,
    'an unknown stop field');
err_is($s->api('GET', '/api/runs/first/logs?replica=../../x'), 400,
    'invalid_request', qr/^replica: "\.\.\/\.\.\/x" is not a number/,
    'a replica that is not a number');
err_is($s->api('GET', '/api/runs/first/logs?offset=-1'), 400,
    'invalid_request', qr/^offset: "-1" is not a number/,
    'a negative offset');
err_is($s->api('GET', '/api/runs/first/logs?follow=maybe'), 400,
    'invalid_request', qr/^follow: expected 1 or 0$/, 'follow: maybe');
is($s->run('first')->{status} =~ /^(submitted|provisioning|running)$/ ? 1 : 0,
    1, 'the run is untouched by refused stops');

# ---- through nginx -------------------------------------------------------------------------

$r = $t->request('GET', '/api/health', host => "gateway.$domain",
    headers => { Authorization => 'Bearer ' . $s->admin_token });
is($r->{status}, 200, 'the API through nginx on gateway.<domain>: 200')
    or diag $r->{body};
is($r->{json}{domain}, $domain, 'it is controld answering');
$r = $t->request('GET', '/api/health', host => "gateway.$domain");
is($r->{status}, 401, 'through nginx without a token: 401');
$r = $t->request('PUT', "/api/code/$hash", host => "gateway.$domain",
    headers => { Authorization => 'Bearer ' . $s->admin_token },
    body => $tgz);
is($r->{status}, 200, 'an upload through nginx');

$s->finish;
$t->done;
