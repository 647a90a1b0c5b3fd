#!/usr/bin/perl
# The cluster's keys in shared mode (#14): secrets.key and the local CA
# are files of each controller's state_dir.  The first leader publishes
# their identity (a key id derived from secrets.key, the CA's SHA-256);
# a second controller without those files does not take over when the
# leader is killed (the service keeps answering through the gateway, its
# log says why and what to do, its dstack_instances row says "keys
# differ", it makes no key, the gateway certificate stays the one the
# clients trust, nothing is published); --keys-export on the first and
# --keys-import on the second: the second takes over at the next kill,
# and a secret set before resolves for a replica started after (its env,
# served through the gateway).  Bad import files are refused with where
# and why, changing nothing; other keys are replaced only with --force.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsPg;
use DsShared;
use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path);
use MIME::Base64 qw(decode_base64);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

my $LEASE = 2;                          # seconds: the tests wait on it

# the controlds: one directory each, one replicas_dir
my ($t, $pg, $sh) = DsShared::cluster(lease => $LEASE,
    password => 'pw-never-logged');
my $dir = $t->dir;
my $domain = $t->domain;

sub setting {
    my $k = shift;
    return scalar $pg->value("select convert_from(value, 'UTF8') from "
        . "dstack_records where db = 5 and key = '$k'::bytea");
}

# the local certificate for *.<domain> as published, PEM
sub published_cert {
    my $b64 = join '', $pg->rows("select encode(value, 'base64') from "
        . "dstack_records where db = 7 and key = '*.$domain'::bytea");
    my $raw = decode_base64($b64);
    my ($pem) = $raw =~ /(-----BEGIN\ CERTIFICATE-----.*?
                           -----END\ CERTIFICATE-----\n?)/sx;
    return $pem // '';
}

sub verifies {
    my ($pem, $ca) = @_;
    my $f = "$dir/leaf-" . int(rand(1e9)) . '.pem';
    DsTest::_write($f, $pem);
    my ($rc, $out) = DsTest::_run(['openssl', 'verify', '-CAfile', $ca, $f]);
    return $rc == 0 && $out =~ /: OK/;
}

sub files_of {
    my $s = shift;
    return join '|', map { -e "$s/$_" ? sha256_hex(DsTest::_slurp("$s/$_"))
        : 'none' } qw(secrets.key tls/ca.key tls/ca.crt);
}

# ---- the first controller: keys made, their identity published ----------

$sh->start('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a' }, timeout => 10),
    'the first controller leads');
ok(DsTest::wait_until(sub { -S "$dir/ctl-a/api.sock"
    && -s "$dir/ctl-a/client.yml" }, timeout => 10), 'and serves its API');
$sh->admin_token('ctl-a');           # the one api_of's DsStacks use
my $sa_dir = "$dir/ctl-a/state";
ok(DsTest::wait_until(sub { defined setting('cluster.ca_id') }, timeout => 5),
    'it publishes the identity of its keys');
my $key = DsTest::_slurp("$sa_dir/secrets.key");
is(setting('cluster.secrets_key_id'),
    sha256_hex("dstack secrets.key id" . $key),
    'the key id: a SHA-256 derived from secrets.key');
my ($rc0, $der) = DsTest::_run(['sh', '-c', "openssl x509 -in "
    . "$sa_dir/tls/ca.crt -outform der | sha256sum"]);
my ($ca_fp) = $der =~ /^([0-9a-f]{64})/;
is(setting('cluster.ca_id'), $ca_fp, 'the CA\'s: its SHA-256 fingerprint');
my $key_hex = unpack('H*', $key);
is(scalar $pg->rows("select 1 from dstack_records where position("
    . "'\\x$key_hex'::bytea in value) > 0"), 0,
    'the key itself is in no record');
like($sh->log_text('ctl-a'),
    qr/keys: published this cluster's keys: secrets.key id [0-9a-f]{12}\.\./,
    'and says so');

$sh->gw_start;
$t->start;
my $cert0 = published_cert();
ok(verifies($cert0, "$sa_dir/tls/ca.crt"),
    'the gateway certificate is signed by the first controller\'s CA');

# a secret, and a service whose replica shows it
my $sa = $sh->api_of('ctl-a');
my $value = 'sv-' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 20);
my $r = $sa->api('POST', '/api/secrets/set', json => { name => 'tok',
    value => $value });
is($r->{status}, 201, 'a secret set through the leader') or diag $r->{body};

sub env_spec {
    my $p = $sa->network eq 'netns' ? 8000 : DsTest::free_port();
    return $sa->app_spec(port => $p, env => { TOK => '${{ secrets.tok }}' },
        commands => ["printf '%s' \"\$TOK\" > index.html",
                     "exec python3 -m http.server $p"]);
}
$r = $sa->apply(env_spec(), name => 'web');
is($r->{status}, 201, 'a service naming it: 201') or diag $r->{body};
ok(DsTest::wait_until(sub { ($sh->gw_get('web')->{body} // '') eq $value },
    timeout => 60, interval => 0.2),
    'its replica has the value, served through the gateway');

# ---- a controller without the keys ---------------------------------------

$sh->start('ctl-b');
my $sb_dir = "$dir/ctl-b/state";
my $why = "keys: this controller does not compete for leadership: "
    . "secrets.key in $sb_dir is missing (key id "
    . substr(setting('cluster.secrets_key_id'), 0, 12) . ".. expected, none "
    . "here); the CA in $sb_dir/tls is missing";
ok(DsTest::wait_until(sub { index($sh->log_text('ctl-b'), $why) >= 0 },
    timeout => 5), 'a controller without the keys says why at its start')
    or diag $sh->log_text('ctl-b');
like($sh->log_text('ctl-b'),
    qr/--keys-export FILE there, dstack-controld --keys-import FILE here/,
    'and what to do');
ok(DsTest::wait_until(sub { ($pg->value("select role from dstack_instances "
    . "where instance = 'ctl-b'") // '') eq 'controller (keys differ)' },
    timeout => 5), 'its dstack_instances row says "keys differ"');

my $rev = $pg->value('select rev from dstack_leader');
my $term = $pg->value('select term from dstack_leader');
kill 'KILL', $sh->pid('ctl-a');
$sh->wait_exit('ctl-a');
sleep $LEASE + 3;
is($pg->value('select term from dstack_leader'), $term,
    'the leader killed: the controller without the keys does not lead');
is($pg->value('select rev from dstack_leader'), $rev, 'nothing published');
ok(waitpid($sh->pid('ctl-b'), WNOHANG) == 0,
    'it keeps running, a follower');
ok($pg->value("select rev from dstack_instances where instance = 'ctl-b'")
    == $rev, 'mirroring the last revision');
ok(!-e "$dir/ctl-b/api.sock", 'no API there');
ok(!-e "$sb_dir/secrets.key" && !-e "$sb_dir/tls/ca.key",
    'and it made no key');
is(published_cert(), $cert0, 'the gateway certificate is the same');
is($sh->gw_get('web')->{status}, 200,
    'the service keeps answering through the gateway');
my @said = $sh->log_text('ctl-b') =~ /(does not compete for leadership)/g;
is(scalar @said, 1, 'the reason is said once');

# ---- bad imports change nothing ------------------------------------------

my $good = "$dir/cluster.keys";
my ($rc, $err) = $sh->keys_cmd('ctl-a', '--keys-export', $good);
is($rc, 0, '--keys-export on the first controller: exit 0') or diag $err;
is((stat $good)[2] & 07777, 0600, 'the file is 0600');
my $text = DsTest::_slurp($good);
unlike($text, qr/\Q$value\E/, 'it holds no secret value');
($rc, $err) = $sh->keys_cmd('ctl-a', '--keys-export', $good);
is($rc, 1, 'an existing file is not overwritten');
like($err, qr/File exists \(--force replaces it\)/, 'saying why');

my $before = files_of($sb_dir);
my @bad = (
    ['not keys', "hello\n", qr/line 1: not "dstack-controld keys 1"/],
    ['no secrets key', join('', $text =~ /\A(.*?\n)-----BEGIN DSTACK/s)
        . join('', $text =~ /(-----BEGIN PRIVATE KEY-----.*)\z/s),
        qr/no DSTACK SECRETS KEY block/],
    ['a damaged block',
        $text =~ s/^(-----BEGIN PRIVATE KEY-----\n)..../$1AAAA/mr,
        qr/block 2 \(PRIVATE KEY\): not a private key/],
    ['a short key',
        $text =~ s/(-----BEGIN DSTACK SECRETS KEY-----\n)[^\n]+/$1AAAA/r,
        qr/block 1 \(DSTACK SECRETS KEY\): 3 bytes, not 32/],
    ['an unknown block',
        $text . "-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n",
        qr/block 4 \(FOO\): not one of/],
    ['a header of other keys',
        $text =~ s/^ca id: ([0-9a-f])/'ca id: ' . ($1 eq '0' ? 1 : 0)/mer,
        qr/its header says ca id: .* a damaged file/],
);
for my $b (@bad) {
    my $f = "$dir/bad.keys";
    DsTest::_write($f, $b->[1]);
    ($rc, $err) = $sh->keys_cmd('ctl-b', '--keys-import', $f);
    is($rc, 1, "--keys-import of $b->[0]: exit 1");
    like($err, qr/^dstack-controld: --keys-import \Q$f\E: /, 'naming the file');
    like($err, $b->[2], 'and why') or diag $err;
    like($err, qr/nothing was changed/, 'saying nothing changed');
}
($rc, $err) = $sh->keys_cmd('ctl-b', '--keys-import', "$dir/none.keys");
is($rc, 1, 'a missing file: exit 1');
like($err, qr/none\.keys: No such file or directory; nothing was changed/,
    'saying why');
my $big = "$dir/big.keys";
DsTest::_write($big, $text . ('#' x 65536));
for my $f ([$dir, 'a directory'], [$big, 'a file over 64 KiB']) {
    ($rc, $err) = $sh->keys_cmd('ctl-b', '--keys-import', $f->[0]);
    is($rc, 1, "$f->[1]: exit 1");
    like($err, qr/\Q$f->[0]\E: not a regular file of at most 65536 bytes; /,
        'saying why') or diag $err;
}
is(files_of($sb_dir), $before, 'none of them changed a file');

# other keys are not replaced unless told
make_path("$dir/other/state");
DsTest::_write("$dir/other/state/secrets.key", 'x' x 32);
chmod 0600, "$dir/other/state/secrets.key";
$sh->conf('other');
my $o_before = files_of("$dir/other/state");
($rc, $err) = $sh->keys_cmd('other', '--keys-import', $good);
is($rc, 1, 'other keys in state_dir: refused');
my $other = 'has other keys \([0-9a-f]{12}\.\. here, [0-9a-f]{12}\.\. in '
    . 'the file\): nothing was changed; --force replaces them';
like($err, qr/$other/,
    'saying which and how') or diag $err;
is(files_of("$dir/other/state"), $o_before, 'nothing changed');
($rc, $err) = $sh->keys_cmd('other', '--keys-import', $good, '--force');
is($rc, 0, 'with --force: replaced') or diag $err;
is(files_of("$dir/other/state"), files_of($sa_dir), 'the same files now');

# ---- imported: it leads at the next kill ---------------------------------

$sh->start('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a'
    && $pg->value('select term from dstack_leader') > $term },
    timeout => 10), 'the first controller, restarted, leads again');
($rc, $err) = $sh->keys_cmd('ctl-b', '--keys-import', $good);
is($rc, 0, '--keys-import on the second (running): exit 0') or diag $err;
my $imp = "imported into \Q$sb_dir\E: secrets.key \\(key id "
    . '[0-9a-f]{12}\.\.\) and the CA';
like($err, qr/$imp/,
    'saying what');
is(files_of($sb_dir), files_of($sa_dir), 'its files are the first\'s');
is((stat "$sb_dir/secrets.key")[2] & 07777, 0600, 'secrets.key 0600');
is((stat "$sb_dir/tls/ca.key")[2] & 07777, 0600, 'ca.key 0600');
ok(DsTest::wait_until(sub { $sh->log_text('ctl-b')
    =~ /are now this cluster's: this controller may lead/ },
    timeout => 5), 'the second sees it may lead');
ok(DsTest::wait_until(sub { ($pg->value("select role from dstack_instances "
    . "where instance = 'ctl-b'") // '') eq 'controller' }, timeout => 5),
    'its row says controller again');
($rc, $err) = $sh->keys_cmd('ctl-b', '--keys-import', $good);
is($rc, 0, 'importing the same keys again: exit 0');
like($err, qr/already has these keys/, 'nothing to do');

kill 'KILL', $sh->pid('ctl-a');
my $t0 = time;
$sh->wait_exit('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-b' }, timeout => 10,
    interval => 0.05), 'kill -9 of the leader: the second takes over');
diag(sprintf('takeover after kill -9: %.2f s', time - $t0));
my $sb = $sh->api_of('ctl-b');
ok(DsTest::wait_until(sub { -S "$dir/ctl-b/api.sock" }, timeout => 5),
    'and serves the API');
$r = $sb->apply(env_spec(), name => 'late');
is($r->{status}, 201, 'a new service naming the secret: 201')
    or diag $r->{body};
ok(DsTest::wait_until(sub { ($sh->gw_get('late')->{body} // '') eq $value },
    timeout => 60, interval => 0.2),
    'the secret set before the takeover resolves for its replica')
    or diag $sh->log_text('ctl-b');
ok(verifies(published_cert(), $t->dir . "/ctl-a/state/tls/ca.crt"),
    'the gateway certificate is signed by the CA the clients trust');
unlike($sh->log_text('ctl-b'), qr/made a key|made a private CA/,
    'the new leader made no key');
unlike($sh->log_text($_), qr/pw-never-logged/, "$_ never logs the password")
    for qw(ctl-b gw);

# ---- the end -------------------------------------------------------------

for my $run (qw(web late)) {
    $r = $sb->stop($run, abort => 1);
    is($r->{status}, 200, "stop $run");
}
ok(DsTest::wait_until(sub { !$sb->run_pids('web') && !$sb->run_pids('late') },
    timeout => 20), 'the replicas are gone');
is($sh->stop($_), 0, "$_: SIGTERM, exit 0") for $sh->names;

$pg->stop;
$t->allow_log(qr/connect\(\) failed/, qr/no live upstreams/);
$t->done;

