#!/usr/bin/perl
# Restart safety: kill -9 of controld never stops traffic (the module
# serves from LMDB); a restarted controld adopts the replicas still
# running (same pids, nothing started twice), starts again those that
# died meanwhile, and can stop adopted replicas.  SIGTERM leaves the
# replicas running too.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack(netns => 1);

my $code = $s->upload($s->app_files);
my $r = $s->apply($s->app_spec(replicas => 2), name => 'keep',
    code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};
my $run = $s->wait_ready('keep', 2);
ok($run, 'two replicas ready') or diag explain $s->last_run;
my %pid = map { $_->{num} => $_->{pid} } @{ $run->{replicas} };
my @procs = $s->run_pids('keep');

# ---- kill -9 -----------------------------------------------------------------

my $load = $s->start_load('keep');
sleep 0.3;
is($s->stop_controld('KILL') & 127, 9, 'controld killed with -9');
sleep 1.5;
my $mid = $s->stop_load($load);
ok($mid->{total} > 50, "requests while controld was down: $mid->{total}");
is_deeply($mid->{failed}, [], 'none failed') or diag explain $mid;
is($s->get('keep', '/')->{status}, 200, 'the service still answers');
is_deeply([$s->run_pids('keep')], \@procs, 'the replicas still run');

# restart: adopts, starts nothing
$load = $s->start_load('keep');
$s->start_controld(keep_conf => 1);
$run = $s->wait_ready('keep', 2);
ok($run, 'after the restart: running with two ready replicas')
    or diag explain $s->last_run;
is_deeply({ map { $_->{num} => $_->{pid} } @{ $run->{replicas} } }, \%pid,
    'the same replica processes, adopted');
my $p0 = $pid{0};
like($s->log_text, qr/adopted replica 0 v1 \(pid $p0,/,
    'controld says it adopted them');
sleep 0.5;
is_deeply([$s->run_pids('keep')], \@procs, 'nothing was started twice');
$mid = $s->stop_load($load);
is_deeply($mid->{failed}, [], 'no request failed across the restart')
    or diag explain $mid;

# ---- a replica dies while controld is down -------------------------------------

$s->stop_controld('KILL');
kill 'KILL', -$pid{1};
ok(DsTest::wait_until(sub { !kill 0, $pid{1} }, timeout => 5),
    'replica 1 died while controld was down');
$load = $s->start_load('keep', retries => 3);
$s->start_controld(keep_conf => 1);
$run = $s->wait_run('keep', sub {
    my ($r1) = grep { $_->{num} == 1 } @{ $_[0]{replicas} };
    return $r1 && $r1->{ready} && $r1->{pid} != $pid{1};
}, timeout => 15);
ok($run, 'controld starts the dead replica again') or diag explain $s->last_run;
if ($run) {
    my ($r0) = grep { $_->{num} == 0 } @{ $run->{replicas} };
    is($r0->{pid}, $pid{0}, 'and keeps the live one');
    is(scalar @{ $run->{replicas} }, 2, 'two replicas, no duplicate');
}
sleep 0.3;
$mid = $s->stop_load($load);
is_deeply($mid->{failed}, [], 'no request failed (retrying a refused '
    . 'connection)') or diag explain $mid;

# ---- SIGTERM: a clean exit that leaves the service up ---------------------------

$run = $s->run('keep');
%pid = map { $_->{num} => $_->{pid} } @{ $run->{replicas} };
is($s->stop_controld('TERM'), 0, 'SIGTERM: controld exits 0');
like($s->log_text, qr/SIGTERM: exiting; replicas keep running/,
    'and says the replicas keep running');
is($s->get('keep', '/')->{status}, 200, 'they do');
ok(!-e $s->socket_path, 'the API socket is removed');
$s->start_controld(keep_conf => 1);
$run = $s->wait_ready('keep', 2);
is_deeply({ map { $_->{num} => $_->{pid} } @{ $run->{replicas} || [] } },
    \%pid, 'adopted again after SIGTERM');

# ---- stopping adopted replicas --------------------------------------------------

my @all = $s->run_pids('keep');
$r = $s->stop('keep');
is($r->{status}, 200, 'stop of adopted replicas: 200');
$run = $s->wait_run('keep', sub { $_[0]{status} eq 'terminated' },
    timeout => 20);
ok($run, 'the run ends terminated') or diag explain $s->last_run;
ok(DsTest::wait_until(sub { !$s->run_pids('keep') }, timeout => 5),
    'the adopted processes are gone') or diag join ' ', $s->run_pids('keep');
is($s->get('keep', '/')->{status}, 404, 'and out of routing');

# ---- a second controld on the same state is refused ------------------------------

my ($rc, $err) = (undef, '');
{
    my $pid = fork // die;
    if (!$pid) {
        open STDOUT, '>', $s->dir . '/second.out';
        open STDERR, '>', $s->dir . '/second.err';
        exec DsStack::controld_path(), '-d', '-f', $s->dir . '/controld.yml';
    }
    DsTest::wait_until(sub { waitpid($pid, POSIX::WNOHANG()) == $pid },
        timeout => 10) or kill 'KILL', $pid;
    $rc = $? >> 8;
    $err = DsTest::_slurp($s->dir . '/second.err');
}
is($rc, 1, 'a second controld with the same configuration exits 1');
like($err, qr/another dstack-controld is listening/, 'saying why');
is($s->api('GET', '/api/health')->{status}, 200, 'the first one still answers');

$s->finish;
$t->done;
