package DsPg;

# A private PostgreSQL 15 for the tests of shared mode: its own cluster
# (initdb) in the test's directory, run by pg_ctl as the postgres user
# (initdb and postgres refuse root), listening on a free port on
# 127.0.0.1 and on a private unix socket directory, fsync off (a test's
# data need not survive a power cut), trust authentication (only this
# host's processes reach it; a password in the URI is accepted and
# ignored, which lets a test check that it is never logged).
#
#   use lib 't/lib';
#   use DsTest; use DsPg; use Test::More;
#   DsPg::need();                      # skip_all (with the reason) unless
#                                      # root and PostgreSQL is installed
#   my $t = DsTest->new(seed_empty => 0);
#   my $pg = DsPg->new($t->dir);       # initdb, start, createdb dstack
#   my $uri = $pg->uri;           # postgresql://postgres@127.0.0.1:P/dstack
#   my @rows = $pg->rows('select instance, term from dstack_leader');
#   my $v = $pg->value('select rev from dstack_leader');
#   $pg->rows('create database other'); $pg->value($sql, db => 'other');
#   $pg->stop; $pg->start; $pg->restart;
#   # END stops every cluster still running (pg_ctl stop -m immediate)
#
# Environment: DSTACK_PG_BIN, the directory of initdb, pg_ctl and psql
# (/usr/lib/postgresql/15/bin).  Only core Perl.

use strict;
use warnings;

use File::Path qw(make_path);
use Test::More ();
use Time::HiRes qw(time sleep);

use DsTest;

our $BIN = $ENV{DSTACK_PG_BIN} || '/usr/lib/postgresql/15/bin';

my @CLUSTERS;

# why PostgreSQL cannot run here, or undef
sub unavailable {
    return 'not root (initdb and pg_ctl run as the postgres user through '
        . 'runuser)' if $> != 0;
    for my $b (qw(initdb pg_ctl psql)) {
        return "$BIN/$b missing (Debian packages postgresql-15 "
            . "postgresql-client-15, or ./configure --install-deps)"
            unless -x "$BIN/$b";
    }
    return 'no postgres user (Debian package postgresql-15)'
        unless defined getpwnam('postgres');
    return 'runuser missing' unless -x '/usr/sbin/runuser'
        || -x '/sbin/runuser' || -x '/usr/bin/runuser';
    return undef;
}

# plan(skip_all) with the reason when PostgreSQL cannot run here
sub need {
    my $why = unavailable();
    Test::More::plan(skip_all => "no private PostgreSQL here: $why") if $why;
}

# DsPg->new(DIR, db => 'dstack'): a cluster in DIR/pg, started
sub new {
    my ($class, $dir, %o) = @_;
    my $self = bless {
        dir   => "$dir/pg",
        db    => $o{db} // 'dstack',
        port  => DsTest::free_port(),
        owner => $$,
    }, $class;
    my (undef, undef, $uid, $gid) = getpwnam('postgres');
    make_path("$self->{dir}/sock");
    chown $uid, $gid, $self->{dir}, "$self->{dir}/sock";
    chmod 0700, $self->{dir};
    push @CLUSTERS, $self;
    my ($rc, $out, $err) = $self->_as_postgres("$BIN/initdb", '-D',
        $self->data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8',
        '--no-locale', '--no-sync');
    die "initdb failed ($rc): $err$out" if $rc;
    $self->start;
    ($rc, $out, $err) = DsTest::_run(["$BIN/psql", $self->_conn('postgres'),
        '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c',
        "create database $self->{db}"]);
    die "createdb failed ($rc): $err" if $rc;
    return $self;
}

sub dir  { $_[0]{dir} }
sub data { "$_[0]{dir}/data" }
sub port { $_[0]{port} }
sub socket_dir { "$_[0]{dir}/sock" }
sub log_text { DsTest::_slurp("$_[0]{dir}/postgres.log") }

# the libpq URI of the database; %o: password => ..., db => ...,
# params => 'k=v&...'
sub uri {
    my ($self, %o) = @_;
    my $auth = 'postgres' . (defined $o{password} ? ":$o{password}" : '');
    my $u = "postgresql://$auth\@127.0.0.1:$self->{port}/"
        . ($o{db} // $self->{db});
    $u .= "?$o{params}" if $o{params};
    return $u;
}

sub _conn {
    my ($self, $db) = @_;
    return "host=127.0.0.1 port=$self->{port} user=postgres dbname="
        . ($db // $self->{db}) . ' connect_timeout=5';
}

sub _as_postgres {
    my ($self, @cmd) = @_;
    return DsTest::_run(['runuser', '-u', 'postgres', '--', @cmd]);
}

sub running { $_[0]{running} }

sub start {
    my $self = shift;
    my $opts = join(' ', '-c listen_addresses='
        . join(',', '127.0.0.1', @{ $self->{listen} || [] }),
        "-c port=$self->{port}",
        "-c unix_socket_directories=$self->{dir}/sock",
        '-c fsync=off', '-c synchronous_commit=off',
        '-c full_page_writes=off', '-c shared_buffers=16MB',
        '-c max_connections=60');
    my ($rc, $out, $err) = $self->_as_postgres("$BIN/pg_ctl", '-D',
        $self->data, '-l', "$self->{dir}/postgres.log", '-o', $opts,
        '-w', '-t', '30', 'start');
    die "pg_ctl start failed ($rc): $err$out\n" . $self->log_text if $rc;
    my ($pid) = DsTest::_slurp($self->data . '/postmaster.pid') =~ /^(\d+)/;
    $self->{pid} = $pid;
    $self->{running} = 1;
    return $self;
}

# MODE: fast (default), immediate
sub stop {
    my ($self, $mode) = @_;
    return $self unless $self->{running};
    if (!-d $self->data) {
        # the directory went first (a test's cleanup): the postmaster
        # by its pid, SIGQUIT being the immediate shutdown
        kill 'QUIT', $self->{pid} if $self->{pid};
        $self->{running} = 0;
        return $self;
    }
    my ($rc, $out, $err) = $self->_as_postgres("$BIN/pg_ctl", '-D',
        $self->data, '-m', $mode // 'fast', '-w', '-t', '30', 'stop');
    Test::More::diag("pg_ctl stop failed ($rc): $err$out") if $rc;
    $self->{running} = 0;
    return $self;
}

# listen_also(ADDR): PostgreSQL listens on ADDR as well (a veth's
# address, for a client in another network namespace) and trusts the
# subnets it is connected to; restarts it
sub listen_also {
    my ($self, $addr) = @_;
    push @{ $self->{listen} }, $addr;
    open my $h, '>>', $self->data . '/pg_hba.conf'
        or die "pg_hba.conf: $!";
    print $h "host all all samenet trust\n";
    close $h;
    return $self->restart;
}

sub restart {
    my $self = shift;
    $self->stop;
    return $self->start;
}

# psql -At on SQL (%o: db => another database); dies on an error;
# returns the output's lines
sub rows {
    my ($self, $sql, %o) = @_;
    my ($rc, $out, $err) = DsTest::_run(["$BIN/psql", $self->_conn($o{db}),
        '-X',
        '-q', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', $sql]);
    die "psql failed ($rc) on \"$sql\": $err" if $rc;
    return split /\n/, $out;
}

# the first column of the first row, or undef
sub value {
    my ($self, $sql, %o) = @_;
    my @r = $self->rows($sql, %o);
    return undef unless @r;
    my ($v) = split /\|/, $r[0], 2;
    return $v;
}

# runs SQL; returns (exit code, stderr) instead of dying
sub try {
    my ($self, $sql) = @_;
    my ($rc, $out, $err) = DsTest::_run(["$BIN/psql", $self->_conn, '-X',
        '-q', '-v', 'ON_ERROR_STOP=1', '-c', $sql]);
    return ($rc, $err);
}

# before DsTest's END removes the directory of a test that passed
END {
    local $?;
    for my $c (@CLUSTERS) {
        next unless $c->{owner} == $$ && $c->{running};
        $c->stop('immediate');
    }
}

1;
