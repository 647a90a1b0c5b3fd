#!/usr/bin/perl
# The web console (console/, conf/nginx/dstack-console.conf) on the
# README's demo, in a real browser: examples/demo starts nginx, controld
# and examples/hello, and prints the console's URL and a token to sign in
# with; a second run ("xss") prints HTML and script payloads to its log and
# has one for its model's name.  Here: the console's files and headers
# (strict CSP, index.html no-cache, hashed assets cached for good), then
# t/console/console.mjs drives Debian's chromium through playwright-core:
# sign in (a wrong token and a service token get clear errors), the demo's
# service with its replicas, the chart moving under load, the log
# streaming, the payloads staying text, a token created and revoked, a
# run stopped.  Screenshots go to build/console-screenshots/.

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use Test::More;
use File::Temp qw(tempdir);
use File::Path qw(make_path);

my $build = $DsTest::BUILD;
my $repo = $DsTest::REPO;
my $playwright = "$repo/build/console-test/node_modules/playwright-core";
plan skip_all => 'controld, dstackctl or the module not built'
    unless -x "$build/dstack-controld" && -x "$build/dstackctl"
        && -f "$build/ngx_http_dstack_module.so";
plan skip_all => 'the demo runs its replicas in network namespaces: root'
    unless $> == 0;
plan skip_all => 'the demo runs stock nginx, which cannot load the '
    . 'sanitizer build of the module; the plain pass covers it'
    if $DsTest::SANITIZE;
plan skip_all => 'no web console built (make console)'
    unless -f "$repo/build/console/index.html";
plan skip_all => 'no /usr/bin/chromium (Debian package chromium)'
    unless -x '/usr/bin/chromium';
plan skip_all => 'no playwright-core (make prove installs it)'
    unless -d $playwright;

# ---- the sources: nothing that turns data into HTML or code ----------------

for my $f (glob("$repo/console/src/*.js"), glob("$repo/console/src/*.jsx")) {
    my $src = DsTest::_slurp($f);
    (my $short = $f) =~ s{^\Q$repo\E/}{};
    unlike($src, qr/dangerouslySetInnerHTML|innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/,
        "$short: no HTML from strings, no eval");
}

my $dir = tempdir('dstack-console-XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $dir;
my $demo = "$dir/demo";
$ENV{DSTACK_DEMO_DIR} = $demo;
$ENV{DSTACK_DEMO_PORT} = DsTest::free_port();

my $out = `$repo/examples/demo 2>&1`;
is($?, 0, 'examples/demo succeeds') or BAIL_OUT("the demo failed:\n$out");

my ($url) = $out =~ m{^The web console: (https://gateway\.\S+/)$}m;
ok($url, 'the demo prints the console\'s URL') or diag $out;
my ($console_token) = $out =~ m{^The web console:.*\n.*\n\s+(dst_\S+)$}m;
ok($console_token, 'and a token to sign in with') or diag $out;
my ($service_token, $service_url) =
    $out =~ m{^\s+curl -H 'Authorization: Bearer (dst_\S+)' (http://hello\.\S+?)/?$}m;
ok($service_token, 'and a service token for hello');
my $cacert = "$demo/state/tls/ca.crt";

# ---- the files and their headers -------------------------------------------

sub head {
    my ($path) = @_;
    my $h = `curl -s -D - -o /dev/null --cacert $cacert '$url$path'`;
    return $h;
}
my $index = `curl -s --cacert $cacert '$url'`;
my $h = head('');
like($h, qr{^HTTP/\S+ 200}m, 'GET / answers the console');
my ($csp) = $h =~ /^content-security-policy: (.*?)\r?$/mi;
ok($csp, 'with a Content-Security-Policy') or diag $h;
for my $d ("default-src 'none'", "script-src 'self'", "style-src 'self'",
           "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'") {
    like($csp // '', qr/(?:^|; )\Q$d\E(?:;|$)/, "CSP: $d");
}
unlike($csp // '', qr/unsafe-inline|unsafe-eval|\*/, 'CSP: nothing unsafe, no wildcard');
like($h, qr/^cache-control: no-cache\r?$/mi, 'index.html: no-cache');
like($h, qr/^x-content-type-options: nosniff\r?$/mi, 'nosniff');
unlike($index, qr/<script>|<style>|\son\w+=|style=/i,
    'index.html has no inline script, style or handler');
my @assets = $index =~ m{(?:src|href)="(/assets/[^"]+)"}g;
is(scalar @assets, 2, 'index.html loads a script and a style sheet from /assets/')
    or diag $index;
for my $a (@assets) {
    like($a, qr{^/assets/main-[A-Z0-9]{8}\.(js|css)$}, "$a is named by its hash");
    (my $path = $a) =~ s{^/}{};
    my $ah = head($path);
    like($ah, qr{^HTTP/\S+ 200}m, "$a is served");
    like($ah, qr/^cache-control: public, max-age=31536000, immutable\r?$/mi,
        "$a: cached for a year, immutable");
    like($ah, qr/^content-security-policy: \Q$csp\E\r?$/mi, "$a: the same CSP")
        if $csp;
}
like(head('assets/nope.js'), qr{^HTTP/\S+ 404}m, 'an unknown asset: 404');
like(head('api/health'), qr{^HTTP/\S+ 401}m, '/api/ is still the API');

# ---- a run whose log and model name carry HTML -------------------------------

my $xss_model = q{<img src=x onerror="window.__xss=3">};
my $app = "$dir/xss";
make_path($app);
# the demo's app, answering POST too (a model service's probe posts a chat)
my $py = DsTest::_slurp("$repo/examples/hello/app.py");
$py =~ s{^server = }{def do_post(self):
    self.rfile.read(int(self.headers.get("Content-Length") or 0))
    self.do_GET()


Hello.do_POST = do_post
server = }m or die 'examples/hello/app.py has no "server = " line';
DsTest::_write("$app/app.py", $py);
DsTest::_write("$app/.dstack.yml", <<"EOF");
type: service
name: xss
commands:
  - echo '<script>window.__xss=1</script>'
  - echo '<img src=x onerror="window.__xss=2">'
  - exec python3 app.py
port: 8000
https: false
model: '$xss_model'
resources: {cpu: 1.., memory: 256MB.., disk: 1GB..}
EOF
my $ctl = "DSTACK_CONFIG=$demo/client.yml $build/dstackctl";
my $applied = `cd $app && $ctl apply -f .dstack.yml -y -d 2>&1`;
is($?, 0, 'the xss run is applied') or diag $applied;
ok(DsTest::wait_until(sub { `$ctl ps 2>&1` =~ /^\s*xss\s.*\brunning\b/m }, timeout => 120),
    'and runs') or diag `$ctl ps 2>&1`;

# ---- the browser --------------------------------------------------------------

my $shots = "$repo/build/console-screenshots";
make_path($shots);
local $ENV{CONSOLE_URL} = $url;
local $ENV{ADMIN_TOKEN} = $console_token;
local $ENV{SERVICE_TOKEN} = $service_token;
local $ENV{SERVICE_URL} = $service_url;
local $ENV{RUN} = 'hello';
local $ENV{XSS_RUN} = 'xss';
local $ENV{XSS_MODEL} = $xss_model;
local $ENV{SHOTS} = $shots;
local $ENV{PLAYWRIGHT} = $playwright;
open(my $browser, '-|', "timeout 300 node $repo/t/console/console.mjs 2>&1")
    or die "node: $!";
my $checks = 0;
while (my $line = <$browser>) {
    chomp $line;
    if ($line =~ /^check\t([01])\t([^\t]*)\t(.*)$/) {
        $checks++;
        ok($1, "browser: $2") or diag $3;
    } else {
        diag $line;
    }
}
close $browser;
ok($checks >= 30, "the browser session made its checks ($checks)");
ok(-s "$shots/run.png" && -s "$shots/runs.png" && -s "$shots/tokens.png",
    "screenshots in $shots");

my $stop = `$repo/examples/demo stop 2>&1`;
is($?, 0, 'examples/demo stop succeeds') or diag $stop;

done_testing;
