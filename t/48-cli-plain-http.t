#!/usr/bin/perl
# dstackctl and plain http://: a server URL that is http:// to a host
# other than this one sends the token across the network in clear text,
# so the CLI says so once on stderr (naming where the URL came from) and
# goes on; the loopback (127.0.0.0/8, ::1, localhost and *.localhost),
# https:// and unix: are quiet, and a command through the real gateway on
# 127.0.0.1 works with nothing on stderr.

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

my $warning = qr/^dstackctl: warning: the server "([^"]+)" \(from ([^)]+)\) is plain http:\/\/ to another host: the token crosses the network in clear text; use https:\/\/$/m;

# a name that never resolves: the CLI fails fast after the warning
my $r = $c->cli(['ps'], env => { DSTACK_CONFIG => undef,
    DSTACK_SERVER => 'http://gw.invalid:9', DSTACK_TOKEN => 'x' });
is($r->{rc}, 1, 'http:// to another host that is not there: exit 1');
my @w = $r->{err} =~ /$warning/g;
is_deeply(\@w, ['http://gw.invalid:9', 'DSTACK_SERVER'],
    'one warning, naming the URL and DSTACK_SERVER') or diag $r->{err};
like($r->{err}, qr/cannot reach the server "http:\/\/gw\.invalid:9"/,
    'and then the usual error: the warning does not stop it');
is($r->{out}, '', 'nothing on stdout');

my $cfg = $t->dir . '/plain-client.yml';
DsTest::_write($cfg, "server: http://10.1.2.3.gw.invalid/api\n"
    . "token: x\n");
$r = $c->cli(['ps'], env => { DSTACK_CONFIG => $cfg, DSTACK_SERVER => undef,
    DSTACK_TOKEN => undef });
@w = $r->{err} =~ /$warning/g;
is_deeply(\@w, ['http://10.1.2.3.gw.invalid/api', $cfg],
    'from a config file: the file is named') or diag $r->{err};

for my $quiet ('http://127.0.0.2:9', 'http://localhost:9',
               'http://gateway.dstack.localhost:9/api', 'http://[::1]:9',
               'http://user@127.0.0.1:9', 'https://gw.invalid:9',
               'unix:' . $t->dir . '/nowhere.sock')
{
    $r = $c->cli(['ps'], env => { DSTACK_CONFIG => undef,
        DSTACK_SERVER => $quiet, DSTACK_TOKEN => 'x' });
    is($r->{rc}, 1, "$quiet: not there, exit 1");
    unlike($r->{err}, qr/warning/, "$quiet: no warning") or diag $r->{err};
}

# names that only look like the loopback
for my $loud ('http://127.0.0.1.gw.invalid:9', 'http://localhost.gw.invalid',
              'http://127.0.0.1@gw.invalid:9')
{
    $r = $c->cli(['ps'], env => { DSTACK_CONFIG => undef,
        DSTACK_SERVER => $loud, DSTACK_TOKEN => 'x' });
    like($r->{err}, $warning, "$loud: the warning") or diag $r->{err};
}

# the gateway on 127.0.0.1 over plain HTTP: works, and quietly
$r = $c->cli(['ps'], env => $c->via_nginx);
is($r->{rc}, 0, 'through nginx on http://127.0.0.1: exit 0')
    or diag $r->{err};
is($r->{err}, '', 'and nothing on stderr');

$c->finish;
$t->done;
