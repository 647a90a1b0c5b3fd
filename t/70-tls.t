#!/usr/bin/perl
# TLS at the gateway: certificates served from state per SNI name
# ("dstack_ssl on"), a new certificate served at the next handshake
# without a reload, the "*.<domain>" fallback, the static certificate
# without SNI or for a broken record; plain HTTP redirected with 308 for
# https services only when the gateway has TLS ("dstack_https_port"),
# never the ACME challenge path.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();
plan skip_all => 'the openssl and curl commands are needed'
    unless `openssl version 2>&1` =~ /^OpenSSL/ && `curl --version 2>&1`;

my $t = DsTest->new(workers => 2);
my $dir = $t->dir;
my $tls_port = DsTest::free_port();

# ---- certificates, made with the openssl command ------------------------

DsTest::make_ca($dir, 't70 CA');

sub leaf {
    my ($name, @san) = @_;
    return DsTest::make_leaf($dir, $name, map { "DNS:$_" } @san);
}

my $default = leaf('default', 'test.local', '*.test.local');
my $a1 = leaf('a-one', 'sa.test.local');
my $a2 = leaf('a-two', 'sa.test.local');
my $wild = leaf('wild', '*.test.local');

sub cert_op {
    my ($host, $c) = @_;
    return { op => 'cert', host => $host, cert => $c->{cert},
             key => $c->{key}, not_after => time + 86400 };
}

# ---- nginx: the shipped TLS server, and the redirect on the plain one ----

my %addr = map { $_ => $t->backend(name => $_) } qw(rsa rsb rsc);
sub svc {
    my ($name, %f) = @_;
    return ({ op => 'service', name => $name, auth => DsTest::false,
              https => $f{https} ? DsTest::true : DsTest::false,
              https_auto => $f{auto} ? DsTest::true : DsTest::false },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr{"r$name"}, state => 'ready',
                             version => 1 }] });
}

$t->seed([svc('sa', https => 1), svc('sb', auto => 1), svc('sc'),
          cert_op('sa.test.local', $a1)]);

# conf/nginx/dstack-tls.conf, pointed at this test
my $tls = $t->tls_server_conf($tls_port, cert => "$dir/default");
$tls =~ s{ssl_session_cache [^;]*;}{ssl_session_cache off;};
like($tls, qr/dstack_ssl on;/, 'dstack-tls.conf turns dstack_ssl on');

mkdir "$dir/acme";
mkdir "$dir/acme/.well-known";
mkdir "$dir/acme/.well-known/acme-challenge";
DsTest::_write("$dir/acme/.well-known/acme-challenge/tok-1", "tok-1.auth");

$t->write_conf(http => $tls, server => <<"EOF");
        dstack_https_port $tls_port;
        location /.well-known/acme-challenge/ {
            root $dir/acme;
        }
EOF
$t->start;

# ---- which certificate a handshake gets -----------------------------------

sub served {
    my ($sni) = @_;
    my $name = defined $sni ? "-servername $sni" : '-noservername';
    my $out = `echo | openssl s_client -connect 127.0.0.1:$tls_port $name 2>/dev/null | openssl x509 -noout -subject 2>&1`;
    return $out =~ /CN\s*=\s*(\S+)/ ? $1 : "none ($out)";
}

is(served('sa.test.local'), 'a-one', 'sa.test.local: its own certificate');
is(served('sb.test.local'), 'default',
    'sb.test.local, nothing in state: the static certificate');
is(served(undef), 'default', 'no SNI: the static certificate');

sub https {
    my ($host, $path) = @_;
    my $out = `curl -sS --cacert $dir/ca.crt --resolve $host:$tls_port:127.0.0.1 -o - -w '\\n%{http_code}' https://$host:$tls_port$path 2>&1`;
    my ($body, $code) = $out =~ /^(.*)\n(\d+)$/s;
    return ($code // 0, $body // $out);
}

my ($code, $body) = https('sa.test.local', '/x');
is($code, 200, 'HTTPS to sa.test.local, verified by curl, reaches the service')
    or diag $body;
like($body, qr/rsa/, 'answered by its replica');

# ---- no reload: a renewed certificate and the wildcard ------------------

my @workers = $t->workers;
$t->seed([cert_op('sa.test.local', $a2), cert_op('*.test.local', $wild)]);
is(served('sa.test.local'), 'a-two',
    'a renewed certificate is served at the next handshake');
is(served('sb.test.local'), 'wild', 'sb.test.local: the *.test.local record');
is(served('SB.Test.Local'), 'wild', 'SNI names are matched lower-case');
is(served('x.y.test.local'), 'default',
    'a wildcard covers one label only');
my %same = map { $_ => 1 } $t->workers;
is(join(' ', sort keys %same), join(' ', sort @workers),
    'same workers: nothing was reloaded');
($code) = https('sb.test.local', '/');
is($code, 200, 'HTTPS to sb.test.local with the wildcard, verified');

# a record that does not parse: the static one, an [error], no crash
my $mark = $t->log_size;
$t->seed([{ op => 'cert', host => 'sc.test.local', cert => "garbage\n",
            key => "garbage\n", not_after => 0 }]);
is(served('sc.test.local'), 'default', 'a broken record: the static one');
ok($t->wait_log(qr/certificate for "sc\.test\.local".*cannot be parsed/,
    from => $mark), 'and the reason in error.log');
$t->seed([cert_op('sc.test.local', $a1)]);
is(served('sc.test.local'), 'a-one', 'fixed: the new record at once');

# ---- the redirect -------------------------------------------------------------

my $res = $t->get('sa', '/p/q?x=1');
is($res->{status}, 308, 'https: true over plain HTTP: 308');
is($res->{headers}{location}, "https://sa.test.local:$tls_port/p/q?x=1",
    'to the same host, port and URI over https');
$res = $t->request('POST', '/p', host => 'sa.test.local', body => 'x');
is($res->{status}, 308, '308 for a POST too (keeps method and body)');
$res = $t->get('sb', '/');
is($res->{status}, 308, 'https: auto with TLS at the gateway: 308');
$res = $t->get('sc', '/');
is($res->{status}, 200, 'https: false: served over plain HTTP');
$res = $t->get('sa', '/.well-known/acme-challenge/tok-1');
is($res->{status}, 200, 'the ACME challenge path is not redirected');
is($res->{body}, 'tok-1.auth', 'and served from the webroot');
$res = $t->get('nope', '/');
is($res->{status}, 404, 'an unknown service: 404, not a redirect');

# without dstack_https_port (a gateway without TLS): no redirect
$t->reload(conf => { server => '' }, wait_old => 1);
$res = $t->get('sa', '/');
is($res->{status}, 200, 'without dstack_https_port: https services are '
    . 'served over plain HTTP');

$t->done;
