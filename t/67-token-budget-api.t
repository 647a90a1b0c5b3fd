#!/usr/bin/perl
# Token budgets (#16), the control side, against real controld, nginx
# and replicas: a token's budget through the API (POST with "budget",
# PATCH /api/tokens/NAME changing only the fields given, GET showing it
# and the token's use of each model summed over the gateways' stats),
# refusals that name the field and change nothing; the same through
# dstackctl token create/update/list -v; a service file's model.budget
# in the service and model records, changed in place by a re-apply, and
# a bad one refused naming the field.
#
# The module's "budgets" counters come from two stats sources of the
# test's own next to nginx's (which counts none yet): controld sums
# them per (service, model), today's tokens only from today's entries.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX ();
use Socket qw(SOCK_STREAM);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $JSON = JSON::PP->new->canonical;
my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t);
my $dir = $c->dir;
my $today = int(time / 86400);

# ---- two gateways' stats with budget counters -------------------------------

sub budget_entry {
    my ($token, $svc, $model, $req, $ref, $in, $out, $day, $day_tokens) = @_;
    return { token => $token, service => $svc, model => $model,
        requests => $req, refused => $ref, prompt_tokens => $in,
        completion_tokens => $out, day => $day, day_tokens => $day_tokens };
}

my @fake = (
    { version => 1, services => [], budgets => [
        budget_entry('ci', 'llm', 'llama', 10, 2, 1000, 500, $today, 1500),
        budget_entry('other', 'llm', 'llama', 99, 0, 9, 9, $today, 18) ] },
    { version => 1, services => [], budgets => [
        # yesterday's count at this gateway: not today's tokens
        budget_entry('ci', 'llm', 'llama', 5, 1, 300, 200, $today - 1, 500),
        budget_entry('ci', 'llm', 'mistral', 1, 0, 20, 30, $today, 50) ] },
);

# a stats location answering one canned JSON to every request
my (@fake_pids, @fake_urls);
END { kill 'KILL', @fake_pids if @fake_pids }
for my $answer (@fake) {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Listen => 8, ReuseAddr => 1) or die "listen: $!";
    my $body = $JSON->encode($answer);
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        while (my $s = $l->accept) {
            my $req = '';
            while ($req !~ /\r\n\r\n/) {
                last unless sysread($s, $req, 4096, length $req);
            }
            print $s "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"
                . "Content-Length: " . length($body) . "\r\n\r\n$body";
            close $s;
        }
        POSIX::_exit(0);
    }
    push @fake_pids, $pid;
    push @fake_urls, 'http://127.0.0.1:' . $l->sockport . '/stats';
    close $l;
}

my $conf = $c->controld_conf;
my $nginx_stats = 'http://127.0.0.1:' . $t->stats_port . '/stats';
$conf =~ s{^stats_url: .*$}{stats_url: [$nginx_stats, @{[ join ', ', @fake_urls ]}]}m
    or die "t/67: controld.yml has no stats_url\n";
DsTest::_write("$dir/controld.yml", $conf);
$c->start_controld(keep_conf => 1);
$t->start;

# ---- the API ------------------------------------------------------------------

# api(METHOD, PATH, BODY?, TOKEN?): as the admin without TOKEN
sub api {
    my ($method, $path, $json, $token) = @_;
    my $body = defined $json ? $JSON->encode($json) : undef;
    my $req = $t->build_request($method, $path, host => 'localhost',
        headers => [
            Authorization => 'Bearer ' . ($token // $c->admin_token),
            defined $body ? ('Content-Type' => 'application/json') : () ],
        body => $body);
    my $sock = IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $c->api_socket) or return { status => 0, error => $! };
    my $r = eval {
        DsTest::_send_all($sock, $req, time + 30);
        DsTest::_read_response($sock, timeout => 30, method => $method,
            t0 => time);
    };
    close $sock;
    return $r || { status => 0, error => $@ };
}

sub err_is {
    my ($r, $status, $re, $name) = @_;
    is($r->{status}, $status, "$name: $status") or diag $r->{body};
    like($r->{json}{error}{message} // '', $re, "$name: the message")
        or diag $r->{body};
}

sub listed {
    my $name = shift;
    my $r = api('GET', '/api/tokens');
    my ($tok) = grep { $_->{name} eq $name } @{ $r->{json}{tokens} || [] };
    return $tok;
}

sub state_token { $t->dump->{tokens}{$_[0]} }

my $U32 = 4294967295;

my $r = api('POST', '/api/tokens', { name => 'ci', scope => 'services',
    budget => { rpm => 10, tpm => 'unlimited' } });
is($r->{status}, 201, 'a token with a budget is created') or diag $r->{body};
is_deeply($r->{json}{budget}, { rpm => 10, tpm => 'unlimited', tpd => 0 },
    '... the answer shows its budget');
is_deeply(listed('ci')->{budget}, { rpm => 10, tpm => 'unlimited',
    tpd => 0 }, '... and so does the list');
is_deeply(state_token('ci')->{budget}, { rpm => 10, tpm => $U32, tpd => 0,
    max_tokens => 0 }, '... and the token record');
my $hash = state_token('ci')->{hash};

$r = api('POST', '/api/tokens', { name => 'plain' });
is($r->{status}, 201, 'a token without a budget');
ok(!exists listed('plain')->{budget}, '... lists no budget');
is(ref listed('plain')->{usage}, 'ARRAY', '... and its usage, a list');

$r = api('PATCH', '/api/tokens/ci', { budget => { tpd => 5000 } });
is($r->{status}, 200, 'PATCH changes the budget') or diag $r->{body};
is_deeply($r->{json}, { name => 'ci', budget => { rpm => 10,
    tpm => 'unlimited', tpd => 5000 } }, '... the answer: the whole budget');
is_deeply(state_token('ci')->{budget}, { rpm => 10, tpm => $U32,
    tpd => 5000, max_tokens => 0 }, '... only tpd changed in the record');
is(state_token('ci')->{hash}, $hash, '... and the token is the same one');

$r = api('PATCH', '/api/tokens/ci', { budget => { rpm => 0,
    tpd => 'unlimited' } });
is($r->{status}, 200, 'rpm back to the model default, tpd unlimited');
is_deeply(listed('ci')->{budget}, { rpm => 0, tpm => 'unlimited',
    tpd => 'unlimited' }, '... as listed');

# refusals: the field named, nothing changed
my $before = state_token('ci');
for my $bad (
    [{ budget => { rpm => -1 } }, qr/^budget\.rpm: expected a whole number/,
        'a negative rpm'],
    [{ budget => { tpm => 1.5 } }, qr/^budget\.tpm: expected a whole number/,
        'a fractional tpm'],
    [{ budget => { tpd => 'lots' } },
        qr/^budget\.tpd: expected a whole number .* or "unlimited"$/,
        'a string other than "unlimited"'],
    [{ budget => { rpm => $U32 } }, qr/^budget\.rpm: expected a whole number from 0 \(the model's default\) to 4294967294/,
        'an rpm that would read as unlimited'],
    [{ budget => { rps => 3 } }, qr/^budget: unknown field "rps"/,
        'an unknown budget field'],
    [{ budget => { max_tokens => 3 } },
        qr/^budget: unknown field "max_tokens"/, 'max_tokens (a model\'s)'],
    [{ budget => {} }, qr/^budget: nothing to change/, 'an empty budget'],
    [{ budget => 5 }, qr/^budget: expected an object/, 'a budget number'],
    [{ name => 'x' }, qr/^unknown field "name"/, 'another field'],
) {
    my ($body, $re, $name) = @$bad;
    err_is(api('PATCH', '/api/tokens/ci', $body), 400, $re, $name);
}
is_deeply(state_token('ci'), $before, 'the refused changes changed nothing');
err_is(api('PATCH', '/api/tokens/nobody', { budget => { rpm => 1 } }), 404,
    qr/^no token named "nobody"$/, 'an unknown token');
err_is(api('POST', '/api/tokens', { name => 'bad', budget => {
    rpm => 'many' } }), 400, qr/^budget\.rpm: expected a whole number/,
    'a create with a bad budget');
ok(!listed('bad'), '... makes no token');

# budgets are the operator's: a manager of main may make tokens, not
# set their budgets
$r = api('POST', '/api/users', { name => 'bob' });
is($r->{status}, 201, 'a user bob') or diag $r->{body};
my $bob = $r->{json}{token};
is(api('POST', '/api/projects/main/members', { user => 'bob',
    role => 'manager' })->{status}, 200, '... a manager of main');
err_is(api('PATCH', '/api/tokens/ci', { budget => { rpm => 1 } }, $bob),
    403, qr/^budget: only a global admin sets token budgets$/,
    'a manager changing a budget');
err_is(api('POST', '/api/tokens', { name => 'bobs', budget => {
    tpd => 'unlimited' } }, $bob), 403,
    qr/^budget: only a global admin sets token budgets$/,
    'a manager making a token with a budget');
is(api('POST', '/api/tokens', { name => 'bobs' }, $bob)->{status}, 201,
    '... and one without');
is_deeply(state_token('ci'), $before, 'the refused calls changed nothing');

# usage: the two gateways' counters, summed per model
my $use;
DsTest::wait_until(sub {
    $use = listed('ci')->{usage};
    return @{ $use || [] } == 2;
}, timeout => 20);
is_deeply($use, [
    { model => 'llama', service => 'llm', requests => 15, refused => 3,
      prompt_tokens => 1300, completion_tokens => 700, day_tokens => 1500 },
    { model => 'mistral', service => 'llm', requests => 1, refused => 0,
      prompt_tokens => 20, completion_tokens => 30, day_tokens => 50 },
], 'usage: summed over the gateways, today\'s tokens of today only')
    or diag explain $use;
is_deeply(listed('plain')->{usage}, [], 'a token nobody counted: none');

my @audit = @{ api('GET', '/api/audit')->{json}{events} || [] };
ok((grep { ($_->{action} // '') eq 'token update'
    && ($_->{object} // '') eq 'ci' } @audit), 'the update is audited')
    or diag explain \@audit;

# ---- the CLI ------------------------------------------------------------------

$r = $c->cli(['token', 'create', 'cli-tok', '--rpm', '5', '--tpd',
    'unlimited']);
is($r->{rc}, 0, 'token create --rpm --tpd') or diag $r->{err};
like($r->{out}, qr/^dst_\S+$/, '... prints the token');
is_deeply(listed('cli-tok')->{budget}, { rpm => 5, tpm => 0,
    tpd => 'unlimited' }, '... with its budget');

$r = $c->cli(['token', 'update', 'cli-tok', '--tpm', '100']);
is($r->{rc}, 0, 'token update --tpm') or diag $r->{err};
is($r->{out}, "Updated token cli-tok: rpm 5, tpm 100, tpd unlimited\n",
    '... says the budget now');
$r = $c->cli(['token', 'update', 'cli-tok', '--rpm', 'default']);
is($r->{out}, "Updated token cli-tok: rpm default, tpm 100, tpd unlimited\n",
    '--rpm default: the model\'s again');
my $b = state_token('cli-tok')->{budget};
ok($b->{rpm} == 0 && $b->{tpm} == 100 && $b->{tpd} > 1.8e19,
    '... in the record (tpd: UINT64_MAX, unlimited)') or diag explain $b;

for my $u (
    [['token', 'update', 'cli-tok'], qr/^dstackctl: token update needs --rpm, --tpm or --tpd/],
    [['token', 'update', 'cli-tok', '--rpm', '1.5'],
        qr/^dstackctl: invalid --rpm "1\.5": a whole number up to 4294967294, unlimited or default/],
    [['token', 'create', 'x', '--tpd', '-3'], qr/^dstackctl: invalid --tpd "-3"/],
    [['token', 'update', '--tpm', '1'], qr/^dstackctl: token update needs a name/],
) {
    my ($args, $re) = @$u;
    $r = $c->cli($args);
    is($r->{rc}, 2, "dstackctl @$args: exit 2") or diag $r->{err};
    like($r->{err}, $re, "dstackctl @$args: the message") or diag $r->{err};
}
$r = $c->cli(['token', 'update', 'nobody', '--rpm', '1']);
is($r->{rc}, 1, 'updating an unknown token: exit 1');
like($r->{err}, qr/no token named "nobody"/, '... the server\'s message');
is_deeply(state_token('cli-tok')->{budget}{tpm}, 100,
    'the refused updates changed nothing');

$r = $c->cli(['token', 'list']);
is($r->{rc}, 0, 'token list');
like($r->{out}, qr/^ NAME\s+SCOPE\s+SERVICES\s+CREATED\s+EXPIRES\n/,
    '... the table as before');
unlike($r->{out}, qr/Budgets|RPM/, '... without budgets');

$r = $c->cli(['token', 'list', '-v']);
is($r->{rc}, 0, 'token list -v') or diag $r->{err};
like($r->{out}, qr/^ NAME\s+RPM\s+TPM\s+TPD\n/m, '... a budgets table');
like($r->{out}, qr/^ ci\s+default\s+unlimited\s+unlimited$/m,
    '... ci\'s budget');
like($r->{out}, qr/^ cli-tok\s+default\s+100\s+unlimited$/m,
    '... cli-tok\'s');
like($r->{out}, qr/^ plain\s+default\s+default\s+default$/m,
    '... and plain\'s: the models\'');
like($r->{out}, qr/^ NAME\s+MODEL\s+REQUESTS\s+REFUSED\s+TOKENS IN\s+TOKENS OUT\s+TODAY\n/m,
    '... a usage table');
like($r->{out}, qr/^ ci\s+llama\s+15\s+3\s+1300\s+700\s+1500$/m,
    '... a row per model: llama');
like($r->{out}, qr/^ ci\s+mistral\s+1\s+0\s+20\s+30\s+50$/m,
    '... and mistral');

# ---- a service file's model.budget ---------------------------------------------

# the files apart from the code (the working directory), so that a new
# budget changes the spec alone
my $app = $c->app_dir('app', { 'README' => "the code\n" });
my $specs = $c->app_dir('specs', {
    'llm.dstack.yml' => <<'EOF',
type: service
name: llm
port: 8000
commands:
  - exec python3 -m http.server 8000
probes: []
model:
  name: llama
  format: openai
  budget:
    rpm: 60
    tpm: 100000
    max_tokens: 512
EOF
    'bad.dstack.yml' => <<'EOF',
type: service
name: llm
port: 8000
commands:
  - exec python3 -m http.server 8000
probes: []
model:
  name: llama
  format: openai
  budget:
    rpm: 0
    tpm: 100
EOF
});

$r = $c->cli(['apply', '-f', "$specs/llm.dstack.yml", '-y', '-d'],
    dir => $app, timeout => 60);
is($r->{rc}, 0, 'a service with model.budget is applied') or diag $r->{err};
my $want = { rpm => 60, tpm => 100000, tpd => 0, max_tokens => 512 };
my $st = $t->dump;
is_deeply($st->{services}{llm}{budget}, $want, '... its service record');
is_deeply($st->{models}{llama}{budget}, $want, '... and its model record');
my $version = $c->run_named('llm')->{version};

DsTest::_write("$specs/llm.dstack.yml",
    DsTest::_slurp("$specs/llm.dstack.yml") =~ s/rpm: 60/rpm: 30/r);
$r = $c->cli(['apply', '-f', "$specs/llm.dstack.yml", '-y', '-d'],
    dir => $app, timeout => 60);
is($r->{rc}, 0, 'a new budget re-applied') or diag $r->{err};
is($c->run_named('llm')->{version}, $version, '... in place, no rollout');
is($t->dump->{models}{llama}{budget}{rpm}, 30, '... the model record has it');

$r = $c->cli(['apply', '-f', "$specs/bad.dstack.yml", '-y', '-d'],
    dir => $app, timeout => 60);
isnt($r->{rc}, 0, 'a budget of rpm 0 is refused');
like($r->{err}, qr/bad\.dstack\.yml:11:10: model\.budget\.rpm: expected an integer >= 1, got 0 \(no limit: leave the field out\)/,
    '... naming the file, line and field') or diag $r->{err};
is($t->dump->{models}{llama}{budget}{rpm}, 30, '... and nothing changed');

kill 'TERM', @fake_pids;
waitpid($_, 0) for @fake_pids;
$c->finish;
$t->done;
