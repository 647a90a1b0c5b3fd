#!/usr/bin/perl
# t/lib/DsHosts.pm itself: hosts as network namespaces with a real sshd
# each, a jump host and a hidden host behind it, the faults, the cleanup.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp ();
use IO::Socket::INET;
use Test::More;
use Time::HiRes qw(time sleep);

use DsHosts;

if (my $why = DsHosts::available()) {
    plan skip_all => $why;
}
for my $c (qw(curl python3)) {
    plan skip_all => "no $c" unless DsHosts::_which($c);
}
# the harness has nothing to sanitize: once, in the first pass
plan skip_all => 'runs in the pass without sanitizers'
    if ($ENV{DSTACK_SANITIZE} // '') eq '1';

my $t0 = time;

# what a process left: its namespaces, bridges and directory
sub leftovers {
    my $pid = shift;
    my @ns = grep { /^dsh\Q$pid\E-/ } DsHosts::_netns_names();
    my (undef, $links) = DsHosts::_run(['ip', '-o', 'link', 'show']);
    my @br = $links =~ /^\d+:\s+(\S+?)[:@].*alias dshosts pid=\Q$pid\E\b/mg;
    my @dirs = glob(($ENV{TMPDIR} || '/tmp') . "/dstack-hosts-$pid-*");
    return (@ns, @br, @dirs);
}

# an SSH banner from IP:PORT, from the root namespace ('' when none: no
# connection, or something else answering, e.g. a transparent proxy)
sub banner {
    my ($ip, $port, $timeout) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $ip, PeerPort => $port,
        Proto => 'tcp', Timeout => $timeout // 1) or return '';
    my $b = '';
    my $end = time + ($timeout // 1);
    $s->blocking(0);
    while (time < $end && $b !~ /\n/) {
        my $n = sysread($s, my $buf, 256);
        last if defined $n && $n == 0;
        $b .= $buf if $n;
        sleep 0.02;
    }
    return $b =~ /^(SSH-2\.0-\S*)/ ? $1 : '';
}

sub gone {
    my $pid = shift;
    my $st = DsHosts::_slurp("/proc/$pid/stat");
    return $st eq '' || $st =~ /\)\s+Z/;
}

sub tcp_ok {
    my ($ip, $port, $timeout) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => $ip, PeerPort => $port,
        Proto => 'tcp', Timeout => $timeout // 1);
    return $s ? 1 : 0;
}

sub curl {
    my ($url, $timeout) = @_;
    my ($rc, $out) = DsHosts::_run(['curl', '-s', '-o', '/dev/null',
        '-w', '%{http_code}', '--max-time', $timeout // 2, $url],
        timeout => ($timeout // 2) + 5);
    return $rc == 0 ? $out : "curl exit $rc";
}

my $fake = "/tmp/dshosts-fake-nvidia-smi-$$";
my $h = DsHosts->new(n => 3, jump => 1,
    host_env => [ {}, { DSTACK_NVIDIA_SMI => $fake, GREETING => 'a b' },
                  {} ]);
diag(sprintf 'hosts up in %.2f s', time - $t0);

my @hosts = $h->hosts;
is(scalar @hosts, 3, 'three hosts');
ok($h->jump && $h->hidden, 'a jump and a hidden host');
is((stat $h->key)[2] & 07777, 0600, 'the key is 0600');
ok(-s $h->key . '.pub', 'the public key');
like($h->bridge_ip, qr/^10\.\d+\.\d+\.1$/, 'bridge_ip ' . $h->bridge_ip);
like($h->bridge, qr/^dsb\d+$/, 'bridge ' . $h->bridge);
ok(length $h->bridge <= 15, 'bridge name fits IFNAMSIZ');

my %dirs;
for my $i (0 .. 2) {
    my $x = $h->host($i);
    is($x, $hosts[$i], "host($i) is hosts[$i]");
    like($x->{fingerprint}, qr/^SHA256:/, "host $i fingerprint");
    like($x->{host_key_pub}, qr/^ssh-ed25519 /, "host $i host key");
    my ($rc, $out, $err) = $h->ssh($i, 'echo $DSTACK_HOST_DIR; id -u; '
        . 'ip -4 -o addr show eth0; echo "[$DSTACK_NVIDIA_SMI|$GREETING]"');
    is($rc, 0, "ssh to host $i") or diag($err);
    my ($dir, $uid, $addr, $env) = split /\n/, $out;
    is($env, $i == 1 ? "[$fake|a b]" : '[|]',
       "host $i: host_env " . ($i == 1 ? 'reaches a session' : 'not here'));
    is($dir, $x->{state_dir}, "host $i DSTACK_HOST_DIR");
    ok(-d $dir, "host $i state dir exists");
    is($uid, 0, "host $i: root");
    like($addr // '', qr/\Q$x->{ip}\E\//, "host $i has its address");
    $dirs{$dir}++;
    ok(tcp_ok($x->{ip}, $x->{port}), "host $i port $x->{port} reachable "
        . 'from the root namespace');
}
is(scalar keys %dirs, 3, 'DSTACK_HOST_DIR differs per host');

{
    my ($rc, $out) = $h->ssh(2, 'cat; exit 7', input => "in put\n");
    is($rc, 7, 'the exit code of the command');
    is($out, "in put\n", 'input');
}

# the fleet file
{
    my $y = $h->fleet_yaml(name => 'f', hosts => [0, 1, 2], blocks => 2,
                           jump_hidden => 1);
    like($y, qr/^type: fleet\nname: f\nssh_config:\n  user: root\n  identity_file: \Q${\ $h->key }\E\n  hosts:\n/,
         'fleet head');
    my @hn = $y =~ /- hostname: (\S+)/g;
    is_deeply(\@hn, [ (map { $_->{ip} } @hosts), $h->hidden->{ip} ],
              'fleet hosts');
    my $j = $h->jump;
    like($y, qr/proxy_jump:\n {8}hostname: \Q$j->{ip}\E\n {8}port: $j->{port}\n {8}user: root\n {8}identity_file: /,
         'proxy_jump of the hidden host');
    is(scalar(() = $y =~ /blocks: 2/g), 4, 'blocks');
    note($y);
}

# the jump and the hidden host
{
    my $j = $h->jump;
    my $x = $h->hidden;
    my ($rc, $out) = $h->ssh('jump', 'echo $DSTACK_HOST_DIR');
    is($out, "$j->{state_dir}\n", 'ssh to the jump host');
    my $t = time;
    like(banner($j->{ip}, $j->{port}), qr/^SSH-2\.0-/, 'the jump host '
         . 'answers with an SSH banner');
    is(banner($x->{ip}, $x->{port}), '',
       'the hidden host does not answer in the root namespace');
    my (undef, $route) = DsHosts::_run(['ip', 'route', 'get', $x->{ip}]);
    unlike($route, qr/dev \Q${\ $h->bridge }\E/, 'no route to it via the bridge');
    ($rc, $out) = DsHosts::_run(['ssh', '-F', '/dev/null',
        '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
        '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=2',
        '-i', $h->key, '-p', $x->{port}, "root\@$x->{ip}", 'true'],
        timeout => 10);
    isnt($rc, 0, 'plain ssh to the hidden host fails');
    my @ssh = ('ssh', '-F', $h->ssh_config, '-J',
               "root\@$j->{ip}:$j->{port}", '-p', $x->{port},
               "root\@$x->{ip}");
    ($rc, $out) = DsHosts::_run([@ssh, 'echo $DSTACK_HOST_DIR'],
                                timeout => 20);
    is($out, "$x->{state_dir}\n", 'ssh -J through the jump host');
    ($rc, $out) = $h->ssh('hidden', 'hostname -I');
    like($out, qr/\Q$x->{ip}\E/, '$h->ssh(hidden) goes through the jump');
}

# a process on host 1, reachable from the root namespace, killed with it
my $x1 = $h->host(1);
{
    my ($rc, $out, $err) = $h->ssh(1, q{cd "$DSTACK_HOST_DIR" && setsid sh -c }
        . q{'python3 -m http.server 8123 --bind 0.0.0.0 </dev/null >/dev/null 2>&1 &'});
    is($rc, 0, 'started an http server on host 1') or diag($err);
    ok(DsTest_wait(sub { $h->listening(1, 8123) }, 10), 'it listens');
    ok(!$h->listening(0, 8123), 'not on host 0');
    is(curl("http://$x1->{ip}:8123/"), 200, 'curl reaches it');
    my @p = $h->pids(1);
    ok(@p >= 2, "pids on host 1: @p");
    my @p0 = $h->pids(0);
    my %in1 = map { $_ => 1 } @p;
    ok(!grep({ $in1{$_} } @p0), 'host 0 has other pids');

    $h->kill_host(1);
    is_deeply([ $h->pids(1) ], [], 'kill_host: no process left');
    ok(gone($_), "pid $_ gone") for @p;
    ok(!$h->link_up(1), 'the link is down');
    like(curl("http://$x1->{ip}:8123/", 1), qr/^(000|curl)/,
         'the server is unreachable');
    ok(!$h->reachable(1, timeout => 2), 'ssh fails');
    ok($h->reachable(0), 'host 0 still answers');

    my $fp = $x1->{fingerprint};
    $h->restore_host(1);
    ok($h->link_up(1), 'restore_host: link up');
    my $out2;
    ($rc, $out2) = $h->ssh(1, 'echo back');
    is($out2, "back\n", 'ssh to host 1 again');
    is($x1->{fingerprint}, $fp, 'same host key');
    ok(!$h->listening(1, 8123), 'the http server is not back');
}

# partition / heal: the processes keep running
{
    my $x2 = $h->host(2);
    my ($rc) = $h->ssh(2, q{setsid sh -c 'exec sleep 300 </dev/null >/dev/null 2>&1 &'});
    my @before = $h->pids(2);
    $h->partition(2);
    ok(!$h->link_up(2), 'partition: link down');
    ok(!tcp_ok($x2->{ip}, $x2->{port}, 1), 'sshd unreachable');
    is_deeply([ $h->pids(2) ], \@before, 'processes keep running');
    $h->heal(2);
    ok($h->link_up(2), 'heal: link up');
    ok(DsTest_wait(sub { $h->reachable(2, timeout => 5) }, 10),
       'ssh works again');
    is_deeply([ $h->pids(2) ], \@before, 'the same processes');
}

# rekey: a new host key; a client that knows the old one refuses
{
    my $x0 = $h->host(0);
    my $kh = $h->dir . '/known_hosts-test';  # $h->dir: removed with $h
    DsHosts::_write($kh, "[$x0->{ip}]:$x0->{port} $x0->{host_key_pub}\n");
    my @strict = ('ssh', '-F', '/dev/null', '-o', 'BatchMode=yes',
        '-o', 'StrictHostKeyChecking=yes', '-o', "UserKnownHostsFile=$kh",
        '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=20',
        '-i', $h->key, '-p', $x0->{port}, "root\@$x0->{ip}", 'true');
    my ($rc, $out, $err) = DsHosts::_run(\@strict, timeout => 30);
    is($rc, 0, 'the known host key is accepted') or diag($err);
    my $old = $x0->{fingerprint};
    my $new = $h->rekey(0);
    isnt($new, $old, "rekey: a new fingerprint ($old -> $new)");
    is($x0->{fingerprint}, $new, 'host(0) has it');
    ($rc, $out, $err) = DsHosts::_run(\@strict, timeout => 30);
    isnt($rc, 0, 'the old key is refused');
    like($err, qr/HOST IDENTIFICATION HAS CHANGED|Host key verification failed/,
         'host key verification failed');
    ok($h->reachable(0), 'ssh without host key checks works');
}

# cleanup
my $dir = File::Temp::tempdir('dstack-t89-XXXXXX', TMPDIR => 1,
                               CLEANUP => 1);
my @ns = map { $_->{ns} } $h->all_hosts;
my $br = $h->bridge;
undef $h;
ok(!grep({ -e "/var/run/netns/$_" } @ns), 'DESTROY: namespaces gone');
ok(!-e "/sys/class/net/$br", 'DESTROY: bridge gone');
is_deeply([ leftovers($$) ], [], 'nothing left by this process');

# a test that dies, one killed by SIGTERM, one by SIGKILL
{
    my @perl = ($^X, "-I$FindBin::Bin/lib", '-MDsHosts', '-e');
    my ($rc, $out, $err) = DsHosts::_run([@perl,
        'my $h = DsHosts->new(n => 1, jump => 1); print "$$\n"; '
        . 'die "boom\n"'], timeout => 30);
    chomp(my $pid = $out);
    isnt($rc, 0, 'the dying test failed');
    like($err, qr/boom/, 'with its message');
    ok($pid, "it had made hosts (pid $pid)") or diag($err);
    is_deeply([ leftovers($pid) ], [], 'a die leaves nothing');

    for my $sig (qw(TERM INT KILL)) {
        my $f = "$dir/sig-$sig.out";
        my $cpid = fork // die;
        if (!$cpid) {
            open STDOUT, '>', $f;
            exec @perl, '$| = 1; my $h = DsHosts->new(n => 1); '
                . 'print "ready\n"; sleep 60';
            exit 127;
        }
        ok(DsTest_wait(sub { DsHosts::_slurp($f) =~ /ready/ }, 60),
           "SIG$sig test: hosts up");
        my @l = leftovers($cpid);
        is(scalar @l, 3, "it has a namespace, a bridge, a directory: @l");
        kill $sig, $cpid;
        waitpid($cpid, 0);
        if ($sig eq 'KILL') {
            @l = leftovers($cpid);
            ok(scalar @l, 'SIGKILL leaves them...');
            DsHosts::sweep_stale();
            is_deeply([ leftovers($cpid) ], [],
                      '... until the next DsHosts sweeps them');
        } else {
            is_deeply([ leftovers($cpid) ], [], "SIG$sig leaves nothing");
        }
    }
    my (undef, $ps) = DsHosts::_run(['ps', '-eo', 'args']);
    unlike($ps, qr/sshd.*\Q$dir\E/, 'no sshd of this test left');
}

diag(sprintf 'took %.1f s', time - $t0);
done_testing;

sub DsTest_wait {
    my ($cond, $timeout) = @_;
    my $end = time + $timeout;
    while (time < $end) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->() ? 1 : 0;
}
