package DsTest;

# The test harness for t/*.t: a private directory, real nginx with the
# built module on free 127.0.0.1 ports, LMDB state seeded through
# build/dstack-seed (common/'s writer), real backend processes
# (t/lib/backend.py), a small HTTP/1.1 client that can also send raw bytes,
# and a check at the end that fails the test on any [alert], [emerg] or
# [crit] in error.log or any sanitizer report.
#
#   use lib 't/lib';
#   use DsTest;
#   use Test::More;
#
#   my $t = DsTest->new(workers => 2);
#   my $r1 = $t->backend(name => 'r1');
#   $t->seed([{ op => 'service', name => 'a', auth => JSON::PP::false },
#             { op => 'replicas', service => 'a',
#               replicas => [{ addr => $r1, state => 'ready' }] }]);
#   $t->start;
#   my $res = $t->get('a', '/');              # Host: a.test.local
#   is($res->{status}, 200);
#   $t->done;                                 # checks logs, done_testing
#
# Environment:
#   DSTACK_BUILD     directory with ngx_http_dstack_module.so, dstack-seed
#                    (default: <repo>/build)
#   DSTACK_NGINX     the nginx binary (default: /usr/sbin/nginx)
#   DSTACK_SANITIZE  1: the module was built with ASan+UBSan; nginx runs
#                    with the sanitizer runtimes preloaded and reports go
#                    to files in the test directory
#   DSTACK_KEEP      1: keep the test directory even when the test passes
#   DSTACK_PYTHON    the python3 for backend.py (default: /usr/bin/python3)
#
# Only core Perl modules.  Linux only (/proc is read to find workers).

use strict;
use warnings;

use Cwd qw(abs_path);
use Errno qw(EINTR EAGAIN EWOULDBLOCK EINPROGRESS);
use File::Basename qw(dirname);
use File::Path qw(make_path remove_tree);
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::IP;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Socket qw(SOL_SOCKET SO_REUSEADDR);
use Test::More ();
use Time::HiRes qw(time sleep);

our $REPO = abs_path(dirname(abs_path(__FILE__)) . '/../..');
our $BUILD = $ENV{DSTACK_BUILD} || "$REPO/build";
our $NGINX = $ENV{DSTACK_NGINX} || '/usr/sbin/nginx';
our $SANITIZE = ($ENV{DSTACK_SANITIZE} // '') eq '1';
our $PYTHON = $ENV{DSTACK_PYTHON}
    || (-x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3');
our $JSON = JSON::PP->new->canonical->allow_nonref;

my @INSTANCES;

sub true  { JSON::PP::true }
sub false { JSON::PP::false }

sub module_path { "$BUILD/ngx_http_dstack_module.so" }
sub seed_path   { "$BUILD/dstack-seed" }

# ---- construction --------------------------------------------------------

# Options (all optional; write_conf takes the same ones later):
#   workers        worker_processes (2)
#   domain         dstack_domain of the gateway server (test.local)
#   server_name    of the gateway server ("DOMAIN .DOMAIN")
#   capacity       dstack_capacity arguments ("services=64 replicas=1024")
#   limit_zone     dstack_limit_zone size (1m)
#   watch_interval dstack_watch_interval, e.g. "200ms" (module default)
#   retry_after    dstack_retry_after seconds (module default)
#   state          the LMDB directory (<dir>/state)
#   seed_empty     start() creates an empty state first if there is none (1)
#   main, events, http, server, location, stats_server
#                  extra text for those blocks (location: the gateway
#                  "location /", after the shipped dstack-proxy.conf)
#   worker_header  add "X-Ds-Worker: <pid>" to gateway answers (1)
#   plain          "127.0.0.1:PORT": no module, a plain proxy_pass to it
#                  (for developing the harness itself)
sub new {
    my ($class, %opts) = @_;
    my $dir = tempdir('dstack-t-XXXXXX', TMPDIR => 1, CLEANUP => 0);
    chmod 0755, $dir;
    my $self = bless {
        dir       => $dir,
        opts      => {
            workers => 2, domain => 'test.local',
            capacity => 'services=64 replicas=1024', limit_zone => '1m',
            seed_empty => 1, worker_header => 1,
            state => "$dir/state", %opts,
        },
        backends  => {},
        allowed   => [],
        seed_n    => 0,
        finished  => 0,
        owner     => $$,
    }, $class;
    make_path("$dir/tmp", "$dir/state");
    $self->pick_ports;
    $self->_check_sanitizer if $SANITIZE && !$self->{opts}{plain};
    push @INSTANCES, $self;
    return $self;
}

sub dir   { $_[0]{dir} }
sub state { $_[0]{opts}{state} }
sub domain { $_[0]{opts}{domain} }
sub port { $_[0]{port} }
sub stats_port { $_[0]{stats_port} }

# A port free now on 127.0.0.1 (a race with other processes remains;
# start() picks new ones when nginx cannot bind).
# A port for a listener that starts later (nginx, a replica).  bind(0)
# would hand out one of the kernel's ephemeral ports (32768-60999 here),
# which any outgoing connection of the run may take between this check
# and the listener's bind: nginx then fails with "Address already in
# use".  So pick below that range, from a random start per process, and
# never the same port twice in one process.
my %PORT_GIVEN;
my $PORT_NEXT;

sub _port_bindable {
    my ($p) = @_;
    my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $p,
        Proto => 'tcp', Listen => 1, ReuseAddr => 1) or return 0;
    close $s;
    return 1;
}

sub free_port {
    my ($lo, $hi) = (20000, 32000);
    $PORT_NEXT //= $lo + int(rand($hi - $lo));
    for (1 .. $hi - $lo) {
        my $p = $PORT_NEXT;
        $PORT_NEXT = $PORT_NEXT + 1 >= $hi ? $lo : $PORT_NEXT + 1;
        next if $PORT_GIVEN{$p};
        next unless _port_bindable($p);
        $PORT_GIVEN{$p} = 1;
        return $p;
    }
    die "no free port in $lo..$hi";
}

sub pick_ports {
    my $self = shift;
    my %seen;
    for my $k (qw(port stats_port)) {
        my $p;
        do { $p = free_port() } while $seen{$p}++;
        $self->{$k} = $p;
    }
}

# ---- configuration --------------------------------------------------------

sub _http_snippet {
    my ($self, $o) = @_;
    my $file = "$REPO/conf/nginx/dstack-http.conf";
    open my $fh, '<', $file or die "$file: $!";
    my $text = do { local $/; <$fh> };
    close $fh;
    my %sub = (
        dstack_state      => $o->{state},
        dstack_capacity   => $o->{capacity},
        dstack_limit_zone => $o->{limit_zone},
    );
    for my $d (sort keys %sub) {
        $text =~ s/^(\s*)\Q$d\E\s[^;]*;/$1$d $sub{$d};/m
            or die "$file has no $d directive: the harness needs updating";
    }
    $text .= "dstack_watch_interval $o->{watch_interval};\n"
        if defined $o->{watch_interval};
    $text .= "dstack_retry_after $o->{retry_after};\n"
        if defined $o->{retry_after};
    return $text;
}

# The nginx.conf text for the current options.
sub conf_text {
    my ($self, %over) = @_;
    my $o = { %{ $self->{opts} }, %over };
    my $dir = $self->{dir};
    my $user = $> == 0 ? "user root root;\n" : '';
    my $load = $o->{plain} || (exists $o->{load_module} && !$o->{load_module})
        ? '' : 'load_module ' . module_path() . ";\n";
    my $wh = $o->{worker_header}
        ? "        add_header X-Ds-Worker \$pid always;\n" : '';
    my $extra = sub { my $t = $o->{$_[0]}; defined $t ? "$t\n" : '' };
    my $sn = $o->{server_name} // "$o->{domain} .$o->{domain}";
    my ($http, $gateway, $stats, $fmt);

    if ($o->{plain}) {
        $fmt = '$remote_addr "$request" $status host=$host '
            . 'up=$upstream_addr rt=$request_time pid=$pid';
        $http = '';
        $gateway = <<"EOF";
    server {
        listen 127.0.0.1:$self->{port} default_server;
        server_name $sn;
$wh
        location / {
            proxy_pass http://$o->{plain};
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Connection "";
            proxy_buffering off;
@{[ $extra->('location') ]}        }
@{[ $extra->('server') ]}    }
EOF
        $stats = '';
    } else {
        $fmt = '$remote_addr "$request" $status host=$host '
            . 'svc=$dstack_service up=$upstream_addr us=$upstream_status '
            . 'rt=$request_time pid=$pid';
        $http = $self->_http_snippet($o);
        $gateway = <<"EOF";
    server {
        listen 127.0.0.1:$self->{port} default_server;
        server_name $sn;
$wh
        dstack_domain $o->{domain};

        location / {
            include $REPO/conf/nginx/dstack-proxy.conf;
@{[ $extra->('location') ]}        }
@{[ $extra->('server') ]}    }
EOF
        $stats = <<"EOF";
    server {
        listen 127.0.0.1:$self->{stats_port};

        location = /stats {
            dstack_stats json;
            allow 127.0.0.1;
            deny all;
        }

        location = /metrics {
            dstack_stats prometheus;
            allow 127.0.0.1;
            deny all;
        }
@{[ $extra->('stats_server') ]}    }
EOF
    }

    return <<"EOF";
$load${user}daemon off;
master_process on;
worker_processes $o->{workers};
pid $dir/nginx.pid;
error_log $dir/error.log info;
@{[ $extra->('main') ]}
events {
    worker_connections 1024;
@{[ $extra->('events') ]}}

http {
    log_format ds '$fmt';
    access_log $dir/access.log ds;

    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;

$http
@{[ $extra->('http') ]}
$gateway
$stats}
EOF
}

# Writes <dir>/nginx.conf; options are merged into the instance's.
sub write_conf {
    my ($self, %opts) = @_;
    $self->{opts} = { %{ $self->{opts} }, %opts };
    _write("$self->{dir}/nginx.conf", $self->conf_text);
    $self->{conf_written} = 1;
    return "$self->{dir}/nginx.conf";
}

# nginx -t on a configuration: the current one, or TEXT when given
# (written to <dir>/<name>.conf).  Returns (ok, output).
sub nginx_t {
    my ($self, $text, $name) = @_;
    my $file = "$self->{dir}/nginx.conf";
    if (defined $text) {
        $file = "$self->{dir}/" . ($name // 'check') . '.conf';
        _write($file, $text);
    } elsif (!$self->{conf_written}) {
        $self->write_conf;
    }
    my ($rc, $out, $err) = _run([$NGINX, '-t', '-p', "$self->{dir}/",
        '-e', 'stderr', '-c', $file], env => $self->_nginx_env);
    return ($rc == 0, $out . $err);
}

# ---- sanitizers -----------------------------------------------------------

sub _san_libs {
    my @libs;
    for my $l (qw(libasan.so libubsan.so)) {
        chomp(my $p = `gcc -print-file-name=$l 2>/dev/null` // '');
        die "DSTACK_SANITIZE=1 but gcc does not know $l (apt-get install gcc)"
            unless $p =~ m{/} && -e $p;
        push @libs, abs_path($p);
    }
    return @libs;
}

sub _nginx_env {
    my $self = shift;
    return {} unless $SANITIZE && !$self->{opts}{plain};
    return {
        LD_PRELOAD => join(':', _san_libs()),
        %{ $self->_san_env },
    };
}

sub _san_env {
    my $self = shift;
    return {} unless $SANITIZE;
    my $d = $self->{dir};
    return {
        ASAN_OPTIONS => "detect_leaks=0:abort_on_error=0:log_path=$d/asan",
        UBSAN_OPTIONS => "print_stacktrace=1:log_path=$d/ubsan",
    };
}

sub _check_sanitizer {
    my $self = shift;
    my $m = module_path();
    return unless -f $m;
    my $ldd = `ldd $m 2>&1`;
    die "DSTACK_SANITIZE=1 but $m is not linked with libasan:\n$ldd"
        unless $ldd =~ /libasan/;
}

# Sanitizer report files and lines found so far.
sub sanitizer_reports {
    my $self = shift;
    my $d = $self->{dir};
    my @r;
    for my $f (sort glob("$d/asan.* $d/ubsan.*")) {
        push @r, "$f:\n" . _slurp($f);
    }
    for my $f ("$d/error.log", "$d/nginx.stderr", glob("$d/*.stderr")) {
        next unless -f $f;
        for (split /\n/, _slurp($f)) {
            push @r, "$f: $_"
                if /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer
                    |runtime\ error:/x;
        }
    }
    return @r;
}

# ---- nginx ------------------------------------------------------------------

sub start {
    my $self = shift;
    die "nginx already running\n" if $self->{nginx_pid};
    my $o = $self->{opts};
    if (!$o->{plain} && $o->{seed_empty} && -d $o->{state}
        && !-e "$o->{state}/data.mdb" && -x seed_path())
    {
        $self->seed([]);
    }
    for my $attempt (1 .. 4) {
        $self->write_conf;
        my $mark = -s "$self->{dir}/error.log" || 0;
        my $pid = $self->_spawn("$self->{dir}/nginx.stderr",
            $self->_nginx_env, $NGINX, '-p', "$self->{dir}/",
            '-e', "$self->{dir}/error.log", '-c', "$self->{dir}/nginx.conf");
        $self->{nginx_pid} = $pid;
        my $ok = wait_until(sub {
            return -1 if waitpid($pid, WNOHANG) == $pid;
            return 0 if $self->workers < $o->{workers};
            return 0 unless _port_open($self->{port});
            return $o->{plain} || _port_open($self->{stats_port}) ? 1 : 0;
        }, timeout => 20);
        return $self if $ok && $ok != -1;
        my $log = substr(_slurp("$self->{dir}/error.log"), $mark)
            . _slurp("$self->{dir}/nginx.stderr");
        if ($ok != -1) {
            $self->_kill_nginx;
            die "nginx did not come up in 20 s:\n$log";
        }
        my $status = $?;
        delete $self->{nginx_pid};
        if ($log =~ /Address already in use/ && $attempt < 4) {
            $self->pick_ports;
            next;
        }
        die "nginx exited at start (status $status):\n$log";
    }
}

sub running { my $p = $_[0]{nginx_pid}; $p && kill(0, $p) }

sub nginx_pid { $_[0]{nginx_pid} }

# pids of the master's children that are live workers (not shutting down)
sub workers {
    my ($self, %o) = @_;
    my $m = $self->{nginx_pid} or return ();
    my @w;
    for my $pid (_children($m)) {
        my $cmd = _slurp("/proc/$pid/cmdline");
        $cmd =~ tr/\0/ /;
        next unless $cmd =~ /worker process/;
        next if !$o{all} && $cmd =~ /shutting down/;
        push @w, $pid;
    }
    return @w;
}

# HUP the master and wait until a full set of new workers runs.
# wait_old => 1 also waits until the old workers are gone.
sub reload {
    my ($self, %o) = @_;
    $self->write_conf(%{ $o{conf} || {} });
    my $m = $self->{nginx_pid} or die "nginx not running\n";
    my %old = map { $_ => 1 } $self->workers(all => 1);
    my $mark = -s "$self->{dir}/error.log" || 0;
    kill 'HUP', $m;
    my $n = $self->{opts}{workers};
    my $ok = wait_until(sub {
        my $new = grep { !$old{$_} } $self->workers;
        return 1 if $new >= $n;
        my $log = substr(_slurp("$self->{dir}/error.log"), $mark);
        die "reload failed:\n$log\n" if $log =~ /\[emerg\]/;
        return 0;
    }, timeout => 20);
    die "reload: new workers did not come up in 20 s\n" unless $ok;
    if ($o{wait_old}) {
        wait_until(sub { !grep { $old{$_} } _children($m) }, timeout => 30)
            or die "reload: old workers still running after 30 s\n";
    }
    return $self;
}

sub stop {
    my $self = shift;
    $self->_kill_nginx;
    return $self;
}

sub _kill_nginx {
    my $self = shift;
    my $pid = delete $self->{nginx_pid} or return;
    my @kids = _children($pid);
    for my $sig (qw(QUIT TERM KILL)) {
        kill $sig, $pid;
        kill 'KILL', @kids if $sig eq 'KILL' && @kids;
        return if wait_until(sub { waitpid($pid, WNOHANG) != 0 },
            timeout => $sig eq 'KILL' ? 5 : 10);
        Test::More::diag("nginx master $pid ignored SIG$sig");
    }
}

# ---- logs ---------------------------------------------------------------------

sub error_log  { _slurp("$_[0]{dir}/error.log") }
sub access_log { _slurp("$_[0]{dir}/access.log") }

# error.log lines that fail the test, unless allowed with allow_log(qr//)
sub allow_log { my $self = shift; push @{ $self->{allowed} }, @_; $self }

sub bad_log_lines {
    my $self = shift;
    my @bad;
    LINE: for (split /\n/, $self->error_log) {
        next unless /\[(alert|emerg|crit)\]/;
        for my $re (@{ $self->{allowed} }) { next LINE if $_ =~ $re }
        push @bad, $_;
    }
    return @bad;
}

# waits until error.log (from byte offset `from`) matches RE
sub wait_log {
    my ($self, $re, %o) = @_;
    my $from = $o{from} || 0;
    return wait_until(sub { substr($self->error_log, $from) =~ $re },
        timeout => $o{timeout} || 10);
}

sub log_size { -s "$_[0]{dir}/error.log" || 0 }

# ---- state ----------------------------------------------------------------------

# Runs dstack-seed with OPS (array ref) as one write transaction.  Dies
# with its stderr on failure; returns its stdout.
sub seed {
    my ($self, $ops, %o) = @_;
    my $seed = seed_path();
    die "$seed not built (make)\n" unless -x $seed;
    my $n = ++$self->{seed_n};
    my $json = $JSON->encode($ops);
    _write("$self->{dir}/seed-$n.json", $json);
    my ($rc, $out, $err) = _run([$seed, $o{state} // $self->state],
        stdin => $json, env => $self->_san_env);
    die "dstack-seed failed (exit $rc) on seed-$n.json:\n$err\n" if $rc;
    return $out;
}

# The state as dstack-seed --dump prints it, decoded.
sub dump {
    my ($self, %o) = @_;
    my ($rc, $out, $err) = _run([seed_path(), $o{state} // $self->state,
        '--dump'], env => $self->_san_env);
    die "dstack-seed --dump failed (exit $rc):\n$err\n" if $rc;
    return $JSON->decode($out);
}

# ---- backends ---------------------------------------------------------------------

# Starts t/lib/backend.py; returns "127.0.0.1:PORT" once it listens.
#   name => 'r1', port => P (default: any free), fail_start => 1
#   host => '0.0.0.0' (listen on every address, so 127.x.y.z:PORT all
#   reach it; default 127.0.0.1), delay_ms => N (every answer N ms late),
#   nodelay => 1 (TCP_NODELAY: much faster answers on reused connections,
#   for load tests)
sub backend {
    my ($self, %o) = @_;
    my $name = $o{name} // 'b' . (1 + keys %{ $self->{backends} });
    die "backend $name exists\n" if $self->{backends}{$name}
        && $self->{backends}{$name}{pid};
    my @cmd = ($PYTHON, "$REPO/t/lib/backend.py", '--name', $name,
        '--port', $o{port} // 0, '--log', "$self->{dir}/backend-$name.log");
    push @cmd, '--fail-start' if $o{fail_start};
    push @cmd, '--host', $o{host} if defined $o{host};
    push @cmd, '--delay-ms', $o{delay_ms} if $o{delay_ms};
    push @cmd, '--nodelay' if $o{nodelay};
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        open STDOUT, '>&', $w or POSIX::_exit(127);
        open STDERR, '>>', "$self->{dir}/backend-$name.stderr"
            or POSIX::_exit(127);
        exec @cmd or POSIX::_exit(127);
    }
    close $w;
    my $b = { name => $name, pid => $pid, out => $r };
    $self->{backends}{$name} = $b;
    my $sel = IO::Select->new($r);
    my $line = '';
    my $deadline = time + 15;
    while ($line !~ /\n/ && time < $deadline) {
        last unless $sel->can_read($deadline - time);
        my $n = sysread($r, $line, 256, length $line);
        last unless $n;
    }
    if ($o{fail_start}) {
        waitpid($pid, 0);
        $b->{pid} = undef;
        return $? >> 8;
    }
    die "backend $name did not start: "
        . _slurp("$self->{dir}/backend-$name.stderr") . "\n"
        unless $line =~ /^ready (\d+)/;
    my $port = $1;
    my $host = $o{host} // '127.0.0.1';
    $b->{port} = $port;
    $b->{addr} = $host =~ /:/ ? "[$host]:$port" : "$host:$port";
    return $b->{addr};
}

sub backend_addr { $_[0]{backends}{$_[1]}{addr} }

sub stop_backend {
    my ($self, $name) = @_;
    my $b = $self->{backends}{$name} or return;
    my $pid = delete $b->{pid} or return;
    kill 'TERM', $pid;
    wait_until(sub { waitpid($pid, WNOHANG) != 0 }, timeout => 5)
        or do { kill 'KILL', $pid; waitpid($pid, 0) };
    close $b->{out} if $b->{out};
}

# The requests backend NAME received, as decoded log entries.
sub backend_requests {
    my ($self, $name) = @_;
    my $f = "$self->{dir}/backend-$name.log";
    return () unless -f $f;
    return map { $JSON->decode($_) } grep { length } split /\n/, _slurp($f);
}

# ---- HTTP client ----------------------------------------------------------------------

# request(METHOD, PATH, %o) -> response hash:
#   { status, reason, headers => { lc name => value, duplicates joined
#     with ", " }, header_list => [[name, value], ...], body, json (decoded
#     when the body is JSON), chunks => [{ t, data }] (chunked answers:
#     arrival time of each chunk), t_start, t_headers, t_end, raw }
# Options:
#   host => 'a.test.local' (default: the domain); no_host => 1 omits it
#   headers => { name => value } or [ name => value, ... ] (repeats kept)
#   body => bytes (Content-Length), chunked => 1 sends it chunked
#   port => (default: the gateway), timeout => seconds (10)
#   keep => 1: leave the connection open (no "Connection: close"); the
#   socket comes back in {sock} and can be passed back in as sock => $s
#   http10 => 1: HTTP/1.0 request line
# A failed connection or a timeout gives { status => 0, error => why }.
sub request {
    my ($self, $method, $path, %o) = @_;
    my $bytes = $self->build_request($method, $path, %o);
    return $self->raw($bytes, %o, method => $method);
}

sub build_request {
    my ($self, $method, $path, %o) = @_;
    my @h;
    push @h, ['Host', $o{host} // $self->domain] unless $o{no_host};
    my $hdr = $o{headers} || [];
    if (ref $hdr eq 'HASH') {
        push @h, [$_, $hdr->{$_}] for sort keys %$hdr;
    } else {
        my @l = @$hdr;
        push @h, [splice(@l, 0, 2)] while @l;
    }
    my %have = map { lc $_->[0] => 1 } @h;
    my $body = $o{body};
    if (defined $body) {
        if ($o{chunked}) {
            push @h, ['Transfer-Encoding', 'chunked'];
            my $c = '';
            for (my $i = 0; $i < length $body; $i += 8192) {
                my $part = substr($body, $i, 8192);
                $c .= sprintf("%x\r\n%s\r\n", length $part, $part);
            }
            $body = "${c}0\r\n\r\n";
        } elsif (!$have{'content-length'}) {
            push @h, ['Content-Length', length $body];
        }
    }
    push @h, ['Connection', 'close']
        unless $o{keep} || $have{connection} || $o{http10};
    my $v = $o{http10} ? 'HTTP/1.0' : 'HTTP/1.1';
    return "$method $path $v\r\n"
        . join('', map { "$_->[0]: $_->[1]\r\n" } @h) . "\r\n"
        . ($body // '');
}

sub get {
    my ($self, $service, $path, %o) = @_;
    return $self->request('GET', $path // '/',
        host => "$service.$self->{opts}{domain}", %o);
}

# raw(BYTES, %o): sends BYTES as they are and parses one response.
sub raw {
    my ($self, $bytes, %o) = @_;
    my $t0 = time;
    my $sock = $o{sock} || _connect($o{port} // $self->{port},
        $o{timeout} // 10);
    return { status => 0, error => "connect: $!" } unless $sock;
    my $res = eval {
        _send_all($sock, $bytes, $t0 + ($o{timeout} // 10));
        _read_response($sock, %o, t0 => $t0);
    };
    if (!$res) {
        (my $e = $@ || 'unknown') =~ s/\s+$//;
        close $sock;
        return { status => 0, error => $e, t_start => $t0 };
    }
    if ($o{keep} || $res->{status} == 101) {
        $res->{sock} = $sock;
    } else {
        close $sock;
    }
    return $res;
}

# parallel([ [METHOD, PATH, %o], ... ]): opens one connection per request,
# sends them all, then reads all answers; returns the responses in order.
sub parallel {
    my ($self, $reqs, %o) = @_;
    my @conns;
    for my $q (@$reqs) {
        my ($m, $p, %ro) = @$q;
        my $s = _connect($ro{port} // $self->{port}, 10);
        push @conns, [$s, $m, \%ro, $s ? undef : "connect: $!"];
        next unless $s;
        eval { _send_all($s, $self->build_request($m, $p, %ro), time + 10) };
        $conns[-1][3] = "send: $@" if $@;
    }
    my @res;
    for my $c (@conns) {
        my ($s, $m, $ro, $err) = @$c;
        if ($err) { push @res, { status => 0, error => $err }; next }
        my $r = eval { _read_response($s, %$ro, method => $m, t0 => time) };
        push @res, $r || { status => 0, error => $@ };
        close $s;
    }
    return @res;
}

sub _connect {
    my ($port, $timeout) = @_;
    return IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => $timeout);
}

sub _send_all {
    my ($sock, $bytes, $deadline) = @_;
    my $off = 0;
    my $sel = IO::Select->new($sock);
    while ($off < length $bytes) {
        die "timeout sending\n" unless $sel->can_write($deadline - time);
        my $n = syswrite($sock, $bytes, length($bytes) - $off, $off);
        if (!defined $n) {
            next if $! == EINTR || $! == EAGAIN;
            die "send: $!\n";
        }
        $off += $n;
    }
}

# Reads one HTTP response from $sock.
sub _read_response {
    my ($sock, %o) = @_;
    my $timeout = $o{timeout} // 10;
    my $deadline = time + $timeout;
    my $sel = IO::Select->new($sock);
    my $buf = $o{buffer} // '';
    my $raw = '';
    my $eof = 0;
    my $fill = sub {
        return 0 if $eof;
        my $left = $deadline - time;
        die "timeout after ${timeout}s\n"
            if $left <= 0 || !$sel->can_read($left);
        my $n = sysread($sock, $buf, 65536, length $buf);
        if (!defined $n) {
            return 1 if $! == EINTR || $! == EAGAIN;
            die "read: $!\n";
        }
        $eof = 1 if $n == 0;
        return $n;
    };
    my $res = { t_start => $o{t0} // time, chunks => [] };
    my $he;
    while (1) {
        $he = index($buf, "\r\n\r\n");
        last if $he >= 0;
        $fill->() or die $buf eq '' ? "connection closed without answer\n"
            : "connection closed in the header\n";
    }
    my $head = substr($buf, 0, $he + 4, '');
    $raw .= $head;
    $res->{t_headers} = time;
    my @lines = split /\r\n/, $head;
    my $sl = shift @lines;
    $sl =~ m{^HTTP/\d\.\d (\d{3})(?: (.*))?$} or die "bad status line: $sl\n";
    @$res{qw(status reason)} = ($1, $2 // '');
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        push @{ $res->{header_list} }, [$k, $v];
        my $lk = lc $k;
        $res->{headers}{$lk} = exists $res->{headers}{$lk}
            ? "$res->{headers}{$lk}, $v" : $v;
    }
    my $h = $res->{headers} ||= {};
    my $st = $res->{status};
    my $body = '';
    if (($o{method} // '') eq 'HEAD' || $st == 204 || $st == 304
        || ($st >= 100 && $st < 200))
    {
        # no body
    } elsif (($h->{'transfer-encoding'} // '') =~ /chunked/i) {
        while (1) {
            my $le;
            $fill->() or die "eof in chunk size\n"
                while ($le = index($buf, "\r\n")) < 0;
            my $line = substr($buf, 0, $le + 2, '');
            my ($size) = $line =~ /^([0-9a-fA-F]+)/
                or die "bad chunk size: $line\n";
            $size = hex $size;
            if ($size == 0) {
                $fill->() or last while index($buf, "\r\n") < 0;
                # trailers until the empty line
                while ((my $te = index($buf, "\r\n")) >= 0) {
                    my $tl = substr($buf, 0, $te + 2, '');
                    last if $tl eq "\r\n";
                    $fill->() or last if index($buf, "\r\n") < 0;
                }
                last;
            }
            $fill->() or die "eof in chunk\n" while length($buf) < $size + 2;
            my $data = substr($buf, 0, $size + 2, '');
            substr($data, -2) = '';
            push @{ $res->{chunks} }, { t => time, data => $data };
            $body .= $data;
        }
    } elsif (defined $h->{'content-length'}) {
        my $n = $h->{'content-length'};
        $fill->() or die "eof in body (" . length($buf) . " of $n)\n"
            while length($buf) < $n;
        $body = substr($buf, 0, $n, '');
    } else {
        1 while $fill->();
        $body = $buf;
        $buf = '';
    }
    $res->{body} = $body;
    $res->{raw} = $raw . $body;
    $res->{rest} = $buf;
    $res->{t_end} = time;
    if (length $body && $body =~ /^\s*[\{\[]/) {
        $res->{json} = eval { $JSON->decode($body) };
    }
    return $res;
}

# ---- WebSocket helpers --------------------------------------------------------------------

# Opens a WebSocket through the gateway; returns the 101 response with
# {sock}, or whatever else came back.
sub websocket {
    my ($self, $host, $path, %o) = @_;
    my $key = 'dGhlIHNhbXBsZSBub25jZQ==';
    my %h = (Upgrade => 'websocket', Connection => 'Upgrade',
        'Sec-WebSocket-Key' => $key, 'Sec-WebSocket-Version' => 13,
        %{ $o{headers} || {} });
    return $self->request('GET', $path // '/ws', host => $host,
        headers => \%h, keep => 1, %o);
}

sub ws_send {
    my ($sock, $text, $opcode) = @_;
    $opcode //= 1;
    my $n = length $text;
    my $head = $n < 126 ? pack('CC', 0x80 | $opcode, 0x80 | $n)
        : $n < 65536 ? pack('CCn', 0x80 | $opcode, 0x80 | 126, $n)
        : pack('CCQ>', 0x80 | $opcode, 0x80 | 127, $n);
    my $mask = pack('N', int rand 2**32);
    my $m = $text ^ substr($mask x (int($n / 4) + 1), 0, $n);
    _send_all($sock, $head . $mask . $m, time + 10);
}

# -> (opcode, payload) or () on timeout/close
sub ws_recv {
    my ($sock, $timeout, $buffer) = @_;
    my $buf = $buffer // '';
    my $deadline = time + ($timeout // 10);
    my $sel = IO::Select->new($sock);
    my $need = sub {
        while (length $buf < $_[0]) {
            return 0 unless $sel->can_read($deadline - time);
            my $n = sysread($sock, $buf, 65536, length $buf);
            return 0 unless $n;
        }
        return 1;
    };
    $need->(2) or return;
    my ($b0, $b1) = unpack 'CC', $buf;
    my $len = $b1 & 0x7f;
    my $off = 2;
    if ($len == 126) { $need->(4) or return; $len = unpack 'x2n', $buf;
        $off = 4 }
    elsif ($len == 127) { $need->(10) or return; $len = unpack 'x2Q>', $buf;
        $off = 10 }
    $need->($off + $len) or return;
    return ($b0 & 0x0f, substr($buf, $off, $len));
}

# ---- load ----------------------------------------------------------------------

# start_load(%o): forks `clients` processes (4) that each send GET requests
# in a loop, one after the other, until stop_load; returns a handle.
#   host => 'a.test.local' (default: the domain), path => '/'
#   keep => 1: each client sends its requests on one keep-alive
#       connection, opened again when the server closes it.  A request
#       that finds a *reused* connection closed before any byte of an
#       answer came (EOF, reset, broken pipe) is sent again once on a new
#       connection, as HTTP clients do (RFC 9112 9.3.1: a server may close
#       an idle connection at any time; nginx does on reload); it counts
#       in {retried}.  Any other failure, and any failure on a new
#       connection, is a failed request.
#   timeout => seconds per request (10)
#   headers => { name => value } sent with every request
#   pause => seconds to wait after each answer (a steady rate)
# stop_load(HANDLE) stops the clients and returns
#   { total, ok (answers with status 200), status => { code => n },
#     errors => [ "client K: why" ], replicas => { X-Replica => n },
#     locals => { address the replica was reached on => n },
#     workers => { X-Ds-Worker => n }, retried, requests => [ { status,
#     replica, local, worker, t } ] }
sub start_load {
    my ($self, %o) = @_;
    my $n = $o{clients} // 4;
    my $base = "$self->{dir}/load-" . ++$self->{load_n};
    my $h = { stop => "$base.stop", files => [], pids => [] };
    for my $k (1 .. $n) {
        my $file = "$base-$k.log";
        push @{ $h->{files} }, $file;
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            my $ok = eval { $self->_load_client($file, $h->{stop}, %o); 1 };
            print STDERR "load client: $@" unless $ok;
            POSIX::_exit($ok ? 0 : 1);
        }
        push @{ $h->{pids} }, $pid;
    }
    return $h;
}

sub _load_client {
    my ($self, $file, $stop, %o) = @_;
    open my $out, '>', $file or die "$file: $!\n";
    $out->autoflush(1);
    my $timeout = $o{timeout} // 10;
    my $port = $o{port} // $self->{port};
    my $req = $self->build_request('GET', $o{path} // '/',
        host => $o{host} // $self->domain, keep => $o{keep},
        headers => $o{headers});
    my ($sock, $uses);
    until (-e $stop) {
        my ($res, $retried) = (undef, 0);
        for my $try (1, 2) {
            if (!$sock) {
                $sock = _connect($port, $timeout);
                $uses = 0;
                if (!$sock) {
                    $res = { status => 0, error => "connect: $!" };
                    last;
                }
            }
            my $reused = $uses++ > 0;
            my $t0 = time;
            $res = eval {
                _send_all($sock, $req, $t0 + $timeout);
                _read_response($sock, timeout => $timeout, t0 => $t0);
            };
            my $err = $@;
            if ($res && $o{keep} && $res->{status}
                && ($res->{headers}{connection} // '') !~ /close/i
                && $res->{rest} eq '')
            {
                last;
            }
            close $sock;
            undef $sock;
            last if $res;
            ($err = $err || 'unknown') =~ s/\s+$//;
            $res = { status => 0, error => $err . ($reused
                ? " (connection used $uses times)" : ' (new connection)') };
            last unless $reused && $try == 1 && $o{keep}
                && $err =~ /^(?:connection\ closed\ without\ answer
                    |send:\ |read:\ Connection\ reset)/x;
            $retried = 1;
        }
        my $h = $res->{headers} || {};
        my $local = $res->{json} && ref $res->{json} eq 'HASH'
            ? $res->{json}{local} // '' : '';
        my @f = ($res->{status}, $h->{'x-replica'} // '', $local,
            $h->{'x-ds-worker'} // '', $retried, sprintf('%.3f', time),
            $res->{status} == 200 ? ''
                : $res->{error} // substr($res->{body} // '', 0, 200));
        s/[\t\n]/ /g for @f;
        print $out join("\t", @f), "\n";
        # pause => seconds between requests (a steady rate, not a flood)
        sleep $o{pause} if $o{pause};
    }
    close $out;
}

sub stop_load {
    my ($self, $h) = @_;
    _write($h->{stop}, '');
    my $r = { total => 0, ok => 0, status => {}, errors => [],
        replicas => {}, locals => {}, workers => {}, retried => 0,
        requests => [] };
    my $k = 0;
    for my $pid (@{ $h->{pids} }) {
        $k++;
        wait_until(sub { waitpid($pid, WNOHANG) != 0 }, timeout => 30)
            or do { kill 'KILL', $pid; waitpid($pid, 0) };
        push @{ $r->{errors} }, "client $k: exit status $?" if $?;
    }
    $k = 0;
    for my $file (@{ $h->{files} }) {
        $k++;
        for (split /\n/, _slurp($file)) {
            my ($st, $rep, $local, $w, $retried, $t, $err) = split /\t/, $_, 7;
            $r->{total}++;
            $r->{ok}++ if $st == 200;
            $r->{status}{$st}++;
            $r->{replicas}{$rep}++ if length $rep;
            $r->{locals}{$local}++ if length $local;
            $r->{workers}{$w}++ if length $w;
            $r->{retried} += $retried;
            push @{ $r->{errors} }, "client $k: $st $err" if $st != 200;
            push @{ $r->{requests} }, { status => $st, replica => $rep,
                local => $local, worker => $w, t => $t };
        }
    }
    return $r;
}

# ---- stats ---------------------------------------------------------------------

sub stats {
    my $self = shift;
    my $r = $self->request('GET', '/stats', host => '127.0.0.1',
        port => $self->{stats_port});
    die "GET /stats: $r->{status} " . ($r->{error} // $r->{body}) . "\n"
        unless $r->{status} == 200 && $r->{json};
    return $r->{json};
}

sub metrics {
    my $self = shift;
    my $r = $self->request('GET', '/metrics', host => '127.0.0.1',
        port => $self->{stats_port});
    die "GET /metrics: $r->{status} " . ($r->{error} // $r->{body}) . "\n"
        unless $r->{status} == 200;
    return $r->{body};
}

# the entry of service NAME in stats(), or undef
sub service_stats {
    my ($self, $name, $stats) = @_;
    $stats //= $self->stats;
    for (@{ $stats->{services} || [] }) {
        return $_ if $_->{name} eq $name;
    }
    return undef;
}

# ---- the end --------------------------------------------------------------------

# Stops nginx and the backends, then checks error.log and sanitizer
# reports as test assertions.  Removes the test directory when the whole
# test passed so far (and DSTACK_KEEP is not set); prints it otherwise.
sub finish {
    my $self = shift;
    return if $self->{finished}++ || $self->{owner} != $$;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $self->_kill_nginx;
    $self->stop_backend($_) for sort keys %{ $self->{backends} };
    my @bad = $self->bad_log_lines;
    Test::More::ok(!@bad, 'no [alert], [emerg] or [crit] in error.log')
        or Test::More::diag(join "\n", @bad[0 .. ($#bad > 20 ? 20 : $#bad)]);
    my @san = $self->sanitizer_reports;
    Test::More::ok(!@san, 'no sanitizer report')
        or Test::More::diag(substr(join("\n", @san), 0, 8000));
    my $tb = Test::More->builder;
    if ($tb->is_passing && !$ENV{DSTACK_KEEP}) {
        remove_tree($self->{dir});
    } else {
        Test::More::diag("test directory kept: $self->{dir}");
    }
    @INSTANCES = grep { $_ != $self } @INSTANCES;
}

sub done {
    my $self = shift;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    $self->finish;
    Test::More::done_testing();
}

END {
    my $rc = $?;
    for my $t (grep { $_->{owner} == $$ } @INSTANCES) {
        eval { $t->finish };
        Test::More::diag("DsTest cleanup: $@") if $@;
    }
    $? = $rc;
}

# SIGINT/SIGTERM: run END (stop nginx and backends) before leaving.
# SIGPIPE: a write to a closed socket is an error to report, not a death
# (and a test whose prove went away still cleans up).
$SIG{PIPE} = 'IGNORE';
$SIG{INT}  = sub { exit 130 } unless ref $SIG{INT};
$SIG{TERM} = sub { exit 143 } unless ref $SIG{TERM};

# ---- utilities ---------------------------------------------------------------------

# Polls CODE every `interval` (0.02 s) until it returns true or `timeout`
# (5 s) passes; returns CODE's last value.
sub wait_until {
    my ($code, %o) = @_;
    my $deadline = time + ($o{timeout} // 5);
    while (1) {
        my $v = $code->();
        return $v if $v;
        return $v if time >= $deadline;
        sleep($o{interval} // 0.02);
    }
}

sub _port_open {
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $_[0],
        Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

sub _children {
    my $ppid = shift;
    my @kids;
    opendir(my $d, '/proc') or return ();
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $st = _slurp("/proc/$pid/stat");
        # pid (comm) state ppid ...
        next unless $st =~ /\)\s+(\S)\s+(\d+)/;
        push @kids, $pid if $2 == $ppid && $1 ne 'Z';
    }
    closedir $d;
    return sort { $a <=> $b } @kids;
}

sub _spawn {
    my ($self, $stderr, $env, @cmd) = @_;
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $stderr or POSIX::_exit(127);
        open STDERR, '>>', $stderr or POSIX::_exit(127);
        $ENV{$_} = $env->{$_} for keys %$env;
        exec @cmd or POSIX::_exit(127);
    }
    return $pid;
}

# runs ARGV with optional stdin; returns (exit code, stdout, stderr)
sub _run {
    my ($argv, %o) = @_;
    my $tmp = tempdir('dstack-run-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    _write("$tmp/in", $o{stdin} // '');
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', "$tmp/in" or POSIX::_exit(127);
        open STDOUT, '>', "$tmp/out" or POSIX::_exit(127);
        open STDERR, '>', "$tmp/err" or POSIX::_exit(127);
        $ENV{$_} = $o{env}{$_} for keys %{ $o{env} || {} };
        exec @$argv or do { print STDERR "exec $argv->[0]: $!\n";
            POSIX::_exit(127) };
    }
    waitpid($pid, 0);
    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;
    my ($out, $err) = (_slurp("$tmp/out"), _slurp("$tmp/err"));
    remove_tree($tmp);
    return ($rc, $out, $err);
}

# conf/nginx/dstack-tls.conf pointed at this test: its snippets, its
# state, its domain, 127.0.0.1:PORT; %o: cert => path prefix of the
# static certificate (PREFIX.crt, PREFIX.key) instead of the state's
sub tls_server_conf {
    my ($self, $port, %o) = @_;
    my $tls = _slurp("$REPO/conf/nginx/dstack-tls.conf");
    my ($state, $domain) = ($self->state, $self->domain);
    $tls =~ s{/etc/dstack/nginx/}{$REPO/conf/nginx/}g;
    $tls =~ s{/var/lib/dstack/state/tls/gateway\.(crt|key)}{$o{cert}.$1}g
        if $o{cert};
    $tls =~ s{/var/lib/dstack/state}{$state}g;
    $tls =~ s{example\.com}{$domain}g;
    $tls =~ s{listen 443 ssl( http2)?;}{listen 127.0.0.1:$port ssl$1;};
    $tls =~ s{^\s*listen \[::\]:443 ssl( http2)?;\n}{}m;
    return $tls;
}

# Test certificates, made with the openssl command (P-256): a CA in DIR
# (ca.crt, ca.key), then leaves it signs, NAME.crt and NAME.key, with
# subjectAltName entries as openssl writes them ("DNS:a.b",
# "IP:127.0.0.1").  make_leaf returns { cert => PEM, key => PEM }.
sub _openssl {
    my $cmd = shift;
    my $out = `openssl $cmd 2>&1`;
    die "openssl $cmd: $out" if $?;
}

sub make_ca {
    my ($dir, $cn) = @_;
    _openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-subj '/CN=$cn' -days 2 -keyout $dir/ca.key -out $dir/ca.crt");
    return "$dir/ca.crt";
}

sub make_leaf {
    my ($dir, $name, @san) = @_;
    _write("$dir/$name.ext", "subjectAltName=" . join(',', @san)
        . "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    _openssl("req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        . "-subj '/CN=$name' -keyout $dir/$name.key -out $dir/$name.csr");
    _openssl("x509 -req -in $dir/$name.csr -CA $dir/ca.crt -CAkey "
        . "$dir/ca.key -CAcreateserial -days 1 -extfile $dir/$name.ext "
        . "-out $dir/$name.crt");
    return { cert => _slurp("$dir/$name.crt"),
             key => _slurp("$dir/$name.key") };
}

sub _slurp {
    my $f = shift;
    open my $fh, '<', $f or return '';
    binmode $fh;
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub _write {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    binmode $fh;
    print $fh $s;
    close $fh or die "$f: $!";
}

1;
