#!/usr/bin/perl
# How dstackctl apply behaves around the follow, against real controld
# and nginx: the prompt and live status on a terminal, the answer "n",
# Ctrl-C detaching (the run keeps running), a run that fails, no offer
# for the resources, the seed's "run DIR -f FILE" spelling, a model's
# published line.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t);
$c->start_controld;
$t->start;
my $domain = $t->domain;
my $port = $t->port;
my $have_script = system('script --version >/dev/null 2>&1') == 0;

my $app = $c->app_dir('app', {
    'quick.dstack.yml' => <<'EOF',
type: service
port: 8000
commands:
  - exec python3 -m http.server 8000
EOF
    'slow.dstack.yml' => <<'EOF',
type: service
name: slow
port: 8000
commands:
  - sleep 5
  - exec python3 -m http.server 8000
EOF
    'fails.dstack.yml' => <<'EOF',
type: service
name: fails
port: 8000
commands:
  - echo "about to fail" >&2
  - exit 3
EOF
    'huge.dstack.yml' => <<'EOF',
type: service
name: huge
port: 8000
commands:
  - exec python3 -m http.server 8000
resources:
  gpu: H100:80GB:64
EOF
    'model.dstack.yml' => <<'EOF',
type: service
name: chat
port: 8000
commands:
  - exec python3 -m http.server 8000
model:
  name: tiny-model
  format: openai
  type: chat
probes:
  - type: http
    url: /
EOF
});

# ---- a terminal: the prompt, "n", then "y" with live status ---------------

SKIP: {
    skip 'script(1) is not installed', 6 unless $have_script;

    my $r = $c->cli(['apply', '-f', 'quick.dstack.yml', '-n', 'quick'],
        dir => $app, tty => 1, stdin => "n\n");
    is($r->{rc}, 0, 'answering n exits 0');
    like($r->{out}, qr/Submit the run quick\? \[y\/n\]: /,
        'the prompt on a terminal');
    is($c->run_named('quick'), undef, 'n submits nothing');

    $r = $c->cli(['apply', '-f', 'quick.dstack.yml', '-n', 'quick'],
        dir => $app, tty => 1, stdin => "y\n", timeout => 90);
    is($r->{rc}, 0, 'answering y submits and follows') or diag $r->{out};
    like($r->{out}, qr/\r\e\[K[|\/\\-] quick  /,
        'a live status line on a terminal');
    like($r->{out}, qr/Service is published at:\n  http:\/\/quick\.\Q$domain\E:$port\n/,
        'then the published URL');
}

# ps -w redraws on a terminal; stop asks there
SKIP: {
    skip 'script(1) is not installed', 5 unless $have_script;

    my $bg = $c->cli_bg(['ps', '-w'], tty => 1);
    sleep 2.5;
    kill 'INT', -$bg->{pid};
    my $r = $c->reap($bg);
    my $frames = () = $r->{out} =~ /\e\[H\e\[2J NAME /g;
    cmp_ok($frames, '>=', 2, 'ps -w redraws every second') or diag $r->{out};
    like($r->{out}, qr/^ quick\s+local\s/m, 'with the runs');

    $r = $c->cli(['stop', 'quick'], tty => 1, stdin => "n\n");
    is($r->{rc}, 0, 'stop answered n exits 0');
    like($r->{out}, qr/Stop the run quick\? \[y\/n\]: /, 'stop asks first');
    is($c->run_named('quick')->{status}, 'running', 'n stops nothing');
}

# ---- Ctrl-C while following detaches ---------------------------------------

my $bg = $c->cli_bg(['apply', '-f', 'slow.dstack.yml', '-y'], dir => $app);
ok(DsTest::wait_until(sub { DsTest::_slurp($bg->{out}) =~ /^Run slow submitted$/m },
    timeout => 30), 'the slow run is submitted');
kill 'INT', $bg->{pid};
my $r = $c->reap($bg);
is($r->{rc}, 0, 'Ctrl-C while following exits 0');
like($r->{out}, qr/^Detached: the run slow keeps running \(dstackctl ps to watch it, dstackctl stop slow to stop it\)$/m,
    'and says the run keeps running');
my $run = $c->run_named('slow');
ok($run && $run->{status} !~ /^(terminat|failed|done)/,
    'the run was not stopped') or diag explain $run;

# ---- a run that fails -----------------------------------------------------------

$r = $c->cli(['apply', '-f', 'fails.dstack.yml', '-y'], dir => $app,
    timeout => 120);
is($r->{rc}, 1, 'a run whose replicas cannot run: exit 1');
like($r->{err}, qr/^dstackctl: run "fails" failed.*\(see dstackctl logs fails\)$/m,
    'says it failed and where to look');
$r = $c->cli(['logs', 'fails']);
like($r->{out}, qr/about to fail/, 'logs show why');

# ---- no offer ---------------------------------------------------------------------

$r = $c->cli(['apply', '-f', 'huge.dstack.yml', '-y'], dir => $app);
is($r->{rc}, 1, 'no offer: exit 1');
like($r->{err}, qr/^dstackctl: .*gpu/mi, 'the message names the requirement');
is($c->run_named('huge'), undef, 'nothing was submitted');
$r = $c->cli(['offer', '-f', 'huge.dstack.yml'], dir => $app);
is($r->{rc}, 1, 'offer with no offer: exit 1');
like($r->{err}, qr/^dstackctl: .*gpu/mi, 'with the same kind of message');

# ---- run DIR -f FILE, and a model -------------------------------------------------

# this one talks to the API through nginx (http://, not the socket), as
# a user away from the gateway host does; the code upload goes that way
$r = $c->cli(['run', $app, '-f', "$app/model.dstack.yml", '-y'],
    timeout => 90, env => $c->via_nginx);
is($r->{rc}, 0, 'run DIR -f FILE through nginx exits 0')
    or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/^ Model\s+tiny-model$/m, 'the plan names the model');
like($r->{out}, qr/^Service is published at:\n  http:\/\/chat\.\Q$domain\E:$port\nModel tiny-model is published at:\n  http:\/\/gateway\.\Q$domain\E:$port\/v1\n/m,
    'the service and the model endpoint are published');
my $res = $t->get('gateway', '/v1/models',
    headers => { Authorization => 'Bearer ' . $c->admin_token });
like($res->{body}, qr/tiny-model/, 'the gateway lists the model');

$c->finish;
$t->done;
