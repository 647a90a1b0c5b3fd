#!/usr/bin/perl
# Token budgets (#16) in shared mode, against a real PostgreSQL
# (t/lib/DsPg.pm): a token created with a budget on the leader, then its
# budget changed by PATCH, reaches the gateway's follower LMDB (the
# records travel as they are, version 3 with the budget), and so does a
# service's model.budget in its service and model records; the token's
# hash stays across the change.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use DsPg;
use DsShared;
use Test::More;

my ($t, $pg, $sh) = DsShared::cluster(lease => 3);
my $dir = $t->dir;

$sh->start('ctl-a');
ok(DsTest::wait_until(sub { ($sh->leader // '') eq 'ctl-a' }, timeout => 10),
    'the controller leads');
ok(DsTest::wait_until(sub { -S "$dir/ctl-a/api.sock"
    && -s "$dir/ctl-a/client.yml" }, timeout => 10), 'and serves its API');
$sh->admin_token('ctl-a');
$sh->gw_start;
$t->start;
my $sa = $sh->api_of('ctl-a');

# the gateway's LMDB: the records the follower mirrored (the dump's
# check of lock.mdb tells the follower's commits from a foreign lock:
# common/ds_state.c)
sub gw_dump { $t->dump }

sub gw_token { gw_dump()->{tokens}{$_[0]} }

my $r = $sa->api('POST', '/api/tokens', json => { name => 'ci',
    budget => { rpm => 10, tpd => 'unlimited' } });
is($r->{status}, 201, 'a token with a budget on the leader')
    or diag $r->{body};
my $tok;
ok(DsTest::wait_until(sub { $tok = gw_token('ci') }, timeout => 10),
    'the token reaches the gateway');
is($tok->{budget}{rpm}, 10, '... with its rpm');
ok($tok->{budget}{tpd} > 1.8e19, '... and its tpd unlimited');
my $hash = $tok->{hash};

$r = $sa->api('PATCH', '/api/tokens/ci', json => { budget => { rpm => 20,
    tpm => 500 } });
is($r->{status}, 200, 'PATCH on the leader') or diag $r->{body};
ok(DsTest::wait_until(sub { (gw_token('ci')->{budget}{tpm} // 0) == 500 },
    timeout => 10), 'the new budget reaches the gateway');
$tok = gw_token('ci');
is($tok->{budget}{rpm}, 20, '... rpm changed');
ok($tok->{budget}{tpd} > 1.8e19, '... tpd as it was');
is($tok->{hash}, $hash, '... the same token');

my $code = $sa->upload($sa->app_files);
$r = $sa->apply($sa->app_spec(probes => [], model => { name => 'llama',
    format => 'openai', budget => { tpm => 1000, max_tokens => 64 } }),
    name => 'llm', code => $code);
ok($r->{status} == 201, 'a service with model.budget') or diag $r->{body};
my $want = { rpm => 0, tpm => 1000, tpd => 0, max_tokens => 64 };
ok(DsTest::wait_until(sub { gw_dump()->{models}{llama} }, timeout => 10),
    'its model reaches the gateway');
is_deeply(gw_dump()->{models}{llama}{budget}, $want, '... with its budget');
is_deeply(gw_dump()->{services}{llm}{budget}, $want,
    '... and so does its service record');

is($sa->stop('llm', abort => 1)->{status}, 200, 'stop the run');
ok(DsTest::wait_until(sub { !$sa->run_pids('llm') }, timeout => 20),
    'its replicas are gone');
is($sh->stop($_), 0, "$_: SIGTERM, exit 0") for $sh->names;
$pg->stop;
$t->done;
