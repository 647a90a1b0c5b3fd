#!/usr/bin/perl
# dstack's CLI habits in dstackctl, through real nginx (with the module),
# real dstack-controld (local backend) and real replica processes:
# .dstackignore and git's global excludes keep files out of the uploaded
# code (and the archive's size is said first); apply -f - reads the
# configuration from stdin; apply --force makes a new version of an
# unchanged run (a rolling restart); --cpu/--memory override the file's
# resources (in the plan and in the run's spec); offer -e resolves env as
# apply does, and offer takes resources without -f; logs --since skips
# older lines; ps -n N and --format json (with dstack's names); the bash
# completion script completes commands and options (and zsh's parses
# when zsh is there).  Bad values are usage errors that send nothing.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsCli;
use File::Path qw(make_path);
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time sleep);
use Test::More;

DsCli->require_built('cli', 'controld', 'module');

my $t = DsTest->new(seed_empty => 0);
my $c = DsCli->new($t);
$c->start_controld;
$t->start;
my $admin = $c->admin_token;
my $home = "$t->{dir}/home";
my %noxdg = (XDG_CONFIG_HOME => undef, GIT_CONFIG_GLOBAL => undef);

sub get {
    my ($run, $path) = @_;
    return $t->get($run, $path,
        headers => { Authorization => "Bearer $admin" });
}

my $spec = <<'EOF';
type: service
name: habits
port: 8000
env:
  - GREETING
commands:
  - echo "old-line-marker $GREETING"
  - echo "$GREETING" > index.html
  - exec python3 -m http.server 8000
EOF

my $app = $c->app_dir('app', {
    'svc.dstack.yml' => $spec,
    '.gitignore' => "*.tmp\n",
    '.dstackignore' => "*.log\n!keep.log\n",
    'data.txt' => "uploaded\n",
    'scratch.tmp' => "gitignored\n",
    'debug.log' => "dstackignored\n",
    'keep.log' => "re-included\n",
    'private.key' => "globally excluded\n",
    'sub/.dstackignore' => "notes.txt\n",
    'sub/notes.txt' => "ignored below sub/\n",
    'sub/code.py' => "kept\n",
    'notes.txt' => "kept at the top\n",
});
# git's global excludes at git's default place under HOME
make_path("$home/.config/git", "$t->{dir}/xdg/git");
DsTest::_write("$home/.config/git/ignore", "*.key\n");

# ---- usage errors: exit 2, the reason, nothing sent -------------------------

my %nowhere = (DSTACK_SERVER => "unix:$t->{dir}/nowhere.sock",
    DSTACK_TOKEN => 'x');
my @usage = (
    [['logs', 'habits', '--since', '10x'],
        qr/^dstackctl: --since: cannot read "10x": expected a duration/],
    [['logs', 'habits', '--since', '2024-02-31'],
        qr/^dstackctl: --since: cannot read "2024-02-31"/],
    [['ps', '-n', '0'], qr/^dstackctl: -n: cannot read "0"/],
    [['ps', '-n', 'x'], qr/^dstackctl: -n: cannot read "x"/],
    [['ps', '--format', 'yaml'],
        qr/^dstackctl: --format: unknown format "yaml" \(json or plain\)/],
    [['ps', '-w', '--format', 'json'], qr/-w and --json do not go together/],
    [['offer'], qr/^dstackctl: offer needs -f FILE, or resources/],
    [['offer', '-e', 'A=1', '--cpu', '2..'], qr/^dstackctl: -e needs -f FILE/],
    [['offer', '--gpu', '10x'],
        qr/^dstackctl: --gpu: invalid GPU memory "10x"/],
    [['offer', '--cpu', '4..2'], qr/^dstackctl: --cpu: .*4\.\.2/],
    [['apply', '-f', 'svc.dstack.yml', '--memory', 'lots', '-y'],
        qr/^dstackctl: --memory: invalid memory size "lots"/],
    [['completion'], qr/^dstackctl: completion needs the shell/],
    [['completion', 'fish'], qr/^dstackctl: unknown shell "fish"/],
);
for my $u (@usage) {
    my ($args, $re) = @$u;
    my $r = $c->cli($args, dir => $app, env => { %nowhere, GREETING => 'x' });
    is($r->{rc}, 2, "@$args: exit 2") or diag $r->{err};
    like($r->{err}, $re, "@$args: says why");
    unlike($r->{err}, qr/cannot reach/, "@$args: nothing was sent");
}

# ---- the code: .dstackignore, global excludes, the size line ----------------

my $r = $c->cli(['__ignore-check', '.'], dir => $app, env => \%noxdg);
is($r->{rc}, 0, '__ignore-check exits 0');
my %packed = map { $_ => 1 } split /\n/, $r->{out};
ok($packed{$_}, "$_ is packed") for qw(data.txt keep.log notes.txt
    sub/code.py .dstackignore);
ok(!$packed{$_}, "$_ is not packed") for qw(scratch.tmp debug.log
    private.key sub/notes.txt);

# core.excludesFile (git's config, read without git) and XDG_CONFIG_HOME
DsTest::_write("$home/.gitconfig",
    "[core]\n\texcludesFile = ~/.my-excludes\n");
DsTest::_write("$home/.my-excludes", "data.txt\n");
DsTest::_write("$t->{dir}/xdg/git/ignore", "notes.txt\n");
$r = $c->cli(['__ignore-check', '.'], dir => $app, env => \%noxdg);
like($r->{out}, qr/^private\.key$/m,
    'core.excludesFile replaces the default excludes file');
unlike($r->{out}, qr/^data\.txt$/m, 'and its patterns apply');
$r = $c->cli(['__ignore-check', '.'], dir => $app,
    env => { XDG_CONFIG_HOME => "$t->{dir}/xdg", GIT_CONFIG_GLOBAL => undef });
unlike($r->{out}, qr/^data\.txt$/m, '~/.gitconfig still says where');
unlink "$home/.gitconfig";
$r = $c->cli(['__ignore-check', '.'], dir => $app,
    env => { XDG_CONFIG_HOME => "$t->{dir}/xdg", GIT_CONFIG_GLOBAL => undef });
unlike($r->{out}, qr/^notes\.txt$/m,
    'without core.excludesFile: $XDG_CONFIG_HOME/git/ignore');
like($r->{out}, qr/^private\.key$/m, 'and not ~/.config/git/ignore then');

# ---- apply -f -: the configuration from stdin, the code from here ------------

$r = $c->cli(['apply', '-f', '-', '-y'], dir => $app, stdin => $spec,
    env => { %noxdg, GREETING => 'first' }, timeout => 90);
is($r->{rc}, 0, 'apply -f - -y exits 0') or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/^ Configuration\s+-$/m, 'the plan says stdin ("-")');
like($r->{out}, qr/^Uploading the code \((\d+) files, [\d.]+ ?[KMG]?B\)$/m,
    'the code archive\'s size is said before the upload');
my ($nfiles) = $r->{out} =~ /^Uploading the code \((\d+) files/m;
is($nfiles, scalar(grep { !m{/$} } keys %packed),
    'as many files as __ignore-check lists');
like($r->{out}, qr/^Run habits submitted$/m, 'the run is submitted');
like($r->{out}, qr/^Service is published at:$/m, 'and serves');
is(get('habits', '/')->{body}, "first\n", 'env resolved from here');
is(get('habits', '/data.txt')->{body}, "uploaded\n",
    'the working directory is the code');
for my $f (qw(debug.log private.key scratch.tmp sub/notes.txt)) {
    is(get('habits', "/$f")->{status}, 404, "$f was not uploaded");
}
is(get('habits', '/keep.log')->{status}, 200, '!keep.log re-included it');

$r = $c->cli(['apply', '-f', '-', '-y'], dir => $app,
    stdin => "type: service\nport: [\n");
is($r->{rc}, 1, 'a broken configuration on stdin: exit 1');
like($r->{err}, qr/^<stdin>:\d+:\d+: /m, 'its errors name <stdin>');

# ---- apply --force: a new version of an unchanged run ------------------------

my $run = $c->run_named('habits');
my $v1 = $run->{version};
my %pid1 = map { $_->{pid} => 1 } @{ $run->{replicas} };
$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y'], dir => $app,
    env => { %noxdg, GREETING => 'first' }, timeout => 90);
is($r->{rc}, 0, 'apply of the unchanged run exits 0') or diag $r->{err};
like($r->{out}, qr/configuration is unchanged/, 'it says unchanged');
is($c->run_named('habits')->{version}, $v1, 'no new version without --force');

$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '--force'],
    dir => $app, env => { %noxdg, GREETING => 'first' }, timeout => 120);
is($r->{rc}, 0, 'apply --force exits 0') or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/--force makes a\s+new deployment \(a rolling restart\)/,
    'the plan says --force makes a new deployment');
like($r->{out}, qr/^Run habits updated$/m, 'updated');
$run = $c->run_named('habits');
is($run->{version}, $v1 + 1, '--force bumped the version');
my @live = grep { $_->{status} eq 'running' } @{ $run->{replicas} };
ok(@live && !grep({ $pid1{$_->{pid}} } @live) && $live[0]{version} == $v1 + 1,
    'the replica was replaced by one of the new version')
    or diag explain $run->{replicas};
is(get('habits', '/')->{status}, 200, 'and it serves');

# ---- --cpu / --memory over the file's resources ------------------------------

$r = $c->cli(['apply', '-f', 'svc.dstack.yml', '-y', '--cpu', '1..2',
    '--memory', '1GB..'], dir => $app,
    env => { %noxdg, GREETING => 'first' }, timeout => 120);
is($r->{rc}, 0, 'apply --cpu --memory exits 0') or diag "$r->{out}\n$r->{err}";
like($r->{out}, qr/^ Resources\s+1\.\.2xCPU, 1GB\.\.,/m,
    'the plan shows the overridden resources');
like($r->{out}, qr/^ resources\s.*rolling$/m, 'as a change of resources');
$run = $c->run_named('habits');
is_deeply($run->{spec}{resources}{cpu}{count}, { min => 1, max => 2 },
    'the run\'s spec has the CPUs of --cpu');
is($run->{spec}{resources}{memory}{min}, 1024,
    'and the memory of --memory (MB)');
is($run->{spec}{resources}{disk}{min}, 102400, 'the rest as the file says');

# ---- offer -e, offer without -f ----------------------------------------------

$r = $c->cli(['offer', '-f', 'svc.dstack.yml'], dir => $app,
    env => { GREETING => undef });
is($r->{rc}, 1, 'offer without the env apply needs: exit 1');
like($r->{err}, qr/environment variable "GREETING" is not set/,
    'it says which, as apply would');
$r = $c->cli(['offer', '-f', 'svc.dstack.yml', '-e', 'GREETING=x'],
    dir => $app, env => { GREETING => undef });
is($r->{rc}, 0, 'offer -e GREETING=x exits 0') or diag $r->{err};
like($r->{out}, qr/^ 1\s+local\s+/m, 'and lists the host');

$r = $c->cli(['offer', '--cpu', '1..', '--memory', '1GB..', '--json']);
is($r->{rc}, 0, 'offer --cpu --memory without -f exits 0') or diag $r->{err};
my $o = eval { decode_json($r->{out}) };
ok($o && @{ $o->{offers} } >= 1, 'and gives offers') or diag $r->{out};
$r = $c->cli(['offer', '--gpu', '24GB..80GB:2']);
is($r->{rc}, 1, 'offer --gpu 24GB..80GB:2 on a host without GPUs: exit 1');
like($r->{err}, qr/gpu/i, 'the answer is about the GPUs') or diag $r->{err};
unlike($r->{err}, qr/-f FILE/, 'no file was needed');

# ---- logs --since ------------------------------------------------------------

# the replica wrote its marker when it started; the index notes sizes
# once a second, so a second later everything up to now is "old"
sleep 3.5;
my $cut = time;
sleep 1.5;
get('habits', "/new-line-marker") for 1 .. 2;
ok(DsTest::wait_until(sub {
    $c->cli(['logs', 'habits'])->{out} =~ /new-line-marker/ },
    timeout => 10), 'the new requests are in the log');

$r = $c->cli(['logs', 'habits']);
like($r->{out}, qr/old-line-marker/, 'logs: the whole log');
my $iso = strftime('%Y-%m-%dT%H:%M:%SZ', gmtime(int $cut));
$r = $c->cli(['logs', 'habits', '--since', $iso]);
is($r->{rc}, 0, "logs --since $iso exits 0") or diag $r->{err};
like($r->{out}, qr/new-line-marker/, '--since keeps the newer lines');
unlike($r->{out}, qr/old-line-marker/, '--since drops the older ones');
my $ago = int(time - $cut) + 1;
$r = $c->cli(['logs', 'habits', '--since', "${ago}s"]);
like($r->{out}, qr/new-line-marker/, "--since ${ago}s: the newer lines");
unlike($r->{out}, qr/old-line-marker/, "--since ${ago}s: not the older");
$r = $c->cli(['logs', 'habits', '--since', '1h']);
like($r->{out}, qr/old-line-marker.*new-line-marker/s,
    '--since 1h: all of it');
$r = $c->cli(['logs', 'habits', '--since',
    strftime('%Y-%m-%dT%H:%M:%S+00:00', gmtime(time + 3600))]);
is($r->{rc}, 0, '--since a time to come exits 0');
unlike($r->{out}, qr/marker/, 'and shows nothing');

# the API's side of it: bad values are 400s that name the field
sub api {
    my ($method, $path, $body) = @_;
    return $t->request($method, $path, host => 'gateway.' . $t->domain,
        headers => { Authorization => "Bearer $admin",
            defined $body ? ('Content-Type' => 'application/json') : () },
        body => $body);
}
for my $q ('since=0', 'since=abc', 'since=99999999999') {
    my $res = api('GET', "/api/runs/habits/logs?$q");
    is($res->{status}, 400, "logs?$q: 400");
    like($res->{body}, qr/since: /, 'the message names since');
}
my $res = api('GET', '/api/runs/habits/logs?since=' . int($cut));
is($res->{status}, 200, 'logs?since=T: 200');
unlike($res->{body}, qr/old-line-marker/, 'without the older lines');
like($res->{body}, qr/new-line-marker/, 'with the newer ones');
$res = api('POST', '/api/runs/apply', '{"force":"yes","spec":{}}');
is($res->{status}, 400, 'apply with "force":"yes": 400');
like($res->{body}, qr/force: expected true or false/, 'and it says why');

# ---- ps -n, --format json ----------------------------------------------------

$r = $c->cli(['apply', '-f', '-', '-y', '-d', '-n', 'later'], dir => $app,
    stdin => $spec, env => { %noxdg, GREETING => 'second' }, timeout => 60);
is($r->{rc}, 0, 'a second run') or diag $r->{err};
sleep 1.1;
$r = $c->cli(['ps', '--format', 'json']);
is($r->{rc}, 0, 'ps --format json exits 0') or diag $r->{err};
my $runs = eval { decode_json($r->{out}) };
is(ref $runs, 'ARRAY', 'the runs array, as --json gives it');
my ($h) = grep { $_->{name} eq 'habits' } @{ $runs || [] };
ok($h, 'with the run');
is($h->{run_name}, 'habits', 'dstack\'s run_name');
is($h->{project_name}, 'main', 'and project_name');
is($h->{status_message}, $h->{status}, 'and status_message');
like($h->{service}{url}, qr{^http://habits\.}, 'and service.url');
ok(exists $h->{submitted_at} && exists $h->{replicas},
    'our own keys stay');
is_deeply([sort map { $_->{name} } @{ $c->runs }],
    [sort map { $_->{name} } @$runs], '--json and --format json agree');

$r = $c->cli(['ps', '-n', '1', '--json']);
$runs = eval { decode_json($r->{out}) } || [];
is_deeply([map { $_->{name} } @$runs], ['later'],
    'ps -n 1: the run submitted last');
$r = $c->cli(['ps', '-n', '2', '--json']);
$runs = eval { decode_json($r->{out}) } || [];
is(scalar @$runs, 2, 'ps -n 2: two');
$r = $c->cli(['ps', '-n', '1']);
like($r->{out}, qr/^ later\s/m, 'ps -n 1 (the table): the last run');
unlike($r->{out}, qr/^ habits\s/m, 'not the one before');
$r = $c->cli(['ps', '--format', 'plain']);
like($r->{out}, qr/^ NAME\s+BACKEND/m, '--format plain: the table');

# ---- completion --------------------------------------------------------------

$r = $c->cli(['completion', 'bash']);
is($r->{rc}, 0, 'completion bash exits 0');
my $script = "$t->{dir}/dstackctl.bash";
DsTest::_write($script, $r->{out});

# the words bash completes after "dstackctl WORDS..." (the last is cur)
sub complete {
    my @words = @_;
    my $w = join ' ', map { my $s = $_; $s =~ s/'/'\\''/g; "'$s'" }
        'dstackctl', @words;
    my $cmd = "source '$script'; COMP_WORDS=($w); "
        . 'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _dstackctl; '
        . 'echo "${COMPREPLY[@]}"';
    open(my $fh, '-|', 'bash', '-c', "cd '$app' && $cmd") or die "bash: $!";
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    chomp $out;
    return { map { $_ => 1 } split ' ', $out };
}

my $words = complete('');
ok($words->{$_}, "commands: $_") for qw(apply ps logs offer token fleet
    completion);
ok(!(grep { /^__/ } keys %$words), 'not the hidden ones');
is_deeply(complete('ap'), { apply => 1 }, '"ap" completes to apply');
$words = complete('apply', '--');
ok($words->{$_}, "apply options: $_")
    for qw(--file --force --cpu --gpu --memory --disk --yes --detach);
ok(complete('apply', '-')->{'-f'}, 'and the short ones (-f)');
ok(complete('apply', '-f', 'sv')->{'svc.dstack.yml'},
    'apply -f completes a file');
ok(complete('logs', 'x', '--s')->{'--since'}, 'logs --since');
ok(complete('ps', '--f')->{'--format'}, 'ps --format');
ok(complete('ps', '-')->{'-n'}, 'ps -n');
is_deeply(complete('token', ''), { create => 1, update => 1, list => 1,
    revoke => 1, '--help' => 1 }, 'token: its subcommands');
ok(complete('token', 'create', '--')->{'--scope'},
    'token create: its options');
ok(complete('token', 'update', '--')->{'--tpd'},
    'token update: its budget options');
ok(complete('token', 'list', '-')->{'-v'}, 'token list -v');
ok(complete('fleet', 'delete', '--')->{'--force'},
    'fleet delete: its options');

# no drift: every long option a command's --help shows is completed
for my $cmd (qw(apply run ps stop logs offer)) {
    my $help = $c->cli([$cmd, '--help'])->{out};
    my %shown = map { $_ => 1 } $help =~ /^\s+(?:-\w, )?(--[a-z][a-z-]*)/mg;
    my $comp = complete($cmd, '--');
    my @missing = grep { !$comp->{$_} } sort keys %shown;
    ok(%shown && !@missing, "$cmd: --help's options are all completed")
        or diag "missing: @missing";
}

SKIP: {
    my $zsh = `command -v zsh 2>/dev/null`;
    chomp $zsh;
    skip 'zsh is not installed', 2 unless $zsh;
    $r = $c->cli(['completion', 'zsh']);
    is($r->{rc}, 0, 'completion zsh exits 0');
    DsTest::_write("$t->{dir}/_dstackctl", $r->{out});
    is(system($zsh, '-n', "$t->{dir}/_dstackctl"), 0,
        'the zsh script parses (zsh -n)');
}
$r = $c->cli(['completion', 'zsh']);
like($r->{out}, qr/^#compdef dstackctl$/m, 'zsh: a #compdef script');
like($r->{out}, qr/'apply:plan, submit/, 'with the commands described');

$c->finish;
$t->done;
