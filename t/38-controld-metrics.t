#!/usr/bin/perl
# controld's own metrics: GET /api/metrics (an admin token, as the whole
# API) and the shipped nginx location /controld/metrics on the loopback
# stats server.  A real stack: runs and replicas by state, desired vs
# ready, a replica killed and restarted under the same labels (run and
# number, never its address), failing probes counted, an autoscaler
# decision, backend errors, the local certificate's end; promtool accepts
# the text, the shipped alert rules (and their unit tests) and scrape
# config; the Grafana dashboard parses, its PromQL is valid and names
# only metrics that the module or controld export.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use Test::More;

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();
my $PROMTOOL = '/usr/bin/promtool';
plan skip_all => 'promtool (package prometheus) not installed'
    unless -x $PROMTOOL;

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
# held requests reach controld at once (scale from zero)
my $notify = $s->dir . '/notify.sock';
$t->write_conf(http => "dstack_notify $notify;");

# the shipped location, pointed at this controld's socket
my $gw = DsTest::_slurp("$DsTest::REPO/conf/nginx/dstack-gateway.conf");
my ($loc) = $gw =~ /^(    location = \/controld\/metrics \{.*?^    \})/ms;
ok($loc, 'dstack-gateway.conf has location = /controld/metrics');
$loc //= '';
like($loc, qr/allow 127\.0\.0\.1;.*deny all;/s,
    '... for local clients only');
my $sock = $s->socket_path;
ok($loc =~ s{unix:/run/dstack/api\.sock:/api/metrics;}
                    {unix:$sock:/api/metrics;},
    '... proxied to the API socket at /api/metrics');
$s->start_controld(extra => <<"EOF");
notify_socket: $notify
backends:
  local:
    max_failures: 5
    stop_grace: 2s
EOF
$t->write_conf(stats_server => $loc);
$t->start;
$s->need_netns;

# ---- helpers ------------------------------------------------------------

my $DIR = $t->dir;

sub scrape {
    my $r = $s->api('GET', '/api/metrics');
    is($r->{status}, 200, 'GET /api/metrics: 200') or diag $r->{body};
    return $r->{body} // '';
}

# { 'name{labels}' => value }
sub parse {
    my %v;
    for (split /\n/, shift) {
        next if /^#/ || !/\S/;
        /^([a-z_:][a-z0-9_:]*(?:\{[^}]*\})?) (\S+)$/ or next;
        $v{$1} = $2;
    }
    return \%v;
}

sub m_now { parse(scrape()) }

# waits until COND(metrics) holds; returns the metrics (undef: timeout)
sub wait_metrics {
    my ($cond, %o) = @_;
    my $m;
    my $ok = DsTest::wait_until(sub {
        my $r = $s->api('GET', '/api/metrics');
        return 0 unless $r->{status} == 200;
        $m = parse($r->{body});
        return $cond->($m);
    }, timeout => $o{timeout} // 20, interval => 0.2);
    return $m if $ok;
    diag explain $m;
    return undef;
}

# promtool ARGS, INPUT on its stdin; (exit code, output)
sub promtool {
    my ($input, @args) = @_;
    my $in = "$DIR/promtool.in";
    DsTest::_write($in, $input // '');
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        open STDIN, '<', $in or POSIX::_exit(126);
        exec $PROMTOOL, @args or POSIX::_exit(127);
    }
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    return ($? >> 8, $out);
}

# ---- who may read them ----------------------------------------------------

my $r = $s->api('GET', '/api/metrics', no_token => 1);
is($r->{status}, 401, 'no token: 401');
like($r->{headers}{'www-authenticate'} // '', qr/^Bearer/,
    '... with WWW-Authenticate: Bearer');
is($s->api('GET', '/api/metrics', token => 'dst_nonsense')->{status}, 401,
    'a bad token: 401');
is($s->api('POST', '/api/metrics')->{status}, 405, 'POST: 405');

$r = $s->api('POST', '/api/tokens',
    json => { name => 'svc-client', scope => 'services' });
is($r->{status}, 201, 'a services token') or diag $r->{body};
$r = $s->api('GET', '/api/metrics', token => $r->{json}{token});
is($r->{status}, 403, 'a token of services only: 403');

$r = $s->api('POST', '/api/tokens',
    json => { name => 'prometheus', scope => 'admin' });
is($r->{status}, 201, 'an admin token of its own for Prometheus');
my $prom_token = $r->{json}{token};

$r = $s->api('GET', '/api/metrics', token => $prom_token);
is($r->{status}, 200, 'it reads /api/metrics');
is($r->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8',
    '... as the Prometheus text format');
like($r->{body}, qr/^dstack_controld_build_info\{version="[^"]+"\} 1$/m,
    '... with build_info');

my %stats = (host => '127.0.0.1', port => $t->stats_port);
$r = $t->request('GET', '/controld/metrics', %stats);
is($r->{status}, 401, 'nginx /controld/metrics without a token: 401');
$r = $t->request('GET', '/controld/metrics', %stats,
    headers => [Authorization => "Bearer $prom_token"]);
is($r->{status}, 200, 'with the token (Prometheus "authorization"): 200');
like($r->{headers}{'content-type'} // '', qr{^text/plain; version=0\.0\.4},
    '... the text format through nginx');
like($r->{body}, qr/^dstack_controld_start_time_seconds \d+$/m,
    '... controld\'s metrics');

# ---- a service: desired vs ready, replicas by run and number ---------------

my $code = $s->upload($s->app_files);
$r = $s->apply($s->app_spec(replicas => 2), name => 'met', code => $code);
is($r->{status}, 201, 'apply met, 2 replicas') or diag $r->{body};
my $run = $s->wait_ready('met', 2);
ok($run, 'two replicas ready') or diag explain $s->last_run;

my $m = wait_metrics(sub {
    ($_[0]{'dstack_controld_run_ready_replicas{run="met"}'} // -1) == 2
});
ok($m, 'ready replicas: 2');
is($m->{'dstack_controld_run_desired_replicas{run="met"}'}, 2,
    'desired replicas: 2');
is($m->{'dstack_controld_replicas{run="met",state="ready"}'}, 2,
    'replicas by state: 2 ready');
is($m->{'dstack_controld_replicas{run="met",state="provisioning"}'}, 0,
    '... 0 provisioning (every state is there)');
is($m->{'dstack_controld_runs{status="running"}'}, 1, 'runs: 1 running');
is($m->{"dstack_controld_replica_ready{run=\"met\",replica=\"$_\"}"}, 1,
    "replica $_ ready, labelled by run and number") for 0, 1;
is($m->{'dstack_controld_run_replica_starts_total{run="met"}'}, 2,
    'two starts counted');
is($m->{'dstack_controld_replica_restarts{run="met",replica="0"}'}, 0,
    'replica 0: no restart yet');
my $start0 = $m->{'dstack_controld_replica_start_time_seconds'
                  . '{run="met",replica="0"}'} // 0;
cmp_ok(abs($start0 - time), '<', 60, 'its start time is now');

# bounded: no address, no token in any series
my $text = scrape();
for my $rep (@{ $run->{replicas} || [] }) {
    my $addr = $rep->{addr} or next;
    unlike($text, qr/\Q$addr\E/, "replica address $addr appears nowhere");
}
unlike($text, qr/\Q$prom_token\E|dst_/, 'no token appears');
my ($rc, $out) = promtool($text, 'check', 'metrics');
is($rc, 0, 'promtool check metrics: clean') or diag $out;

# ---- a replica dies: the same labels, one restart --------------------------

my ($victim) = grep { $_->{num} == 0 } @{ $run->{replicas} || [] };
ok(kill('KILL', -$victim->{pid}), "kill -9 replica 0 (pid $victim->{pid})");
$m = wait_metrics(sub {
    my $x = shift;
    ($x->{'dstack_controld_replica_restarts{run="met",replica="0"}'} // 0) == 1
    && ($x->{'dstack_controld_replica_ready{run="met",replica="0"}'} // 0)
       == 1
}, timeout => 30);
ok($m, 'replica 0 is back, ready, under the same labels, 1 restart');
is($m->{'dstack_controld_run_replica_restarts_total{run="met"}'}, 1,
    'the run counts one restart');
is($m->{'dstack_controld_run_replica_failures_total{run="met"}'}, 1,
    '... and one failure');
cmp_ok($m->{'dstack_controld_backend_errors_total'
            . '{backend="local",kind="exit"}'}, '>=', 1,
    'backend errors: local, exit');
is($m->{'dstack_controld_backend_errors_total{backend="local",kind="start"}'},
    0, '... none at start');
cmp_ok($m->{'dstack_controld_replica_start_time_seconds'
            . '{run="met",replica="0"}'}, '>=', $start0,
    'its start time is the new one (or the same second)');
is($m->{'dstack_controld_replica_restarts{run="met",replica="1"}'}, 0,
    'replica 1 untouched');
is(scalar(grep { /^dstack_controld_replica_ready\{run="met"/ } keys %$m), 2,
    'still two replica series (no series per address)');
is($m->{'dstack_controld_run_ready_replicas{run="met"}'}, 2, 'two ready');

# ---- probes ----------------------------------------------------------------

$r = $s->apply($s->app_spec(
    probes => [{ type => 'http', url => '/health', interval => '1s',
                 ready_after => 1 }],
    commands => ['touch unhealthy', 'exec python3 app.py 8000'],
), name => 'probed', code => $code);
is($r->{status}, 201, 'a run whose HTTP probe fails');
my $PF = 'dstack_controld_probe_failures_total{run="probed",state=';
$m = wait_metrics(sub { ($_[0]{"$PF\"running\"}"} // 0) >= 2 });
ok($m, 'failed probes of a replica not ready are counted');
is($m->{'dstack_controld_run_ready_replicas{run="probed"}'}, 0,
    'ready: 0 of desired 1');
is($m->{'dstack_controld_run_desired_replicas{run="probed"}'}, 1,
    'desired: 1');
is($m->{'dstack_controld_replicas{run="probed",state="running"}'}, 1,
    'the replica is running, not ready');
is($m->{"$PF\"ready\"}"}, 0, 'none while ready');
unlink $s->workdir('probed', 0, 1) . '/unhealthy';
ok(wait_metrics(sub {
    ($_[0]{'dstack_controld_run_ready_replicas{run="probed"}'} // 0) == 1
}), 'ready once the probe passes');

DsTest::_write($s->workdir('probed', 0, 1) . '/unhealthy', '');
$m = wait_metrics(sub {
    ($_[0]{'dstack_controld_probe_unready_total{run="probed"}'} // 0) == 1
}, timeout => 15);
ok($m, 'failed probes take it out of routing: counted');
cmp_ok($m->{"$PF\"ready\"}"}, '>=', 3, 'three failures while ready');
is($m->{'dstack_controld_replica_ready{run="probed",replica="0"}'}, 0,
    'the replica is not ready');
unlink $s->workdir('probed', 0, 1) . '/unhealthy';

# ---- the autoscaler --------------------------------------------------------

$r = $s->apply($s->app_spec(
    replicas => '1..2',
    scaling => { metric => 'rps', target => 1, window => '30s',
                 scale_up_delay => '1s', scale_down_delay => '10m' },
), name => 'auto', code => $code);
is($r->{status}, 201, 'a run scaling on rps, 1..2');
ok($s->wait_ready('auto', 1), 'one replica ready');
my $AD = 'dstack_controld_autoscaler_decisions_total{run="auto",direction=';
$m = m_now();
is($m->{"$AD\"up\",reason=\"rps\"}"}, 0,
    'no decision yet (every reason is there)');
ok(exists $m->{"$AD\"down\",reason=\"min\"}"}, '... down as well');
ok(!grep({ /autoscaler.*run="met"/ } keys %$m),
    'a run without scaling has no autoscaler series');
my $ok = 0;
for (1 .. 90) {
    $ok++ if $s->get('auto', '/')->{status} == 200;
}
is($ok, 90, '90 requests: 3 rps over 30 s');
$m = wait_metrics(sub {
    ($_[0]{'dstack_controld_run_desired_replicas{run="auto"}'} // 0) == 2
}, timeout => 20);
ok($m, 'the autoscaler raises desired to 2');
my $up = 0;
$up += $m->{"$AD\"up\",reason=\"$_\"}"} // 0
    for qw(rps inflight min max held_request);
is($up, 1, 'one decision up');
is(($m->{"$AD\"up\",reason=\"rps\"}"} // 0)
   + ($m->{"$AD\"up\",reason=\"max\"}"} // 0), 1,
    '... for rps (or rps clamped to max)');
is($m->{'dstack_controld_autoscaler_wanted_replicas{run="auto"}'}, 2,
    'wanted: 2');
cmp_ok($m->{'dstack_controld_autoscaler_metric_value{run="auto"}'} // 0, '>',
    1, 'the metric: over 1 rps');
ok(wait_metrics(sub {
    ($_[0]{'dstack_controld_run_ready_replicas{run="auto"}'} // 0) == 2
}, timeout => 30), 'and two replicas ready');

# from zero: a request held at the gateway
$r = $s->apply($s->app_spec(
    replicas => '0..1',
    scaling => { metric => 'rps', target => 100, window => '30s',
                 scale_up_delay => '1s', scale_down_delay => '10m' },
), name => 'zero', code => $code);
is($r->{status}, 201, 'a run scaled to zero');
$m = m_now();
is($m->{'dstack_controld_run_desired_replicas{run="zero"}'}, 0,
    'desired: 0');
is($m->{'dstack_controld_runs{status="pending"}'}, 1, 'runs: 1 pending');
is($s->get('zero', '/', timeout => 30)->{status}, 200,
    'a request waits for its replica and is answered');
$m = m_now();
is($m->{'dstack_controld_autoscaler_decisions_total{run="zero",'
        . 'direction="up",reason="held_request"}'}, 1,
    'one decision up for a held request');
is($m->{'dstack_controld_run_desired_replicas{run="zero"}'}, 1,
    'desired: 1');

# ---- certificates, process -------------------------------------------------

$m = m_now();
my $domain = $t->domain;
my $na = $m->{'dstack_controld_certificate_expiry_timestamp_seconds'
              . "{name=\"*.$domain\",source=\"local\"}"};
ok($na, 'the local certificate\'s end is there');
cmp_ok(($na // 0) - time, '>', 300 * 86400, '... in over 300 days');
is($m->{'dstack_controld_acme_failures_total'}, 0, 'no ACME failure');
cmp_ok(abs($m->{'dstack_controld_start_time_seconds'} - time), '<', 600,
    'controld started minutes ago');
cmp_ok($m->{'dstack_controld_module_stats_age_seconds'}, '<', 5,
    'the module\'s stats are fresh');

# ---- a run that ends: its series go ----------------------------------------

$s->stop('probed', abort => 1);
ok($s->wait_run('probed', sub { $_[0]{status} eq 'terminated' }),
    'probed stopped');
$m = m_now();
ok(!grep({ /run="probed"/ } keys %$m),
    'a finished run has no series of its own');
is($m->{'dstack_controld_runs{status="terminated"}'}, 1,
    'runs: 1 terminated');

# ---- promtool on everything ------------------------------------------------

my $ctl = scrape();
my $mod = $t->metrics;
($rc, $out) = promtool($ctl, 'check', 'metrics');
is($rc, 0, 'promtool check metrics: controld clean') or diag $out;
($rc, $out) = promtool($mod, 'check', 'metrics');
is($rc, 0, 'promtool check metrics: the module clean') or diag $out;

my %exported;
for my $x ($ctl, $mod) {
    for (split /\n/, $x) {
        next unless /^# TYPE (\S+) (\S+)$/;
        $exported{$1} = 1;
        if ($2 eq 'histogram') {
            $exported{"$1_$_"} = 1 for qw(bucket sum count);
        }
    }
}
$exported{up} = 1;      # Prometheus's own, per scrape job

my $conf = "$DsTest::REPO/conf";
($rc, $out) = promtool(undef, 'check', 'rules',
    "$conf/prometheus/dstack-alerts.yml");
is($rc, 0, 'promtool check rules dstack-alerts.yml') or diag $out;
like($out, qr/SUCCESS: \d+ rules found/, '... rules found');
($rc, $out) = promtool(undef, 'test', 'rules',
    "$conf/prometheus/dstack-alerts.test.yml");
is($rc, 0, 'promtool test rules: the alerts fire as their tests say')
    or diag $out;

# the scrape config, with a token file that exists
my $pc = DsTest::_slurp("$conf/prometheus/prometheus.yml");
DsTest::_write("$DIR/prometheus-token", "$prom_token\n");
ok($pc =~ s{credentials_file: /etc/prometheus/dstack-token}
           {credentials_file: $DIR/prometheus-token},
    'prometheus.yml reads the token from a file');
like($pc, qr{metrics_path: /controld/metrics}, '... scrapes /controld/metrics');
$pc =~ s{- dstack-alerts\.yml}{- $conf/prometheus/dstack-alerts.yml};
DsTest::_write("$DIR/prometheus.yml", $pc);
($rc, $out) = promtool(undef, 'check', 'config', "$DIR/prometheus.yml");
is($rc, 0, 'promtool check config prometheus.yml') or diag $out;

# every expression of the rules and the dashboard names exported metrics
my $rules = DsTest::_slurp("$conf/prometheus/dstack-alerts.yml");
my @rule_exprs;
while ($rules =~ /^ +expr: (?:>-\n((?: {10,}\S.*\n)+)|(.*))$/mg) {
    push @rule_exprs, defined $1 ? $1 : $2;
}
cmp_ok(scalar @rule_exprs, '>=', 10, scalar(@rule_exprs) . ' alert rules');

my $dash = eval {
    JSON::PP->new->decode(
        DsTest::_slurp("$conf/grafana/dstack-dashboard.json"))
};
ok($dash, 'the Grafana dashboard is valid JSON') or diag $@;
my @panels = grep { $_->{type} ne 'row' } @{ $dash->{panels} || [] };
cmp_ok(scalar @panels, '>=', 15, scalar(@panels) . ' panels');
my @dash_exprs = map { $_->{expr} } map { @{ $_->{targets} || [] } } @panels;
is(scalar(grep { !defined || !/\S/ } @dash_exprs), 0,
    'every panel target has an expression');

# names: identifiers outside label matchers and strings, not functions
# (followed by "(") nor keywords
my %missing;
for my $e (@rule_exprs, @dash_exprs) {
    (my $x = $e) =~ s/\{[^}]*\}/ /g;
    $x =~ s/"[^"]*"/ /g;
    for my $name ($x =~ /\b([a-z_][a-z0-9_]*)\b(?!\s*\()/g) {
        next unless $name =~ /^(?:dstack_|up$)/;
        $missing{$name} = 1 unless $exported{$name};
    }
}
is_deeply([sort keys %missing], [],
    'the rules and the dashboard name only metrics the stack exports');
my %used = map { $_ => 1 }
    map { /\b(dstack_controld_[a-z0-9_]+)/g } @rule_exprs, @dash_exprs;
my @unused = grep { /^dstack_controld_/ && !$used{$_} } sort keys %exported;
is_deeply(\@unused, [],
    'the dashboard or the rules show every controld metric');

# the dashboard's PromQL parses: as recording rules for promtool
my $rf = "groups:\n  - name: dashboard\n    rules:\n";
my $i = 0;
for my $e (@dash_exprs) {
    (my $x = $e) =~ s/\$__rate_interval|\$__range/5m/g;
    $x =~ s/\$controld_job/dstack-controld/g;
    $x =~ s/\$run/.*/g;
    $x =~ s/'/''/g;
    $rf .= "      - record: dashboard:expr_" . $i++ . "\n"
        . "        expr: '$x'\n";
}
DsTest::_write("$DIR/dashboard-rules.yml", $rf);
($rc, $out) = promtool(undef, 'check', 'rules', "$DIR/dashboard-rules.yml");
is($rc, 0, "the dashboard's $i expressions are valid PromQL") or diag $out;

# ---- a revoked token reads nothing -----------------------------------------

is($s->api('DELETE', '/api/tokens/prometheus')->{status}, 200,
    'revoke the Prometheus token');
is($s->api('GET', '/api/metrics', token => $prom_token)->{status}, 401,
    'then /api/metrics: 401');

# ---- controld down: the scrape fails, the module's still answers ----------

$s->stop($_, abort => 1) for qw(met auto zero);
ok($s->wait_run($_, sub { $_[0]{status} eq 'terminated' }),
    "$_ stopped") for qw(met auto zero);
$s->stop_controld;
# nginx says "crit" when a unix socket is missing: expected here
$t->allow_log(qr/\[crit\].*connect\(\)\ to\ unix:\Q$sock\E\ failed
                 .*"GET\ \/controld\/metrics\ /x);
$r = $t->request('GET', '/controld/metrics', %stats,
    headers => [Authorization => 'Bearer ' . $s->admin_token]);
is($r->{status}, 502, 'controld down: /controld/metrics is 502 (the '
    . 'target is down for Prometheus)');
like($t->metrics, qr/^# TYPE dstack_requests_total counter$/m,
    'the module\'s /metrics still answers');

$s->finish;
$t->done;
