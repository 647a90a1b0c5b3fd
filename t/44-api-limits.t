#!/usr/bin/perl
# The API's connection limits against real controld, nginx and replicas:
# controld.yml's api_connections, api_header_timeout, api_body_timeout
# (bad values refused, naming the key); a slowloris client (many
# connections, each half a request line, then silence) does not keep a
# real `dstackctl ps` from its answer, and its connections are closed
# once api_header_timeout has passed; a quiet `dstackctl logs -f` lives
# on well past both timeouts and still shows the next line; an upload
# slower than the header timeout in total but never silent for long is
# stored, and one that stops sending is closed after api_body_timeout;
# a client that trickles its request head a byte at a time is closed
# once api_header_timeout has passed, on a new connection and on one
# kept alive after a request.
#
# DSTACK_T44_DEFAULTS=1 runs it with the shipped defaults instead (no
# api_* keys in controld.yml): slower, and what a binary from before
# these settings can be checked with.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use DsSec;
use Digest::SHA qw(sha256_hex);
use IO::Compress::Gzip qw(gzip $GzipError);
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use POSIX ();
use Time::HiRes qw(time sleep);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $defaults = $ENV{DSTACK_T44_DEFAULTS};
my %lim = $defaults ? (conns => 64, header => 5, body => 60)
                    : (conns => 16, header => 2, body => 4);
my $extra = $defaults ? '' : <<"EOF";
api_connections: $lim{conns}
api_header_timeout: $lim{header}s
api_body_timeout: $lim{body}s
EOF

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t, controld_extra => $extra);
my $dir = $t->dir;

# ---- bad values: refused, naming the key -----------------------------------------

SKIP: {
    skip 'the defaults run', 5 if $defaults;
    for my $bad ('api_connections: 3', 'api_connections: lots',
        'api_header_timeout: 1500ms', 'api_header_timeout: 2h',
        'api_body_timeout: 0')
    {
        my ($key) = $bad =~ /^(\w+)/;
        DsTest::_write("$dir/bad.yml", $c->controld_conf(extra => $bad));
        my $out = `'@{[ DsCli::controld_path() ]}' -n -f '$dir/bad.yml' 2>&1`;
        my $rc = $? >> 8;
        ok($rc != 0 && $out =~ /bad\.yml:\d+:\d+: \Q$key\E: /,
            "\"$bad\" is refused, naming the key") or diag "rc $rc: $out";
    }
}

$c->start_controld;
$t->start;
my $sock = $c->api_socket;
my $admin = $c->admin_token;

my $said = "at most $lim{conns} connections, closed after $lim{header} s "
    . "idle ($lim{body} s for an admin's request)";
like($c->controld_log, qr/\Q$said\E/, 'the API process took the limits');

my $app = $c->app_dir('app', {
    'svc.dstack.yml' => <<'EOF',
type: service
name: quiet
port: 8000
commands:
  - exec python3 -m http.server 8000
EOF
});
my $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '-d'], dir => $app,
    timeout => 60);
is($r->{rc}, 0, 'apply quiet') or diag $r->{err};
ok(DsTest::wait_until(sub {
    my $run = $c->run_named('quiet');
    $run && $run->{status} eq 'running'
        && grep { $_->{ready} } @{ $run->{replicas} };
}, timeout => 60, interval => 0.2), 'quiet becomes ready');

# ---- a quiet logs -f outlives both timeouts ----------------------------------------

my $follow = $c->cli_bg(['logs', 'quiet', '-f']);
is($t->get('quiet', '/first', headers => [Authorization => "Bearer $admin"])
    ->{status}, 404, 'a request for the log');
ok(DsTest::wait_until(sub { DsTest::_slurp($follow->{out}) =~ m{GET /first} },
    timeout => 10), 'logs -f shows it');

# ---- slowloris: many half requests, then silence ----------------------------------

# more connections than the limit; the rest wait in the socket's backlog
# (128), as the real client's does
my $n = $lim{conns} + 24;
my (@slow, %closed);
my $t0 = time;
for my $i (1 .. $n) {
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock)
        or BAIL_OUT("connect $sock: $!");
    syswrite($s, 'GET /api/ru');
    push @slow, $s;
}
my $sel = IO::Select->new(@slow);

# what the slow connections get meanwhile: EOF (or a reset) once closed
sub watch_slow {
    my $until = shift;
    while ($sel->count && time < $until) {
        for my $s ($sel->can_read(0.05)) {
            my $got = sysread($s, my $buf, 4096);
            next if $got;
            $closed{"$s"} = time - $t0;
            $sel->remove($s);
        }
    }
}

my $ps = $c->cli_bg(['ps']);
my ($ps_rc, $ps_t);
while (!defined $ps_rc && time - $t0 < 30) {
    watch_slow(time + 0.1);
    if (waitpid($ps->{pid}, POSIX::WNOHANG()) == $ps->{pid}) {
        $ps_rc = $? >> 8;
        $ps_t = time - $t0;
    }
}
kill 'KILL', $ps->{pid} unless defined $ps_rc;
is($ps_rc, 0, "dstackctl ps is answered while $n half requests wait")
    or diag DsTest::_slurp($ps->{err});
like(DsTest::_slurp($ps->{out}), qr/^ quiet\s+local\s.*running/m,
    'and lists the run');
# its connection waits behind theirs: at most one timeout per round of
# api_connections, and a second of slack for this shared machine
my $rounds = int(($n + $lim{conns}) / $lim{conns});
ok(defined $ps_t && $ps_t < $rounds * $lim{header} + 3,
    sprintf('within %d rounds of %d s (%.1f s)', $rounds, $lim{header},
        $ps_t // -1));

watch_slow($t0 + $rounds * $lim{header} + 5);
is(scalar keys %closed, $n, "all $n slow connections were closed")
    or diag sprintf('%d still open after %.1f s', $sel->count, time - $t0);
my @early = grep { $_ < $lim{header} - 0.5 } values %closed;
is(scalar @early, 0, "none before $lim{header} s of silence");
my ($last) = sort { $b <=> $a } values %closed;
ok(defined $last && $last < $rounds * $lim{header} + 3,
    sprintf('the last one after %.1f s', $last // -1));
close $_ for @slow;

# ---- trickling heads: a byte every half second, never the end ------------------------

# the idle timeout never ends these: the head's own deadline does, from
# the connection's start, and from the end of the previous request on a
# kept-alive one (an admin's, whose idle timeout is api_body_timeout)
my @trickle;
for my $i (1 .. 4) {
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock)
        or BAIL_OUT("connect $sock: $!");
    if ($i > 2) {
        syswrite($s, "GET /api/health HTTP/1.1\r\nHost: localhost\r\n"
            . "Authorization: Bearer $admin\r\n\r\n");
        my $got = '';
        my $one = IO::Select->new($s);
        while ($got !~ /\r\n\r\n.*\}\n/s && $one->can_read(5)) {
            sysread($s, my $buf, 4096) or last;
            $got .= $buf;
        }
        BAIL_OUT("no 200 on a kept-alive connection: $got")
            unless $got =~ m{^HTTP/1\.1 200};
    }
    push @trickle, { s => $s, t0 => time,
        left => "GET /api/runs HTTP/1.1\r\nHost: localhost\r\nX-Pad: "
            . ('a' x 200) };
}
my $tend = time + $lim{header} + 6;
local $SIG{PIPE} = 'IGNORE';
while (time < $tend && grep { !$_->{closed} } @trickle) {
    for my $tr (grep { !$_->{closed} } @trickle) {
        my $sel1 = IO::Select->new($tr->{s});
        if ($sel1->can_read(0)) {
            my $got = sysread($tr->{s}, my $buf, 4096);
            $tr->{closed} = time - $tr->{t0} unless $got;
            next unless $got;
        }
        my $b = substr($tr->{left}, 0, 1, '');
        $tr->{closed} = time - $tr->{t0}
            unless length $b && defined syswrite($tr->{s}, $b);
    }
    sleep 0.5;
}
my @when = map { $_->{closed} // 'open' } @trickle;
is(scalar(grep { /^[\d.]+$/ && $_ >= $lim{header} - 0.5
        && $_ < $lim{header} + 2 } @when), 4,
    "4 trickling heads, 2 of them after a request, closed after "
    . "$lim{header} s: " . join(', ', map { /open/ ? $_ : sprintf('%.1f', $_) }
        @when));
close $_->{s} for @trickle;

# ---- the follower, quiet all along ---------------------------------------------

my $quiet_for = time - $t0;
sleep($lim{body} + 1 - $quiet_for) if $quiet_for < $lim{body} + 1;
ok(waitpid($follow->{pid}, POSIX::WNOHANG()) == 0,
    sprintf('logs -f still runs after %.0f s without a line',
        time - $t0));
$t->get('quiet', '/second', headers => [Authorization => "Bearer $admin"]);
ok(DsTest::wait_until(sub { DsTest::_slurp($follow->{out}) =~ m{GET /second} },
    timeout => 10), 'and shows the next line');
kill 'INT', $follow->{pid};
is($c->reap($follow)->{rc}, 0, 'Ctrl-C ends it with exit 0');

# ---- uploads: slow is fine, silent is not ------------------------------------------

# an archive sent in pieces, pause seconds apart; returns the status
# line, or '' when the connection was closed first
sub upload {
    my ($pieces, $pause) = @_;
    my $raw = join '', map { sprintf("%08d %s\n", $_, 'z' x 500) } 1 .. 4000;
    my $tgz;
    gzip(\$raw => \$tgz, Minimal => 1, -Level => 0) or die $GzipError;
    my $hash = sha256_hex($tgz);
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $sock)
        or die "connect: $!";
    syswrite($s, "PUT /api/code/$hash HTTP/1.1\r\nHost: localhost\r\n"
        . "Authorization: Bearer $admin\r\nContent-Length: "
        . length($tgz) . "\r\nConnection: close\r\n\r\n");
    my $each = int(length($tgz) / $pieces) + 1;
    local $SIG{PIPE} = 'IGNORE';
    for my $i (0 .. $pieces - 1) {
        sleep $pause if $i;
        my $piece = substr($tgz, $i * $each, $each);
        last if !length $piece;
        defined syswrite($s, $piece) or last;
    }
    my $resp = '';
    my $sel1 = IO::Select->new($s);
    my $end = time + 15;
    while (time < $end && $sel1->can_read($end - time)) {
        my $got = sysread($s, my $buf, 4096);
        last unless $got;
        $resp .= $buf;
    }
    close $s;
    my ($status) = $resp =~ m{^HTTP/1\.1 (\d+)};
    return ($status // '', length $tgz);
}

# silent longer than api_header_timeout, shorter than api_body_timeout:
# an admin's upload has the longer one
my $u0 = time;
my $pause = $defaults ? $lim{header} / 2 : ($lim{header} + $lim{body}) / 2;
my ($st, $size) = upload(4, $pause);
is($st, 201, sprintf('a %d-byte upload in 4 pieces %.1f s apart: stored',
    $size, $pause));

SKIP: {
    skip 'the defaults run (a minute of silence)', 2 if $defaults;
    $u0 = time;
    ($st) = upload(2, $lim{body} + 3);
    my $took = time - $u0;
    is($st, '', 'an upload silent for longer than api_body_timeout: '
        . 'closed without an answer');
    ok($took < $lim{body} + 3 + 12, sprintf('(after %.1f s)', $took));
}

my $h = DsSec::api($t, 'GET', '/api/health', token => $admin, via => $sock);
is($h->{status}, 200, 'the API still answers');

$c->finish;
$t->done;
