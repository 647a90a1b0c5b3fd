#!/usr/bin/perl
# Secrets of a service on an SSH fleet's host (t/lib/DsHosts.pm: a real
# OpenSSH server in a network namespace), real controld and nginx: the
# fleet's env and the service's env name secrets, the replica on the
# host gets the values (they go to the host's agent on its standard
# input), no process's command line on this machine holds one, nor
# controld's log.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsHosts;
use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

if (my $why = DsHosts::available()) {
    plan skip_all => $why;
}
plan skip_all => 'runs in the pass without sanitizers' if $DsTest::SANITIZE;

my ($t, $s) = DsStack::stack();
my $h = DsHosts->new(n => 1);

my $v1 = 'fl_' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);
my $v2 = 'sv_' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);

for ([ FLEET_TOKEN => $v1 ], [ SVC_TOKEN => $v2 ]) {
    my $r = $s->api('POST', '/api/secrets/set',
        json => { name => $_->[0], value => $_->[1] });
    is($r->{status}, 201, "secret $_->[0] set") or diag $r->{body};
}

my $dir = tempdir('sfleet-t-XXXXXX', TMPDIR => 1, CLEANUP => 1);

# dstackctl apply -f of a fleet file: (exit status, output)
sub fleet_apply {
    my $yaml = shift;
    DsTest::_write("$dir/fleet.dstack.yml", $yaml);
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        $ENV{DSTACK_CONFIG} = $s->client_config;
        $ENV{HOME} = $dir;
        exec("$DsTest::BUILD/dstackctl", 'apply', '-f',
            "$dir/fleet.dstack.yml", '-y') or POSIX::_exit(127);
    }
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    return ($? >> 8, $out);
}

my ($rc, $out) = fleet_apply($h->fleet_yaml(name => 'sfl', hosts => [0],
    extra => "env:\n  - FT=\${{ secrets.NOPE }}\n"));
is($rc, 1, 'a fleet whose env names no secret: refused');
like($out, qr/spec\.env\.FT: secret "NOPE" does not exist/, 'saying which')
    or diag $out;
is($s->api('GET', '/api/fleets/sfl')->{status}, 404, 'and no fleet made');

($rc, $out) = fleet_apply($h->fleet_yaml(name => 'sfl', hosts => [0],
    extra => "env:\n  - FT=\${{ secrets.FLEET_TOKEN }}\n"));
is($rc, 0, 'the fleet with a secret in its env applied') or diag $out;

my $r = $s->apply({
    type => 'service',
    port => 8000,
    fleets => ['sfl'],
    env => { ST => 'x-${{ secrets.SVC_TOKEN }}' },
    commands => [
        q{printf '%s|%s' "$FT" "$ST" > index.html},
        'exec python3 -m http.server 8000',
    ],
    auth => JSON::PP::false,
}, name => 'sfleet');
is($r->{status}, 201, 'a service on the fleet naming a secret')
    or diag $r->{body};
my $run = $s->wait_ready('sfleet', 1, timeout => 60);
ok($run, 'its replica on the host gets ready') or diag explain $s->last_run;
is(($run->{replicas}[0] || {})->{backend}, 'ssh', 'on the ssh backend');
is($s->get('sfleet', '/')->{body}, "$v1|x-$v2",
    'the replica has the fleet\'s and the service\'s secrets');

my @hits;
for my $p (glob '/proc/[0-9]*/cmdline') {
    my $c = DsTest::_slurp($p) // '';
    push @hits, $p if index($c, $v1) >= 0 || index($c, $v2) >= 0;
}
is_deeply(\@hits, [], 'no command line on this machine holds a value');
my $log = $s->log_text;
ok(index($log, $v1) < 0 && index($log, $v2) < 0,
    'controld\'s log holds no value');

$r = $s->stop('sfleet', abort => 1);
is($r->{status}, 200, 'stop');
$s->finish;
$t->done;
