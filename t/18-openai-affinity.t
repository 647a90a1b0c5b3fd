#!/usr/bin/perl
# Affinity routing of the model endpoint (model.routing): requests that
# share a prompt prefix, or a session (header or "user"), go to the same
# replica, whose prefix cache then hits (the test server's); a hot prefix
# spills to other replicas at the bound c x the mean in flight; a replica
# that leaves moves only its keys.  Then the service file's errors.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsOpenAI;
use DsCli;
use POSIX qw(ceil);
use Test::More;

plan skip_all => 'module or dstack-seed not built'
    unless -f DsTest::module_path() && -x DsTest::seed_path();

my $JSON = $DsTest::JSON;
my $t = DsTest->new(workers => 2);
my $GW = 'gateway.' . $t->domain;
DsOpenAI::add_gateway($t);

my @names = map { "aff$_" } 1 .. 4;
my %addr = map { $_ => DsOpenAI::server($t, name => $_) } @names;
my %name_of = reverse %addr;
my @replicas = map { { addr => $addr{$_}, state => 'ready' } } @names;

$t->seed([
    { op => 'service', name => 'pfx', auth => DsTest::false,
      model => 'pfx-model',
      routing => { affinity => 'prefix', prefix_bytes => 64 } },
    { op => 'service', name => 'ses', auth => DsTest::false,
      model => 'ses-model',
      routing => { affinity => 'session', prefix_bytes => 64 } },
    { op => 'service', name => 'lb', auth => DsTest::false,
      model => 'lb-model' },
    (map { { op => 'replicas', service => $_, replicas => \@replicas } }
        qw(pfx ses lb)),
]);
$t->start;

# a system prompt of more than 64 bytes, then the user's own message
sub body {
    my ($model, $system, $user, %o) = @_;
    return $JSON->encode({ model => $model, max_tokens => 1,
        ($o{user} ? (user => $o{user}) : ()),
        messages => [
            { role => 'system',
              content => sprintf('%-80s', "You are assistant $system.") },
            { role => 'user', content => $user } ] });
}

sub chat {
    my ($model, $system, $user, %o) = @_;
    my $r = $t->request('POST', '/v1/chat/completions', host => $GW,
        headers => { 'Content-Type' => 'application/json',
                     %{ $o{headers} // {} } },
        body => body($model, $system, $user, %o), timeout => 20);
    return $r;
}

sub replica_of {
    my $r = chat(@_);
    return $r->{status} == 200 ? $r->{headers}{'x-replica'} // '?'
                               : "status $r->{status}";
}

# ---- same prefix, same replica ---------------------------------------------

my $cache = { 'X-Test-Prefix-Cache' => 1, 'X-Test-Prefix-Bytes' => 64,
              'X-Test-Hit-Ms' => 0, 'X-Test-Miss-Ms' => 20 };
my (%seen, @status);
for my $i (1 .. 20) {
    my $r = chat('pfx-model', 'alpha', "question $i", headers => $cache);
    $seen{ $r->{headers}{'x-replica'} // '?' }++;
    push @status, $r->{headers}{'x-test-cache'} // '?';
}
is(scalar(keys %seen), 1, 'a prefix goes to one replica (20 requests)')
    or diag explain \%seen;
is($status[0], 'miss', 'its first request misses the prefix cache');
is(scalar(grep { $_ eq 'hit' } @status), 19, '... and the others hit');

# the same requests balanced by least in-flight miss on every replica
%seen = ();
for my $i (1 .. 8) {
    my $r = chat('lb-model', 'alpha', "question $i", headers => $cache);
    $seen{ $r->{headers}{'x-replica'} // '?' }++;
}
cmp_ok(scalar(keys %seen), '>', 1,
    'without routing the same prefix spreads over replicas');

# ---- different prefixes spread ----------------------------------------------

my %first;
%seen = ();
for my $p (1 .. 40) {
    my $rep = replica_of('pfx-model', "p$p", 'hello');
    $first{$p} = $rep;
    $seen{$rep}++;
}
is(scalar(grep { /^status/ } keys %seen), 0,
    'every prefix is answered') or diag explain \%seen;
cmp_ok(scalar(keys %seen), '>=', 3, '40 prefixes use at least 3 of 4 '
    . 'replicas') or diag explain \%seen;
my $again = grep { replica_of('pfx-model', "p$_", 'other text') eq $first{$_} }
    1 .. 40;
is($again, 40, 'each prefix again goes to the same replica');

# ---- sessions ------------------------------------------------------------------

%seen = ();
for my $i (1 .. 10) {
    $seen{ replica_of('ses-model', "s$i", "q$i",
        headers => { 'X-Session-Id' => 'session-42' }) }++;
}
is(scalar(keys %seen), 1, 'a session header keeps different prompts '
    . 'on one replica') or diag explain \%seen;

%seen = ();
for my $i (1 .. 10) {
    $seen{ replica_of('ses-model', "u$i", "q$i", user => 'alice') }++;
}
is(scalar(keys %seen), 1, 'so does the body\'s "user" without the header')
    or diag explain \%seen;

%seen = ();
for my $s (1 .. 30) {
    $seen{ replica_of('ses-model', 'same', 'q',
        headers => { 'X-Session-Id' => "session-$s" }) }++;
}
cmp_ok(scalar(keys %seen), '>=', 3, 'sessions with one prompt spread '
    . 'over replicas') or diag explain \%seen;

%seen = ();
for my $i (1 .. 6) {
    $seen{ replica_of('ses-model', 'no-session', "q$i") }++;
}
is(scalar(keys %seen), 1, 'without a session, the prefix decides');

# ---- bounded load ---------------------------------------------------------------

# 24 slow requests of one hot prefix at once: the replica of the prefix
# takes them while it has at most ceil(1.25 x (in flight + 1) / 4), the
# others get the rest
my $N = 24;
my $bound = ceil(1.25 * $N / 4);
my $hot = replica_of('pfx-model', 'hot', 'warm up');
my @res = $t->parallel([ map {
    [ 'POST', '/v1/chat/completions', host => $GW, timeout => 30,
      headers => { 'Content-Type' => 'application/json',
                   'X-Test-Header-Delay-Ms' => 1500 },
      body => body('pfx-model', 'hot', "parallel $_") ] } 1 .. $N ]);
%seen = ();
$seen{ $_->{status} == 200 ? $_->{headers}{'x-replica'} : "status $_->{status}" }++
    for @res;
is(scalar(grep { /^status/ } keys %seen), 0, 'every hot request answered')
    or diag explain \%seen;
cmp_ok(scalar(keys %seen), '>', 1, 'a hot prefix spills to other replicas')
    or diag explain \%seen;
my ($max) = sort { $b <=> $a } values %seen;
cmp_ok($max, '<=', $bound + 1, "no replica took more than the bound "
    . "($bound) + 1") or diag explain \%seen;
is($seen{$hot}, $max, 'the prefix\'s own replica took the most')
    or diag explain \%seen;

# ---- a replica leaves: only its keys move ---------------------------------------

my (%before, %after);
$before{$_} = replica_of('pfx-model', "key$_", 'x') for 1 .. 200;
my $gone = $before{1};
$t->seed([{ op => 'replicas', service => 'pfx',
    replicas => [ grep { $name_of{ $_->{addr} } ne $gone } @replicas ] }]);
ok(DsTest::wait_until(sub { replica_of('pfx-model', 'key1', 'x') ne $gone }),
    "$gone is gone from the balancer");
$after{$_} = replica_of('pfx-model', "key$_", 'x') for 1 .. 200;

my @stayed = grep { $before{$_} ne $gone } 1 .. 200;
my @moved = grep { $before{$_} ne $after{$_} } 1 .. 200;
is(scalar(grep { $before{$_} eq $after{$_} } @stayed), scalar(@stayed),
    'the keys of the replicas that stay do not move (' . scalar(@stayed)
    . ' keys)');
is(scalar(@moved), 200 - scalar(@stayed),
    'the keys of the replica that left all moved ('
    . (200 - scalar(@stayed)) . ' keys)');
cmp_ok(scalar(@moved), '<', 100, '... which is about its share');
my %spread;
$spread{ $after{$_} }++ for @moved;
cmp_ok(scalar(keys %spread), '>=', 2, '... spread over the others')
    or diag explain \%spread;

# it comes back (a new replica: a new uid, new weights): the keys that
# move go to it, none between the others
$t->seed([{ op => 'replicas', service => 'pfx', replicas => \@replicas }]);
ok(DsTest::wait_until(sub {
    grep { replica_of('pfx-model', "key$_", 'x') eq $gone } 1 .. 20 }),
    "$gone is back");
my %back = map { $_ => replica_of('pfx-model', "key$_", 'x') } 1 .. 200;
my @joined = grep { $back{$_} ne $after{$_} } 1 .. 200;
is(scalar(grep { $back{$_} eq $gone } @joined), scalar(@joined),
    'a joining replica takes keys (' . scalar(@joined) . ') from the '
    . 'others, which keep the rest');
cmp_ok(scalar(@joined), '<', 100, '... about its share');

# ---- the service file -----------------------------------------------------------

SKIP: {
    skip 'dstackctl not built', 8 unless -x DsCli::cli_path();
    my $c = DsCli->new($t);
    my %nowhere = (DSTACK_SERVER => "unix:" . $t->dir . "/nowhere.sock",
        DSTACK_TOKEN => 'x');
    my $head = "type: service\nport: 8000\ncommands:\n  - vllm serve m\n"
        . "model:\n  name: m\n  format: openai\n  routing:\n";
    my $app = $c->app_dir('app', {
        'lf.dstack.yml' => "$head    affinity: prefix\n    load_factor: 0.5\n",
        'aff.dstack.yml' => "$head    affinity: random\n",
        'none.dstack.yml' => "$head    prefix_bytes: 100\n",
        'hdr.dstack.yml' => "$head    affinity: session\n"
            . "    session_header: \"x session\"\n",
    });
    for my $case (
        ['lf.dstack.yml', qr/^lf\.dstack\.yml:10:18: model\.routing\.load_factor: expected a number >= 1, got 0\.5$/m],
        ['aff.dstack.yml', qr/^aff\.dstack\.yml:9:15: model\.routing\.affinity: invalid affinity "random": expected prefix or session$/m],
        ['none.dstack.yml', qr/^none\.dstack\.yml:9:5: model\.routing: missing required field "affinity"$/m],
        ['hdr.dstack.yml', qr/^hdr\.dstack\.yml:10:21: model\.routing\.session_header: invalid header name "x session"/m],
    ) {
        my ($f, $re) = @$case;
        my $r = $c->cli(['apply', '-f', $f, '-y'], dir => $app,
            env => \%nowhere);
        is($r->{rc}, 1, "$f: exit 1");
        like($r->{err}, $re, "$f: the field and why") or diag $r->{err};
    }
}

$t->done;
