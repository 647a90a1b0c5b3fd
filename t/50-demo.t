#!/usr/bin/perl
# The README's demo, as a new user runs it: examples/demo starts nginx and
# controld, deploys examples/hello, and prints a curl that works, over
# HTTP and over HTTPS with --cacert; the printed curls are run as
# printed.  The admin API is on HTTPS only: its printed curl works, the
# plain port refuses /api/ (403, "use https") and redirects the rest, and
# dstackctl's client.yml points at https://gateway.<domain> with the
# private CA.  As root, nginx's workers and the state use the group
# dstack (never nogroup), the TLS keys are root's alone, and the error
# log runs at notice, 0640.  "examples/demo stop" ends everything.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use File::Temp qw(tempdir);

my $build = $DsTest::BUILD;
plan skip_all => 'controld, dstackctl or the module not built'
    unless -x "$build/dstack-controld" && -x "$build/dstackctl"
        && -f "$build/ngx_http_dstack_module.so";
plan skip_all => 'the demo runs its replicas in network namespaces: root'
    unless $> == 0;
plan skip_all => 'the demo runs stock nginx, which cannot load the '
    . 'sanitizer build of the module; the plain pass covers it'
    if $DsTest::SANITIZE;

my $dir = tempdir('dstack-demo-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
$ENV{DSTACK_DEMO_DIR} = "$dir/demo";
$ENV{DSTACK_DEMO_PORT} = DsTest::free_port();

my $out = `$DsTest::REPO/examples/demo 2>&1`;
is($?, 0, 'examples/demo succeeds') or diag $out;
like($out, qr{^Service is published at:\n\s+(http://hello\.\S+)$}m,
    'it prints where the service is published');

my ($curl) = $out =~ /^\s+(curl -H 'Authorization: Bearer dst_\S+' \S+)$/m;
ok($curl, 'it prints a curl with a token') or diag $out;
my %seen;
for (1 .. 6) {
    my $answer = `$curl 2>/dev/null`;
    my $r = eval { $DsTest::JSON->decode($answer) } || {};
    diag "the curl answered: $answer" unless defined $r->{replica};
    $seen{ $r->{replica} // 'none' }++;
}
# one replica when this host cannot give each its own network namespace
my @want = $out =~ /no network namespaces here/ ? (0) : (0, 1);
is_deeply([sort keys %seen], \@want,
    'the printed curl works, and every replica answers it');

my ($tls) = $out =~ m{^\s+(curl --cacert \S+ -H 'Authorization: Bearer dst_\S+' https://hello\.\S+)$}m;
ok($tls, 'it prints an HTTPS curl with --cacert') or diag $out;
my $answer = $tls ? `$tls 2>/dev/null` : '';
my $r = eval { $DsTest::JSON->decode($answer) } || {};
ok(defined $r->{replica},
    'the printed HTTPS curl works, verified against the private CA')
    or diag "it answered: $answer";

# the API and the model endpoint on gateway.<domain>, over HTTPS too
if ($tls) {
    my ($cacert, $url) = $tls =~ m{--cacert (\S+) .* (https://\S+)$};
    (my $gw = $url) =~ s{//hello\.}{//gateway.};
    $gw =~ s{/$}{};
    my ($admin) = (DsTest::_slurp("$dir/demo/client.yml") // '')
        =~ /^token:\s*(\S+)/m;
    my $health = `curl -s --cacert $cacert -H 'Authorization: Bearer $admin' $gw/api/health`;
    like($health, qr/"ok":\s*true/, 'the API answers on https://gateway.<domain>')
        or diag $health;
    my $models = `curl -s --cacert $cacert -H 'Authorization: Bearer $admin' $gw/v1/models`;
    like($models, qr/"object":\s*"list"/, 'so does the model endpoint')
        or diag $models;
}

# ---- the admin API: HTTPS only --------------------------------------------

my $demo = "$dir/demo";
my ($api_curl) = $out =~ m{^\s+(curl --cacert \S+ -H "Authorization: Bearer \$\(sed [^)]+\)" (https://gateway\.\S+/api/health))$}m;
ok($api_curl, 'it prints a curl for the admin API on https://gateway.')
    or diag $out;
my $health = $api_curl ? `$api_curl 2>&1` : '';
like($health, qr/"ok":\s*true/, 'the printed API curl works as printed')
    or diag $health;
my $client = DsTest::_slurp("$demo/client.yml") // '';
my ($admin_token) = $client =~ /^token:\s*(\S+)/m;
ok($admin_token, 'client.yml holds the admin token');
unlike($out, qr/\Q${\($admin_token \/\/ 'dst_')}\E/,
    'the admin token itself is not printed');

my ($server) = $client =~ /^server:\s*(\S+)/m;
like($server, qr{^https://gateway\.dstack\.localhost:\d+$},
    'client.yml: the server is https://gateway.<domain>');
my ($ca) = $client =~ /^ca:\s*(\S+)/m;
is($ca, "$demo/state/tls/ca.crt", 'client.yml: ca: the private CA');
is((stat "$demo/client.yml")[2] & 07777, 0600, 'client.yml is 0600');
my $ps = `DSTACK_CONFIG=$demo/client.yml $build/dstackctl ps 2>&1`;
is($?, 0, 'dstackctl ps with it works over HTTPS') or diag $ps;
like($ps, qr/^\s*hello\s/m, 'and lists the service');
unlike($ps, qr/warning/, 'without a warning');

my ($plain) = $out =~ m{^\s+curl -i (http://\S+?)/?$}m;
(my $plain_gw = $plain // '') =~ s{//hello\.}{//gateway.};
my $r403 = `curl -si -H 'Authorization: Bearer nothing' $plain_gw/api/health`;
like($r403, qr{^HTTP/1\.1 403}m, 'plain HTTP to the API: 403') or diag $r403;
like($r403, qr{"message":"the API is served over HTTPS only: use https://gateway\.dstack\.localhost:\d+/api/},
    'with a message that says where it is');
my $r308 = `curl -si $plain_gw/v1/models`;
like($r308, qr{^HTTP/1\.1 308}m, 'the rest of gateway.<domain>: 308');
like($r308, qr{^Location: https://gateway\.dstack\.localhost:\d+/v1/models\r?$}m,
    'to https, on the demo\'s HTTPS port');

# ---- the group and the logs ------------------------------------------------

my $conf = DsTest::_slurp("$demo/nginx.conf") // '';
like($conf, qr/^user \S+ dstack;$/m, 'nginx runs its workers in the group dstack');
unlike($conf . (DsTest::_slurp("$demo/controld.yml") // ''), qr/nogroup/,
    'nogroup appears nowhere');
like(DsTest::_slurp("$demo/controld.yml"), qr/^group: dstack$/m,
    'controld gives the state and sockets to dstack');
my $gid = getgrnam('dstack');
ok(defined $gid, 'the group dstack exists (the demo made it if missing)');
my @workers = split ' ', `ps -o group= --ppid \$(cat $demo/nginx.pid)`;
ok(@workers && !grep({ $_ ne 'dstack' } @workers),
    'every worker runs in the group dstack') or diag "@workers";
for my $f ('state', 'state/data.mdb', 'api.sock', 'notify.sock') {
    my @st = stat "$demo/$f";
    ok(@st && $st[5] == $gid && !($st[2] & 07), "$f: group dstack, no others")
        or diag sprintf('%s: gid %s mode %o', $f, $st[5] // '-',
                        ($st[2] // 0) & 07777);
}
for my $k ('ca.key', 'gateway.key') {
    my @st = stat "$demo/state/tls/$k";
    is(sprintf('%d %o', $st[4] // -1, ($st[2] // 0) & 07777), '0 600',
        "tls/$k: root's, 0600");
}
like($conf, qr{^error_log \S+ notice;$}m, 'the error log at notice');
for my $f ('nginx-error.log', 'nginx-access.log') {
    is((stat "$demo/$f")[2] & 07777, 0640, "$f is 0640");
}

my ($bare) = $out =~ /^\s+(curl -i \S+)$/m;
like(`$bare 2>&1`, qr{^HTTP/1\.1 401}m, 'without the token: 401');

my $stop = `$DsTest::REPO/examples/demo stop 2>&1`;
is($?, 0, 'examples/demo stop succeeds') or diag $stop;
ok(DsTest::wait_until(sub { !-e "$dir/demo/controld.pid"
                            && !-e "$dir/demo/nginx.pid" }),
    'controld and nginx are gone');
ok(DsTest::wait_until(sub { !replicas_left() }, timeout => 15),
    'no replica process is left') or diag 'left: ' . replicas_left();

# processes working in the demo's replicas directory
sub replicas_left {
    my @left;
    for my $p (glob '/proc/[0-9]*') {
        my $cwd = readlink("$p/cwd") // next;
        push @left, $p if index($cwd, "$dir/demo/replicas") == 0;
    }
    return join ' ', @left;
}

done_testing;
