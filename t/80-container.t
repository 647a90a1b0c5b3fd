#!/usr/bin/perl
# Services with an `image` end to end on a real container engine
# (Podman's Docker-compatible service, t/lib/DsEngine.pm), real nginx
# with the module and real controld: two replicas answering through the
# gateway, what the container was given (env, user, working directory,
# entrypoint and commands, code, a volume), logs, the labels on each
# container, a container killed under load (replaced, no failed
# request), controld killed (its containers adopted, none twice), a
# rolling update of the image with zero failed requests, an image that
# cannot be pulled (the engine's reason, nothing left behind), `files:`
# through dstackctl (containers and processes), scale to zero and back,
# stop (the containers go).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use File::Path qw(make_path);
use Time::HiRes qw(time sleep);
use Digest::SHA ();
use Test::More;

# about 100 s of engine work: run once, in the plain pass (the
# container backend's code runs under the sanitizers in t/81 and t/82)
plan skip_all => 'slow end to end, run in the plain pass only'
    if $DsTest::SANITIZE;

my ($t, $s) = DsStack::stack(engine => 1, hold => 1);
my $engine = $s->engine;

# the app: busybox httpd serving what the commands wrote at start
my $INDEX = q{printf '{"replica":%s,"version":%s,"greeting":"%s","image":"%s"}' }
    . q{"$DSTACK_REPLICA_NUM" "$DSTACK_REPLICA_VERSION" "$GREETING" }
    . q{"$(cat /image.txt)" > /www/index.html};
$engine->image('localhost/web:1', { 'image.txt' => "web1\n" });
$engine->image('localhost/web:2', { 'image.txt' => "web2\n" });
$engine->image('localhost/plain:1', {
    'image.txt' => "plain\n",
    'www/index.html' => "{\"replica\":0,\"version\":0,\"greeting\":\"entry\"}\n",
});


my $vol = "$t->{dir}/vol";
make_path($vol);
DsTest::_write("$vol/v.txt", "from the host\n");

my $code = $s->upload({ 'data.txt' => "uploaded\n" });

sub web_spec {
    my (%o) = @_;
    return {
        type => 'service',
        image => 'localhost/web:1',
        port => 8000,
        replicas => 2,
        env => { GREETING => 'hi' },
        user => '65534',
        working_dir => '/srv/app',
        volumes => ["$vol:/data:ro"],
        commands => [
            'echo "replica $DSTACK_REPLICA_NUM starts"',
            'id -u > /www/uid.txt',
            'pwd > /www/pwd.txt',
            'cat data.txt > /www/code.txt',
            'cat /data/v.txt > /www/volume.txt',
            $INDEX,
            'exec httpd -f -p 8000 -h /www',
        ],
        resources => { cpu => '1..', memory => '64MB..', disk => '1GB..' },
        auth => JSON::PP::false,
        https => JSON::PP::false,
        %o,
    };
}

# ---- plan and apply -----------------------------------------------------------

my $r = $s->api('POST', '/api/runs/plan', json => { spec => web_spec() });
is($r->{status}, 200, 'plan: an offer for an image') or diag $r->{body};
is($r->{json}{offers}[0]{instance_type}, 'container',
    'plan: the offer is a container');

$r = $s->apply(web_spec(), name => 'web', code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};

my $run = $s->wait_ready('web', 2, timeout => 60);
ok($run, 'two containers get ready') or diag explain $s->last_run;
diag $s->log_text unless $run;

my @reps = sort { $a->{num} <=> $b->{num} } @{ ($run || {})->{replicas} || [] };
is(scalar(grep { $_->{backend} eq 'container' } @reps), 2,
    'both replicas run on the container backend');
like($reps[0]{address} // '', qr/^127\.0\.0\.1:\d+$/,
    'a replica is reached at its published loopback port');
isnt($reps[0]{address}, $reps[1]{address}, 'each has its own port');

my %seen;
for (1 .. 40) {
    my $g = $s->get('web', '/');
    $seen{"$g->{json}{replica}:$g->{json}{image}"}++
        if $g->{status} == 200 && $g->{json};
}
is_deeply([sort keys %seen], ['0:web1', '1:web1'],
    'both replicas answer through the gateway');

is($s->get('web', '/uid.txt')->{body}, "65534\n", 'user: 65534');
is($s->get('web', '/pwd.txt')->{body}, "/srv/app\n",
    'working_dir: the commands run there');
is($s->get('web', '/code.txt')->{body}, "uploaded\n",
    'the code is in the working directory');
is($s->get('web', '/volume.txt')->{body}, "from the host\n",
    'a volume: the host file is visible');
is($s->get('web', '/')->{json}{greeting}, 'hi', 'env: GREETING');

my $log = $s->replica_log('web', 0, 1);
like($log, qr/^replica 0 starts$/m, 'the container output is in its log');

my @ctrs = @{ $engine->containers('web') };
is(scalar @ctrs, 2, 'two containers carry the run label');
is_deeply([sort map { $_->{Labels}{'dstack.replica'} } @ctrs], [0, 1],
    'labelled with their replica numbers');

# ---- a container killed under load ----------------------------------------------

my $load = $s->start_load('web', retries => 3);
sleep 0.5;
my $victim = (grep { $_->{Labels}{'dstack.replica'} eq '1' } @ctrs)[0]{Id};
my $k = $engine->api('POST', "/containers/$victim/kill?signal=SIGKILL");
is($k->{status}, 204, 'kill -9 of a container');
my $back = DsTest::wait_until(sub {
    my $x = $s->run('web') or return 0;
    my ($r1) = grep { $_->{num} == 1 } @{ $x->{replicas} };
    return $r1 && $r1->{ready} && $r1->{restarts} >= 1;
}, timeout => 60);
ok($back, 'the replica is replaced and ready again')
    or diag explain $s->run('web');
sleep 0.5;
my $res = $s->stop_load($load);
ok($res->{total} > 20, "requests under load ($res->{total})");
is_deeply($res->{failed}, [], 'no request failed while it was replaced');
my @now = @{ $engine->containers('web') };
is(scalar @now, 2, 'still two containers: the dead one was removed');

# ---- controld killed: adopted, none twice -----------------------------------------

my %before = map { $_->{Id} => 1 } @now;
kill 'KILL', $s->pid;
waitpid($s->pid, 0);
delete $s->{pid};
$s->start_controld(keep_conf => 1);
$run = $s->wait_ready('web', 2, timeout => 30);
ok($run, 'after kill -9 of controld: two ready replicas');
my @after = @{ $engine->containers('web') };
is_deeply([sort map { $_->{Id} } @after], [sort keys %before],
    'the same two containers, adopted; none started twice');
like($s->log_text, qr/adopted replica 0 v1/, 'adoption is logged');

# ---- rolling update of the image -------------------------------------------------

$load = $s->start_load('web', retries => 3);
sleep 0.3;
$r = $s->apply(web_spec(image => 'localhost/web:2'), name => 'web',
    code => $code);
is($r->{status}, 200, 'apply of a new image: a rollout') or diag $r->{body};
$run = $s->wait_ready('web', 2, only => 1, timeout => 90);
ok($run, 'the new image is rolled out') or diag explain $s->last_run;
sleep 0.5;
$res = $s->stop_load($load);
is_deeply($res->{failed}, [], 'no request failed during the rollout');
ok((grep { /:2:hi$/ } keys %{ $res->{seen} }),
    'version 2 answered during the rollout');
%seen = ();
for (1 .. 20) {
    my $g = $s->get('web', '/');
    $seen{$g->{json}{image}}++ if $g->{json};
}
is_deeply([keys %seen], ['web2'], 'only the new image answers after it');
DsTest::wait_until(sub { @{ $engine->containers('web') } == 2 },
    timeout => 30);
is(scalar @{ $engine->containers('web') }, 2,
    'the old containers are gone');

# ---- files: with dstackctl, at their paths, gitignored or not --------------

my $proj = $s->dir . '/proj';
make_path("$proj/conf");
DsTest::_write("$proj/conf/app.conf", "listen 8000\n");
DsTest::_write("$proj/notes.txt", "some notes\n");
DsTest::_write("$proj/.env", "SECRET=1\n");
DsTest::_write("$proj/.gitignore", ".env\n");
my $lport = $s->network eq 'netns' ? 8000 : DsTest::free_port();
DsTest::_write("$proj/ctr.dstack.yml", <<'EOF');
type: service
name: files
image: localhost/web:1
port: 8000
files:
  - conf/app.conf:/etc/app/app.conf
  - notes.txt
  - .env
commands:
  - cat /etc/app/app.conf > /www/app.txt
  - cat notes.txt > /www/notes.txt
  - cat .env > /www/env.txt
  - exec httpd -f -p 8000 -h /www
auth: false
https: false
resources: {cpu: 1.., memory: 64MB.., disk: 1GB..}
EOF
DsTest::_write("$proj/local.dstack.yml", <<"EOF");
type: service
name: local-files
port: $lport
files:
  - notes.txt
  - .env
commands:
  - exec busybox httpd -f -p $lport -h .
auth: false
https: false
resources: {cpu: 1.., memory: 64MB.., disk: 1GB..}
EOF
sub cli_apply {
    my ($file) = @_;
    return DsTest::_run(['sh', '-c', "cd '$proj' && exec "
        . "'$DsTest::BUILD/dstackctl' apply -f $file -y -d"],
        env => { %{ $t->_san_env }, DSTACK_CONFIG => $s->client_config,
                 HOME => $s->dir });
}
my ($crc, $cout, $cerr) = cli_apply('ctr.dstack.yml');
is($crc, 0, 'dstackctl apply of an image with files') or diag "$cout$cerr";
ok($s->wait_ready('files', 1, timeout => 60), 'it gets ready')
    or diag explain $s->last_run;
is($s->get('files', '/app.txt')->{body}, "listen 8000\n",
    'a file at its container path');
is($s->get('files', '/notes.txt')->{body}, "some notes\n",
    'a file without a path: in the working directory');
is($s->get('files', '/env.txt')->{body}, "SECRET=1\n",
    'a gitignored file listed in files: sent all the same');
($crc, $cout, $cerr) = cli_apply('local.dstack.yml');
is($crc, 0, 'dstackctl apply of processes with files') or diag "$cout$cerr";
ok($s->wait_ready('local-files', 1, timeout => 60), 'it gets ready')
    or diag explain $s->last_run;
is($s->get('local-files', '/notes.txt')->{body}, "some notes\n",
    'processes: the file in the working directory');
is($s->get('local-files', '/.env')->{status}, 200,
    'processes: the gitignored one too');
DsTest::_write("$proj/bad.dstack.yml", <<'EOF');
type: service
port: 8000
files:
  - notes.txt:/etc/notes.txt
commands:
  - exec busybox httpd -f -p 8000
EOF
($crc, $cout, $cerr) = cli_apply('bad.dstack.yml');
isnt($crc, 0, 'a container path without an image: refused');
like("$cout$cerr", qr/files\[0\]: a path \("\/etc\/notes\.txt"\) places a file in a container: it needs an image/,
    'saying why');
$s->stop($_, abort => 1) for qw(files local-files);

# ---- a container left with a replica's name (a crash before its record) ----

my $tag = substr(Digest::SHA::sha256_hex($t->state), 0, 4);
my $stale = $engine->api('POST', "/containers/create?name=dstack-$tag-clash-0-v1",
    { Image => 'localhost/web:1', Cmd => ['/bin/sh', '-c', 'sleep 600'] });
is($stale->{status}, 201, 'a container already has the name replica 0 of '
    . '"clash" will take');
$r = $s->apply(web_spec(replicas => 1), name => 'clash', code => $code);
is($r->{status}, 201, 'apply "clash"') or diag $r->{body};
ok($s->wait_ready('clash', 1, timeout => 60),
    'it gets ready: the stale container was removed, ours created')
    or diag explain $s->last_run;
is($engine->api('GET', "/containers/$stale->{json}{Id}/json")->{status},
    404, 'the stale container is gone');
$s->stop('clash', abort => 1);

# ---- an entrypoint, no commands ----------------------------------------------------

$r = $s->apply({
    type => 'service', image => 'localhost/plain:1', port => 8080,
    entrypoint => 'httpd -f -p 8080 -h /www',
    auth => JSON::PP::false, https => JSON::PP::false,
}, name => 'plain');
is($r->{status}, 201, 'apply with an entrypoint and no commands')
    or diag $r->{body};
ok($s->wait_ready('plain', 1, timeout => 60), 'it gets ready')
    or diag explain $s->last_run;
is($s->get('plain', '/')->{json}{greeting}, 'entry',
    'the entrypoint runs the image');

# ---- an image that cannot be pulled --------------------------------------------------

$r = $s->apply({ %{ web_spec(replicas => 1) }, image => 'localhost/nosuch:1' },
    name => 'nosuch');
is($r->{status}, 201, 'apply of a missing image');
$run = $s->wait_run('nosuch', sub {
    my ($x) = @{ $_[0]{replicas} };
    return $x && $x->{status} eq 'failed';
}, timeout => 60);
ok($run, 'the replica fails') or diag explain $s->last_run;
like(($run->{replicas}[0]{message} // ''),
    qr/cannot pull localhost\/nosuch:1: .*(connection refused|no such host|pinging container registry)/,
    "the engine's reason is in the replica's message");
like($s->replica_log('nosuch', 0, 1),
    qr/^dstack: cannot pull localhost\/nosuch:1: /m,
    'and in its log (dstackctl logs)');
is(scalar @{ $engine->containers('nosuch') }, 0,
    'nothing is left behind');
$s->stop('nosuch', abort => 1);

# ---- scale to zero and back ------------------------------------------------------

$r = $s->apply(web_spec(
    replicas => '0..1',
    scaling => { metric => 'rps', target => 100, window => '30s',
                 scale_up_delay => '1s', scale_down_delay => '3s' },
), name => 'zero', code => $code);
is($r->{status}, 201, 'an image scaled to zero') or diag $r->{body};
is(scalar @{ $engine->containers('zero') }, 0, 'no container while idle');
my @res = $t->parallel([ map { ['GET', '/', host => 'zero.' . $t->domain,
    timeout => 60] } 1 .. 4 ]);
is_deeply([map { $_->{status} } @res], [200, 200, 200, 200],
    'requests held at the gateway while the container starts: all 200');
ok(DsTest::wait_until(sub { !@{ $engine->containers('zero') } },
        timeout => 60), 'no traffic: back to zero, the container removed');

# ---- stop ---------------------------------------------------------------------------

$r = $s->stop('web');
is($r->{status}, 200, 'stop');
ok($s->wait_run('web', sub { $_[0]{status} eq 'terminated' },
        timeout => 60), 'the run is terminated');
ok(DsTest::wait_until(sub { !@{ $engine->containers('web') } },
        timeout => 30), 'its containers are removed');
$s->stop('plain', abort => 1);
$s->stop('zero', abort => 1);

$s->finish;
$engine->finish;
$t->done;
