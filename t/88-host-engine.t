#!/usr/bin/perl
# t/lib/DsEngine.pm in a DsHosts host: a Podman service started in the
# host's network namespace (DsEngine->new(undef, netns => ..., dir =>
# ...)), its socket a path on the shared file system, an image of its
# own, a container created through the Docker API with a published port
# (HostIp 0.0.0.0, HostPort ""), reachable from the root namespace at
# the host's IP; two engines in two hosts at once; nothing left after
# finish (processes, bridge, iptables chains, storage).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Time::HiRes qw(time sleep);

use DsHosts;
use DsEngine;
use DsTest ();

if (my $why = DsHosts::available()) { plan skip_all => $why }
if (my $why = DsEngine::unavailable()) { plan skip_all => $why }
plan skip_all => 'no curl' unless DsHosts::_which('curl');
plan skip_all => 'no nsenter (util-linux)' unless DsHosts::_which('nsenter');
plan skip_all => 'no iptables' unless DsHosts::_which('iptables');
# nothing here to sanitize: once, in the first pass
plan skip_all => 'runs in the pass without sanitizers'
    if ($ENV{DSTACK_SANITIZE} // '') eq '1';

my $t0 = time;
my $JSON = JSON::PP->new->canonical;

sub sh {
    my $out = `$_[0] 2>&1`;
    return ($? >> 8, $out);
}

sub ns_pids {
    my $ns = shift;
    return sort { $a <=> $b } grep { /^\d+$/ }
        split /\s+/, `ip netns pids $ns 2>/dev/null`;
}

# a Docker API call with curl over the engine's socket
my $CALL = 0;
sub docker {
    my ($e, $method, $path, $body) = @_;
    my @data;
    if (defined $body) {
        my $f = $e->dir . '/call-' . ++$CALL . '.json';
        DsTest::_write($f, $JSON->encode($body));
        @data = ('-H', 'Content-Type: application/json',
                 '--data-binary', "\@$f");
    }
    open my $p, '-|', 'curl', '-sS', '-m', '30', '-w', "\n%{http_code}",
        '--unix-socket', $e->socket_path, '-X', $method, @data,
        "http://engine/v1.41$path" or die "curl: $!";
    local $/;
    my $out = <$p> // '';
    close $p;
    my ($text, $code) = $out =~ /^(.*)\n(\d+)\s*$/s;
    return { status => $code // 0, body => $text // $out,
             json => scalar eval { $JSON->decode($text // '') } };
}

# the content at IP:PORT from the root namespace ('' when none)
sub fetch {
    my ($ip, $port) = @_;
    my $out = `curl -sS -m 3 --noproxy '*' http://$ip:$port/ 2>/dev/null`;
    return $? == 0 ? $out : '';
}

my $h = DsHosts->new(n => 2);
my @H = map { $h->host($_) } 0, 1;
my %before = map { $_->{ns} => [ns_pids($_->{ns})] } @H;

# ---- two engines, one per host ------------------------------------------------

my @E = map {
    DsEngine->new(undef, netns => $_->{ns}, dir => "$_->{dir}/engine")
} @H;
for my $i (0, 1) {
    my ($e, $host) = ($E[$i], $H[$i]);
    is($e->socket_path, "$host->{dir}/engine/engine.sock",
        "engine $i: the socket is a path in the host's directory");
    ok(-S $e->socket_path, "engine $i: the socket exists");
    my @in = ns_pids($host->{ns});
    ok((grep { $_ == $e->{pid} } @in),
        "engine $i: the service runs in the host's namespace");
    my $r = docker($e, 'GET', '/version');
    is($r->{status}, 200, "engine $i: /version over curl --unix-socket");
    my @names = map { $_->{Name} } @{ ($r->{json} || {})->{Components} || [] };
    ok((grep { /Podman/ } @names), "engine $i: it is Podman")
        or diag $r->{body};
}
isnt($E[0]->subnet, $E[1]->subnet, 'the engines have subnets of their own');
isnt($E[0]->dir, $E[1]->dir, 'and directories of their own');

# ---- an image and a container per engine -----------------------------------------

my (@id, @port, @sandbox);
for my $i (0, 1) {
    my $e = $E[$i];
    $e->image('localhost/web:1',
        { 'www/index.html' => "host$i\n", 'image.txt' => "host$i\n" });
    my $r = docker($e, 'GET', '/images/json');
    my @tags = map { @{ $_->{RepoTags} || [] } } @{ $r->{json} || [] };
    is_deeply(\@tags, ['localhost/web:1'],
        "engine $i: its own storage holds its image only");
    $r = docker($e, 'POST', "/containers/create?name=web$i", {
        Image => 'localhost/web:1',
        Cmd => ['httpd', '-f', '-p', '8000', '-h', '/www'],
        ExposedPorts => { '8000/tcp' => {} },
        HostConfig => { PortBindings =>
            { '8000/tcp' => [{ HostIp => '0.0.0.0', HostPort => '' }] } },
    });
    is($r->{status}, 201, "engine $i: container created") or diag $r->{body};
    $id[$i] = ($r->{json} || {})->{Id} // 'none';
    $r = docker($e, 'POST', "/containers/$id[$i]/start");
    is($r->{status}, 204, "engine $i: container started") or diag $r->{body};
    $port[$i] = $e->port($id[$i], '8000/tcp');
    $r = docker($e, 'GET', "/containers/$id[$i]/json");
    $sandbox[$i] = ((($r->{json} || {})->{NetworkSettings} || {})->{SandboxKey})
        // '';
    like($port[$i] // '', qr/^\d+$/, "engine $i: a published port");
}

for my $i (0, 1) {
    my ($ip, $port) = ($H[$i]{ip}, $port[$i] // 0);
    my $got = DsTest::wait_until(sub { fetch($ip, $port) },
        timeout => 15, interval => 0.2);
    is($got, "host$i\n",
        "engine $i: its container answers at $ip:$port from the root namespace");
}

# HostIp "" (all addresses) as well, a second container in engine 1
{
    my $e = $E[1];
    my $r = docker($e, 'POST', '/containers/create?name=web1b', {
        Image => 'localhost/web:1',
        Cmd => ['httpd', '-f', '-p', '8000', '-h', '/www'],
        ExposedPorts => { '8000/tcp' => {} },
        HostConfig => { PortBindings =>
            { '8000/tcp' => [{ HostIp => '', HostPort => '' }] } },
    });
    is($r->{status}, 201, 'HostIp "": created') or diag $r->{body};
    my $id = ($r->{json} || {})->{Id} // 'none';
    docker($e, 'POST', "/containers/$id/start");
    my $port = $e->port($id, '8000/tcp') // 0;
    isnt($port, $port[1], 'HostIp "": a port of its own');
    my $got = DsTest::wait_until(sub { fetch($H[1]{ip}, $port) },
        timeout => 15, interval => 0.2);
    is($got, "host1\n", 'HostIp "": it answers from the root namespace too');
}

# ---- finish: nothing left ------------------------------------------------------------

for my $i (0, 1) {
    my ($e, $host) = ($E[$i], $H[$i]);
    my $dir = $e->dir;
    my $ns = $host->{ns};
    $e->finish;
    is_deeply([ns_pids($ns)], $before{$ns},
        "engine $i: only the host's own processes are left in its namespace")
        or diag `ip netns pids $ns | xargs -r ps -o pid,args -p`;
    is_deeply([$e->pids], [], "engine $i: no process of the engine is left");
    my (undef, $links) = sh("ip netns exec $ns ip -o link show");
    unlike($links, qr/podman0|veth/, "engine $i: no bridge or veth left");
    my $fw = `ip netns exec $ns iptables -w -t nat -S 2>&1`
        . `ip netns exec $ns iptables -w -t filter -S 2>&1`;
    unlike($fw, qr/NETAVARK/i, "engine $i: no netavark iptables rules left")
        or diag $fw;
    ok(!-e $dir, "engine $i: its directory (storage, socket) is gone");
    ok($sandbox[$i] =~ m{^/run/netns/} && !-e $sandbox[$i],
        "engine $i: its container's network namespace is gone")
        or diag "sandbox: $sandbox[$i]";
    my @mounts = grep { index($_, "$dir/") >= 0 }
        split /\n/, DsTest::_slurp('/proc/self/mountinfo');
    is_deeply(\@mounts, [], "engine $i: nothing mounted under its directory");
}
my $hdir = $h->dir;
$h->cleanup;
my @left = grep { index(DsTest::_slurp("/proc/$_/cmdline"), $hdir) >= 0 }
    map { m{^/proc/(\d+)$} ? $1 : () } glob('/proc/[0-9]*');
is_deeply(\@left, [], 'after the hosts\' cleanup no process names their directory');
my $dt = time - $t0;
cmp_ok($dt, '<', 90, sprintf('all in under 90 s (%.1f s)', $dt));

done_testing;
