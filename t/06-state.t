#!/usr/bin/perl
# The state under a running nginx: changes take effect at the next request
# without reload; the state directory removed -> 503 "unavailable" (never
# a hang) with one error line, and recovery when it comes back; data.mdb
# replaced by another state -> the new content; a 1000-replica set swapped
# back and forth while requests run -> not one failure.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use File::Path qw(make_path remove_tree);
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2, watch_interval => '200ms',
    capacity => 'services=64 replicas=4096');
my %addr = map { $_ => $t->backend(name => $_) } qw(r1 r2 r3);
my $tok = 'dst_state_' . ('s' x 30);

sub rep {
    my ($r, $state) = @_;
    return { addr => $addr{$r} // $r, state => $state // 'ready',
             version => 1 };
}

sub svc {
    my ($name, @reps) = @_;
    return ({ op => 'service', name => $name, auth => DsTest::false },
            { op => 'replicas', service => $name, replicas => [@reps] });
}

my @base = (svc('one', rep('r1')),
    { op => 'service', name => 'sec', auth => DsTest::true },
    { op => 'replicas', service => 'sec', replicas => [rep('r2')] },
    { op => 'token', token => $tok, name => 'st', admin => DsTest::false,
      all => DsTest::false, services => ['sec'], expires => 0 });
$t->seed([@base]);
$t->start;
my @workers = sort $t->workers;

sub who {
    my $r = shift;
    return "status $r->{status}" . ($r->{error} ? " ($r->{error})" : '')
        unless $r->{status} == 200;
    return $r->{headers}{'x-replica'} // 'no X-Replica';
}

sub tally {
    my %n;
    $n{ who($_) }++ for @_;
    return join ', ', map { "$_=$n{$_}" } sort keys %n;
}

# N requests to SVC, one after the other
sub many { my ($svc, $n, %o) = @_; map { $t->get($svc, "/$_", %o) } 1 .. $n }

# ---- changes without reload --------------------------------------------------------

is(tally(many('one', 6)), 'r1=6', 'one -> r1');
$t->seed([svc('two', rep('r3'))]);
is(tally(many('two', 6)), 'r3=6', 'a new service: routed at once');
$t->seed([{ op => 'replicas', service => 'one',
    replicas => [rep('r1'), rep('r2')] }]);
like(tally(many('one', 10)), qr/^r1=[2-8], r2=[2-8]$/,
    'a replica added: it shares at once');
$t->seed([{ op => 'replicas', service => 'one',
    replicas => [rep('r1', 'draining'), rep('r2')] }]);
is(tally(many('one', 6)), 'r2=6', 'a replica draining: no new request');
$t->seed([{ op => 'replicas', service => 'one', replicas => [rep('r1')] }]);
is(tally(many('one', 6)), 'r1=6', 'a replica removed: no request');
my %auth = (headers => { Authorization => "Bearer $tok" });
is(tally(many('sec', 4, %auth)), 'r2=4', 'the token opens sec');
$t->seed([{ op => 'del_token', token => $tok }]);
is(tally(many('sec', 4, %auth)), 'status 401=4', 'revoked: 401 at once');
is_deeply([sort $t->workers], \@workers, 'all that without a reload');

# ---- the state directory removed -----------------------------------------------------

my $state = $t->state;
my $mark = $t->log_size;
remove_tree($state);
ok(!-e $state, 'state directory removed');

# the workers notice within a watch interval; until then they may still
# answer from the file they have mapped
my $t0 = time;
my $gone = DsTest::wait_until(sub {
    my @r = many('one', 4, timeout => 3);
    return !grep { $_->{status} != 503 } @r;
}, timeout => 5, interval => 0.05);
ok($gone, 'requests get 503 once the state is gone')
    or diag tally(many('one', 4, timeout => 3));
note sprintf 'all 503 after %.2f s', time - $t0;

my @res = many('one', 40, timeout => 3);
is(tally(@res), 'status 503=40', '40 more requests: all 503, none hangs');
ok(!grep({ $_->{t_end} - $_->{t_start} > 1 } @res),
    'each answered at once');
my $r = $res[-1];
is($r->{headers}{'content-type'}, 'application/json', '503: JSON');
is(ref $r->{json} && $r->{json}{error}{type}, 'unavailable',
    '503: error type unavailable') or diag $r->{body};
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, '503: Retry-After');
my %seen_w = map { ($_->{headers}{'x-ds-worker'} // '?') => 1 } @res;
note 'workers that answered 503: ' . join ', ', sort keys %seen_w;
@res = map { $t->get('nosuch', '/', timeout => 3) } 1 .. 5;
is(tally(@res), 'status 503=5', 'every service: 503 (the state is unknown)');
# the stats location answers in the same JSON error shape as the gateway
$r = $t->request('GET', '/stats', host => '127.0.0.1',
    port => $t->stats_port, timeout => 3);
is($r->{status}, 503, 'stats: 503 while the state is gone');
is_deeply(ref $r->{json} && [sort keys %{ $r->{json}{error} || {} }],
    [qw(code message param type)], 'stats: the one JSON error shape')
    or diag $r->{body};
is(ref $r->{json} && $r->{json}{error}{type}, 'unavailable',
    'stats: error type unavailable');

sleep 0.5;      # a few more watch intervals
my @err = grep { /\[error\]/ && /\Q$state\E/ }
    split /\n/, substr($t->error_log, $mark);
note join "\n", @err;
ok(@err >= 1, 'an [error] line names the state');
cmp_ok(scalar @err, '<=', scalar @workers,
    'at most one per worker, not one per request or per interval')
    or diag join "\n", @err;
my $n_err = @err;
many('one', 20, timeout => 3);
sleep 0.5;
@err = grep { /\[error\]/ && /\Q$state\E/ }
    split /\n/, substr($t->error_log, $mark);
is(scalar @err, $n_err, 'no new error line for further requests');

# ---- recovery -----------------------------------------------------------------------

$t0 = time;
$t->seed([svc('one', rep('r2')), svc('back', rep('r3'))]);
ok(-e "$state/data.mdb", 'the state is there again (dstack-seed)');
my $back = DsTest::wait_until(sub {
    my @r = many('back', 4, timeout => 3);
    return !grep { who($_) ne 'r3' } @r;
}, timeout => 5, interval => 0.05);
ok($back, 'requests succeed again, with the new state');
my $rec = time - $t0;
note sprintf 'recovered after %.2f s', $rec;
cmp_ok($rec, '<', 2, 'within a few watch intervals (200 ms)');
@res = (many('one', 20), many('back', 20));
is(tally(@res), 'r2=20, r3=20', '40 requests after recovery: all served '
    . 'by the new state');
%seen_w = map { ($_->{headers}{'x-ds-worker'} // '?') => 1 } @res;
is_deeply([sort keys %seen_w], \@workers, 'by both workers')
    or diag join ', ', sort keys %seen_w;
is_deeply([sort $t->workers], \@workers, 'no reload, no worker restarted');
ok($t->wait_log(qr/\Q$state\E" is available again/, from => $mark,
    timeout => 2), 'the recovery is logged');

# ---- data.mdb replaced by another state -------------------------------------------------

# A fresh state built elsewhere, with other services, moved into place:
# new inodes under the same names.  lock.mdb goes first: the workers watch
# data.mdb, and when they reopen the environment its lock file must be
# the one that belongs to the new data.mdb.
my $other = $t->dir . '/state-other';
$t->seed([svc('fresh', rep('r1')), svc('one', rep('r3'))], state => $other);
my $old_ino = (stat "$state/data.mdb")[1];
$mark = $t->log_size;
rename "$other/lock.mdb", "$state/lock.mdb" or die "rename: $!";
rename "$other/data.mdb", "$state/data.mdb" or die "rename: $!";
isnt((stat "$state/data.mdb")[1], $old_ino, 'data.mdb is a new file');
my $fresh = DsTest::wait_until(sub {
    my @r = (many('fresh', 3, timeout => 3), many('one', 3, timeout => 3));
    return tally(@r) eq 'r1=3, r3=3';
}, timeout => 5, interval => 0.05);
ok($fresh, 'the new state is served: a new service, a changed one')
    or diag tally(many('fresh', 3, timeout => 3)) . ' / '
        . tally(many('one', 3, timeout => 3));
@res = (many('fresh', 10), many('one', 10), many('back', 10));
is(tally(@res), 'r1=10, r3=10, status 404=10',
    'and only it: the service of the old state is gone (404)');
# the replaced state takes writes: the next change is seen
$t->seed([svc('later', rep('r2'))]);
is(tally(many('later', 4)), 'r2=4', 'a change to the new state is seen');
remove_tree($other);

# data.mdb alone replaced, lock.mdb left as it is (what a restore by "mv
# backup/data.mdb state/" does).  Twice, from states of k and k+1 write
# transactions, so that one of them does not match the transaction id the
# old lock.mdb holds.  Whatever the module does about it, a request gets
# either the new content or a 503, never some other snapshot.
for my $extra (0, 1) {
    my $o = $t->dir . "/state-other-$extra";
    my $svc = "only$extra";
    $t->seed([svc($svc, rep('r1')), svc('one', rep('r2'))], state => $o);
    $t->seed([svc($svc, rep('r1'))], state => $o) for 1 .. $extra;
    my $from = $t->log_size;
    rename "$o/data.mdb", "$state/data.mdb" or die "rename: $!";
    # each worker logs the replacement when it reopens
    DsTest::wait_until(sub {
        my @l = grep { /was removed or replaced/ }
            split /\n/, substr($t->error_log, $from);
        return @l >= @workers;
    }, timeout => 3);
    sleep 0.3;
    @res = (many($svc, 6, timeout => 3), many('one', 6, timeout => 3));
    my @wrong = grep { $_->{status} != 503 && who($_) ne 'r1'
        && who($_) ne 'r2' } @res;
    my @new = grep { $_->{status} == 200 } @res;
    is(scalar @wrong, 0, 'data.mdb alone replaced (a state seeded '
        . ($extra ? 'twice' : 'once') . '): new content or 503, nothing '
        . 'else')
        or diag "$svc: " . tally(@res[0 .. 5]) . '; one: '
            . tally(@res[6 .. 11]);
    note "$svc: " . tally(@res[0 .. 5]) . '; one: ' . tally(@res[6 .. 11]);
    remove_tree($o);
}

# ---- a 1000-replica set swapped back and forth under load ------------------------------

# Four backends listening on every address: 127.0.A.B:PORT reaches them
# all, so a set of 1000 distinct live addresses needs only 4 ports.
my @wide = map { $t->backend(name => "w$_", host => '0.0.0.0',
    nodelay => 1) } 1 .. 4;
my @ports = map { (split /:/)[1] } @wide;

# set K: 127.0.K.1..250 on each of the 4 ports
sub wide_set {
    my $k = shift;
    return [map { my $p = $ports[int($_ / 250)];
        { addr => "127.0.$k." . (1 + $_ % 250) . ":$p", state => 'ready',
          version => $k } } 0 .. 999];
}

$t->seed([svc('wide'), { op => 'replicas', service => 'wide',
    replicas => wide_set(1) }]);
is(scalar @{ $t->dump->{services}{wide}{replicas}{list} }, 1000,
    'a set of 1000 replicas');
@res = many('wide', 20);
ok(!grep({ ($_->{json}{local} // '') !~ /^127\.0\.1\.\d+:\d+$/ } @res),
    'set 1 answers on 127.0.1.x') or diag explain [map { $_->{json}{local} }
        @res];

my $load = $t->start_load(clients => 4, host => 'wide.test.local',
    path => '/w', keep => 1);
my $swaps = 0;
my ($n_local, $n_seen) = (0, 0);
$t0 = time;
while ($swaps < 20 || time - $t0 < 3) {
    my $k = 2 + $swaps % 2;         # 2, 3, 2, 3, ...
    $t->seed([{ op => 'replicas', service => 'wide',
        replicas => wide_set($k) }]);
    $swaps++;
    # what a request sees right after the commit: the new set only
    my $x = $t->get('wide', '/check');
    $n_seen++;
    $n_local++ if ($x->{json}{local} // '') =~ /^127\.0\.$k\.\d+:/;
    last if time - $t0 > 30;
}
my $res = $t->stop_load($load);
note "$swaps swaps in " . sprintf('%.1f', time - $t0) . " s; $res->{total} "
    . "requests; retried on a closed keep-alive connection: "
    . "$res->{retried}";
cmp_ok($swaps, '>=', 20, 'at least 20 swaps of 1000 replicas');
cmp_ok($res->{total}, '>=', 100, 'a load ran meanwhile (at least 100)');
is($res->{ok}, $res->{total}, 'swaps under load: every request 200')
    or diag join "\n", @{ $res->{errors} }[0 .. 19];
is(join(',', sort keys %{ $res->{status} }), '200', 'no other status')
    or diag explain $res->{status};
is($res->{retried}, 0, 'no keep-alive connection was closed under a client');
is($n_local, $n_seen, 'after each swap the next request goes to the new '
    . 'set');
my %sets;
/^127\.0\.(\d+)\./ and $sets{$1}++ for keys %{ $res->{locals} };
ok($sets{2} && $sets{3}, 'the load reached both sets')
    or diag explain \%sets;
cmp_ok(scalar keys %{ $res->{locals} }, '>', 50,
    'and many distinct replica addresses');
my $ws = $t->service_stats('wide');
is(scalar @{ $ws->{replicas} || [] }, 1000, 'the stats list 1000 replicas');
ok(!grep({ $_->{failures} } @{ $ws->{replicas} || [] }),
    'no replica failure counted');
ok(DsTest::wait_until(sub { $t->service_stats('wide')->{inflight} == 0 },
    timeout => 3), 'nothing left in flight');
is_deeply([sort $t->workers], \@workers, 'no reload, no worker restarted');

$t->done;
