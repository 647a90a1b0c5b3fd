#!/usr/bin/perl
# Shared mode's core (#14) against a real PostgreSQL (t/lib/DsPg.pm):
# bad shared-mode settings refused; a schema newer than the program
# refused; two controller instances and one gateway-role follower, each
# with its own LMDB: the first leads, a service applied through its API
# reaches the gateway's LMDB (nginx with the module serves it from
# there), token create/revoke too; kill -9 of the leader: the standby
# leads within 10 s and adopts the replicas (one host here, so one
# replicas_dir: the local backend's processes are what a new leader
# adopts, as after any controld restart; on real hosts the replicas run
# elsewhere), nothing started twice; SIGSTOP of the leader: the standby
# leads within the lease + 2 s and the former leader, continued, exits 1
# without publishing; PostgreSQL stopped: the gateway keeps serving, a
# write gets 503 naming the database, and after the restart a change
# reaches the gateway; a follower killed while a change is made resyncs
# from its revision.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsPg;
use DsShared;
use IO::Socket::UNIX;
use Socket qw(SOCK_DGRAM);
use File::Path qw(make_path);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

my $LEASE = 3;                          # seconds: the tests wait on it

# the controlds: one directory each, one replicas_dir
my ($t, $pg, $sh) = DsShared::cluster(lease => $LEASE,
    password => 'pw-never-logged');
my $dir = $t->dir;
my $uri = $sh->uri;
my $domain = $t->domain;
my $admin;

# ---- bad settings --------------------------------------------------------

my $base = "state_dir: $dir/check\ndomain: $domain\n";
my $cs = DsStack->new($t);
for my $c (
    ["state: mysql://u:sekrit\@h/db\n",
     qr/:3:8: state: "mysql:\/\/u:\*\*\*\@h\/db" is not a postgresql:\/\/ URI/],
    ["state: $uri\ninstance: Bad_Name\n",
     qr/:4:11: instance: "Bad_Name" is not a name/],
    ["state: $uri\nrole: boss\n",
     qr/:4:7: role: "boss" is not one of controller, gateway/],
    ["state: $uri\nleader_lease: 1s\n",
     qr/:4:15: leader_lease: "1s" is not from 2s to 60s/],
    ["state: $uri\nleader_lease: soon\n",
     qr/leader_lease: "soon" is not a duration/],
    ["role: gateway\n",
     qr/instance, role and leader_lease need state:/],
) {
    my ($rc, $err) = $cs->check_conf($base . $c->[0]);
    (my $what = $c->[0]) =~ s/\n(?=.)/, /g;
    chomp $what;
    $what =~ s/\Q$uri\E/URI/;
    is($rc, 1, "-n refuses: $what");
    like($err, $c->[1], 'with where and why');
    unlike($err, qr/sekrit|pw-never-logged/, 'and no password');
}
my ($rc, $err) = $cs->check_conf($base
    . "state: $uri\ninstance: gw-1\nrole: gateway\nleader_lease: 10s\n");
is($rc, 0, '-n accepts a gateway\'s settings') or diag $err;

# ---- a newer schema ------------------------------------------------------

$pg->rows('create database newer');
$pg->rows('create table dstack_schema (version int not null); '
    . 'insert into dstack_schema values (99)', db => 'newer');
{
    (my $newer = $uri) =~ s{/dstack$}{/newer};
    $sh->conf('old', uri => $newer);
    my $pid = fork // die;
    if (!$pid) {
        open STDOUT, '>', "$dir/old/controld.log";
        open STDERR, '>&', \*STDOUT;
        exec DsStack::controld_path(), '-d', '-f', "$dir/old/controld.yml";
    }
    my $done = DsTest::wait_until(sub { waitpid($pid, WNOHANG) == $pid },
        timeout => 15);
    ok($done, 'a controld on a newer schema exits') or kill 'KILL', $pid;
    is($? >> 8, 1, 'with status 1');
    my $msg = 'state: database schema is version 99, this dstack-controld '
        . 'knows up to 2; upgrade dstack-controld';
    like($sh->log_text('old'), qr/\Q$msg\E/,
        'saying which versions and what to do');
    unlike($sh->log_text('old'), qr/pw-never-logged/,
        'the password is not logged');
    like($sh->log_text('old'), qr{postgresql://postgres:\*\*\*\@127\.0\.0\.1},
        'the URI is, with *** for the password');
}

# ---- a database that cannot be reached at start ----------------------------

{
    my $closed = DsTest::free_port();
    $sh->conf('early', uri => "postgresql://postgres:pw-never-logged\@"
        . "127.0.0.1:$closed/dstack");
    my $pid = fork // die;
    if (!$pid) {
        open STDOUT, '>', "$dir/early/controld.log";
        open STDERR, '>&', \*STDOUT;
        exec DsStack::controld_path(), '-d', '-f', "$dir/early/controld.yml";
    }
    sleep 3;
    ok(waitpid($pid, WNOHANG) == 0, 'no database at start: controld waits '
        . 'for it (does not exit)');
    my @lines = $sh->log_text('early')
        =~ /^.*\[warn\] state: cannot connect.*$/mg;
    is(scalar @lines, 1, 'and says so once') or diag $sh->log_text('early');
    like($lines[0] // '', qr/retrying every second/, 'saying it retries');
    ok(!-e "$dir/early/api.sock", 'no API without the database');
    kill 'TERM', $pid;
    waitpid($pid, 0);
    is($? >> 8, 0, 'SIGTERM while waiting: exit 0');
}

# ---- two controllers and a gateway ---------------------------------------

# the first leader's LMDB has a token from the embedded mode: published
my $legacy = 'dst_legacy_' . ('l' x 30);
make_path("$dir/ctl-a");
$t->seed([{ op => 'token', token => $legacy, name => 'legacy',
    admin => JSON::PP::false, services => ['web'] }],
    state => "$dir/ctl-a/state");
$sh->start('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a' }, timeout => 10),
    'the first controller leads');
ok(DsTest::wait_until(sub { -S "$dir/ctl-a/api.sock"
    && -s "$dir/ctl-a/client.yml" }, timeout => 10), 'and serves its API');
$admin = $sh->admin_token('ctl-a');
my $empty = "the database was empty: published this instance's state";
like($sh->log_text('ctl-a'),
    qr/\Q$empty\E \(\S+\), \d+ records, as revision 1/,
    'the first leader publishes its embedded state');
is($pg->value('select version from dstack_schema'), 2,
    'the schema was created (version 2)');
is(scalar $pg->rows("select 1 from pg_tables where tablename in "
    . "('dstack_leader', 'dstack_records', 'dstack_instances', "
    . "'dstack_code')"), 4,
    'with its tables');

# the cluster's keys (t/83-shared-keys.t): the standby needs them to lead
is($_->{rc}, 0, "$_->{what}: exit 0") or diag $_->{err}
    for $sh->share_keys('ctl-a', 'ctl-b');
$sh->start('ctl-b');
# the gateway's follower; the same nginx's stats under another URL: a
# source of its own
$sh->gw_start(stats_query => '?gw');
sleep 1.5;
ok(!-e "$dir/ctl-b/api.sock", 'the standby serves no API');
my $rebuilt = 'did not mirror this database';
like($sh->log_text('ctl-b'), qr/\Q$rebuilt\E \(revision \d+ there\): rebuilt/,
    'a new follower loads the mirror whole');
ok(!-e "$dir/gw/api.sock", 'neither does the gateway');
is($sh->leader, 'ctl-a', 'the first still leads');
is_deeply([$pg->rows('select instance, role from dstack_instances '
    . 'order by instance')],
    ['ctl-a|controller', 'ctl-b|controller', 'gw|gateway'],
    'every instance has its row');
ok(DsTest::wait_until(sub {
    $sh->log_text('ctl-a') =~ /stats: reading 2 sources/ }, timeout => 5),
    'the leader reads the stats the gateway registered');
is(scalar $pg->rows("select 1 from dstack_instances where "
    . "seen > now() - interval '3 seconds'"), 3, 'seen in the last seconds');

$t->start;
my $sa = $sh->api_of('ctl-a');
my $netns = $sa->network eq 'netns';
my $n = $netns ? 2 : 1;
my $code = $sa->upload($sa->app_files);
my $r = $sa->apply($sa->app_spec(replicas => $n, auth => JSON::PP::true),
    name => 'web', code => $code);
is($r->{status}, 201, 'apply through the leader: 201') or diag $r->{body};
my $run = $sa->wait_ready('web', $n, timeout => 60);
ok($run, "$n replica(s) ready") or diag explain $sa->last_run;
my %pid = map { $_->{num} => $_->{pid} } @{ $run->{replicas} || [] };
# the replica processes, once nothing else of the start (a setup child
# still exiting) carries the run's name
my @procs = sort { $a <=> $b } values %pid;
ok(DsTest::wait_until(sub { "@{[ $sa->run_pids('web') ]}" eq "@procs" },
    timeout => 5), 'the processes are the replicas the API names')
    or diag "api: @procs; /proc: @{[ $sa->run_pids('web') ]}";

ok(DsTest::wait_until(sub { $sh->gw_get('web', $admin)->{status} == 200 },
    timeout => 10), 'the service answers through the gateway\'s LMDB');
is($sh->gw_get('web')->{status}, 401, 'and wants a token there');
is($sh->gw_get('web', $legacy)->{status}, 200,
    'the embedded state\'s token is honoured on the gateway');

# a token: created on the leader, honoured on the gateway
my $t0 = time;
$r = $sa->api('POST', '/api/tokens', json => { name => 'reader',
    scope => 'services', services => ['web'] });
is($r->{status}, 201, 'token create: 201') or diag $r->{body};
my $reader = $r->{json}{token};
ok(DsTest::wait_until(sub { $sh->gw_get('web', $reader)->{status} == 200 },
    timeout => 5, interval => 0.005), 'the gateway honours the new token');
my $lat = time - $t0;
# more of them, for a figure: the API's answer to nginx honouring it
my @lat = ($lat);
for my $i (1 .. 5) {
    $t0 = time;
    my $x = $sa->api('POST', '/api/tokens', json => { name => "lat-$i",
        scope => 'services', services => ['web'] });
    my $tok = $x->{json}{token} // next;
    DsTest::wait_until(sub { $sh->gw_get('web', $tok)->{status} == 200 },
        timeout => 5, interval => 0.002) or next;
    push @lat, time - $t0;
}
@lat = sort { $a <=> $b } @lat;
is(scalar @lat, 6, 'six tokens reached the gateway');
diag(sprintf('token create -> gateway LMDB -> nginx over %d: min %.0f, '
    . 'median %.0f, max %.0f ms', scalar @lat, $lat[0] * 1000,
    $lat[@lat / 2] * 1000, $lat[-1] * 1000));
$r = $sa->api('DELETE', '/api/tokens/reader');
is($r->{status}, 200, 'token revoke: 200');
ok(DsTest::wait_until(sub { $sh->gw_get('web', $reader)->{status} == 401 },
    timeout => 5), 'the gateway refuses it once revoked');
my $gw_rev = $pg->value("select rev from dstack_instances where "
    . "instance = 'gw'");
ok(DsTest::wait_until(sub {
    $pg->value("select rev from dstack_instances where instance = 'gw'")
        == $pg->value('select rev from dstack_leader') }, timeout => 5),
    'the gateway reports the revision it applied');

# a held request's notice on the gateway host reaches the leader
my $note = IO::Socket::UNIX->new(Type => SOCK_DGRAM,
    Peer => "$dir/gw/notify.sock");
ok($note && $note->send("hold web\n"), 'a hold notice to the gateway');
$t0 = time;
ok(DsTest::wait_until(sub { $sh->log_text('ctl-a') =~
    /a gateway holds a request for "web"/ }, timeout => 2, interval => 0.005),
    'reaches the leader through the database');
diag(sprintf('hold notice gateway -> leader: %.0f ms (with the log poll)',
    (time - $t0) * 1000));

# ---- kill -9 of the leader -------------------------------------------------

my $load = $sa->start_load('web', headers => { Authorization =>
    "Bearer $admin" });
kill 'KILL', $sh->pid('ctl-a');
$t0 = time;
$sh->wait_exit('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-b' }, timeout => 10,
    interval => 0.05), 'kill -9 of the leader: the standby leads');
my $took = time - $t0;
cmp_ok($took, '<', 10, sprintf('within 10 s (%.2f s)', $took));
diag(sprintf('takeover after kill -9: %.2f s', $took));
my $sb = $sh->api_of('ctl-b');
ok(DsTest::wait_until(sub { -S "$dir/ctl-b/api.sock" }, timeout => 5),
    'the new leader serves its API');
$run = $sb->wait_ready('web', $n, timeout => 20);
ok($run, 'and sees the run ready') or diag explain $sb->last_run;
is_deeply({ map { $_->{num} => $_->{pid} } @{ $run->{replicas} || [] } },
    \%pid, 'the same replica processes, adopted');
my $p0 = $pid{0} // 'none';
like($sh->log_text('ctl-b'), qr/adopted replica 0 v1 \(pid $p0,/,
    'the new leader says it adopted them');
sleep 0.5;
is_deeply([$sb->run_pids('web')], \@procs, 'no replica was started twice');
my $mid = $sa->stop_load($load);
is_deeply($mid->{failed}, [], "no request failed across the takeover "
    . "($mid->{total})") or diag explain $mid;
is($sh->gw_get('web', $admin)->{status}, 200, 'the service keeps answering');

# ---- SIGSTOP of the leader ------------------------------------------------

$sh->start('ctl-a');
kill 'STOP', $sh->pid('ctl-b');
$t0 = time;
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a' },
    timeout => $LEASE + 6, interval => 0.05),
    'SIGSTOP of the leader: the standby leads');
$took = time - $t0;
cmp_ok($took, '<', $LEASE + 2, sprintf('within the lease + 2 s (%.2f s)',
    $took));
diag(sprintf('takeover after SIGSTOP (lease %d s): %.2f s', $LEASE, $took));
like($sh->log_text('ctl-a'), qr/leader ctl-b has not renewed its lease/,
    'it says why it took over');
$sa = $sh->api_of('ctl-a');
ok($sa->wait_ready('web', $n, timeout => 20), 'the run is ready again');
sleep 1;
my $before = $pg->value('select rev from dstack_leader');
my $logpos = length $sh->log_text('ctl-b');
kill 'CONT', $sh->pid('ctl-b');
my $st = $sh->wait_exit('ctl-b', 10);
ok(defined $st, 'SIGCONT: the former leader exits');
is(($st // 0) >> 8, 1, 'with status 1');
my $after_log = substr($sh->log_text('ctl-b'), $logpos);
like($after_log, qr/lease lost: not renewed for \d+ ms/,
    'saying its lease was lost');
unlike($after_log, qr/published revision/, 'it published nothing');
my %a_published = map { $_ => 1 }
    $sh->log_text('ctl-a') =~ /published revision (\d+) /g;
my @late = $pg->rows("select distinct rev from dstack_records where rev > "
    . "$before order by rev");
is_deeply([grep { !$a_published{$_} } @late], [],
    'every revision written since is the new leader\'s')
    or diag "late: @late";
is_deeply([$sa->run_pids('web')], \@procs, 'the replicas still the same');

# ---- PostgreSQL stopped ---------------------------------------------------

$pg->stop;
is($sh->gw_get('web', $admin)->{status}, 200,
    'database down: the gateway serves its last state');
$r = $sa->api('POST', '/api/tokens', json => { name => 'down',
    scope => 'admin' });
is($r->{status}, 503, 'an API write gets 503');
is(($r->{json} || {})->{error}{type}, 'unavailable', 'of type unavailable');
my $down = 'the shared database ' . $pg->uri(password => '***')
    . ' is unavailable';
like($r->{body}, qr/\Q$down\E/, 'naming the database') or diag $r->{body};
unlike($r->{body}, qr/pw-never-logged/, 'without its password');
is($sa->api('GET', '/api/tokens')->{status}, 200, 'reads still work');
$pg->start;
my $ok = DsTest::wait_until(sub {
    my $x = $sa->api('POST', '/api/tokens', json => { name => 'back',
        scope => 'services', services => ['web'] }, timeout => 5);
    return $x->{status} == 201 ? $x->{json}{token} : 0;
}, timeout => 15, interval => 0.2);
ok($ok, 'after the restart the leader writes again');
ok(DsTest::wait_until(sub { $sh->gw_get('web', $ok)->{status} == 200 },
    timeout => 5), 'and the change reaches the gateway');
like($sh->log_text('gw'), qr/the database \S+ is back/,
    'the gateway says the database is back');
unlike($sh->log_text($_), qr/pw-never-logged/, "$_ never logs the password")
    for qw(ctl-a gw);

# ---- a follower killed and restarted ----------------------------------------

my $gw_before = $pg->value("select rev from dstack_instances where "
    . "instance = 'gw'");
my $lead = $sh->leader;
my $leadpos = length $sh->log_text($lead);
$sh->stop('gw', 'KILL');
ok(DsTest::wait_until(sub {
    substr($sh->log_text($lead), $leadpos) =~ /stats: reading 1 source\b/ },
    timeout => $LEASE + 4), 'a gateway no longer seen drops out of the sums');
$r = $sa->api('POST', '/api/tokens', json => { name => 'while-down',
    scope => 'services', services => ['web'] });
is($r->{status}, 201, 'a token made while the gateway\'s follower is down');
my $wd = $r->{json}{token};
is($sh->gw_get('web', $wd)->{status}, 401, 'not on the gateway yet');
$logpos = length $sh->log_text('gw');
$sh->gw_start(stats_query => '?gw');
ok(DsTest::wait_until(sub { $sh->gw_get('web', $wd)->{status} == 200 },
    timeout => 5), 'the restarted follower catches up');
my $again = substr($sh->log_text('gw'), $logpos);
like($again, qr/following \S+ at revision \d+/, 'it follows again');
unlike($again, qr/did not mirror/,
    'from its own revision (no rebuild of the mirror)');
cmp_ok($gw_before, '>', 0, "its revision before: $gw_before");

# ---- the end -------------------------------------------------------------

$r = $sa->stop('web', abort => 1);
is($r->{status}, 200, 'stop the run');
ok(DsTest::wait_until(sub { !$sa->run_pids('web') }, timeout => 20),
    'its replicas are gone');
ok(DsTest::wait_until(sub { $sh->gw_get('web', $admin)->{status} == 404 },
    timeout => 5), 'and out of the gateway\'s routing');
is($sh->stop($_), 0, "$_: SIGTERM, exit 0") for $sh->names;

$pg->stop;
$t->allow_log(qr/connect\(\) failed/, qr/no live upstreams/);
$t->done;

