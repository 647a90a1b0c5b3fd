#!/usr/bin/perl
# SSH fleets end to end: real hosts (network namespaces with a real
# OpenSSH server each, t/lib/DsHosts.pm), real controld reaching them
# over SSH, real nginx with the module proxying to replicas on them.
# Fleet files through dstackctl (bad ones refused before anything is
# sent), an unreachable host, discovery (CPUs, memory, GPUs of a host
# with an nvidia-smi test double: this machine has no GPU), offers of
# every host, a 4-replica service spread over 3 hosts answering through
# the gateway, its logs, a host behind a jump host reached through a
# tunnel, delete refused while replicas run, a changed host key refused.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsHosts;
use File::Temp qw(tempdir);
use JSON::PP;
use Time::HiRes qw(time sleep);
use Test::More;

if (my $why = DsHosts::available()) {
    plan skip_all => $why;
}
# slow and end to end: run once, in the pass without sanitizers (they
# test controld and the hosts; the module's paths here are t/0x's)
plan skip_all => 'runs in the pass without sanitizers' if $DsTest::SANITIZE;

my ($t, $s) = DsStack::stack();
my $gpus = $s->fake_nvidia_smi;
my $h = DsHosts->new(n => 3, jump => 1,
    host_env => [ { DSTACK_NVIDIA_SMI => $gpus }, {}, {} ]);
my $dir = tempdir('fleet-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# dstackctl with this stack's client config
sub cli {
    my (@args) = @_;
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        $ENV{DSTACK_CONFIG} = $s->client_config;
        $ENV{HOME} = $dir;
        exec("$DsTest::BUILD/dstackctl", @args) or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh> // '';
    close $fh;
    return ($? >> 8, $out);
}

sub fleet {
    my $name = shift;
    my $r = $s->api('GET', "/api/fleets/$name");
    return $r->{status} == 200 ? $r->{json} : undef;
}

sub wait_hosts {
    my ($name, $cond, $timeout) = @_;
    my $f;
    DsTest::wait_until(sub {
        $f = fleet($name);
        return $f && !grep { !$cond->($_) } @{ $f->{hosts} };
    }, timeout => $timeout // 30, interval => 0.2);
    return $f;
}

# ---- bad files and requests change nothing --------------------------------

DsTest::_write("$dir/bad.dstack.yml", <<"EOF");
type: fleet
name: bad
ssh_config:
  user: root
  identity_file: @{[ $h->key ]}
  hosts:
    - hostname: 10.0.0.1
      port: 70000
EOF
my ($rc, $out) = cli('apply', '-f', "$dir/bad.dstack.yml", '-y');
isnt($rc, 0, 'a bad fleet file: dstackctl fails');
like($out, qr/bad\.dstack\.yml:\d+:\d+: ssh_config\.hosts\[0\]\.port: /,
    'the error names the file, line, column and key');

my $good = { type => 'fleet', name => 'xx', ssh_config => {
    user => 'root', identity_file => '/nonexistent/key',
    hosts => ['10.0.0.1'] } };
my $r = $s->api('POST', '/api/fleets/apply', json => { spec => $good });
is($r->{status}, 400, 'apply without the key: 400');
like($r->{body}, qr/no key for identity_file/, 'it says which key');
$r = $s->api('POST', '/api/fleets/apply', json => { spec => $good,
    keys => { '/nonexistent/key' => 'not a key' } });
is($r->{status}, 400, 'a key that is no private key: 400');
unlike($r->{body}, qr/not a key/, 'and the key text is not echoed');
$r = $s->api('GET', '/api/fleets');
is_deeply($r->{json}{fleets}, [], 'no fleet was created');
$r = $s->api('GET', '/api/fleets/nosuch');
is($r->{status}, 404, 'an unknown fleet: 404');

# ---- apply through dstackctl: 3 hosts and one that does not answer -------

my $yaml = $h->fleet_yaml(name => 'gpus', hosts => [0, 1, 2], blocks => 2);
my $dead = $h->bridge_ip;
$dead =~ s/\.1$/.250/;
$yaml .= "    - hostname: $dead\n      port: 22\n";
DsTest::_write("$dir/fleet.dstack.yml", $yaml);
my $t0 = time;
($rc, $out) = cli('apply', '-f', "$dir/fleet.dstack.yml", '-y', '-d');
is($rc, 0, 'dstackctl apply -f fleet.dstack.yml') or diag $out;

my $f = wait_hosts('gpus', sub { $_[0]{status} ne 'connecting' }, 40);
my %by = map { $_->{hostname} => $_ } @{ $f->{hosts} || [] };
for my $i (0 .. 2) {
    my $ip = $h->host($i)->{ip};
    is($by{$ip}{status}, 'up', "host $i is up") or diag explain $by{$ip};
}
diag sprintf('3 hosts up %.1f s after apply', time - $t0);
is($by{$dead}{status}, 'unreachable', 'the host that does not answer: '
    . 'unreachable') or diag explain $by{$dead};
like($by{$dead}{message}, qr/\S/, 'with a reason')
    and note $by{$dead}{message};

# discovery
my $res0 = $by{ $h->host(0)->{ip} }{resources};
is(scalar @{ $res0->{gpus} }, 3, 'host 0: its 3 GPUs found');
is($res0->{gpus}[0]{name}, 'NVIDIA H100 80GB HBM3', 'named as nvidia-smi says');
is($res0->{gpus}[0]{memory_mb}, 81559, 'with their memory');
my $res1 = $by{ $h->host(1)->{ip} }{resources};
cmp_ok($res1->{cpus}, '>', 0, 'host 1: CPUs');
cmp_ok($res1->{memory_mb}, '>', 100, 'memory');
cmp_ok($res1->{disk_mb}, '>', 100, 'disk');
is(scalar @{ $res1->{gpus} }, 0, 'no GPU');
is($by{ $h->host(1)->{ip} }{blocks}, 2, 'blocks: 2');

($rc, $out) = cli('fleet');
is($rc, 0, 'dstackctl fleet');
like($out, qr/gpus/, 'lists the fleet');
like($out, qr/\Q@{[ $h->host(2)->{ip} ]}\E/, 'and its hosts');

# the unreachable host out again: an update keeps the others' connections
$yaml = $h->fleet_yaml(name => 'gpus', hosts => [0, 1, 2], blocks => 2);
DsTest::_write("$dir/fleet.dstack.yml", $yaml);
($rc, $out) = cli('apply', '-f', "$dir/fleet.dstack.yml", '-y');
is($rc, 0, 'the fleet updated without the dead host (and followed)')
    or diag $out;
$f = fleet('gpus');
is(scalar @{ $f->{hosts} }, 3, '3 hosts now');
ok(!grep({ $_->{status} ne 'up' } @{ $f->{hosts} }), 'all up');

# ---- a service over the fleet ---------------------------------------------

my $spec = $s->app_spec(replicas => 4, port => 8000);
$r = $s->api('POST', '/api/runs/plan', json => { spec => $spec });
is($r->{status}, 200, 'plan a 4-replica service');
my @offers = @{ $r->{json}{offers} || [] };
my @ssh = grep { $_->{backend} eq 'ssh' } @offers;
is(scalar @ssh, 3, 'an offer of each host') or diag explain $r->{json};
is($offers[0]{backend}, 'ssh', 'first: the fleet runs it');
ok((grep { $_->{backend} eq 'local' } @offers), 'the local one next to them');
is($ssh[0]{region}, 'gpus', 'a fleet offer names its fleet');

DsTest::_write("$dir/web.dstack.yml",
    "type: service\nport: 8000\ncommands:\n  - python3 app.py 8000\n");
($rc, $out) = cli('offer', '-f', "$dir/web.dstack.yml");
is($rc, 0, 'dstackctl offer') or diag $out;
like($out, qr/ssh.*gpus.*\Q@{[ $h->host(1)->{ip} ]}\E/, 'shows the hosts of the fleet')
    or diag $out;
like($out, qr/local/, 'and the local offer');

$r = $s->apply($spec, name => 'web',
    code => $s->upload($s->app_files));
is($r->{status}, 201, 'apply it');
my $run = $s->wait_ready('web', 4, timeout => 60);
ok($run, '4 replicas ready') or diag explain $s->last_run;
my %per;
for my $rep (@{ $run->{replicas} || [] }) {
    next unless $rep->{ready};
    is($rep->{backend}, 'ssh', "replica $rep->{num} on the ssh backend");
    $per{ $rep->{host} }++;
}
is(scalar keys %per, 3, 'spread over the 3 hosts') or diag explain \%per;
ok(!grep({ $_ > 2 } values %per), 'no host has more than its 2 blocks');

my %seen;
for (1 .. 40) {
    my $g = $s->get('web', '/');
    $seen{ $g->{json}{replica} }++ if $g->{status} == 200 && $g->{json};
}
is(scalar keys %seen, 4, 'the gateway reaches all 4 replicas')
    or diag explain \%seen;

$r = $s->api('GET', '/api/runs/web/logs?replica=0');
like($r->{body}, qr/listening on 8000/, 'replica logs come back from the host');

$f = fleet('gpus');
my $busy = 0;
$busy += $_->{blocks_busy} for @{ $f->{hosts} };
is($busy, 4, 'the fleet counts 4 busy blocks');

# 3 hosts of 2 blocks: a 7th replica waits for a block
$spec->{replicas} = 7;
$r = $s->apply($spec, name => 'web');
ok($r->{status} == 200, 'scaled to 7 replicas');
$run = $s->wait_run('web', sub {
    (grep { $_->{ready} } @{ $_[0]{replicas} }) == 6 }, timeout => 60);
ok($run, '6 replicas ready: every block of the fleet') or diag explain $s->last_run;
my ($waiting) = grep { !$_->{ready} && $_->{status} ne 'terminated' }
    @{ ($run // $s->last_run)->{replicas} };
like($waiting->{message} // '', qr/busy|block/, 'the 7th waits for a block')
    or diag explain $waiting;
$spec->{replicas} = 4;
$r = $s->apply($spec, name => 'web');
$s->wait_ready('web', 4, timeout => 60, only => 1);

# delete refused while replicas run
($rc, $out) = cli('fleet', 'delete', 'gpus', '-y');
isnt($rc, 0, 'fleet delete while replicas run: refused');
like($out, qr/runs \d+ replicas/, 'saying why');
ok(fleet('gpus'), 'the fleet is still there');

# ---- a host behind a jump host: through a tunnel --------------------------

$yaml = $h->fleet_yaml(name => 'hidden', hosts => [], jump_hidden => 1);
DsTest::_write("$dir/hidden.dstack.yml", $yaml);
($rc, $out) = cli('apply', '-f', "$dir/hidden.dstack.yml", '-y');
is($rc, 0, 'a fleet with a host behind a jump host') or diag $out;
$f = wait_hosts('hidden', sub { $_[0]{status} eq 'up' }, 40);
ok($f, 'the hidden host is up through the jump host')
    or diag explain fleet('hidden');
ok($f && $f->{hosts}[0]{tunnel}, 'reached through a tunnel');

my $tspec = $s->app_spec(replicas => 1, port => 8000, fleets => ['hidden']);
$r = $s->apply($tspec, name => 'tun', code => $s->upload($s->app_files));
is($r->{status}, 201, 'a service on the hidden fleet');
$run = $s->wait_ready('tun', 1, timeout => 60);
ok($run, 'ready') or diag explain $s->last_run;
like($run->{replicas}[0]{address} // '', qr/^127\.0\.0\.1:\d+$/,
    'its address is the tunnel on 127.0.0.1');
my $g = $s->get('tun', '/');
is($g->{status}, 200, 'the gateway reaches it through the tunnel');
$s->stop('tun');
$s->wait_run('tun', sub { $_[0]{status} eq 'terminated' }, timeout => 30);

# ---- a changed host key is refused ------------------------------------------

$s->stop('web');
ok($s->wait_run('web', sub { $_[0]{status} eq 'terminated' }, timeout => 30),
    'web stopped');
# ---- GPUs: only host 0 has some (the nvidia-smi test double), each
# replica its own -------------------------------------------------------------

my $gspec = $s->app_spec(replicas => 2, port => 8000,
    resources => { cpu => '1..', memory => '64MB..', disk => '1GB..',
                   gpu => 'H100:1' });
unshift @{ $gspec->{commands} }, 'echo "gpus=$CUDA_VISIBLE_DEVICES"';
$r = $s->apply($gspec, name => 'gpu', code => $s->upload($s->app_files));
is($r->{status}, 201, 'a service of one H100 per replica');
$run = $s->wait_ready('gpu', 2, timeout => 60);
ok($run, 'its 2 replicas ready') or diag explain $s->last_run;
my %gpu_of;
for my $rep (grep { $_->{ready} } @{ ($run || {})->{replicas} || [] }) {
    like($rep->{host}, qr/^\Q@{[ $h->host(0)->{ip} ]}\E:/,
        "replica $rep->{num} on the host with the GPUs");
    is($rep->{gpu}, 'H100', "replica $rep->{num}: an H100")
        or diag explain $rep;
    my $log = $s->api('GET', "/api/runs/gpu/logs?replica=$rep->{num}");
    my ($g) = ($log->{body} // '') =~ /gpus=(\S*)/;
    $gpu_of{ $rep->{num} } = $g;
}
my @g = sort grep { defined } values %gpu_of;
is_deeply(\@g, [0, 1], 'each its own GPU (CUDA_VISIBLE_DEVICES 0 and 1)')
    or diag explain \%gpu_of;
$s->stop('gpu');
$s->wait_run('gpu', sub { $_[0]{status} eq 'terminated' }, timeout => 30);

$h->kill_host(2);
$f = wait_hosts('gpus', sub { $_[0]{hostname} ne $h->host(2)->{ip}
    || $_[0]{status} eq 'unreachable' }, 15);
ok($f, 'a killed host: unreachable');
$h->heal(2);            # its link back, its sshd with another key
$h->rekey(2);
$f = wait_hosts('gpus', sub { $_[0]{hostname} ne $h->host(2)->{ip}
    || $_[0]{status} eq 'failed' }, 30);
my ($h2) = grep { $_->{hostname} eq $h->host(2)->{ip} } @{ ($f // fleet('gpus'))->{hosts} };
is($h2->{status}, 'failed', 'back with another host key: refused');
like($h2->{message}, qr/host key changed/, 'with a clear error')
    and note $h2->{message};

# ---- delete --------------------------------------------------------------------

($rc, $out) = cli('fleet', 'delete', 'gpus', '-y');
is($rc, 0, 'fleet delete once no replica runs') or diag $out;
ok(DsTest::wait_until(sub { !fleet('gpus') }, timeout => 10),
    'the fleet is gone');
($rc, $out) = cli('fleet', 'delete', 'hidden', '-y');
ok(DsTest::wait_until(sub { !fleet('hidden') }, timeout => 10),
    'and the hidden one');
unlike($s->log_text, qr/BEGIN OPENSSH PRIVATE KEY/, 'no key in the log');

$s->finish;
$t->done;
