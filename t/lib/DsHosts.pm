package DsHosts;

=head1 NAME

DsHosts - test "GPU hosts": network namespaces with a real OpenSSH server
each, for tests of SSH fleets (root only, Linux, core Perl only)

=head1 SYNOPSIS

    use lib 't/lib';
    use DsHosts;
    use Test::More;
    if (my $why = DsHosts::available()) { plan skip_all => $why }

    my $h = DsHosts->new(n => 3, jump => 1,
        host_env => [ { DSTACK_NVIDIA_SMI => $fake }, {}, {} ]);
    my ($rc, $out) = $h->ssh(0, 'echo $DSTACK_HOST_DIR');
    my $yaml = $h->fleet_yaml(name => 'f', hosts => [0, 1, 2],
        blocks => 2, jump_hidden => 1);
    $h->kill_host(1); $h->restore_host(1);
    $h->partition(2); $h->heal(2);
    $h->rekey(0);
    $h->cleanup;          # or let DESTROY / END do it

=head1 LAYOUT

A bridge C<dsb<tag>> (tag: the pid modulo 100000, the next free one) in
the root namespace with 10.A.B.1/24 (A in 200..211, derived from the pid,
the next /24 without a route here; controld's 10.213/16 and Podman's
10.88/16 are never used).  Host i (0-based) is the namespace C<dsh<pid>-i>
with 10.A.B.(10+i) on a veth into the bridge (root end C<dsv<tag>-i>), a
default route via .1, and sshd on port 2200+i.  With C<jump>: the host
C<jump> (namespace C<dsh<pid>-jump>, 10.A.B.(10+n+1), port 2200+n) and the
host C<hidden> (namespace C<dsh<pid>-hidden>, 172.31.254.2/30, port
2200+n+1), linked only to the jump host (172.31.254.1/30 there); the root
namespace has no route to it, it is reached with C<ssh -J>.

Each sshd: C<sshd -D -e -f DIR/hostI/sshd_config> under C<ip netns exec>,
its own ed25519 host key, C<PermitRootLogin prohibit-password>, the
harness's authorized_keys, C<StrictModes no>, C<UsePAM no>, C<LogLevel
VERBOSE> to C<DIR/hostI/sshd.log>, and C<SetEnv DSTACK_HOST_DIR=DIR/hostI/state>
plus the host's C<host_env>.

=head1 API

=over

=item DsHosts::available()

'' when hosts can be made here, else the reason (not root, no C<ip netns>,
no sshd / ssh / ssh-keygen).

=item DsHosts->new(%o)

C<n> (3) hosts, C<jump> (0) adds the jump and hidden hosts, C<dir> (a new
temporary directory), C<host_env> (arrayref of hashrefs, per host, extra
SetEnv pairs; C<jump_env>, C<hidden_env> for those two), C<port_base>
(2200).  Returns when every sshd accepts the harness's key; dies with the
sshd log when one does not listen within C<start_timeout> (10) s, or does
not let the key in within 3 x start_timeout (ssh is slow on a busy
machine); the same for restore_host, start_sshd and rekey.

=item Accessors

C<hosts> (list of the n regular hosts), C<all_hosts> (with jump, hidden),
C<host(I)>, C<jump>, C<hidden>: hashrefs C<{ name, ns, ip, port, dir,
state_dir, host_key, host_key_pub, fingerprint, log, index }>.  C<key>: the
client's private key (C<key . '.pub'> the public one), C<bridge>,
C<bridge_ip>, C<dir>, C<ssh_config> (a client config file: C<ssh -F
$h-E<gt>ssh_config host0|host1|...|jump|hidden>, root, the key, no host
key checks; C<hidden> goes through C<jump>), C<ssh_args(I)> (the argv of
C<ssh> to that host, without the command).

Wherever a host is named, I is an index (0..n-1), C<'jump'>, C<'hidden'>
or a host hashref.

=item $h->ssh(I, CMD, timeout => 30, input => BYTES)

Runs CMD on host I over ssh (BatchMode, no host key checks, C<-i key>);
returns (exit code, stdout, stderr); exit code 255: ssh failed; -1: the
timeout.

=item $h->fleet_yaml(name => 'f', hosts => [0,1,2], blocks => N|'auto', jump_hidden => 1, extra => TEXT)

The text of a dstack fleet file with those hosts (all regular hosts by
default); C<jump_hidden> adds the hidden host with a C<proxy_jump> to the
jump host.  C<key> overrides the identity_file.

=item Faults

C<kill_host(I)>: SIGKILL to every process in the namespace, the link down.
C<restore_host(I)>: the link up, sshd again (same host key), waits for it.
C<partition(I)> / C<heal(I)>: the link down / up only.  C<rekey(I)>:
sshd restarted with a new host key (C<fingerprint> changes).
C<stop_sshd(I)> / C<start_sshd(I)>: only the listening sshd.
C<set_env(I, K =E<gt> V, ...)>: more SetEnv pairs for the host's sessions
(its sshd starts again).

=item $h->pids(I), $h->listening(I, PORT), $h->link_up(I), $h->reachable(I)

The pids in the namespace; true when a TCP socket listens on PORT there;
true when the host's link is up; true when its sshd lets the key in (an
sftp session with no input: no shell, quicker than C<ssh true>).

=item $h->cleanup

Kills every process in the namespaces, deletes them, the veths and the
bridge.  DESTROY and an END block call it; SIGINT, SIGTERM and SIGHUP exit
(so END runs) unless the test handles them.  new() also removes what
killed tests left (namespaces C<dsh<pid>-*>, bridges and the directories
new() made, C<$TMPDIR/dstack-hosts-<pid>-*>, of pids that are gone):
C<DsHosts::sweep_stale()>.

=back

=cut

use strict;
use warnings;

use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Scalar::Util qw(weaken);
use Time::HiRes qw(time sleep);

our $SSHD = $ENV{DSTACK_SSHD} || '/usr/sbin/sshd';
our $DEBUG = $ENV{DSTACK_HOSTS_DEBUG};
our $HIDDEN_NET = '172.31.254';     # a /30 between jump and hidden only

my %LIVE;       # refaddr => object, for END and the signal handlers

sub _which {
    my $c = shift;
    return $c if $c =~ m{/} && -x $c;
    for my $d (split /:/, ($ENV{PATH} // '') . ':/usr/sbin:/sbin') {
        return "$d/$c" if $d ne '' && -x "$d/$c";
    }
    return undef;
}

sub available {
    return 'needs root (network namespaces, sshd)' if $> != 0;
    return 'no ip(8) (iproute2)' unless _which('ip');
    return 'no sshd (Debian package openssh-server)' unless -x $SSHD;
    for my $c (qw(ssh ssh-keygen)) {
        return "no $c (openssh-client)" unless _which($c);
    }
    my ($rc, undef, $err) = _run(['ip', 'netns', 'list']);
    return "ip netns does not work here: $err" if $rc;
    return '';
}

# ---- small process helpers -------------------------------------------------

sub _slurp {
    my $f = shift;
    open my $fh, '<', $f or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub _write {
    my ($f, $text, $mode) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $text;
    close $fh or die "$f: $!";
    chmod $mode, $f if defined $mode;
}

# _run([argv], timeout => s, input => bytes) -> (rc, stdout, stderr);
# rc -1 on timeout.  _spawn starts one, _collect waits for it.
my $RUN_N = 0;
sub _spawn {
    my ($argv, %o) = @_;
    my $tmp = $o{tmp} // ($ENV{TMPDIR} || '/tmp');
    my $base = "$tmp/.dshosts-$$-" . ++$RUN_N;
    my ($in, $out, $err) = ("$base.in", "$base.out", "$base.err");
    _write($in, $o{input} // '');
    print STDERR "# DsHosts: @$argv\n" if $DEBUG;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setpgid(0, 0);
        open STDIN, '<', $in or POSIX::_exit(127);
        open STDOUT, '>', $out or POSIX::_exit(127);
        open STDERR, '>', $err or POSIX::_exit(127);
        { exec @$argv }
        print STDERR "exec $argv->[0]: $!\n";
        POSIX::_exit(127);
    }
    return { pid => $pid, files => [$in, $out, $err],
             deadline => time + ($o{timeout} // 60) };
}

sub _collect {
    my $job = shift;
    my $pid = $job->{pid};
    my $rc;
    while (1) {
        my $w = waitpid($pid, WNOHANG);
        if ($w == $pid) {
            $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
            last;
        }
        if ($w < 0) { $rc = -2; last }
        if (time > $job->{deadline}) {
            kill 'KILL', -$pid;
            kill 'KILL', $pid;
            waitpid($pid, 0);
            $rc = -1;
            last;
        }
        sleep 0.005;
    }
    my ($in, $out, $err) = @{ $job->{files} };
    my ($o, $e) = (_slurp($out), _slurp($err));
    unlink $in, $out, $err;
    return ($rc, $o, $e);
}

sub _run { return _collect(_spawn(@_)) }

# runs a command that must succeed
sub _sys {
    my @argv = @_;
    my ($rc, $out, $err) = _run(\@argv, timeout => 30);
    die "DsHosts: @argv: exit $rc: $err$out" if $rc;
    return $out;
}

sub _alive { my $p = shift; return kill(0, $p) || $!{EPERM} }

# ---- stale leftovers -------------------------------------------------------

sub _netns_names {
    opendir(my $d, '/var/run/netns') or return ();
    my @n = grep { !/^\./ } readdir $d;
    closedir $d;
    return @n;
}

sub _kill_ns_procs {
    my $ns = shift;
    for my $try (1 .. 50) {
        my ($rc, $out) = _run(['ip', 'netns', 'pids', $ns], timeout => 10);
        my @p = grep { $_ != $$ } $out =~ /(\d+)/g;
        return 1 unless @p;
        kill 'KILL', @p;
        sleep 0.02;
    }
    return 0;
}

# removes namespaces and bridges of DsHosts objects whose process is gone
sub sweep_stale {
    for my $ns (_netns_names()) {
        next unless $ns =~ /^dsh(\d+)-/;
        next if $1 == $$ || _alive($1);
        _kill_ns_procs($ns);
        _run(['ip', 'netns', 'del', $ns]);
    }
    my (undef, $links) = _run(['ip', '-o', 'link', 'show', 'type', 'bridge']);
    for my $l (split /\n/, $links) {
        next unless $l =~ /^\d+:\s+(dsb\d+)[:@].*alias dshosts pid=(\d+)/;
        my ($br, $pid) = ($1, $2);
        next if $pid == $$ || _alive($pid);
        _run(['ip', 'link', 'del', $br]);
    }
    # the directories new() made, unless DSTACK_KEEP
    return if $ENV{DSTACK_KEEP};
    my $tmp = $ENV{TMPDIR} || '/tmp';
    if (opendir(my $d, $tmp)) {
        for my $e (readdir $d) {
            next unless $e =~ /^dstack-hosts-(\d+)-\w{6}$/;
            next if $1 == $$ || _alive($1);
            File::Path::remove_tree("$tmp/$e");
        }
        closedir $d;
    }
}

# ---- construction ----------------------------------------------------------

sub new {
    my ($class, %o) = @_;
    if (my $why = available()) { die "DsHosts: $why\n" }
    sweep_stale();
    my $n = $o{n} // 3;
    my $own = !defined $o{dir};
    my $dir = $o{dir} // tempdir("dstack-hosts-$$-XXXXXX", TMPDIR => 1,
                                 CLEANUP => 0);
    make_path($dir);
    chmod 0755, $dir;
    my $self = bless {
        dir => $dir, own_dir => $own, n => $n, owner => $$, opts => \%o,
        port_base => $o{port_base} // 2200, hosts => [], ns => [],
        links => [],
    }, $class;
    $LIVE{"$self"} = $self;
    weaken($LIVE{"$self"});
    _install_signals();
    eval { $self->_setup; 1 } or do {
        my $e = $@;
        eval { $self->cleanup };
        die $e;
    };
    return $self;
}

sub _install_signals {
    for my $sig (qw(INT TERM HUP)) {
        my $cur = $SIG{$sig};
        next if defined $cur && ref $cur;       # the test's own handler
        next if defined $cur && $cur ne '' && $cur ne 'DEFAULT';
        $SIG{$sig} = sub {
            print STDERR "# DsHosts: SIG$sig, cleaning up\n";
            exit(128 + ($sig eq 'INT' ? 2 : $sig eq 'TERM' ? 15 : 1));
        };
    }
}

# a bridge name and a /24 nobody uses here
sub _pick_net {
    my $self = shift;
    my (undef, $routes) = _run(['ip', '-4', 'route', 'show', 'table', 'all']);
    my (undef, $addrs) = _run(['ip', '-4', '-o', 'addr']);
    my $tag = $$ % 100000;
    for my $try (0 .. 200) {
        my $t = ($tag + $try) % 100000;
        next if -e "/sys/class/net/dsb$t";
        my $x = ($$ + $try * 7919) % (12 * 256);
        my ($a, $b) = (200 + int($x / 256), $x % 256);
        next if $routes =~ /\b10\.$a\.$b\.\d/ || $addrs =~ /\b10\.$a\.$b\.\d/;
        return ($t, "10.$a.$b");
    }
    die "DsHosts: no free bridge name / subnet\n";
}

sub _setup {
    my $self = shift;
    my $dir = $self->{dir};
    my $o = $self->{opts};
    -d '/run/sshd' or make_path('/run/sshd', { mode => 0755 });

    # the client key
    my $key = "$dir/id_ed25519";
    unlink $key, "$key.pub";
    _sys('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C',
         'dshosts-client', '-f', $key);
    chmod 0600, $key;
    $self->{key} = $key;
    _write("$dir/authorized_keys", _slurp("$key.pub"), 0644);

    my ($tag, $net) = $self->_pick_net;
    my $br = "dsb$tag";
    @$self{qw(tag net bridge bridge_ip)} = ($tag, $net, $br, "$net.1");
    _sys('ip', 'link', 'add', $br, 'type', 'bridge');
    $self->{made_bridge} = 1;
    _sys('ip', 'link', 'set', $br, 'alias', "dshosts pid=$$");
    _sys('ip', 'addr', 'add', "$net.1/24", 'dev', $br);
    _sys('ip', 'link', 'set', $br, 'up');

    my $n = $self->{n};
    my $pb = $self->{port_base};
    my @specs = map { { index => $_, id => $_, name => "host$_",
        ip => "$net." . (10 + $_), port => $pb + $_,
        env => ($o->{host_env} || [])->[$_] || {} } } 0 .. $n - 1;
    if ($o->{jump}) {
        push @specs, { index => 'jump', id => 'jump', name => 'jump',
            ip => "$net." . (10 + $n + 1), port => $pb + $n,
            env => $o->{jump_env} || {} };
        push @specs, { index => 'hidden', id => 'hidden', name => 'hidden',
            ip => "$HIDDEN_NET.2", port => $pb + $n + 1,
            env => $o->{hidden_env} || {}, via => 'jump' };
    }
    for my $s (@specs) {
        my $h = $self->_make_host($s);
        push @{ $self->{hosts} }, $h;
        $self->{by}{ $s->{id} } = $h;
    }
    $self->_write_client_config;
    $self->_start_sshd($_) for @{ $self->{hosts} };
    $self->_wait_sshd(@{ $self->{hosts} });
}

sub _make_host {
    my ($self, $s) = @_;
    my $ns = "dsh$$-$s->{id}";
    my $hdir = "$self->{dir}/$s->{name}";
    make_path("$hdir/state");
    my $h = { %$s, ns => $ns, dir => $hdir, state_dir => "$hdir/state",
              log => "$hdir/sshd.log", conf => "$hdir/sshd_config",
              host_key => "$hdir/ssh_host_ed25519_key" };
    _run(['ip', 'netns', 'del', $ns]) if -e "/var/run/netns/$ns";
    _sys('ip', 'netns', 'add', $ns);
    push @{ $self->{ns} }, $ns;
    _sys('ip', '-n', $ns, 'link', 'set', 'lo', 'up');
    if (!$s->{via}) {
        # a veth into the bridge
        my $v = "dsv$self->{tag}-" . ($s->{id} eq 'jump' ? 'j' : $s->{id});
        $h->{link} = $v;
        $h->{link_ns} = undef;      # the root namespace
        _sys('ip', 'link', 'add', $v, 'type', 'veth', 'peer', 'name', 'eth0',
             'netns', $ns);
        push @{ $self->{links} }, $v;
        _sys('ip', 'link', 'set', $v, 'master', $self->{bridge});
        _sys('ip', 'link', 'set', $v, 'up');
        _sys('ip', '-n', $ns, 'addr', 'add', "$h->{ip}/24", 'dev', 'eth0');
        _sys('ip', '-n', $ns, 'link', 'set', 'eth0', 'up');
        _sys('ip', '-n', $ns, 'route', 'add', 'default', 'via',
             $self->{bridge_ip});
    } else {
        # a /30 to the jump host only
        my $j = $self->{by}{ $s->{via} } or die "DsHosts: no $s->{via}\n";
        $h->{link} = 'hidden0';
        $h->{link_ns} = $j->{ns};
        _sys('ip', '-n', $j->{ns}, 'link', 'add', 'hidden0', 'type', 'veth',
             'peer', 'name', 'eth0', 'netns', $ns);
        _sys('ip', '-n', $j->{ns}, 'addr', 'add', "$HIDDEN_NET.1/30", 'dev',
             'hidden0');
        _sys('ip', '-n', $j->{ns}, 'link', 'set', 'hidden0', 'up');
        _sys('ip', '-n', $ns, 'addr', 'add', "$h->{ip}/30", 'dev', 'eth0');
        _sys('ip', '-n', $ns, 'link', 'set', 'eth0', 'up');
        _sys('ip', '-n', $ns, 'route', 'add', 'default', 'via',
             "$HIDDEN_NET.1");
    }
    $self->_host_key($h);
    $self->_write_sshd_config($h);
    return $h;
}

sub _host_key {
    my ($self, $h) = @_;
    unlink $h->{host_key}, "$h->{host_key}.pub";
    _sys('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C',
         "dshosts-$h->{name}", '-f', $h->{host_key});
    chmod 0600, $h->{host_key};
    $h->{host_key_pub} = _slurp("$h->{host_key}.pub");
    $h->{host_key_pub} =~ s/\s+$//;
    my $fp = _sys('ssh-keygen', '-l', '-E', 'sha256', '-f',
                  "$h->{host_key}.pub");
    ($h->{fingerprint}) = $fp =~ /(SHA256:\S+)/
        or die "DsHosts: no fingerprint in: $fp";
}

sub _root_locked {
    my $s = _slurp('/etc/shadow');
    return $s =~ /^root:!/m ? 1 : 0;
}

sub _sshd_quote {
    my $v = shift;
    die "DsHosts: a double quote or newline in an sshd_config value: $v\n"
        if $v =~ /["\n]/;
    return qq("$v");
}

sub _write_sshd_config {
    my ($self, $h) = @_;
    (my $auth = "$self->{dir}/authorized_keys") =~ s/%/%%/g;
    # a home of its own too: sessions then skip this machine's root rc
    # files (a slow .bashrc makes every SSH session slow)
    my %env = (DSTACK_HOST_DIR => $h->{state_dir}, HOME => $h->{state_dir},
        %{ $h->{env} || {} });
    my $setenv = join ' ', map { _sshd_quote("$_=$env{$_}") } sort keys %env;
    my $pam = _root_locked() ? 'yes' : 'no';
    _write($h->{conf}, <<"EOF");
# DsHosts: the sshd of $h->{name} (netns $h->{ns})
Port $h->{port}
ListenAddress 0.0.0.0
AddressFamily inet
HostKey $h->{host_key}
PidFile $h->{dir}/sshd.pid
AuthorizedKeysFile $auth
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM $pam
StrictModes no
UseDNS no
LogLevel VERBOSE
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 200
MaxSessions 200
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
SetEnv $setenv
EOF
}

# ssh_config for the client: host0.., jump, hidden (through jump)
sub _write_client_config {
    my $self = shift;
    my $text = <<"EOF";
# DsHosts: ssh -F THIS_FILE host0 | jump | hidden ...
EOF
    for my $h (@{ $self->{hosts} }) {
        $text .= "Host $h->{name}\n    HostName $h->{ip}\n"
            . "    Port $h->{port}\n";
        $text .= "    ProxyJump jump\n" if $h->{via};
    }
    $text .= <<"EOF";
Host *
    User root
    IdentityFile $self->{key}
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    BatchMode yes
    ConnectTimeout 5
    LogLevel ERROR
EOF
    $self->{ssh_config} = "$self->{dir}/ssh_config";
    _write($self->{ssh_config}, $text, 0644);
}

sub _start_sshd {
    my ($self, $h) = @_;
    die "DsHosts: sshd of $h->{name} already running\n"
        if $h->{sshd_pid} && _alive($h->{sshd_pid});
    open my $lf, '>>', $h->{log} or die "$h->{log}: $!";
    print $lf "=== DsHosts: starting sshd " . localtime() . "\n";
    close $lf;
    $h->{log_from} = -s $h->{log};
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setsid();      # no terminal signals; cleanup kills it
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $h->{log} or POSIX::_exit(127);
        open STDERR, '>>', $h->{log} or POSIX::_exit(127);
        { exec 'ip', 'netns', 'exec', $h->{ns}, $SSHD, '-D', '-e', '-f',
               $h->{conf} }
        print STDERR "exec ip netns exec: $!\n";
        POSIX::_exit(127);
    }
    $h->{sshd_pid} = $pid;
}

sub _log_tail {
    my $h = shift;
    my $t = _slurp($h->{log});
    $t = substr($t, -4000) if length $t > 4000;
    return $t;
}

# waits until the sshd of each host listens and lets the harness's key
# in, all at once; dies with the log of one that does not.  The probe is
# the internal-sftp subsystem with no input: an authenticated session
# that starts no shell (root's shell rc files may be slow).
sub _wait_sshd {
    my ($self, @hs) = @_;
    my $timeout = $self->{opts}{start_timeout} // 10;
    my $t0 = time;
    my %why;
    my @left = @hs;
    while (@left) {
        my (@listening, @still);
        for my $h (@left) {
            if (waitpid($h->{sshd_pid}, WNOHANG) == $h->{sshd_pid}) {
                my $st = $?;
                delete $h->{sshd_pid};
                die "DsHosts: sshd of $h->{name} exited (status $st):\n"
                    . _log_tail($h);
            }
            my $log = substr(_slurp($h->{log}), $h->{log_from} // 0);
            if ($log =~ /Server listening on/) { push @listening, $h }
            else { push @still, $h; $why{ $h->{name} } = 'not listening' }
        }
        my @jobs = map { [ $_, _spawn([ $self->_probe_args($_) ],
            timeout => 15, tmp => $self->{dir}) ] } @listening;
        for my $j (@jobs) {
            my ($rc, undef, $err) = _collect($j->[1]);
            next if $rc == 0;
            push @still, $j->[0];
            $why{ $j->[0]{name} } = "ssh: exit $rc: $err";
        }
        @left = @still;
        last unless @left;
        # sshd listens within TIMEOUT; the ssh sessions of the probe may
        # take longer on a busy machine (tests in parallel): 3 x TIMEOUT
        my $late = time - $t0 > $timeout;
        my @dead = grep { $why{ $_->{name} } eq 'not listening' } @left;
        my ($h) = $late && @dead ? @dead
                : time - $t0 > 3 * $timeout ? @left : ();
        if ($h) {
            die "DsHosts: sshd of $h->{name} ($h->{ns} $h->{ip}:$h->{port}) "
                . sprintf('not up after %.1f s', time - $t0)
                . " ($why{ $h->{name} }):\n" . _log_tail($h);
        }
        sleep 0.02;
    }
    return 1;
}

# ---- accessors -------------------------------------------------------------

sub dir        { $_[0]{dir} }
sub key        { $_[0]{key} }
sub bridge     { $_[0]{bridge} }
sub bridge_ip  { $_[0]{bridge_ip} }
sub ssh_config { $_[0]{ssh_config} }
sub n          { $_[0]{n} }
sub hosts      { my $s = shift; grep { $_->{index} =~ /^\d+$/ } @{ $s->{hosts} } }
sub all_hosts  { @{ $_[0]{hosts} } }
sub jump       { $_[0]{by}{jump} }
sub hidden     { $_[0]{by}{hidden} }

sub host {
    my ($self, $i) = @_;
    return $i if ref $i eq 'HASH';
    my $h = $self->{by}{$i};
    die "DsHosts: no host " . ($i // 'undef') . "\n" unless $h;
    return $h;
}

# ---- ssh -------------------------------------------------------------------

sub ssh_args {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    return ('ssh', '-F', $self->{ssh_config}, $h->{name});
}

sub _probe_args {
    my ($self, $i, $ct) = @_;
    my $h = $self->host($i);
    return ('ssh', '-F', $self->{ssh_config},
            defined $ct ? ('-o', "ConnectTimeout=$ct") : (),
            '-s', $h->{name}, 'sftp');
}

# true when host I's sshd lets the harness's key in (no shell started)
sub reachable {
    my ($self, $i, %o) = @_;
    my $t = $o{timeout} // 10;
    my ($rc) = _run([ $self->_probe_args($i, $t < 5 ? int($t) || 1 : undef) ],
                    timeout => $t, tmp => $self->{dir});
    return $rc == 0 ? 1 : 0;
}

sub ssh {
    my ($self, $i, $cmd, %o) = @_;
    my @argv = ($self->ssh_args($i), '--', $cmd);
    return _run(\@argv, timeout => $o{timeout} // 30, input => $o{input},
                tmp => $self->{dir});
}

# ---- the fleet file --------------------------------------------------------

sub fleet_yaml {
    my ($self, %o) = @_;
    my $key = $o{key} // $self->{key};
    my @idx = @{ $o{hosts} // [ map { $_->{index} } $self->hosts ] };
    my $y = "type: fleet\n";
    $y .= "name: $o{name}\n" if defined $o{name};
    $y .= "placement: $o{placement}\n" if defined $o{placement};
    $y .= "ssh_config:\n  user: root\n  identity_file: $key\n  hosts:\n";
    my $entry = sub {
        my $h = shift;
        my $e = "    - hostname: $h->{ip}\n      port: $h->{port}\n";
        $e .= "      blocks: $o{blocks}\n" if defined $o{blocks};
        return $e;
    };
    $y .= $entry->($self->host($_)) for @idx;
    if ($o{jump_hidden}) {
        my $j = $self->jump or die "DsHosts: made without jump => 1\n";
        $y .= $entry->($self->hidden)
            . "      proxy_jump:\n"
            . "        hostname: $j->{ip}\n        port: $j->{port}\n"
            . "        user: root\n        identity_file: $key\n";
    }
    $y .= $o{extra} if defined $o{extra};
    return $y;
}

# ---- faults ----------------------------------------------------------------

sub _link {
    my ($self, $h, $state) = @_;
    my @n = defined $h->{link_ns} ? ('-n', $h->{link_ns}) : ();
    _sys('ip', @n, 'link', 'set', $h->{link}, $state);
}

sub link_up {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    my @n = defined $h->{link_ns} ? ('-n', $h->{link_ns}) : ();
    my (undef, $out) = _run(['ip', @n, '-o', 'link', 'show', $h->{link}]);
    return $out =~ /<[^>]*\bUP\b/ ? 1 : 0;
}

sub pids {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    my (undef, $out) = _run(['ip', 'netns', 'pids', $h->{ns}]);
    return sort { $a <=> $b } $out =~ /(\d+)/g;
}

sub listening {
    my ($self, $i, $port) = @_;
    my $h = $self->host($i);
    my (undef, $out) = _run(['ip', 'netns', 'exec', $h->{ns}, 'ss', '-Hltn',
                             "sport = :$port"]);
    return $out =~ /\S/ ? 1 : 0;
}

sub _reap {
    my $h = shift;
    my $p = $h->{sshd_pid} or return;
    for (1 .. 250) {
        last if waitpid($p, WNOHANG) != 0;
        sleep 0.02;
    }
    delete $h->{sshd_pid};
}

sub kill_host {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    _kill_ns_procs($h->{ns});
    _reap($h);
    $self->_link($h, 'down');
}

sub restore_host {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    $self->_link($h, 'up');
    $self->_start_sshd($h) unless $h->{sshd_pid} && _alive($h->{sshd_pid});
    $self->_wait_sshd($h);
}

sub partition { my ($s, $i) = @_; $s->_link($s->host($i), 'down') }
sub heal      { my ($s, $i) = @_; $s->_link($s->host($i), 'up') }

sub stop_sshd {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    my $p = $h->{sshd_pid} or return;
    kill 'TERM', $p;
    for (1 .. 250) {
        last if waitpid($p, WNOHANG) != 0;
        sleep 0.02;
    }
    if (_alive($p)) { kill 'KILL', $p; waitpid($p, 0) }
    delete $h->{sshd_pid};
}

sub start_sshd {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    $self->_start_sshd($h);
    $self->_wait_sshd($h);
}

# set_env(I, K => V, ...): more SetEnv pairs for host I's sessions (its
# sshd starts again with them; sessions already open keep theirs)
sub set_env {
    my ($self, $i, %env) = @_;
    my $h = $self->host($i);
    $h->{env} = { %{ $h->{env} || {} }, %env };
    $self->_write_sshd_config($h);
    $self->stop_sshd($h);
    $self->_start_sshd($h);
    $self->_wait_sshd($h);
}

sub rekey {
    my ($self, $i) = @_;
    my $h = $self->host($i);
    $self->stop_sshd($h);
    $self->_host_key($h);
    $self->_start_sshd($h);
    $self->_wait_sshd($h);
    return $h->{fingerprint};
}

# ---- cleanup ---------------------------------------------------------------

sub cleanup {
    my $self = shift;
    return if $self->{cleaned} || $self->{owner} != $$;
    $self->{cleaned} = 1;
    delete $LIVE{"$self"};
    # the hidden host first: its link lives in the jump namespace
    for my $ns (reverse @{ $self->{ns} }) {
        _kill_ns_procs($ns);
    }
    for my $h (@{ $self->{hosts} }) { _reap($h) }
    for my $ns (reverse @{ $self->{ns} }) {
        _run(['ip', 'netns', 'del', $ns]);
    }
    for my $v (@{ $self->{links} }) {
        _run(['ip', 'link', 'del', $v]) if -e "/sys/class/net/$v";
    }
    if ($self->{made_bridge} && -e "/sys/class/net/$self->{bridge}") {
        _run(['ip', 'link', 'del', $self->{bridge}]);
    }
    if ($self->{own_dir} && !$ENV{DSTACK_KEEP}) {
        File::Path::remove_tree($self->{dir});
    }
}

sub DESTROY {
    my $self = shift;
    local ($@, $!, $?);
    eval { $self->cleanup };
}

END {
    my $rc = $?;
    for my $s (values %LIVE) {
        eval { $s->cleanup } if $s;
    }
    $? = $rc;
}

1;
