#!/usr/bin/perl
# Teams on the gateway (#18): the service auth and the model endpoint of
# projects, against a state seeded with dstack-seed.
#
# A service with auth opens to a global admin's token, a service token of
# its project that names it or all its services, and a user token whose
# user is a member of its project (any role); membership is read per
# commit, so removing a member, deleting a user or revoking a token is in
# force at the next request on every worker, no reload.  A run "web" of
# project "team" is the service "web--team" at web--team.<domain>.  Models
# are per project: gateway.<domain> lists and routes main's, the *.<domain>
# server answers gateway--<P>.<domain> with project P's, by their plain
# names; a model of another project is the answer of an unknown one.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $t = DsTest->new(workers => 2);
my $D = $t->domain;
my $GW = "gateway.$D";
DsOpenAI::add_gateway($t);

my %addr = map { $_ => $t->backend(name => $_) } qw(rmain rteam rapi rops);
my %llm = (
    main  => DsOpenAI::server($t, name => 'llm-main'),
    team  => DsOpenAI::server($t, name => 'llm-team'),
    team2 => DsOpenAI::server($t, name => 'llm-team2'),
    ops   => DsOpenAI::server($t, name => 'llm-ops'),
);

my %tok = map { $_ => "dst_${_}_" . ('x' x 30) }
    qw(alice bob carol root team_all main_all team_web dave);

sub svc {
    my ($name, $addr, %o) = @_;
    return ({ op => 'service', name => $name, %o },
            { op => 'replicas', service => $name,
              replicas => [{ addr => $addr, state => 'ready',
                             version => 1 }] });
}

sub token {
    my ($key, %o) = @_;
    return { op => 'token', token => $tok{$key}, name => "t-$key", %o };
}

$t->seed([
    svc('web', $addr{rmain}),
    svc('web--team', $addr{rteam}),
    svc('api--team', $addr{rapi}),
    svc('web--ops', $addr{rops}),
    svc('llm', $llm{main}, model => 'shared'),
    svc('llm--team', $llm{team}, model => 'shared'),
    svc('chat--team', $llm{team2}, model => 'team-only'),
    svc('llm--ops', $llm{ops}, model => 'ops-model'),
    svc('open--team', $addr{rteam}, auth => DsTest::false),

    token('alice', user => 'alice'),
    token('bob', user => 'bob'),
    token('carol', user => 'carol'),
    token('dave', user => 'dave'),
    token('root', user => 'root', admin => DsTest::true),
    token('team_all', project => 'team', all => DsTest::true),
    token('main_all', all => DsTest::true),
    token('team_web', project => 'team', services => ['web--team']),

    { op => 'member', project => 'team', user => 'alice', role => 'user' },
    { op => 'member', project => 'team', user => 'dave',
      role => 'manager' },
    { op => 'member', project => 'ops', user => 'bob', role => 'admin' },
    { op => 'member', project => 'main', user => 'carol',
      role => 'manager' },
]);
$t->start;

sub call {
    my ($service, $key, %o) = @_;
    my @h = defined $key ? (Authorization => "Bearer $tok{$key}") : ();
    return $t->get($service, $o{path} // '/', headers => [@h], %o);
}

# what KEY's token gets from each service, as "service=status"
sub statuses {
    my ($key, @services) = @_;
    return join ' ', map {
        my $r = call($_, $key);
        "$_=$r->{status}"
    } @services;
}

my @SERVICES = qw(web web--team api--team web--ops);

# ---- who opens what ------------------------------------------------------------

is(statuses('alice', @SERVICES),
    'web=403 web--team=200 api--team=200 web--ops=403',
    "a member's user token: its project's services, not others'");
is(statuses('dave', @SERVICES),
    'web=403 web--team=200 api--team=200 web--ops=403',
    'any role: a manager the same');
is(statuses('bob', @SERVICES),
    'web=403 web--team=403 api--team=403 web--ops=200',
    "a non-member's: refused");
is(statuses('carol', @SERVICES),
    'web=200 web--team=403 api--team=403 web--ops=403',
    "a member of main: main's services only");
is(statuses('root', @SERVICES),
    'web=200 web--team=200 api--team=200 web--ops=200',
    "a global admin's user token: every project");
is(statuses('team_all', @SERVICES),
    'web=403 web--team=200 api--team=200 web--ops=403',
    "a project's all-services token: its project's services only");
is(statuses('main_all', @SERVICES),
    'web=200 web--team=403 api--team=403 web--ops=403',
    "main's all-services token: not another project's");
is(statuses('team_web', @SERVICES),
    'web=403 web--team=200 api--team=403 web--ops=403',
    'a scoped token of a project: the services it names');

# the answers of a refusal are those of before
my $r = call('web--team', 'bob');
is($r->{status}, 403, 'non-member: 403');
is(ref $r->{json} && $r->{json}{error}{type}, 'permission_error',
    'non-member: permission_error') or diag $r->{body};
like($r->{json}{error}{message} // '', qr/token has no access/,
    'non-member: the message of a token without access');
$r = call('web--team', undef);
is($r->{status}, 401, 'no token: 401');

# the member's token stays at the gateway
$r = call('web--team', 'alice');
is($r->{json}{replica}, 'rteam', 'web--team.<domain> reaches web--team')
    or diag $r->{body};
ok(!grep({ lc $_ eq 'authorization' } keys %{ $r->{json}{headers} || {} }),
    "the user's token is not forwarded") or diag explain $r->{json};
$r = call('open--team', undef);
is($r->{status}, 200, 'auth: false in a project: open to all');

# ---- host names ------------------------------------------------------------------

$r = call('api--team', 'alice');
is($r->{json}{replica}, 'rapi', 'api--team.<domain> reaches api--team');
like($t->access_log, qr/host=api--team\.\Q$D\E svc=api--team /,
    'the service of the host is "api--team"');
for my $host ("web--.$D", "--team.$D", "web--team--x.$D", "web---team.$D",
              "web--te_am.$D", "web.team.$D")
{
    $r = $t->request('GET', '/', host => $host,
        headers => [Authorization => "Bearer $tok{root}"]);
    is($r->{status}, 404, "$host: 404");
    like($r->{body}, qr/no service is published at this host/,
        "$host: no service at this host") or diag $r->{body};
}
$r = call('web--nope', 'root');
is($r->{status}, 404, 'a project without the run: 404');
like($r->{body}, qr/service \\"web--nope\\" not found/,
    'a project without the run: service not found') or diag $r->{body};

# ---- membership changes: at the next request, every worker ------------------

my @workers = $t->workers;
cmp_ok(scalar @workers, '>=', 2, 'two workers');

# every worker has alice's membership cached for this commit
my %seen;
for (1 .. 40) {
    my $x = call('web--team', 'alice');
    $seen{ $x->{headers}{'x-ds-worker'} // '?' }++ if $x->{status} == 200;
    last if keys %seen >= @workers;
}
is(scalar keys %seen, scalar @workers, 'alice served on every worker')
    or diag explain \%seen;

sub refused_everywhere {
    my ($key, $service, $want, $desc) = @_;
    my (%on, $n, $bad);
    for (1 .. 60) {
        my $x = call($service, $key);
        $n++;
        $bad++ if $x->{status} != $want;
        $on{ $x->{headers}{'x-ds-worker'} // '?' }++;
        last if $n >= 10 && keys %on >= @workers;
    }
    ok(!$bad && keys %on >= @workers,
        "$desc: $want at the next request, on every worker")
        or diag "$bad of $n differ; " . explain \%on;
}

$t->seed([{ op => 'del_member', project => 'team', user => 'alice' }]);
refused_everywhere('alice', 'web--team', 403, 'membership removed');
is(call('api--team', 'alice')->{status}, 403,
    "and on the project's other services");
is(call('web--team', 'dave')->{status}, 200, 'other members keep theirs');

$t->seed([{ op => 'member', project => 'team', user => 'alice',
            role => 'admin' }]);
refused_everywhere('alice', 'web--team', 200, 'membership back, as admin');

# a user deleted: controld deletes its tokens and memberships at once
$t->seed([{ op => 'del_token', token => $tok{alice} },
          { op => 'del_member', project => 'team', user => 'alice' }]);
refused_everywhere('alice', 'web--team', 401, 'user deleted');

# a member's token revoked, the membership kept
$t->seed([{ op => 'del_token', token => $tok{dave} }]);
refused_everywhere('dave', 'api--team', 401, "a member's token revoked");

# an expired user token of a member stays refused
$t->seed([token('alice', user => 'alice', expires => time - 10),
          { op => 'member', project => 'team', user => 'alice',
            role => 'user' }]);
$r = call('web--team', 'alice');
is($r->{status}, 401, "a member's expired token: 401");
like($r->{body}, qr/token expired/, 'token expired');
$t->seed([token('alice', user => 'alice')]);
is(call('web--team', 'alice')->{status}, 200, 'renewed: 200');

# ---- models per project ---------------------------------------------------------

sub api {
    my ($method, $host, $path, $key, $body) = @_;
    my @h = defined $key ? (Authorization => "Bearer $tok{$key}") : ();
    push @h, 'Content-Type' => 'application/json' if defined $body;
    return $t->request($method, $path, host => $host, headers => \@h,
        timeout => 15,
        (defined $body ? (body => ref $body ? $DsTest::JSON->encode($body)
                                            : $body) : ()));
}

sub chat {
    my ($host, $key, $model) = @_;
    return api('POST', $host, '/v1/chat/completions', $key,
        { model => $model, max_tokens => 2,
          messages => [{ role => 'user', content => 'hi' }] });
}

sub models {
    my ($host, $key) = @_;
    my $x = api('GET', $host, '/v1/models', $key);
    return "status $x->{status}" unless $x->{status} == 200;
    return join ' ', map { "$_->{id}\@$_->{owned_by}" }
        sort { $a->{id} cmp $b->{id} } @{ $x->{json}{data} || [] };
}

my $TEAM = "gateway--team.$D";
my $OPS = "gateway--ops.$D";

$r = chat($GW, 'root', 'shared');
is($r->{status}, 200, 'gateway.<domain>: "shared" 200') or diag $r->{body};
is($r->{headers}{'x-replica'}, 'llm-main', "... main's service serves it");
$r = chat($TEAM, 'root', 'shared');
is($r->{status}, 200, 'gateway--team.<domain>: "shared" 200')
    or diag $r->{body};
is($r->{headers}{'x-replica'}, 'llm-team', "... team's service serves it");
is($r->{headers}{'access-control-allow-origin'}, '*',
    "... as the model endpoint answers");
$r = chat($TEAM, 'alice', 'shared');
is($r->{status}, 200, "a member's user token: 200") or diag $r->{body};
is($r->{headers}{'x-replica'}, 'llm-team', '... on its project');
$r = chat($TEAM, 'alice', 'team-only');
is($r->{headers}{'x-replica'}, 'llm-team2', "the project's other model");

# another project's model: as unknown as a name nobody serves
my $unknown = chat($GW, 'root', 'no-such-model');
is($unknown->{status}, 404, 'an unknown model: 404');
for my $c ([$GW, 'team-only'], [$OPS, 'shared'], [$TEAM, 'ops-model']) {
    my ($host, $model) = @$c;
    $r = chat($host, 'root', $model);
    is($r->{status}, 404, "$host: another project's \"$model\": 404");
    is($r->{json}{error}{code}, 'model_not_found', '... model_not_found');
    like($r->{json}{error}{message}, qr/^The model `\Q$model\E` does not exist$/,
        '... the message of an unknown model');
}

# a NUL in the model name never reaches another project's key
$r = api('POST', $GW, '/v1/chat/completions', 'root',
    '{"model":"team\u0000shared","messages":[]}');
ok($r->{status} == 400 || $r->{status} == 404,
    '"team\\u0000shared" on gateway.<domain>: refused (400 or 404)')
    or diag "$r->{status} $r->{body}";

# the caller's token must open the model's service
$r = chat($TEAM, 'bob', 'shared');
is($r->{status}, 403, 'a non-member on gateway--team: 403');
$r = chat($TEAM, 'main_all', 'shared');
is($r->{status}, 403, "main's all-services token on gateway--team: 403");
$r = chat($TEAM, 'team_all', 'shared');
is($r->{status}, 200, "team's all-services token: 200");
$r = chat($OPS, 'bob', 'ops-model');
is($r->{status}, 200, 'bob on his project: 200');

is(models($GW, 'root'), 'shared@llm', "gateway.<domain> lists main's");
is(models($TEAM, 'root'), 'shared@llm--team team-only@chat--team',
    "gateway--team.<domain> lists team's, by their plain names");
is(models($TEAM, 'alice'), 'shared@llm--team team-only@chat--team',
    'a member sees them');
is(models($TEAM, 'bob'), '', 'a non-member sees none');
is(models($TEAM, 'main_all'), '', "main's all-services token sees none");
is(models($GW, 'alice'), '', "a member of team sees none of main's");
is(models($OPS, 'bob'), 'ops-model@llm--ops', "ops's for its member");
is(models("gateway--nope.$D", 'root'), '', 'a project with no models');
$r = api('GET', $TEAM, '/v1/models/shared', 'alice');
is($r->{json}{id}, 'shared', 'GET /v1/models/<id> on the project host');
$r = api('GET', $GW, '/v1/models/team-only', 'root');
is($r->{status}, 404, "another project's model by id: 404");

# bodies: the *.<domain> location keeps nginx's small body buffer; a
# project's host reads a larger body back from the temp file, up to 4 MB
my $big = $DsTest::JSON->encode({ model => 'team-only', max_tokens => 2,
    messages => [{ role => 'user', content => 'x' x (200 * 1024) }] });
$r = api('POST', $TEAM, '/v1/chat/completions', 'root', $big);
is($r->{status}, 200, 'a 200 KB body on gateway--team: 200')
    or diag $r->{body};
is($r->{headers}{'x-replica'}, 'llm-team2', '... routed by its model');
my ($last) = grep { ($_->{event} // '') eq 'request' }
    reverse $t->backend_requests('llm-team2');
is($last && $last->{body_len}, length $big,
    '... and reaches the replica whole');
$r = api('POST', $TEAM, '/v1/chat/completions', 'root',
    '{"model":"team-only","pad":"' . ('y' x (4 * 1024 * 1024)) . '"}');
is($r->{status}, 413, 'over 4 MB (Content-Length): 413');
like($r->{body}, qr/larger than 4194304 bytes/, '... naming the limit');
$r = $t->request('POST', '/v1/chat/completions', host => $TEAM,
    headers => [Authorization => "Bearer $tok{root}",
                'Content-Type' => 'application/json'],
    body => '{"model":"team-only","pad":"' . ('y' x (4 * 1024 * 1024))
        . '"}', chunked => 1, timeout => 30);
is($r->{status}, 413, 'over 4 MB (chunked): 413');

# a membership removed: the project's models leave the list at once
$t->seed([{ op => 'del_member', project => 'team', user => 'alice' }]);
is(models($TEAM, 'alice'), '', 'membership removed: none listed');
is(chat($TEAM, 'alice', 'shared')->{status}, 403, '... and none routed');

$t->done;
