#!/usr/bin/perl
# Code archives in shared mode (#14): an archive uploaded to the leader
# is kept in dstack_code when an apply names it; a standby with its own
# state_dir that takes over (kill -9 of the leader) fetches it into its
# state_dir/code (mode 0600, logged), and when a replica process is
# killed (kill -9), starts it again from that archive: the replica
# answers through the gateway again.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsPg;
use Digest::SHA qw(sha256_hex);
use IO::Socket::UNIX;
use Socket qw(SOCK_DGRAM);
use File::Path qw(make_path);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

plan(skip_all => 'build/dstack-controld not built')
    unless -x DsStack::controld_path();
DsPg::need();

my $LEASE = 2;                          # seconds: the tests wait on it

my $t = DsTest->new(seed_empty => 0);
my $dir = $t->dir;
my $pg = DsPg->new($dir);
my $uri = $pg->uri(password => 'pw-never-logged');
my $domain = $t->domain;
my $port = $t->port;

# ---- the controlds: one directory each, one replicas_dir ----------------

my %CTL;

sub ctl_conf {
    my ($name, %o) = @_;
    my $d = "$dir/$name";
    my $role = $o{role} // 'controller';
    my $state = $o{state} // "$d/state";
    my $u = $o{uri} // $uri;
    my $sq = $o{stats} // '';
    my $text = <<"EOF";
state_dir: $state
domain: $domain
api_socket: $d/api.sock
stats_url: http://127.0.0.1:@{[ $t->stats_port ]}/stats$sq
replicas_dir: $dir/replicas
service_url: "http://{name}.$domain:$port"
gateway_url: "http://gateway.$domain:$port"
client_config: $d/client.yml
log_level: debug
state: $u
instance: $name
role: $role
leader_lease: ${LEASE}s
EOF
    $text .= $o{extra} // '';
    make_path($d, "$dir/replicas");
    DsTest::_write("$d/controld.yml", $text);
    return "$d/controld.yml";
}

sub ctl_start {
    my ($name, %o) = @_;
    my $conf = ctl_conf($name, %o);
    my $d = "$dir/$name";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/controld.log" or POSIX::_exit(127);
        open STDERR, '>>', "$d/controld.log" or POSIX::_exit(127);
        my $env = $t->_san_env;
        $ENV{$_} = $env->{$_} for keys %$env;
        $ENV{DOCKER_HOST} = "unix://$d/no-engine.sock";
        exec DsStack::controld_path(), '-d', '-f', $conf
            or POSIX::_exit(127);
    }
    $CTL{$name} = { pid => $pid, dir => $d };
    my $ok = DsTest::wait_until(sub {
        return -1 if waitpid($pid, WNOHANG) == $pid;
        return ctl_log($name) =~ /following: state/ ? 1 : 0;
    }, timeout => 20);
    die "controld $name did not follow:\n" . ctl_log($name)
        unless $ok && $ok != -1;
    return $pid;
}

sub ctl_log { DsTest::_slurp("$dir/$_[0]/controld.log") }

# waits for the exit of a controld; returns its exit status, or undef
sub ctl_wait {
    my ($name, $timeout) = @_;
    my $c = $CTL{$name} or return undef;
    my $st;
    DsTest::wait_until(sub {
        my $w = waitpid($c->{pid}, WNOHANG);
        $st = $? if $w == $c->{pid};
        return $w != 0;
    }, timeout => $timeout // 15) or return undef;
    delete $CTL{$name};
    return $st;
}

sub ctl_stop {
    my ($name, $sig) = @_;
    my $c = $CTL{$name} or return;
    kill $sig // 'TERM', $c->{pid};
    my $st = ctl_wait($name);
    return $st if defined $st;
    kill 'KILL', $c->{pid};
    waitpid($c->{pid}, 0);
    delete $CTL{$name};
    return $?;
}

# a DsStack on a controller's API socket, with the first admin token
my $admin;
sub api_of {
    my $name = shift;
    my $s = DsStack->new($t);
    $s->{dir} = "$dir/$name";
    $s->{admin_token} = $admin;
    return $s;
}

# the gateway's follower: the LMDB nginx reads, the module's notices
sub gw_start {
    # the same nginx's stats under another URL: a source of its own
    ctl_start('gw', role => 'gateway', state => $t->state, stats => '?gw',
        extra => "notify_socket: $dir/gw/notify.sock\n");
}

sub leader { scalar $pg->value('select instance from dstack_leader') }

# the module's answer through the gateway's LMDB, with a token
sub gw_get {
    my ($run, $token) = @_;
    return $t->get($run, '/',
        $token ? (headers => [Authorization => "Bearer $token"]) : ());
}


# ---- a leader, a standby with the cluster's keys, a gateway --------------

ctl_start('ctl-a');
ok(DsTest::wait_until(sub { (leader() // '') eq 'ctl-a' }, timeout => 10),
    'the first controller leads');
ok(DsTest::wait_until(sub { -S "$dir/ctl-a/api.sock"
    && -s "$dir/ctl-a/client.yml" }, timeout => 10), 'and serves its API');
($admin) = DsTest::_slurp("$dir/ctl-a/client.yml") =~ /^token:\s*(\S+)/m;
for my $k (['ctl-a', '--keys-export'], ['ctl-b', '--keys-import']) {
    ctl_conf($k->[0]);
    my ($krc, $kout, $kerr) = DsTest::_run([DsStack::controld_path(), '-f',
        "$dir/$k->[0]/controld.yml", $k->[1], "$dir/cluster.keys"]);
    is($krc, 0, "$k->[1]: exit 0") or diag $kerr;
}
ctl_start('ctl-b');
gw_start();
$t->start;

my $sa = api_of('ctl-a');
my $code = $sa->upload($sa->app_files);
my $r = $sa->apply($sa->app_spec(replicas => 1), name => 'web',
    code => $code);
is($r->{status}, 201, 'apply with code through the leader: 201')
    or diag $r->{body};
is($pg->value("select length(data) from dstack_code where hash = "
    . "'$code'"), -s "$dir/ctl-a/state/code/$code.tar.gz",
    'the archive is kept in dstack_code, whole');
my $run = $sa->wait_ready('web', 1, timeout => 60);
ok($run, 'its replica is ready') or diag explain $sa->last_run;
my $pid0 = $run->{replicas}[0]{pid};
ok(DsTest::wait_until(sub { $t->get('web', '/')->{status} == 200 },
    timeout => 10), 'it answers through the gateway');
ok(!-e "$dir/ctl-b/state/code/$code.tar.gz",
    'the standby has no copy of the archive yet');

# ---- kill -9 of the leader, then of the replica ----------------------------

kill 'KILL', $CTL{'ctl-a'}{pid};
ctl_wait('ctl-a');
ok(DsTest::wait_until(sub { (leader() // '') eq 'ctl-b' }, timeout => 10,
    interval => 0.05), 'kill -9 of the leader: the standby leads');
my $sb = api_of('ctl-b');
ok(DsTest::wait_until(sub { -S "$dir/ctl-b/api.sock" }, timeout => 5),
    'the new leader serves its API');
my $f = "$dir/ctl-b/state/code/$code.tar.gz";
ok(DsTest::wait_until(sub { -s $f }, timeout => 5),
    'the new leader fetched the archive into its state_dir');
is(sha256_hex(DsTest::_slurp($f)), $code, 'whole (its SHA-256)');
is((stat $f)[2] & 07777, 0600, 'mode 0600, as uploads');
is((stat $f)[4], (stat "$dir/ctl-b/state/code")[4],
    'owned as the code directory (the API process\'s)');
like(ctl_log('ctl-b'), qr/run "web": fetched code \Q$code\E \(\d+ bytes\) /,
    'and says so');
ok(!glob("$dir/ctl-b/state/code/.upload-*"), 'no temporary file left');

kill 'KILL', $pid0;
ok($sb->wait_run('web', sub {
    my $p = ($_[0]{replicas} // [])->[0] // {};
    return $p->{ready} && ($p->{pid} // $pid0) != $pid0;
}, timeout => 60, interval => 0.2),
    'kill -9 of the replica: the new leader starts it again')
    or diag explain $sb->last_run, ctl_log('ctl-b');
ok(DsTest::wait_until(sub { $t->get('web', '/')->{status} == 200 },
    timeout => 20), 'it answers through the gateway again');
unlike(ctl_log('ctl-b'), qr/cannot unpack/, 'no archive was missing');
unlike(ctl_log($_), qr/pw-never-logged/, "$_ never logs the password")
    for qw(ctl-b gw);

# ---- the end -------------------------------------------------------------

$r = $sb->stop('web', abort => 1);
is($r->{status}, 200, 'stop the run');
ok(DsTest::wait_until(sub { !$sb->run_pids('web') }, timeout => 20),
    'its replicas are gone');
is(ctl_stop($_), 0, "$_: SIGTERM, exit 0") for sort keys %CTL;

$pg->stop;
$t->allow_log(qr/connect\(\) failed/, qr/no live upstreams/);
$t->done;
END {
    for my $c (values %CTL) {
        kill 'KILL', $c->{pid};
        waitpid($c->{pid}, 0);
    }
    if ($dir && opendir(my $d, '/proc')) {
        my @left;
        for my $pid (grep { /^\d+$/ } readdir $d) {
            my $cwd = readlink("/proc/$pid/cwd") // next;
            push @left, $pid if index($cwd, "$dir/replicas/") == 0;
        }
        kill 'KILL', @left if @left;
    }
    if ($uri && opendir(my $d, '/var/run/netns')) {
        my $tag = substr(sha256_hex($uri), 0, 4);
        system('ip', 'netns', 'del', $_)
            for grep { /^dstack-\Q$tag\E-/ } readdir $d;
    }
}
