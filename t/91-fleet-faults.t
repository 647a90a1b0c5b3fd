#!/usr/bin/perl
# Faults of SSH fleets on real hosts (network namespaces with a real
# OpenSSH server each, t/lib/DsHosts.pm) under load through the real
# gateway: a whole host killed (its processes and its link): zero failed
# requests (the gateway retries on another replica), its replicas out
# of the ready set within seconds and replaced on the other hosts, and
# what was left there cleaned when it returns; a host cut off (its
# replicas still running there): the same, and the stale replicas killed
# when it is back; controld killed with -9 and started again: every
# replica adopted, none started twice, no request lost.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsHosts;
use File::Temp qw(tempdir);
use Time::HiRes qw(time sleep);
use Test::More;
use JSON::PP;

if (my $why = DsHosts::available()) {
    plan skip_all => $why;
}
# slow and end to end: run once, in the pass without sanitizers (they
# test controld and the hosts; the module's paths here are t/0x's)
plan skip_all => 'runs in the pass without sanitizers' if $DsTest::SANITIZE;

my ($t, $s) = DsStack::stack();
my $h = DsHosts->new(n => 3);
my $dir = tempdir('fleet-f-XXXXXX', TMPDIR => 1, CLEANUP => 1);

sub fleet {
    my $r = $s->api('GET', '/api/fleets/gpus');
    return $r->{status} == 200 ? $r->{json} : undef;
}

sub host_status {
    my $i = shift;
    my ($x) = grep { $_->{hostname} eq $h->host($i)->{ip} }
        @{ (fleet() || {})->{hosts} || [] };
    return $x ? $x->{status} : '';
}

# the agent's replica directories on host i
sub tags_on {
    my $i = shift;
    my $d = $h->host($i)->{state_dir} . '/r';
    opendir(my $dh, $d) or return ();
    return sort grep { !/^\./ } readdir $dh;
}

sub replicas_on {
    my ($run, $i) = @_;
    my $ip = $h->host($i)->{ip};
    return grep { ($_->{host} // '') =~ /^\Q$ip\E:/ && $_->{ready} }
        @{ $run->{replicas} };
}

my $key = DsTest::_slurp($h->key);
my $fleet = { type => 'fleet', name => 'gpus', blocks => 3, ssh_config => {
    user => 'root', identity_file => $h->key,
    hosts => [ map { { hostname => $h->host($_)->{ip},
                       port => $h->host($_)->{port} } } 0 .. 2 ] } };
my $r = $s->api('POST', '/api/fleets/apply',
    json => { spec => $fleet, keys => { $h->key => $key } });
is($r->{status}, 201, 'a fleet of 3 hosts');
ok(DsTest::wait_until(sub { !grep { host_status($_) ne 'up' } 0 .. 2 },
    timeout => 40), 'all up');

my $spec = $s->app_spec(replicas => 3, port => 8000);
$r = $s->apply($spec, name => 'web', code => $s->upload($s->app_files));
is($r->{status}, 201, 'a 3-replica service');
my $run = $s->wait_ready('web', 3, timeout => 60);
ok($run, 'ready, one per host') or diag explain $s->last_run;
is(scalar(replicas_on($run, $_)), 1, "one on host $_") for 0 .. 2;

# ---- a whole host dies under load -------------------------------------------

my $load = $s->start_load('web', retries => 2);
sleep 1;
my @before = replicas_on($run, 1);
my @old_tags = tags_on(1);
my $t0 = time;
$h->kill_host(1);
my $out_at;
$run = $s->wait_run('web', sub {
    my $x = shift;
    $out_at //= time if !grep { $_->{ready} && ($_->{host} // '') =~
        /^\Q@{[ $h->host(1)->{ip} ]}\E:/ } @{ $x->{replicas} };
    return $out_at;
}, timeout => 20, interval => 0.05);
ok($out_at, 'its replica left the ready set');
my $gone_s = ($out_at // time) - $t0;
cmp_ok($gone_s, '<', 6, sprintf('within %.1f s', $gone_s));
is(host_status(1), 'unreachable', 'the host is unreachable');
$run = $s->wait_ready('web', 3, timeout => 60);
ok($run, '3 replicas ready again') or diag explain $s->last_run;
diag sprintf('host killed: out of the ready set in %.1f s, replaced in '
    . '%.1f s', $gone_s, time - $t0);
is(scalar(replicas_on($run, 1)), 0, 'none on the dead host');
sleep 1;
my $res = $s->stop_load($load);
cmp_ok($res->{total}, '>', 50, "$res->{total} requests under load");
is_deeply($res->{failed}, [], 'zero failed requests');

# it returns: what was there goes
$h->restore_host(1);
ok(DsTest::wait_until(sub { host_status(1) eq 'up' }, timeout => 30),
    'the host is up again');
ok(DsTest::wait_until(sub { !grep { my $o = $_; grep { $_ eq $o } tags_on(1) }
    @old_tags }, timeout => 15), 'the dead replica\'s files there are gone')
    or diag explain [tags_on(1)];

# ---- a host cut off, its replica still running there ---------------------------

$run = $s->run('web');
my ($victim) = grep { replicas_on($run, $_) } 0, 2;
my @stale = tags_on($victim);
my @pids = $h->pids($victim);
ok(@stale, "host $victim has a replica");
$load = $s->start_load('web', retries => 2);
sleep 1;
$t0 = time;
$h->partition($victim);
ok(DsTest::wait_until(sub { host_status($victim) eq 'unreachable' },
    timeout => 15, interval => 0.05), 'cut off: unreachable');
diag sprintf('host cut off: unreachable in %.1f s', time - $t0);
$run = $s->wait_ready('web', 3, timeout => 60);
ok($run, 'replaced elsewhere');
ok(!replicas_on($run, $victim), 'not on the cut-off host');
my @still = grep { kill 0, $_ } @pids;
ok(scalar @still, 'its processes still run there, cut off');
$h->heal($victim);
ok(DsTest::wait_until(sub { host_status($victim) eq 'up' }, timeout => 30),
    'back');
ok(DsTest::wait_until(sub { !grep { my $o = $_; grep { $_ eq $o }
    tags_on($victim) } @stale }, timeout => 15),
    'the stale replica is released there');
ok(DsTest::wait_until(sub {
    !grep { my $p = $_; kill(0, $p) && (readlink("/proc/$p/cwd") // '') =~
        m{/r/} } $h->pids($victim) }, timeout => 15),
    'and its process is gone');
sleep 2;
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], "zero failed requests ($res->{total})");

# ---- controld killed and started again ---------------------------------------

$run = $s->wait_ready('web', 3, timeout => 30);
my %addr = map { $_->{num} => "$_->{address} $_->{pid}" }
    grep { $_->{ready} } @{ $run->{replicas} };
my $count = sub {
    my $n = 0;
    for my $i (0 .. 2) { my @tags = tags_on($i); $n += @tags }
    return $n;
};
is($count->(), 3, '3 replicas on the hosts');
$load = $s->start_load('web', retries => 2);
is($s->stop_controld('KILL') & 127, 9, 'controld killed with -9');
sleep 1;
$s->start_controld(keep_conf => 1);
ok(DsTest::wait_until(sub { !grep { host_status($_) ne 'up' } 0 .. 2 },
    timeout => 30), 'the hosts are up again');
$run = $s->wait_ready('web', 3, timeout => 30);
ok($run, '3 ready');
my %after = map { $_->{num} => "$_->{address} $_->{pid}" }
    grep { $_->{ready} } @{ ($run // {})->{replicas} || [] };
is_deeply(\%after, \%addr, 'the same replicas, adopted (address and pid)');
sleep 2;
is($count->(), 3, 'none started twice');
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], "zero failed requests ($res->{total})");
unlike($s->log_text, qr/PRIVATE KEY/, 'no key in the log');

# ---- the fleet deleted by force: its replicas drain and move ---------------

$r = $s->api('POST', '/api/fleets/gpus/delete', json => { force => JSON::PP::false });
is($r->{status}, 409, 'delete while replicas run: 409');
$load = $s->start_load('web', retries => 2);
$r = $s->api('POST', '/api/fleets/gpus/delete', json => { force => JSON::PP::true });
is($r->{status}, 200, 'delete with force');
is($r->{json}{status}, 'deleting', 'the fleet is deleting');
$run = $s->wait_run('web', sub {
    my @l = grep { $_->{ready} && $_->{backend} eq 'local' }
        @{ $_[0]{replicas} };
    return @l == 3 && !fleet();
}, timeout => 90);
ok($run, 'its replicas moved to this host, and the fleet is gone')
    or diag explain [$s->last_run, fleet()];
ok(DsTest::wait_until(sub { $count->() == 0 }, timeout => 15),
    'nothing left on the hosts');
sleep 1;
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], "zero failed requests ($res->{total})");

$s->stop('web');
ok($s->wait_run('web', sub { $_[0]{status} eq 'terminated' }, timeout => 30),
    'stopped');
$s->finish;
$t->done;
