#!/usr/bin/perl
# HTTP/2 to clients: the shipped TLS server (conf/nginx/dstack-tls.conf,
# "listen 443 ssl http2") answers HTTP/2 to a client that offers it in
# ALPN, and everything the gateway does works over it: Host routing, the
# bearer token (401 without, 200 with, never passed on), many streams on
# one connection (h2load), SSE events that arrive as the replica sends
# them, the model endpoint of gateway.<domain> that reads the request
# body to route by "model" (with Content-Length, without it, and over
# several DATA frames), a service's body limit counted as DATA frames
# arrive, a request held while a service scales from zero (and one whose
# client goes away), WebSocket over HTTP/1.1 on the same port, and 400
# for an HTTP/2 request that carries Upgrade (nginx 1.22 would pass the
# replica's 101 on: "epoll_ctl() failed" alerts).  Clients: curl
# --http2, h2load and nghttp (Debian's nghttp2-client), python3's ssl for
# the WebSocket.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use Test::More;
use IO::Select;
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_DGRAM);
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();
plan skip_all => 'curl with HTTP/2, openssl and python3 are needed'
    unless `curl --version 2>&1` =~ /^Features:.*\bHTTP2\b/m
        && `openssl version 2>&1` =~ /^OpenSSL/
        && `$DsTest::PYTHON -c 'import ssl' 2>&1; echo \$?` =~ /^0$/m;

my $JSON = $DsTest::JSON;
my $t = DsTest->new(workers => 2);
my $dir = $t->dir;
my $D = $t->domain;
my $tls_port = DsTest::free_port();
my ($h2load, $nghttp) = map { my $p = `command -v $_ 2>/dev/null`;
    chomp $p; $p } qw(h2load nghttp);

# ---- certificates, services, tokens -----------------------------------------

DsTest::make_ca($dir, 't72 CA');
DsTest::make_leaf($dir, 'default', "DNS:$D", "DNS:*.$D");

my $notify_path = "$dir/notify.sock";
my $notify = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $notify_path)
    or die "notify socket: $!";

my %addr = map { $_ => $t->backend(name => "r$_") }
    qw(web sec stream alpha beta cold small);
my $tok = 'dst_h2_' . ('k' x 32);

sub svc {
    my ($name, %o) = @_;
    return ({ op => 'service', name => $name, auth => DsTest::false, %o },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr{$name}, state => 'ready',
                             version => 1 }] });
}

$t->seed([
    svc('web'), svc('stream'), svc('small', max_body_size => 1000),
    svc('sec', auth => DsTest::true),
    svc('alpha', model => 'alpha-model'),
    svc('beta', model => 'org/beta-7b', auth => DsTest::true),
    { op => 'service', name => 'cold', auth => DsTest::false,
      hold => DsTest::true, hold_max => 10, hold_timeout_ms => 20000 },
    { op => 'token', token => $tok, name => 't-h2', all => DsTest::true },
]);

# ---- nginx: the shipped TLS server and gateway.<domain> on its port ---------

my $tls = $t->tls_server_conf($tls_port, cert => "$dir/default");
like($tls, qr/listen 127\.0\.0\.1:$tls_port ssl http2;/,
    'dstack-tls.conf listens with http2');

my ($v1) = DsOpenAI::shipped_location();
$t->{opts}{http} = <<"EOF";
dstack_notify $notify_path;
dstack_hold_poll 10ms;
$tls
    server {
        listen 127.0.0.1:$tls_port ssl http2;
        server_name gateway.$D;
        ssl_certificate $dir/default.crt;
        ssl_certificate_key $dir/default.key;
        dstack_domain $D;

        # what a request carried, for the checks below
        location = /v1/headers {
            return 200 "cl=\$http_content_length\n";
        }

$v1
    }
EOF
$t->start;

# ---- clients ----------------------------------------------------------------

# curl over TLS to HOST on the TLS port.  %o: http => '--http2' (default)
# or '--http1.1', headers => [...], body => bytes (sent from a file with
# Content-Length, or from a pipe without it: stdin => 1).  Returns
# { version, status, headers (lower-case names), head (as received),
# body }.
my $n_curl = 0;
sub curl {
    my ($host, $path, %o) = @_;
    my $id = ++$n_curl;
    my @cmd = ('curl', '-sS', $o{http} // '--http2', '--cacert',
        "$dir/ca.crt", '--resolve', "$host:$tls_port:127.0.0.1",
        '-D', "$dir/h$id.head", '-o', "$dir/h$id.body",
        '-w', '%{http_version} %{http_code}', '--max-time', $o{timeout} // 20);
    push @cmd, map { ('-H', $_) } @{ $o{headers} || [] };
    if (defined $o{body}) {
        DsTest::_write("$dir/h$id.req", $o{body});
        push @cmd, $o{stdin} ? ('-X', 'POST', '-T', '-')
                             : ('--data-binary', "\@$dir/h$id.req");
    }
    push @cmd, "https://$host:$tls_port$path";
    my $q = join ' ', map { "'$_'" } @cmd;
    # from a pipe curl cannot know the length: DATA frames only
    $q = "cat $dir/h$id.req | $q" if $o{stdin};
    my $out = `$q 2>&1`;
    my ($version, $status) = $out =~ /(\S+) (\d+)$/ ? ($1, $2) : ('', 0);
    my $head = -f "$dir/h$id.head" ? DsTest::_slurp("$dir/h$id.head") : '';
    my %h;
    $h{ lc $1 } = $2 while $head =~ /^([\w-]+):\s*([^\r\n]*)/mg;
    my $body = -f "$dir/h$id.body" ? DsTest::_slurp("$dir/h$id.body") : '';
    return { version => $version, status => $status, headers => \%h,
             head => $head, body => $body, out => $out };
}

sub json_of { my $b = shift; my $j = eval { $JSON->decode($b) }; $j // {} }

# ---- HTTP/2 and Host routing ------------------------------------------------

my $r = curl("web.$D", '/hello?x=1');
is($r->{version}, '2', 'curl --http2 gets HTTP/2 from the TLS server')
    or diag $r->{out};
like($r->{head}, qr{^HTTP/2 200}, 'the answer\'s status line: HTTP/2 200');
is(json_of($r->{body})->{replica}, 'rweb', 'web.<domain>: its replica');
is(json_of($r->{body})->{path}, '/hello?x=1', 'the URI as sent');
is(json_of($r->{body})->{headers}{host}, "web.$D",
    'the replica sees the Host from :authority');

$r = curl("stream.$D", '/');
is(json_of($r->{body})->{replica}, 'rstream', 'stream.<domain>: another one');
$r = curl("nope.$D", '/');
is("$r->{version} $r->{status}", '2 404', 'an unknown service: 404');

$r = curl("web.$D", '/', http => '--http1.1');
is("$r->{version} $r->{status}", '1.1 200',
    'a client that offers only http/1.1 still gets HTTP/1.1');

# ---- auth -------------------------------------------------------------------

$r = curl("sec.$D", '/');
is("$r->{version} $r->{status}", '2 401', 'auth: no token, 401 over HTTP/2');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/,
    'with WWW-Authenticate: Bearer');
$r = curl("sec.$D", '/', headers => ['Authorization: Bearer dst_wrong_x']);
is($r->{status}, 401, 'a wrong token: 401');
$r = curl("sec.$D", '/s', headers => ["Authorization: Bearer $tok"]);
is("$r->{version} $r->{status}", '2 200', 'the token: 200 over HTTP/2');
my $seen = json_of($r->{body})->{headers} // {};
is($seen->{authorization}, undef, 'the gateway token stays at the gateway');
is($seen->{'x-forwarded-proto'}, 'https', 'X-Forwarded-Proto: https');

# ---- many streams on one connection -----------------------------------------

SKIP: {
    skip 'h2load (Debian package nghttp2-client) is not installed', 4
        unless $h2load;
    my $before = ($t->service_stats('web') // {})->{requests} // {};
    my $cmd = "$h2load -n 400 -c 2 -m 20 --connect-to 127.0.0.1:$tls_port "
        . "https://web.$D:$tls_port/m";
    my $out = `$cmd 2>&1`;
    like($out, qr/Application protocol: h2/, 'h2load negotiates h2')
        or diag $out;
    like($out, qr/requests: 400 total, 400 started, 400 done, 400 succeeded/,
        '400 requests, 20 streams at a time on 2 connections, all done');
    like($out, qr/status codes: 400 2xx/, 'all answered 2xx');
    ok(DsTest::wait_until(sub {
        my $s = ($t->service_stats('web') // {})->{requests} // {};
        (($s->{'2xx'} // 0) - ($before->{'2xx'} // 0)) >= 400 }),
        'the module counted them for the service');
}

# ---- SSE arrives as it is sent ----------------------------------------------

{
    my $t0 = time;
    open(my $fh, '-|', 'curl', '-sS', '-N', '--http2', '--cacert',
        "$dir/ca.crt", '--resolve', "stream.$D:$tls_port:127.0.0.1",
        '-w', '\nversion %{http_version}\n', '--max-time', '20',
        "https://stream.$D:$tls_port/sse?n=5&ms=400") or die "curl: $!";
    my (@at, @ev, $version);
    while (my $line = <$fh>) {
        if ($line =~ /^data: (.*)/) {
            push @at, time - $t0;
            push @ev, $1;
        }
        $version = $1 if $line =~ /^version (\S+)/;
    }
    close $fh;
    is($version, '2', 'SSE over HTTP/2');
    is(scalar @ev, 6, 'five events and [DONE]');
    is($ev[-1], '[DONE]', 'the last one is [DONE]');
    my $gaps_ok = @at == 6;
    for my $i (1 .. 4) {
        $gaps_ok &&= $at[$i] - $at[$i - 1] > 0.2;
    }
    ok($gaps_ok, 'each event arrives when sent (~0.4 s apart), not at the '
        . 'end') or diag "arrivals: @at";
}

# ---- the model endpoint reads the body over HTTP/2 --------------------------

sub chat {
    my ($model, %o) = @_;
    my $body = $o{raw} // $JSON->encode({ model => $model,
        messages => [{ role => 'user', content => $o{content} // 'hi' }] });
    return curl("gateway.$D", '/v1/chat/completions', body => $body,
        headers => ['Content-Type: application/json',
                    @{ $o{headers} || [] }], %o);
}

$r = chat('alpha-model');
is("$r->{version} $r->{status}", '2 200',
    'POST /v1/chat/completions over HTTP/2: 200') or diag $r->{body};
is(json_of($r->{body})->{replica}, 'ralpha', '"alpha-model": its service');
is(json_of($r->{body})->{path}, '/v1/chat/completions', 'at the same URI');
ok(json_of($r->{body})->{body_len} > 20, 'the replica got the body');

$r = chat('org/beta-7b');
is($r->{status}, 401, 'a model of an auth service: 401 without a token');
$r = chat('org/beta-7b', headers => ["Authorization: Bearer $tok"]);
is(json_of($r->{body})->{replica}, 'rbeta', 'and its replica with one');

$r = curl("gateway.$D", '/v1/headers', body => 'abc', stdin => 1);
is($r->{body}, "cl=\n", '(curl sends a body from a pipe without '
    . 'Content-Length)');
$r = chat('alpha-model', stdin => 1);
is("$r->{version} $r->{status}", '2 200',
    'a body without Content-Length (DATA frames only): 200')
    or diag $r->{body};
is(json_of($r->{body})->{replica}, 'ralpha', 'routed by its model');

# the service's body limit, counted as DATA frames arrive
for my $stdin (0, 1) {
    my $how = $stdin ? 'without' : 'with';
    $r = curl("small.$D", '/echo', body => 'z' x 900, stdin => $stdin);
    is("$r->{status} " . length($r->{body}), '200 900',
        "max_body_size 1000: 900 bytes $how Content-Length pass");
    $r = curl("small.$D", '/echo', body => 'z' x 5000, stdin => $stdin);
    is($r->{status}, 413, "5000 bytes $how Content-Length: 413");
}

# larger than a flow-control window: several DATA frames, WINDOW_UPDATEs
my $big = 'x' x (300 * 1024);
for my $stdin (0, 1) {
    $r = chat('org/beta-7b', content => $big, stdin => $stdin,
        headers => ["Authorization: Bearer $tok"]);
    my $j = json_of($r->{body});
    is("$r->{status} " . ($j->{replica} // ''), '200 rbeta',
        "a 300 KiB body, " . ($stdin ? 'without' : 'with')
        . " Content-Length: routed") or diag $r->{body};
    cmp_ok($j->{body_len} // 0, '>', 300 * 1024, 'all of it reached it');
}

$r = chat('no-such-model');
is($r->{status}, 404, 'an unknown model: 404');
like($r->{body}, qr/model_not_found/, 'in OpenAI\'s error shape');
$r = chat('', raw => '{"model": ');
is($r->{status}, 400, 'a body that does not parse: 400');
$r = chat('alpha-model', content => 'y' x (5 * 1024 * 1024), stdin => 1);
is($r->{status}, 413, 'a body over the limit without Content-Length: 413');

# ---- held while the service scales from zero --------------------------------

{
    my $pid = open(my $fh, '-|', 'curl', '-sS', '--http2', '--cacert',
        "$dir/ca.crt", '--resolve', "cold.$D:$tls_port:127.0.0.1",
        '-w', '\n%{http_version} %{http_code}', '--max-time', '20',
        "https://cold.$D:$tls_port/woke") or die "curl: $!";
    my $msg = '';
    if (IO::Select->new($notify)->can_read(10)) {
        $notify->recv($msg, 256);
    }
    is($msg, "hold cold\n", 'a request over HTTP/2 for a service at zero '
        . 'wakes controld');
    ok(DsTest::wait_until(sub {
        ((($t->service_stats('cold') // {})->{hold} // {})->{held} // 0) == 1
    }), 'and is held');
    # another one whose client goes away: its place is freed
    my $gone = open(my $gh, '-|', 'curl', '-sS', '--http2', '--cacert',
        "$dir/ca.crt", '--resolve', "cold.$D:$tls_port:127.0.0.1",
        "https://cold.$D:$tls_port/gone") or die "curl: $!";
    ok(DsTest::wait_until(sub {
        ((($t->service_stats('cold') // {})->{hold} // {})->{held} // 0) == 2
    }), 'a second one is held');
    kill 'TERM', $gone;
    close $gh;
    ok(DsTest::wait_until(sub {
        ((($t->service_stats('cold') // {})->{hold} // {})->{held} // 0) == 1
    }), 'its client goes away: its place is freed');

    $t->seed([{ op => 'replicas', service => 'cold',
                replicas => [{ addr => $addr{cold}, state => 'ready',
                               version => 1 }] }]);
    my $out = do { local $/; <$fh> };
    close $fh;
    like($out, qr/"replica": ?"rcold".*\n2 200$/s,
        'a replica ready: the held request is answered over HTTP/2')
        or diag $out;
}

# ---- WebSocket over HTTP/1.1 on the same port -------------------------------

my $ws = <<'EOF';
import base64, os, socket, ssl, struct, sys
port, host, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2", "http/1.1"]) if sys.argv[4] == "h2" else \
    ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                    server_hostname=host)
print("alpn", s.selected_alpn_protocol())
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n" % (host, key)).encode())
f = s.makefile("rb")
print("status", f.readline().decode().strip())
while f.readline() not in (b"\r\n", b""):
    pass
for msg in (b"over tls", b"and again"):
    mask = os.urandom(4)
    s.sendall(struct.pack("!BB", 0x81, 0x80 | len(msg)) + mask +
              bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
    b0, n = f.read(2)
    print("echo", f.read(n & 0x7f).decode())
EOF
DsTest::_write("$dir/ws.py", $ws);
my $out = `$DsTest::PYTHON $dir/ws.py $tls_port web.$D $dir/ca.crt http1 2>&1`;
like($out, qr/^alpn http\/1\.1$/m, 'WebSocket client: ALPN http/1.1');
like($out, qr/^status HTTP\/1\.1 101/m, 'the upgrade: 101');
like($out, qr/^echo over tls\necho and again$/m,
    'frames both ways through the gateway');

# an Upgrade over HTTP/2 (RFC 9113: malformed): 400, never a 101 passed on
SKIP: {
    skip 'nghttp (Debian package nghttp2-client) is not installed', 3
        unless $nghttp;
    my $n0 = grep { $_->{path} eq '/ws' } $t->backend_requests('rweb');
    my $h = join ' ', map { "-H '$_'" } (":authority: web.$D",
        'upgrade: websocket', 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==',
        'sec-websocket-version: 13');
    $out = `$nghttp -v $h https://127.0.0.1:$tls_port/ws 2>&1`;
    like($out, qr/:status: 400/, 'Upgrade over HTTP/2: 400') or diag $out;
    like($out, qr/not allowed over HTTP\/2/, 'saying why');
    my $n1 = grep { $_->{path} eq '/ws' } $t->backend_requests('rweb');
    is($n1, $n0, 'and the replica never saw it');
}

$t->done;
