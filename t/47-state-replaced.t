#!/usr/bin/perl
# A state file replaced or removed while controld runs (issue #17): an
# operator restores a backup by copying it next to data.mdb and renaming
# it over the file.  nginx's workers reopen the new file within a
# second; controld must not go on committing to the old one (tokens it
# creates would not work and tokens it revokes would keep working).  It
# notices on its tick or before a write, writes nothing more, answers an
# API call in flight 503, and exits 1 (systemd's Restart=on-failure
# starts it again on the new file), leaving the replicas running; started
# again it adopts them, and what it writes reaches the gateway.  The
# backup is older than the file (a token was made since), so the lock
# file has counted a commit the copy never saw.  The same for a copy
# renamed over the file while controld is stopped and an API call waits,
# a replaced lock.mdb and a removed data.mdb.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use File::Copy qw(copy);
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(time sleep);
use Test::More;

my ($t, $s) = DsStack::stack();
my $data = $t->state . '/data.mdb';
my $lock = $t->state . '/lock.mdb';

my $code = $s->upload($s->app_files);
my $r = $s->apply($s->app_spec(auth => JSON::PP::true), name => 'keep',
    code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};
my $run = $s->wait_ready('keep', 1);
ok($run, 'a replica is ready') or diag explain $s->last_run;
my @procs = $s->run_pids('keep');
ok(@procs, "the replica's processes: @procs");

sub token {
    my ($name) = @_;
    my $x = $s->api('POST', '/api/tokens',
        json => { name => $name, scope => 'services' });
    is($x->{status}, 201, "token \"$name\" created") or diag $x->{body};
    return ($x->{json} || {})->{token} // 'dst_none';
}

sub gw {
    my ($tok) = @_;
    return $s->get('keep', '/',
        headers => { Authorization => "Bearer $tok" })->{status};
}

# what an operator restoring a backup does: a copy of the file, renamed
# over it (a new inode at the same path)
sub replace {
    my ($file, $from) = @_;
    my $tmp = "$file.restore";
    copy($from // $file, $tmp) or die "copy $file: $!";
    chmod((stat $file)[2] & 07777, $tmp);
    rename($tmp, $file) or die "rename $tmp: $!";
}

# waits for controld to exit by itself; its wait status, or undef
sub exited {
    my ($timeout) = @_;
    my $pid = $s->pid or return undef;
    my $status;
    DsTest::wait_until(sub {
        return 0 if waitpid($pid, WNOHANG) != $pid;
        $status = $?;
        return 1;
    }, timeout => $timeout, interval => 0.05);
    if (defined $status) {
        delete $s->{pid};
    } else {
        $s->stop_controld;      # before the fix it never does
    }
    return $status;
}

# waits until every worker has logged (since byte FROM of error.log) that
# it closed the state because FILE was replaced or removed, and then (but
# with CLOSED) that it has a state again
sub workers_reopened {
    my ($from, $file, $closed) = @_;
    my @w = $t->workers;
    return DsTest::wait_until(sub {
        my (%gone, %back);
        for (split /\n/, substr($t->error_log, $from)) {
            my ($pid) = /\] (\d+)#/ or next;
            $gone{$pid} = 1
                if /was removed or replaced \(state file \Q$file\E /;
            $back{$pid} = 1 if $gone{$pid} && /is available again/;
        }
        return !grep { !$gone{$_} || (!$closed && !$back{$_}) } @w;
    }, timeout => 5);
}

sub log_since {
    my ($off) = @_;
    return substr($s->log_text, $off);
}

my $old = token('old');
is(gw($old), 200, 'the gateway takes a token controld made');

# ---- data.mdb replaced while controld is idle: its tick notices ----------

my $off = length $s->log_text;
my $backup = $t->dir . '/backup.mdb';
copy($data, $backup) or die "copy: $!";
# a change after the backup: the restore takes it back (and the lock file
# counts a commit the restored file never saw)
my $later = token('later');
is(gw($later), 200, 'a token made after the backup works');
my $t0 = time;
my $nlog = $t->log_size;
replace($data, $backup);
ok(workers_reopened($nlog, $data), 'every worker reopened the state');

# a revoke now: controld is gone (no socket) or says 503; if it said
# yes, the gateway must refuse the token
$r = $s->api('DELETE', '/api/tokens/old', timeout => 5);
ok($r->{status} == 0 || $r->{status} == 503,
    "a revoke after the replace is refused ($r->{status})")
    or diag $r->{body};
ok($r->{status} != 200 || gw($old) == 401,
    'nothing the API accepted is lost: an accepted revoke holds');
my $st = exited(3);
ok(defined $st, sprintf('controld exits by itself (%.1f s after the '
    . 'replace)', time - $t0));
is(defined $st ? $st >> 8 : -1, 1, 'with status 1 (systemd restarts it)');
my $log = log_since($off);
like($log, qr/state file \Q$data\E was replaced by another file/,
    'its log names the file and what happened');
like($log, qr/exiting with status 1: .*replicas keep running/,
    'and says it exits and that the replicas stay');
is_deeply([$s->run_pids('keep')], \@procs, 'the replica still runs');
ok(DsTest::wait_until(sub { gw($old) == 200 }, timeout => 3),
    'the gateway serves from the restored file meanwhile');
is(gw($later), 401, 'where the token made after the backup is unknown');

# started again, as systemd would: the new file, the same replicas
$s->start_controld(keep_conf => 1);
$run = $s->wait_ready('keep', 1);
ok($run, 'controld started again: the run is back')
    or diag explain $s->last_run;
is_deeply([$s->run_pids('keep')], \@procs, 'its replica adopted, not '
    . 'started twice');

$r = $s->api('DELETE', '/api/tokens/old');
is($r->{status}, 200, 'revoke "old" through the API') or diag $r->{body};
my $new = token('new');
ok(DsTest::wait_until(sub { gw($old) == 401 }, timeout => 2),
    'the gateway refuses the revoked token');
is(gw($new), 200, 'and takes the new one');

# ---- replaced while a write is in flight: 503, not a lie ---------------------

$off = length $s->log_text;
kill 'STOP', $s->pid;
$nlog = $t->log_size;
replace($data);
my $res_file = $t->dir . '/inflight.json';
my $child = fork // die "fork: $!";
if (!$child) {
    my $x = $s->api('POST', '/api/tokens',
        json => { name => 'during', scope => 'services' }, timeout => 20);
    open my $fh, '>', $res_file or POSIX::_exit(1);
    print $fh JSON::PP->new->encode({ status => $x->{status},
        body => $x->{body} // '' });
    close $fh;
    POSIX::_exit(0);
}
sleep 0.5;                      # the API process has asked the parent
kill 'CONT', $s->pid;
waitpid($child, 0);
my $inflight = eval { decode_json(DsTest::_slurp($res_file)) } || {};
is($inflight->{status}, 503, 'a token create in flight: 503')
    or diag explain $inflight;
like($inflight->{body} // '', qr/replaced or removed.*try again/,
    'saying why and to try again');
$st = exited(5);
is(defined $st ? $st >> 8 : -1, 1, 'controld exits with status 1');
like(log_since($off), qr/was replaced by another file/, 'and says why');
ok(workers_reopened($nlog, $data), 'every worker reopened the state');
$s->start_controld(keep_conf => 1);
$r = $s->api('GET', '/api/tokens');
is($r->{status}, 200, 'the tokens are listed') or diag $r->{body};
my @names = map { $_->{name} } @{ ($r->{json} || {})->{tokens} || [] };
ok(!grep({ $_ eq 'during' } @names), 'the refused token exists nowhere: '
    . "@names");
my $during = token('during');
is(gw($during), 200, 'made again after the restart, it works');
ok($s->wait_ready('keep', 1), 'the run is still ready');

# ---- lock.mdb replaced -----------------------------------------------------

$off = length $s->log_text;
$nlog = $t->log_size;
replace($lock);
$st = exited(3);
is(defined $st ? $st >> 8 : -1, 1, 'lock.mdb replaced: controld exits 1');
like(log_since($off), qr/state file \Q$lock\E was replaced/,
    'naming lock.mdb');
ok(workers_reopened($nlog, $lock), 'every worker notices it too and '
    . 'reopens');
$s->start_controld(keep_conf => 1);
ok($s->wait_ready('keep', 1), 'started again, the run is ready');
$r = $s->api('DELETE', '/api/tokens/during');
is($r->{status}, 200, 'revoke "during"');
ok(DsTest::wait_until(sub { gw($during) == 401 }, timeout => 2),
    'the gateway refuses it (workers and controld share the new lock)');
# every worker: a few requests, none may see an older snapshot
my @seen = map { gw($during) } 1 .. 20;
is_deeply([grep { $_ != 401 } @seen], [], 'on every request');
is(gw($new), 200, 'a live token still works');

# ---- data.mdb removed ------------------------------------------------------

$off = length $s->log_text;
$nlog = $t->log_size;
unlink $data or die "unlink: $!";
$st = exited(3);
is(defined $st ? $st >> 8 : -1, 1, 'data.mdb removed: controld exits 1');
like(log_since($off), qr/state file \Q$data\E was removed/,
    'saying the file was removed');
ok(!-e $data, 'and wrote no new file in its place');
ok(workers_reopened($nlog, $data, 'closed'),
    'every worker closed the state');
is(gw($new), 503, 'the gateway answers 503 without a state');
is_deeply([$s->run_pids('keep')], \@procs, 'the replica still runs');

# started again on no state it makes a new one (a first start): the
# workers follow it, and the old replica is nobody's (the test kills it)
$s->start_controld(keep_conf => 1);
ok(-e $data, 'controld started again makes a new state');
ok(DsTest::wait_until(sub { gw($new) == 404 }, timeout => 3),
    'the workers open it: the service is unknown there (404)');
kill 'KILL', @procs;

$s->finish;
$t->done;
