#!/usr/bin/perl
# dstack-controld's configuration and first start: -n checks a file and
# reports errors as file:line:col: message; the first start creates the
# state, the admin token in the client configuration (0600), never on a log;
# a world-writable state directory is refused; a restart keeps the token;
# SIGHUP reloads; conf/controld.yml itself passes -n.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
my $d = $s->dir;

# ---- -n ------------------------------------------------------------------------

my ($rc, $out, $f) = $s->check_conf($s->conf_text);
is($rc, 0, '-n: a good configuration exits 0') or diag $out;
like($out, qr/configuration OK/, '-n says so');

# The shipped file names the group the install step creates (dstack):
# where it does not exist yet, -n must say so by name; with it swapped for
# one that exists, the rest of the file must pass.
my $shipped = "$DsTest::REPO/conf/controld.yml";
my $text = DsTest::_slurp($shipped);
if (!defined getgrnam('dstack')) {
    ($rc, $out) = $s->check_conf($text, 'shipped');
    isnt($rc, 0, '-n: the shipped group "dstack" is not here: refused');
    like($out, qr/group: no group "dstack"/, '-n names the missing group');
    $text =~ s/^group: dstack$/group: root/m;
}
($rc, $out) = $s->check_conf($text, 'shipped');
is($rc, 0, '-n: conf/controld.yml is valid') or diag $out;

my @bad = (
    ["domain: a.b\nstate_dir: relative/dir\n",
     qr/^dstack-controld: \S+:2:12: state_dir: "relative\/dir" is not an absolute path$/m,
     'a relative path'],
    ["domain: a.b\nstats_dir: /x\n",
     qr/^dstack-controld: \S+:2:1: unknown key "stats_dir"$/m, 'an unknown key'],
    ["state_dir: /x\n",
     qr/^dstack-controld: \S+:1:1: domain: required \(the gateway domain\)$/m,
     'no domain'],
    ["domain: A.B\n",
     qr/^dstack-controld: \S+:1:9: domain: "A.B" is not a lower-case DNS name$/m,
     'an upper-case domain'],
    ["domain: a.b\nbackends:\n  local:\n    network: bridge\n",
     qr/^dstack-controld: \S+:4:14: network: "bridge" is not one of auto, netns, host$/m,
     'a bad network'],
    ["domain: a.b\nbackends:\n  local:\n    subnet: 10.0.0.0/30\n",
     qr/^dstack-controld: \S+:4:13: subnet: "10.0.0.0\/30" is not an IPv4 CIDR with a prefix of 8 to 28 bits$/m,
     'a subnet too small'],
    ["domain: a.b\nbackends:\n  local:\n    stop_grace: soon\n",
     qr/^dstack-controld: \S+:4:17: stop_grace: "soon" is not a duration/m,
     'a bad duration'],
    ["domain: a.b\nbackends:\n  local:\n    log_max_size: lots\n",
     qr/^dstack-controld: \S+:4:19: log_max_size: "lots" is not a size \(e\.g\. 100MB, 1GB; 0: no limit\)$/m,
     'a bad log size'],
    ["domain: a.b\nbackends:\n  aws: {}\n",
     qr/^dstack-controld: \S+:3:3: backends: unknown backend "aws" \(this build has: local, container\)$/m,
     'an unknown backend'],
    ["domain: a.b\nservice_url: http://x\n",
     qr/^dstack-controld: \S+:2:14: service_url: "http:\/\/x" has no \{name\}$/m,
     'a service URL without {name}'],
    ["domain: a.b\ngateway_url: gateway.a.b/\n",
     qr/^dstack-controld: \S+:2:14: gateway_url: "gateway\.a\.b\/" is not an http:\/\/ or https:\/\/ URL without a final "\/"$/m,
     'a gateway URL without a scheme'],
    ["domain: [a\n",
     qr/^dstack-controld: \S+:2:1: /m, 'YAML syntax'],
    ["- a\n- b\n",
     qr/^dstack-controld: \S+:1:1: expected a mapping at the top$/m,
     'not a mapping'],
    ["domain: a.b\nbackends:\n  local:\n    max_failures: 5\n"
     . "    bogus: 1\n",
     qr/^dstack-controld: \S+:5:5: backends.local: unknown key "bogus"$/m,
     'an unknown key, nested: at the key'],
    ["domain: a.b\napi_socket_mode: 0999\n",
     qr/^dstack-controld: \S+:2:18: api_socket_mode: "0999" is not an octal mode$/m,
     'a number read as written'],
    ["domain: a.b\ndomain: c.d\n",
     qr/^dstack-controld: \S+:2:1: duplicate key "domain" \(first at line 1\)$/m,
     'a duplicate key'],
    ["domain: a.b\napi_user: no-such-user-here\n",
     qr/^dstack-controld: \S+:2:11: api_user: no user "no-such-user-here" on this host$/m,
     'an API user that does not exist'],
    ["domain: a.b\ntls:\n  acme:\n    email: x\@y\n",
     qr/^dstack-controld: \S+:4:5: tls.acme.directory: required/m,
     'tls.acme without a directory'],
);
my $i = 0;
for my $b (@bad) {
    my ($text, $re, $name) = @$b;
    ($rc, $out) = $s->check_conf($text, 'bad' . $i++);
    is($rc, 1, "-n: $name: exit 1");
    like($out, $re, "-n: $name: file:line:col: message") or diag $out;
}
{
    my ($rc2, $o2, $e2) = DsTest::_run([DsStack::controld_path(), '-n', '-f',
        "$d/does-not-exist.yml"]);
    is($rc2, 1, '-n: a missing file: exit 1');
    like($e2, qr/does-not-exist\.yml: No such file or directory/,
        'and says so');
}

# ---- a world-writable state directory ----------------------------------------------

mkdir $t->state;
chmod 0777, $t->state;
{
    my ($rc2, $o2, $e2) = DsTest::_run([DsStack::controld_path(), '-d', '-f',
        $s->write_conf]);
    is($rc2, 1, 'a world-writable state directory: exit 1');
    like($e2, qr/state_dir \S+ is world-writable \(mode 777\)/,
        'and says why');
    ok(!-e $t->state . '/data.mdb', 'no state was created there');
}
chmod 0750, $t->state;

# ---- first start ---------------------------------------------------------------------

my $gid = getgrnam('www-data');
$s->start_controld(defined $gid ? (extra => "group: www-data\n") : ());
$t->start;
my $stdout = $s->stdout_text;
my $token = $s->admin_token;
like($token, qr/^dst_[A-Za-z0-9_-]{43}$/,
    'the first start writes the admin token to the client configuration');
like($stdout, qr/created the admin token "admin"; it is in \S+ \(mode 0600\), not shown: stdout is not a terminal/,
    'and says where, not showing it: stdout is a file here (t/42: a '
    . 'terminal)');
unlike($stdout, qr/\Q$token\E/, 'the token is not on stdout');
my $cfg = DsTest::_slurp($s->client_config);
like($cfg, qr{^server: unix:\Q$d\E/api\.sock$}m,
    'client configuration: the server');
is((stat $s->client_config)[2] & 0777, 0600, 'client configuration: mode 0600');
is((stat $t->state . '/data.mdb')[2] & 0777, 0660, 'state files: mode 0660');
is((stat $t->state . '/lock.mdb')[2] & 0777, 0660, 'the lock file: 0660');
ok(!((stat $t->state)[2] & 0002), 'the state directory is not '
    . 'world-writable');
unlike($s->log_text, qr/\Q$token\E/, 'the log never has the token');

my $r = $s->api('GET', '/api/health');
is($r->{status}, 200, 'the API answers with it');
is($r->{json}{domain}, $t->domain, 'health: the domain');
like($r->{json}{network}, qr/^(netns|host)$/, 'health: the network');
is((stat $s->socket_path)[2] & 0777, 0660, 'the API socket: mode 0660');
SKIP: {
    skip 'no group www-data here', 3 unless defined $gid;
    is((stat $t->state)[5], $gid, 'group: the state directory is www-data\'s');
    is((stat $t->state . '/lock.mdb')[5], $gid, 'group: and the lock file');
    is((stat $s->socket_path)[5], $gid, 'group: and the API socket');
}

# ---- restart: the token stays -------------------------------------------------------------

$s->stop_controld;
unlink "$d/controld.stdout";
$s->start_controld(keep_conf => 1);
is($s->stdout_text, '', 'a restart shows no token');
is($s->api('GET', '/api/health', token => $token)->{status}, 200,
    'the first token still works');
is(scalar(() = DsTest::_slurp($s->client_config) =~ /^token:/mg), 1,
    'the client configuration was left alone');

# ---- SIGHUP --------------------------------------------------------------------------------

DsTest::_write("$d/controld.yml",
    $s->conf_text(extra => "backends:\n  local:\n    stop_grace: 3s\n"));
kill 'HUP', $s->pid;
ok(DsTest::wait_until(sub { $s->log_text =~ /configuration reloaded/ }),
    'SIGHUP reloads the configuration');
DsTest::_write("$d/controld.yml", "domain: [broken\n");
kill 'HUP', $s->pid;
ok(DsTest::wait_until(sub {
    $s->log_text =~ /reload: .*controld\.yml:\d+:\d+: .*\(keeping the running configuration\)/
}), 'a broken file on SIGHUP is reported and ignored');
is($s->api('GET', '/api/health')->{status}, 200, 'controld still serves');

$s->finish;
$t->done;
