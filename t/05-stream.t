#!/usr/bin/perl
# Forwarding: SSE and chunked answers reach the client as they come (chunk
# arrival is timed), WebSocket upgrade and echo, request bodies with
# Content-Length and chunked, the per-service body limit (413), the
# per-service read timeout (504) against the one-hour default, and the
# X-Forwarded-* headers.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use Time::HiRes qw(time sleep);
use MIME::Base64 qw(encode_base64);
use Digest::SHA qw(sha1);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my %addr = map { $_ => $t->backend(name => $_) } qw(r1 r2 r3 r4);

sub svc {
    my ($name, $replica, %o) = @_;
    return ({ op => 'service', name => $name, auth => DsTest::false, %o },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr{$replica}, state => 'ready',
                             version => 1 }] });
}

$t->seed([
    svc('stream', 'r1'),
    svc('small', 'r2', max_body_size => 1000),
    svc('quick', 'r3', read_timeout_ms => 1000),
    svc('patient', 'r4'),
]);
$t->start;

# Arrival time of each piece of the body that matches RE, in order: the
# time of the chunk in which the match ended.
sub arrivals {
    my ($res, $re) = @_;
    my ($body, @at) = ('');
    my $pos = 0;
    for my $c (@{ $res->{chunks} }) {
        $body .= $c->{data};
        pos($body) = $pos;
        while ($body =~ /$re/g) {
            push @at, { t => $c->{t}, text => $1 };
            $pos = pos($body);
        }
    }
    return @at;
}

# ---- SSE ----------------------------------------------------------------------

my $r = $t->get('stream', '/sse?n=5&ms=300', timeout => 15);
is($r->{status}, 200, 'SSE: 200');
like($r->{headers}{'content-type'} // '', qr{^text/event-stream},
    'SSE: text/event-stream');
my @ev = arrivals($r, qr/data: (.*?)\n\n/);
is(scalar @ev, 6, 'SSE: 5 events and [DONE]')
    or diag explain [map { $_->{text} } @ev];
is($ev[-1]{text}, '[DONE]', 'SSE: [DONE] last') if @ev;
SKIP: {
    skip 'not all events came', 6 unless @ev == 6;
    my @sent = map { eval { $DsTest::JSON->decode($_->{text}) } || {} }
        @ev[0 .. 4];
    my @gap = map { $ev[$_]{t} - $ev[$_ - 1]{t} } 1 .. 4;
    note sprintf 'headers after %.3f s; events at %s; end %.3f s',
        $r->{t_headers} - $r->{t_start},
        join(' ', map { sprintf '%.3f', $_->{t} - $r->{t_start} } @ev),
        $r->{t_end} - $r->{t_start};
    cmp_ok($ev[0]{t} - $r->{t_headers}, '>', 0.15,
        'SSE: the headers come before the first event (0.3 s later)');
    cmp_ok($ev[4]{t} - $ev[0]{t}, '>', 0.8,
        'SSE: events spread over time (1.2 s from first to last)');
    cmp_ok((sort { $a <=> $b } @gap)[0], '>', 0.1,
        'SSE: every gap between events is well above 0 (0.3 s)')
        or diag "gaps: @gap";
    cmp_ok($r->{t_end} - $ev[0]{t}, '>', 0.8,
        'SSE: the first event came long before the end');
    my $late = 0;
    for my $i (0 .. 4) {
        my $d = $ev[$i]{t} - ($sent[$i]{t} // 0);
        $late = $d if $d > $late;
    }
    cmp_ok($late, '<', 0.6,
        'SSE: each event reaches the client soon after the replica sent '
        . 'it (buffering would delay the first by 1.2 s)');
    is_deeply([map { $_->{i} } @sent], [0 .. 4], 'SSE: events in order');
}

# ---- chunked --------------------------------------------------------------------

$r = $t->get('stream', '/chunked?n=5&ms=300', timeout => 15);
is($r->{status}, 200, 'chunked: 200');
like($r->{headers}{'transfer-encoding'} // '', qr/chunked/i,
    'chunked: chunked to the client');
my @ch = arrivals($r, qr/(chunk \d+)\n/);
is_deeply([map { $_->{text} } @ch], [map { "chunk $_" } 0 .. 4],
    'chunked: the 5 chunks, in order');
SKIP: {
    skip 'not all chunks came', 3 unless @ch == 5;
    my @gap = map { $ch[$_]{t} - $ch[$_ - 1]{t} } 1 .. 4;
    cmp_ok($ch[4]{t} - $ch[0]{t}, '>', 0.8,
        'chunked: chunks spread over time (1.2 s from first to last)');
    cmp_ok((sort { $a <=> $b } @gap)[0], '>', 0.1,
        'chunked: every gap well above 0 (0.3 s)') or diag "gaps: @gap";
    cmp_ok($ch[0]{t} - $r->{t_start}, '<', 0.9,
        'chunked: the first chunk comes at ~0.3 s, not at the end (1.5 s)');
}

# ---- WebSocket ----------------------------------------------------------------------

my $ws = $t->websocket('stream.test.local', '/ws');
is($ws->{status}, 101, 'WebSocket: 101 Switching Protocols')
    or diag $ws->{body} // $ws->{error};
SKIP: {
    skip 'no upgrade', 12 unless $ws->{status} == 101 && $ws->{sock};
    my $key = 'dGhlIHNhbXBsZSBub25jZQ==';
    is($ws->{headers}{'sec-websocket-accept'},
        encode_base64(sha1($key . '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'), ''),
        'WebSocket: Sec-WebSocket-Accept matches the key');
    like($ws->{headers}{upgrade} // '', qr/^websocket$/i,
        'WebSocket: Upgrade: websocket');
    is($ws->{rest}, '', 'WebSocket: nothing after the 101 yet');
    my $s = $ws->{sock};
    for my $msg ('hello', 'x' x 200, join('', map { chr(32 + $_ % 90) }
        0 .. 69_999))
    {
        DsTest::ws_send($s, $msg);
        my ($op, $data) = DsTest::ws_recv($s, 10);
        ok(defined $op && $op == 1 && defined $data && $data eq $msg,
            'WebSocket: a ' . length($msg) . '-byte text frame comes back')
            or diag 'got opcode ' . ($op // 'none') . ', '
                . length($data // '') . ' bytes';
    }
    DsTest::ws_send($s, "\x00\x01\xfe\xff", 2);
    my ($op, $data) = DsTest::ws_recv($s, 10);
    ok(defined $op && $op == 2 && $data eq "\x00\x01\xfe\xff",
        'WebSocket: a binary frame comes back');
    DsTest::ws_send($s, 'p1', 9);
    ($op, $data) = DsTest::ws_recv($s, 10);
    ok(defined $op && $op == 10 && $data eq 'p1', 'WebSocket: ping -> pong');
    # a quiet second: the upgraded connection is not cut
    sleep 1;
    DsTest::ws_send($s, 'after a pause');
    ($op, $data) = DsTest::ws_recv($s, 10);
    is($data, 'after a pause', 'WebSocket: still open after a pause');
    DsTest::ws_send($s, pack('n', 1000), 8);
    ($op, $data) = DsTest::ws_recv($s, 10);
    is($op, 8, 'WebSocket: close is answered with close');
    close $s;
    my ($up) = grep { $_->{path} eq '/ws' } $t->backend_requests('r1');
    is(lc($up->{headers}{upgrade} // ''), 'websocket',
        'the replica saw Upgrade: websocket');
    like($up->{headers}{connection} // '', qr/upgrade/i,
        'the replica saw Connection: upgrade');
    is($up->{headers}{'sec-websocket-key'}, $key,
        'the replica saw the client key');
}

# a plain request on the same service still gets a keep-alive-able
# upstream connection: Connection is not "upgrade"
$r = $t->get('stream', '/plain');
unlike($r->{json}{headers}{connection} // '', qr/upgrade/i,
    'a request without Upgrade does not send Connection: upgrade');

# ---- request bodies ----------------------------------------------------------------------

my $big = join '', map { chr(65 + $_ % 26) } 0 .. (1 << 20) - 1;
$r = $t->request('POST', '/body', host => 'stream.test.local', body => $big,
    timeout => 20);
is($r->{status}, 200, 'POST 1 MiB with Content-Length: 200');
is($r->{json}{body_len}, length $big, 'the replica got all 1 MiB');
is($r->{json}{headers}{'content-length'}, length $big,
    'with its Content-Length');

$r = $t->request('POST', '/echo', host => 'stream.test.local',
    body => substr($big, 0, 300_000), chunked => 1, timeout => 20);
is($r->{status}, 200, 'POST 300 kB chunked: 200');
ok($r->{body} eq substr($big, 0, 300_000),
    'the chunked body reaches the replica byte for byte')
    or diag length($r->{body} // '') . ' bytes came back';

$r = $t->request('PUT', '/body', host => 'stream.test.local', body => '');
is($r->{json}{body_len}, 0, 'an empty body (Content-Length: 0)');

# ---- body limit: 413 -------------------------------------------------------------------

my $r2_before = scalar $t->backend_requests('r2');
$r = $t->request('POST', '/body', host => 'small.test.local',
    body => 'a' x 1000);
is($r->{status}, 200, 'a body at the limit (1000 bytes): 200');
is($r->{json}{body_len}, 1000, 'and it arrives whole');

$r = $t->request('POST', '/body', host => 'small.test.local',
    body => 'a' x 1001);
is($r->{status}, 413, 'Content-Length 1001 over a 1000-byte limit: 413');
is($r->{headers}{'content-type'}, 'application/json', '413 is JSON');
is(ref $r->{json} && $r->{json}{error}{type}, 'request_too_large',
    '413: error type request_too_large') or diag $r->{body};

$r = $t->request('POST', '/body', host => 'small.test.local',
    body => 'b' x 200_000);
is($r->{status}, 413, 'a 200 kB body over the limit: 413');

$r = $t->request('POST', '/body', host => 'small.test.local',
    body => 'c' x 5000, chunked => 1);
is($r->{status}, 413, 'a chunked 5000-byte body over the limit: 413')
    or diag "$r->{status} " . ($r->{body} // $r->{error});

$r = $t->request('POST', '/body', host => 'small.test.local',
    body => 'c' x 600_000, chunked => 1, timeout => 20);
is($r->{status}, 413, 'a chunked 600 kB body over the limit: 413')
    or diag "$r->{status} " . ($r->{body} // $r->{error});

my @got = $t->backend_requests('r2');
splice @got, 0, $r2_before;
is_deeply([map { $_->{body_len} } @got], [1000],
    'of those, only the body at the limit reached the replica');

$r = $t->request('POST', '/body', host => 'small.test.local',
    body => 'a' x 10, chunked => 1);
is($r->{status}, 200, 'a small chunked body on the limited service: 200');
is($r->{json}{body_len}, 10, 'and it arrives');

# ---- read timeout per service ------------------------------------------------------

my $t0 = time;
$r = $t->get('quick', '/slow?ms=3000', timeout => 15);
my $took = time - $t0;
is($r->{status}, 504, 'read_timeout_ms 1000 and a 3 s answer: 504');
cmp_ok($took, '>=', 0.9, 'after about 1 s (not at once)');
cmp_ok($took, '<', 2.8, 'and before the replica answered (3 s)');
$t->allow_log(qr/upstream timed out/);

$r = $t->get('quick', '/sse?n=4&ms=600', timeout => 15);
is($r->{status}, 200, 'read_timeout_ms 1000: events every 0.6 s pass '
    . '(the timeout is between two reads)');
like($r->{body}, qr/data: \[DONE\]/, 'and the stream completes');

$r = $t->get('quick', '/slow?ms=200');
is($r->{status}, 200, 'read_timeout_ms 1000: a 0.2 s answer passes');

$t0 = time;
$r = $t->get('patient', '/slow?ms=3000', timeout => 15);
is($r->{status}, 200, 'the default read timeout (1 h) lets a 3 s answer '
    . 'through');
cmp_ok(time - $t0, '>=', 2.9, 'which took its 3 s');

# ---- forwarding headers ----------------------------------------------------------------

$r = $t->get('stream', '/fwd', headers => { 'X-Forwarded-For' => '10.0.0.7' });
my $h = $r->{json}{headers} || {};
is($h->{'x-forwarded-for'}, '10.0.0.7, 127.0.0.1',
    'X-Forwarded-For: what came, then the client');
is($h->{'x-real-ip'}, '127.0.0.1', 'X-Real-IP: the client');
is($h->{'x-forwarded-proto'}, 'http', 'X-Forwarded-Proto: http');
is($h->{host}, 'stream.test.local', 'Host unchanged');

$t->done;
