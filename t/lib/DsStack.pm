package DsStack;

# dstack-controld for t/2*.t, next to DsTest's real nginx with the module:
# a private controld.yml (state shared with nginx, API on a unix socket in
# the test directory, replicas under it), an HTTP client for the API over
# that socket, code archives (tar.gz) built from a hash of files, and the
# replica app below (python3 standard library only).
#
#   use lib 't/lib';
#   use DsTest; use DsStack; use Test::More;
#   my $t = DsTest->new(seed_empty => 0);
#   my $s = DsStack->new($t);
#   $s->start_controld;            # before nginx: controld creates the state
#   $t->start;
#   my $code = $s->upload($s->app_files);
#   my $r = $s->apply({ %{ $s->app_spec }, replicas => 2 },
#       name => 'hello', code => $code);
#   $s->wait_run('hello', sub { $_[0]{status} eq 'running' });
#   ...
#   $s->finish; $t->done;
#
# Environment: DSTACK_BUILD (build/) as for DsTest.  Only core Perl.

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use Errno qw(EINTR EAGAIN);
use File::Path qw(make_path remove_tree);
use IO::Select;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Socket qw(SOCK_STREAM);
use Test::More ();
use Time::HiRes qw(time sleep);

use DsTest;

our $JSON = JSON::PP->new->canonical->allow_nonref;

my @STACKS;

sub controld_path { "$DsTest::BUILD/dstack-controld" }

# The replica app: a threaded HTTP/1.1 server.
#   GET /            {"replica","version","run","greeting","pid"}
#   GET /slow?ms=N   the same after N ms
#   GET /health      200, or 503 while a file "unhealthy" exists
#   GET /exit?code=N answers, then exits with N
# START_DELAY (seconds) sleeps before listening; FAIL=N exits N at once.
# listening.txt gets the time it listens (for the startup benchmark).
our $APP = <<'EOF';
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

if os.environ.get("FAIL"):
    print("failing on purpose", flush=True)
    sys.exit(int(os.environ["FAIL"]))
time.sleep(float(os.environ.get("START_DELAY", "0")))

def info():
    return {"replica": int(os.environ.get("DSTACK_REPLICA_NUM", "-1")),
            "version": int(os.environ.get("DSTACK_REPLICA_VERSION", "0")),
            "run": os.environ.get("DSTACK_RUN_NAME", ""),
            "greeting": os.environ.get("GREETING", ""),
            "pid": os.getpid()}

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *args):
        print("%s %s" % (self.command, self.path), flush=True)
    def reply(self, code, obj):
        b = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def do_GET(self):
        u = urlsplit(self.path)
        q = parse_qs(u.query)
        if u.path == "/slow":
            time.sleep(int(q.get("ms", ["100"])[0]) / 1000.0)
        if u.path == "/health":
            if os.path.exists("unhealthy"):
                return self.reply(503, {"healthy": False})
            return self.reply(200, {"healthy": True})
        if u.path == "/exit":
            self.reply(200, {"exiting": True})
            self.wfile.flush()
            os._exit(int(q.get("code", ["1"])[0]))
        self.reply(200, info())
    do_POST = do_GET

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
srv = ThreadingHTTPServer(("0.0.0.0", port), H)
srv.daemon_threads = True
with open("listening.txt", "w") as f:
    f.write("%.6f\n" % time.time())
print("listening on %d" % port, flush=True)
srv.serve_forever()
EOF

sub new {
    my ($class, $t, %opts) = @_;
    my $dir = $t->dir . '/controld';
    make_path("$dir/replicas", "$dir/archives");
    my $self = bless { t => $t, dir => $dir, opts => \%opts,
        owner => $$ }, $class;
    push @STACKS, $self;
    return $self;
}

# The usual start of a test: skips it unless controld is built (with
# netns, unless replicas get network namespaces here; with engine, unless
# a container engine can run), then starts nginx with the module and
# controld.  Options: hold (the module's notices of held requests reach
# controld), gpus (the nvidia-smi test double: two H100s and an A10G),
# engine (a private Podman service, t/lib/DsEngine.pm: $s->engine),
# extra (more controld.yml).  Returns ($t, $s).
sub stack {
    my (%o) = @_;
    Test::More::plan(skip_all => 'build/dstack-controld not built')
        unless -x controld_path();
    if ($o{engine}) {
        require DsEngine;
        if (my $why = DsEngine::unavailable()) {
            Test::More::plan(
                skip_all => "no container engine can run here: $why");
        }
    }
    my $t = DsTest->new(seed_empty => 0);
    my $engine = $o{engine} ? DsEngine->new($t) : undef;
    my $s = DsStack->new($t,
        $engine ? (engine => $engine->socket_path) : ());
    $s->{engine_obj} = $engine;
    my $extra = $o{extra} // '';
    if ($o{hold}) {
        my $notify = "$s->{dir}/notify.sock";
        $t->write_conf(http => "dstack_notify $notify;");
        $extra .= "notify_socket: $notify\n";
    }
    if ($o{gpus}) {
        $extra .= "backends:\n  local:\n    nvidia_smi: "
            . $s->fake_nvidia_smi . "\n";
    }
    $s->start_controld(extra => $extra);
    $t->start;
    $s->need_netns if $o{netns};
    return ($t, $s);
}

sub engine { $_[0]{engine_obj} }

# a test double of nvidia-smi (this machine may have no GPU): what it
# prints for --query-gpu=index,name,memory.total on a host with two
# H100s and an A10G; returns its path
sub fake_nvidia_smi {
    my $self = shift;
    my $fake = "$self->{dir}/fake-nvidia-smi";
    DsTest::_write($fake, <<'EOF');
#!/bin/sh
# test double: nvidia-smi on a host with two H100s and an A10G
case "$*" in
*--query-gpu=index,name,memory.total*)
    echo "0, NVIDIA H100 80GB HBM3, 81559"
    echo "1, NVIDIA H100 80GB HBM3, 81559"
    echo "2, NVIDIA A10G, 23028" ;;
*) exit 1 ;;
esac
EOF
    chmod 0755, $fake;
    return $fake;
}

sub t { $_[0]{t} }
sub dir { $_[0]{dir} }
sub socket_path { "$_[0]{dir}/api.sock" }
sub client_config { "$_[0]{dir}/client.yml" }
sub replicas_dir { "$_[0]{dir}/replicas" }
sub admin_token { $_[0]{admin_token} }
sub stdout_text { DsTest::_slurp("$_[0]{dir}/controld.stdout") }
sub log_text { DsTest::_slurp("$_[0]{dir}/controld.stderr") }
sub pid { $_[0]{pid} }

# controld.yml; %o: extra => text appended, stats_url => URL
sub conf_text {
    my ($self, %o) = @_;
    my $t = $self->{t};
    my $d = $self->{dir};
    my $domain = $t->domain;
    my $port = $t->port;
    my $stats = $o{stats_url} // 'http://127.0.0.1:' . $t->stats_port
        . '/stats';
    my $extra = $o{extra} // $self->{opts}{extra} // '';
    return <<"EOF";
state_dir: @{[ $t->state ]}
domain: $domain
api_socket: $d/api.sock
stats_url: $stats
replicas_dir: $d/replicas
service_url: "http://{name}.$domain:$port"
gateway_url: "http://gateway.$domain:$port"
client_config: $d/client.yml
log_level: debug
$extra
EOF
}

sub write_conf {
    my ($self, %o) = @_;
    DsTest::_write("$self->{dir}/controld.yml", $self->conf_text(%o));
    return "$self->{dir}/controld.yml";
}

# runs `dstack-controld -n -f FILE` on TEXT; returns (exit code, stderr)
sub check_conf {
    my ($self, $text, $name) = @_;
    my $f = "$self->{dir}/" . ($name // 'check') . '.yml';
    DsTest::_write($f, $text);
    my ($rc, $out, $err) = DsTest::_run([controld_path(), '-n', '-f', $f],
        env => $self->{t}->_san_env);
    return ($rc, $err . $out, $f);
}

sub start_controld {
    my ($self, %o) = @_;
    die "controld already running\n" if $self->{pid};
    my $d = $self->{dir};
    $self->write_conf(%o) unless $o{keep_conf};
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/controld.stdout" or POSIX::_exit(127);
        open STDERR, '>>', "$d/controld.stderr" or POSIX::_exit(127);
        my $env = $self->{t}->_san_env;
        $ENV{$_} = $env->{$_} for keys %$env;
        # the container engine: a test's own (DsEngine), or a socket
        # nobody answers, never the host's
        $ENV{DOCKER_HOST} = 'unix://' . ($o{engine} // $self->{opts}{engine}
                                         // "$d/no-engine.sock");
        # tty: stdout a terminal, as when a person starts it by hand
        # (script(1) copies the terminal's output to our stdout)
        exec 'script', '-q', '-e', '-c',
            join(' ', 'exec', controld_path(), '-d', '-f',
                 "$d/controld.yml"), '/dev/null'
            or POSIX::_exit(127) if $o{tty};
        exec controld_path(), '-d', '-f', "$d/controld.yml"
            or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    my $ok = DsTest::wait_until(sub {
        return -1 if waitpid($pid, WNOHANG) == $pid;
        return -S "$d/api.sock" && -s "$d/client.yml"
            && $self->_api_up ? 1 : 0;
    }, timeout => 20);
    if (!$ok || $ok == -1) {
        delete $self->{pid};
        kill 'KILL', $pid if $ok != -1;
        die "dstack-controld did not come up:\n" . $self->log_text;
    }
    my $cfg = DsTest::_slurp("$d/client.yml");
    ($self->{admin_token}) = $cfg =~ /^token:\s*(\S+)/m;
    return $self;
}

sub _api_up {
    my $self = shift;
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $self->socket_path) or return 0;
    close $s;
    return 1;
}

# SIG (TERM) to controld and wait for it; returns its wait status
sub stop_controld {
    my ($self, $sig) = @_;
    my $pid = delete $self->{pid} or return;
    kill $sig // 'TERM', $pid;
    DsTest::wait_until(sub { waitpid($pid, WNOHANG) != 0 }, timeout => 15)
        and return $?;
    Test::More::diag("dstack-controld $pid ignored SIG" . ($sig // 'TERM'));
    kill 'KILL', $pid;
    waitpid($pid, 0);
    return $?;
}

# ---- the API --------------------------------------------------------------

# api(METHOD, PATH, %o) -> DsTest response hash (status, json, body, ...)
#   json => perl data (encoded), body => raw bytes, token => (admin),
#   no_token => 1, headers => { ... }, timeout => s
sub api {
    my ($self, $method, $path, %o) = @_;
    my @h;
    my $token = $o{token} // $self->{admin_token};
    push @h, Authorization => "Bearer $token" unless $o{no_token};
    my %hdr = %{ $o{headers} || {} };
    push @h, $_ => $hdr{$_} for sort keys %hdr;
    my $body = exists $o{json} ? $JSON->encode($o{json}) : $o{body};
    push @h, 'Content-Type' => 'application/json'
        if exists $o{json} && !$hdr{'Content-Type'};
    my $req = $self->{t}->build_request($method, $path, host => 'localhost',
        headers => \@h, body => $body, chunked => $o{chunked});
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $self->socket_path)
        or return { status => 0, error => "connect: $!" };
    my $res = eval {
        DsTest::_send_all($sock, $req, time + ($o{timeout} // 30));
        DsTest::_read_response($sock, timeout => $o{timeout} // 30,
            method => $method, t0 => time);
    };
    close $sock;
    return $res || { status => 0, error => $@ };
}

# tar.gz of { path => content } (content may be a code ref of the dir)
sub archive {
    my ($self, $files) = @_;
    my $n = ++$self->{archives};
    my $src = "$self->{dir}/archives/src-$n";
    make_path($src);
    for my $f (sort keys %$files) {
        my $p = "$src/$f";
        (my $dir = $p) =~ s{/[^/]+$}{};
        make_path($dir);
        DsTest::_write($p, $files->{$f});
    }
    my $tgz = "$self->{dir}/archives/code-$n.tar.gz";
    system('tar', '-czf', $tgz, '-C', $src, '.') == 0
        or die "tar failed\n";
    return DsTest::_slurp($tgz);
}

# uploads the archive of FILES; returns its hash
sub upload {
    my ($self, $files) = @_;
    my $bytes = $self->archive($files);
    my $hash = sha256_hex($bytes);
    my $r = $self->api('PUT', "/api/code/$hash", body => $bytes,
        headers => { 'Content-Type' => 'application/gzip' });
    die "upload: $r->{status} $r->{body}\n"
        unless $r->{status} == 201 || $r->{status} == 200;
    return $hash;
}

sub app_files { return { 'app.py' => $APP, %{ $_[1] || {} } } }

# a spec running the app, sized for any test machine: on port 8000 in
# namespaces, on a free port of the host network otherwise
sub app_spec {
    my ($self, %o) = @_;
    my $port = $self->network eq 'netns' ? 8000 : DsTest::free_port();
    return {
        type => 'service',
        port => $port,
        commands => [
            'date +%s.%N > exec.txt',
            "exec python3 app.py $port",
        ],
        resources => { cpu => '1..', memory => '64MB..', disk => '1GB..' },
        auth => JSON::PP::false,
        https => JSON::PP::false,
        %o,
    };
}

# skips the whole test unless replicas get network namespaces here
sub need_netns {
    my $self = shift;
    return if $self->network eq 'netns';
    $self->finish;
    Test::More::plan(skip_all => 'several replicas of a service need '
        . 'network namespaces (root with CAP_NET_ADMIN); this controld '
        . 'uses the host network');
}

sub apply {
    my ($self, $spec, %o) = @_;
    my %body = (spec => $spec);
    $body{name} = $o{name} if defined $o{name};
    $body{code} = $o{code} if defined $o{code};
    return $self->api('POST', '/api/runs/apply', json => \%body);
}

sub run {
    my ($self, $name) = @_;
    my $r = $self->api('GET', "/api/runs/$name");
    return $r->{status} == 200 ? $r->{json} : undef;
}

# waits until COND(run) holds; returns the run (or undef on timeout, with
# the last run seen in $self->{last_run})
sub wait_run {
    my ($self, $name, $cond, %o) = @_;
    my $run;
    my $ok = DsTest::wait_until(sub {
        $run = $self->run($name);
        return $run && $cond->($run);
    }, timeout => $o{timeout} // 30, interval => $o{interval} // 0.05);
    $self->{last_run} = $run;
    return $ok ? $run : undef;
}

sub last_run { $_[0]{last_run} }

sub ready_count {
    my ($self, $run) = @_;
    return scalar grep { $_->{ready} } @{ $run->{replicas} || [] };
}

# waits for status running with N ready replicas of the run's version
sub wait_ready {
    my ($self, $name, $n, %o) = @_;
    return $self->wait_run($name, sub {
        my $r = shift;
        my @ready = grep { $_->{ready} && $_->{version} == $r->{version} }
            @{ $r->{replicas} };
        my @live = grep { $_->{status} ne 'terminated' } @{ $r->{replicas} };
        return $r->{status} eq 'running' && @ready == $n
            && (!$o{only} || @live == $n);
    }, %o);
}

sub stop {
    my ($self, $name, %o) = @_;
    return $self->api('POST', "/api/runs/$name/stop",
        json => { abort => $o{abort} ? JSON::PP::true : JSON::PP::false });
}

# the replica's working directory and log
sub workdir {
    my ($self, $run, $num, $version) = @_;
    return "$self->{dir}/replicas/$run/$num-$version";
}

sub replica_log {
    my ($self, $run, $num, $version) = @_;
    return DsTest::_slurp("$self->{dir}/replicas/$run/$num-$version.log");
}

# GET through the gateway: Host <run>.<domain>
sub get {
    my ($self, $run, $path, %o) = @_;
    return $self->{t}->get($run, $path // '/', %o);
}

# processes whose environment names the run (the replicas and their kids)
sub run_pids {
    my ($self, $run) = @_;
    my @p;
    opendir(my $d, '/proc') or return ();
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $env = DsTest::_slurp("/proc/$pid/environ");
        next unless $env =~ /(?:^|\0)DSTACK_RUN_NAME=\Q$run\E(?:\0|$)/;
        my $st = DsTest::_slurp("/proc/$pid/stat");
        next if $st =~ /\)\s+Z/;
        push @p, $pid;
    }
    closedir $d;
    return sort { $a <=> $b } @p;
}

# network namespaces of this controld (root only)
sub netns_list {
    my $self = shift;
    opendir(my $d, '/var/run/netns') or return ();
    my @n = grep { /^dstack-/ } readdir $d;
    closedir $d;
    my $run = shift;
    return sort grep { !defined $run || /-\Q$run\E-\d+-\d+$/ } @n;
}

# A load loop in a child process: GETs RUN's PATH through the gateway
# until stopped; retries a request on connection errors (status 0) up to
# `retries` times, as a client would.  stop_load returns
# { total, ok, failed => [statuses...] }.
sub start_load {
    my ($self, $run, %o) = @_;
    my $path = $o{path} // '/';
    my $file = "$self->{dir}/load-" . (++$self->{loads}) . '.json';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $stop = 0;
        local $SIG{TERM} = sub { $stop = 1 };
        my %res = (total => 0, ok => 0, failed => [], seen => {});
        while (!$stop) {
            my $r;
            for my $try (0 .. ($o{retries} // 0)) {
                $r = $self->{t}->get($run, $path, timeout => 10,
                    headers => $o{headers} || {});
                last if $r->{status} != 0 || $stop;
                sleep 0.01;
            }
            # the stop signal interrupts the request in flight: not a
            # failure of the service
            last if $stop && $r->{status} == 0;
            $res{total}++;
            if ($r->{status} == 200) {
                $res{ok}++;
                my $j = $r->{json};
                $res{seen}{"$j->{replica}:$j->{version}:$j->{greeting}"}++
                    if $j;
            } else {
                push @{ $res{failed} },
                    "$r->{status} " . ($r->{error} // $r->{body} // '');
            }
            sleep($o{interval} // 0.005);
        }
        DsTest::_write($file, $JSON->encode(\%res));
        POSIX::_exit(0);
    }
    return { pid => $pid, file => $file };
}

sub stop_load {
    my ($self, $load) = @_;
    kill 'TERM', $load->{pid};
    waitpid($load->{pid}, 0);
    return $JSON->decode(DsTest::_slurp($load->{file}) || '{}');
}

# "netns" or "host": how the local backend isolates replicas here
sub network {
    my $self = shift;
    return $self->{network} //=
        $self->api('GET', '/api/health')->{json}{network} // 'host';
}

# Aborts every run, stops controld.  Called by END too.  Whatever a failed
# test left behind goes as well: processes working under this test's
# replicas directory, and this controld's network namespaces.
sub finish {
    my $self = shift;
    return if $self->{finished}++ || $self->{owner} != $$;
    if ($self->{pid}) {
        my $r = $self->api('GET', '/api/runs', timeout => 5);
        for my $run (@{ ($r->{json} || {})->{runs} || [] }) {
            $self->stop($run->{name}, abort => 1);
        }
        DsTest::wait_until(sub {
            my $x = $self->api('GET', '/api/runs', timeout => 5);
            return !@{ ($x->{json} || {})->{runs} || [] };
        }, timeout => 15);
        $self->stop_controld;
    }
    $self->sweep;
    @STACKS = grep { $_ != $self } @STACKS;
}

sub sweep {
    my $self = shift;
    my $dir = $self->replicas_dir;
    my @left;
    if (opendir(my $d, '/proc')) {
        for my $pid (grep { /^\d+$/ } readdir $d) {
            my $cwd = readlink("/proc/$pid/cwd") // next;
            push @left, $pid if index($cwd, "$dir/") == 0;
        }
        closedir $d;
    }
    if (@left) {
        Test::More::diag("killing replica processes left behind: @left");
        kill 'KILL', @left;
    }
    # the SSH connections to fleet hosts outlive controld by design (their
    # tunnels keep serving across a restart): the test's go with it
    my $ssh = $self->{t}->state . '/ssh/';
    if (opendir(my $d, '/proc')) {
        for my $pid (grep { /^\d+$/ } readdir $d) {
            my $cmd = DsTest::_slurp("/proc/$pid/cmdline");
            kill 'KILL', $pid if $cmd =~ /^ssh\0/ && index($cmd, $ssh) >= 0;
        }
        closedir $d;
    }
    my $tag = substr(sha256_hex($self->{t}->state), 0, 4);
    for my $ns (grep { /^dstack-\Q$tag\E-/ } $self->netns_list) {
        system('ip', 'netns', 'del', $ns);
    }
}

END {
    my $rc = $?;
    for my $s (@STACKS) {
        eval { $s->finish };
    }
    $? = $rc;
}

1;
