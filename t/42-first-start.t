#!/usr/bin/perl
# controld's first start makes the first admin token.  It goes to the
# client configuration (mode 0600) in every case; it is shown on stdout
# only when stdout is a terminal (a person started controld by hand).
# Under a service manager stdout is a log, and a token never goes to a
# log: t/41 checks that case, with stdout a file.  Here stdout is a
# pseudo-terminal (script(1)).

use strict;
use warnings;
use lib 't/lib';
use DsTest;
use DsStack;
use Test::More;
use Time::HiRes qw(sleep);

plan skip_all => 'build/dstack-controld not built'
    unless -x DsStack::controld_path();
plan skip_all => 'script(1) (package bsdutils) not installed'
    unless grep { -x "$_/script" } split /:/, $ENV{PATH};

my $t = DsTest->new(seed_empty => 0);
my $s = DsStack->new($t);
$s->start_controld(tty => 1);

my $token = $s->admin_token;
like($token, qr/^dst_[A-Za-z0-9_-]{43}$/,
    'the client configuration holds the admin token');
is((stat $s->client_config)[2] & 07777, 0600, 'mode 0600');

my $out;
DsTest::wait_until(sub {
    $out = $s->stdout_text;
    return $out =~ /client configuration:/;
}, timeout => 10);
like($out, qr/created the admin token "admin"; it is shown once:\s+\Q$token\E\s/,
    'on a terminal, the first start shows the token once');
unlike($s->log_text, qr/\Q$token\E/, 'and its log does not have it');

# a second start finds an admin token: nothing to show
$s->stop_controld;
$s->start_controld(tty => 1, keep_conf => 1);
sleep 0.5;
my $again = $s->stdout_text;
is(() = $again =~ /\Q$token\E/g, 1, 'a second start shows it no more');

$s->finish;
$t->done;
