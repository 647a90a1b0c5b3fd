package DsEngine;
# A container engine of a test's own: Podman's Docker-compatible service
# (`podman system service`) on a socket in the test directory, with its
# own storage (the vfs driver), the runc runtime and no default ulimits
# (what these machines need: cgroup v1 in hybrid mode and no
# CAP_SYS_RESOURCE make crun and podman's default rlimits fail).  No
# image registry is reachable, so images are built here: a root file
# system with a static busybox and the files a test gives, imported with
# `podman import`.  This is a real engine, not a test double.  With
# netns => NAME (see new) it runs in a network namespace, e.g. a DsHosts
# host, and publishes ports there (t/88-host-engine.t).

use strict;
use warnings;
use File::Path qw(make_path remove_tree);
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(WNOHANG);
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time sleep);

my $JSON = JSON::PP->new->canonical;
my @ENGINES;

sub _which {
    my $prog = shift;
    for my $d (split(/:/, $ENV{PATH} // ''), '/usr/sbin', '/usr/bin',
        '/sbin', '/bin')
    {
        return "$d/$prog" if -x "$d/$prog";
    }
    return;
}

sub _netavark {
    for my $d ('/usr/libexec/podman', '/usr/lib/podman', '/usr/local/libexec/podman',
        '/usr/local/lib/podman')
    {
        return "$d/netavark" if -x "$d/netavark";
    }
    return _which('netavark');
}

sub busybox { -x '/bin/busybox' ? '/bin/busybox' : _which('busybox') }

# why no engine can run here, or undef when one can
sub unavailable {
    return 'podman is not installed' unless _which('podman');
    return 'runc is not installed' unless _which('runc');
    return 'busybox is not installed' unless busybox();
    my $ldd = `ldd ${\ busybox()} 2>&1`;
    return 'busybox is not static (busybox-static)'
        unless $ldd =~ /not a dynamic executable|statically linked/;
    return 'not root (the engine needs it here)' unless $> == 0;
    return;
}

# DsEngine->new($t, %o): the engine of test $t ($t->{dir}/engine), or,
# with o{dir}, in that directory ($t may then be undef).  o{netns}: the
# name of a network namespace (e.g. a DsHosts host's {ns}) to run the
# service in (`nsenter --net`, not `ip netns exec`: that remounts /sys
# and runc then finds no cgroup mount), with its own network config
# directory, a container subnet of its own (o{subnet}, else
# 10.214.N.0/24, N from the pid and a count) and its bridge (podman0)
# and firewall rules in that namespace: ports it publishes are reachable
# at the namespace's addresses.  The socket stays a path on the shared file system.
# o{wildcard_fix} (1 with a netns): netavark 1.4 (Debian 12) turns a
# port's HostIp "0.0.0.0" into a DNAT rule for -d 0.0.0.0/32 that never
# matches (containers/netavark#636, fixed in 1.6): the connection lands
# on conmon's port reservation and hangs.  The fix gives netavark ""
# (all addresses) instead, what newer netavark does; 0 to see the bug.
my $NETNS_N = 0;
sub new {
    my ($class, $t, %o) = @_;
    require DsTest unless defined &DsTest::_write;
    my $dir = $o{dir} // "$t->{dir}/engine";
    make_path("$dir/root", "$dir/run", "$dir/tmp");
    my $self = bless { t => $t, dir => $dir, owner => $$,
                       netns => $o{netns} }, $class;
    my $net = '';
    if (defined $o{netns}) {
        die "no network namespace $o{netns}\n"
            unless -e "/run/netns/$o{netns}";
        my $subnet = $o{subnet}
            // sprintf('10.214.%d.0/24', ($$ + $NETNS_N++) % 250);
        $self->{subnet} = $subnet;
        make_path("$dir/networks");
        my $helpers = '';
        if ($o{wildcard_fix} // 1) {
            my $real = _netavark() or die "netavark is not installed\n";
            (my $rdir = $real) =~ s{/[^/]+$}{};
            make_path("$dir/helpers");
            DsTest::_write("$dir/helpers/netavark", <<"EOF");
#!/bin/sh
# DsEngine: HostIp 0.0.0.0 means all addresses (containers/netavark#636)
sed 's/"host_ip":"0\\.0\\.0\\.0"/"host_ip":""/g' | exec $real "\$@"
EOF
            chmod 0755, "$dir/helpers/netavark";
            $helpers = qq{helper_binaries_dir = ["$dir/helpers", "$rdir"]\n};
        }
        $self->{engine_extra} = $helpers;
        $net = <<"EOF";
[network]
network_backend = "netavark"
network_config_dir = "$dir/networks"
default_subnet = "$subnet"
EOF
    } else {
        # On the host: CNI (containernetworking-plugins), whatever else is
        # installed.  podman 4.3 picks netavark on a fresh store when it
        # is there (t/88 and t/92 need it in their namespaces), and
        # netavark 1.4's DNAT of a port published on 127.0.0.1 does not
        # take connections made on this host: probes never reach it.
        $net = <<"EOF";
[network]
network_backend = "cni"
EOF
    }
    DsTest::_write("$dir/containers.conf", <<"EOF");
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$dir/tmp"
@{[ $self->{engine_extra} // '' ]}$net
EOF
    DsTest::_write("$dir/storage.conf", <<"EOF");
[storage]
driver = "vfs"
graphroot = "$dir/root"
runroot = "$dir/run"
EOF
    push @ENGINES, $self;
    _hook_hosts() if defined $o{netns};
    $self->_start;
    return $self;
}

# DsHosts's cleanup (its DESTROY runs before any END block when the test
# holds it in a file lexical) first finishes the engines in its
# namespaces: podman must tear their networks down in them
my $HOOKED;
sub _hook_hosts {
    return if $HOOKED || !defined &DsHosts::cleanup;
    $HOOKED = 1;
    my $orig = \&DsHosts::cleanup;
    no warnings 'redefine';
    *DsHosts::cleanup = sub {
        my $h = $_[0];
        if (ref $h && !$h->{cleaned} && ($h->{owner} // 0) == $$) {
            my %ns = map { $_ => 1 } @{ $h->{ns} || [] };
            for my $e (@ENGINES) {
                eval { $e->finish } if defined $e->{netns} && $ns{$e->{netns}};
            }
        }
        goto &$orig;
    };
}

sub socket_path { "$_[0]{dir}/engine.sock" }
sub dir { $_[0]{dir} }
sub netns { $_[0]{netns} }
sub subnet { $_[0]{subnet} }

# the argv prefix that runs a command where the engine runs
sub _in {
    defined $_[0]{netns} ? ('nsenter', "--net=/run/netns/$_[0]{netns}") : ()
}

sub _env {
    my $self = shift;
    return (CONTAINERS_CONF => "$self->{dir}/containers.conf",
            CONTAINERS_STORAGE_CONF => "$self->{dir}/storage.conf",
            TMPDIR => "$self->{dir}/tmp");
}

sub _start {
    my $self = shift;
    my %env = $self->_env;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setsid();
        $ENV{$_} = $env{$_} for keys %env;
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$self->{dir}/service.log";
        open STDERR, '>&', \*STDOUT;
        exec $self->_in, 'podman', 'system', 'service', '-t', '0',
            'unix://' . $self->socket_path or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $ok = DsTest::wait_until(sub {
        return -1 if waitpid($pid, WNOHANG) == $pid;
        my $r = $self->api('GET', '/_ping');
        return $r->{status} == 200 ? 1 : 0;
    }, timeout => 30);
    die "podman system service did not come up:\n"
        . DsTest::_slurp("$self->{dir}/service.log") unless $ok && $ok == 1;
}

# podman with this engine's storage; returns (exit code, output)
sub podman {
    my ($self, @args) = @_;
    my %env = $self->_env;
    local @ENV{keys %env} = values %env;
    my $out = `@{[ map { "'$_'" } $self->_in, 'podman', @args ]} 2>&1`;
    return ($? >> 8, $out);
}

# NAME (e.g. "localhost/web:1") from busybox and FILES { path => text },
# paths relative to / ; executable when the text starts with "#!"
sub image {
    my ($self, $name, $files) = @_;
    my $n = ++$self->{images};
    my $root = "$self->{dir}/rootfs-$n";
    make_path("$root/bin", "$root/etc", "$root/tmp", "$root/www");
    system('cp', busybox(), "$root/bin/busybox") == 0 or die "cp busybox\n";
    for my $app (qw(sh httpd echo cat sleep env id ls pwd hostname mkdir
                    printf test chmod date wc))
    {
        symlink('busybox', "$root/bin/$app");
    }
    DsTest::_write("$root/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n");
    DsTest::_write("$root/etc/group", "root:x:0:\nnogroup:x:65534:\n");
    for my $f (sort keys %{ $files || {} }) {
        my $p = "$root/$f";
        (my $d = $p) =~ s{/[^/]+$}{};
        make_path($d);
        DsTest::_write($p, $files->{$f});
        chmod 0755, $p if $files->{$f} =~ /^#!/;
    }
    chmod 01777, "$root/tmp", "$root/www";
    system('tar', '-cf', "$root.tar", '-C', $root, '.') == 0
        or die "tar of the image failed\n";
    my ($rc, $out) = $self->podman('import', "$root.tar", $name);
    die "podman import $name: $out\n" if $rc;
    remove_tree($root);
    unlink "$root.tar";
    return $name;
}

# one request to the engine's API: { status, json, body }
sub api {
    my ($self, $method, $path, $body) = @_;
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $self->socket_path) or return { status => 0 };
    my $data = defined $body ? $JSON->encode($body) : '';
    print $s "$method /v1.41$path HTTP/1.0\r\nHost: engine\r\n"
        . (length $data ? "Content-Type: application/json\r\n" : '')
        . 'Content-Length: ' . length($data) . "\r\n\r\n$data";
    local $/;
    my $res = <$s> // '';
    close $s;
    my ($head, $rest) = split /\r\n\r\n/, $res, 2;
    my ($status) = ($head // '') =~ m{^HTTP/\S+ (\d+)};
    my $json = eval { $JSON->decode($rest // '') };
    return { status => $status // 0, json => $json, body => $rest };
}

# the containers of a controld's run: [ { Id, State, Labels }, ... ]
sub containers {
    my ($self, $run) = @_;
    my $f = $JSON->encode({ label => ["dstack.run=$run"] });
    $f =~ s/([^A-Za-z0-9_.~-])/sprintf('%%%02X', ord $1)/ge;
    my $r = $self->api('GET', "/containers/json?all=1&filters=$f");
    return $r->{json} || [];
}

# the host port published for a container's PORT ("8000/tcp"), or undef
sub port {
    my ($self, $id, $port) = @_;
    my $r = $self->api('GET', "/containers/$id/json");
    my $b = (($r->{json} || {})->{NetworkSettings} || {})->{Ports} || {};
    my ($p) = map { $_->{HostPort} } grep { ($_->{HostPort} // '') ne '' }
        @{ $b->{$port} || [] };
    return $p;
}

# processes of this engine: the service and whatever names its
# directory (conmon, containers' helpers)
sub pids {
    my $self = shift;
    my @p;
    opendir(my $d, '/proc') or return ();
    for my $pid (grep { /^\d+$/ } readdir $d) {
        next if $pid == $$;
        my $cmd = DsTest::_slurp("/proc/$pid/cmdline");
        push @p, $pid if ($self->{pid} && $pid == $self->{pid}
            && $cmd ne '') || index($cmd, "$self->{dir}/") >= 0;
    }
    closedir $d;
    return sort { $a <=> $b } @p;
}

# what a netns engine whose namespace is gone left outside it: its
# containers (runc's state names the engine's directory; their
# processes have namespaces of their own), their network namespaces
# (/run/netns/netns-*, bind mounts) and mounts under its directory
sub _sweep {
    my $self = shift;
    my $dir = "$self->{dir}/";
    for my $st (glob('/run/runc/*/state.json')) {
        my $text = DsTest::_slurp($st);
        next unless index($text, $dir) >= 0;
        my ($id) = $st =~ m{^/run/runc/([^/]+)/state\.json$} or next;
        my %nets = map { $_ => 1 } $text =~ m{"(/run/netns/netns-[0-9a-f-]+)"}g;
        system("runc delete -f '$id' >/dev/null 2>&1");
        for my $n (sort keys %nets) {
            system("umount '$n' >/dev/null 2>&1");
            unlink $n;
        }
    }
    my @m = grep { index($_, $dir) == 0 }
        map { (split / /)[4] // () }
        split /\n/, DsTest::_slurp('/proc/self/mountinfo');
    system('umount', '-l', $_) for sort { length $b <=> length $a } @m;
}

# what a netns engine left in its namespace: its bridge and netavark's
# iptables chains and the rules that jump to them
sub _net_cleanup {
    my $self = shift;
    my @in = $self->_in;
    system(@in, 'ip', 'link', 'del', 'podman0') if
        `@in ip -o link show podman0 2>/dev/null` ne '';
    for my $table (qw(nat filter)) {
        my @rules = split /\n/, `@in iptables -w -t $table -S 2>/dev/null`;
        my @chains = map { /^-N (NETAVARK\S*)/ ? $1 : () } @rules;
        for (@rules) {
            next unless /^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) (.*-j NETAVARK.*)$/;
            system(@in, 'sh', '-c',
                "iptables -w -t $table -D $1 $2 2>/dev/null");
        }
        system(@in, 'iptables', '-w', '-t', $table, '-F', $_) for @chains;
        system(@in, 'iptables', '-w', '-t', $table, '-X', $_) for @chains;
    }
}

sub finish {
    my $self = shift;
    return if $self->{finished}++ || $self->{owner} != $$;
    # the namespace gone (DsHosts cleaned up first, e.g. its END ran
    # before ours): podman outside it would tear networks down in the
    # root namespace; kill the engine, its containers with runc (their
    # processes are in namespaces of their own, DsHosts did not kill
    # them), remove the rest
    if (defined $self->{netns} && !-e "/run/netns/$self->{netns}") {
        kill 'KILL', $self->pids;
        $self->_sweep;
        remove_tree($self->{dir});
        return;
    }
    $self->podman('rm', '-af', '-t', '0');
    if ($self->{pid}) {
        kill 'TERM', -$self->{pid};
        DsTest::wait_until(sub { waitpid($self->{pid}, WNOHANG) != 0 },
            timeout => 10);
        kill 'KILL', -$self->{pid};
    }
    $self->podman('system', 'reset', '-f');
    if (defined $self->{netns}) {
        kill 'KILL', $self->pids;
        $self->_net_cleanup;
    }
    remove_tree($self->{dir});
}

END {
    my $rc = $?;
    eval { $_->finish } for @ENGINES;
    $? = $rc;
}

1;
