#!/usr/bin/perl
# Security of the control plane and of tokens, end to end: real
# dstack-controld (its state created from nothing), real nginx with the
# module publishing the API on gateway.<domain>, real replicas, dstackctl.
#
# State files and their modes; a world-writable state directory refused;
# the API (through nginx and on its socket) without a token, with service
# tokens (403 on every endpoint), with expired and revoked admin tokens
# (401 at the next call, on a connection opened before too); bad,
# unknown and oversized bodies refused with a message and the state as it
# was; invalid run names refused; the logs API never serves a file outside
# the replica's log; token scopes through the gateway; tokens are 256
# random bits in "dst_" + base64url; token list never shows a secret; the
# gateway token never reaches a replica; and after the whole run no token
# is in any log (nginx, controld, replicas, dstackctl's messages) nor in
# plain text in the LMDB file.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use DsSec;
use Digest::SHA qw(sha256 sha256_hex);
use IO::Compress::Gzip qw(gzip $GzipError);
use JSON::PP;
use MIME::Base64 ();
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $JSON = JSON::PP->new->canonical->allow_nonref;
my $t = DsTest->new(seed_empty => 0);
my $D = $t->domain;
my $dir = $t->dir;
my $state = $t->state;
# controld creates the state directory itself, as on a first install
rmdir $state or die "rmdir $state: $!\n";
my $c = DsCli->new($t);
my $sock = $c->api_socket;

my %secret;         # every token this test saw: name => text
my @cli_said;       # what dstackctl printed (token create's token aside)

sub mode { my @s = stat $_[0]; return @s ? $s[2] & 07777 : undef }
sub octal { defined $_[0] ? sprintf('%04o', $_[0]) : 'missing' }

# ---- a world-writable state directory is refused ------------------------------------

# runs controld on TEXT (a controld.yml) for at most SECS; returns
# (exit code or 'still running', output)
sub controld_once {
    my ($name, $text, $secs) = @_;
    my $conf = "$dir/$name.yml";
    DsTest::_write($conf, $text);
    my $out = "$dir/$name.out";
    my $pid = $t->_spawn($out, $t->_san_env, DsCli::controld_path(), '-d',
        '-f', $conf);
    my $done = DsTest::wait_until(sub { waitpid($pid, WNOHANG) == $pid },
        timeout => $secs);
    my $rc;
    if ($done) {
        $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    } else {
        kill 'TERM', $pid;
        DsTest::wait_until(sub { waitpid($pid, WNOHANG) == $pid },
            timeout => 5) or do { kill 'KILL', $pid; waitpid($pid, 0) };
        $rc = 'still running';
    }
    return ($rc, DsTest::_slurp($out));
}

sub conf_with_state {
    my ($name, $sdir) = @_;
    my $text = $c->controld_conf;
    $text =~ s/^state_dir: .*$/state_dir: $sdir/m or die;
    $text =~ s/^api_socket: .*$/api_socket: $dir\/$name.sock/m or die;
    $text =~ s/^client_config: .*$/client_config: $dir\/$name-client.yml/m
        or die;
    return $text;
}

mkdir "$dir/ww-target";
chmod 0777, "$dir/ww-target";
symlink "$dir/ww-target", "$dir/ww-link" or die "symlink: $!\n";
for my $case (['ww-0777', 0777], ['ww-1777', 01777], ['ww-0757', 0757],
    ['ww-link', undef])
{
    my ($name, $m) = @$case;
    my $sdir = "$dir/$name";
    if (defined $m) {
        mkdir $sdir or die "mkdir $sdir: $!\n";
        chmod $m, $sdir;
    }
    my ($rc, $out) = controld_once($name, conf_with_state($name, $sdir), 10);
    my $what = defined $m ? sprintf('mode %04o', $m) : 'a symlink to 0777';
    ok($rc =~ /^\d+$/ && $rc != 0,
        "a world-writable state directory ($what): controld exits non-zero")
        or diag "exit: $rc\n$out";
    like($out, qr/state_dir \Q$sdir\E is world-writable/,
        "($what) and says why, naming the directory") or diag $out;
    ok(!-e "$sdir/data.mdb", "($what) no state was created there");
    ok(!-e "$dir/$name-client.yml", "($what) no admin token was made");
}

# ---- first start: the state's files ------------------------------------------------------

$c->start_controld;
$t->start;
my $admin = $c->admin_token;
$secret{admin} = $admin;

is(octal(mode($state)), '0750', 'the state directory controld made is 0750');
for my $f (qw(data.mdb lock.mdb)) {
    my $m = mode("$state/$f");
    ok(defined $m && !($m & ~0660), "$f is 0660 or stricter (" . octal($m)
        . ')');
}
is(octal(mode("$state/code")), '0700', 'code archives: a 0700 directory');
my $cm = mode($c->client_config);
ok(defined $cm && !($cm & ~0600), 'client.yml is 0600 or stricter ('
    . octal($cm) . ')');
like(DsTest::_slurp($c->client_config), qr/^token: \Q$admin\E$/m,
    'client.yml holds the admin token');
my $sm = mode($sock);
ok(defined $sm && !($sm & 0007), 'the API socket is closed to others ('
    . octal($sm) . ')');
ok(defined DsSec::token_bytes($admin),
    'the admin token is "dst_" and 43 base64url characters (32 bytes)')
    or diag $admin;

# ---- services ------------------------------------------------------------------------

# The replica writes every request it gets, headers included, to its log:
# a token that reached a replica would be found there at the end.
my $APP = <<'EOF';
import json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *args):
        pass
    def do_GET(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        h = {}
        for k, v in self.headers.items():
            k = k.lower()
            h[k] = h[k] + ", " + v if k in h else v
        print("request %s %s %s" % (self.command, self.path,
                                    json.dumps(h, sort_keys=True)), flush=True)
        b = json.dumps({"run": os.environ.get("DSTACK_RUN_NAME", ""),
                        "headers": h}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    do_POST = do_GET

print("listening", flush=True)
ThreadingHTTPServer(("0.0.0.0", 8000), H).serve_forever()
EOF

my %auth = ('sec-a' => 'true', 'sec-b' => 'true', 'sec-open' => 'false');
for my $name (sort keys %auth) {
    my $app = $c->app_dir("app-$name", { 'app.py' => $APP,
        'svc.dstack.yml' => "type: service\nport: 8000\nauth: $auth{$name}\n"
            . "commands:\n  - exec python3 app.py\n" });
    my $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-n', $name, '-y',
        '-d'], dir => $app, timeout => 60);
    push @cli_said, $r;
    is($r->{rc}, 0, "apply $name") or diag $r->{err};
}
for my $name (sort keys %auth) {
    ok(DsTest::wait_until(sub {
        my $run = $c->run_named($name);
        $run && $run->{status} eq 'running'
            && grep { $_->{ready} } @{ $run->{replicas} };
    }, timeout => 60, interval => 0.2), "$name becomes ready");
}

# ---- tokens: create, shape, scopes ---------------------------------------------------

sub create {
    my ($name, @args) = @_;
    my $r = $c->cli(['token', 'create', $name, @args]);
    is($r->{rc}, 0, "token create $name @args") or diag $r->{err};
    push @cli_said, { %$r, out => '' };
    my ($tok) = $r->{out} =~ /^(\S+)\n\z/;
    $secret{$name} = $tok if defined $tok;
    return $tok;
}

my %tok = (admin => $admin);
$tok{sa}     = create('sa', '--scope', 'services:sec-a');
$tok{sab}    = create('sab', '--scope', 'services:sec-a,sec-b');
$tok{svcs}   = create('svcs');
$tok{ops}    = create('ops', '--scope', 'admin');
$tok{gone}   = create('gone', '--scope', 'admin');
$tok{brief}  = create('brief', '--scope', 'admin', '--expires', '1');
$tok{sbrief} = create('sbrief', '--scope', 'services:sec-a', '--expires',
    '1');
my $created_at = time;

my @bytes;
for my $k (sort keys %tok) {
    my $b = DsSec::token_bytes($tok{$k});
    ok(defined $b, "token $k: \"dst_\" and 43 base64url characters, "
        . 'the canonical encoding of 32 bytes') or diag $tok{$k} // 'none';
    push @bytes, $b if defined $b;
}
my %uniq = map { $_ => 1 } @bytes;
is(scalar keys %uniq, scalar keys %tok, 'every token differs');
my $ones = 0;
$ones += unpack('%32b*', $_) for @bytes;
my $nbits = 256 * @bytes;
ok(@bytes && abs($ones - $nbits / 2) < 4 * sqrt($nbits / 4),
    "their bits look random ($ones ones in $nbits)");
my @few = grep { my %v = map { $_ => 1 } unpack 'C*', $_; keys %v < 16 }
    @bytes;
is(scalar @few, 0, 'no token has fewer than 16 distinct bytes of 32');

sub gw {
    my ($run, $token, %o) = @_;
    my @h = defined $token ? (Authorization => "Bearer $token") : ();
    return $t->get($run, $o{path} // '/', headers => \@h);
}

my %scope = (
    sa    => { 'sec-a' => 200, 'sec-b' => 403 },
    sab   => { 'sec-a' => 200, 'sec-b' => 200 },
    svcs  => { 'sec-a' => 200, 'sec-b' => 200 },
    ops   => { 'sec-a' => 200, 'sec-b' => 200 },
    admin => { 'sec-a' => 200, 'sec-b' => 200 },
    none  => { 'sec-a' => 401, 'sec-b' => 401 },
    wrong => { 'sec-a' => 401, 'sec-b' => 401 },
);
my %use = (%tok, none => undef, wrong => DsSec::random_token());
$secret{wrong} = $use{wrong};       # a refused token must not be logged
for my $k (sort keys %scope) {
    my %got = map { $_ => gw($_, $use{$k})->{status} } keys %{ $scope{$k} };
    is_deeply(\%got, $scope{$k}, "token $k through the gateway: "
        . join(', ', map { "$_ $scope{$k}{$_}" } sort keys %{ $scope{$k} }));
}

# the API opens to admin tokens only, dstackctl included
my $via = $c->via_nginx;
for my $k (qw(admin ops)) {
    my $r = $c->cli(['ps'], env => { %$via, DSTACK_TOKEN => $tok{$k} });
    push @cli_said, $r;
    is($r->{rc}, 0, "dstackctl ps through nginx with the $k token: exit 0")
        or diag $r->{err};
}
for my $k (qw(sa svcs)) {
    my $r = $c->cli(['ps'], env => { %$via, DSTACK_TOKEN => $tok{$k} });
    push @cli_said, $r;
    is($r->{rc}, 1, "dstackctl ps with the service token $k: exit 1");
    like($r->{err}, qr/not an admin token/, 'and the server says why');
}

# the gateway token stays at the gateway; auth: false passes it through
my $r = gw('sec-a', $tok{sa});
is($r->{json}{run}, 'sec-a', 'sec-a answers its token');
is($r->{json}{headers}{authorization}, undef,
    'and its replica never sees Authorization');
$r = gw('sec-b', $tok{admin});
is($r->{json}{headers}{authorization}, undef,
    'nor does sec-b\'s with the admin token');
my $passed = 'Bearer client-' . sha256_hex('not a dstack token');
$r = $t->get('sec-open', '/', headers => { Authorization => $passed });
is($r->{json}{run}, 'sec-open', 'sec-open (auth: false) answers');
is($r->{json}{headers}{authorization}, $passed,
    'and its replica gets the client\'s Authorization unchanged');

# ---- token list never shows a secret --------------------------------------------------

my $list = $c->cli(['token', 'list']);
my $listj = $c->cli(['token', 'list', '--json']);
my $lista = DsSec::api($t, 'GET', '/api/tokens', token => $admin);
push @cli_said, $list, $listj;
is($list->{rc}, 0, 'token list: exit 0');
like($list->{out}, qr/^ sa\s+services\s+sec-a\s/m, 'token list lists sa');
my $decoded = eval { decode_json($listj->{out}) } || [];
is_deeply([sort map { $_->{name} } @$decoded],
    [sort qw(admin sa sab svcs ops gone brief sbrief)],
    'token list --json: every token by name');
is($lista->{status}, 200, 'GET /api/tokens: 200');
for my $what (['token list', $list->{out}], ['token list --json',
    $listj->{out}], ['GET /api/tokens', $lista->{body}])
{
    my ($name, $text) = @$what;
    my @shown;
    for my $k (sort keys %tok) {
        my $h = sha256($tok{$k});
        push @shown, "$k (token)" if index($text, $tok{$k}) >= 0;
        push @shown, "$k (sha256 hex)"
            if index(lc $text, sha256_hex($tok{$k})) >= 0;
        push @shown, "$k (sha256 base64url)"
            if index($text, DsSec::b64url($h)) >= 0;
        push @shown, "$k (43-char tail)"
            if index($text, substr($tok{$k}, 4)) >= 0;
    }
    is_deeply(\@shown, [], "$name shows no token and no hash");
    unlike($text, qr/dst_|[0-9a-fA-F]{32}|[A-Za-z0-9_-]{40}/,
        "$name has nothing shaped like a secret");
}

# ---- the API: who may call what ------------------------------------------------------

my $spec = $c->run_named('sec-a')->{spec};
my $tgz;
gzip(\"a file\n" => \$tgz) or die $GzipError;
my $hash = sha256_hex($tgz);

my @endpoints = (
    ['GET', '/api/health'],
    ['HEAD', "/api/code/$hash"],
    ['PUT', "/api/code/$hash", body => $tgz],
    ['POST', '/api/runs/plan', json => { spec => $spec, name => 'sneaky' }],
    ['POST', '/api/runs/apply', json => { spec => $spec, name => 'sneaky' }],
    ['GET', '/api/runs'],
    ['GET', '/api/runs?all=1'],
    ['GET', '/api/runs/sec-a'],
    ['POST', '/api/runs/sec-a/stop', json => { abort => JSON::PP::true }],
    ['GET', '/api/runs/sec-a/logs'],
    ['GET', '/api/runs/sec-a/logs?follow=1'],
    ['POST', '/api/tokens', json => { name => 'sneaky', scope => 'admin' }],
    ['GET', '/api/tokens'],
    ['DELETE', '/api/tokens/ops'],
    ['DELETE', '/api/tokens/sa'],
    ['GET', '/api/nope'],
    ['DELETE', '/api/runs'],
    # nginx answers this one itself (404): its %2f and dot segments take
    # it out of /api/
    ['GET', '/api/runs/..%2f..%2fetc/logs', socket_only => 1],
);

sub snapshot {
    my $runs = DsSec::api($t, 'GET', '/api/runs?all=1', token => $admin);
    my $toks = DsSec::api($t, 'GET', '/api/tokens', token => $admin);
    my $dump = $t->dump;
    return {
        runs => [map { { name => $_->{name}, version => $_->{version},
            status => $_->{status}, desired => $_->{desired},
            spec => $_->{spec} } } @{ ($runs->{json} || {})->{runs} || [] }],
        tokens => [map { { %$_, expired => undef } }
            @{ ($toks->{json} || {})->{tokens} || [] }],
        services => $dump->{services},
        code => DsSec::api($t, 'HEAD', "/api/code/$hash",
            token => $admin)->{status},
        replicas_dir => [sort map { s{.*/}{}r } glob("$dir/replicas/*")],
    };
}

sleep 2.2 - (time - $created_at) if time - $created_at < 2.2;
my $revoke = $c->cli(['token', 'revoke', 'gone']);
push @cli_said, $revoke;
is($revoke->{rc}, 0, 'token revoke gone: exit 0');
my $before = snapshot();
ok(scalar @{ $before->{runs} } == 3, 'three runs before the refusals');

my %expect = (
    none    => [401, undef],
    basic   => [401, 'Basic ' . MIME::Base64::encode_base64("admin:$admin",
        '')],
    wrong   => [401, 'Bearer ' . ($secret{wrong2} = DsSec::random_token())],
    sa      => [403, "Bearer $tok{sa}"],
    sa_lc   => [403, "bearer $tok{sa}"],
    svcs    => [403, "Bearer $tok{svcs}"],
    sbrief  => [401, "Bearer $tok{sbrief}"],
    brief   => [401, "Bearer $tok{brief}"],
    gone    => [401, "Bearer $tok{gone}"],
    long    => [401, 'Bearer ' . ('x' x 6000)],
    two     => [401, "Bearer $tok{sa} $admin"],
);
for my $k (sort keys %expect) {
    my ($status, $auth) = @{ $expect{$k} };
    for my $v ('nginx', $sock) {
        my (%got, %want, @bad);
        for my $e (@endpoints) {
            my ($m, $p, %o) = @$e;
            next if delete $o{socket_only} && $v eq 'nginx';
            my $r = DsSec::api($t, $m, $p, %o, via => $v,
                headers => [defined $auth ? (Authorization => $auth) : ()]);
            $got{"$m $p"} = $r->{status};
            $want{"$m $p"} = $status;
            next if $m eq 'HEAD';
            push @bad, "$m $p: no JSON error message"
                unless ref $r->{json} && length($r->{json}{error}{message}
                    // '');
            push @bad, "$m $p: no WWW-Authenticate: Bearer"
                if $status == 401
                    && ($r->{headers}{'www-authenticate'} // '') !~ /^Bearer/;
        }
        my $where = $v eq 'nginx' ? 'through nginx' : 'on the socket';
        is_deeply(\%got, \%want, "$k: $status on every endpoint $where");
        is_deeply(\@bad, [], "$k: JSON errors, WWW-Authenticate $where");
    }
}
my $r2 = DsSec::api($t, 'GET', '/api/health', token => $tok{brief});
is($r2->{json}{error}{message}, 'the token has expired',
    'an expired token is told so');
is_deeply(snapshot(), $before, 'none of those refused calls changed anything');
is(gw('sec-a', $tok{sbrief})->{status}, 401,
    'an expired service token opens no service');

# a revoked admin token fails at the next call, on a connection opened
# before the revocation too
my $ka_n = DsSec::api($t, 'GET', '/api/health', token => $tok{ops},
    keep => 1);
my $ka_s = DsSec::api($t, 'GET', '/api/health', token => $tok{ops},
    keep => 1, via => $sock);
is($ka_n->{status}, 200, 'ops works through nginx (keep-alive)');
is($ka_s->{status}, 200, 'ops works on the socket (keep-alive)');
$r = DsSec::api($t, 'DELETE', '/api/tokens/ops', token => $admin);
is($r->{status}, 200, 'ops revoked');
$r = DsSec::api($t, 'GET', '/api/health', token => $tok{ops},
    sock => $ka_n->{sock});
is($r->{status}, 401, 'the next call through nginx on the same connection: '
    . '401');
$r = DsSec::api($t, 'GET', '/api/health', token => $tok{ops},
    sock => $ka_s->{sock}, via => $sock);
is($r->{status}, 401, 'the next call on the same socket connection: 401');
is(DsSec::api($t, 'GET', '/api/runs', token => $tok{ops})->{status}, 401,
    'and on a new connection');
is(gw('sec-b', $tok{ops})->{status}, 401, 'and it opens no service either');
$before = snapshot();

# ---- bad bodies: a message, and the state as it was -------------------------------------

my $big = '{"spec":' . $JSON->encode({ %$spec, replicas => 3 })
    . ',"name":"sec-a","pad":"' . ('x' x (1024 * 1024)) . '"}';
my @badcalls = (
    ['POST', '/api/runs/apply', body => '{"spec": {'],
    ['POST', '/api/runs/apply', body => '{"spec":' . $JSON->encode($spec)
        . ',"name":"sec-a",}'],
    ['POST', '/api/runs/apply', body => "\xff\xfe{}"],
    ['POST', '/api/runs/apply', body => '[]'],
    ['POST', '/api/runs/apply', body => 'null'],
    ['POST', '/api/runs/apply', body => ''],
    ['POST', '/api/runs/apply', body => '{"spec":' . $JSON->encode($spec)
        . ',"name":"sec-a"}{}'],
    ['POST', '/api/runs/apply', json => { spec => { %$spec, replicas => 3 },
        name => 'sec-a', forced => JSON::PP::true }],    # force is a field
    ['POST', '/api/runs/apply', json => { spec => { %$spec, replicas => 3,
        gpus => 1 }, name => 'sec-a' }],
    ['POST', '/api/runs/apply', json => { spec => { %$spec, port => 0 },
        name => 'sec-a' }],
    ['POST', '/api/runs/apply', json => { spec => { %$spec,
        commands => 'rm -rf /' }, name => 'sec-a' }],
    ['POST', '/api/runs/apply', json => { spec => { %$spec, replicas => 3 },
        name => 'sec-a', code => '../../etc/passwd' }],
    ['POST', '/api/runs/apply', body => $big],
    ['POST', '/api/runs/apply', body => $big, chunked => 1],
    ['POST', '/api/runs/plan', body => '{"spec":'],
    ['POST', '/api/runs/sec-a/stop', body => '{"abort":'],
    ['POST', '/api/runs/sec-a/stop', json => { abort => JSON::PP::true,
        now => 1 }],
    ['POST', '/api/runs/sec-a/stop', json => { abort => 'yes' }],
    ['POST', '/api/runs/sec-a/stop', body => $big],
    ['POST', '/api/tokens', body => '{"name":'],
    ['POST', '/api/tokens', json => { name => 'x-new', scope => 'admin',
        admin => JSON::PP::true }],
    ['POST', '/api/tokens', json => { name => 'x-new', scope => 'root' }],
    ['POST', '/api/tokens', json => { name => 'x-new',
        services => ['../etc'] }],
    ['POST', '/api/tokens', json => { name => 'x-new', scope => 'admin',
        services => ['sec-a'] }],
    ['POST', '/api/tokens', json => { name => 'x-new', expires_in => -5 }],
    ['POST', '/api/tokens', json => { name => 'x-new', expires_in => 1e300 }],
    ['POST', '/api/tokens', json => { name => 'x-new',
        expires_in => 0.5 }],
    ['POST', '/api/tokens', json => { name => '../x' }],
    ['POST', '/api/tokens', json => { name => 'x' x 300 }],
    ['POST', '/api/tokens', json => { name => "x\0y" }],
    ['POST', '/api/tokens', json => { name => 'sa' }],
    ['POST', '/api/tokens', json => [{ name => 'x-new' }]],
    ['POST', '/api/tokens', body => '{"name":"x-new","pad":"'
        . ('y' x (2 * 1024 * 1024)) . '"}'],
    ['PUT', "/api/code/$hash", body => 'not gzip, not the hash'],
    ['PUT', '/api/code/' . sha256_hex('plain'), body => 'plain'],
    ['PUT', '/api/code/../../../tmp/x', body => $tgz],
    ['DELETE', '/api/tokens/admin'],
    ['DELETE', '/api/tokens/nobody'],
    ['DELETE', '/api/tokens/..%2fadmin'],
);
for my $v ('nginx', $sock) {
    my @bad;
    for my $e (@badcalls) {
        my ($m, $p, %o) = @$e;
        my $r = DsSec::api($t, $m, $p, %o, via => $v, token => $admin);
        my $desc = "$m $p " . substr($o{body} // $JSON->encode($o{json}),
            0, 60);
        # nginx answers a path that its dot segments take out of /api/
        my $by_nginx = $v eq 'nginx' && $p =~ m{/\.\./};
        push @bad, "$desc: $r->{status} " . ($r->{body} // $r->{error})
            unless $r->{status} >= 400 && $r->{status} < 500
                && ($by_nginx || ref $r->{json}
                    && length($r->{json}{error}{message} // ''));
    }
    is_deeply(\@bad, [], 'every bad call: 4xx with a message '
        . ($v eq 'nginx' ? 'through nginx' : 'on the socket'))
        or diag join "\n", map { substr($_, 0, 300) } @bad;
}
for my $v ('nginx', $sock) {
    my $r = DsSec::api($t, 'POST', '/api/runs/apply', body => $big,
        via => $v, token => $admin);
    is($r->{status}, 413, 'a body over 1 MiB: 413 '
        . ($v eq 'nginx' ? 'through nginx' : 'on the socket'));
}
is_deeply(snapshot(), $before, 'and the state is as it was');

# ---- duplicate keys: a 400 naming the key, and nothing done ---------------------------

# cJSON keeps both members of {"scope":"services","scope":"admin"}; one
# reader takes the first, another the last: refused wherever they are
my $specj = $JSON->encode({ %$spec, replicas => 3 });
my %noenv = %$spec;
delete $noenv{env};
my $noenvj = $JSON->encode(\%noenv);
my @dups = (
    ['/api/tokens', '{"name":"dup-a","name":"dup-b"}',
        'body: duplicate key "name"'],
    ['/api/tokens', '{"name":"dup-c","scope":"services","scope":"admin"}',
        'body: duplicate key "scope"'],
    ['/api/tokens', '{"name":"dup-d","services":["sec-a"],"expires_in":60,'
        . '"services":["sec-b"]}', 'body: duplicate key "services"'],
    ['/api/runs/apply', '{"name":"sec-a","spec":' . substr($specj, 0, -1)
        . ',"replicas":1}}', 'body.spec: duplicate key "replicas"'],
    ['/api/runs/apply', '{"name":"dup-run","spec":' . $specj
        . ',"name":"dup-run2"}', 'body: duplicate key "name"'],
    ['/api/runs/apply', '{"name":"dup-run","spec":{"image":"x",'
        . '"probes":[{"type":"http","type":"tcp"}]}}',
        'body.spec.probes[0]: duplicate key "type"'],
    ['/api/runs/plan', '{"name":"sec-a","spec":' . substr($noenvj, 0, -1)
        . ',"env":{"A":"1","B":"2","A":"3"}}}',
        'body.spec.env: duplicate key "A"'],
    ['/api/runs/sec-a/stop', '{"abort":false,"abort":true}',
        'body: duplicate key "abort"'],
    ['/api/secrets/set', '{"name":"dup_s","value":"1","value":"2"}',
        'body: duplicate key "value"'],
    ['/api/fleets/apply', '{"spec":{"name":"f","name":"g"}}',
        'body.spec: duplicate key "name"'],
);
for my $v ('nginx', $sock) {
    my @bad;
    for my $d (@dups) {
        my ($p, $body, $msg) = @$d;
        my $r = DsSec::api($t, 'POST', $p, body => $body, via => $v,
            token => $admin);
        my $got = ref $r->{json} ? $r->{json}{error}{message} // '' : '';
        push @bad, "POST $p $body: $r->{status} $got"
            unless $r->{status} == 400 && $got eq $msg;
    }
    is_deeply(\@bad, [], 'every body with a duplicate key: 400 naming it '
        . ($v eq 'nginx' ? 'through nginx' : 'on the socket'))
        or diag join "\n", map { substr($_, 0, 300) } @bad;
}
my $dsec = DsSec::api($t, 'GET', '/api/secrets', token => $admin);
is($dsec->{status}, 200, 'the secrets are listed') or diag $dsec->{body};
ok(!grep({ $_->{name} eq 'dup_s' } @{ ($dsec->{json} || {})->{secrets}
    || [] }), 'the secret with a duplicate key was not set');
is_deeply(snapshot(), $before, 'no token, run or stop came of them');

# ---- run names -------------------------------------------------------------------------

my @badnames = ('', 'a', 'A', 'Ab', 'aB', '1ab', '-ab', 'a_b', 'a.b', 'a/b',
    '../x', '..', '.', 'a b', "ab\n", "ab\0", "ab\0/../../x", "\x{e9}ab",
    'a' x 42, 'a' x 1000, 'ab%2f..', '%2e%2e', 'ab/../cd', '/etc', 'gw:80');
my @refused;
for my $n (@badnames) {
    for my $call (['apply', { spec => $spec, name => $n }],
        ['plan', { spec => $spec, name => $n }],
        ['apply', { spec => { %$spec, name => $n } }])
    {
        my ($what, $body) = @$call;
        my $r = DsSec::api($t, 'POST', "/api/runs/$what", json => $body,
            token => $admin);
        push @refused, "$what " . $JSON->encode($body->{name}
            // $body->{spec}{name}) . ": $r->{status} "
            . substr($r->{body} // '', 0, 200)
            unless $r->{status} == 400
                && ($r->{json}{error}{message} // '') =~ /name|NUL/;
    }
}
is_deeply(\@refused, [], 'every invalid run name: 400 naming the name (or '
    . 'the NUL), in apply, plan and the spec') or diag join "\n", @refused;
$r = DsSec::api($t, 'POST', '/api/runs/plan', token => $admin,
    json => { spec => $spec, name => 'a' . ('b' x 40) });
is($r->{status}, 200, 'a 41-character name is valid (plan: 200)');
is_deeply(snapshot(), $before, 'no run was made, no directory created');

# ---- the logs API stays in the replica's log ------------------------------------------------

my $canary = 'CANARY-' . sha256_hex(rand);
for my $f ("$dir/canary.txt", "$dir/replicas/canary.log",
    "$dir/replicas/sec-a/canary.log", "$state/canary")
{
    DsTest::_write($f, "$canary\n");
}
$r = DsSec::api($t, 'GET', '/api/runs/sec-a/logs', token => $admin);
is($r->{status}, 200, 'the logs of sec-a: 200');
like($r->{body}, qr/^listening$/m, 'they are its replica\'s output');

my @probes = (
    '/api/runs/../logs', '/api/runs/..%2f..%2fcanary/logs',
    '/api/runs/%2e%2e/logs', '/api/runs/%2E%2E%2F%2E%2E%2Fcanary/logs',
    '/api/runs/sec-a%2f..%2fcanary/logs',
    '/api/runs/sec-a%2F..%2F..%2Fcanary.txt/logs',
    '/api/runs/sec-a/..%2f..%2fcanary/logs',
    '/api/runs/sec-a/../../canary/logs',
    '/api/runs//tmp/logs', '/api/runs/%2ftmp/logs',
    '/api/runs/%2Fetc%2Fpasswd/logs',
    '/api/runs/' . ('a' x 5000) . '/logs', '/api/runs/' . ('a' x 42) . '/logs',
    '/api/runs/sec-a/logs/../../../canary.txt',
    '/api/runs/sec-a/logs%2f..%2f..%2fcanary',
    '/api/runs/sec-a/logs?replica=../../canary',
    '/api/runs/sec-a/logs?replica=0%2f..%2f..%2fcanary',
    '/api/runs/sec-a/logs?replica=-1', '/api/runs/sec-a/logs?replica=0x0',
    '/api/runs/sec-a/logs?replica=99999999999999999999',
    '/api/runs/sec-a/logs?replica=%20',
    '/api/runs/sec-a/logs?offset=-1', '/api/runs/sec-a/logs?offset=1e3',
    '/api/runs/sec-a/logs?offset=99999999999999999999',
    '/api/runs/sec-a/logs?follow=../../canary',
);
my @nul = (
    '/api/runs/%00/logs', '/api/runs/..%00/logs',
    '/api/runs/sec-a%00/logs', '/api/runs/sec-a%00..%2f..%2fcanary/logs',
    '/api/runs/sec-a/logs%00', '/api/runs/sec-a/logs?replica=0%00',
    '/api/runs/sec-a/logs?replica=0%00../../canary',
    '/api/runs/sec-a/logs?offset=0%00x',
);
for my $v ('nginx', $sock) {
    my $where = $v eq 'nginx' ? 'through nginx' : 'on the socket';
    my (@bad, @leak);
    for my $p (@probes, @nul) {
        my $r = DsSec::api($t, 'GET', $p, via => $v, token => $admin,
            timeout => 10);
        my $short = length $p > 80 ? substr($p, 0, 60) . '...' : $p;
        push @leak, "$short: $r->{status}"
            if ($r->{body} // '') =~ /CANARY/;
        push @bad, "$short: $r->{status} " . substr($r->{body}
            // $r->{error} // '', 0, 120)
            unless $r->{status} == 400 || $r->{status} == 404;
    }
    is_deeply(\@leak, [], "no probe read a file outside the replica's log "
        . $where);
    is_deeply(\@bad, [], "every traversal, NUL and overlong probe: 400 or "
        . "404 $where") or diag join "\n", @bad;
}
$r = DsSec::api($t, 'DELETE', '/api/tokens/sa%00x', via => $sock,
    token => $admin);
ok($r->{status} == 404 || $r->{status} == 400,
    'DELETE /api/tokens/sa%00x does not revoke "sa"')
    or diag "$r->{status} $r->{body}";
is(gw('sec-a', $tok{sa})->{status}, 200, 'sa still opens sec-a');

# ---- very long tokens, headers and paths: 4xx, and controld stays up ------------------

for my $v ('nginx', $sock) {
    my $where = $v eq 'nginx' ? 'through nginx' : 'on the socket';
    my @bad;
    for my $n (600, 7000, 40_000, 200_000) {
        for my $call (
            ["a $n-byte token", '/api/health', token => 'x' x $n],
            ["a $n-byte header", '/api/health', token => $admin,
                headers => ['X-Big' => 'y' x $n]],
            ["a $n-byte run name", '/api/runs/' . ('a' x $n) . '/logs',
                token => $admin])
        {
            my ($what, $p, %o) = @$call;
            my $r = DsSec::api($t, 'GET', $p, %o, via => $v, timeout => 10);
            # a long header beside a good token may well pass
            my $fine = $what =~ /header/ && $r->{status} == 200;
            push @bad, "$what: $r->{status} " . ($r->{error} // '')
                unless $fine || $r->{status} >= 400 && $r->{status} < 500;
        }
    }
    is_deeply(\@bad, [], "very long tokens, headers, names: 4xx (a header "
        . "200), never 5xx $where") or diag join "\n", @bad;
}
is(DsSec::api($t, 'GET', '/api/health', token => $admin,
    via => $sock)->{status}, 200, 'and controld still answers');
is($c->controld_pid && kill(0, $c->controld_pid), 1,
    'the same controld process');

# ---- the whole run done: no secret left behind --------------------------------------------

$c->finish;     # stops the runs and controld
$t->stop;

my $clog = $c->controld_log;    # controld's stdout and stderr
like($clog,
    qr/created the admin token "admin"; it is in \S+client\.yml \(mode 0600\), not shown: stdout is not a terminal/,
    'controld named the file of its first admin token: its stdout is a '
    . 'file here, not a terminal');
like($clog, qr/\[info\] created the admin token "admin" \(written to /,
    'and logged that it made one, without it');
is((stat $c->client_config)[2] & 07777, 0600,
    'the client configuration with the token is mode 0600');

my @files = DsSec::files_under("$dir/error.log", "$dir/access.log",
    "$dir/nginx.stderr", "$dir/controld.stderr", "$dir/replicas",
    "$dir/home", glob("$dir/bg*.out"), glob("$dir/bg*.err"));
ok(scalar(grep { m{/replicas/sec-open/.*\.log$} } @files),
    'the replicas\' logs are there to search');
like(DsTest::_slurp((grep { m{/replicas/sec-open/.*\.log$} } @files)[0]),
    qr/\Q$passed\E/, 'and a header a replica got is in its log (the '
    . 'search would see a token)');

# a first-start banner on a terminal would be the one place for the admin
# token; stdout is a file here, so there is none
my ($hits, $excused) = DsSec::find_secrets(\%secret, \@files,
    except => qr/^    dst_[A-Za-z0-9_-]{43}$/);
is_deeply($hits, [], 'no token in error.log, access.log, controld\'s log '
    . 'or a replica\'s log') or diag join "\n", @$hits;
is(scalar @$excused, 0, 'not even the admin token in controld\'s output')
    or diag join "\n", @$excused;

my @said;
for my $r (@cli_said) {
    for my $k (sort keys %secret) {
        push @said, "dstackctl said token $k"
            if index(($r->{out} // '') . ($r->{err} // ''), $secret{$k}) >= 0;
    }
}
is_deeply(\@said, [], 'dstackctl never printed a token but when creating it');

my $mdb = DsTest::_slurp("$state/data.mdb")
    . DsTest::_slurp("$state/lock.mdb");
ok(length $mdb > 0, 'data.mdb is there');
my @plain = grep { index($mdb, $secret{$_}) >= 0 } sort keys %secret;
is_deeply(\@plain, [], 'no token in plain text in data.mdb or lock.mdb');
my @tails = grep { index($mdb, substr($secret{$_}, 4)) >= 0 }
    sort keys %secret;
is_deeply(\@tails, [], 'nor the base64 part of one');
my @hashed = grep { index($mdb, sha256($tok{$_})) < 0 } qw(admin sa sab svcs);
is_deeply(\@hashed, [], 'the live tokens are there by their SHA-256');

$t->done;
