#!/usr/bin/perl
# Image services on the hosts of an SSH fleet: real hosts (network
# namespaces with a real OpenSSH server each, t/lib/DsHosts.pm), each
# with its own real container engine (a private Podman service inside
# the host's namespace, t/lib/DsEngine.pm), driven by controld's
# container backend through the engine's socket forwarded over SSH; real
# nginx proxying to the containers' ports on the hosts' network.  A
# 2-replica image service spread over 2 hosts, its logs, a host cut off
# (its replica replaced on the other host, zero failed requests, its
# container removed when it is back), stop (no container left).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsHosts;
use DsEngine;
use Time::HiRes qw(time sleep);
use Test::More;

if (my $why = DsHosts::available()) {
    plan skip_all => $why;
}
if (my $why = DsEngine::unavailable()) {
    plan skip_all => "no container engine can run here: $why";
}
plan skip_all => 'runs in the pass without sanitizers' if $DsTest::SANITIZE;

my ($t, $s) = DsStack::stack();
my $h = DsHosts->new(n => 2);
my @eng = map { DsEngine->new($t, netns => $h->host($_)->{ns},
    dir => $h->host($_)->{dir} . '/engine') } 0 .. 1;
$h->set_env($_, DSTACK_ENGINE_SOCKET => $eng[$_]->socket_path) for 0 .. 1;
$_->image('localhost/web:1', { 'image.txt' => "web1\n" }) for @eng;

sub fleet {
    my $r = $s->api('GET', '/api/fleets/boxes');
    return $r->{status} == 200 ? $r->{json} : undef;
}

sub host_of {
    my ($i) = @_;
    my ($x) = grep { $_->{hostname} eq $h->host($i)->{ip} }
        @{ (fleet() || {})->{hosts} || [] };
    return $x || {};
}

my $key = DsTest::_slurp($h->key);
my $r = $s->api('POST', '/api/fleets/apply', json => { spec => {
    type => 'fleet', name => 'boxes', blocks => 2, ssh_config => {
    user => 'root', identity_file => $h->key,
    hosts => [ map { { hostname => $h->host($_)->{ip},
                       port => $h->host($_)->{port} } } 0 .. 1 ] } },
    keys => { $h->key => $key } });
is($r->{status}, 201, 'a fleet of 2 hosts with an engine each');
ok(DsTest::wait_until(sub { host_of(0)->{status} eq 'up'
    && host_of(1)->{status} eq 'up' }, timeout => 40), 'both up')
    or diag explain fleet();
is(host_of($_)->{resources}{engine}, 'podman', "host $_: its engine found")
    for 0 .. 1;

my $INDEX = q{printf '{"replica":%s,"version":%s,"greeting":"hi","image":"%s"}' }
    . q{"$DSTACK_REPLICA_NUM" "$DSTACK_REPLICA_VERSION" "$(cat /image.txt)" }
    . q{> /www/index.html};
my $spec = {
    type => 'service', image => 'localhost/web:1', port => 8000,
    replicas => 2,
    commands => [ 'echo "replica $DSTACK_REPLICA_NUM starts"',
        'mkdir -p /www', $INDEX, 'exec httpd -f -p 8000 -h /www' ],
    resources => { cpu => '1..', memory => '64MB..', disk => '1GB..' },
    auth => JSON::PP::false, https => JSON::PP::false,
};
$r = $s->api('POST', '/api/runs/plan', json => { spec => $spec });
is($r->{status}, 200, 'plan an image service');
is(scalar(grep { $_->{backend} eq 'ssh' } @{ $r->{json}{offers} || [] }), 2,
    'offers of both hosts') or diag explain $r->{json};

$r = $s->apply($spec, name => 'web');
is($r->{status}, 201, 'apply it') or diag $r->{body};
my $run = $s->wait_ready('web', 2, timeout => 90);
ok($run, '2 containers ready') or diag explain $s->last_run;
my %hosts = map { ($_->{host} // '') => $_ } grep { $_->{ready} }
    @{ ($run || {})->{replicas} || [] };
is(scalar keys %hosts, 2, 'one on each host') or diag explain \%hosts;
for my $rep (values %hosts) {
    is($rep->{backend}, 'container', "replica $rep->{num}: a container");
    like($rep->{address}, qr/^10\.\d+\.\d+\.\d+:\d+$/,
        "replica $rep->{num}: reached on its host's network");
}
is(scalar @{ $eng[$_]->containers('web') }, 1, "one container on host $_")
    for 0 .. 1;

my %seen;
for (1 .. 20) {
    my $g = $s->get('web', '/');
    $seen{ $g->{json}{replica} }++ if $g->{status} == 200 && $g->{json};
}
is(scalar keys %seen, 2, 'the gateway reaches both') or diag explain \%seen;
$r = $s->api('GET', '/api/runs/web/logs?replica=0');
like($r->{body}, qr/replica 0 starts/, 'the logs come from the host\'s engine');

# ---- a host cut off -----------------------------------------------------------

my $load = $s->start_load('web', retries => 2);
sleep 0.5;
$h->partition(0);
ok(DsTest::wait_until(sub { host_of(0)->{status} eq 'unreachable' },
    timeout => 15), 'host 0 cut off: unreachable');
$run = $s->wait_run('web', sub {
    my @ready = grep { $_->{ready} } @{ $_[0]{replicas} };
    return @ready == 2 && !grep { ($_->{host} // '') =~
        /^\Q@{[ $h->host(0)->{ip} ]}\E:/ } @ready;
}, timeout => 60);
ok($run, 'both replicas on host 1 now') or diag explain $s->last_run;
is(scalar @{ $eng[0]->containers('web') }, 1,
    'the cut-off container still runs there');
$h->heal(0);
ok(DsTest::wait_until(sub { host_of(0)->{status} eq 'up' }, timeout => 30),
    'host 0 back');
ok(DsTest::wait_until(sub { !@{ $eng[0]->containers('web') } },
    timeout => 20), 'its stale container is removed');
sleep 1;
my $res = $s->stop_load($load);
is_deeply($res->{failed}, [], "zero failed requests ($res->{total})");

# ---- controld killed and started again: the containers adopted -------------

$run = $s->wait_ready('web', 2, timeout => 30);
my %before = map { $_->{num} => $_->{address} } grep { $_->{ready} }
    @{ ($run || {})->{replicas} || [] };
my @ids = sort map { $_->{Id} } @{ $eng[1]->containers('web') };
$load = $s->start_load('web', retries => 2);
is($s->stop_controld('KILL') & 127, 9, 'controld killed with -9');
$s->start_controld(keep_conf => 1);
ok(DsTest::wait_until(sub { host_of(0)->{status} eq 'up'
    && host_of(1)->{status} eq 'up' }, timeout => 30), 'the hosts are up');
$run = $s->wait_ready('web', 2, timeout => 30);
my %after = map { $_->{num} => $_->{address} } grep { $_->{ready} }
    @{ ($run || {})->{replicas} || [] };
is_deeply(\%after, \%before, 'the same replicas, adopted');
sleep 2;
is_deeply([sort map { $_->{Id} } @{ $eng[1]->containers('web') }], \@ids,
    'the same containers, none started twice');
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], "zero failed requests ($res->{total})");

$s->stop('web');
ok($s->wait_run('web', sub { $_[0]{status} eq 'terminated' }, timeout => 30),
    'stopped');
ok(DsTest::wait_until(sub { !@{ $eng[1]->containers('web') } },
    timeout => 20), 'no container left');

$s->finish;
$_->finish for @eng;
$t->done;
