#!/usr/bin/perl
# A local replica with the spec's "user:" runs as that user (controld as
# root) and can enter the directories controld made for it: the run's
# directory under replicas_dir and its working directory, whatever
# controld's own umask.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;

plan skip_all => 'needs root to run a replica as another user' if $> != 0;
my @nobody = getpwnam('nobody');
plan skip_all => 'no user "nobody" here' unless @nobody;

my ($t, $s) = DsStack::stack();
# the test directory is private; an installed replicas_dir is 0755
chmod 0755, $s->dir or die "chmod: $!";

my $code = $s->upload($s->app_files);
my $r = $s->apply($s->app_spec(user => 'nobody'), name => 'asuser',
    code => $code);
is($r->{status}, 201, 'apply with user: nobody') or diag $r->{body};
my $run = $s->wait_ready('asuser', 1, timeout => 30);
ok($run, 'the replica is ready') or diag explain $s->last_run,
    $s->replica_log('asuser', 0);
is($s->get('asuser', '/')->{status}, 200, 'it answers through the gateway');

my ($pid) = $s->run_pids('asuser');
ok($pid, 'its process') or diag explain $s->last_run;
my ($uid) = DsTest::_slurp("/proc/$pid/status") =~ /^Uid:\s+(\d+)/m
    if $pid;
is($uid, $nobody[2], 'runs as nobody');

# the run's directory: others pass, list nothing; the working directory
# (the code) is the replica user's alone
my $mode = (stat($s->replicas_dir . '/asuser'))[2] & 07777;
is(sprintf('%04o', $mode), '0711', 'the run directory: passable, not '
    . 'listable');
my @st = stat $s->workdir('asuser', 0, 1);
is($st[4], $nobody[2], 'the working directory belongs to the spec\'s user');
ok(@st && !($st[2] & 0007), sprintf('and is closed to others (%04o)',
    ($st[2] // 0) & 07777));
my @ex = stat($s->workdir('asuser', 0, 1) . '/exec.txt');
ok(@ex, 'the replica wrote in its working directory');
is(sprintf('%04o', ($ex[2] // 0) & 0777), '0644',
    'with its own umask (022), not controld\'s');

$s->finish;
$t->done;
