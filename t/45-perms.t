#!/usr/bin/perl
# Who can reach what, after controld's first start as root with the
# dedicated group of the install ("group: dstack", created here as
# dstack-setup and the demo create it when the host has none): the state
# directory, its LMDB files and both sockets belong to the group and to
# no one else; the TLS private keys (the CA's above all), the secrets key
# and the client configuration are root's alone.  Checked by modes and by
# processes: a user in the group reads the state (as nginx's workers
# must) but not a key; an unrelated user in nogroup reads nothing and
# connects to neither socket.  A key left readable by the group (a copy,
# a restored backup) is made 0600 again at the next start, and said so.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Fcntl qw(O_RDONLY);
use IO::Socket::UNIX;
use POSIX ();
use Socket qw(SOCK_STREAM SOCK_DGRAM);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();
plan skip_all => 'the first start as root: needs root' if $> != 0;
if (!getgrnam('dstack')) {
    system('groupadd --system dstack >/dev/null 2>&1');
    plan skip_all => 'no group dstack and groupadd cannot make it'
        unless getgrnam('dstack');
}
my $dstack_gid = getgrnam('dstack');
my $nogroup_gid = getgrnam('nogroup') // getgrnam('nobody');
plan skip_all => 'no group nogroup here' unless defined $nogroup_gid;

# users no file here belongs to: not nobody (the API's user)
my ($stranger, $member) = (64991, 64992);

my $t = DsTest->new(seed_empty => 0);
my $d = $t->dir . '/controld';
my $s = DsStack->new($t, extra => "group: dstack\n"
    . "notify_socket: $d/notify.sock");
# controld makes the state directory itself, as on a fresh host
rmdir $t->state or die "rmdir " . $t->state . ": $!";
$s->start_controld;

my $state = $t->state;
my %want = (
    $state                 => [ 'dstack', 0750 ],
    "$state/data.mdb"      => [ 'dstack', 0660 ],
    "$state/lock.mdb"      => [ 'dstack', 0660 ],
    "$d/api.sock"          => [ 'dstack', 0660 ],
    "$d/notify.sock"       => [ 'dstack', 0660 ],
    "$state/tls/ca.key"    => [ 'root', 0600 ],
    "$state/tls/gateway.key" => [ 'root', 0600 ],
    "$state/secrets.key"   => [ 'root', 0600 ],
    "$d/client.yml"        => [ 'root', 0600 ],
);

sub mode_of {
    my @st = stat $_[0] or return 'missing';
    return sprintf '%s:%s %04o', scalar getpwuid($st[4]) // $st[4],
        scalar getgrgid($st[5]) // $st[5], $st[2] & 07777;
}

for my $f (sort keys %want) {
    my ($group, $mode) = @{ $want{$f} };
    (my $name = $f) =~ s{^\Q$state\E}{<state>};
    $name =~ s{^\Q$d\E}{<dir>};
    is(mode_of($f), sprintf('root:%s %04o', $group, $mode),
        "$name: root:$group " . sprintf('%04o', $mode));
}

# Runs the probes as uid/gid (no other group) in a child; returns a hash
# probe => "ok" or the errno text.
sub probe_as {
    my ($uid, $gid) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        $) = "$gid $gid";
        $( = $gid;
        POSIX::setuid($uid) or POSIX::_exit(3);
        POSIX::_exit(4) if $> != $uid || $< != $uid || $) ne "$gid $gid";
        my %res;
        for my $f ("$state/data.mdb", "$state/tls/ca.key",
                   "$state/tls/gateway.key", "$state/secrets.key")
        {
            $res{"read $f"} = sysopen(my $fh, $f, O_RDONLY) ? 'ok' : "$!";
        }
        $res{"list $state"} = opendir(my $dh, $state) ? 'ok' : "$!";
        my $api = IO::Socket::UNIX->new(Type => SOCK_STREAM,
            Peer => "$d/api.sock");
        $res{'connect api.sock'} = $api ? 'ok' : "$!";
        my $nt = IO::Socket::UNIX->new(Type => SOCK_DGRAM,
            Peer => "$d/notify.sock");
        $res{'connect notify.sock'} = $nt ? 'ok' : "$!";
        print $w map { "$_\t$res{$_}\n" } sort keys %res;
        close $w;
        POSIX::_exit(0);
    }
    close $w;
    my %res = map { chomp; split /\t/, $_, 2 } <$r>;
    waitpid $pid, 0;
    is($? >> 8, 0, "the probe ran as $uid:$gid") or return {};
    return \%res;
}

my $eacces = do { local $! = POSIX::EACCES; "$!" };

my $m = probe_as($member, $dstack_gid);
is($m->{"read $state/data.mdb"}, 'ok',
    'a user in the group dstack reads the state (as nginx\'s workers do)');
is($m->{'connect api.sock'}, 'ok', 'and connects to the API socket');
is($m->{'connect notify.sock'}, 'ok', 'and to the notify socket');
for my $k (qw(tls/ca.key tls/gateway.key secrets.key)) {
    is($m->{"read $state/$k"}, $eacces, "but cannot read $k");
}

my $o = probe_as($stranger, $nogroup_gid);
for my $p (sort keys %$o) {
    (my $name = $p) =~ s{\Q$state\E}{<state>};
    is($o->{$p}, $eacces, "an unrelated user in nogroup: $name refused");
}
ok(scalar(keys %$o) >= 7, 'every probe ran');

# ---- a key left readable is made private again ----------------------------

$s->stop_controld;
chown 0, $dstack_gid, "$state/tls/ca.key";
chmod 0644, "$state/tls/ca.key";
chmod 0640, "$state/tls/gateway.key";
my $ca_before = DsTest::_slurp("$state/tls/ca.key");
$s->start_controld;
is(mode_of("$state/tls/ca.key") =~ s/^\S+ //r, '0600',
    'a CA key left 0644 is 0600 after the next start');
is(mode_of("$state/tls/gateway.key") =~ s/^\S+ //r, '0600',
    'a gateway key left 0640 too');
is(DsTest::_slurp("$state/tls/ca.key"), $ca_before,
    'the same CA key (its certificate stays trusted)');
my $said = 'was readable by others than its owner (mode 644): made it 0600';
like($s->log_text, qr{tls: \S+/ca\.key \Q$said\E},
    'controld says which key it made private and what it was');
$m = probe_as($member, $dstack_gid);
is($m->{"read $state/tls/ca.key"}, $eacces,
    'the group cannot read the CA key any more');

$s->finish;
$t->done;
