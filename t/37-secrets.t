#!/usr/bin/perl
# Secrets end to end: real dstack-controld, real nginx with the module,
# real replicas, dstackctl.
#
# dstackctl secret set (argument, "-" and a pipe), list, get, delete; the
# key file is 0600 and survives a restart of controld; a service whose
# env names ${{ secrets.X }} gets the values in its environment (and "$$"
# is one "$"); the values are in no log (controld's, nginx's), not in
# data.mdb's bytes, ps --json, the run's API view, nor a replica's or
# controld's command line; a spec naming a secret that does not exist is
# refused at plan and apply with a message, and nothing changes; a
# malformed reference is a validation error naming the variable; bad
# names and oversized values are 400s naming the field (and CLI errors);
# an updated secret reaches the next replica; a deleted one fails the
# next replica with a clear reason while the running one keeps its env;
# a key file others may read is refused at start.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use DsSec;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(sleep);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t);
$c->start_controld;
$t->start;
my $admin = $c->admin_token;
my $sock = $c->api_socket;

# values that a leak would show: distinctive, never typed elsewhere
my $v1 = 'hf_' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);
my $v2 = 'pw-' . join('', map { ('A' .. 'Z')[rand 26] } 1 .. 20);
my $v3 = 'hf2_' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);

sub api {
    my ($method, $path, %o) = @_;
    return DsSec::api($t, $method, $path, via => $sock, token => $admin, %o);
}

sub api_json {
    my $res = shift;
    return eval { decode_json($res->{body}) } // {};
}

# ---- the key ----------------------------------------------------------------

my $key = $t->state . '/secrets.key';
ok(-f $key, 'controld made secrets.key at its first start');
is((stat $key)[2] & 07777, 0600, 'secrets.key is 0600');
is(-s $key, 32, 'secrets.key holds 32 bytes (AES-256)');

# ---- set, list, get ---------------------------------------------------------

my $r = $c->cli(['secret', 'set', 'HF_TOKEN', $v1]);
is($r->{rc}, 0, 'secret set NAME VALUE exits 0') or diag $r->{err};
is($r->{out}, "OK\n", 'and says OK, as dstack');

$r = $c->cli(['secret', 'set', 'db-pass', '-'], stdin => "$v2\n");
is($r->{rc}, 0, 'secret set NAME - reads stdin') or diag $r->{err};

$r = $c->cli(['secret', 'set', 'piped'], stdin => "from a pipe\n");
is($r->{rc}, 0, 'secret set NAME with a pipe on stdin') or diag $r->{err};

$r = $c->cli(['secret', 'get', 'db-pass', '--json']);
is($r->{rc}, 0, 'secret get --json exits 0') or diag $r->{err};
my $j = eval { decode_json($r->{out}) } // {};
is($j->{value}, $v2, 'the value read from stdin, its newline dropped');
$r = $c->cli(['secret', 'get', 'piped', '--json']);
$j = eval { decode_json($r->{out}) } // {};
is($j->{value}, 'from a pipe', 'a value without "-" when stdin is a pipe');

$r = $c->cli(['secret', 'get', 'HF_TOKEN']);
is($r->{rc}, 0, 'secret get exits 0');
like($r->{out}, qr/^ NAME\s+VALUE$/m, 'secret get: a table as dstack');
like($r->{out}, qr/^ HF_TOKEN\s+\Q$v1\E$/m, 'with the value');

$r = $c->cli(['secret', 'list']);
is($r->{rc}, 0, 'secret list exits 0');
like($r->{out}, qr/^ NAME\s+CREATED\s+UPDATED$/m, 'secret list: its header');
like($r->{out}, qr/^ HF_TOKEN\s+now\s+now$/m, 'a row per secret');
like($r->{out}, qr/^ db-pass\s/m, 'names with "-"');
unlike($r->{out}, qr/\Q$v1\E|\Q$v2\E/, 'list shows no value');

$r = $c->cli(['secret', 'list', '--json']);
my $list = eval { decode_json($r->{out}) } // [];
is_deeply([ sort map { $_->{name} } @$list ], [ 'HF_TOKEN', 'db-pass',
    'piped' ], 'secret list --json: the names');
ok(!(grep { exists $_->{value} } @$list), 'and no values');

$r = $c->cli(['secret', 'get', 'NOPE']);
is($r->{rc}, 1, 'secret get of no secret: exit 1');
like($r->{err}, qr/^dstackctl: secret "NOPE" not found$/m, 'and says so');

# ---- bad input: the CLI and the API -----------------------------------------

$r = $c->cli(['secret', 'set', 'bad.name', 'x']);
is($r->{rc}, 2, 'an invalid name: a usage error');
like($r->{err}, qr/invalid secret name "bad\.name"/, 'naming it');
$r = $c->cli(['secret', 'set', 'BIG', '-'], stdin => 'x' x 70000);
is($r->{rc}, 2, 'a value over 64 KiB: refused by the CLI');
like($r->{err}, qr/longer than 64 KiB/, 'saying so');
$r = $c->cli(['secret', 'set', 'X']);
is($r->{rc}, 0, 'no VALUE with an empty pipe: the empty value')
    or diag $r->{err};
$r = $c->cli(['secret', 'delete', 'X']);
is($r->{rc}, 2, 'delete without a terminal and without -y: refused');
like($r->{err}, qr/use -y/, 'saying to use -y');
$r = $c->cli(['secret', 'delete', 'X', '-y']);
is($r->{rc}, 0, 'delete -y exits 0') or diag $r->{err};

my $res = api('POST', '/api/secrets/set',
    json => { name => 'a/b', value => 'x' });
is($res->{status}, 400, 'API: a bad name is 400');
like(api_json($res)->{error}{message} // '',
    qr/^name: "a\/b" is not a valid secret name/, 'naming the field');
$res = api('POST', '/api/secrets/set',
    json => { name => 'BIG', value => 'y' x 65537 });
is($res->{status}, 400, 'API: a value over 64 KiB is 400');
like(api_json($res)->{error}{message} // '',
    qr/^value: 65537 bytes, more than the 65536/, 'naming the field');
$res = api('POST', '/api/secrets/set', json => { name => 'A', value => 1 });
is($res->{status}, 400, 'API: a value not a string is 400');
$res = api('POST', '/api/secrets/set',
    json => { name => 'A', value => 'x', extra => 1 });
like(api_json($res)->{error}{message} // '', qr/unknown field "extra"/,
    'API: an unknown field is 400 naming it');
$res = api('GET', '/api/secrets/set');
is($res->{status}, 405, 'API: GET of set is 405');
$res = DsSec::api($t, 'GET', '/api/secrets', via => $sock);
is($res->{status}, 401, 'API: without a token, 401');
$r = $c->cli(['secret', 'list', '--json']);
my $after = eval { decode_json($r->{out}) } // [];
is(scalar @$after, 3,
    'nothing was added by the refused calls');

# ---- a restart keeps them ---------------------------------------------------

$c->stop_controld;
$c->start_controld;
$r = $c->cli(['secret', 'get', 'HF_TOKEN', '--json']);
$j = eval { decode_json($r->{out}) } // {};
is($j->{value}, $v1, 'after a restart of controld the value reads back');

# ---- malformed references ---------------------------------------------------

my %bad = (
    'secret.X'   => '${{ secret.X }}',
    'secrets.'   => '${{ secrets. }}',
    'unterminated' => '${{ secrets.HF_TOKEN',
);
for my $what (sort keys %bad) {
    my $dir = $c->app_dir("bad-$what", { 'svc.dstack.yml' => <<"EOF" });
type: service
name: sec-bad
port: 8000
env:
  - HF_TOKEN=$bad{$what}
commands:
  - exec python3 -m http.server 8000
EOF
    $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '-d'], dir => $dir);
    is($r->{rc}, 1, "a malformed reference ($what): refused")
        or diag $r->{err};
    like($r->{err},
        qr/svc\.dstack\.yml:5:\d+: env\.HF_TOKEN: (invalid|unterminated) /,
        "($what) the message names the place and the variable");
}
$res = api('POST', '/api/runs/plan', json => { spec => { type => 'service',
    port => 8000, commands => ['true'],
    env => { HF_TOKEN => '${{ secret.X }}' } } });
is($res->{status}, 400, 'API: a malformed reference is 400');
like(api_json($res)->{error}{message} // '',
    qr/^spec\.env\.HF_TOKEN: invalid reference "\$\{\{ secret\.X \}\}"/,
    'naming spec.env.HF_TOKEN');

# ---- a secret that does not exist -------------------------------------------

my $missing = $c->app_dir('missing', { 'svc.dstack.yml' => <<'EOF' });
type: service
name: sec-missing
port: 8000
auth: false
env:
  - HF_TOKEN=${{ secrets.NOPE }}
commands:
  - exec python3 -m http.server 8000
EOF
$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '-d'], dir => $missing,
    timeout => 60);
is($r->{rc}, 1, 'apply naming no secret: exit 1');
like($r->{err},
    qr/env\.HF_TOKEN: secret "NOPE" does not exist \(dstackctl secret set NOPE/,
    'the message names the variable, the secret and the fix');
$res = api('POST', '/api/runs/plan', json => { spec => { type => 'service',
    port => 8000, commands => ['true'],
    registry_auth => { username => 'u',
        password => '${{ secrets.NOPE }}' } } });
is($res->{status}, 400, 'plan naming no secret in registry_auth: 400');
like(api_json($res)->{error}{message} // '',
    qr/^spec\.registry_auth\.password: secret "NOPE" does not exist/,
    'naming the field');
is($c->run_named('sec-missing'), undef, 'and no run was made');

# ---- a service that uses them -----------------------------------------------

my $app = $c->app_dir('app', {
    'svc.dstack.yml' => <<'EOF',
type: service
name: sec-app
port: 8000
auth: false
env:
  - HF_TOKEN=${{ secrets.HF_TOKEN }}
  - URL=postgres://app:${{secrets.db-pass}}@db/x
  - LITERAL=a$$b-$${{ secrets.HF_TOKEN }}
  - PLAIN=$HOME
commands:
  - printf '%s|%s|%s|%s' "$HF_TOKEN" "$URL" "$LITERAL" "$PLAIN" > index.html
  - exec python3 -m http.server 8000
EOF
});
$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '-d'], dir => $app,
    timeout => 60);
is($r->{rc}, 0, 'apply of a service naming secrets exits 0')
    or diag $r->{err};

sub body_is {
    my ($want, $what) = @_;
    my $got = '';
    DsTest::wait_until(sub {
        my $res = $t->get('sec-app', '/');
        $got = $res->{status} == 200 ? $res->{body} : '';
        $got eq $want;
    }, timeout => 60, interval => 0.2);
    is($got, $want, $what);
}
body_is("$v1|postgres://app:$v2\@db/x|a\$b-\${{ secrets.HF_TOKEN }}|\$HOME",
    'the replica has the values in its environment ("$$" is "$")');

my $run = $c->run_named('sec-app');
my @pids = grep { $_ } map { $_->{pid} } @{ $run->{replicas} || [] };
ok(@pids, 'the replica has a pid');
my $environ = DsTest::_slurp("/proc/$pids[0]/environ") // '';
like($environ, qr/(^|\0)HF_TOKEN=\Q$v1\E\0/,
    'the value is in the replica process\'s environment');

# ---- where the values must not be -------------------------------------------

sub nowhere {
    my ($what) = @_;
    my %places = (
        'controld\'s log' => $c->controld_log,
        'nginx\'s error log' => $t->error_log,
        'nginx\'s access log' => $t->access_log,
        'ps --json' => $c->cli(['ps', '-a', '--json'])->{out},
        'the run\'s API view' => api('GET', '/api/runs/sec-app')->{body},
        'the runs\' API view' => api('GET', '/api/runs?all=1')->{body},
        'data.mdb' => DsTest::_slurp($t->state . '/data.mdb'),
        'controld\'s command line' =>
            DsTest::_slurp('/proc/' . $c->controld_pid . '/cmdline'),
    );
    my $rn = $c->run_named('sec-app');
    for my $p (grep { $_ } map { $_->{pid} } @{ $rn->{replicas} || [] }) {
        $places{"replica $p\'s command line"} =
            DsTest::_slurp("/proc/$p/cmdline") // '';
    }
    # and every other process of this machine
    $places{'any command line'} = join "\0",
        map { DsTest::_slurp($_) // '' } glob '/proc/[0-9]*/cmdline';
    for my $place (sort keys %places) {
        my $text = $places{$place} // '';
        ok(index($text, $v1) < 0 && index($text, $v2) < 0
            && index($text, $v3) < 0, "$what: no value in $place");
    }
}
nowhere('running');
like(api('GET', '/api/runs/sec-app')->{body},
    qr/"HF_TOKEN":"\$\{\{ secrets\.HF_TOKEN \}\}"/,
    'the run\'s spec keeps the reference');

# ---- updated: the next replica gets the new value ---------------------------

$r = $c->cli(['secret', 'set', 'HF_TOKEN', $v3]);
is($r->{rc}, 0, 'secret set of an existing secret exits 0');
$r = $c->cli(['secret', 'list', '--json']);
my $now = eval { decode_json($r->{out}) } // [];
my ($hf) = grep { $_->{name} eq 'HF_TOKEN' } @$now;
ok($hf && $hf->{updated} >= $hf->{created}, 'its update time is kept');
body_is("$v1|postgres://app:$v2\@db/x|a\$b-\${{ secrets.HF_TOKEN }}|\$HOME",
    'the running replica keeps the value it started with');
kill 'KILL', $pids[0];
body_is("$v3|postgres://app:$v2\@db/x|a\$b-\${{ secrets.HF_TOKEN }}|\$HOME",
    'the replica started again gets the new value');

# ---- deleted: the running replica keeps it, the next one fails --------------

$r = $c->cli(['secret', 'delete', 'HF_TOKEN', '-y']);
is($r->{rc}, 0, 'secret delete exits 0') or diag $r->{err};
is($r->{out}, "OK\n", 'and says OK');
$r = $c->cli(['secret', 'delete', 'HF_TOKEN', '-y']);
is($r->{rc}, 1, 'deleting it again: exit 1');
like($r->{err}, qr/secret "HF_TOKEN" not found/, 'and says so');
body_is("$v3|postgres://app:$v2\@db/x|a\$b-\${{ secrets.HF_TOKEN }}|\$HOME",
    'the running replica keeps serving with its environment');

$run = $c->run_named('sec-app');
@pids = grep { $_ } map { $_->{pid} } @{ $run->{replicas} || [] };
kill 'KILL', $pids[0] if @pids;
my $msg = '';
ok(DsTest::wait_until(sub {
    my $rn = $c->run_named('sec-app') or return 0;
    $msg = join "\n", $rn->{message} // '',
        map { $_->{message} // '' } @{ $rn->{replicas} || [] };
    $msg =~ /env\.HF_TOKEN: secret "HF_TOKEN" does not exist/;
}, timeout => 30, interval => 0.2),
    'the next replica fails: the secret does not exist') or diag $msg;
like($msg, qr/dstackctl secret set HF_TOKEN \.\.\./, 'saying how to fix it');

nowhere('at the end');

$r = $c->cli(['stop', '-x', '-y', 'sec-app'], timeout => 60);
is($r->{rc}, 0, 'stop -x exits 0') or diag $r->{err};

# ---- a key others may read is refused ---------------------------------------

$c->stop_controld;
chmod 0644, $key;
my $ok = eval { $c->start_controld; 1 };
ok(!$ok, 'controld refuses to start with secrets.key 0644');
like($@ // '', qr/secrets: .*secrets\.key: mode 644.*chmod 600/,
    'and says why');
chmod 0600, $key;
$c->start_controld;
$r = $c->cli(['secret', 'get', 'db-pass', '--json']);
$j = eval { decode_json($r->{out}) } // {};
is($j->{value}, $v2, 'with the mode fixed it starts and reads them');

$c->finish;
$t->done;
