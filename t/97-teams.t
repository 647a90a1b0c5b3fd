#!/usr/bin/perl
# Projects, users and roles (#18) against real controld and nginx, through
# the API (controld/API.md, "projects, users and roles").
#
# The first admin makes users alice, bob, carol and dave; alice makes
# project `team` (its admin) and adds bob as manager and carol as user;
# dave is in no project.  The matrix: each of global admin, project admin,
# manager, user (own run and another's) and non-member against apply,
# plan, stop, logs, a run, ps, secrets, service tokens, members, project
# delete, audit and the gateway, each answer's status exactly (a
# non-member sees 404 for everything of `team`).  Then: the same run name
# in main and team is two runs, each project's ps lists its own; a model
# of team is on gateway--team; a secret of one name holds a value per
# project, and each project's replicas get its own; a role change and a
# member removed are in force at the next call; users see themselves and
# make tokens of their own; a user deleted is 401 at once (every token);
# the audit lists changes (who, status, refused ones too) and honours
# limit; bad input is 400/404/409 and changes nothing.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use JSON::PP;
use Test::More;

my ($t, $s) = DsStack::stack();
my $code = $s->upload($s->app_files);
my $domain = $t->domain;

my %tok = (admin => $s->admin_token);
my $T = '?project=team';

# api(WHO, METHOD, PATH, JSON?) -> response
sub api {
    my ($who, $method, $path, $json, %o) = @_;
    die "no token for $who\n" unless defined $tok{$who} || $o{token};
    return $s->api($method, $path, token => $o{token} // $tok{$who},
        defined $json ? (json => $json) : (), %o);
}

# st(WHO, METHOD, PATH, JSON, WANT, WHAT): asserts the status exactly
sub st {
    my ($who, $method, $path, $json, $want, $what) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    my $r = api($who, $method, $path, $json);
    is($r->{status}, $want, "$who: $what -> $want")
        or diag("$method $path: $r->{status} " . ($r->{body} // ''));
    return $r;
}

# waits until COND(run) holds for GET /api/runs/PATH (as the global
# admin of the moment: the first one is deleted below); returns the run
sub wait_for {
    my ($path, $cond, $timeout) = @_;
    my $run;
    DsTest::wait_until(sub {
        my $r = api('admin', 'GET', "/api/runs/$path");
        $run = $r->{status} == 200 ? $r->{json} : undef;
        return $run && $cond->($run);
    }, timeout => $timeout // 30, interval => 0.1) or return undef;
    return $run;
}

sub spec { return $s->app_spec(auth => JSON::PP::true, @_) }

sub names {
    my $r = shift;
    return join ' ', sort map { $_->{name} } @{ $r->{json}{runs} || [] };
}

# ---- setup --------------------------------------------------------------

my $r = api('admin', 'GET', '/api/users/me');
is($r->{status}, 200, 'GET /api/users/me for the first admin');
is($r->{json}{name}, 'admin', 'the first user is "admin"');
is($r->{json}{global_role}, 'admin', 'a global admin');

for my $u (qw(alice bob carol dave)) {
    $r = api('admin', 'POST', '/api/users', { name => $u });
    is($r->{status}, 201, "user $u created") or diag $r->{body};
    like($r->{json}{token} // '', qr/^dst_/, "$u has a first token");
    is($r->{json}{global_role}, 'user', "$u is a global user");
    $tok{$u} = $r->{json}{token};
}

st('dave', 'POST', '/api/users', { name => 'eve' }, 403,
    'only a global admin creates users');

$r = st('alice', 'POST', '/api/projects', { name => 'team' }, 201,
    'any user creates a project');
is($r->{json}{name}, 'team', 'the project is named');
st('bob', 'POST', '/api/projects', { name => 'team' }, 409,
    'a project that exists');

st('alice', 'POST', '/api/projects/team/members',
    { user => 'bob', role => 'manager' }, 200, 'add bob as manager');
$r = st('alice', 'POST', '/api/projects/team/members',
    { user => 'carol', role => 'user' }, 200, 'add carol as user');
my %roles = map { $_->{user} => $_->{role} } @{ $r->{json}{members} || [] };
is_deeply(\%roles, { alice => 'admin', bob => 'manager', carol => 'user' },
    'team has alice admin, bob manager, carol user');

$r = api('carol', 'GET', '/api/projects');
is(join(',', map { "$_->{name}:$_->{role}" } @{ $r->{json}{projects} }),
    'team:user', 'carol sees team alone, as user');
$r = api('dave', 'GET', '/api/projects');
is(scalar @{ $r->{json}{projects} || [1] }, 0, 'dave sees no project');
$r = api('admin', 'GET', '/api/projects');
is(join(',', sort map { $_->{name} } @{ $r->{json}{projects} }),
    'main,team', 'the global admin sees every project');

# ---- the matrix: runs ---------------------------------------------------

# new runs: every member may; a non-member sees no project
my %by = (admin => 'grun', alice => 'arun', bob => 'brun', carol => 'crun');
for my $who (qw(admin alice bob carol)) {
    $r = st($who, 'POST', "/api/runs/apply$T",
        { spec => spec(), name => $by{$who}, code => $code }, 201,
        'apply a new run');
    is($r->{json}{project}, 'team', "$by{$who} is team's");
    is($r->{json}{user}, $who, "$by{$who} is ${who}'s");
}
$r = st('dave', 'POST', "/api/runs/apply$T",
    { spec => spec(), name => 'drun', code => $code }, 404,
    'apply in a project not his');
like($r->{body}, qr/project \\?"team\\?" not found/,
    'the same 404 as a project that does not exist');
st('dave', 'POST', '/api/runs/apply?project=nosuch',
    { spec => spec(), name => 'drun', code => $code }, 404,
    'apply in a project that does not exist');

for my $run (qw(crun brun)) {
    ok(wait_for("$run$T", sub { $s->ready_count($_[0]) >= 1 }, 60),
        "$run becomes ready");
}

# plan: own or new for a user, anyone's for a manager and up
for my $who (qw(admin alice bob carol)) {
    st($who, 'POST', "/api/runs/plan$T", { spec => spec(), name => 'new1' },
        200, 'plan a new run');
}
st('carol', 'POST', "/api/runs/plan$T", { spec => spec(), name => 'crun' },
    200, 'plan her own run');
$r = st('carol', 'POST', "/api/runs/plan$T",
    { spec => spec(), name => 'brun' }, 403, "plan another's run");
st('bob', 'POST', "/api/runs/plan$T", { spec => spec(), name => 'crun' },
    200, "plan another's run as manager");
st('dave', 'POST', "/api/runs/plan$T", { spec => spec(), name => 'new1' },
    404, 'plan in a project not his');

# re-apply (unchanged, so no new version) of another's run
$r = st('carol', 'POST', "/api/runs/apply$T",
    { spec => spec(), name => 'brun', code => $code }, 403,
    "re-apply another's run");
like($r->{body}, qr/run \\?"brun\\?" is user \\?"bob\\?"'s; role user/,
    'the 403 names the owner and the role');
st('carol', 'POST', "/api/runs/apply$T",
    { spec => spec(), name => 'crun', code => $code }, 200,
    're-apply her own run');
for my $who (qw(admin alice bob)) {
    st($who, 'POST', "/api/runs/apply$T",
        { spec => spec(), name => 'crun', code => $code }, 200,
        "re-apply another's run");
}
st('dave', 'POST', "/api/runs/apply$T",
    { spec => spec(), name => 'crun', code => $code }, 404,
    'a run of a project not his');
$r = api('admin', 'GET', "/api/runs/crun$T");
is($r->{json}{user}, 'carol', 're-applies by others leave crun carol\'s');

# read a run, ps
for my $who (qw(admin alice bob carol)) {
    st($who, 'GET', "/api/runs/brun$T", undef, 200, 'GET a run');
    $r = st($who, 'GET', "/api/runs$T", undef, 200, 'ps');
    is(names($r), 'arun brun crun grun', "$who: ps lists team's runs");
}
st('dave', 'GET', "/api/runs/brun$T", undef, 404, 'GET a run');
st('dave', 'GET', "/api/runs$T", undef, 404, 'ps of team');
$r = st('dave', 'GET', '/api/runs', undef, 404, 'ps of main (not his)');

# logs: own for a user, anyone's for a manager and up
for my $who (qw(admin alice bob carol)) {
    st($who, 'GET', "/api/runs/crun/logs$T", undef, 200, "logs of crun");
}
st('carol', 'GET', "/api/runs/brun/logs$T", undef, 403,
    "logs of another's run");
st('dave', 'GET', "/api/runs/crun/logs$T", undef, 404, 'logs');

# stop: own for a user, anyone's for a manager and up
st('carol', 'POST', "/api/runs/brun/stop$T", {}, 403,
    "stop another's run");
st('dave', 'POST', "/api/runs/crun/stop$T", {}, 404, 'stop');
st('bob', 'POST', "/api/runs/grun/stop$T", { abort => JSON::PP::true }, 200,
    "stop another's run as manager");
st('alice', 'POST', "/api/runs/arun/stop$T", { abort => JSON::PP::true },
    200, 'stop a run as project admin');
$r = api('admin', 'GET', "/api/runs/brun$T");
is($r->{json}{status}, 'running', "carol's refused stop left brun running");
st('carol', 'POST', "/api/runs/apply$T",
    { spec => spec(), name => 'c2run', code => $code }, 201,
    'apply a second run');
st('carol', 'POST', "/api/runs/c2run/stop$T", { abort => JSON::PP::true },
    200, 'stop her own run');

# ---- the matrix: secrets and service tokens -----------------------------

for my $who (qw(admin alice bob)) {
    st($who, 'POST', "/api/secrets/set$T",
        { name => "S_$who", value => "v-$who" }, 201, 'set a secret');
    st($who, 'GET', "/api/secrets$T", undef, 200, 'list secrets');
    $r = st($who, 'POST', "/api/secrets/get$T", { name => "S_$who" }, 200,
        'get a secret');
    is($r->{json}{value}, "v-$who", "$who: the value");
    st($who, 'POST', "/api/secrets/delete$T", { name => "S_$who" }, 200,
        'delete a secret');
}
st('alice', 'POST', "/api/secrets/set$T", { name => 'KEEP', value => 'k' },
    201, 'a secret for the refusals below');
for my $who (qw(carol dave)) {
    my $want = $who eq 'carol' ? 403 : 404;
    $r = st($who, 'GET', "/api/secrets$T", undef, $want, 'list secrets');
    like($r->{body}, qr/role user may not read secrets/,
        '403 names the role and the action') if $who eq 'carol';
    st($who, 'POST', "/api/secrets/set$T", { name => 'KEEP', value => 'x' },
        $want, 'set a secret');
    st($who, 'POST', "/api/secrets/get$T", { name => 'KEEP' }, $want,
        'get a secret');
    st($who, 'POST', "/api/secrets/delete$T", { name => 'KEEP' }, $want,
        'delete a secret');
}
$r = api('alice', 'POST', "/api/secrets/get$T", { name => 'KEEP' });
is($r->{json}{value}, 'k', 'the refused calls changed nothing');

for my $who (qw(admin alice bob)) {
    $r = st($who, 'POST', "/api/tokens$T",
        { name => "svc-$who", scope => 'services', services => ['crun'] },
        201, 'create a service token');
    like($r->{json}{token} // '', qr/^dst_/, "$who: the token is shown");
    $r = st($who, 'GET', "/api/tokens$T", undef, 200, 'list tokens');
    ok((grep { $_->{name} eq "svc-$who" && ($_->{project} // '') eq 'team' }
        @{ $r->{json}{tokens} || [] }), "$who: lists it, of team");
    st($who, 'DELETE', "/api/tokens/svc-$who$T", undef, 200,
        'revoke a service token');
}
$r = st('bob', 'POST', "/api/tokens$T",
    { name => 'svc-keep', scope => 'services', services => ['crun'] }, 201,
    'a token for the refusals below');
my $svc = $r->{json}{token};
for my $who (qw(carol dave)) {
    my $want = $who eq 'carol' ? 403 : 404;
    st($who, 'GET', "/api/tokens$T", undef, $want, 'list service tokens');
    st($who, 'POST', "/api/tokens$T",
        { name => "svc-$who", scope => 'services' }, $want,
        'create a service token');
    st($who, 'DELETE', "/api/tokens/svc-keep$T", undef, $want,
        'revoke a service token');
}
st('bob', 'POST', "/api/tokens$T", { name => 'adm2', scope => 'admin' },
    403, 'an admin token: only a global admin\'s');
st('admin', 'POST', "/api/tokens$T", { name => 'adm2', scope => 'admin' },
    400, 'an admin token in a project other than main');
# bob is in no project main: main's tokens endpoint is not his (404, as
# everything of a project one is not in)
st('bob', 'POST', '/api/tokens', { name => 'adm2', scope => 'admin' },
    404, 'an admin token asked by a user outside main');
$r = api('admin', 'GET', '/api/tokens');
ok(!(grep { $_->{name} eq 'adm2' } @{ $r->{json}{tokens} || [] }),
    'no token adm2 was made');

# ---- the matrix: members, audit, project ---------------------------------

for my $who (qw(bob carol)) {
    st($who, 'POST', '/api/projects/team/members',
        { user => 'dave', role => 'user' }, 403, 'add a member');
    st($who, 'DELETE', '/api/projects/team/members/alice', undef, 403,
        'remove another member');
    st($who, 'DELETE', '/api/projects/team', undef, 403,
        'delete the project');
    st($who, 'GET', "/api/audit$T", undef, 403, 'read the audit');
}
st('dave', 'POST', '/api/projects/team/members',
    { user => 'dave', role => 'admin' }, 404, 'add himself to team');
st('dave', 'DELETE', '/api/projects/team/members/carol', undef, 404,
    'remove a member');
st('dave', 'DELETE', '/api/projects/team', undef, 404, 'delete team');
st('dave', 'GET', "/api/audit$T", undef, 404, 'read team\'s audit');
for my $who (qw(admin alice)) {
    st($who, 'POST', '/api/projects/team/members',
        { user => 'dave', role => 'user' }, 200, 'add a member');
    st($who, 'DELETE', '/api/projects/team/members/dave', undef, 200,
        'remove a member');
    st($who, 'GET', "/api/audit$T", undef, 200, 'read the audit');
}
st('dave', 'GET', "/api/runs$T", undef, 404,
    'dave, removed again, no longer sees team');
$r = api('alice', 'GET', '/api/projects');
my ($tp) = grep { $_->{name} eq 'team' } @{ $r->{json}{projects} || [] };
is(join(',', map { "$_->{user}:$_->{role}" }
    sort { $a->{user} cmp $b->{user} } @{ $tp->{members} || [] }),
    'alice:admin,bob:manager,carol:user',
    'the refused member changes changed nothing');

# ---- the gateway -------------------------------------------------------

{
    # members' tokens at <run>--<project>, any role; a non-member's not
    my %want = (admin => 200, alice => 200, bob => 200, carol => 200,
        dave => 403);
    for my $who (sort keys %want) {
        my $g = $t->get('crun--team', '/',
            headers => { Authorization => "Bearer $tok{$who}" });
        is($g->{status}, $want{$who},
            "$who: crun--team.$domain through the gateway -> $want{$who}");
    }
    my $g = $t->get('crun--team', '/',
        headers => { Authorization => "Bearer $svc" });
    is($g->{status}, 200, 'a service token of team naming crun opens it');
    $g = $t->get('brun--team', '/',
        headers => { Authorization => "Bearer $svc" });
    is($g->{status}, 403, 'but not brun');
    $g = $t->get('crun--team', '/');
    is($g->{status}, 401, 'auth: true and no token');
}

# ---- the same names in two projects -------------------------------------

$r = st('admin', 'POST', '/api/runs/apply',
    { spec => spec(), name => 'crun', code => $code }, 201,
    'crun in main too: a new run');
is($r->{json}{project}, 'main', 'of main');
$r = api('admin', 'GET', '/api/runs?all=1');
is(names($r), 'crun', 'ps of main lists its own crun alone');
$r = api('admin', 'GET', "/api/runs$T&all=1");
is(names($r), 'arun brun c2run crun grun', 'ps of team lists its own');
my $m = api('admin', 'GET', '/api/runs/crun')->{json};
my $tm = api('admin', 'GET', "/api/runs/crun$T")->{json};
is("$m->{project}/$m->{user} $tm->{project}/$tm->{user}",
    'main/admin team/carol', 'two runs named crun: each its project\'s');
isnt($m->{url}, $tm->{url}, 'at different URLs');
like($tm->{url} // '', qr{^https?://crun--team\.\Q$domain\E},
    "team's is crun--team.$domain");
st('admin', 'POST', '/api/runs/crun/stop', { abort => JSON::PP::true }, 200,
    'stop main\'s crun');
$r = api('admin', 'GET', "/api/runs/crun$T");
is($r->{json}{status}, 'running', 'team\'s crun runs on');

# a model of team is on gateway--team.<domain>
$r = st('bob', 'POST', "/api/runs/apply$T",
    { spec => spec(model => 'm-team'), name => 'mrun', code => $code }, 201,
    'a run of team serving a model');
is($r->{json}{model}{name}, 'm-team', 'the run names its model');
like($r->{json}{model}{url} // '', qr{^https?://gateway--team\.\Q$domain\E},
    "the model is on gateway--team.$domain");
st('bob', 'POST', "/api/runs/mrun/stop$T", { abort => JSON::PP::true }, 200,
    'stop mrun');

st('admin', 'POST', '/api/secrets/set', { name => 'SAME', value => 'in-main' },
    201, 'SAME in main');
st('alice', 'POST', "/api/secrets/set$T",
    { name => 'SAME', value => 'in-team' }, 201, 'SAME in team: new too');
is(api('admin', 'POST', '/api/secrets/get', { name => 'SAME' })
    ->{json}{value}, 'in-main', 'main\'s SAME holds main\'s value');
is(api('admin', 'POST', "/api/secrets/get$T", { name => 'SAME' })
    ->{json}{value}, 'in-team', 'team\'s SAME holds team\'s value');

# each run's replicas get their own project's value: GREETING in the
# environment of the replica's process, once it has one (the process
# may still be setting up when the run first shows its pid)
sub greeting_of {
    my ($path) = @_;
    my $g;
    DsTest::wait_until(sub {
        my $r = api('admin', 'GET', "/api/runs/$path");
        for my $rep (@{ $r->{json}{replicas} || [] }) {
            next unless $rep->{pid};
            my $env = DsTest::_slurp("/proc/$rep->{pid}/environ") // '';
            ($g) = $env =~ /(?:^|\0)GREETING=([^\0]*)/ and return 1;
        }
        return 0;
    }, timeout => 60, interval => 0.1);
    return $g // '(none)';
}
my $senv = spec(env => { GREETING => '${{ secrets.SAME }}' });
st('admin', 'POST', '/api/runs/apply',
    { spec => $senv, name => 'senv', code => $code }, 201,
    'a run of main naming secrets.SAME');
st('bob', 'POST', "/api/runs/apply$T",
    { spec => $senv, name => 'senv', code => $code }, 201,
    'a run of team naming secrets.SAME');
is(greeting_of('senv'), 'in-main', 'main\'s replica has main\'s value');
is(greeting_of("senv$T"), 'in-team', 'team\'s replica has team\'s value');
st('admin', 'POST', '/api/secrets/set', { name => 'ONLYMAIN', value => 'm' },
    201, 'a secret of main alone');
$r = st('bob', 'POST', "/api/runs/plan$T",
    { spec => spec(env => { G => '${{ secrets.ONLYMAIN }}' }) }, 400,
    'a team run naming a secret of main');
like($r->{body}, qr/secret \\?"ONLYMAIN\\?" does not exist/,
    'does not exist in team');
for my $q ('', $T) {
    st('admin', 'POST', "/api/runs/senv/stop$q", { abort => JSON::PP::true },
        200, "stop senv$q");
}

# a role change is in force at the next call
st('bob', 'GET', "/api/secrets$T", undef, 200, 'bob lists secrets');
st('alice', 'POST', '/api/projects/team/members',
    { user => 'bob', role => 'user' }, 200, 'alice makes bob a user');
$r = st('bob', 'GET', "/api/secrets$T", undef, 403,
    'his next secrets call');
like($r->{body}, qr/role user may not read secrets/, 'as a user');
st('bob', 'POST', "/api/runs/crun/stop$T", {}, 403,
    'nor may he stop carol\'s run now');
st('alice', 'POST', '/api/projects/team/members',
    { user => 'bob', role => 'manager' }, 200, 'manager again');
$r = st('bob', 'POST', '/api/projects/team/members',
    { user => 'bob', role => 'admin' }, 403, 'a manager makes himself admin');
like($r->{body}, qr/role manager may not change members/,
    'the 403 names the role and the action');

# users: each sees themself; tokens of their own
$r = st('carol', 'GET', '/api/users', undef, 200, 'list users');
is(join(',', map { $_->{name} } @{ $r->{json}{users} || [] }), 'carol',
    'a global user sees only themself');
is(join(',', map { "$_->{name}:$_->{role}" }
    @{ $r->{json}{users}[0]{projects} || [] }), 'team:user',
    'with their projects and roles');
$r = st('admin', 'GET', '/api/users', undef, 200, 'list users');
is(join(',', sort map { $_->{name} } @{ $r->{json}{users} || [] }),
    'admin,alice,bob,carol,dave', 'the global admin sees all');
$r = st('dave', 'POST', '/api/users/dave/tokens', { name => 'dave-2' }, 201,
    'a second token of his own');
$tok{dave2} = $r->{json}{token};
is($r->{json}{user}, 'dave', 'it is dave\'s');
st('dave2', 'GET', '/api/users/me', undef, 200, 'the second token works');
# another user is hidden from a user (GET /api/users lists only oneself)
st('dave', 'POST', '/api/users/carol/tokens', { name => 'steal' }, 404,
    'a token of another user: that user is not found for dave');
$r = api('admin', 'GET', '/api/tokens');
ok(!(grep { $_->{name} eq 'steal' } @{ $r->{json}{tokens} || [] }),
    'none was made');
$r = st('admin', 'POST', '/api/users',
    { name => 'root2', global_role => 'admin' }, 201, 'a second global admin');
$tok{root2} = $r->{json}{token};
st('root2', 'GET', "/api/secrets$T", undef, 200,
    'a global admin reads any project, no member of it');
st('root2', 'GET', "/api/audit$T", undef, 200, 'and its audit');

# a user removes themself (and no one else)
$tok{gina} = st('admin', 'POST', '/api/users', { name => 'gina' }, 201,
    'user gina')->{json}{token};
st('alice', 'POST', '/api/projects/team/members',
    { user => 'gina', role => 'user' }, 200, 'gina joins team');
st('gina', 'DELETE', '/api/projects/team/members/carol', undef, 403,
    'gina removes carol');
st('gina', 'DELETE', '/api/projects/team/members/gina', undef, 200,
    'gina leaves team herself');
st('gina', 'GET', "/api/runs$T", undef, 404, 'and no longer sees it');

# ---- bad input ----------------------------------------------------------

$r = st('alice', 'POST', '/api/projects/team/members',
    { user => 'dave', role => 'owner' }, 400, 'an unknown role');
like($r->{body}, qr/role/, 'the message names the field');
$r = st('alice', 'POST', '/api/projects/team/members',
    { user => 'nobody', role => 'user' }, 404, 'an unknown user');
like($r->{body}, qr/nobody/, 'the message names the user');
for my $p ('Team', 'a--b', 'a/b', 'x' x 70, '..', '') {
    my $q = $p;
    $q =~ s{/}{%2F}g;
    st('admin', 'GET', "/api/runs?project=$q", undef, 400,
        "project name \"$p\"");
}
$r = api('alice', 'POST', '/api/projects/team/members', undef,
    body => '{"user":"dave",', headers => { 'Content-Type' =>
    'application/json' });
is($r->{status}, 400, 'invalid JSON to members -> 400');
$r = api('alice', 'POST', '/api/projects', undef, body => '{name:1}',
    headers => { 'Content-Type' => 'application/json' });
is($r->{status}, 400, 'invalid JSON to projects -> 400');
$r = api('admin', 'POST', '/api/users', undef, body => '[1',
    headers => { 'Content-Type' => 'application/json' });
is($r->{status}, 400, 'invalid JSON to users -> 400');
st('alice', 'POST', '/api/projects', { name => 'p2', color => 'red' }, 400,
    'an unknown field in a project');
st('alice', 'POST', '/api/projects/team/members',
    { user => 'dave', role => 'user', admin => JSON::PP::true }, 400,
    'an unknown field in a member');
st('admin', 'POST', '/api/users', { name => 'eve', role => 'admin' }, 400,
    'an unknown field in a user');
st('alice', 'GET', "/api/projects", undef, 200, 'projects still answer');
$r = api('admin', 'GET', '/api/projects');
is(join(',', sort map { $_->{name} } @{ $r->{json}{projects} }),
    'main,team', 'no project p2 was made');
$r = api('admin', 'GET', '/api/users');
ok(!(grep { $_->{name} eq 'eve' } @{ $r->{json}{users} || [] }),
    'no user eve was made');

st('admin', 'DELETE', '/api/projects/main', undef, 409, 'deleting main');
$r = st('alice', 'DELETE', '/api/projects/team/members/alice', undef, 409,
    'removing the last admin');
st('alice', 'POST', '/api/projects/team/members',
    { user => 'alice', role => 'user' }, 409,
    'demoting the last admin');
st('alice', 'DELETE', '/api/projects/team', undef, 409,
    'deleting a project with runs');
$r = api('alice', 'GET', '/api/projects');
my ($team) = grep { $_->{name} eq 'team' } @{ $r->{json}{projects} };
is($team && $team->{role}, 'admin', 'alice is still team\'s admin');

# ---- removal and deletion are in force at the next call ----------------

st('carol', 'GET', "/api/runs$T", undef, 200, 'carol reads team');
st('alice', 'DELETE', '/api/projects/team/members/carol', undef, 200,
    'alice removes carol');
$r = api('alice', 'GET', "/api/audit$T&limit=1");
my ($last) = @{ $r->{json}{events} || [] };
is(join(' ', map { $last->{$_} // '-' } qw(user project status)),
    'alice team 200', 'the audit\'s newest: alice\'s change in team, 200');
like(($last->{action} // '') . ' ' . ($last->{object} // ''), qr/carol/,
    'naming carol');
like($last->{action} // '', qr/member/, 'a member change');
st('carol', 'GET', "/api/runs$T", undef, 404,
    'her next call to team');
st('carol', 'GET', "/api/runs/crun$T", undef, 404, 'her own run too');
$r = api('alice', 'GET', "/api/runs/crun$T");
is($r->{json}{user}, 'carol', 'her run stays (team\'s managers manage it)');

st('dave', 'GET', '/api/users/me', undef, 200, 'dave\'s token works');
st('admin', 'DELETE', '/api/users/dave', undef, 200, 'delete dave');
st('dave', 'GET', '/api/users/me', undef, 401, 'his token at once');
st('dave2', 'GET', '/api/users/me', undef, 401, 'his second token too');
st('dave', 'GET', '/api/health', undef, 401, 'for any call');
st('root2', 'DELETE', '/api/users/admin', undef, 200,
    'a global admin deletes another');
st('admin', 'GET', '/api/health', undef, 401, 'whose token is 401 at once');
st('root2', 'DELETE', '/api/users/root2', undef, 409,
    'the last global admin');
st('root2', 'GET', '/api/users/me', undef, 200, 'who stays');
$tok{admin} = $tok{root2};
$s->{admin_token} = $tok{root2};    # for DsStack's cleanup

# ---- the audit ----------------------------------------------------------

$r = st('alice', 'GET', "/api/audit$T", undef, 200, 'read team\'s audit');
my @ev = @{ $r->{json}{events} || [] };
ok(@ev >= 10, 'it has the changes made (' . scalar(@ev) . ' events)');
ok(!(grep { ($_->{project} // '') ne 'team' } @ev),
    'all of team, none of main');
my @seq = map { $_->{seq} } @ev;
is_deeply(\@seq, [sort { $b <=> $a } @seq], 'newest first');
ok((grep { $_->{user} eq 'carol' && $_->{status} == 403
    && $_->{action} =~ /secret/ } @ev),
    'carol\'s refused secret set is there, 403');
ok((grep { $_->{user} eq 'dave' && $_->{status} == 404 } @ev),
    'dave\'s refused changes are there, 404');
ok((grep { $_->{user} eq 'alice' && $_->{status} == 409 } @ev),
    'alice\'s refused last-admin removal is there, 409');
ok((grep { $_->{user} eq 'bob' && $_->{status} == 200
    && ($_->{object} // '') =~ /grun/ } @ev),
    'bob\'s stop of grun is there, 200');
ok((grep { $_->{user} eq 'carol' && $_->{status} == 201
    && ($_->{object} // '') =~ /crun/ } @ev),
    'carol\'s apply of crun is there, 201');
ok(!(grep { defined $_->{object} && $_->{object} =~ /in-team|v-bob/ } @ev),
    'no secret value in it');
for my $e ($ev[0]) {
    ok(defined $e->{$_}, "an event has $_")
        for qw(seq time user project action object status);
}
$r = st('alice', 'GET', "/api/audit$T&limit=2", undef, 200, 'limit=2');
is(scalar @{ $r->{json}{events} || [] }, 2, 'two events');
is_deeply([map { $_->{seq} } @{ $r->{json}{events} }], [@seq[0, 1]],
    'the two newest');
st('bob', 'GET', "/api/audit$T", undef, 403, 'a manager still may not');
$r = st('admin', 'GET', '/api/audit', undef, 200, 'the global admin: all');
ok((grep { ($_->{project} // '') eq 'main' } @{ $r->{json}{events} }),
    'main\'s events as well');

# ---- the end: a project without runs goes ------------------------------

st('admin', 'POST', "/api/runs/brun/stop$T", { abort => JSON::PP::true },
    200, 'the global admin stops bob\'s run');
st('bob', 'POST', "/api/runs/crun/stop$T", { abort => JSON::PP::true }, 200,
    'and carol\'s (manager)');
for my $run (qw(crun brun)) {
    ok(wait_for("$run$T", sub { $_[0]{status} eq 'terminated' }),
        "$run terminated");
}
# ---- fleets belong to a project -------------------------------------------

my $kf = $s->dir . '/fleet_key';
system('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', $kf) == 0
    or die 'ssh-keygen failed';
my $fkey = DsTest::_slurp($kf);
# TEST-NET-1: a host that never answers; the fleet is what is looked at
my $fspec = { type => 'fleet', name => 'tfleet', ssh_config => {
    user => 'root', identity_file => '/k', hosts => ['192.0.2.1'] } };
# erin: a new user of team; frank: in no project
for my $u (qw(erin frank)) {
    $r = st('admin', 'POST', '/api/users', { name => $u }, 201, "user $u");
    $tok{$u} = $r->{json}{token};
}
st('alice', 'POST', '/api/projects/team/members',
    { user => 'erin', role => 'user' }, 200, 'erin joins team as a user');
st('erin', 'POST', "/api/fleets/apply$T", { spec => $fspec,
    keys => { '/k' => $fkey } }, 403, 'a project user may not add a fleet');
st('bob', 'POST', "/api/fleets/apply$T", { spec => $fspec,
    keys => { '/k' => $fkey } }, 201, 'a manager adds a fleet to team');
$r = st('erin', 'GET', "/api/fleets$T", undef, 200, 'team\'s fleets');
is(join(',', map { "$_->{name}:$_->{project}" } @{ $r->{json}{fleets} }),
    'tfleet:team', 'list tfleet as team\'s');
$r = st('admin', 'GET', '/api/fleets', undef, 200, 'main\'s fleets');
ok(!(grep { $_->{name} eq 'tfleet' } @{ $r->{json}{fleets} }),
    'do not list team\'s');
st('admin', 'GET', '/api/fleets/tfleet', undef, 404,
    'team\'s fleet is not main\'s');
st('admin', 'POST', '/api/fleets/apply', { spec => $fspec,
    keys => { '/k' => $fkey } }, 409, 'its name is taken in main too');
st('frank', 'GET', "/api/fleets$T", undef, 404,
    'a non-member does not see team\'s fleets');
st('alice', 'DELETE', '/api/projects/team', undef, 409,
    'a project with a fleet is not deleted');
st('bob', 'POST', "/api/fleets/tfleet/delete$T", { force => JSON::PP::true },
    200, 'the manager deletes the fleet');
ok(DsTest::wait_until(sub {
    !@{ api('alice', 'GET', "/api/fleets$T")->{json}{fleets} || [] } },
    timeout => 20), 'and it goes');

st('alice', 'POST', "/api/secrets/set$T", { name => 'LEFT', value => 'x' },
    201, 'a secret of team left when it goes');
st('alice', 'DELETE', '/api/projects/team', undef, 200,
    'alice deletes team, no run left');
st('alice', 'GET', "/api/runs$T", undef, 404, 'team is gone');
# what belonged to it went with it: made again, the name finds nothing
st('alice', 'POST', '/api/projects', { name => 'team' }, 201,
    'a project named team again');
$r = st('alice', 'GET', "/api/secrets$T", undef, 200, 'its secrets');
is_deeply([ map { $_->{name} } @{ $r->{json}{secrets} || [] } ], [],
    'none: the deleted team\'s secrets went with it');
$r = st('alice', 'GET', "/api/tokens$T", undef, 200, 'its service tokens');
is_deeply([ map { $_->{name} } @{ $r->{json}{tokens} || [] } ], [],
    'none: nor its service tokens');
$r = api('alice', 'GET', '/api/projects');
($tp) = grep { $_->{name} eq 'team' } @{ $r->{json}{projects} || [] };
is(join(',', map { "$_->{user}:$_->{role}" } @{ $tp->{members} || [] }),
    'alice:admin', 'and its members only its creator');
st('alice', 'DELETE', '/api/projects/team', undef, 200, 'deleted again');
st('alice', 'POST', '/api/projects', { name => 'tmp' }, 201, 'a new one');
st('admin', 'DELETE', '/api/projects/tmp', undef, 200,
    'a global admin deletes any project');

$s->finish;
$t->done;
