package DsEngine;
# A container engine of a test's own: Podman's Docker-compatible service
# (`podman system service`) on a socket in the test directory, with its
# own storage (the vfs driver), the runc runtime and no default ulimits
# (what these machines need: cgroup v1 in hybrid mode and no
# CAP_SYS_RESOURCE make crun and podman's default rlimits fail).  No
# image registry is reachable, so images are built here: a root file
# system with a static busybox and the files a test gives, imported with
# `podman import`.  This is a real engine, not a test double.

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

sub new {
    my ($class, $t) = @_;
    my $dir = "$t->{dir}/engine";
    make_path("$dir/root", "$dir/run", "$dir/tmp");
    my $self = bless { t => $t, dir => $dir, owner => $$ }, $class;
    DsTest::_write("$dir/containers.conf", <<"EOF");
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$dir/tmp"
EOF
    DsTest::_write("$dir/storage.conf", <<"EOF");
[storage]
driver = "vfs"
graphroot = "$dir/root"
runroot = "$dir/run"
EOF
    push @ENGINES, $self;
    $self->_start;
    return $self;
}

sub socket_path { "$_[0]{dir}/engine.sock" }
sub dir { $_[0]{dir} }

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
        exec 'podman', 'system', 'service', '-t', '0',
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
    my $out = `podman @{[ map { "'$_'" } @args ]} 2>&1`;
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

sub finish {
    my $self = shift;
    return if $self->{finished}++ || $self->{owner} != $$;
    $self->podman('rm', '-af', '-t', '0');
    if ($self->{pid}) {
        kill 'TERM', -$self->{pid};
        DsTest::wait_until(sub { waitpid($self->{pid}, WNOHANG) != 0 },
            timeout => 10);
        kill 'KILL', -$self->{pid};
    }
    $self->podman('system', 'reset', '-f');
    remove_tree($self->{dir});
}

END {
    my $rc = $?;
    eval { $_->finish } for @ENGINES;
    $? = $rc;
}

1;
