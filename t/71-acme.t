#!/usr/bin/perl
# ACME end to end against pebble (Debian's test ACME server) on 127.0.0.1:
# a service applied with "https: true" -> controld runs uacme (HTTP-01,
# external account binding) -> the challenge is answered by nginx from
# the webroot -> the certificate lands in state -> an HTTPS request
# verified against pebble's root succeeds, without an nginx reload.  A
# short-lived certificate is renewed; a service whose DNS points
# elsewhere fails with the cause in the API and the log, and does not
# hold up the other.
#
# pebble-challtestsrv is the DNS pebble asks (every name -> 127.0.0.1,
# one name -> 127.0.0.2).  Test double, for trust only: uacme (linked
# with libcurl-gnutls) has no option for a CA file, so it runs through a
# wrapper in a private mount namespace whose system CA bundle also holds
# pebble's own TLS certificate.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;

plan skip_all => 'controld or the module not built'
    unless -x DsStack::controld_path() && -f DsTest::module_path();
for my $p (qw(pebble pebble-challtestsrv uacme)) {
    plan skip_all => "$p is not installed (Debian packages pebble, uacme)"
        unless grep { -x "$_/$p" } split /:/, $ENV{PATH};
}
plan skip_all => 'the uacme wrapper needs root (a private mount namespace)'
    unless $> == 0 && `unshare -m true 2>&1; echo \$?` =~ /^0$/m;
my $bundle = '/etc/ssl/certs/ca-certificates.crt';
plan skip_all => "no system CA bundle at $bundle" unless -f $bundle;

my $t = DsTest->new(workers => 2, seed_empty => 0);
my $dir = $t->dir;
my $tls_port = DsTest::free_port();
my %port = map { $_ => DsTest::free_port() } qw(acme mgmt dns dnsmgmt);

sub sh {
    my $cmd = shift;
    my $out = `$cmd 2>&1`;
    die "$cmd: $out" if $?;
    return $out;
}

# ---- pebble and its DNS -------------------------------------------------------

sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
   . "-subj '/CN=localhost' -addext 'subjectAltName=DNS:localhost,"
   . "IP:127.0.0.1' -days 1 -keyout $dir/pebble.key -out $dir/pebble.crt");
my $eab_key = 'zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W';
DsTest::_write("$dir/pebble.json", $DsTest::JSON->encode({ pebble => {
    listenAddress => "127.0.0.1:$port{acme}",
    managementListenAddress => "127.0.0.1:$port{mgmt}",
    certificate => "$dir/pebble.crt", privateKey => "$dir/pebble.key",
    httpPort => $t->port + 0, tlsPort => DsTest::free_port() + 0,
    ocspResponderURL => '',
    externalAccountBindingRequired => JSON::PP::true,
    externalAccountMACKeys => { 'kid-1' => $eab_key },
    certificateValidityPeriod => 40,
}}));

my @kids;
sub spawn {
    my ($log, %env) = (shift, %{ shift() });
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$dir/$log" or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT;
        $ENV{$_} = $env{$_} for keys %env;
        exec @_ or POSIX::_exit(127);
    }
    push @kids, $pid;
    return $pid;
}
END { kill 'TERM', @kids if @kids; }

spawn('challtestsrv.log', {}, 'pebble-challtestsrv',
    '-dns01', "127.0.0.1:$port{dns}", '-http01', '', '-https01', '',
    '-tlsalpn01', '', '-defaultIPv6', '',
    '-management', "127.0.0.1:$port{dnsmgmt}");
spawn('pebble.log', { PEBBLE_VA_NOSLEEP => 1, PEBBLE_WFE_NONCEREJECT => 0,
                      PEBBLE_AUTHZREUSE => 0 },
    'pebble', '-config', "$dir/pebble.json", '-dnsserver',
    "127.0.0.1:$port{dns}");
ok(DsTest::wait_until(sub { DsTest::_port_open($port{acme})
                            && DsTest::_port_open($port{dnsmgmt}) },
    timeout => 20), 'pebble and its DNS are up')
    or BAIL_OUT('pebble did not start: '
                . DsTest::_slurp("$dir/pebble.log"));

# one name resolves elsewhere: its HTTP-01 challenge cannot reach us
sh("curl -sS -d '{\"host\":\"elsewhere.test.local.\","
   . "\"addresses\":[\"127.0.0.2\"]}' "
   . "http://127.0.0.1:$port{dnsmgmt}/add-a");

# ---- uacme, trusting pebble's listener (see the top) --------------------------

sh("cat $bundle $dir/pebble.crt > $dir/bundle.crt");
DsTest::_write("$dir/uacme", <<"EOF");
#!/bin/sh
exec unshare -m sh -c 'mount --bind "\$0" $bundle && exec uacme "\$@"' \\
    $dir/bundle.crt "\$@"
EOF
chmod 0755, "$dir/uacme";

# ---- controld with tls.acme, nginx with the shipped TLS server ------------

my $s = DsStack->new($t, extra => <<"EOF");
tls:
  acme:
    directory: https://127.0.0.1:$port{acme}/dir
    email: ops\@test.local
    eab_kid: kid-1
    eab_hmac_key: $eab_key
    webroot: $dir/acme
    client: $dir/uacme
    renew_before: 30s
    retry: 2s
EOF
$s->start_controld;

my $tls = $t->tls_server_conf($tls_port);
$t->write_conf(http => $tls, server => <<"EOF");
        dstack_https_port $tls_port;
        location /.well-known/acme-challenge/ {
            root $dir/acme;
        }
EOF
$t->start;

my $code = $s->upload($s->app_files);
for my $name (qw(secure elsewhere)) {
    my $r = $s->apply($s->app_spec(https => JSON::PP::true), name => $name,
        code => $code);
    like($r->{status}, qr/^20[01]$/, "apply $name") or diag explain $r;
}
ok($s->wait_ready('secure', 1), 'secure is running');

my $run = $s->wait_run('secure',
    sub { ($_[0]{tls}{status} // '') eq 'valid' }, timeout => 60);
ok($run, 'its certificate is issued by pebble')
    or diag explain($s->last_run->{tls}), $s->log_text;

my $root = sh("curl -sSk https://127.0.0.1:$port{mgmt}/roots/0");
DsTest::_write("$dir/pebble-root.crt", $root);

sub served {
    my $out = `echo | openssl s_client -connect 127.0.0.1:$tls_port -servername secure.test.local 2>/dev/null | openssl x509 -noout -serial -issuer 2>&1`;
    my ($serial) = $out =~ /serial=(\S+)/;
    return ($serial // '', $out);
}

sub https_get {
    my $out = `curl -sS --cacert $dir/pebble-root.crt --resolve secure.test.local:$tls_port:127.0.0.1 https://secure.test.local:$tls_port/ 2>&1`;
    return $out;
}

my ($serial, $info) = served();
like($info, qr/Pebble Intermediate/i, 'nginx serves it (issuer pebble)');
like(https_get(), qr/"run": "secure"/,
    'HTTPS to the service, verified against pebble\'s root');
my $res = $t->get('secure', '/');
is($res->{status}, 308, 'plain HTTP is redirected to HTTPS');

# ---- renewal: 40 s certificates, renewed with 30 s left ------------------

my $renewed;
ok(DsTest::wait_until(sub { my ($n) = served(); $renewed = $n;
                            $n && $n ne $serial }, timeout => 40),
    'the short-lived certificate is renewed and served without a reload')
    or diag $s->log_text;
like($s->log_text, qr/certificate for secure\.test\.local renewed/,
    'the log says so');
like(https_get(), qr/"run": "secure"/, 'HTTPS works with the renewed one');

# ---- a failure: reported with its cause, others unaffected ---------------

$run = $s->wait_run('elsewhere',
    sub { ($_[0]{tls}{status} // '') eq 'failed' }, timeout => 60);
ok($run, 'elsewhere.test.local (DNS points elsewhere) fails')
    or diag explain $s->last_run->{tls};
like($run->{tls}{error} // '', qr/127\.0\.0\.2|connection|refused|fetching/i,
    'with the cause in the API') or diag explain $run->{tls};
like($s->log_text, qr/certificate for elsewhere\.test\.local: .*again in/,
    'and in the log, with the retry');
is($s->run('secure')->{status}, 'running', 'the other service runs on');
my $ps = `DSTACK_CONFIG=@{[ $s->client_config ]} HOME=$dir $DsTest::BUILD/dstackctl ps 2>&1`;
like($ps, qr/^\s*elsewhere\s.*\(certificate: .*127\.0\.0\.2/mi,
    'dstackctl ps shows the cause') or diag $ps;

# controld's metrics (t/38 has the rest): the failure is counted, the
# certificate's end is there by name
my $m = $s->api('GET', '/api/metrics');
like($m->{body} // '', qr/^dstack_controld_acme_failures_total [1-9]\d*$/m,
    'GET /api/metrics counts the ACME failure');
my ($na) = ($m->{body} // '') =~ /^dstack_controld_certificate_expiry_timestamp_seconds\{name="secure\.test\.local",source="acme"\} (\d+)$/m;
ok($na && abs($na - time) < 120,
    '... and has the end of secure\'s 40 s certificate')
    or diag $m->{body};

$s->finish;
$t->done;
