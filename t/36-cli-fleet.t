#!/usr/bin/perl
# dstackctl and SSH fleets, no server needed: the fleet command's help
# and usage errors (exit 2); fleet files with errors as
# file:line:col: path: message, and identity files that are missing, no
# private key or too big, all refused (exit 1) before anything is sent;
# a valid fleet gets as far as the server, with a warning for a key
# others may read.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use Test::More;

DsCli->require_built('cli');

my $t = DsTest->new;
my $c = DsCli->new($t);
my $dir = $t->dir;

# a server that is not there: anything that reaches the network fails
# with "cannot reach", so a different error proves nothing was sent
my %nowhere = (DSTACK_SERVER => "unix:$dir/nowhere.sock",
    DSTACK_TOKEN => 'x');

# ---- help and usage ------------------------------------------------------

my $r = $c->cli(['--help']);
like($r->{out}, qr/^\s+fleet\s+\S/m, '--help lists fleet');

for my $args (['fleet', '--help'], ['help', 'fleet']) {
    $r = $c->cli($args);
    is($r->{rc}, 0, "@$args exits 0");
    like($r->{out}, qr/^usage: dstackctl fleet\b/m, "@$args: the usage");
    like($r->{out}, qr/^\s+delete NAME\b/m, "@$args: tells of delete");
}

$r = $c->cli(['apply', '--help']);
like($r->{out}, qr/type: fleet/, 'apply --help tells of fleet files');

for my $u (
    [['fleet', 'frob'], qr/^dstackctl: unknown fleet subcommand "frob"/],
    [['fleet', 'delete'], qr/^dstackctl: fleet delete needs the fleet name/],
    [['fleet', 'delete', 'Bad_Name'],
        qr/^dstackctl: invalid fleet name "Bad_Name"/],
    [['fleet', 'delete', 'abc', 'extra'],
        qr/^dstackctl: unexpected argument "extra"/],
    [['fleet', 'list', 'extra'], qr/^dstackctl: unexpected argument "extra"/],
    [['fleet', 'list', '-z'], qr/^dstackctl: option "-z" is unknown/],
    [['fleet', 'delete', 'abc', '--frob'],
        qr/^dstackctl: option "--frob" is unknown/],
    [['apply', '-f', 'x.yml', '-n', 'Bad'], qr/^dstackctl: invalid run name "Bad"/],
) {
    my ($args, $re) = @$u;
    $r = $c->cli($args, env => \%nowhere);
    is($r->{rc}, 2, "dstackctl @$args: exit 2") or diag $r->{err};
    like($r->{err}, $re, "dstackctl @$args: the message") or diag $r->{err};
    like($r->{err}, qr/^usage: dstackctl /m, "dstackctl @$args: the usage");
    unlike($r->{err}, qr/cannot reach/, "dstackctl @$args: nothing sent");
}

# delete asks first; without a terminal it says to use -y
$r = $c->cli(['fleet', 'delete', 'my-fleet'], env => \%nowhere);
is($r->{rc}, 2, 'fleet delete without -y nor a terminal: exit 2');
like($r->{err}, qr/^dstackctl: not deleting "my-fleet": no terminal to confirm on \(use -y\)$/m,
    'fleet delete without -y: the message');
unlike($r->{err}, qr/cannot reach/, 'fleet delete without -y: nothing sent');

# with -y it goes to the server
for my $args (['fleet', 'delete', 'my-fleet', '-y', '--force'], ['fleet'],
    ['fleet', 'list', '--json'])
{
    $r = $c->cli($args, env => \%nowhere);
    is($r->{rc}, 1, "@$args, no server: exit 1");
    like($r->{err}, qr/^dstackctl: cannot reach the server /,
        "@$args: goes to the server");
}

# ---- fleet files -----------------------------------------------------------

my $key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"
    . "-----END OPENSSH PRIVATE KEY-----\n";
my $head = "type: fleet\nname: my-fleet\nssh_config:\n  user: ubuntu\n"
    . "  identity_file: ~/.ssh/id_test\n  hosts:\n";

my $app = $c->app_dir('fleet', {
    'ok.dstack.yml' => $head . "    - 10.0.0.1\n"
        . "    - {hostname: gpu-2.internal, port: 2222, "
        . "identity_file: keys/other}\n",
    'port.dstack.yml' => $head . "    - 10.0.0.1\n"
        . "    - hostname: 10.0.0.2\n      port: 70000\n",
    'dup.dstack.yml' => $head . "    - 10.0.0.1\n    - 10.0.0.1\n",
    'option.dstack.yml' => $head . "    - \"-oProxyCommand=sh\"\n",
    'cloud.dstack.yml' => "type: fleet\nnodes: 2\n",
    'nokey.dstack.yml' => "type: fleet\nssh_config:\n  user: u\n"
        . "  hosts:\n    - a1\n",
    'typo.dstack.yml' => $head . "    - {hostname: a1, prot: 22}\n",
    'nohosts.dstack.yml' => "type: fleet\nssh_config:\n  user: u\n"
        . "  identity_file: k\n  hosts: []\n",
    'missing-key.dstack.yml' => $head =~ s/id_test/id_missing/r
        . "    - 10.0.0.1\n",
    'pub-key.dstack.yml' => $head =~ s/id_test/id_test.pub/r
        . "    - 10.0.0.1\n",
    'big-key.dstack.yml' => "type: fleet\nssh_config:\n  user: u\n"
        . "  hosts:\n    - {hostname: big1, identity_file: keys/big}\n",
    'keys/other' => $key,
    'keys/big' => $key . ("x" x (17 * 1024)),
});
my $home = "$dir/home";
mkdir "$home"; mkdir "$home/.ssh";
DsTest::_write("$home/.ssh/id_test", $key);
DsTest::_write("$home/.ssh/id_test.pub", "ssh-ed25519 AAAA me\@here\n");
chmod 0600, "$home/.ssh/id_test", "$app/keys/big";
chmod 0644, "$app/keys/other";

for my $case (
    ['port.dstack.yml', qr/^port\.dstack\.yml:9:13: ssh_config\.hosts\[1\]\.port: must be 1\.\.65535, got 70000$/m],
    ['dup.dstack.yml', qr/^dup\.dstack\.yml:8:7: ssh_config\.hosts\[1\]: duplicate host "10\.0\.0\.1" port 22 \(the same as hosts\[0\]\)$/m],
    ['option.dstack.yml', qr/^option\.dstack\.yml:7:7: ssh_config\.hosts\[0\]: invalid hostname "-oProxyCommand=sh": must not start with "-"/m],
    ['cloud.dstack.yml', qr/^cloud\.dstack\.yml:2:1: "nodes" is not supported: only SSH fleets \(ssh_config\) are$/m],
    ['nokey.dstack.yml', qr/^nokey\.dstack\.yml:5:7: ssh_config\.hosts\[0\]: no identity_file \(set ssh_config\.identity_file or the host's\)$/m],
    ['typo.dstack.yml', qr/^typo\.dstack\.yml:7:22: ssh_config\.hosts\[0\]: unknown key "prot" \(did you mean "port"\?\)$/m],
    ['nohosts.dstack.yml', qr/^nohosts\.dstack\.yml:5:10: ssh_config\.hosts: expected at least one host$/m],
    ['missing-key.dstack.yml', qr/^dstackctl: cannot read the identity file "~\/\.ssh\/id_missing" of the host "10\.0\.0\.1": No such file/m],
    ['pub-key.dstack.yml', qr/^dstackctl: the identity file "~\/\.ssh\/id_test\.pub" of the host "10\.0\.0\.1" is not a private key/m],
    ['big-key.dstack.yml', qr/^dstackctl: the identity file "keys\/big" of the host "big1" is over 16 KiB/m],
) {
    my ($f, $re) = @$case;
    for my $cmd (['apply', '-f', $f, '-y'], ['apply', '-f', $f, '-y', '-d']) {
        $r = $c->cli($cmd, dir => $app, env => \%nowhere);
        is($r->{rc}, 1, "@$cmd: exit 1");
        like($r->{err}, $re, "@$cmd: the message") or diag $r->{err};
        unlike($r->{err}, qr/cannot reach/, "@$cmd: nothing sent");
        is($r->{out}, '', "@$cmd: no plan printed");
    }
}

# a valid fleet gets as far as the server; a key others may read is
# sent, with a word about it
$r = $c->cli(['apply', '-f', 'ok.dstack.yml', '-y'], dir => $app,
    env => \%nowhere);
is($r->{rc}, 1, 'a valid fleet, no server: exit 1');
like($r->{err}, qr/^dstackctl: cannot reach the server "unix:\Q$dir\E\/nowhere\.sock": /m,
    'a valid fleet: goes to the server');
like($r->{err}, qr/^dstackctl: warning: the identity file "keys\/other" is readable by others \(mode 0644; ssh wants 0600\)$/m,
    'a key others may read: a warning');
unlike($r->{err}, qr/id_test"? is readable/, 'a 0600 key: no warning');

# a bare env name comes from the environment, or is an error
$r = $c->cli(['apply', '-f', 'ok.dstack.yml', '-y', '-e', 'NOT_SET_ANYWHERE'],
    dir => $app, env => \%nowhere);
is($r->{rc}, 1, 'an unset env name: exit 1');
like($r->{err}, qr/^dstackctl: ok\.dstack\.yml: environment variable "NOT_SET_ANYWHERE" is not set$/m,
    'an unset env name: the message');
unlike($r->{err}, qr/cannot reach/, 'an unset env name: nothing sent');

$t->done;
