#!/usr/bin/perl
# dstackctl against controld's API over https:// (the gateway server of
# conf/nginx/dstack-api.conf with TLS), its certificate issued by a
# private CA, as controld's own local CA issues them: without the CA the
# CLI fails and says how to give it (DSTACK_CA or "ca:" in the config
# file); with it, it works; an unreadable CA file is named.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use Test::More;

DsCli->require_built('cli', 'controld', 'module');
plan skip_all => 'the openssl command is needed'
    unless `openssl version 2>&1` =~ /^OpenSSL/;

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t, tls => 1);
$c->start_controld;
$t->start;

my %https = (DSTACK_CONFIG => undef,
    DSTACK_SERVER => 'https://127.0.0.1:' . $c->tls_port,
    DSTACK_TOKEN => $c->admin_token);

my $r = $c->cli(['ps'], env => { %https, DSTACK_CA => undef });
is($r->{rc}, 1, 'https:// with a private CA, not given: exit 1');
like($r->{err}, qr/^dstackctl: cannot reach the server "https:\/\/127\.0\.0\.1:\d+": .*certificate.* \(a private CA, such as controld's own\? set DSTACK_CA or "ca:" in the config file to its certificate\)$/m,
    'it says the certificate failed and how to give the CA')
    or diag $r->{err};

$r = $c->cli(['ps'], env => { %https, DSTACK_CA => $c->tls_ca });
is($r->{rc}, 0, 'with DSTACK_CA: exit 0') or diag $r->{err};
like($r->{out}, qr/NAME/, 'and the runs are listed');

my $cfg = $t->dir . '/https-client.yml';
DsTest::_write($cfg, "server: https://127.0.0.1:" . $c->tls_port . "\n"
    . "token: " . $c->admin_token . "\nca: " . $c->tls_ca . "\n");
$r = $c->cli(['ps'], env => { DSTACK_CONFIG => $cfg, DSTACK_SERVER => undef,
    DSTACK_TOKEN => undef, DSTACK_CA => undef });
is($r->{rc}, 0, 'with "ca:" in the config file: exit 0') or diag $r->{err};

$r = $c->cli(['ps'], env => { %https, DSTACK_CA => '/nonexistent/ca.crt' });
is($r->{rc}, 1, 'an unreadable CA file: exit 1');
like($r->{err}, qr/^dstackctl: cannot read the CA file "\/nonexistent\/ca\.crt" \(DSTACK_CA or "ca:" in the config file\): No such file/m,
    'it names the file and why');

$c->finish;
$t->done;
