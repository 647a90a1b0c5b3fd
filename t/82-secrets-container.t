#!/usr/bin/perl
# Secrets of an `image:` service on a real container engine (Podman's
# Docker-compatible service, t/lib/DsEngine.pm), real nginx and
# controld: the container's Env gets the values (registry_auth naming
# secrets is accepted and resolved for a pull), controld's log (at
# debug, where the create request was once logged whole) holds none; a
# secret deleted meanwhile fails the next container with the reason.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(sleep);
use Test::More;

my ($t, $s) = DsStack::stack(engine => 1);
my $engine = $s->engine;
$engine->image('localhost/sweb:1', { 'image.txt' => "sweb\n" });

my $v1 = 'ctr_' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);
my $v2 = 'reg_' . join('', map { ('a' .. 'z')[rand 26] } 1 .. 24);

my $r = $s->api('POST', '/api/secrets/set',
    json => { name => 'API_KEY', value => $v1 });
is($r->{status}, 201, 'a new secret: 201') or diag $r->{body};
$r = $s->api('POST', '/api/secrets/set',
    json => { name => 'REG_PASS', value => $v2 });
is($r->{status}, 201, 'another: 201');

my $spec = {
    type => 'service',
    image => 'localhost/sweb:1',
    port => 8000,
    env => { API_KEY => '${{ secrets.API_KEY }}', PLAIN => 'p' },
    registry_auth => { username => 'me',
        password => '${{ secrets.REG_PASS }}' },
    commands => [
        q{printf '%s|%s' "$API_KEY" "$PLAIN" > /www/index.html},
        'exec httpd -f -p 8000 -h /www',
    ],
    resources => { cpu => '1..', memory => '64MB..', disk => '1GB..' },
    auth => JSON::PP::false,
    https => JSON::PP::false,
};
$r = $s->apply($spec, name => 'sctr');
is($r->{status}, 201, 'apply of an image service naming secrets: 201')
    or diag $r->{body};
my $run = $s->wait_ready('sctr', 1, timeout => 90);
ok($run, 'its container gets ready') or diag explain $s->last_run;

is($s->get('sctr', '/')->{body}, "$v1|p",
    'the container has the value in its environment');
my @ctrs = @{ $engine->containers('sctr') };
is(scalar @ctrs, 1, 'one container');
my $insp = $engine->api('GET', "/containers/$ctrs[0]{Id}/json");
my @env = @{ (($insp->{json} || {})->{Config} || {})->{Env} || [] };
ok((grep { $_ eq "API_KEY=$v1" } @env), 'Env of the container: the value');

my $log = $s->log_text;
like($log, qr/create \S+ \(\d+ bytes; no GPUs\)/,
    'controld logs the create by its size');
ok(index($log, $v1) < 0 && index($log, $v2) < 0,
    'controld\'s log holds no value');
my $view = $s->api('GET', '/api/runs/sctr')->{body} // '';
ok(index($view, $v1) < 0 && index($view, $v2) < 0,
    'the run\'s view holds no value');
ok(index(DsTest::_slurp($t->state . '/data.mdb'), $v1) < 0,
    'data.mdb holds no value in clear');

# ---- deleted meanwhile ------------------------------------------------------

$r = $s->api('POST', '/api/secrets/delete', json => { name => 'API_KEY' });
is($r->{status}, 200, 'delete: 200');
is($s->get('sctr', '/')->{body}, "$v1|p", 'the running container keeps it');
my $k = $engine->api('POST', "/containers/$ctrs[0]{Id}/kill?signal=SIGKILL");
is($k->{status}, 204, 'kill -9 of the container');
my $msg = '';
ok(DsTest::wait_until(sub {
    my $x = $s->run('sctr') or return 0;
    $msg = join "\n", $x->{message} // '',
        map { $_->{message} // '' } @{ $x->{replicas} || [] };
    $msg =~ /env\.API_KEY: secret "API_KEY" does not exist/;
}, timeout => 60, interval => 0.2),
    'the next container fails: the secret does not exist') or diag $msg;

$r = $s->stop('sctr', abort => 1);
is($r->{status}, 200, 'stop: 200');

$s->finish;
$t->done;
