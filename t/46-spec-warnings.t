#!/usr/bin/perl
# dstack files as dstack accepts them, end to end through real nginx,
# real dstack-controld and real replica processes: the fields of a
# dstack profile that mean nothing here are printed as warnings by
# dstackctl (offer, apply) and answered as "warnings" by the API's plan
# and apply, and the run goes ahead; a malformed one is still an error
# that names its key.  AMD GPUs are found by amd-smi (a test double)
# and reach offers, errors and the replica's environment, written as
# dstack writes GPU specs.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use IO::Socket::UNIX;
use JSON::PP;
use Socket qw(SOCK_STREAM);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $t = DsTest->new(seed_empty => 0);
my $dir = $t->dir;

# amd-smi on a host with two MI300X and no NVIDIA GPU: what it prints
# for "static --asic --vram --json" (amd-smi 24.x's form, one size as a
# string as older versions give it)
my $amd_smi = "$dir/fake-amd-smi";
DsTest::_write($amd_smi, <<'EOF');
#!/bin/sh
# test double: amd-smi on a host with two MI300X
case "$*" in
*static*--json*)
    cat <<'JSON'
[
  {"gpu": 0, "asic": {"market_name": "AMD Instinct MI300X",
                      "vendor_id": "0x1002"},
   "vram": {"type": "HBM", "size": {"value": 196592, "unit": "MB"}}},
  {"gpu": 1, "asic": {"market_name": "AMD Instinct MI300X OAM"},
   "vram": {"type": "HBM", "size": "196592 MB"}}
]
JSON
    ;;
*) exit 1 ;;
esac
EOF
chmod 0755, $amd_smi;

my $c = DsCli->new($t, controld_extra => <<"EOF");
backends:
  local:
    nvidia_smi: $dir/no-such-nvidia-smi
    amd_smi: $amd_smi
EOF
$c->start_controld;
$t->start;
my $admin = $c->admin_token;
ok($admin, 'controld wrote a client config with an admin token');

like($c->controld_log, qr/GPU 0: AMD Instinct MI300X \(MI300X\), 196592 MB/,
    'controld found the AMD GPUs with amd-smi');

# POST to controld's API on its socket; the parsed JSON answer
sub api_post {
    my ($path, $body) = @_;
    my $json = JSON::PP->new->canonical->encode($body);
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $c->api_socket) or die "connect: $!";
    print $sock "POST $path HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $admin\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($json) . "\r\n\r\n$json";
    local $/;
    my $res = <$sock>;
    close $sock;
    my ($status) = $res =~ m{^HTTP/1\.[01] (\d+)};
    my ($text) = $res =~ /\r\n\r\n(.*)\z/s;
    return { status => $status // 0, body => $text,
             json => eval { decode_json($text) } };
}

# A service written for dstack's clouds.  It asks for an AMD GPU and
# writes the devices it was given where the gateway serves them.
my $app = $c->app_dir('app', {
    'cloud.dstack.yml' => <<'EOF',
type: service
name: cloudy
port: 8000
commands:
  - echo "rocr=$ROCR_VISIBLE_DEVICES hip=$HIP_VISIBLE_DEVICES" > index.html
  - exec python3 -m http.server 8000
resources:
  gpu: amd:1
backends: [aws, local]
spot_policy: spot
max_price: 1.5
priority: 50
tags:
  team: ml
idle_duration: 1h
EOF
    'badtags.dstack.yml' => <<'EOF',
type: service
port: 8000
commands:
  - exec python3 -m http.server 8000
tags:
  team: [ml]
EOF
    'amd.dstack.yml' => <<'EOF',
type: service
port: 8000
commands:
  - exec python3 -m http.server 8000
resources:
  gpu: MI300X:192GB:2
EOF
    'nvidia.dstack.yml' => <<'EOF',
type: service
port: 8000
commands:
  - exec python3 -m http.server 8000
resources:
  gpu: nvidia:1
EOF
});

my @ignored = (
    qr/^cloud\.dstack\.yml:9:12: backends\[0\]: ignored: "aws" is not a backend here \(local, container, ssh\)$/m,
    qr/^cloud\.dstack\.yml:10:1: spot_policy: ignored: no host here is a spot instance/m,
    qr/^cloud\.dstack\.yml:11:1: max_price: ignored: offers here have no price$/m,
    qr/^cloud\.dstack\.yml:12:1: priority: ignored: /m,
    qr/^cloud\.dstack\.yml:13:1: tags: ignored: /m,
    qr/^cloud\.dstack\.yml:15:1: idle_duration: ignored: /m,
);

# ---- dstackctl: offer and apply print the warnings ----------------------------

my $r = $c->cli(['offer', '-f', 'cloud.dstack.yml'], dir => $app);
is($r->{rc}, 0, 'offer of a file with cloud fields exits 0')
    or diag $r->{err};
like($r->{err}, $_, "offer warns: $_") for @ignored;
like($r->{out}, qr/^ 1\s+local\s+.*MI300X:192GB:1/m,
    'the offer has an AMD GPU, written as dstack writes it');

$r = $c->cli(['apply', '-f', 'cloud.dstack.yml'], dir => $app);
is($r->{rc}, 2, 'apply without -y: exit 2');
like($r->{err}, $_, "apply warns: $_") for @ignored;
like($r->{out}, qr/^ Run name\s+cloudy$/m, 'and shows the plan');
like($r->{out}, qr/^ Resources\s+.*amd:1/m,
    'the plan writes the GPU as dstack does');

# the warnings come before the plan, as a user on a terminal sees them
$r = $c->cli(['apply', '-f', 'cloud.dstack.yml'], dir => $app, tty => 1,
    stdin => "n\n");
like($r->{out}, qr/tags: ignored: .* Run name\s+cloudy/s,
    'on a terminal, the warnings come before the plan');

$r = $c->cli(['apply', '-f', 'badtags.dstack.yml', '-y'], dir => $app);
is($r->{rc}, 1, 'a malformed ignored field is still an error');
like($r->{err}, qr/^badtags\.dstack\.yml:6:9: tags\.team: expected a string, got a list$/m,
    'that names its key and place');
is($c->run_named('badtags'), undef, 'nothing was submitted');

# ---- the API: plan and apply answer them --------------------------------------

my %spec = (type => 'service', name => 'cloudy', port => 8000,
    commands => ['exec python3 -m http.server 8000'],
    backends => ['aws'], tags => { team => 'ml' }, priority => 50);
$r = api_post('/api/runs/plan', { spec => \%spec });
is($r->{status}, 200, 'plan with cloud fields: 200') or diag $r->{body};
is_deeply([sort @{ $r->{json}{warnings} || [] }], [
    'spec.backends: ignored: none of its backends is one of ours (local, '
        . 'container, ssh), so any of ours may run it',
    'spec.backends[0]: ignored: "aws" is not a backend here (local, '
        . 'container, ssh)',
    'spec.priority: ignored: runs here are placed when applied, never '
        . 'queued behind others',
    'spec.tags: ignored: there are no cloud resources here to tag',
], 'plan answers the warnings, each naming its field');
is($r->{json}{offers}[0]{backend}, 'local', 'and offers the local backend');

$r = api_post('/api/runs/plan', { spec => { %spec, backends => undef,
    tags => undef, priority => undef } });
is_deeply($r->{json}{warnings}, [], 'a plan without them has none');

$r = api_post('/api/runs/plan', { spec => { %spec, priority => 101 } });
is($r->{status}, 400, 'plan with priority 101: 400');
like($r->{json}{error}{message} // '',
    qr/^spec\.priority: expected an integer from 0 to 100, got 101$/,
    'the error names the field');

# ---- AMD GPUs in offers and errors ------------------------------------------------

$r = $c->cli(['offer', '-f', 'amd.dstack.yml'], dir => $app);
is($r->{rc}, 0, 'offer of MI300X:192GB:2 exits 0') or diag $r->{err};
like($r->{out}, qr/^ 1\s+local\s+.*MI300X:192GB:2/m,
    'two MI300X are offered');

$r = $c->cli(['offer', '-f', 'nvidia.dstack.yml'], dir => $app);
isnt($r->{rc}, 0, 'offer of an NVIDIA GPU on an AMD host fails');
like($r->{err}, qr/no GPU of the host matches nvidia:1; the host has MI300X:192GB:2$/m,
    'saying what was asked and what the host has, as dstack writes GPUs');

$r = api_post('/api/runs/plan', { spec => { %spec,
    resources => { gpu => 'MI300X:8' } } });
is($r->{status}, 422, 'plan of MI300X:8: 422');
like($r->{json}{error}{message} // '',
    qr/^spec\.resources\.gpu: 1 replica x 8 GPUs need 8, the host has 2 that match \(MI300X:192GB:2\)$/,
    'the error counts the AMD GPUs');

# ---- apply runs it: the cloud fields ignored, an AMD GPU given ---------------------

$r = $c->cli(['apply', '-f', 'cloud.dstack.yml', '-y'], dir => $app,
    timeout => 90);
is($r->{rc}, 0, 'apply -y of the cloud file exits 0')
    or diag "$r->{out}\n$r->{err}";
like($r->{err}, $_, "apply -y warns: $_") for @ignored;
like($r->{out}, qr/^cloudy  running  1\/1 replica ready$/m,
    'the run is running');

my $res = $t->get('cloudy', '/',
    headers => { Authorization => "Bearer $admin" });
is($res->{status}, 200, 'the replica answers through the gateway');
like($res->{body}, qr/^rocr=[01] hip=[01]$/m,
    'the replica got one AMD GPU (ROCR_VISIBLE_DEVICES, '
    . 'HIP_VISIBLE_DEVICES)');

my $run = $c->run_named('cloudy');
like($run->{replicas}[0]{resources} // '', qr/, amd:1$/,
    'the replica\'s resources write its GPU as dstack does')
    or diag explain $run->{replicas};

$r = $c->cli(['stop', 'cloudy', '-y'], timeout => 120);
is($r->{rc}, 0, 'stop exits 0') or diag $r->{err};

# ---- rocm-smi, for ROCm without amd-smi -------------------------------------------

my $rocm_smi = "$dir/fake-rocm-smi";
DsTest::_write($rocm_smi, <<'EOF');
#!/bin/sh
# test double: rocm-smi (ROCm 6) on a host with one MI300X
case "$*" in
*--showproductname*--json*)
    echo '{"card0": {"Card Series": "AMD Instinct MI300X OAM",'
    echo '  "Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",'
    echo '  "VRAM Total Memory (B)": "206141652992"}}' ;;
*) exit 1 ;;
esac
EOF
chmod 0755, $rocm_smi;

$c->stop_controld;
$c->start_controld(extra => <<"EOF");
backends:
  local:
    nvidia_smi: $dir/no-such-nvidia-smi
    amd_smi: $dir/no-such-amd-smi
    rocm_smi: $rocm_smi
EOF
like($c->controld_log,
    qr/GPU 0: AMD Instinct MI300X OAM \(MI300X\), 196592 MB/,
    'without amd-smi, controld found the AMD GPU with rocm-smi');
$r = $c->cli(['offer', '-f', 'nvidia.dstack.yml'], dir => $app);
like($r->{err}, qr/no GPU of the host matches nvidia:1; the host has MI300X:192GB:1$/m,
    'and offers it');

$c->finish;
$t->done;
