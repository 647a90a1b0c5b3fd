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

my $rundir = $s->replicas_dir . '/asuser';
my $mode = (stat $rundir)[2] & 07777;
ok($mode & 0001, sprintf('the run directory can be entered by others '
    . '(%04o)', $mode));
ok(-e $s->workdir('asuser', 0, 1) . '/exec.txt',
    'the replica wrote in its working directory');

$s->finish;
$t->done;
