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
use DsShared;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);
use Test::More;

my $LEASE = 2;                          # seconds: the tests wait on it

# the controlds: one directory each, one replicas_dir
my ($t, $pg, $sh) = DsShared::cluster(lease => $LEASE,
    password => 'pw-never-logged');
my $dir = $t->dir;

# ---- a leader, a standby with the cluster's keys, a gateway --------------

$sh->start('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a' }, timeout => 10),
    'the first controller leads');
ok(DsTest::wait_until(sub { -S "$dir/ctl-a/api.sock"
    && -s "$dir/ctl-a/client.yml" }, timeout => 10), 'and serves its API');
$sh->admin_token('ctl-a');           # the one api_of's DsStacks use
is($_->{rc}, 0, "$_->{what}: exit 0") or diag $_->{err}
    for $sh->share_keys('ctl-a', 'ctl-b');
$sh->start('ctl-b');
# the same nginx's stats under another URL: a source of its own
$sh->gw_start(stats_query => '?gw');
$t->start;

my $sa = $sh->api_of('ctl-a');
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

kill 'KILL', $sh->pid('ctl-a');
$sh->wait_exit('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-b' }, timeout => 10,
    interval => 0.05), 'kill -9 of the leader: the standby leads');
my $sb = $sh->api_of('ctl-b');
ok(DsTest::wait_until(sub { -S "$dir/ctl-b/api.sock" }, timeout => 5),
    'the new leader serves its API');
my $f = "$dir/ctl-b/state/code/$code.tar.gz";
ok(DsTest::wait_until(sub { -s $f }, timeout => 5),
    'the new leader fetched the archive into its state_dir');
is(sha256_hex(DsTest::_slurp($f)), $code, 'whole (its SHA-256)');
is((stat $f)[2] & 07777, 0600, 'mode 0600, as uploads');
is((stat $f)[4], (stat "$dir/ctl-b/state/code")[4],
    'owned as the code directory (the API process\'s)');
like($sh->log_text('ctl-b'),
    qr/run "web": fetched code \Q$code\E \(\d+ bytes\) /,
    'and says so');
ok(!glob("$dir/ctl-b/state/code/.upload-*"), 'no temporary file left');

kill 'KILL', $pid0;
ok($sb->wait_run('web', sub {
    my $p = ($_[0]{replicas} // [])->[0] // {};
    return $p->{ready} && ($p->{pid} // $pid0) != $pid0;
}, timeout => 60, interval => 0.2),
    'kill -9 of the replica: the new leader starts it again')
    or diag explain $sb->last_run, $sh->log_text('ctl-b');
ok(DsTest::wait_until(sub { $t->get('web', '/')->{status} == 200 },
    timeout => 20), 'it answers through the gateway again');
unlike($sh->log_text('ctl-b'), qr/cannot unpack/, 'no archive was missing');
unlike($sh->log_text($_), qr/pw-never-logged/, "$_ never logs the password")
    for qw(ctl-b gw);

# ---- the end -------------------------------------------------------------

$r = $sb->stop('web', abort => 1);
is($r->{status}, 200, 'stop the run');
ok(DsTest::wait_until(sub { !$sb->run_pids('web') }, timeout => 20),
    'its replicas are gone');
is($sh->stop($_), 0, "$_: SIGTERM, exit 0") for $sh->names;

$pg->stop;
$t->allow_log(qr/connect\(\) failed/, qr/no live upstreams/);
$t->done;
