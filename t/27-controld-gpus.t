#!/usr/bin/perl
# GPUs of the local backend: offers and matching with the resource syntax
# of REFERENCE §2, messages naming what nothing matched and what the host
# has, and exclusive assignment per replica (CUDA_VISIBLE_DEVICES).
#
# The GPUs come from a test double of nvidia-smi (a script printing what
# nvidia-smi prints for two H100s and an A10G): this machine may have no
# GPU.  Everything else is real.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;

my ($t, $s) = DsStack::stack(gpus => 1);

like($s->log_text, qr/GPU 0: NVIDIA H100 80GB HBM3 \(H100\), 81559 MB/,
    'controld found the GPUs');

my $spec = $s->app_spec;

sub plan_gpu {
    my ($gpu, %o) = @_;
    return $s->api('POST', '/api/runs/plan', json => { spec => {
        %$spec, resources => { %{ $spec->{resources} }, gpu => $gpu }, %o } });
}

sub offer_gpus {
    my $r = shift;
    return join ',', map { $_->{name} }
        @{ $r->{json}{offers}[0]{resources}{gpus} || [] };
}

my @ok = (
    ['H100', 'H100', 'by name'],
    ['h100', 'H100', 'a name in any case'],
    ['A10G', 'A10G', 'another name'],
    ['A100,H100', 'H100', 'either of two names'],
    ['80GB', 'H100', 'by memory (80GB, nvidia-smi says 81559 MiB)'],
    ['24GB', 'A10G', '24GB matches the A10G (23028 MiB)'],
    ['40GB..', 'H100', 'a memory range'],
    ['H100:2', 'H100,H100', 'a count'],
    ['nvidia:H100:80GB:1..2', 'H100', 'vendor, name, memory and count'],
    ['1..', 'H100', 'any GPU, at least one: the first'],
    [{ name => ['H100'], count => 2 }, 'H100,H100', 'the mapping form'],
);
for my $c (@ok) {
    my ($gpu, $want, $name) = @$c;
    my $r = plan_gpu($gpu);
    is($r->{status}, 200, "gpu: $name: an offer") or diag $r->{body};
    is(offer_gpus($r), $want, "gpu: $name: $want");
}

my @no = (
    ['A100', qr/^spec\.resources\.gpu: no GPU of the host matches A100:1\.\.; the host has H100:80GB:2, A10G:22GB:1$/,
     'a name the host lacks'],
    ['H100:3', qr/^spec\.resources\.gpu: 1 replica x 3 GPUs need 3, the host has 2 that match/,
     'more of them than the host has'],
    ['amd:1', qr/^spec\.resources\.gpu: no GPU of the host matches amd:1; /,
     'another vendor'],
    ['A10G:40GB', qr/no GPU of the host matches A10G:40GB:1\.\./,
     'a name with too little memory'],
);
for my $c (@no) {
    my ($gpu, $re, $name) = @$c;
    my $r = plan_gpu($gpu);
    is($r->{status}, 422, "gpu: $name: 422");
    like($r->{json}{error}{message} // '', $re, "gpu: $name: the message")
        or diag $r->{body};
}
SKIP: {
    skip 'replicas > 1 need namespaces', 2 unless $s->network eq 'netns';
    my $r = plan_gpu('H100', replicas => 3);
    is($r->{status}, 422, 'three replicas of one H100 each on two: 422');
    like($r->{json}{error}{message},
        qr/3 replicas x 1 GPU need 3, the host has 2 that match/,
        'the message counts them');
}

# ---- assignment -------------------------------------------------------------------

SKIP: {
    skip 'replicas > 1 need namespaces', 9 unless $s->network eq 'netns';
    my $code = $s->upload($s->app_files);
    my $gspec = { %$spec, replicas => 2,
        resources => { %{ $spec->{resources} }, gpu => 'H100' } };
    my $r = $s->apply($gspec, name => 'gpus', code => $code);
    is($r->{status}, 201, 'two replicas with one H100 each');
    my $run = $s->wait_ready('gpus', 2);
    ok($run, 'both ready') or diag explain $s->last_run;
    my %cvd;
    for my $rep (@{ ($run || {})->{replicas} || [] }) {
        my $env = DsTest::_slurp("/proc/$rep->{pid}/environ");
        my ($v) = $env =~ /(?:^|\0)CUDA_VISIBLE_DEVICES=([^\0]*)/;
        $cvd{$rep->{num}} = $v;
        is($rep->{gpu}, 'H100', "replica $rep->{num}: the API names its GPU");
    }
    is_deeply([sort values %cvd], ['0', '1'],
        'each replica has its own GPU (CUDA_VISIBLE_DEVICES 0 and 1)')
        or diag explain \%cvd;

    # the H100s are taken: another run waits for one
    $r = $s->apply({ %$gspec, replicas => 1 }, name => 'waits',
        code => $code);
    is($r->{status}, 201, 'a third H100 replica is accepted');
    my $w = $s->wait_run('waits', sub {
        ($_[0]{replicas}[0]{message} // '') =~ /waiting for a free GPU/ });
    ok($w, 'and waits for a free GPU') or diag explain $s->last_run;
    is($w->{status}, 'submitted', 'submitted meanwhile') if $w;

    # no GPU asked for on a GPU host: none visible
    $r = $s->apply($spec, name => 'nogpu', code => $code);
    $run = $s->wait_ready('nogpu', 1);
    my $env = DsTest::_slurp("/proc/$run->{replicas}[0]{pid}/environ");
    like($env, qr/(?:^|\0)CUDA_VISIBLE_DEVICES=(?:\0|$)/,
        'a replica without a GPU sees none');

    # a stop frees them
    $s->stop('gpus', abort => 1);
    ok($s->wait_ready('waits', 1, timeout => 15),
        'the waiting run starts once GPUs are free');
}

$s->finish;
$t->done;
