#!/usr/bin/perl
# dstack-controld under a service manager, without one: systemd's
# readiness protocol to $NOTIFY_SOCKET (an abstract name, then a path),
# as a Type=notify unit gets it: READY=1 once the API answers,
# RELOADING=1 (with MONOTONIC_USEC) then READY=1 around SIGHUP, STOPPING=1
# on SIGTERM; the variable kept from the API process; the pidfile (-p,
# and pidfile: in controld.yml) written once ready and removed at exit;
# --help, and bad -p / pidfile: values refused with where and why.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use POSIX ();
use Socket qw(AF_UNIX SOCK_DGRAM pack_sockaddr_un);
use Time::HiRes qw(sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
my $d = $s->dir;
my $controld = DsStack::controld_path();

# ---- --help and bad values ------------------------------------------------

my ($rc, $out, $err) = DsTest::_run([$controld, '--help'],
    env => $t->_san_env);
is($rc, 0, '--help exits 0');
for my $o (qw(-d -n -f -p -v)) {
    like($out, qr/^\s+\Q$o\E\s+\S/m, "--help explains $o");
}
($rc, $out, $err) = DsTest::_run([$controld, '-p', 'relative.pid', '-n'],
    env => $t->_san_env);
is($rc, 2, '-p with a relative path: exit 2');
like($err, qr/-p "relative\.pid": the pidfile must be an absolute path/,
     'and says why');
($rc, $err) = $s->check_conf($s->conf_text(extra => "pidfile: x.pid\n"));
is($rc, 1, 'pidfile: relative is a configuration error');
like($err, qr/:\d+:.*pidfile: "x\.pid" is not an absolute path/,
     'with file:line');

# ---- sd_notify to an abstract socket, pidfile from controld.yml ----------

sub listen_notify {
    my $name = shift;
    socket(my $sock, AF_UNIX, SOCK_DGRAM, 0) or die "socket: $!";
    bind($sock, pack_sockaddr_un($name)) or die "bind $name: $!";
    return $sock;
}

# every message that arrives within $secs, or until one matches $until
sub messages {
    my ($sock, $secs, $until) = @_;
    my @m;
    my $end = Time::HiRes::time() + $secs;
    while ((my $left = $end - Time::HiRes::time()) > 0) {
        my $rin = '';
        vec($rin, fileno($sock), 1) = 1;
        last unless select(my $rout = $rin, undef, undef, $left) > 0;
        my $buf;
        defined(recv($sock, $buf, 4096, 0)) or last;
        push @m, $buf;
        last if $until && $buf =~ $until;
    }
    return @m;
}

my $abstract = "dstack-t96-$$";
my $sock = listen_notify("\0$abstract");
my $pidfile = "$d/from-conf.pid";
{
    local $ENV{NOTIFY_SOCKET} = "\@$abstract";
    $s->start_controld(extra => "pidfile: $pidfile\n");
}
$t->start;
my @m = messages($sock, 10, qr/READY=1/);
is_deeply(\@m, ['READY=1'], 'READY=1 on the abstract socket, once up');
is(DsTest::_slurp($pidfile), $s->pid . "\n",
   'pidfile: holds the pid once ready');
is((stat $pidfile)[2] & 07777, 0644, 'the pidfile is 0644');

my ($api_pid) = $s->log_text =~ /API process (\d+) started/;
ok($api_pid, 'the API process started');
my $env = DsTest::_slurp("/proc/$api_pid/environ");
ok($env ne '' && $env !~ /NOTIFY_SOCKET/,
   'the API process does not get $NOTIFY_SOCKET');

kill 'HUP', $s->pid;
@m = messages($sock, 10, qr/^READY=1$/);
is(scalar @m, 2, 'SIGHUP: two messages');
like($m[0] // '', qr/^RELOADING=1\nMONOTONIC_USEC=\d+$/,
     'RELOADING=1 with MONOTONIC_USEC first');
is($m[1], 'READY=1', 'then READY=1');

# a configuration that no longer loads: READY=1 again all the same (the
# old one keeps running), or systemd would wait for it
my $good = DsTest::_slurp("$d/controld.yml");
DsTest::_write("$d/controld.yml", "bogus_key: 1\n");
kill 'HUP', $s->pid;
@m = messages($sock, 10, qr/^READY=1$/);
is($m[-1] // '', 'READY=1', 'a failed reload ends with READY=1 too');
DsTest::_write("$d/controld.yml", $good);

$rc = $s->stop_controld;
is($rc, 0, 'SIGTERM: exit 0');
@m = messages($sock, 2, qr/STOPPING=1/);
is_deeply(\@m, ['STOPPING=1'], 'STOPPING=1 on the way out');
ok(!-e $pidfile, 'the pidfile is removed at exit');

# ---- a path socket; -p wins over pidfile: ---------------------------------

my $path = "$d/notify-systemd.sock";
my $psock = listen_notify($path);
my $p_pidfile = "$d/from-p.pid";
{
    local $ENV{NOTIFY_SOCKET} = $path;
    my $pid = fork // die;
    if (!$pid) {
        open STDOUT, '>>', "$d/controld2.stdout";
        open STDERR, '>>', "$d/controld2.stderr";
        my $e = $t->_san_env;
        $ENV{$_} = $e->{$_} for keys %$e;
        $ENV{DOCKER_HOST} = "unix://$d/no-engine.sock";
        exec($controld, '-d', '-f', "$d/controld.yml", '-p', $p_pidfile)
            or POSIX::_exit(127);
    }
    @m = messages($psock, 20, qr/READY=1/);
    is_deeply(\@m, ['READY=1'], 'READY=1 on a path socket');
    is(DsTest::_slurp($p_pidfile), "$pid\n", '-p FILE holds the pid');
    ok(!-e $pidfile, '-p wins over pidfile:');
    kill 'TERM', $pid;
    waitpid($pid, 0);
    is($?, 0, 'exit 0');
    ok(!-e $p_pidfile, '-p FILE removed at exit');
    like(join('', messages($psock, 2, qr/STOPPING=1/)), qr/STOPPING=1/,
         'STOPPING=1');
}

# without NOTIFY_SOCKET nothing is sent and nothing complains
unlike($s->log_text, qr/\[warn\] sd_notify/, 'no sd_notify warning');

$t->done;
