#!/usr/bin/perl
# Privilege separation: the API runs in a process of its own, a child of
# controld, as an unprivileged user (nobody, when the test runs as root)
# that cannot open the state for writing nor the CA's key; it holds no
# LMDB descriptor or map and no key; controld itself stays root.  The
# API keeps working end to end through it (upload, apply, logs passed as
# descriptors, a follower).  Killed, the API process is replaced within
# seconds; controld killed, the API process exits.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use IO::Select;
use IO::Socket::UNIX;
use POSIX qw(:sys_wait_h);
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $root = $< == 0;
my @nobody = getpwnam('nobody');
plan skip_all => 'no user "nobody" here' if $root && !@nobody;

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
$s->start_controld;
$t->start;
my $state = $t->state;

sub status_of {
    my $pid = shift;
    my %st;
    for (split /\n/, DsTest::_slurp("/proc/$pid/status")) {
        $st{$1} = $2 if /^(\w+):\s*(.*)$/;
    }
    return \%st;
}

# the API process: controld's child that was started with -A
sub api_pid {
    my $ppid = $s->pid;
    opendir(my $d, '/proc') or return;
    my @p;
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $st = DsTest::_slurp("/proc/$pid/stat");
        next unless $st =~ /\)\s+([A-Za-z])\s+(\d+)/ && $2 == $ppid
            && $1 ne 'Z';
        my $cmd = DsTest::_slurp("/proc/$pid/cmdline");
        push @p, $pid if $cmd =~ /(?:^|\0)-A\0/;
    }
    closedir $d;
    return @p == 1 ? $p[0] : undef;
}

sub ids { [ (split /\s+/, $_[0])[0 .. 3] ] }

# ---- who it is ------------------------------------------------------------

my $api;
ok(DsTest::wait_until(sub { $api = api_pid() }, timeout => 5),
    'the API process is a child of controld') or BAIL_OUT('no API process');
like(DsTest::_slurp("/proc/$api/cmdline"), qr/^dstack-controld: api\0/,
    'named "dstack-controld: api"');

my $st = status_of($api);
my $pst = status_of($s->pid);
if ($root) {
    my ($uid, $gid) = @nobody[2, 3];
    is_deeply(ids($st->{Uid}), [($uid) x 4],
        "its uids (real, effective, saved, fs) are nobody's ($uid)");
    is_deeply(ids($st->{Gid}), [($gid) x 4], "its gids are nobody's ($gid)");
    is($st->{Groups} =~ s/\s+$//r, $gid,
        'no supplementary group but its own');
    is($st->{NoNewPrivs}, 1, 'no_new_privs: setuid binaries give it nothing');
    is($st->{CapEff}, '0000000000000000', 'no capability');
    is_deeply(ids($pst->{Uid}), [0, 0, 0, 0], 'controld itself stays root');
} else {
    is_deeply(ids($st->{Uid}), ids($pst->{Uid}),
        'not root: the same split, the same user');
}
is(readlink("/proc/$api/cwd"), "$state/code",
    'its working directory is the code directory');
if ($root) {
    is((stat "$state/code")[4], $nobody[2], 'which belongs to nobody');
    is((stat "$state/code")[2] & 07777, 0700, 'mode 0700 still');
}

# ---- what it holds ---------------------------------------------------------

my @fds;
opendir(my $fdd, "/proc/$api/fd") or die "/proc/$api/fd: $!";
for my $fd (sort { $a <=> $b } grep { /^\d+$/ } readdir $fdd) {
    push @fds, "$fd -> " . (readlink("/proc/$api/fd/$fd") // '?');
}
closedir $fdd;
my @files = grep { m{ -> /} && !/^[012] / } @fds;
is_deeply(\@files, [], 'no file open but stdio (no LMDB, no key, no log)')
    or diag join "\n", @fds;
is(scalar(grep { / -> socket:/ } @fds), 2,
    'two sockets: the listening one and the socketpair')
    or diag join "\n", @fds;
my $maps = DsTest::_slurp("/proc/$api/maps");
unlike($maps, qr/\.mdb\b/, 'no LMDB map (it was exec\'d, not just forked)');
like(DsTest::_slurp("/proc/" . $s->pid . "/maps"), qr/data\.mdb/,
    'as controld has');

# what its user may open
SKIP: {
    skip 'not root: there is no other user to check', 4 unless $root;
    my $runuser = -x '/usr/sbin/runuser' ? '/usr/sbin/runuser'
        : -x '/sbin/runuser' ? '/sbin/runuser' : undef;
    skip 'runuser(1) is not installed', 4 unless $runuser;
    my @keys = glob("$state/tls/*.key");
    ok(scalar @keys,
        'the CA has its keys: ' . join(' ', map { s{.*/}{}r } @keys));
    my $as = sub {
        my $code = shift;
        return system($runuser, '-u', 'nobody', '--', 'perl', '-e', $code,
            @_) >> 8;
    };
    my $open = 'exit(open(my $f, $ARGV[0], $ARGV[1]) ? 0 : 1)';
    is($as->($open, '+<', "$state/data.mdb"), 1,
        'nobody cannot open data.mdb for writing');
    is(scalar(grep { $as->($open, '<', $_) == 0 } @keys), 0,
        'nor read a key of the CA');
    is($as->($open, '<', "$state/data.mdb"), 1, 'nor read the state');
}

# ---- it works through the separation -------------------------------------

my $code = $s->upload($s->app_files);
ok(-f "$state/code/$code.tar.gz", 'an upload is written by the API process');
is((stat "$state/code/$code.tar.gz")[4], $root ? $nobody[2] : $>,
    'as its user');
my $r = $s->apply($s->app_spec, name => 'sep', code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};
ok($s->wait_ready('sep', 1), 'the run is running');
$r = $s->api('GET', '/api/runs/sep/logs?replica=0');
is($r->{status}, 200, 'logs: 200 (the log passed as a descriptor)');
like($r->{body}, qr/listening on/, 'with the replica\'s output');
is($s->api('GET', '/api/runs/nope')->{status}, 404, 'an unknown run: 404');
is($s->api('GET', '/api/health', token => 'dst_nope')->{status}, 401,
    'a wrong token: 401');

# a follower gets what the replica writes later
{
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $s->socket_path) or die "connect: $!";
    DsTest::_send_all($sock, "GET /api/runs/sep/logs?replica=0&follow=1"
        . "&offset=" . length($r->{body}) . " HTTP/1.1\r\nHost: x\r\n"
        . "Authorization: Bearer " . $s->admin_token . "\r\n\r\n", time + 5);
    my $buf = '';
    my $sel = IO::Select->new($sock);
    my $deadline = time + 10;
    my $poked = 0;
    while (time < $deadline && $buf !~ m{GET /privsep}) {
        if (!$poked && $buf =~ /\r\n\r\n/) {
            $s->get('sep', '/privsep');
            $poked = 1;
        }
        next unless $sel->can_read(0.2);
        sysread($sock, $buf, 65536, length $buf) or last;
    }
    like($buf, qr{GET /privsep}, 'a follower gets new lines');
    close $sock;
}

# ---- the API process dies: another one -----------------------------------

kill 'KILL', $api;
my $new;
my $t0 = time;
ok(DsTest::wait_until(sub {
    $new = api_pid();
    return $new && $new != $api;
}, timeout => 5), 'killed, another API process starts');
$r = $s->api('GET', '/api/runs/sep', timeout => 5);
is($r->{status}, 200, sprintf('and answers (%.1f s after the kill)',
    time - $t0));
is($r->{json}{status}, 'running', 'the run never noticed');
like($s->log_text, qr/API process $api killed by signal 9; starting another/,
    'controld says what happened');
if ($root) {
    is_deeply(ids(status_of($new)->{Uid}), [($nobody[2]) x 4],
        'the new one is nobody too');
}

# ---- controld stops, or dies: the API process goes too -------------------

is($s->stop('sep', abort => 1)->{status}, 200, 'the run is stopped');
ok($s->wait_run('sep', sub { $_[0]{status} eq 'terminated' }),
    'and terminated');
$s->stop_controld;
ok(DsTest::wait_until(sub { !kill(0, $new) }, timeout => 5),
    'controld stopped (SIGTERM): the API process is gone');
ok(!-e $s->socket_path, 'and the socket with it');

$s->start_controld;
ok(DsTest::wait_until(sub { $api = api_pid() }, timeout => 5),
    'started again: a new API process');
$s->stop_controld('KILL');
ok(DsTest::wait_until(sub { !kill(0, $api) }, timeout => 5),
    'controld killed (-9): its API process exits');

$s->finish;
$t->done;
