#!/usr/bin/perl
# A replica's log stays under local.log_max_size: once over, controld
# moves it to "<log>.1" and empties it in place (the replica writes with
# O_APPEND and carries on); a follower of the log goes on from the start
# of the emptied file and misses nothing written after the rotation.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t,
    extra => "backends:\n  local:\n    log_max_size: 8KB\n");
$s->start_controld;
$t->start;

my $code = $s->upload($s->app_files);
my $r = $s->apply($s->app_spec(replicas => 1), name => 'chatty',
    code => $code);
is($r->{status}, 201, 'apply: 201') or diag $r->{body};
ok($s->wait_ready('chatty', 1), 'the replica is ready');

my $log = $s->replicas_dir . '/chatty/0-1.log';
ok(-f $log, 'its log is there');

# a follower from the current end
my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
    Peer => $s->socket_path) or die "connect: $!";
DsTest::_send_all($sock, "GET /api/runs/chatty/logs?replica=0&follow=1"
    . "&offset=" . (-s $log) . " HTTP/1.1\r\nHost: x\r\nAuthorization: "
    . "Bearer " . $s->admin_token . "\r\n\r\n", time + 5);
my $sel = IO::Select->new($sock);
my $buf = '';
sub pump {
    my ($until, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline && $buf !~ $until) {
        next unless $sel->can_read(0.1);
        sysread($sock, $buf, 65536, length $buf) or last;
    }
    return $buf =~ $until;
}
ok(pump(qr/\r\n\r\n/, 5), 'the follower gets its header');

# about 20 KB of log lines
$s->get('chatty', '/' . ('x' x 60) . "/$_") for 1 .. 150;
ok(DsTest::wait_until(sub { -s "$log.1" }, timeout => 10),
    'over 8 KB, the log moves to .1');
cmp_ok(-s "$log.1", '>=', 8 * 1024, '.1 has what was over the limit');
cmp_ok(-s $log, '<', 8 * 1024, 'the log itself is small again');
like($s->log_text, qr/logs of run "chatty" replica 0: \d+ bytes moved to \S+\.log\.1/,
    'controld says so');

is($s->get('chatty', '/after-the-rotation')->{status}, 200,
    'the replica serves on');
ok(pump(qr{GET /after-the-rotation}, 10),
    'the follower sees what the replica writes after the rotation');
like(DsTest::_slurp($log), qr{GET /after-the-rotation},
    'it is in the emptied log');
$r = $s->api('GET', '/api/runs/chatty/logs?replica=0');
like($r->{body}, qr{GET /after-the-rotation}, 'and in GET .../logs');
close $sock;

$s->finish;
$t->done;
