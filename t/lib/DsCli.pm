package DsCli;

# The CLI side of the t/3*.t tests: runs build/dstackctl as a user would
# (its own environment, working directory, stdin, optionally a terminal),
# and starts the real build/dstack-controld next to DsTest's real nginx.
#
#   use lib 't/lib';
#   use DsTest;
#   use DsCli;
#   use Test::More;
#
#   my $t = DsTest->new(seed_empty => 0);
#   my $c = DsCli->new($t);
#   $c->start_controld;                  # state in $t->state, API socket
#   $t->start;                           # nginx reads the same state
#   my $r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y'], dir => $app);
#   is($r->{rc}, 0); like($r->{out}, qr/Service is published at:/);
#   $c->finish; $t->done;
#
# cli() options:
#   dir => the working directory (default: the test directory)
#   stdin => bytes on stdin (default: none, /dev/null-like)
#   env => { K => V, K2 => undef (removed) } on top of the defaults:
#          DSTACK_CONFIG = controld's client.yml, HOME = <dir>/home,
#          DSTACK_SERVER and DSTACK_TOKEN removed
#   tty => 1: run under script(1) so that stdin and stdout are a terminal
#   timeout => seconds (60); the CLI is killed past it and rc is 124
#
# Only core Perl modules, as DsTest.

use strict;
use warnings;

use Cwd ();
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Test::More ();
use Time::HiRes qw(time sleep);

use DsTest;

my @INSTANCES;

# absolute: the CLI runs from other working directories
my $BUILD = Cwd::abs_path($DsTest::BUILD) // $DsTest::BUILD;

sub cli_path      { "$BUILD/dstackctl" }
sub controld_path { "$BUILD/dstack-controld" }

# plan skip_all unless the programs this test needs are built
sub require_built {
    my ($class, @what) = @_;
    my %path = (cli => cli_path(), controld => controld_path(),
        module => DsTest::module_path());
    for my $w (@what) {
        Test::More::plan(skip_all => "$w not built: $path{$w}")
            unless -x $path{$w} || ($w eq 'module' && -f $path{$w});
    }
}

sub new {
    my ($class, $t, %opts) = @_;
    my $self = bless {
        t => $t,
        dir => $t->dir,
        opts => { %opts },
        owner => $$,
    }, $class;
    make_path("$self->{dir}/home");
    $self->make_tls if $opts{tls};
    $t->{opts}{http} = join "\n", grep { defined }
        $t->{opts}{http}, $self->gateway_server
        unless $opts{no_gateway_server};
    push @INSTANCES, $self;
    return $self;
}

# gateway.<domain> as conf/nginx/dstack-gateway.conf has it: the OpenAI
# endpoint and controld's API, on the harness's port.  "127.0.0.1" is one
# of its names so that DSTACK_SERVER=http://127.0.0.1:PORT reaches the
# API through nginx, as a remote user's https://gateway.<domain> would.
sub gateway_server {
    my $self = shift;
    my $t = $self->{t};
    my ($port, $domain, $sock) = ($t->port, $t->domain, $self->api_socket);
    my $tls = !$self->{tls_port} ? '' : join '',
        "        listen 127.0.0.1:$self->{tls_port} ssl;\n",
        "        ssl_certificate $self->{dir}/tls/leaf.crt;\n",
        "        ssl_certificate_key $self->{dir}/tls/leaf.key;\n";
    return <<"EOF";
    server {
        listen 127.0.0.1:$port;
$tls        server_name gateway.$domain 127.0.0.1;
        dstack_domain $domain;

        location /v1/ {
            include $DsTest::REPO/conf/nginx/dstack-proxy.conf;
            dstack_openai on;
            client_body_buffer_size 4m;
        }

        location /api/ {
            proxy_pass http://unix:$sock;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
            client_max_body_size 256m;
        }
    }
EOF
}

# tls => 1: a private CA (tls/ca.crt) and a certificate for 127.0.0.1
# that the gateway server also listens with, on tls_port: the API over
# https:// as a remote user reaches it, checked against a CA of our own
sub make_tls {
    my $self = shift;
    my $d = "$self->{dir}/tls";
    make_path($d);
    DsTest::make_ca($d, 'dstack test CA');
    DsTest::make_leaf($d, 'leaf', 'IP:127.0.0.1');
    $self->{tls_port} = DsTest::free_port();
}

sub tls_port { $_[0]{tls_port} }
sub tls_ca { "$_[0]{dir}/tls/ca.crt" }

# the API through nginx, for cli(env => ...)
sub via_nginx {
    my $self = shift;
    return { DSTACK_CONFIG => undef,
        DSTACK_SERVER => 'http://127.0.0.1:' . $self->{t}->port,
        DSTACK_TOKEN => $self->admin_token };
}

sub dir { $_[0]{dir} }
sub client_config { "$_[0]{dir}/client.yml" }
sub api_socket { "$_[0]{dir}/api.sock" }
sub admin_token { $_[0]{admin_token} }

# ---- dstack-controld ------------------------------------------------------

# controld.yml for this test: state shared with nginx, the API on a unix
# socket in the test directory, services published on the gateway port.
sub controld_conf {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $d = $self->{dir};
    my $domain = $t->domain;
    my $port = $t->port;
    my $stats = $t->stats_port;
    my $extra = $o{extra} // $self->{opts}{controld_extra} // '';
    return <<"EOF";
state_dir: @{[ $t->state ]}
domain: $domain
api_socket: $d/api.sock
stats_url: http://127.0.0.1:$stats/stats
replicas_dir: $d/replicas
service_url: "http://{name}.$domain:$port"
gateway_url: "http://gateway.$domain:$port"
client_config: $d/client.yml
log_level: debug
$extra
EOF
}

sub start_controld {
    my ($self, %o) = @_;
    my $d = $self->{dir};
    die "controld already running\n" if $self->{controld_pid};
    DsTest::_write("$d/controld.yml", $self->controld_conf(%o))
        unless $o{keep_conf};
    unlink "$d/api.sock";
    my $pid = $self->{t}->_spawn("$d/controld.stderr",
        $self->{t}->_san_env, controld_path(), '-d', '-f',
        "$d/controld.yml");
    $self->{controld_pid} = $pid;
    my $ok = DsTest::wait_until(sub {
        return -1 if waitpid($pid, WNOHANG) == $pid;
        return -S "$d/api.sock" && -s "$d/client.yml" ? 1 : 0;
    }, timeout => 20);
    if (!$ok || $ok == -1) {
        delete $self->{controld_pid};
        kill 'KILL', $pid if $ok != -1;
        die "dstack-controld did not come up:\n"
            . DsTest::_slurp("$d/controld.stderr");
    }
    my $cfg = DsTest::_slurp("$d/client.yml");
    ($self->{admin_token}) = $cfg =~ /^token:\s*(\S+)/m;
    return $self;
}

sub controld_pid { $_[0]{controld_pid} }
sub controld_log { DsTest::_slurp("$_[0]{dir}/controld.stderr") }

# SIG (TERM by default) to controld and wait for it to exit.
sub stop_controld {
    my ($self, $sig) = @_;
    my $pid = delete $self->{controld_pid} or return;
    kill $sig // 'TERM', $pid;
    return if DsTest::wait_until(sub { waitpid($pid, WNOHANG) != 0 },
        timeout => 20);
    Test::More::diag("dstack-controld $pid ignored SIG" . ($sig // 'TERM'));
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

# ---- dstackctl -------------------------------------------------------------

sub _env {
    my ($self, $env) = @_;
    my %e = (
        DSTACK_CONFIG => $self->client_config,
        HOME => "$self->{dir}/home",
        DSTACK_SERVER => undef,
        DSTACK_TOKEN => undef,
        DSTACK_PROJECT => undef,
        TERM => 'xterm',
        %{ $self->{t}->_san_env },
        %{ $env || {} },
    );
    return \%e;
}

# cli([ARGS], %o) -> { rc, out, err, t (seconds) }
sub cli {
    my ($self, $args, %o) = @_;
    my $tmp = tempdir('dstackctl-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $env = $self->_env($o{env});
    my @argv = (cli_path(), @$args);
    if ($o{tty}) {
        # script(1) gives the CLI a terminal; its stdout is then both
        # streams, as a user sees them
        my $cmd = join ' ', map { _shq($_) } @argv;
        @argv = ('script', '-qefc', $cmd, '/dev/null');
    }
    DsTest::_write("$tmp/in", $o{stdin} // '');
    my $t0 = time;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', "$tmp/in" or POSIX::_exit(127);
        open STDOUT, '>', "$tmp/out" or POSIX::_exit(127);
        open STDERR, '>', "$tmp/err" or POSIX::_exit(127);
        chdir($o{dir} // $self->{dir}) or POSIX::_exit(126);
        for my $k (keys %$env) {
            if (defined $env->{$k}) { $ENV{$k} = $env->{$k} }
            else { delete $ENV{$k} }
        }
        exec @argv or POSIX::_exit(127);
    }
    my $timeout = $o{timeout} // 60;
    my $rc;
    my $done = DsTest::wait_until(sub { waitpid($pid, WNOHANG) == $pid },
        timeout => $timeout, interval => 0.01);
    if ($done) {
        $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    } else {
        kill 'KILL', $pid;
        waitpid($pid, 0);
        $rc = 124;
    }
    my $r = {
        rc => $rc,
        out => DsTest::_slurp("$tmp/out"),
        err => DsTest::_slurp("$tmp/err"),
        t => time - $t0,
    };
    $r->{out} =~ s/\r\n/\n/g if $o{tty};
    return $r;
}

# Starts dstackctl in the background (for -f, -w, Ctrl-C); returns
# { pid, out => file, err => file }.  reap() collects it.
sub cli_bg {
    my ($self, $args, %o) = @_;
    my $env = $self->_env($o{env});
    my $n = ++$self->{bg};
    my ($out, $err) = ("$self->{dir}/bg$n.out", "$self->{dir}/bg$n.err");
    my @argv = (cli_path(), @$args);
    if ($o{tty}) {
        my $cmd = join ' ', map { _shq($_) } @argv;
        @argv = ('script', '-qefc', $cmd, '/dev/null');
    }
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        POSIX::setpgid(0, 0);
        open STDIN, '<', '/dev/null' or POSIX::_exit(127);
        open STDOUT, '>', $out or POSIX::_exit(127);
        open STDERR, '>', $err or POSIX::_exit(127);
        chdir($o{dir} // $self->{dir}) or POSIX::_exit(126);
        for my $k (keys %$env) {
            if (defined $env->{$k}) { $ENV{$k} = $env->{$k} }
            else { delete $ENV{$k} }
        }
        exec @argv or POSIX::_exit(127);
    }
    return { pid => $pid, out => $out, err => $err };
}

# waits for a cli_bg process (timeout seconds, default 20); kills it past
# that; returns { rc, out, err }
sub reap {
    my ($self, $bg, %o) = @_;
    my $rc;
    my $done = DsTest::wait_until(
        sub { waitpid($bg->{pid}, WNOHANG) == $bg->{pid} },
        timeout => $o{timeout} // 20);
    if ($done) {
        $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    } else {
        kill 'KILL', -$bg->{pid};
        waitpid($bg->{pid}, 0);
        $rc = 124;
    }
    return { rc => $rc, out => DsTest::_slurp($bg->{out}),
        err => DsTest::_slurp($bg->{err}) };
}

sub _shq { my $s = shift; $s =~ s/'/'\\''/g; "'$s'" }

# ---- helpers ------------------------------------------------------------------

# Writes FILES ({ relpath => text }) under <dir>/NAME; returns the path.
sub app_dir {
    my ($self, $name, $files) = @_;
    my $root = "$self->{dir}/$name";
    for my $rel (sort keys %$files) {
        my $p = "$root/$rel";
        (my $parent = $p) =~ s{/[^/]+$}{};
        make_path($parent);
        DsTest::_write($p, $files->{$rel});
    }
    make_path($root);
    return $root;
}

# the runs as "ps --json" gives them (dies on failure)
sub runs {
    my ($self, @args) = @_;
    my $r = $self->cli(['ps', '--json', @args]);
    die "dstackctl ps --json failed: $r->{err}" if $r->{rc} != 0;
    return JSON::PP->new->decode($r->{out});
}

sub run_named {
    my ($self, $name) = @_;
    for (@{ $self->runs('-a') }) { return $_ if $_->{name} eq $name }
    return undef;
}

# Stops every run (abort) and controld.  Called by END too.
sub finish {
    my $self = shift;
    return if $self->{finished}++ || $self->{owner} != $$;
    if ($self->{controld_pid}) {
        my $r = eval { $self->cli(['ps', '--json'], timeout => 10) };
        my $runs = $r && $r->{rc} == 0
            ? eval { JSON::PP->new->decode($r->{out}) } : undef;
        for my $run (@{ $runs || [] }) {
            $self->cli(['stop', '-x', '-y', $run->{name}], timeout => 30);
        }
        $self->stop_controld;
    }
    @INSTANCES = grep { $_ != $self } @INSTANCES;
}

END {
    my $rc = $?;
    for my $c (@INSTANCES) {
        next if $c->{owner} != $$;
        eval { $c->finish };
        Test::More::diag("DsCli cleanup: $@") if $@;
    }
    $? = $rc;
}

1;
