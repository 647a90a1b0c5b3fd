#!/usr/bin/perl
# Installing and shipping: "make install DESTDIR" (layout, modes, the
# module's modules-available snippet and modules-enabled link), the man
# pages (render without warnings; every command and option --help lists
# is in its page, every key of controld.yml and every directive of the
# README's table too), the Debian packages built with dpkg-buildpackage in
# a copy of the tree (contents, conffiles, the nginx ABI dependency), and
# the packages installed for real with dpkg -i into a throw-away root: an
# overlayfs over / with a tmpfs on top, in a mount and network namespace
# of its own (unshare), chroot'ed.  There postinst's work is checked (the
# group dstack, owners and modes, the links), then the installed
# controld and Debian's own nginx run from that root with the installed
# configuration (only the domain changed): a service deployed with the
# installed dstackctl answers through nginx, controld talks sd_notify to
# an abstract socket and writes and removes its pidfile.  Nothing of the
# host changes: the root vanishes with the namespace.
#
# Root only (dpkg -i, chroot, namespaces); skipped under the sanitizer
# pass (it builds everything again, a minute or two).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use Test::More;

plan skip_all => 'the install test runs once, without the sanitizer build'
    if $DsTest::SANITIZE;
plan skip_all => 'needs root (dpkg -i, chroot, namespaces)' if $> != 0;
for my $cmd (qw(dpkg-buildpackage dh man unshare chroot groff)) {
    plan skip_all => "needs $cmd (./configure --install-deps)"
        unless system("command -v $cmd >/dev/null 2>&1") == 0;
}

my $REPO = $DsTest::REPO;
my $T = tempdir('dstack-t95-XXXXXX', TMPDIR => 1, CLEANUP => 0);
chmod 0755, $T;
my $DOMAIN = 'gw.test';

sub slurp { my $f = shift; open(my $fh, '<', $f) or return ''; local $/; <$fh> }
sub sh {
    my $cmd = shift;
    my $out = `$cmd 2>&1`;
    return ($? >> 8, $out);
}

# ---- make install DESTDIR ------------------------------------------------

my $dest = "$T/dest";
my ($rc, $out) = sh("cd $REPO && make -s install DESTDIR=$dest PREFIX=/usr");
is($rc, 0, 'make install DESTDIR PREFIX=/usr') or diag($out);

my %want = (
    'usr/lib/nginx/modules/ngx_http_dstack_module.so' => '644',
    'usr/share/nginx/modules-available/mod-http-dstack.conf' => '644',
    'usr/sbin/dstack-controld' => '755',
    'usr/bin/dstackctl' => '755',
    'usr/lib/dstack/dstack-setup' => '755',
    'lib/systemd/system/dstack-controld.service' => '644',
    'usr/lib/tmpfiles.d/dstack.conf' => '644',
    'etc/dstack/controld.yml' => '640',
    'etc/dstack/nginx/dstack-http.conf' => '644',
    'etc/dstack/nginx/dstack-gateway.conf' => '644',
    'etc/dstack/nginx/dstack-api.conf' => '644',
    'etc/dstack/nginx/dstack-api-shared.conf' => '644',
    'etc/dstack/nginx/dstack-proxy.conf' => '644',
    'etc/dstack/nginx/dstack-tls.conf' => '644',
    'etc/dstack/nginx/dstack-console.conf' => '644',
    'usr/share/dstack/console/index.html' => '644',
    'usr/share/dstack/console/assets' => '755',
    'etc/nginx/sites-available/dstack' => '644',
    'usr/share/man/man1/dstackctl.1' => '644',
    'usr/share/man/man5/controld.yml.5' => '644',
    'usr/share/man/man8/dstack-controld.8' => '644',
    'usr/share/man/man8/ngx_http_dstack_module.8' => '644',
    'var/lib/dstack/state' => '750',
    'var/lib/dstack/replicas' => '755',
);
for my $f (sort keys %want) {
    my @st = stat("$dest/$f");
    ok(@st, "installed $f") or next;
    is(sprintf('%o', $st[2] & 07777), $want{$f}, "$f mode $want{$f}");
}
is(readlink("$dest/etc/nginx/modules-enabled/50-mod-http-dstack.conf"),
   '/usr/share/nginx/modules-available/mod-http-dstack.conf',
   'modules-enabled/50-mod-http-dstack.conf links the snippet');
like(slurp("$dest/usr/share/nginx/modules-available/mod-http-dstack.conf"),
     qr{^load_module /usr/lib/nginx/modules/ngx_http_dstack_module\.so;$}m,
     'the snippet loads the module');
like(slurp("$dest/lib/systemd/system/dstack-controld.service"),
     qr{^ExecStart=/usr/sbin/dstack-controld -d$}m,
     'the unit starts the installed controld in the foreground');
like(slurp("$dest/etc/dstack/controld.yml"), qr/^group: dstack$/m,
     'the installed controld.yml gives the state to the group dstack');
ok(!-e "$dest/etc/dstack/controld.yml.new", 'no .new on a first install');
like(slurp("$dest/etc/dstack/nginx/dstack-console.conf"),
     qr{^\s+root /usr/share/dstack/console;$}m,
     'the console\'s snippet serves the installed console');
my @console = map { s{^\Q$dest\E/usr/share/dstack/console/}{}r }
    glob("$dest/usr/share/dstack/console/assets/*");
ok((grep { /^assets\/main-\w+\.js$/ } @console)
   && (grep { /^assets\/main-\w+\.css$/ } @console),
   'the console\'s script and style sheet, named by their hash')
    or diag "@console";

# a second install keeps an edited configuration
open(my $fh, '>>', "$dest/etc/dstack/controld.yml") or die;
print $fh "# edited\n";
close $fh;
($rc, $out) = sh("cd $REPO && make -s install DESTDIR=$dest PREFIX=/usr");
is($rc, 0, 'make install again');
like(slurp("$dest/etc/dstack/controld.yml"), qr/# edited\n\z/,
     'an edited controld.yml stays');
ok(-e "$dest/etc/dstack/controld.yml.new", 'the new example goes next to it');

# ---- man pages -----------------------------------------------------------

my $man = "$dest/usr/share/man";
my %page;
for my $p ('man1/dstackctl.1', 'man5/controld.yml.5',
           'man8/dstack-controld.8', 'man8/ngx_http_dstack_module.8') {
    ($rc, $out) = sh("LC_ALL=C.UTF-8 MANWIDTH=200 man --warnings -E UTF-8 "
                     . "-l $man/$p 2>$T/man.err | col -b");
    is($rc, 0, "$p renders");
    is(slurp("$T/man.err"), '', "$p renders without warnings");
    # hyphenation and adjusting aside: words as they are
    ($page{$p} = $out) =~ s/\s+/ /g;
}

my $ctl = "$dest/usr/bin/dstackctl";
my $top = `$ctl --help`;
my @cmds;
if ($top =~ /^Commands:\n((?:[ \t]+\S.*\n)+)/m) {
    @cmds = $1 =~ /^\s+([a-z][\w-]*)\s/mg;
}
ok(@cmds >= 5, 'dstackctl --help lists commands: ' . join(' ', @cmds));
sub options { my %o = map { $_ => 1 } $_[0] =~ /(?<![\w-])(--?[a-zA-Z][\w-]*)/g; sort keys %o }
for my $cmd (@cmds) {
    like($page{'man1/dstackctl.1'}, qr/\Q$cmd\E/, "dstackctl(1) has $cmd");
    my $h = `$ctl $cmd --help`;
    like($page{'man1/dstackctl.1'}, qr/dstackctl \Q$cmd\E /,
         "dstackctl(1) has a section for $cmd");
    for my $o (options($h)) {
        like($page{'man1/dstackctl.1'}, qr/(?<![\w-])\Q$o\E(?![\w-])/,
             "dstackctl(1) has ${cmd}'s $o");
    }
}
my $dh = `$dest/usr/sbin/dstack-controld --help`;
is($?, 0, 'dstack-controld --help exits 0');
for my $o (options($dh)) {
    like($page{'man8/dstack-controld.8'}, qr/(?<![\w-])\Q$o\E(?![\w-])/,
         "dstack-controld(8) has $o");
}
for my $o (qw(-d -n -f -p -v)) {
    like($dh, qr/^\s+\Q$o\E\s/m, "dstack-controld --help explains $o");
}
my $yml = slurp("$REPO/conf/controld.yml");
for my $k ($yml =~ /^#?([a-z_]+):/mg) {
    like($page{'man5/controld.yml.5'}, qr/\b\Q$k\E:/, "controld.yml(5) has $k");
}
my $readme = slurp("$REPO/README.md");
my ($table) = $readme =~ /^### Directives\n(.*?)^#/ms;
my @dirs = $table =~ /^\| `(\w+)/mg;
ok(@dirs >= 10, 'README lists the directives');
for my $d (@dirs) {
    like($page{'man8/ngx_http_dstack_module.8'}, qr/\b\Q$d\E\b/,
         "ngx_http_dstack_module(8) has $d");
}

# ---- the Debian packages -------------------------------------------------

# a copy of the tree: the build runs its own ./configure and make in it
my $src = "$T/src/dstack";
make_path($src);
($rc, $out) = sh("cd $REPO && { git ls-files -co --exclude-standard 2>/dev/null"
                 . " || find . -path ./build -prune -o -type f -print; }"
                 . " | grep -v '^build/' | tar -cf - -T - | tar -xf - -C $src");
is($rc, 0, 'the tree copied for the package build') or diag($out);
($rc, $out) = sh("cd $src && nice dpkg-buildpackage -us -uc -b "
                 . "> $T/dpkg-buildpackage.log");
is($rc, 0, 'dpkg-buildpackage -us -uc -b')
    or diag(`tail -30 $T/dpkg-buildpackage.log`);
my ($deb) = glob("$T/src/dstack_*_*.deb");
my ($mod) = glob("$T/src/libnginx-mod-http-dstack_*_*.deb");
ok($deb && $mod, 'two packages: dstack and libnginx-mod-http-dstack')
    or BAIL_OUT('no packages to check');
ok(-x "$src/build/dstack-controld", 'the package was built in the copy\'s build/');

my $c = `dpkg-deb -c $deb`;
for my $f (qw(./usr/sbin/dstack-controld ./usr/bin/dstackctl
              ./lib/systemd/system/dstack-controld.service
              ./etc/dstack/controld.yml ./etc/nginx/sites-available/dstack
              ./usr/share/man/man1/dstackctl.1.gz
              ./usr/share/man/man5/controld.yml.5.gz
              ./usr/share/man/man8/dstack-controld.8.gz
              ./usr/share/man/man8/ngx_http_dstack_module.8.gz
              ./usr/share/dstack/console/index.html
              ./etc/dstack/nginx/dstack-console.conf)) {
    like($c, qr/ \Q$f\E$/m, "dstack has $f");
}
like($c, qr{^-rw-r----- root/root .* \./etc/dstack/controld\.yml$}m,
     'controld.yml is 0640 in the package');
unlike($c, qr{var/lib/dstack}, 'no state in the package (postinst makes it)');
my $conff = `dpkg-deb --ctrl-tarfile $deb | tar -xOf - ./conffiles`;
for my $f (qw(/etc/dstack/controld.yml /etc/dstack/nginx/dstack-http.conf
              /etc/dstack/nginx/dstack-gateway.conf
              /etc/dstack/nginx/dstack-api.conf
              /etc/nginx/sites-available/dstack)) {
    like($conff, qr/^\Q$f\E$/m, "conffile $f");
}
my $mc = `dpkg-deb -c $mod`;
like($mc, qr{ \./usr/lib/nginx/modules/ngx_http_dstack_module\.so$}m,
     'the module in nginx\'s module directory');
like($mc, qr{ \./usr/share/nginx/modules-available/mod-http-dstack\.conf$}m,
     'the module\'s modules-available snippet');
my $abi = `dpkg -s nginx 2>/dev/null` =~ /^Provides:.*\b(nginx-abi-[\w.~+-]+)/m
    ? $1 : 'nginx-abi-';
like(`dpkg-deb -f $mod Depends`, qr/\Q$abi\E/,
     "the module depends on the exact nginx ABI ($abi)");
like(`dpkg-deb -f $deb Depends`,
     qr/libnginx-mod-http-dstack \(= [^)]+\).*/, 'dstack depends on it');
for my $lib (qw(libyaml libcjson liblmdb libcurl libmicrohttpd libssl
    libpq)) {
    like(`dpkg-deb -f $deb Depends`, qr/\b\Q$lib\E/, "dstack depends on $lib");
}

# ---- installed for real in a throw-away root -----------------------------

($rc, $out) = sh('unshare --mount --net true');
if ($rc != 0) {
    diag("no namespaces here ($out): the installed root is not tried");
    done_testing();
    exit 0;
}

my $root = "$T/ovl/root";
make_path("$T/ovl");
open($fh, '>', "$T/outer.sh") or die;
print $fh <<"EOF";
set -e
mount -t tmpfs tmpfs $T/ovl
mkdir -p $T/ovl/upper $T/ovl/work $root
mount -t overlay overlay \\
    -o lowerdir=/,upperdir=$T/ovl/upper,workdir=$T/ovl/work $root
mount -t proc proc $root/proc
mount --rbind /dev $root/dev
mount --rbind /sys $root/sys
mount -t tmpfs tmpfs $root/run
mount -t tmpfs tmpfs $root/tmp
mkdir -p $root/root/t95
cp $deb $mod $T/inner.sh $REPO/examples/hello/app.py \\
   $REPO/examples/hello/.dstack.yml $root/root/t95/
ip link set lo up
set +e
chroot $root /bin/sh /root/t95/inner.sh > $T/inner.out 2> $T/inner.err
rc=\$?
# whatever still runs in that root (replicas, nginx) goes with it
for p in /proc/[0-9]*; do
    [ "\$(readlink \$p/root 2>/dev/null)" = "$root" ] \\
        && kill -9 "\${p#/proc/}" 2>/dev/null
done
cp -r $root/root/t95 $T/root-t95 2>/dev/null
cp $root/var/log/nginx/error.log $T/nginx-error.log 2>/dev/null
exit \$rc
EOF
close $fh;

open($fh, '>', "$T/inner.sh") or die;
print $fh <<"EOF";
# inside the throw-away root, as root
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
cd /root/t95
r() { echo "R \$1 \$2"; }

dpkg -i libnginx-mod-http-dstack_*.deb dstack_*.deb > dpkg.log 2>&1
r dpkg \$?
r group "\$(getent group dstack)"
r api_user "\$(id -Gn nobody)"
for d in /var/lib/dstack /var/lib/dstack/state /var/lib/dstack/replicas \\
         /run/dstack; do
    r "stat:\$d" "\$(stat -c '%U:%G %a' \$d)"
done
r modlink "\$(readlink /etc/nginx/modules-enabled/50-mod-http-dstack.conf)"
r modconf "\$(cat /usr/share/nginx/modules-available/mod-http-dstack.conf)"
r site "\$(readlink /etc/nginx/sites-enabled/dstack)"
r default "\$(readlink /etc/nginx/sites-enabled/default)"
r enabled "\$(readlink /etc/systemd/system/multi-user.target.wants/dstack-controld.service)"
dstack-controld -n -f /etc/dstack/controld.yml > check.out 2>&1
r check "\$? \$(cat check.out)"
dstackctl --help > /dev/null 2>&1
r ctlhelp \$?
r manpage "\$(man -w dstack-controld 2>&1)"

sed -i 's/example\\.com/$DOMAIN/g' /etc/dstack/controld.yml \\
    /etc/dstack/nginx/*.conf

# sd_notify's abstract socket, as systemd's would be
python3 -c '
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0dstack-t95-notify")
open("notify.ready", "w").close()
with open("notify.log", "a", buffering=1) as f:
    while True:
        f.write(s.recv(4096).decode().replace("\\n", ",") + "\\n")
' &
notify_pid=\$!
for i in \$(seq 50); do [ -e notify.ready ] && break; sleep 0.1; done

NOTIFY_SOCKET=\@dstack-t95-notify \\
    dstack-controld -d -p /run/dstack/controld.pid > controld.log 2>&1 &
cpid=\$!
for i in \$(seq 100); do
    [ -s /run/dstack/controld.pid ] && break
    sleep 0.1
done
r pidfile "\$(cat /run/dstack/controld.pid 2>/dev/null) \$cpid"
r notified "\$(tr '\\n' ' ' < notify.log)"
# the site serves gateway.<domain> on HTTPS with the certificate that
# controld's first start made: nginx reads it after controld (the unit's
# Before=nginx.service)
nginx -t > nginx-t.out 2>&1
r nginx_t "\$? \$(tr '\\n' ' ' < nginx-t.out)"
nginx > nginx.out 2>&1
r nginx "\$? \$(cat nginx.out)"
sleep 0.5
r lock "\$(stat -c '%G %a' /var/lib/dstack/state/lock.mdb)"
r workers "\$(ps -o user= --ppid \$(cat /run/nginx.pid) | sort -u | tr '\\n' ' ')"
r gatewaykey "\$(stat -c '%U:%G %a' /var/lib/dstack/state/tls/gateway.key)"

export DSTACK_CONFIG=/var/lib/dstack/state/client.yml
tok=\$(sed -n 's/^token: *//p' \$DSTACK_CONFIG)
ca=/var/lib/dstack/state/tls/ca.crt
r api "\$(curl -s -o /dev/null -w '%{http_code}' --cacert \$ca \\
    --resolve gateway.$DOMAIN:443:127.0.0.1 \\
    -H "Authorization: Bearer \$tok" https://gateway.$DOMAIN/api/health)"
code=\$(curl -s -o plain.body -w '%{http_code}' -H 'Host: gateway.$DOMAIN' \\
    -H "Authorization: Bearer \$tok" http://127.0.0.1/api/health)
r api_plain "\$code \$(cat plain.body)"
echo "127.0.0.1 gateway.$DOMAIN" >> /etc/hosts
DSTACK_CONFIG=/dev/null DSTACK_SERVER=https://gateway.$DOMAIN \\
    DSTACK_TOKEN=\$tok DSTACK_CA=\$ca dstackctl ps > ps.out 2>&1
r ctl_https "\$? \$(head -1 ps.out)"
sed -i 's/^replicas: 2\$/replicas: 1/' .dstack.yml
dstackctl apply -f .dstack.yml -y -d > apply.out 2>&1
r apply "\$? \$(tail -1 apply.out)"
stok=\$(dstackctl token create t95 --scope services:hello 2>/dev/null)
code=
for i in \$(seq 300); do
    code=\$(curl -s -o body -w '%{http_code}' -H 'Host: hello.$DOMAIN' \\
        -H "Authorization: Bearer \$stok" http://127.0.0.1/)
    [ "\$code" = 200 ] && break
    sleep 0.2
done
r service "\$code \$(cat body)"
r noauth "\$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: hello.$DOMAIN' \\
    http://127.0.0.1/)"
r otherhost "\$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: elsewhere' \\
    http://127.0.0.1/)"

kill -HUP \$cpid
for i in \$(seq 50); do
    grep -q 'configuration reloaded' controld.log && break
    sleep 0.1
done
r reloaded "\$(grep -c 'configuration reloaded' controld.log)"
dstackctl stop hello -x -y > /dev/null 2>&1
kill -TERM \$cpid
wait \$cpid
r exit \$?
r pidfile_gone "\$(ls /run/dstack/controld.pid 2>&1 | grep -c 'No such')"
sleep 0.3
r notified_all "\$(tr '\\n' ' ' < notify.log)"
kill \$notify_pid
nginx -s stop
exit 0
EOF
close $fh;

($rc, $out) = sh("unshare --mount --net --propagation private sh $T/outer.sh");
is($rc, 0, 'the throw-away root ran') or diag($out, slurp("$T/inner.err"));
my %r;
for (split /\n/, slurp("$T/inner.out")) {
    $r{$1} = $2 // '' if /^R (\S+) ?(.*)$/;
}
my $why = sub { diag(slurp("$T/root-t95/$_[0]")) };

is($r{dpkg}, 0, 'dpkg -i installs both packages') or $why->('dpkg.log');
like($r{group}, qr/^dstack:x:\d+:(.*,)?www-data(,|$)/,
     'postinst: the system group dstack, www-data in it');
unlike($r{api_user}, qr/\bdstack\b/, 'the API\'s user (nobody) is not in it');
is($r{'stat:/var/lib/dstack'}, 'root:root 755', '/var/lib/dstack');
is($r{'stat:/var/lib/dstack/state'}, 'root:dstack 750',
   'the state: root:dstack 0750');
is($r{'stat:/var/lib/dstack/replicas'}, 'root:root 755', 'replicas dir');
is($r{'stat:/run/dstack'}, 'root:root 755',
   'postinst: /run/dstack (tmpfiles.d) for nginx to reach the sockets');
is($r{modlink}, '/usr/share/nginx/modules-available/mod-http-dstack.conf',
   'postinst: the module enabled as Debian\'s modules are');
like($r{modconf}, qr{^load_module modules/ngx_http_dstack_module\.so;},
     'the module snippet');
is($r{site}, '../sites-available/dstack', 'postinst: the site enabled');
SKIP: {
    skip 'this host has no default nginx site', 1
        unless -e '/etc/nginx/sites-enabled/default';
    ok($r{default}, 'the default site is still enabled');
}
like($r{enabled}, qr{/dstack-controld\.service$},
     'dh_installsystemd enabled the unit');
like($r{check}, qr/^0 .*configuration OK/,
     'dstack-controld -n on the installed configuration');
is($r{ctlhelp}, 0, 'the installed dstackctl --help');
like($r{manpage}, qr{/usr/share/man/man8/dstack-controld\.8\.gz$},
     'man finds dstack-controld(8)');
like($r{nginx_t}, qr/^0 .*syntax is ok/,
     'nginx -t with the module and the site, domain set');
my ($pf, $cpid) = split ' ', $r{pidfile} // '';
ok($pf && $pf eq $cpid, 'controld wrote its pid to -p FILE once ready');
like($r{notified}, qr/\bREADY=1\b/, 'sd_notify READY=1 (abstract socket)');
like($r{nginx}, qr/^0/, 'Debian\'s nginx starts from the installed config')
    or $why->('nginx.out');
like($r{lock}, qr/^dstack 6[67]0$/, 'lock.mdb: group dstack, writable');
like($r{workers}, qr/^www-data\s*$/, 'nginx\'s workers run as www-data');
like($r{gatewaykey}, qr/^root:\S+ 600$/,
     'the gateway\'s TLS key is not for the group');
is($r{api}, 200, 'the API through nginx at https://gateway.<domain>/api/, '
   . 'verified against the local CA');
like($r{api_plain}, qr/^403 .*"message":"the API is served over HTTPS only: use https:\/\/gateway\.\Q$DOMAIN\E\/api\//,
     'plain HTTP to gateway.<domain>/api/: 403, "use https"');
like($r{ctl_https}, qr/^0 .*NAME/,
     'the installed dstackctl against https://gateway.<domain> with the CA')
    or $why->('ps.out');
like($r{apply}, qr/^0/, 'the installed dstackctl deploys a service')
    or $why->('apply.out');
like($r{service}, qr/^200 .*hello from dstack/,
     'the service answers through the installed gateway')
    or $why->('controld.log');
is($r{noauth}, 401, 'without a token: 401');
SKIP: {
    skip 'this host has no default nginx site', 1
        unless -e '/etc/nginx/sites-enabled/default';
    is($r{otherhost}, 200, 'another host name: the default site answers');
}
ok($r{reloaded} >= 1, 'SIGHUP (ExecReload) re-reads the configuration');
is($r{exit}, 0, 'SIGTERM: controld exits 0');
is($r{pidfile_gone}, 1, 'the pidfile is removed at exit');
like($r{notified_all}, qr/RELOADING=1,MONOTONIC_USEC=\d+ READY=1 .*STOPPING=1/,
     'sd_notify RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 at exit');
unlike(slurp("$T/nginx-error.log"), qr/\[(alert|emerg|crit)\]/,
       'no alert in nginx\'s error log');

if (Test::More->builder->is_passing) {
    system('rm', '-rf', $T);
} else {
    diag("kept $T");
}
done_testing();
