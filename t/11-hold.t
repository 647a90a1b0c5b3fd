#!/usr/bin/perl
# Scale from zero in the gateway: a service flagged "hold" (min replicas
# 0) keeps requests that find no ready replica until one is ready, tells
# controld at once over the dstack_notify datagram socket, bounds the
# queue (429) and the wait (503), and frees the place of a client that
# gives up.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use IO::Socket::UNIX;
use Socket qw(SOCK_DGRAM);
use Time::HiRes qw(time sleep);

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my $sock_path = $t->dir . '/notify.sock';
my $notify = IO::Socket::UNIX->new(Type => SOCK_DGRAM, Local => $sock_path)
    or die "notify socket: $!";
chmod 0777, $sock_path;
$t->{opts}{http} = ($t->{opts}{http} // '')
    . "dstack_notify $sock_path;\ndstack_hold_poll 10ms;\n";

sub hold_svc {
    my ($name, %o) = @_;
    return { op => 'service', name => $name, auth => DsTest::false,
             hold => DsTest::true, hold_max => $o{max} // 1000,
             hold_timeout_ms => $o{timeout} // 20000 };
}

$t->seed([hold_svc('cold'), hold_svc('tiny', max => 2),
          hold_svc('slow', timeout => 600), hold_svc('gone'),
          { op => 'service', name => 'nohold', auth => DsTest::false }]);
$t->start;

sub held { ($t->service_stats($_[0]) // {})->{hold} // {} }

# sends a request and returns the socket without reading the answer
sub send_only {
    my ($service, $path) = @_;
    my $s = DsTest::_connect($t->port, 5) or die "connect: $!";
    DsTest::_send_all($s, $t->build_request('GET', $path // '/',
        host => "$service." . $t->domain), time + 5);
    return $s;
}

sub read_answer {
    my ($s, $timeout) = @_;
    my $r = eval { DsTest::_read_response($s, method => 'GET', t0 => time,
                                           timeout => $timeout // 10) };
    close $s;
    return $r || { status => 0, error => $@ };
}

# ---- without hold: 503 at once ------------------------------------------------

my $r = $t->get('nohold', '/');
is($r->{status}, 503, 'a service without hold answers 503 with no replica');

# ---- held until the first replica is ready --------------------------------------

my $t0 = time;
my @socks = map { send_only('cold', "/req$_") } 1 .. 5;

my $msg = '';
my $sel = IO::Select->new($notify);
if ($sel->can_read(5)) {
    $notify->recv($msg, 256);
}
my $notified = time - $t0;
is($msg, "hold cold\n", 'controld is told which service waits');
cmp_ok($notified, '<', 1.0, 'the notice comes at once, not at a poll')
    or diag "notice after $notified s";
diag sprintf('first held request -> notice: %.1f ms', $notified * 1000);

ok(DsTest::wait_until(sub { (held('cold')->{held} // 0) == 5 }),
    'the stats count 5 held requests') or diag explain held('cold');

sleep 0.5;
my $sel2 = IO::Select->new(@socks);
ok(!$sel2->can_read(0), 'no held request got an answer meanwhile');

my $addr = $t->backend(name => 'c1');
my $ready_at = time;
$t->seed([{ op => 'replicas', service => 'cold',
            replicas => [{ addr => $addr, state => 'ready' }] }]);
my @res = map { read_answer($_) } @socks;
my $first = time - $ready_at;
is(join(' ', map { $_->{status} } @res), '200 200 200 200 200',
    'every held request is served once a replica is ready');
is_deeply([sort map { $_->{json} ? $_->{json}{path} : '' } @res],
    [map { "/req$_" } 1 .. 5], 'each reached the replica as sent');
cmp_ok($first, '<', 2, 'they were sent on promptly');
diag sprintf('replica ready -> 5 held answers read: %.1f ms', $first * 1000);

my $h = held('cold');
is($h->{held}, 0, 'nothing held any more');
is($h->{total}, 5, '5 requests were held in all');
is($h->{cold_starts}, 1, 'one cold start counted');
cmp_ok($h->{cold_start_ms_sum}, '>=', 400, 'its time to ready is counted');

# ---- the queue is bounded --------------------------------------------------------

my @tiny = map { send_only('tiny', '/') } 1 .. 2;
ok(DsTest::wait_until(sub { (held('tiny')->{held} // 0) == 2 }),
    'two requests held for "tiny"');
$r = $t->get('tiny', '/');
is($r->{status}, 429, 'past hold_max: 429');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
is(held('tiny')->{rejected}, 1, 'the rejection is counted');
close $_ for @tiny;

# ---- the wait is bounded ---------------------------------------------------------

$t0 = time;
$r = $t->get('slow', '/', timeout => 10);
my $waited = time - $t0;
is($r->{status}, 503, 'past hold_timeout: 503');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
cmp_ok($waited, '>=', 0.5, 'after waiting about hold_timeout');
cmp_ok($waited, '<', 3, '... and not much longer');
is(held('slow')->{timeouts}, 1, 'the timeout is counted');
is(held('slow')->{held}, 0, 'and its place freed');

# ---- a client that gives up frees its place ---------------------------------------

my $g = send_only('gone', '/');
ok(DsTest::wait_until(sub { (held('gone')->{held} // 0) == 1 }),
    'one request held for "gone"');
close $g;
ok(DsTest::wait_until(sub { (held('gone')->{held} // 1) == 0 }),
    'its place is freed when the client disconnects');
is(held('tiny')->{held}, 0, 'the closed "tiny" clients freed theirs too');

$t->allow_log(qr/client prematurely closed connection/);
$t->done;
