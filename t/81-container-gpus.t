#!/usr/bin/perl
# GPUs for image services: offers of the container backend match the
# host's GPUs, each replica gets its own (never one another replica
# holds, whichever backend runs it), and the engine is asked for them:
# Podman by CDI device names (nvidia.com/gpu=N), Docker by a device
# request for NVIDIA's driver.
#
# The GPUs come from the same test double of nvidia-smi as t/27 (this
# machine may have no GPU), and the engine is a real Podman service
# (t/lib/DsEngine.pm) that has no CDI device for them: the request it
# was sent is asserted from controld's log and from the engine's refusal.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;

my ($t, $s) = DsStack::stack(engine => 1, gpus => 1);
my $engine = $s->engine;
$engine->image('localhost/gpu:1', {});

sub spec {
    my (%o) = @_;
    return {
        type => 'service', image => 'localhost/gpu:1', port => 8000,
        commands => ['exec httpd -f -p 8000 -h /www'],
        auth => JSON::PP::false, https => JSON::PP::false,
        resources => { cpu => '1..', memory => '64MB..', disk => '1GB..',
                       gpu => 'H100:1' },
        %o,
    };
}

my $r = $s->api('POST', '/api/runs/plan', json => { spec => spec() });
is($r->{status}, 200, 'plan: an offer for H100:1') or diag $r->{body};
is($r->{json}{offers}[0]{instance_type}, 'container', 'a container');
is(join(',', map { "$_->{name}:$_->{memory_mb}" }
        @{ $r->{json}{offers}[0]{resources}{gpus} || [] }), 'H100:81559',
    'the offer: one H100 of the host\'s');

$r = $s->api('POST', '/api/runs/plan',
    json => { spec => spec(resources => { gpu => 'A100' }) });
is($r->{status}, 422, 'plan: A100: no offer');
like($r->{json}{error}{message} // '', qr/gpu.*A100.*H100/s,
    'the message names what was asked and what the host has');

$r = $s->apply(spec(replicas => 2), name => 'gpu');
is($r->{status}, 201, 'apply: two replicas with one H100 each');
my $run = $s->wait_run('gpu', sub {
    my @f = grep { $_->{restarts} >= 1 || $_->{status} eq 'failed' }
        @{ $_[0]{replicas} };
    return @f == 2;
}, timeout => 60);
ok($run, 'both replicas were tried (the engine has no such device)')
    or diag explain $s->last_run;

my $log = $s->log_text;
# the create body holds secrets and is not logged: its GPUs are
my @asked = $log =~ /create \S+ \(\d+ bytes; GPUs (nvidia\.com\/gpu=\d)/g;
my %dev = map { $_ => 1 } @asked;
is_deeply([sort keys %dev], ['nvidia.com/gpu=0', 'nvidia.com/gpu=1'],
    'Podman is asked for CDI devices: each replica its own H100');
unlike($log, qr/nvidia\.com\/gpu=2/,
    'never the A10G');
like($log, qr/create \S+ \(\d+ bytes; GPUs \S+ \(NVIDIA_VISIBLE_DEVICES=[01]\)/,
    'NVIDIA_VISIBLE_DEVICES names the replica\'s GPU');
my @msgs = map { $_->{message} } @{ ($run || {})->{replicas} || [] };
ok((grep { /nvidia\.com\/gpu=\d/ } @msgs),
    "the engine's refusal names the device it was asked for")
    or diag explain \@msgs;

$s->stop('gpu', abort => 1);
$s->finish;
$engine->finish;
$t->done;
