#!/usr/bin/perl
# The API over TCP (controld.yml's api_listen) and nginx in front of
# several controld instances (conf/nginx/dstack-api-shared.conf, HTTPS):
#   - -n checks api_listen's address;
#   - the API answers on the TCP port: 200 with the admin token, 401
#     without, as on its unix socket (which still answers);
#   - through the shipped snippet, upstream [A, B]: with only A listening
#     every request is answered by A, POSTs included (a refused
#     connection goes to the next server); with both listening an answer
#     is passed on as it is (B's 401 for A's token is never retried on
#     A); with only B listening, B answers; with none, a JSON 503
#     "unavailable" that dstackctl prints, exiting 1 after one request;
#   - dstackctl prints a 503's message in either JSON shape, and says
#     "unavailable" for a 503 without one.
# Two controld instances in embedded mode, each with its own state: the
# upstream only needs one of them listening at a time.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsShared;
use POSIX qw(:sys_wait_h);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();
plan skip_all => 'the openssl and curl commands are needed'
    unless `openssl version 2>&1` =~ /^OpenSSL/ && `curl --version 2>&1`;

my $t = DsTest->new(seed_empty => 0, workers => 1);
my $tb = DsTest->new(seed_empty => 0);      # B's directory and state
my $sa = DsStack->new($t);
my $sb = DsStack->new($tb);
my ($pa, $pb) = (DsTest::free_port(), DsTest::free_port());

# ---- -n ----------------------------------------------------------------------

my ($rc, $out) = $sa->check_conf("domain: a.b\napi_listen: 127.0.0.1:$pa\n");
is($rc, 0, '-n: api_listen 127.0.0.1:PORT') or diag $out;
($rc, $out) = $sa->check_conf("domain: a.b\napi_listen: \"[::1]:$pa\"\n");
is($rc, 0, '-n: api_listen [::1]:PORT') or diag $out;
for my $c (
    ['localhost:8181', qr/"localhost" is not a numeric IP address/],
    ['10.0.0.300:8181', qr/"10\.0\.0\.300" is not a numeric IP address/],
    ['127.0.0.1:0', qr/the port must be a number from 1 to 65535/],
    ['127.0.0.1:65536', qr/the port must be a number from 1 to 65535/],
    ['127.0.0.1:http', qr/the port must be a number from 1 to 65535/],
    ['8181', qr/expected ADDR:PORT/],
    ['::1:8181', qr/an IPv6 address goes in brackets/],
) {
    ($rc, $out) = $sa->check_conf("domain: a.b\napi_listen: \"$c->[0]\"\n",
        'bad');
    isnt($rc, 0, "-n: api_listen $c->[0]: refused");
    like($out, qr/:2:13: api_listen: "\Q$c->[0]\E": /, "-n: api_listen "
        . "$c->[0]: where") or diag $out;
    like($out, $c->[1], "-n: api_listen $c->[0]: why") or diag $out;
}

# ---- nginx: the shipped snippet, on this test's ports ----------------------------

my $snip = DsShared::api_snippet($t, [$pa, $pb], http => $t->port);
my ($tls, $certs, $conf) = @$snip{qw(tls certs conf)};

# a server that answers a 503 in other shapes, for dstackctl
my $odd = DsTest::free_port();
$conf .= <<"EOF";
server {
    listen 127.0.0.1:$odd;
    location /flat/api/ {
        default_type application/json;
        return 503 '{"error":"unavailable","message":"flat shape: no leader now"}';
    }
    location /bare/api/ {
        return 503;
    }
}
EOF
$t->write_conf(http => $conf);

$sa->start_controld(extra => "api_listen: 127.0.0.1:$pa\n");
$t->start;
my ($tok_a) = ($sa->admin_token);

# ---- the API on TCP ------------------------------------------------------------

sub tcp {
    my ($p, $method, $path, %o) = @_;
    my %h = $o{token} ? (Authorization => "Bearer $o{token}") : ();
    return $t->request($method, $path, port => $p, host => 'localhost',
        headers => \%h, $o{body} ? (body => $o{body}) : ());
}

my $r = tcp($pa, 'GET', '/api/health', token => $tok_a);
is($r->{status}, 200, 'api_listen: GET /api/health with the admin token: 200')
    or diag explain $r;
$r = tcp($pa, 'GET', '/api/health');
is($r->{status}, 401, 'api_listen: without a token: 401');
is($r->{json} && $r->{json}{error}{type}, 'unauthorized',
    '... the API\'s own error') or diag $r->{body};
$r = tcp($pa, 'GET', '/api/health', token => 'dst_nope');
is($r->{status}, 401, 'api_listen: a bad token: 401');
is($sa->api('GET', '/api/health')->{status}, 200,
    'the unix socket answers as well');
is_deeply($sa->api('GET', '/api/cluster')->{json}, { mode => 'embedded' },
    'GET /api/cluster: embedded mode');
is($sa->api('GET', '/api/cluster', no_token => 1)->{status}, 401,
    'and it wants the admin token');
like($sa->log_text, qr/API listening on \S+ and on 127\.0\.0\.1:$pa \(plain HTTP: a private network only\)/,
    'the log says where, and that it is plain HTTP');

# the TCP socket goes to the unprivileged API process like the unix one,
# and nothing else does
sub api_pid {
    my $ppid = $sa->pid;
    opendir(my $d, '/proc') or return;
    my @p;
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $st = DsTest::_slurp("/proc/$pid/stat");
        next unless $st =~ /\)\s+([A-Za-z])\s+(\d+)/ && $2 == $ppid
            && $1 ne 'Z';
        push @p, $pid
            if DsTest::_slurp("/proc/$pid/cmdline") =~ /(?:^|\0)-A\0/;
    }
    closedir $d;
    return @p == 1 ? $p[0] : undef;
}
my $api = api_pid();
ok($api, 'the API process') or BAIL_OUT('no API process');
like(DsTest::_slurp("/proc/$api/cmdline"), qr/\0-M\0\d+:\d+:\d+:tcp\0/,
    'told that it has the TCP socket (-M ...:tcp)');
my @fds;
opendir(my $fdd, "/proc/$api/fd") or die "/proc/$api/fd: $!";
for my $fd (sort { $a <=> $b } grep { /^\d+$/ } readdir $fdd) {
    push @fds, "$fd -> " . (readlink("/proc/$api/fd/$fd") // '?');
}
closedir $fdd;
is_deeply([ grep { m{ -> /} && !/^[012] / } @fds ], [],
    'it holds no file but stdio') or diag join "\n", @fds;
is(scalar(grep { / -> socket:/ } @fds), 3, 'three sockets: the unix '
    . 'one, the TCP one and the socketpair') or diag join "\n", @fds;
SKIP: {
    skip 'not root: the API process keeps our user', 1 if $< != 0;
    my ($uid) = DsTest::_slurp("/proc/$api/status") =~ /^Uid:\s+(\d+)/m;
    is($uid, scalar getpwnam('nobody'), 'it runs as nobody');
}

# ---- through nginx: A listens, B does not ------------------------------------------

sub https {
    my ($method, $path, $token, $body) = @_;
    my @cmd = ('curl', '-sS', '--cacert', "$certs/ca.crt", '-X', $method,
        '-o', '-', '-D', $t->dir . '/curl.hdr', '-w', "\n%{http_code}",
        "https://127.0.0.1:$tls$path");
    push @cmd, '-H', "Authorization: Bearer $token" if $token;
    push @cmd, '-H', 'Content-Type: application/json', '--data', $body
        if defined $body;
    my ($rc, $o, $e) = DsTest::_run(\@cmd);
    my ($text, $code) = $o =~ /\A(.*)\n(\d+)\z/s
        or return { status => 0, error => "curl: $rc $e" };
    my $json = eval { JSON::PP->new->decode($text) };
    return { status => $code, body => $text, json => $json,
        headers => DsTest::_slurp($t->dir . '/curl.hdr') };
}

sub statuses {
    my ($n, $method, $path, $token, $body) = @_;
    my %seen;
    for my $i (1 .. $n) {
        my $x = https($method, $path, $token,
            defined $body ? sprintf($body, $i) : undef);
        $seen{$x->{status}}++;
    }
    return join ' ', map { "${_}x$seen{$_}" } sort keys %seen;
}

is(statuses(6, 'GET', '/api/health', $tok_a), '200x6',
    'A listens, B not: every GET is answered by A (B\'s refusal skipped)');
is(statuses(4, 'POST', '/api/tokens', $tok_a,
    '{"name":"a-%d","scope":"admin"}'), '201x4',
    '... and every POST: a refused connection is not a sent request');

# ---- both listen: an answer is never retried ------------------------------------------

eval { $sb->start_controld(extra => "api_listen: 127.0.0.1:$pa\n") };
like($@, qr/api_listen 127\.0\.0\.1:$pa: Address already in use \(another dstack-controld, or another program, has that port\)/,
    'B on A\'s port: it does not start, and says why');
ok(!-e $sb->socket_path, '... leaving no socket behind');
$sb->start_controld(extra => "api_listen: 127.0.0.1:$pb\n");
my $tok_b = $sb->admin_token;
isnt($tok_b, $tok_a, 'B has an admin token of its own');
like(statuses(8, 'GET', '/api/health', $tok_a), qr/^200x[1-7] 401x[1-7]$/,
    'both listen: A answers 200, B 401 to A\'s token; B\'s answer is '
    . 'passed on, never retried on A');

# ---- only B ----------------------------------------------------------------------

$sa->stop_controld;
ok(!DsTest::_port_open($pa), 'A stopped: its port is closed');
is(statuses(6, 'GET', '/api/health', $tok_b), '200x6',
    'only B listens: B answers every GET');
is(statuses(4, 'POST', '/api/tokens', $tok_b,
    '{"name":"b-%d","scope":"admin"}'), '201x4', '... and every POST');

# ---- none --------------------------------------------------------------------------

$sb->stop_controld;
$r = https('GET', '/api/runs', $tok_b);
is($r->{status}, 503, 'none listens: 503');
is($r->{json} && $r->{json}{error}{type}, 'unavailable', '... "unavailable"')
    or diag $r->{body};
like($r->{json} && $r->{json}{error}{message},
    qr/^no dstack-controld instance answers/, '... and why');
like($r->{headers}, qr/^Retry-After: 5\r?$/mi, '... Retry-After: 5');

sub cli {
    my ($server, @args) = @_;
    my $tmp = $t->dir . '/cli';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', "$tmp.out" or POSIX::_exit(127);
        open STDERR, '>', "$tmp.err" or POSIX::_exit(127);
        my $env = $t->_san_env;
        $ENV{$_} = $env->{$_} for keys %$env;
        delete @ENV{qw(DSTACK_CONFIG DSTACK_PROJECT)};
        $ENV{HOME} = $t->dir;
        $ENV{DSTACK_SERVER} = $server;
        $ENV{DSTACK_TOKEN} = $tok_b;
        $ENV{DSTACK_CA} = "$certs/ca.crt";
        exec "$DsTest::BUILD/dstackctl", @args or POSIX::_exit(127);
    }
    waitpid($pid, 0);
    return ($? >> 8, DsTest::_slurp("$tmp.out"), DsTest::_slurp("$tmp.err"));
}

my $before = () = $t->access_log =~ m{"GET /api/runs}g;
my ($crc, $cout, $cerr) = cli("https://127.0.0.1:$tls", 'ps');
is($crc, 1, 'dstackctl ps with no instance answering: exit 1');
like($cerr, qr/^dstackctl: no dstack-controld instance answers/m,
    '... it prints the gateway\'s message') or diag $cerr;
is($cout, '', '... nothing on stdout');
my $after = () = $t->access_log =~ m{"GET /api/runs}g;
is($after - $before, 1, '... after one request (no retry)');

($crc, $cout, $cerr) = cli("http://127.0.0.1:$odd/flat", 'ps');
is($crc, 1, 'a 503 {"error":"unavailable","message":...}: exit 1');
like($cerr, qr/^dstackctl: flat shape: no leader now$/m,
    '... its message printed') or diag $cerr;
($crc, $cout, $cerr) = cli("http://127.0.0.1:$odd/bare", 'ps');
is($crc, 1, 'a 503 without a body: exit 1');
like($cerr, qr/^dstackctl: GET \/api\/runs\S*: the server is unavailable \(HTTP 503\): no dstack-controld answers there now; try again in a few seconds$/m,
    '... "unavailable", in words') or diag $cerr;

$sa->finish;
$sb->finish;
$tb->finish;
$t->done;
