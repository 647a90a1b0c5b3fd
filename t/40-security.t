#!/usr/bin/perl
# Security of the data plane, end to end through real nginx and the
# module on seeded state: Host header tricks (another domain, case,
# trailing dot, port, two Hosts, empty Host, absolute URIs naming another
# service, X-Forwarded-Host and friends, path-like and percent-encoded
# labels, very long hosts), Authorization tricks (two headers, very long
# tokens, odd bytes and whitespace, other schemes and cases), the gateway
# token kept from every replica (Host routing and the OpenAI endpoint)
# while auth: false passes the client's Authorization through, bodies
# over the limit, very long and very many headers; the workers stay up
# through all of it, and afterwards no token is in any log.  nginx logs a
# duplicate Authorization with its value at "info": a second error log at
# the level the demo ships (examples/demo's error_log; the snippets set
# none, so nginx's default "error" holds) must have none of them.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use DsSec;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

# the level the demo ships its error log at; the snippets set none
my $demo = DsTest::_slurp("$DsTest::REPO/examples/demo") // '';
my ($shipped) = $demo =~ /^error_log \S+ (\w+);$/m;
my $snippets = join '', map { DsTest::_slurp($_) // '' }
    glob("$DsTest::REPO/conf/nginx/*.conf");

my $t = DsTest->new(workers => 2,
    main => 'error_log shipped-error.log ' . ($shipped // 'info') . ';');
my $D = $t->domain;
DsOpenAI::add_gateway($t);

my %addr = map { $_ => $t->backend(name => $_) } qw(ra rb rc rm);

# tokens as controld issues them; random, so that a hit in a log is ours
my %tok = map { $_ => DsSec::random_token() } qw(b c all m admin other);

sub svc {
    my ($name, $backend, %o) = @_;
    return ({ op => 'service', name => $name, %o },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr{$backend}, state => 'ready',
                             version => 1 }] });
}

sub token {
    my ($key, %o) = @_;
    return { op => 'token', token => $tok{$key}, name => "t-$key",
        admin => $o{admin} ? DsTest::true : DsTest::false,
        all => $o{all} ? DsTest::true : DsTest::false,
        services => $o{services} || [], expires => 0 };
}

$t->seed([
    svc('svc-a', 'ra', auth => DsTest::false, max_body_size => 1000),
    svc('svc-b', 'rb'),
    svc('svc-c', 'rc', max_body_size => 1000),
    svc('svc-m', 'rm', model => 'sec-model'),
    token('b', services => ['svc-b']),
    token('c', services => ['svc-c']),
    token('m', services => ['svc-m']),
    token('all', all => 1),
    token('admin', admin => 1),
    token('other', services => ['svc-nothing']),
]);
$t->start;

my @workers = sort $t->workers;

sub count { scalar $t->backend_requests($_[0]) }
sub counts { return { map { $_ => count($_) } qw(ra rb rc rm) } }

# which backend answered, or the status
sub who {
    my $r = shift;
    return "status $r->{status}" . ($r->{error} ? " ($r->{error})" : '')
        unless $r->{status} == 200 && ref $r->{json};
    return $r->{json}{replica} // 'no replica field';
}

sub raw_get {
    my ($target, @headers) = @_;
    my $req = "GET $target HTTP/1.1\r\n";
    $req .= "$_\r\n" for @headers;
    return $t->raw("$req" . "Connection: close\r\n\r\n");
}

sub refused_not_5xx {
    my ($r, $ok, $name) = @_;
    my %ok = map { $_ => 1 } @$ok;
    ok($ok{ $r->{status} }, "$name: " . join(' or ', @$ok))
        or diag "got $r->{status}: "
            . substr($r->{body} // $r->{error} // '', 0, 300);
}

sub bearer { "Authorization: Bearer $tok{$_[0]}" }

# ---- Host ---------------------------------------------------------------------------

my $before = counts();

is(who(raw_get('/', "Host: svc-a.$D")), 'ra', 'Host svc-a goes to svc-a');
is(who(raw_get('/', "Host: SVC-A.\U$D")), 'ra', 'upper case: the same');
is(who(raw_get('/', "Host: svc-a.$D.")), 'ra', 'a trailing dot: the same');
is(who(raw_get('/', "Host: svc-a.$D:8443")), 'ra', 'a port: the same');
is(who(raw_get('/', "Host: svc-a.$D:99999x")), 'ra',
    'a junk port: nginx drops it, the same');

for my $host ("svc-a.other.local", "svc-a.$D.other.local", "svc-a.${D}x",
    "svc-a-$D", "x.svc-a.$D", "svc-a..$D", "svc-a\\.$D", "svc%2da.$D",
    "svc-b\@svc-a.$D", "svc-a.$D\@svc-b.other", "svc-a%2e$D", "%73vc-a.$D",
    "svc-a.$D%2f..%2fsvc-b", "svc-a.$D%00", "gateway.$D.", "*.$D")
{
    my $r = raw_get('/', "Host: $host");
    refused_not_5xx($r, [400, 404], "Host: $host");
}

my $r = raw_get('/', "Host: svc-a.$D", "Host: svc-b.$D");
is($r->{status}, 400, 'two Host headers: 400 (nginx)');
$r = raw_get('/', "Host: svc-a.$D", "Host: svc-a.$D");
is($r->{status}, 400, 'the same Host twice: 400');
$r = raw_get('/', 'Host: ');
is($r->{status}, 400, 'an empty Host: 400');
$r = raw_get('/', "Host: svc-a.$D/../svc-b.$D");
is($r->{status}, 400, 'a Host with a path: 400');
$r = raw_get('/', "Host: svc-a.$D svc-b.$D");
is($r->{status}, 400, 'a Host with a space: 400');
$r = raw_get('/', "Host: svc-a\0.$D");
is($r->{status}, 400, 'a Host with a NUL: 400');
$r = raw_get('/', "Host: svc-a.$D", "Host:svc-b.$D");
is($r->{status}, 400, 'a second Host without a space: 400');

# long hosts: one label in front of the domain, or many; never a 5xx
for my $host ('a' x 41 . ".$D", 'a' x 42 . ".$D", 'a' x 255 . ".$D",
    'a' x 6000 . ".$D", ('a.' x 3000) . "svc-a.$D", 'a' x 20000 . ".$D")
{
    my $r = raw_get('/', "Host: $host");
    refused_not_5xx($r, [400, 404, 494],
        'a Host of ' . length($host) . ' bytes');
}

is_deeply(counts(), { %$before, ra => $before->{ra} + 5 },
    'only the five good Hosts reached a replica (svc-a)');

# ---- absolute URIs and forwarding headers ----------------------------------------------

$before = counts();
$r = raw_get("http://svc-a.$D/abs", "Host: svc-b.$D");
is(who($r), 'ra', 'absolute URI naming svc-a, Host svc-b: svc-a answers');
is($r->{json}{headers}{host}, "svc-a.$D",
    'and svc-a sees Host svc-a (the request line wins)');
$r = raw_get("http://svc-a.$D/abs", "Host: svc-b.$D", bearer('b'));
is(who($r), 'ra', 'the same with svc-b\'s token: still svc-a');
$r = raw_get("http://svc-b.$D/abs", "Host: svc-a.$D");
is($r->{status}, 401, 'absolute URI naming svc-b (auth), Host svc-a: '
    . 'svc-b\'s auth applies (401)');
$r = raw_get("http://nosuch.$D/abs", "Host: svc-a.$D");
is($r->{status}, 404, 'absolute URI naming no service, Host svc-a: 404');
$r = raw_get("http://evil.example/abs", "Host: svc-a.$D");
is($r->{status}, 404, 'absolute URI of another domain, Host svc-a: 404');
$r = raw_get("http://svc-b.$D\@svc-a.$D/abs", "Host: svc-a.$D");
refused_not_5xx($r, [400, 404], 'absolute URI with user info');
$r = raw_get("//svc-b.$D/abs", "Host: svc-a.$D");
is(who($r), 'ra', 'a scheme-relative target is a path: Host svc-a');
is(count('rb'), $before->{rb}, 'svc-b\'s replica never saw any of those');

$before = counts();
for my $h ('X-Forwarded-Host', 'X-Host', 'X-Original-Host',
    'X-Forwarded-Server', 'Forwarded')
{
    my $v = $h eq 'Forwarded' ? "host=svc-b.$D" : "svc-b.$D";
    $r = raw_get('/xfh', "Host: svc-a.$D", "$h: $v");
    is(who($r), 'ra', "$h naming svc-b does not route (Host svc-a wins)");
    $r = raw_get('/xfh', "Host: nosuch.$D", "$h: $v");
    is($r->{status}, 404, "$h naming svc-b with an unknown Host: 404");
    $r = raw_get('/xfh', "Host: $D", "$h: $v");
    is($r->{status}, 404, "$h naming svc-b on the bare domain: 404");
}
$r = raw_get('/xfh', "Host: svc-a.$D", "X-Forwarded-Host: svc-b.$D",
    "X-Forwarded-Host: evil.example");
is(who($r), 'ra', 'two X-Forwarded-Host headers: still svc-a');
ok(!exists $r->{json}{headers}{'x-forwarded-host'},
    'X-Forwarded-Host never reaches the replica')
    or diag $r->{json}{headers}{'x-forwarded-host'};
is(count('rb'), $before->{rb}, 'svc-b never saw a forwarded-host request');
my @xfh = grep { exists $_->{headers}{'x-forwarded-host'} }
    $t->backend_requests('ra');
is(scalar @xfh, 0, 'no request svc-a got carried X-Forwarded-Host');

# ---- Authorization --------------------------------------------------------------------

$before = counts();

$r = raw_get('/', "Host: svc-b.$D", bearer('b'), bearer('b'));
is($r->{status}, 400, 'two Authorization headers (both good): 400 (nginx)');
is($r->{headers}{'www-authenticate'}, undef,
    'answered by nginx before the module (no WWW-Authenticate)');
$r = raw_get('/', "Host: svc-b.$D", bearer('other'), bearer('b'));
is($r->{status}, 400, 'a bad token and then a good one: 400');
$r = raw_get('/', "Host: svc-b.$D", bearer('b'), 'authorization: Bearer x');
is($r->{status}, 400, 'the second in lower case: 400');
$r = raw_get('/', "Host: svc-a.$D", 'Authorization: Bearer x',
    'Authorization: Bearer y');
is($r->{status}, 400, 'two Authorization headers on an auth: false service: '
    . '400');
like($t->access_log, qr/"GET \/ HTTP\/1\.1" 400 host=svc-b\.\Q$D\E svc=- /,
    'the module never saw them (no service in the access log)');

# long tokens: the module's bound (512) and nginx's header buffer (8k)
for my $len (513, 4096, 7000, 8 * 1024, 16 * 1024, 64 * 1024) {
    $r = raw_get('/', "Host: svc-b.$D", 'Authorization: Bearer '
        . ('x' x $len));
    refused_not_5xx($r, [400, 401, 494], "a $len-byte token");
    $r = raw_get('/', "Host: svc-b.$D", "Authorization: Bearer $tok{b}"
        . ('x' x $len));
    refused_not_5xx($r, [400, 401, 494],
        "a good token followed by $len bytes");
}
$r = raw_get('/', "Host: svc-b.$D", 'Authorization: Bearer '
    . ('x' x 8192), bearer('b'));
refused_not_5xx($r, [400, 494], 'an 8 KB token and a good one after it');

my %odd = (
    'Basic scheme'            => 'Basic ' . 'dXNlcjpwYXNz',
    'Basic with the token'    => "Basic $tok{b}",
    'Token scheme'            => "Token $tok{b}",
    'no scheme'               => $tok{b},
    'Bearer and nothing'      => 'Bearer',
    'Bearer and spaces'       => 'Bearer     ',
    'Bearer=token'            => "Bearer=$tok{b}",
    'Bearer:token'            => "Bearer:$tok{b}",
    'a tab after Bearer'      => "Bearer\t$tok{b}",
    'token and a word'        => "Bearer $tok{b} x",
    'two tokens, comma'       => "Bearer $tok{b}, Bearer $tok{b}",
    'quoted token'            => "Bearer \"$tok{b}\"",
    'token with a NUL byte'   => "Bearer $tok{b}\0",
    'token with DEL'          => "Bearer $tok{b}\x7f",
    'token with a high byte'  => "Bearer $tok{b}\xff",
    'token in UTF-8'          => "Bearer \xc3\xa9$tok{b}",
    'token with a CR'         => "Bearer $tok{b}\rX-Injected: 1",
    'a byte less'             => 'Bearer ' . substr($tok{b}, 0, -1),
    'a byte more'             => "Bearer $tok{b}A",
    'upper case token'        => 'Bearer ' . uc $tok{b},
    'percent-encoded token'   => 'Bearer ' . join('', map {
        sprintf '%%%02X', ord } split //, $tok{b}),
    'base64 of the token'     => 'Bearer ' . do {
        require MIME::Base64; MIME::Base64::encode_base64($tok{b}, '') },
    'the token\'s hash'       => 'Bearer ' . do {
        require Digest::SHA; Digest::SHA::sha256_hex($tok{b}) },
    'a token of no service'   => "Bearer $tok{other}",
);
for my $name (sort keys %odd) {
    $r = raw_get('/', "Host: svc-b.$D", "Authorization: $odd{$name}");
    refused_not_5xx($r, [400, 401, 403], "Authorization: $name");
}
$r = raw_get('/', "Host: svc-b.$D", 'Authorization: Bearer',
    " $tok{b}");
is($r->{status}, 400, 'a folded Authorization header: 400');
$r = raw_get('/', "Host: svc-b.$D", "Authorization : Bearer $tok{b}");
is($r->{status}, 400, 'a space before the colon: 400');

$r = raw_get('/', "Host: svc-b.$D", 'Authorization: Basic dXNlcjpwYXNz');
is($r->{status}, 401, 'Basic: 401');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer\b/,
    'Basic: the answer asks for Bearer');

is_deeply(counts(), $before, 'none of the refused requests reached a replica');

# the scheme is case-insensitive (RFC 9110 11.1); the token is not
for my $scheme (qw(bearer BEARER BeArEr)) {
    $r = raw_get('/', "Host: svc-b.$D", "Authorization: $scheme $tok{b}");
    is(who($r), 'rb', "scheme \"$scheme\": 200");
}
$r = raw_get('/', "Host: svc-b.$D", "Authorization: Bearer   $tok{b}  ");
ok($r->{status} == 200 || $r->{status} == 401,
    'spaces around the token: 200 or 401, never 5xx');
$r = raw_get('/', "Host: svc-b.$D", "Authorization: Bearer $tok{c}");
is($r->{status}, 403, 'a token of another service: 403');
for my $k (qw(all admin)) {
    is(who(raw_get('/', "Host: svc-b.$D", bearer($k))), 'rb',
        "the $k token opens svc-b");
}

# the gateway token never reaches the replica of an auth service
my @rb = $t->backend_requests('rb');
ok(scalar @rb >= 5, 'svc-b\'s replica got the admitted requests');
is(scalar(grep { exists $_->{headers}{authorization} } @rb), 0,
    'none of them carried Authorization');
my $rb_log = DsTest::_slurp($t->dir . '/backend-rb.log');
for my $k (sort keys %tok) {
    unlike($rb_log, qr/\Q$tok{$k}\E/, "token $k is nowhere in what svc-b got");
}
unlike($rb_log, qr/Bearer/i, 'no Bearer at all in what svc-b got');

# nor through the OpenAI endpoint on gateway.<domain>
my $chat = '{"model":"sec-model","messages":[{"role":"user","content":"hi"}]}';
$r = $t->request('POST', '/v1/chat/completions', host => "gateway.$D",
    headers => ['Content-Type' => 'application/json',
                Authorization => "Bearer $tok{m}"], body => $chat);
is(who($r), 'rm', 'the model endpoint routes sec-model to svc-m');
$r = $t->request('POST', '/v1/chat/completions', host => "gateway.$D",
    headers => ['Content-Type' => 'application/json',
                Authorization => "Bearer $tok{b}"], body => $chat);
is($r->{status}, 403, 'the model endpoint with svc-b\'s token: 403');
$r = $t->request('POST', '/v1/chat/completions', host => "gateway.$D",
    headers => ['Content-Type' => 'application/json',
                Authorization => "Bearer $tok{m}",
                Authorization => "Bearer $tok{m}"], body => $chat);
is($r->{status}, 400, 'the model endpoint with two Authorization headers: '
    . '400');
my $rm_log = DsTest::_slurp($t->dir . '/backend-rm.log');
ok(length $rm_log, 'svc-m\'s replica got the request');
unlike($rm_log, qr/\Q$tok{m}\E|authorization/i,
    'and never the token nor an Authorization header');

# auth: false: the client's Authorization passes unchanged
for my $v ("Bearer client-token-123", 'Basic dXNlcjpwYXNz', "bearer  x ",
    'Bearer ' . ('z' x 4000), "Digest username=\"u\", realm=\"r\"")
{
    (my $exp = $v) =~ s/\s+$//;
    $r = raw_get('/', "Host: svc-a.$D", "Authorization: $v");
    is(who($r), 'ra', 'auth: false with Authorization: 200');
    is($r->{json}{headers}{authorization}, $exp,
        'the client\'s Authorization reaches the replica unchanged')
        or diag explain $r->{json}{headers};
}
$r = raw_get('/', "Host: svc-a.$D");
ok(!exists $r->{json}{headers}{authorization},
    'auth: false without Authorization: none is made up');

# ---- bodies -----------------------------------------------------------------------------

$before = counts();
$r = $t->request('POST', '/up', host => "svc-c.$D", body => 'x' x 5000);
is($r->{status}, 401, 'a body over the limit without a token: 401 first');
$r = $t->request('POST', '/up', host => "svc-c.$D", body => 'x' x 5000,
    headers => [Authorization => "Bearer $tok{c}"]);
is($r->{status}, 413, 'a body over the limit with the token: 413');
is(ref $r->{json} && $r->{json}{error}{type}, 'request_too_large',
    '413 in the JSON error shape');
$r = $t->request('POST', '/up', host => "svc-c.$D", body => 'x' x 5000,
    chunked => 1, headers => [Authorization => "Bearer $tok{c}"]);
is($r->{status}, 413, 'a chunked body over the limit: 413');
$r = $t->raw("POST /up HTTP/1.1\r\nHost: svc-c.$D\r\n"
    . "Authorization: Bearer $tok{c}\r\n"
    . "Content-Length: 9223372036854775807\r\nConnection: close\r\n\r\n");
is($r->{status}, 413, 'Content-Length 2^63-1: 413 at once');
$r = $t->raw("POST /up HTTP/1.1\r\nHost: svc-c.$D\r\n"
    . "Authorization: Bearer $tok{c}\r\n"
    . "Content-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n");
refused_not_5xx($r, [400, 413], 'a Content-Length that overflows');
$r = $t->raw("POST /up HTTP/1.1\r\nHost: svc-a.$D\r\n"
    . "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"
    . "Connection: close\r\n\r\n0\r\n\r\n");
is($r->{status}, 400, 'Content-Length and Transfer-Encoding: 400');
$r = $t->raw("POST /up HTTP/1.1\r\nHost: svc-a.$D\r\n"
    . "Content-Length: 1\r\nContent-Length: 2\r\n"
    . "Connection: close\r\n\r\nxx");
is($r->{status}, 400, 'two Content-Length headers: 400');
$r = $t->raw("POST /up HTTP/1.1\r\nHost: svc-a.$D\r\n"
    . "Content-Length: -1\r\nConnection: close\r\n\r\n");
is($r->{status}, 400, 'a negative Content-Length: 400');
is_deeply(counts(), $before, 'no refused body reached a replica');

$r = $t->request('POST', '/up', host => "svc-c.$D", body => 'y' x 1000,
    headers => [Authorization => "Bearer $tok{c}"]);
is(who($r), 'rc', 'a body at the limit with the token: 200');

# ---- long and many headers --------------------------------------------------------------

$r = raw_get('/', "Host: svc-a.$D", 'X-Big: ' . ('x' x 10_000));
refused_not_5xx($r, [400, 431, 494], 'a 10 KB header');
$r = raw_get('/', "Host: svc-a.$D",
    map { "X-H$_: " . ('v' x 4000) } 1 .. 12);
refused_not_5xx($r, [400, 431, 494], '48 KB of headers');
$r = raw_get('/', "Host: svc-a.$D", map { "X-H$_: v" } 1 .. 1000);
refused_not_5xx($r, [200, 400, 431, 494], '1000 small headers');
$r = raw_get('/', "Host: svc-b.$D", bearer('b'),
    map { "X-H$_: v" } 1 .. 90);
is(who($r), 'rb', '90 headers and a good token: 200');
ok(!exists $r->{json}{headers}{authorization},
    'and the token is still kept from the replica');
$r = raw_get('/' . ('p' x 9000), "Host: svc-a.$D");
refused_not_5xx($r, [200, 400, 414, 494], 'a 9 KB request line');
$r = raw_get('/', "Host: svc-a.$D", 'Cookie: ' . ('c=1; ' x 3000));
refused_not_5xx($r, [400, 431, 494], 'a 15 KB cookie');

# ---- the workers stayed up -----------------------------------------------------------

is_deeply([sort $t->workers], \@workers, 'the same workers still run');
unlike($t->error_log, qr/exited on signal|worker process \d+ exited/,
    'no worker died');
is(who(raw_get('/', "Host: svc-b.$D", bearer('b'))), 'rb',
    'and they still serve');

# ---- no token in any log -------------------------------------------------------------

# nginx itself logs some refused header lines at "info" (a duplicate
# header with both values, a too long line with its start): a level the
# shipped configuration does not log at (error_log defaults to "error").
# They are counted apart; everything else must have no token.
my $nginx_info =
    qr/\[info\] .*client sent (?:duplicate|too long|invalid) header line/;
my @files = DsSec::files_under(map { $t->dir . "/$_" }
    qw(error.log access.log nginx.stderr));
push @files, map { $t->dir . "/backend-$_.log" } qw(rb rc rm);
push @files, glob($t->dir . '/backend-*.stderr');
my ($hits, $excused) = DsSec::find_secrets(\%tok, \@files,
    except => $nginx_info);
is_deeply($hits, [], 'no token in error.log, access.log or what an auth '
    . 'replica got') or diag join "\n", @$hits;
ok(scalar @$excused, 'nginx logged the duplicate Authorization at info '
    . '(the test sent it)');
{
    local $TODO = 'nginx core logs a duplicate or too long Authorization '
        . 'header with its value at "info"; a gateway that logs at info '
        . 'keeps those tokens';
    is_deeply($excused, [], 'no token in nginx\'s info lines either');
}
ok(defined $shipped, "examples/demo sets its error log's level ("
    . ($shipped // 'none') . ')');
unlike($snippets, qr/^\s*error_log\b/m,
    'the shipped snippets leave the error log to nginx.conf');
my ($shipped_hits) = DsSec::find_secrets(\%tok,
    [$t->dir . '/shipped-error.log']);
ok(-s $t->dir . '/shipped-error.log',
    'the error log at the shipped level was written');
is_deeply($shipped_hits, [], "no token in the error log at the demo's "
    . 'level, though two Authorization headers were sent')
    or diag join "\n", @$shipped_hits;

my $warn_hits = grep { /\[(?:notice|warn|error|crit|alert|emerg)\]/ }
    @$excused;
is($warn_hits, 0, 'none at notice or above');

$t->done;
