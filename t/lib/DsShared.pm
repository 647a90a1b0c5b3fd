package DsShared;

# dstack-controld instances in shared mode for t/8*.t and bench/shared,
# all on one PostgreSQL (t/lib/DsPg.pm): each instance has a directory of
# its own, DIR/<name> (controld.yml, controld.log, api.sock, client.yml,
# state/ unless told another state_dir), and one replicas_dir serves them
# all (DIR/replicas: one host, so a new leader adopts what the last one
# started).  Also the API server of conf/nginx/dstack-api-shared.conf,
# rewritten for a test's ports (api_snippet: t/73, t/81, bench/shared).
#
#   use lib 't/lib';
#   use DsTest; use DsStack; use DsPg; use DsShared; use Test::More;
#   my ($t, $pg, $sh) = DsShared::cluster(lease => 3, password => 'pw');
#   # or: DsShared->new($t, $pg, lease => 3, uri => $pg->uri)
#   $sh->start('ctl-a');           # forks it; waits until it follows
#   my $admin = $sh->admin_token('ctl-a');
#   $sh->share_keys('ctl-a', 'ctl-b');   # --keys-export, --keys-import
#   $sh->start('ctl-b');
#   $sh->gw_start;                 # 'gw': role gateway, $t's LMDB
#   $t->start;
#   my $sa = $sh->api_of($sh->leader);    # a DsStack on its API socket
#   kill 'KILL', $sh->pid('ctl-a'); $sh->wait_exit('ctl-a');
#   is($sh->stop($_), 0) for $sh->names;
#   # END kills what is left: controlds, replicas, network namespaces
#
# Environment: as DsTest and DsPg.  Only core Perl.

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use File::Path qw(make_path);
use POSIX qw(:sys_wait_h);
use Test::More ();

use DsTest;
use DsStack;
# loaded before this module's END is compiled, so that END runs first:
# the controlds go before their database does
use DsPg;

my @CLUSTERS;

# DsShared->new($t, $pg, %o): instances under $t->dir, on $pg.  %o:
# lease (seconds, leader_lease:), uri ($pg->uri), gateway_url
# ("http://gateway.<domain>:<port>"), log_level ("debug"); an undef
# gateway_url or log_level leaves the setting out.
sub new {
    my ($class, $t, $pg, %o) = @_;
    my $self = bless {
        t           => $t,
        pg          => $pg,
        dir         => $t->dir,
        lease       => $o{lease} // 5,
        uri         => $o{uri} // $pg->uri,
        gateway_url => exists $o{gateway_url} ? $o{gateway_url}
                       : 'http://gateway.' . $t->domain . ':' . $t->port,
        log_level   => exists $o{log_level} ? $o{log_level} : 'debug',
        ctl         => {},
        owner       => $$,
    }, $class;
    push @CLUSTERS, $self;
    return $self;
}

# The usual start of a test: skips it unless controld is built and a
# private PostgreSQL can run here; then a DsTest ($o{t}: its options),
# its PostgreSQL and the DsShared on it (%o: lease, and password, in the
# URI the instances get: one a test checks is never logged).  Returns
# ($t, $pg, $sh).
sub cluster {
    my (%o) = @_;
    Test::More::plan(skip_all => 'build/dstack-controld not built')
        unless -x DsStack::controld_path();
    DsPg::need();
    my $t = DsTest->new(seed_empty => 0, %{ $o{t} || {} });
    my $pg = DsPg->new($t->dir);
    my $sh = DsShared->new($t, $pg, lease => $o{lease},
        uri => $pg->uri(password => $o{password}));
    return ($t, $pg, $sh);
}

sub dir { $_[0]{dir} }
sub uri { $_[0]{uri} }
sub pid { $_[0]{ctl}{ $_[1] } && $_[0]{ctl}{ $_[1] }{pid} }
sub names { sort keys %{ $_[0]{ctl} } }
sub log_text { DsTest::_slurp("$_[0]{dir}/$_[1]/controld.log") }

# the instance that holds the leader lock, or undef
sub leader {
    my $self = shift;
    return scalar $self->{pg}->value('select instance from dstack_leader');
}

# conf(NAME, %o): writes DIR/NAME/controld.yml; returns its path.  %o:
# role (controller), state (the state_dir: DIR/NAME/state), uri,
# stats_port ($t's), stats_query (after /stats: another source on the
# same nginx), extra (more lines)
sub conf {
    my ($self, $name, %o) = @_;
    my $t = $self->{t};
    my $dir = $self->{dir};
    my $d = "$dir/$name";
    my $domain = $t->domain;
    my $stats = 'http://127.0.0.1:' . ($o{stats_port} // $t->stats_port)
        . '/stats' . ($o{stats_query} // '');
    my $text = 'state_dir: ' . ($o{state} // "$d/state") . "\n"
        . "domain: $domain\n"
        . "api_socket: $d/api.sock\n"
        . "stats_url: $stats\n"
        . "replicas_dir: $dir/replicas\n"
        . "service_url: \"http://{name}.$domain:" . $t->port . "\"\n";
    $text .= "gateway_url: \"$self->{gateway_url}\"\n"
        if defined $self->{gateway_url};
    $text .= "client_config: $d/client.yml\n";
    $text .= "log_level: $self->{log_level}\n" if defined $self->{log_level};
    $text .= 'state: ' . ($o{uri} // $self->{uri}) . "\n"
        . "instance: $name\n"
        . 'role: ' . ($o{role} // 'controller') . "\n"
        . "leader_lease: $self->{lease}s\n"
        . ($o{extra} // '');
    make_path($d, "$dir/replicas");
    DsTest::_write("$d/controld.yml", $text);
    return "$d/controld.yml";
}

# start(NAME, %o): conf(NAME, %o), then dstack-controld -d on it (in the
# network namespace $o{netns} if given), its output appended to
# DIR/NAME/controld.log; waits until this start says it follows the
# database (a restarted instance's log has the last one's too); dies if
# it exits or does not within 20 s.  Returns its pid.
sub start {
    my ($self, $name, %o) = @_;
    my $conf = $self->conf($name, %o);
    my $d = "$self->{dir}/$name";
    my $pos = length $self->log_text($name);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/controld.log" or POSIX::_exit(127);
        open STDERR, '>>', "$d/controld.log" or POSIX::_exit(127);
        my $env = $self->{t}->_san_env;
        $ENV{$_} = $env->{$_} for keys %$env;
        $ENV{DOCKER_HOST} = "unix://$d/no-engine.sock";
        my @pre = $o{netns} ? ('ip', 'netns', 'exec', $o{netns}) : ();
        exec @pre, DsStack::controld_path(), '-d', '-f', $conf
            or POSIX::_exit(127);
    }
    $self->{ctl}{$name} = { pid => $pid };
    my $ok = DsTest::wait_until(sub {
        return -1 if waitpid($pid, WNOHANG) == $pid;
        return substr($self->log_text($name), $pos) =~ /following: state/
            ? 1 : 0;
    }, timeout => 20);
    die "controld $name did not follow:\n" . $self->log_text($name)
        unless $ok && $ok != -1;
    return $pid;
}

# the gateway's follower 'gw': the LMDB $t's nginx reads, the module's
# notices on DIR/gw/notify.sock; %o as start's
sub gw_start {
    my ($self, %o) = @_;
    return $self->start('gw', role => 'gateway',
        state => $self->{t}->state,
        extra => "notify_socket: $self->{dir}/gw/notify.sock\n", %o);
}

# wait_exit(NAME, TIMEOUT): waits for the exit of an instance (15 s); returns
# its exit status, or undef when it did not exit
sub wait_exit {
    my ($self, $name, $timeout) = @_;
    my $c = $self->{ctl}{$name} or return undef;
    my $st;
    DsTest::wait_until(sub {
        my $w = waitpid($c->{pid}, WNOHANG);
        $st = $? if $w == $c->{pid};
        return $w != 0;
    }, timeout => $timeout // 15, interval => 0.01) or return undef;
    delete $self->{ctl}{$name};
    return $st;
}

# stop(NAME, SIG): SIG (TERM), then SIGKILL if it did not exit in 15 s;
# returns its exit status
sub stop {
    my ($self, $name, $sig) = @_;
    my $c = $self->{ctl}{$name} or return;
    kill $sig // 'TERM', $c->{pid};
    my $st = $self->wait_exit($name);
    return $st if defined $st;
    kill 'KILL', $c->{pid};
    waitpid($c->{pid}, 0);
    delete $self->{ctl}{$name};
    return $?;
}

# the admin token in NAME's client.yml (the first leader writes it); the
# one api_of gives its DsStacks
sub admin_token {
    my ($self, $name) = @_;
    ($self->{admin}) = DsTest::_slurp("$self->{dir}/$name/client.yml")
        =~ /^token:\s*(\S+)/m;
    return $self->{admin};
}

# a DsStack on NAME's API socket, with the admin token
sub api_of {
    my ($self, $name) = @_;
    my $s = DsStack->new($self->{t});
    $s->{dir} = "$self->{dir}/$name";
    $s->{admin_token} = $self->{admin};
    return $s;
}

# RUN's answer through $t's nginx (%o: gw => another DsTest, and get's
# options), with TOKEN as the bearer if given
sub gw_get {
    my ($self, $run, $token, %o) = @_;
    my $g = delete $o{gw} // $self->{t};
    return $g->get($run, '/', %o,
        $token ? (headers => [Authorization => "Bearer $token"]) : ());
}

# dstack-controld -f <NAME's conf> ARGS (--keys-export FILE, ...):
# (exit code, stderr)
sub keys_cmd {
    my ($self, $name, @args) = @_;
    my ($rc, $out, $err) = DsTest::_run([DsStack::controld_path(), '-f',
        "$self->{dir}/$name/controld.yml", @args]);
    return ($rc, $err);
}

# the cluster's keys from FROM to TO through DIR/cluster.keys (a standby
# needs them to lead): --keys-export on FROM, --keys-import on TO, each
# with its conf (written if it has none yet); returns both steps as
# { what => '--keys-export', rc, err }
sub share_keys {
    my ($self, $from, $to) = @_;
    my @done;
    for my $k ([$from, '--keys-export'], [$to, '--keys-import']) {
        $self->conf($k->[0]) unless -e "$self->{dir}/$k->[0]/controld.yml";
        my ($rc, $err) = $self->keys_cmd($k->[0], $k->[1],
            "$self->{dir}/cluster.keys");
        push @done, { what => $k->[1], rc => $rc, err => $err };
    }
    return @done;
}

# Kills every instance still running, the replica processes they left
# (working under DIR/replicas) and the network namespaces of this
# database's controllers.  END calls it; a test whose END has more to do
# after the controlds are gone calls it first.
sub cleanup {
    my $self = shift;
    return if $self->{owner} != $$;
    for my $c (values %{ $self->{ctl} }) {
        kill 'KILL', $c->{pid};
        waitpid($c->{pid}, 0);
    }
    $self->{ctl} = {};
    if (opendir(my $d, '/proc')) {
        my @left;
        for my $pid (grep { /^\d+$/ } readdir $d) {
            my $cwd = readlink("/proc/$pid/cwd") // next;
            push @left, $pid if index($cwd, "$self->{dir}/replicas/") == 0;
        }
        closedir $d;
        kill 'KILL', @left if @left;
    }
    # in shared mode their names carry a tag of the database's URI
    if (opendir(my $d, '/var/run/netns')) {
        my $tag = substr(sha256_hex($self->{uri}), 0, 4);
        system('ip', 'netns', 'del', $_)
            for grep { /^dstack-\Q$tag\E-/ } readdir $d;
        closedir $d;
    }
}

# ---- nginx in front of the controllers' API --------------------------------

# api_snippet($t, [PORT_A, PORT_B], %o): conf/nginx/dstack-api-shared.conf
# for $t's nginx (its http block): the upstream on 127.0.0.1:PORT_A and
# PORT_B (api_listen), HTTPS on 127.0.0.1:<a free port> with a
# certificate for gateway.<domain> from a private CA made in
# $t->dir/certs, the test's domain for example.com.  %o: http => PORT
# keeps the snippet's plain-HTTP server, on that port; without, it goes.
# Returns { conf => text, tls => port, certs => dir (ca.crt, gw.crt) }.
# Dies if the snippet changed shape or still names a production path.
sub api_snippet {
    my ($t, $up, %o) = @_;
    my $domain = $t->domain;
    my $tls = DsTest::free_port();
    my $certs = $t->dir . '/certs';
    mkdir $certs;
    DsTest::make_ca($certs, 'dstack test CA');
    DsTest::make_leaf($certs, 'gw', "DNS:gateway.$domain", 'IP:127.0.0.1');
    my $conf = DsTest::_slurp("$DsTest::REPO/conf/nginx/"
        . 'dstack-api-shared.conf');
    my $servers = join '', map { "    server 127.0.0.1:$_ max_fails=0;\n" }
        @$up;
    my $shipped = '^\s*server 10\.0\.0\.11:8181 max_fails=0;\n'
        . '\s*server 10\.0\.0\.12:8181 max_fails=0;\n';
    $conf =~ s/$shipped/$servers/m
        or die "$0: the snippet's upstream changed shape";
    $conf =~ s/listen 443 ssl http2;/listen 127.0.0.1:$tls ssl http2;/
        or die "$0: the snippet's listen 443 changed shape";
    $conf =~ s/^\s*listen \[::\]:(443 ssl http2|80);\n//mg;
    if ($o{http}) {
        $conf =~ s/^(\s*)listen 80;/$1listen 127.0.0.1:$o{http};/m
            or die "$0: the snippet's listen 80 changed shape";
    } else {
        $conf =~ s/^\s*listen 80;\n.*//ms;    # the plain-HTTP server
        $conf =~ s/\n\s*server \{\s*\z/\n/;
    }
    $conf =~ s{/var/lib/dstack/state/tls/gateway\.(crt|key)}{$certs/gw.$1}g;
    $conf =~ s/example\.com/$domain/g;
    $conf =~ s{/etc/dstack/nginx/}{$DsTest::REPO/conf/nginx/}g;
    die "$0: the snippet still names a production path or address"
        if $conf =~ m{/var/lib/dstack|/etc/dstack|10\.0\.0\.|\b443\b};
    return { conf => $conf, tls => $tls, certs => $certs };
}

END {
    my $rc = $?;
    for my $c (@CLUSTERS) {
        eval { $c->cleanup };
    }
    $? = $rc;
}

1;
