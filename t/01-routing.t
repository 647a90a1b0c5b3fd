#!/usr/bin/perl
# Host <run>.<domain> picks the service; nothing else does.  State changes
# (a new service, a deleted one, a new replica set) are routed at the next
# request without a reload.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my %addr = map { $_ => $t->backend(name => $_) } qw(ra rb rc rd);

sub service {
    my ($name, $replica) = @_;
    return ({ op => 'service', name => $name, auth => DsTest::false },
        { op => 'replicas', service => $name,
          replicas => [{ addr => $addr{$replica}, state => 'ready',
                         version => 1 }] });
}

$t->seed([service('alpha', 'ra'), service('beta', 'rb'),
    service('gamma', 'rc')]);
$t->start;

# which replica answered, or the status when it was not a replica
sub who {
    my $r = shift;
    return "status $r->{status}" unless $r->{status} == 200 && $r->{json};
    return $r->{json}{replica} // 'no replica field';
}

sub count { scalar $t->backend_requests($_[0]) }

# ---- Host -> service ---------------------------------------------------------

is(who($t->get('alpha')), 'ra', 'alpha.test.local goes to alpha');
is(who($t->get('beta')), 'rb', 'beta.test.local goes to beta');
is(who($t->get('gamma')), 'rc', 'gamma.test.local goes to gamma');

for my $host ('ALPHA.TEST.LOCAL', 'Alpha.Test.Local', 'alpha.test.local:8080',
    'alpha.test.local.', 'ALPHA.test.local.:1234')
{
    is(who($t->request('GET', '/', host => $host)), 'ra',
        "Host: $host goes to alpha");
}

my $r = $t->request('GET', '/some/path?q=1&r=2', host => 'beta.test.local');
is($r->{json}{path}, '/some/path?q=1&r=2', 'path and query reach the replica');
is($r->{json}{headers}{host}, 'beta.test.local',
    'the replica sees the Host the client sent');

$r = $t->request('POST', '/echo', host => 'gamma.test.local',
    body => 'x' x 100_000);
is($r->{status}, 200, 'POST with a body');
is(length($r->{body}), 100_000, 'the body reaches the replica whole');

$r = $t->request('POST', '/echo', host => 'gamma.test.local',
    body => 'y' x 50_000, chunked => 1);
is(length($r->{body} // ''), 50_000, 'a chunked body reaches the replica whole');

like($t->access_log, qr/"GET \/ HTTP\/1\.1" 200 host=alpha\.test\.local svc=alpha /,
    '$dstack_service names the service in the access log');

# ---- hosts that name no service ---------------------------------------------------

my %before = map { $_ => count($_) } qw(ra rb rc);

for my $host ('nosuch.test.local', 'alpha.other.local', 'test.local',
    'alpha.beta.test.local', 'alphatest.local', 'alpha.test.local.evil.com',
    'alpha.test.localx', '-alpha.test.local', 'a.test.local',
    'alpha..test.local', 'alpha_x.test.local', '127.0.0.1',
    'NoSuch.Test.Local:80', '.test.local')
{
    $r = $t->request('GET', '/', host => $host);
    ok($r->{status} == 404 || $r->{status} == 400,
        "Host: $host is refused (404, or 400 from nginx)")
        or diag "got $r->{status}: " . ($r->{body} // $r->{error});
    next unless $r->{status} == 404;
    is($r->{headers}{'content-type'}, 'application/json',
        "Host: $host: the 404 is JSON");
    is(ref $r->{json} && $r->{json}{error}{type}, 'not_found',
        "Host: $host: error type not_found")
        or diag $r->{body};
    ok(ref $r->{json} && length($r->{json}{error}{message} // ''),
        "Host: $host: error message");
}

# HTTP/1.0 without Host; HTTP/1.1 without Host (nginx: 400)
$r = $t->request('GET', '/', no_host => 1, http10 => 1);
is($r->{status}, 404, 'HTTP/1.0 without Host: 404');
$r = $t->raw("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
is($r->{status}, 400, 'HTTP/1.1 without Host: 400');

is(count($_), $before{$_}, "none of that reached $_") for qw(ra rb rc);

# ---- the request line wins over Host ------------------------------------------------

%before = map { $_ => count($_) } qw(ra rb rc);
$r = $t->raw("GET http://beta.test.local/abs HTTP/1.1\r\n"
    . "Host: alpha.test.local\r\nConnection: close\r\n\r\n");
is(who($r), 'rb', 'absolute URI http://beta... with Host alpha goes to beta');
is($r->{json}{headers}{host}, 'beta.test.local',
    'and the replica sees Host beta.test.local');

$r = $t->raw("GET http://nosuch.test.local/abs HTTP/1.1\r\n"
    . "Host: alpha.test.local\r\nConnection: close\r\n\r\n");
is($r->{status}, 404, 'absolute URI to an unknown service with Host alpha: 404');

$r = $t->raw("GET http://evil.example/abs HTTP/1.1\r\n"
    . "Host: alpha.test.local\r\nConnection: close\r\n\r\n");
is($r->{status}, 404, 'absolute URI to another domain with Host alpha: 404');

$r = $t->raw("GET http://Gamma.Test.Local.:99/abs HTTP/1.1\r\n"
    . "Host: alpha.test.local\r\nConnection: close\r\n\r\n");
is(who($r), 'rc', 'absolute URI with case, trailing dot and port: gamma');

is(count('ra'), $before{ra}, 'no absolute-URI request reached alpha');
is(count('rb'), $before{rb} + 1, 'beta got exactly its one request');

# ---- X-Forwarded-Host is not a way in ---------------------------------------------------

%before = map { $_ => count($_) } qw(ra rb rc);
$r = $t->request('GET', '/xfh', host => 'alpha.test.local',
    headers => { 'X-Forwarded-Host' => 'beta.test.local' });
is(who($r), 'ra', 'X-Forwarded-Host does not change the service');
ok(!exists $r->{json}{headers}{'x-forwarded-host'},
    'X-Forwarded-Host is not forwarded to the replica')
    or diag $r->{json}{headers}{'x-forwarded-host'};

$r = $t->request('GET', '/xfh', host => 'nosuch.test.local',
    headers => { 'X-Forwarded-Host' => 'alpha.test.local' });
is($r->{status}, 404, 'unknown Host with X-Forwarded-Host of a service: 404');

$r = $t->request('GET', '/xfh', host => 'test.local',
    headers => { 'X-Forwarded-Host' => 'beta.test.local',
                 'X-Host' => 'beta.test.local',
                 'Forwarded' => 'host=beta.test.local' });
is($r->{status}, 404, 'bare domain with forwarding headers naming beta: 404');
is(count('rb'), $before{rb}, 'beta never saw those');

# ---- forwarding headers --------------------------------------------------------------------

$r = $t->request('GET', '/fwd', host => 'alpha.test.local');
my $h = $r->{json}{headers} || {};
is($h->{'x-forwarded-for'}, '127.0.0.1', 'X-Forwarded-For is the client');
is($h->{'x-real-ip'}, '127.0.0.1', 'X-Real-IP is the client');
is($h->{'x-forwarded-proto'}, 'http', 'X-Forwarded-Proto is http');

$r = $t->request('GET', '/fwd', host => 'alpha.test.local',
    headers => { 'X-Forwarded-For' => '10.1.2.3',
                 'X-Real-IP' => '10.9.9.9',
                 'X-Forwarded-Proto' => 'https' });
$h = $r->{json}{headers} || {};
is($h->{'x-forwarded-for'}, '10.1.2.3, 127.0.0.1',
    'X-Forwarded-For appends the client to what came');
is($h->{'x-real-ip'}, '127.0.0.1', 'a client X-Real-IP is replaced');
is($h->{'x-forwarded-proto'}, 'http', 'a client X-Forwarded-Proto is replaced');

# ---- state changes without reload ------------------------------------------------------------

my @workers = sort $t->workers;
my $log_before = $t->log_size;

# a new service: routed at the next request, on every worker
$t->seed([service('delta', 'rd')]);
my %seen;
my @res = map { $t->get('delta', '/new') } 1 .. 20;
is(scalar(grep { who($_) eq 'rd' } @res), 20,
    'a service added while nginx runs is routed at once (20 of 20)')
    or diag join ', ', map { who($_) } @res;
$seen{ $_->{headers}{'x-ds-worker'} // '' }++ for @res;
note 'workers that answered: ' . join ', ', sort keys %seen;

# a new replica set for alpha: the next request goes to the new replica
$t->seed([{ op => 'replicas', service => 'alpha',
    replicas => [{ addr => $addr{rc}, state => 'ready', version => 2 }] }]);
@res = map { $t->get('alpha', '/moved') } 1 .. 10;
is(scalar(grep { who($_) eq 'rc' } @res), 10,
    'a new replica set takes effect at the next request')
    or diag join ', ', map { who($_) } @res;

# a service with no replica
$t->seed([{ op => 'replicas', service => 'alpha', replicas => [] }]);
$r = $t->get('alpha', '/none');
is($r->{status}, 503, 'a service without replicas: 503');
like($r->{headers}{'retry-after'} // '', qr/^\d+$/, 'with Retry-After');
is(ref $r->{json} && $r->{json}{error}{type}, 'unavailable',
    'and a JSON error');

# a deleted service: 404 at the next request
%before = map { $_ => count($_) } qw(rd);
$t->seed([{ op => 'del_service', name => 'delta' }]);
@res = map { $t->get('delta', '/gone') } 1 .. 20;
is(scalar(grep { $_->{status} == 404 } @res), 20,
    'a deleted service answers 404 at once (20 of 20)')
    or diag join ', ', map { who($_) } @res;
is(count('rd'), $before{rd}, 'the deleted service got no request');

# ---- many services: each worker's cache of them keeps them apart ----------------

# names that are no service first (a scanner): 404 each, and the cache
# slots they touched still take the services below
my @unknown = grep { $_->{status} != 404 }
    map { $t->get(sprintf('x%03d', $_), '/scan') } 0 .. 199;
is(scalar @unknown, 0, '200 names that are no service: 404 each');

# 300 services on four replicas (more than a small cache's slots, so
# that names share slots), then every one moved to another replica in
# one commit: each request must follow its own service, every time
my @many = map { sprintf 'm%03d', $_ } 0 .. 299;
my @reps = qw(ra rb rc rd);
$t->seed([map { service($many[$_], $reps[$_ % 4]) } 0 .. $#many]);
my @wrong;
for my $round (1, 2) {
    for my $i (0 .. $#many) {
        my $want = $reps[($i + ($round == 2 ? 1 : 0)) % 4];
        my $got = who($t->get($many[$i], "/m$round"));
        push @wrong, "$many[$i]: $got, not $want" if $got ne $want;
    }
    $t->seed([map {
        { op => 'replicas', service => $many[$_], replicas => [{
            addr => $addr{$reps[($_ + 1) % 4]}, state => 'ready',
            version => 2 }] } } 0 .. $#many]) if $round == 1;
}
is_deeply(\@wrong, [], '300 services, before and after one commit that '
    . 'moves them all: every request at its own service\'s replica')
    or diag join "\n", @wrong[0 .. ($#wrong < 9 ? $#wrong : 9)];

is_deeply([sort $t->workers], \@workers, 'no reload, no worker restarted');
unlike(substr($t->error_log, $log_before), qr/\[error\]/,
    'no [error] from the state changes');

$t->done;
