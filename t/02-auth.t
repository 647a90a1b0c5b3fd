#!/usr/bin/perl
# Bearer auth: 401 without a good token, 403 for a token without access,
# the token never reaches the replica, revocation takes effect at the next
# request on every worker, auth: false passes everything through.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my %addr = map { $_ => $t->backend(name => $_) } qw(rs ro rp);
my $now = time;

my %tok = (
    secure  => 'dst_secure_' . ('s' x 30),
    other   => 'dst_other_' . ('o' x 30),
    all     => 'dst_all_' . ('a' x 30),
    admin   => 'dst_admin_' . ('d' x 30),
    expired => 'dst_expired_' . ('e' x 30),
    future  => 'dst_future_' . ('f' x 30),
    revoke  => 'dst_revoke_' . ('r' x 30),
    both    => 'dst_both_' . ('b' x 30),
);

sub svc {
    my ($name, $auth, $replica) = @_;
    return ({ op => 'service', name => $name,
              auth => $auth ? DsTest::true : DsTest::false },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr{$replica}, state => 'ready',
                             version => 1 }] });
}

sub token {
    my ($key, %o) = @_;
    return { op => 'token', token => $tok{$key}, name => "t-$key",
        admin => $o{admin} ? DsTest::true : DsTest::false,
        all => $o{all} ? DsTest::true : DsTest::false,
        services => $o{services} || [], expires => $o{expires} || 0 };
}

$t->seed([
    svc('secure', 1, 'rs'), svc('other', 1, 'ro'), svc('open', 0, 'rp'),
    token('secure', services => ['secure']),
    token('other', services => ['other']),
    token('all', all => 1),
    token('admin', admin => 1),
    token('expired', services => ['secure'], expires => $now - 100),
    token('future', services => ['secure'], expires => $now + 3600),
    token('revoke', services => ['secure']),
    token('both', services => ['other', 'secure']),
]);
$t->start;

sub call {
    my ($service, $auth, %o) = @_;
    my @h = defined $auth ? (Authorization => $auth) : ();
    return $t->get($service, $o{path} // '/', headers => [@h], %o);
}

sub bearer { "Bearer $tok{$_[0]}" }

sub is_401 {
    my ($r, $desc) = @_;
    is($r->{status}, 401, "$desc: 401") or diag $r->{body} // $r->{error};
    like($r->{headers}{'www-authenticate'} // '', qr/^Bearer\b/,
        "$desc: WWW-Authenticate: Bearer");
    is(ref $r->{json} && $r->{json}{error}{type}, 'authentication_error',
        "$desc: JSON error") or diag $r->{body};
}

my $rs_before = scalar $t->backend_requests('rs');

# ---- refused -------------------------------------------------------------------

is_401(call('secure', undef), 'no Authorization');
is_401(call('secure', 'Basic ' . 'dXNlcjpwYXNz'), 'Basic credentials');
is_401(call('secure', 'Bearer'), 'Bearer without a token');
is_401(call('secure', 'Bearer '), 'Bearer and a space');
is_401(call('secure', 'Bearer dst_unknown_token_xxxxxxxxxxxxxxxxxxxx'),
    'unknown token');
is_401(call('secure', $tok{secure}), 'token without the Bearer scheme');
is_401(call('secure', bearer('secure') . 'x'), 'token with a byte more');
is_401(call('secure', substr(bearer('secure'), 0, -1)),
    'token with a byte less');
is_401(call('secure', bearer('secure') . ' extra'), 'token and more words');
is_401(call('secure', 'Bearer ' . uc $tok{secure}),
    'token in another case');
is_401(call('secure', bearer('expired')), 'expired token');

my $r = call('secure', bearer('other'));
is($r->{status}, 403, 'token scoped to another service: 403');
is(ref $r->{json} && $r->{json}{error}{type}, 'permission_error',
    '403: JSON error') or diag $r->{body};

$r = call('other', bearer('secure'));
is($r->{status}, 403, 'and the other way round: 403');

# two Authorization headers
$r = $t->get('secure', '/', headers => [Authorization => bearer('secure'),
    Authorization => bearer('secure')]);
is($r->{status}, 400, 'two Authorization headers: 400');
$r = $t->get('open', '/', headers => [Authorization => 'Bearer a',
    Authorization => 'Bearer b']);
is($r->{status}, 400, 'two Authorization headers on an open service: 400');

# very long tokens: refused, never a 5xx
for my $len (1000, 4000, 8 * 1024, 16 * 1024) {
    $r = call('secure', 'Bearer ' . ('x' x $len));
    ok($r->{status} == 401 || $r->{status} == 400,
        "a $len-byte token: 401 or 400") or diag "$r->{status} $r->{body}";
}

# binary junk
$r = call('secure', "Bearer \x01\x02\xff\xfe");
ok($r->{status} == 401 || $r->{status} == 400, 'binary token: 401 or 400')
    or diag "$r->{status}";

is(scalar $t->backend_requests('rs'), $rs_before,
    'no refused request reached the replica');

# ---- admitted ------------------------------------------------------------------

my $ok = 0;
for my $k (qw(secure all admin future both)) {
    $r = call('secure', bearer($k));
    is($r->{status}, 200, "token \"$k\" opens secure") or diag $r->{body};
    $ok++ if $r->{status} == 200;
}
$r = call('other', bearer('both'));
is($r->{status}, 200, 'a token scoped to two services opens both');
$r = call('other', bearer('all'));
is($r->{status}, 200, 'an all-services token opens other');
$r = call('secure', 'bearer ' . $tok{secure});
is($r->{status}, 200, 'the scheme is case-insensitive (RFC 7235)');
$ok++ if $r->{status} == 200;
$r = call('secure', 'Bearer   ' . $tok{secure});
ok($r->{status} == 200 || $r->{status} == 401,
    'several spaces after Bearer: 200 or 401, never 5xx');
$ok++ if $r->{status} == 200;

my @seen = $t->backend_requests('rs');
is(scalar @seen, $rs_before + $ok, 'every admitted request reached secure');
is(scalar(grep { exists $_->{headers}{authorization} } @seen), 0,
    'the replica of an auth service never sees Authorization');
is(scalar(grep { grep { /dst_/ } values %{ $_->{headers} } } @seen), 0,
    'nor the token in any other header');

# ---- auth: false ----------------------------------------------------------------

$r = call('open', undef);
is($r->{status}, 200, 'auth: false: no token needed');
ok(!exists $r->{json}{headers}{authorization},
    'and no Authorization is made up');
for my $a ('Bearer client-token-123', 'Basic dXNlcjpwYXNz', bearer('secure'),
    'Bearer ' . ('z' x 2000))
{
    $r = call('open', $a);
    is($r->{status}, 200, 'auth: false with Authorization: 200');
    is($r->{json}{headers}{authorization}, $a,
        'the client Authorization reaches the replica unchanged')
        or diag explain $r->{json}{headers};
}

# ---- revocation -------------------------------------------------------------------

# First make every worker admit the token (a worker that never saw it
# proves nothing), with one keep-alive connection open as well.
my @workers = $t->workers;
my %ok_on;
for (1 .. 200) {
    $r = call('secure', bearer('revoke'));
    $ok_on{ $r->{headers}{'x-ds-worker'} }++ if $r->{status} == 200;
    last if keys %ok_on >= @workers;
}
is(scalar keys %ok_on, scalar @workers,
    'before revocation every worker admitted the token');
my $ka = call('secure', bearer('revoke'), keep => 1);
is($ka->{status}, 200, 'keep-alive connection admitted');

$t->seed([{ op => 'del_token', token => $tok{revoke} }]);

my (%refused_on, $n, $n401);
for (1 .. 200) {
    $r = call('secure', bearer('revoke'));
    $n++;
    $n401++ if $r->{status} == 401;
    $refused_on{ $r->{headers}{'x-ds-worker'} // '?' }++;
    last if $n >= 20 && keys %refused_on >= @workers;
}
is($n401, $n, "a revoked token fails at the next request ($n401 of $n)");
is(scalar keys %refused_on, scalar @workers,
    'on every worker') or diag explain \%refused_on;
$r = call('secure', bearer('revoke'), sock => $ka->{sock});
is($r->{status}, 401, 'and on a keep-alive connection opened before');

# a token revoked and its service still open for others
$r = call('secure', bearer('secure'));
is($r->{status}, 200, 'other tokens keep working');

# a token added while nginx runs works at once
$t->seed([{ op => 'token', token => 'dst_new_' . ('n' x 30), name => 'new',
    admin => DsTest::false, all => DsTest::false, services => ['secure'],
    expires => 0 }]);
$r = call('secure', 'Bearer dst_new_' . ('n' x 30));
is($r->{status}, 200, 'a new token works at the next request');

# a service switched to auth: false and back, without reload
$t->seed([{ op => 'service', name => 'secure', auth => DsTest::false }]);
$r = call('secure', undef);
is($r->{status}, 200, 'auth switched off: 200 without a token');
$t->seed([{ op => 'service', name => 'secure', auth => DsTest::true }]);
is_401(call('secure', undef), 'auth switched back on');

$t->done;
