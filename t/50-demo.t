#!/usr/bin/perl
# The README's demo, as a new user runs it: examples/demo starts nginx and
# controld, deploys examples/hello, and prints a curl that works, over
# HTTP and over HTTPS with --cacert; the printed curls are run as
# printed; "examples/demo stop" ends everything.

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
