#!/usr/bin/perl
# Shared mode (#14) end to end, against a real PostgreSQL: two gateways
# (each: nginx with the module and a role: gateway controld with its own
# LMDB) and two controller instances, with nginx's API server from
# conf/nginx/dstack-api-shared.conf in front of both api_listen ports.
# dstackctl drives everything through that one API URL.  A keep-alive
# load runs through BOTH gateways during every step and no request may
# fail:
#   - apply: the service answers on both gateways; 40 changes one after
#     the other: each on both within 300 ms; scale: both see it; a request
#     held on gateway 2 wakes a service scaled to zero;
#   - kill -9 of the leader: the standby leads within 10 s and an apply
#     through the same URL works;
#   - PostgreSQL stopped: both gateways keep answering, a write gets a
#     503 naming the database; restarted: a change reaches both;
#   - one gateway's follower in a network namespace whose link goes
#     down: that gateway serves its last state and does not get a change
#     made meanwhile; link up: it does;
#   - a follower killed and restarted resyncs from its revision;
#   - stop: the service is gone on both gateways.
# ~20 s and nothing that t/80 does not already run sanitized: once, in
# the pass without sanitizers (as t/88, t/89); DSTACK_E2E_SANITIZE=1
# runs it under the sanitizer build all the same.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsCli;
use DsPg;
use DsShared;
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'runs in the pass without sanitizers'
    if ($ENV{DSTACK_SANITIZE} // '') eq '1' && !$ENV{DSTACK_E2E_SANITIZE};
DsCli->require_built('cli', 'controld', 'module');
DsPg::need();
plan skip_all => 'the openssl command is needed'
    unless `openssl version 2>&1` =~ /^OpenSSL/;

my $LEASE = 5;

my $t = DsTest->new(seed_empty => 0, workers => 1);     # gateway 1 + API
my $t2 = DsTest->new(seed_empty => 0, workers => 1);    # gateway 2
my $dir = $t->dir;
my $domain = $t->domain;

# ---- a network namespace for gateway 2's follower ---------------------------

my ($ns, $hveth, $haddr);
my $no_ns = $> != 0 ? 'not root'
    : system('ip netns list >/dev/null 2>&1') != 0 ? 'no ip netns here'
    : undef;
if (!$no_ns) {
    my $k = $$ % 250;
    $ns = "dse2e-$$";
    $hveth = "e2h$$";
    $haddr = "10.213.$k.1";
    my @cmds = (
        "ip netns add $ns",
        "ip link add $hveth type veth peer name e2n$$",
        "ip link set e2n$$ netns $ns",
        "ip addr add $haddr/30 dev $hveth",
        "ip link set $hveth up",
        "ip -n $ns addr add 10.213.$k.2/30 dev e2n$$",
        "ip -n $ns link set e2n$$ up",
        "ip -n $ns link set lo up",
    );
    for my $c (@cmds) {
        my ($rc, $out, $err) = DsTest::_run(['sh', '-c', $c]);
        next unless $rc;
        $no_ns = "$c: $err";
        last;
    }
}

my $pg = DsPg->new($dir);
$pg->listen_also($haddr) unless $no_ns;
my $uri = $pg->uri(password => 'pw-never-logged');
(my $uri_ns = $uri) =~ s/\@127\.0\.0\.1:/\@$haddr:/ unless $no_ns;

# ---- the API server of dstack-api-shared.conf on gateway 1's nginx -------------

my ($pa, $pb) = map { DsTest::free_port() } 1 .. 2;
my $api = DsShared::api_snippet($t, [$pa, $pb]);
my ($tls, $certs) = @$api{qw(tls certs)};
$t->write_conf(http => $api->{conf});
my $c = DsCli->new($t, no_gateway_server => 1);

# ---- the controlds ----------------------------------------------------------

my $sh = DsShared->new($t, $pg, lease => $LEASE, uri => $uri,
    gateway_url => "https://gateway.$domain");

$sh->start('ctl-a', extra => "api_listen: 127.0.0.1:$pa\n");
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a'
    && -s "$dir/ctl-a/client.yml" }, timeout => 15), 'ctl-a leads');
my $admin = $sh->admin_token('ctl-a');
# the cluster's keys (t/83-shared-keys.t): the standby needs them to lead
for my $k ($sh->share_keys('ctl-a', 'ctl-b')) {
    die "$k->{what}: $k->{err}" if $k->{rc};
}
$sh->start('ctl-b', extra => "api_listen: 127.0.0.1:$pb\n");
$sh->start('gw1', role => 'gateway', state => $t->state);
# gateway 2's held requests wake the leader through its follower
$t2->write_conf(http => "dstack_notify $dir/gw2/notify.sock;");
$sh->start('gw2', role => 'gateway', state => $t2->state,
    stats_port => $t2->stats_port,
    extra => "notify_socket: $dir/gw2/notify.sock\n",
    $no_ns ? () : (uri => $uri_ns, netns => $ns));
$t->start;
$t2->start;

my $sa = $sh->api_of('ctl-a');
my $netns = $sa->network eq 'netns';

my %ENV_CLI = (DSTACK_SERVER => "https://127.0.0.1:$tls",
    DSTACK_TOKEN => $admin, DSTACK_CA => "$certs/ca.crt");
sub cli { $c->cli([@_], env => \%ENV_CLI, timeout => 60) }

# ---- the gateways and their load --------------------------------------------

my @GW = ($t, $t2);

# web's answer through gateway G, with TOKEN
sub gw_get { $sh->gw_get('web', $_[1], gw => $_[0], timeout => 5) }

sub on_both {
    my ($what, $cond, $timeout) = @_;
    for my $i (0, 1) {
        ok(DsTest::wait_until(sub { $cond->($GW[$i]) },
            timeout => $timeout // 10, interval => 0.02),
            "$what: gateway " . ($i + 1));
    }
}

my (@LOAD, $load_t0);
sub load_start {
    $load_t0 = time;
    @LOAD = map { $_->start_load(clients => 1, keep => 1, pause => 0.05,
        host => "web.$domain",
        headers => { Authorization => "Bearer $admin" }) } @GW;
}
sub load_stop {
    my $step = shift;
    # a step lasts a second at least: enough requests to count
    sleep 1 - (time - $load_t0) if time - $load_t0 < 1;
    for my $i (0, 1) {
        my $r = $GW[$i]->stop_load($LOAD[$i]);
        cmp_ok($r->{total}, '>=', 5, "$step: gateway " . ($i + 1)
            . " answered the load ($r->{total} requests)");
        is_deeply($r->{errors}, [], "$step: gateway " . ($i + 1)
            . ': no request failed') or diag explain $r->{status};
    }
}

# ---- apply through the shared API --------------------------------------------

my $port = $netns ? 8000 : DsTest::free_port();
my $app = $c->app_dir('app', { 'app.py' => $sa->app_files->{'app.py'} });
sub spec {
    my $n = shift;
    DsTest::_write("$app/svc.dstack.yml", <<"EOF");
type: service
port: $port
replicas: $n
auth: true
https: false
resources:
  cpu: 1..
  memory: 64MB..
  disk: 1GB..
commands:
  - exec python3 app.py $port
EOF
}
spec(1);
my $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-n', 'web', '-y', '-d'],
    dir => $app, env => \%ENV_CLI, timeout => 60);
is($r->{rc}, 0, 'dstackctl apply through the API nginx') or diag $r->{err};
ok($sa->wait_ready('web', 1, timeout => 60), 'the replica is ready');
on_both('the service answers', sub { gw_get($_[0], $admin)->{status}
    == 200 });
on_both('and wants a token', sub { gw_get($_[0])->{status} == 401 }, 1);

# ---- who leads, and each instance's lag --------------------------------------

$r = $sa->api('GET', '/api/cluster');
is($r->{status}, 200, 'GET /api/cluster');
is($r->{json}{mode}, 'shared', 'shared mode');
is($r->{json}{leader}{instance}, 'ctl-a', 'ctl-a leads');
is_deeply([map { "$_->{instance}|$_->{role}" } @{ $r->{json}{instances} }],
    ['ctl-a|controller', 'ctl-b|controller', 'gw1|gateway', 'gw2|gateway'],
    'every instance, with its role');
ok(!grep({ $_->{seen_s} > 5 } @{ $r->{json}{instances} }),
    'all seen in the last seconds');
my $v = cli('ps', '-v');
is($v->{rc}, 0, 'dstackctl ps -v') or diag $v->{err};
like($v->{out}, qr/^leader\s+ctl-a\s+term \d+, rev \d+$/m, 'names the leader');
like($v->{out}, qr/^gateway\s+gw2\s+rev \d+ \((up to date|\d+ behind, [\d.]+ s), seen [\d.]+ s ago\)$/m,
    'and each gateway\'s lag');
like($v->{out}, qr/^standby\s+ctl-b\s+rev \d+/m, 'and the standby');
unlike(cli('ps')->{out}, qr/^leader/m, 'plain ps says nothing of it');
my $m = $sa->api('GET', '/api/metrics')->{body} // '';
like($m, qr/^dstack_controld_instance_leader\{instance="ctl-a",role="controller"\} 1$/m,
    'metrics: the leader');
like($m, qr/^dstack_controld_instance_leader\{instance="gw2",role="gateway"\} 0$/m,
    'metrics: a gateway');
like($m, qr/^dstack_controld_instance_revisions_behind\{instance="gw1"\} \d+$/m,
    'metrics: how far a gateway is behind');
like($m, qr/^dstack_controld_shared_term \d+$/m, 'metrics: the term');
like($m, qr/^dstack_controld_instance_seen_seconds\{instance="ctl-b"\} [\d.]+$/m,
    'metrics: when an instance was seen');

# ---- every change at once on both gateways -----------------------------------

# A follower's catch-up (and its row's upsert every second) runs on its
# LISTEN connection: a notice that arrives meanwhile goes to libpq's
# queue, and the socket has nothing left to wake the loop.  Left there,
# the change waits for the next tick (up to a second).
my @late;
for my $i (1 .. 40) {
    my $x = $sa->api('POST', '/api/tokens', json => { name => "n$i",
        scope => 'services', services => ['web'] });
    my $t0 = time;
    my $tok = $x->{json}{token} // die "token: $x->{status} $x->{body}";
    for my $g (@GW) {
        DsTest::wait_until(sub { gw_get($g, $tok)->{status} == 200 },
            timeout => 3, interval => 0.002);
        my $ms = (time - $t0) * 1000;
        push @late, sprintf('%s: %.0f ms', $g->port, $ms) if $ms > 300;
    }
    $sa->api('DELETE', "/api/tokens/n$i");
}
is_deeply(\@late, [], '40 changes one after the other: each reached both '
    . 'gateways within 300 ms of the API\'s answer');

# ---- scale -------------------------------------------------------------------

SKIP: {
    skip 'two replicas need network namespaces here', 5 unless $netns;
    load_start();
    spec(2);
    $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-n', 'web', '-y', '-d'],
        dir => $app, env => \%ENV_CLI, timeout => 60);
    is($r->{rc}, 0, 'scale to 2 through the API') or diag $r->{err};
    ok($sa->wait_ready('web', 2, timeout => 60), 'two replicas ready');
    my %seen;
    on_both('both replicas answer', sub {
        my $g = shift;
        my $j = gw_get($g, $admin)->{json} || {};
        $seen{$g}{$j->{replica} // ''} = 1;
        return grep({ /^\d+$/ } keys %{ $seen{$g} }) == 2;
    });
    load_stop('scale');

    # the console's series: the leader reads both gateways, and sums them
    my ($want, $got) = (0, -1);
    ok(DsTest::wait_until(sub {
        $want = 0;
        $want += (($_->service_stats('web') || {})->{requests} || {})->{'2xx'}
            // 0 for @GW;
        my $x = $sa->api('GET', '/api/runs/web/series')->{json} || {};
        $got = (($x->{totals} || {})->{requests} || {})->{'2xx'} // -1;
        return $got == $want && $x->{stats} eq 'ok';
    }, timeout => 5, interval => 0.2),
        "series: the 2xx of both gateways summed ($got of $want)");
}

# ---- a request held on gateway 2 wakes a service scaled to zero ----------------

SKIP: {
    skip 'a second service on the host network needs its own port', 4
        unless $netns;
    my $zc = $sa->upload($sa->app_files);
    $r = $sa->apply($sa->app_spec(replicas => '0..1',
        scaling => { metric => 'rps', target => 100, window => '30s' }),
        name => 'zero', code => $zc);
    is($r->{status}, 201, 'a service with min 0 replicas') or diag $r->{body};
    sleep 1;
    my @zp = $sa->run_pids('zero');
    is(scalar @zp, 0, 'idle: no replica');
    my $pos = length $sh->log_text('ctl-a');
    my $z = $t2->get('zero', '/', timeout => 60,
        headers => [Authorization => "Bearer $admin"]);
    is($z->{status}, 200, 'a request to it on gateway 2 is held, then '
        . 'answered') or diag explain $z;
    like(substr($sh->log_text('ctl-a'), $pos),
        qr/run "zero": a request waits: scaling 0 -> 1/,
        'the leader heard of it through gateway 2\'s follower');
    $sa->stop('zero', abort => 1);
}

# ---- kill -9 of the leader -------------------------------------------------------

load_start();
kill 'KILL', $sh->pid('ctl-a');
my $t0 = time;
$sh->wait_exit('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-b' }, timeout => 10,
    interval => 0.05), 'kill -9 of the leader: the standby leads');
my $took = time - $t0;
cmp_ok($took, '<', 10, sprintf('within 10 s (%.2f s)', $took));
spec(1);
my $ok = DsTest::wait_until(sub {
    $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-n', 'web', '-y', '-d'],
        dir => $app, env => \%ENV_CLI, timeout => 30);
    $r->{rc} == 0 }, timeout => 15, interval => 0.2);
ok($ok, 'an apply through the same API URL works') or diag $r->{err};
my $write = time - $t0;
diag(sprintf('kill -9 of the leader: new leader %.2f s, API write through '
    . 'nginx %.2f s', $took, $write));
$sa->{dir} = "$dir/ctl-b";
ok($sa->wait_ready('web', 1, timeout => 30), 'the new leader runs it');
load_stop('kill -9 of the leader');
$sh->start('ctl-a', extra => "api_listen: 127.0.0.1:$pa\n");

# a token made now, seen on both gateways: the follower got the change
sub token {
    my $name = shift;
    my $x = cli('token', 'create', $name, '--scope', 'services:web');
    my ($tok) = $x->{out} =~ /^(dst_\S+)$/m;
    return ($tok, $x);
}

# ---- PostgreSQL stopped ---------------------------------------------------------

load_start();
is($t->stats->{follow}{database}, 'ok',
    'gateway 1\'s stats: the database is reachable');
like($t->stats->{follow}{rev}, qr/^\d+$/, 'and the revision mirrored');
$pg->stop;
my $down_t = time;
my ($tok, $x) = token('down');
is($x->{rc}, 1, 'database down: dstackctl token create exits 1');
my $down = 'the shared database ' . $pg->uri(password => '***')
    . ' is unavailable';
like($x->{err}, qr/\Q$down\E/, 'with the API\'s 503 naming the database')
    or diag $x->{err};
unlike($x->{err}, qr/pw-never-logged/, 'without its password');
sleep 1 - (time - $down_t) if time - $down_t < 1;
ok(DsTest::wait_until(sub { ($t->stats->{follow}{database} // '')
    eq 'unreachable' }, timeout => 5),
    'database down: gateway 1\'s stats say so');
cmp_ok(abs($t->stats->{follow}{since} - $down_t), '<', 5, 'and since when');
ok(DsTest::wait_until(sub { ($t2->stats->{follow}{database} // '')
    eq 'unreachable' }, timeout => 5), 'so do gateway 2\'s');
$pg->start;
ok(DsTest::wait_until(sub { ($t->stats->{follow}{database} // '')
    eq 'ok' }, timeout => 5), 'database back: the stats say ok again');
ok(!exists $t->stats->{follow}{since}, 'with no since');
load_stop('PostgreSQL down');
ok(DsTest::wait_until(sub { ($tok) = token('back'); $tok }, timeout => 15,
    interval => 0.2), 'after the restart a write works');
on_both('the change reaches', sub { gw_get($_[0], $tok)->{status} == 200 });

# ---- a gateway cut off from the network ---------------------------------------------

SKIP: {
    skip "gateway 2's follower is not in a network namespace: $no_ns", 11
        if $no_ns;
    load_start();
    my $gpos = length $sh->log_text('gw2');
    system('ip', 'link', 'set', $hveth, 'down') == 0
        or die "ip link set $hveth down failed";
    my ($cut) = token('cut');
    ok($cut, 'a token made while gateway 2 is cut off');
    ok(DsTest::wait_until(sub { gw_get($t, $cut)->{status} == 200 },
        timeout => 5, interval => 0.02), 'gateway 1 honours it');
    # its connection times out (tcp_user_timeout, 5 s): it says so once
    my $lost = qr/serving the last state mirrored/;
    ok(DsTest::wait_until(sub { substr($sh->log_text('gw2'), $gpos) =~ $lost },
        timeout => 15, interval => 0.1),
        'gateway 2\'s follower notices the database is gone');
    sleep 2;
    my @said = substr($sh->log_text('gw2'), $gpos) =~ /$lost/g;
    is(scalar @said, 1, 'and says so once, not every second');
    is(gw_get($t2, $cut)->{status}, 401, 'gateway 2 does not have the '
        . 'change');
    is(gw_get($t2, $admin)->{status}, 200, 'and serves its last state');
    system('ip', 'link', 'set', $hveth, 'up') == 0
        or die "ip link set $hveth up failed";
    $t0 = time;
    ok(DsTest::wait_until(sub { gw_get($t2, $cut)->{status} == 200 },
        timeout => 20, interval => 0.02), 'link up: it reaches gateway 2');
    diag(sprintf('gateway 2 had the change %.2f s after link up',
        time - $t0));
    like(substr($sh->log_text('gw2'), $gpos), qr/the database \S+ is back/,
        'and says the database is back');
    load_stop('gateway 2 cut off');
}

# ---- a follower killed and restarted ------------------------------------------------

load_start();
my $before = $pg->value("select rev from dstack_instances where "
    . "instance = 'gw1'");
$sh->stop('gw1', 'KILL');
my ($wd) = token('while-down');
ok($wd, 'a token made while gateway 1\'s follower is down');
is(gw_get($t, $wd)->{status}, 401, 'not on gateway 1 yet');
my $logpos = length $sh->log_text('gw1');
$sh->start('gw1', role => 'gateway', state => $t->state);
ok(DsTest::wait_until(sub { gw_get($t, $wd)->{status} == 200 },
    timeout => 5, interval => 0.02), 'the restarted follower catches up');
unlike(substr($sh->log_text('gw1'), $logpos), qr/did not mirror/,
    "from its own revision ($before), not a rebuild");
load_stop('follower restarted');

# ---- stop ------------------------------------------------------------------------

$r = cli('stop', 'web', '-x', '-y');
is($r->{rc}, 0, 'dstackctl stop through the API') or diag $r->{err};
on_both('the service is gone', sub { gw_get($_[0], $admin)->{status}
    == 404 }, 20);
unlike($sh->log_text($_), qr/pw-never-logged/, "$_ never logs the password")
    for $sh->names;
# a leader whose lease ran out while PostgreSQL was down exits 1 by
# design (its service manager starts it again as a standby): which one
# led then, and whether the outage outlasted the lease, is timing
for my $n ($sh->names) {
    my $gone = $sh->wait_exit($n, 0.05);
    if (defined $gone) {
        is($gone >> 8, 1, "$n: had exited 1 on its own");
        like($sh->log_text($n), qr/lease lost|exiting with status 1/,
            "$n: because it lost the database while leading");
    } else {
        is($sh->stop($n), 0, "$n: SIGTERM, exit 0");
    }
}
$pg->stop;
$_->allow_log(qr/connect\(\) failed/, qr/no live upstreams/) for @GW;
$t2->finish;
$t->done;

END {
    $sh->cleanup if $sh;            # gw2 leaves the namespace first
    system("ip link del $hveth 2>/dev/null") if $hveth;
    system("ip netns del $ns 2>/dev/null") if $ns;
}
