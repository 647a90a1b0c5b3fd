#!/usr/bin/perl
# The module loads with load_module into stock nginx; "nginx -t" accepts
# the shipped snippets and rejects bad directive values with a message
# that names the directive and the line.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;

plan skip_all => 'module not built: ' . DsTest::module_path()
    unless -f DsTest::module_path();

my $t = DsTest->new;

my ($ok, $out) = $t->nginx_t;
ok($ok, 'nginx -t accepts the harness configuration') or diag $out;
like($out, qr/test is successful/, 'nginx -t says the test is successful');
unlike($out, qr/\[(?:warn|alert|emerg|crit)\]/, 'and warns about nothing')
    or diag $out;

# without load_module the directives are unknown: they come from the module
($ok, $out) = $t->nginx_t($t->conf_text(load_module => 0), 'noload');
ok(!$ok, 'without load_module the configuration is rejected');
like($out, qr/unknown directive "dstack_/,
    'because the dstack directives come from the module');

# The shipped gateway server, as a self-hoster includes it: only the
# include path and the ports differ.
{
    my $gw = DsTest::_slurp("$DsTest::REPO/conf/nginx/dstack-gateway.conf");
    my ($p1, $p2) = (DsTest::free_port(), DsTest::free_port());
    ok($gw =~ s{include\s+\S*dstack-proxy\.conf;}
               {include $DsTest::REPO/conf/nginx/dstack-proxy.conf;}g,
        'dstack-gateway.conf includes dstack-proxy.conf');
    $gw =~ s/listen\s+\[::\]:80;//g;
    $gw =~ s/listen\s+80;/listen 127.0.0.1:$p1;/g;
    $gw =~ s/listen\s+127\.0\.0\.1:9180;/listen 127.0.0.1:$p2;/g;
    my $text = $t->conf_text;
    # replace the harness's servers by the shipped ones
    $text =~ s/\n    server \{.*\}\n\z/\n$gw}\n/s
        or die 'cannot find the servers in the harness configuration';
    ($ok, $out) = $t->nginx_t($text, 'shipped');
    ok($ok, 'nginx -t accepts the shipped dstack-gateway.conf') or diag $out;
    like($gw, qr/location = \/stats \{[^}]*allow 127\.0\.0\.1;[^}]*deny all;/s,
        'the shipped stats location is restricted to local clients');
    like($gw, qr/location = \/metrics \{[^}]*allow 127\.0\.0\.1;[^}]*deny all;/s,
        'the shipped metrics location is restricted to local clients');
}

# Bad values.  Each case: the conf options that put it in, the directive
# the message must name, a pattern the rest of the message must match, and
# the text of the offending line (to check the line number nginx gives).
my @bad = (
    [{ capacity => 'services=abc' }, 'dstack_capacity', qr/services=abc/],
    [{ capacity => 'services=0' }, 'dstack_capacity', qr/services=0/],
    [{ capacity => 'services=10 replicas=-1' }, 'dstack_capacity',
        qr/replicas=-1/],
    [{ capacity => 'services=99999999' }, 'dstack_capacity',
        qr/services=99999999/],
    [{ capacity => 'servers=10' }, 'dstack_capacity', qr/servers=10/],
    [{ capacity => 'services=10 replicas=10 extra=1' }, 'dstack_capacity',
        qr/./],
    [{ limit_zone => '1' }, 'dstack_limit_zone', qr/"1"/],
    [{ limit_zone => 'lots' }, 'dstack_limit_zone', qr/lots/],
    [{ watch_interval => 'often' }, 'dstack_watch_interval', qr/./],
    [{ retry_after => 'soon' }, 'dstack_retry_after', qr/./],
    [{ server => 'location /x { dstack_gateway maybe; }' },
        'dstack_gateway', qr/maybe/, 'dstack_gateway maybe;'],
    [{ stats_server => 'location /s { dstack_stats bogus; }' },
        'dstack_stats', qr/bogus/, 'dstack_stats bogus;'],
    [{ stats_server => 'location /s { dstack_stats; }' },
        'dstack_stats', qr/number of arguments/, 'dstack_stats;'],
    [{ http => 'dstack_stats json;' }, 'dstack_stats', qr/not allowed here/,
        'dstack_stats json;'],
    [{ domain => 'bad_domain!', server_name => '_' }, 'dstack_domain', qr/bad_domain!/],
    [{ domain => '.', server_name => '_' }, 'dstack_domain', qr/"\."/],
    [{ http => 'upstream u2 { dstack_balancer now; }' }, 'dstack_balancer',
        qr/number of arguments/, 'dstack_balancer now;'],
    [{ http => 'dstack_state /tmp/a /tmp/b;' }, 'dstack_state',
        qr/number of arguments/, 'dstack_state /tmp/a /tmp/b;'],
);

for my $case (@bad) {
    my ($o, $directive, $re, $needle) = @$case;
    $needle //= "$directive " . ($o->{capacity} // $o->{limit_zone}
        // $o->{watch_interval} // $o->{retry_after} // $o->{domain}) . ';';
    my $desc = join ' ', map { "$_=$o->{$_}" } sort keys %$o;
    my $text = $t->conf_text(%$o);
    my @lines = split /\n/, $text;
    my ($line) = grep { index($lines[$_ - 1], $needle) >= 0 } 1 .. @lines;
    ok($line, "$desc: the configuration has \"$needle\"") or next;
    ($ok, $out) = $t->nginx_t($text, 'bad');
    ok(!$ok, "nginx -t rejects $desc");
    like($out, qr/\[emerg\]/, "$desc: an [emerg] message");
    like($out, qr/\b\Q$directive\E\b/, "$desc: the message names $directive")
        or diag $out;
    like($out, $re, "$desc: the message says what is wrong") or diag $out;
    like($out, qr/bad\.conf:$line\b/, "$desc: and where (line $line)")
        or diag $out;
}

# dstack_gateway without a domain, or without dstack_state
{
    my $text = $t->conf_text;
    $text =~ s/^\s*dstack_domain [^;]*;//m;
    ($ok, $out) = $t->nginx_t($text, 'nodomain');
    ok(!$ok, 'dstack_gateway on without dstack_domain is rejected');
    like($out, qr/dstack_domain/, 'the message says dstack_domain is missing')
        or diag $out;

    $text = $t->conf_text;
    $text =~ s/^\s*dstack_state [^;]*;//m;
    ($ok, $out) = $t->nginx_t($text, 'nostate');
    ok(!$ok, 'dstack_gateway without dstack_state is rejected');
    like($out, qr/dstack_state/, 'the message says dstack_state is missing')
        or diag $out;
}

# Good values of every directive pass.
for my $o (
    { capacity => 'services=1 replicas=1' },
    { capacity => 'replicas=65536 services=65536' },
    { limit_zone => '64k' },
    { watch_interval => '100ms', retry_after => '30s' },
    { domain => 'Gateway.Example.COM' },
    { server => 'location /off { dstack_gateway off; return 204; }' },
) {
    my $desc = join ' ', map { "$_=$o->{$_}" } sort keys %$o;
    ($ok, $out) = $t->nginx_t($t->conf_text(%$o), 'good');
    ok($ok, "nginx -t accepts $desc") or diag $out;
}

# The module really runs: workers start, the stats location answers.
$t->start;
is(scalar($t->workers), 2, 'two workers run with the module loaded');
my $stats = eval { $t->stats };
ok($stats, 'the stats location answers') or diag $@;
is($stats->{version}, 1, 'stats version 1') if $stats;
my $r = $t->get('nosuch', '/');
is($r->{status}, 404, 'the gateway answers an unknown service with 404');

my ($w) = $t->workers;
my $maps = DsTest::_slurp("/proc/$w/maps");
like($maps, qr/ngx_http_dstack_module\.so/, 'the worker mapped the module');
if ($DsTest::SANITIZE) {
    like($maps, qr/libasan/, 'DSTACK_SANITIZE: the ASan runtime is loaded');
    like($maps, qr/libubsan/, 'DSTACK_SANITIZE: the UBSan runtime is loaded');
}

$t->done;
