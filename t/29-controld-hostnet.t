#!/usr/bin/perl
# The local backend without network namespaces (network: host, what a
# controld that is not root gets): replicas listen on the host network at
# 127.0.0.1:<port>, so plan refuses a second replica of a run and a second
# run on a port in use, and a re-apply stops the old version before the
# new one can take the port.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t, extra => <<'EOF2');
backends:
  local:
    network: host
    stop_grace: 2s
EOF2
$s->start_controld;
$t->start;

is($s->network, 'host', 'health: network host');
my $code = $s->upload($s->app_files);
my $spec = $s->app_spec(env => { GREETING => 'one' });
my $port = $spec->{port};

my $r = $s->api('POST', '/api/runs/plan',
    json => { spec => { %$spec, replicas => 2 } });
is($r->{status}, 422, 'two replicas on the host network: 422');
like($r->{json}{error}{message},
    qr/^spec\.replicas: 2 replicas of one service all listen on port $port; .*one replica per run and port\)$/,
    'the message says why');

$r = $s->apply($spec, name => 'solo', code => $code);
is($r->{status}, 201, 'one replica: 201') or diag $r->{body};
my $run = $s->wait_ready('solo', 1);
ok($run, 'ready') or diag explain $s->last_run;
is($run->{replicas}[0]{address}, "127.0.0.1:$port",
    'it listens on the host at its port') if $run;
is($s->get('solo', '/')->{json}{greeting}, 'one', 'and serves');

$r = $s->api('POST', '/api/runs/plan',
    json => { spec => $spec, name => 'other' });
is($r->{status}, 422, 'another run on the same port: 422');
like($r->{json}{error}{message},
    qr/^spec\.port: $port is taken by run "solo" on the host network/,
    'naming the run that has it');

# re-apply: the old version stops first, then the new one starts
$r = $s->apply({ %$spec, env => { GREETING => 'two' } }, name => 'solo',
    code => $code);
is($r->{status}, 200, 're-apply: 200');
is($r->{json}{version}, 2, 'version 2');
$run = $s->wait_run('solo', sub {
    my @r = @{ $_[0]{replicas} };
    return @r == 1 && $r[0]{version} == 2 && $r[0]{ready};
}, timeout => 20);
ok($run, 'the new version replaced the old one') or diag explain $s->last_run;
is($s->get('solo', '/')->{json}{greeting}, 'two', 'and serves the new env');
like($s->log_text, qr/rolling out version 2 to replica 0\n/,
    'without a replica next to the old one');

$r = $s->stop('solo');
ok($s->wait_run('solo', sub { $_[0]{status} eq 'terminated' }),
    'stopped');
ok(DsTest::wait_until(sub { !$s->run_pids('solo') }), 'processes gone');
is_deeply([$s->netns_list('solo')], [], 'no namespace was made');

$s->finish;
$t->done;
