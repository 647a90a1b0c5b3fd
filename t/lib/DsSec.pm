package DsSec;

# Helpers for the security tests t/4*.t: tokens that cannot occur by
# chance, the shape of an issued token, and a search for secrets in the
# files a run leaves behind (logs, state).
#
#   use lib 't/lib';
#   use DsSec;
#   my $tok = DsSec::random_token();          # dst_ + 43 base64url chars
#   my ($hits, $excused) = DsSec::find_secrets({ admin => $tok }, \@files,
#       except => qr/client sent duplicate header line/);
#   is_deeply($hits, [], 'no token in any log');
#   my $r = DsSec::api($t, 'GET', '/api/runs', token => $admin);   # nginx
#   $r = DsSec::api($t, 'GET', '/api/runs', token => $admin,
#       via => $socket_path);                                      # socket
#
# Only core Perl modules.

use strict;
use warnings;

use File::Find ();
use IO::Socket::UNIX;
use JSON::PP;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);

use DsTest;

our $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

my $B64URL = join '', 'A' .. 'Z', 'a' .. 'z', '0' .. '9', '-', '_';

# A token in the issued format (32 random bytes, base64url without
# padding), from /dev/urandom.
sub random_token {
    open my $fh, '<:raw', '/dev/urandom' or die "/dev/urandom: $!";
    read($fh, my $raw, 32) == 32 or die "/dev/urandom: short read\n";
    close $fh;
    return 'dst_' . b64url($raw);
}

sub b64url {
    my $raw = shift;
    my $bits = unpack 'B*', $raw;
    $bits .= '0' x ((6 - length($bits) % 6) % 6);
    return join '', map { substr($B64URL, oct("0b$_"), 1) }
        $bits =~ /(.{6})/g;
}

# the bytes of a "dst_..." token, or undef when it is not one: "dst_" and
# 43 base64url characters that are the canonical encoding of 32 bytes
# (the last character carries 4 bits and two zero bits)
sub token_bytes {
    my $tok = shift // return undef;
    return undef unless $tok =~ /^dst_([A-Za-z0-9_-]{43})$/;
    my $s = $1;
    my $bits = join '', map { sprintf '%06b', index($B64URL, $_) }
        split //, $s;
    return undef unless substr($bits, 256) eq '00';
    return pack 'B256', substr($bits, 0, 256);
}

# Every regular file under the given paths (files or directories).
sub files_under {
    my @files;
    for my $p (@_) {
        next unless defined $p && -e $p;
        if (-d $p) {
            File::Find::find({ no_chdir => 1, wanted => sub {
                push @files, $File::Find::name if -f $File::Find::name;
            } }, $p);
        } else {
            push @files, $p;
        }
    }
    return sort @files;
}

# find_secrets(\%secrets, \@files, except => qr//) -> (\@hits, \@excused)
# Each hit is "FILE:LINE: secret NAME: <the line, cut>".  Lines matching
# `except` are counted apart (in @excused), so that a test can name what
# it knows about without hiding anything else.
sub find_secrets {
    my ($secrets, $files, %o) = @_;
    my (@hits, @excused);
    for my $f (@$files) {
        my $text = DsTest::_slurp($f);
        next unless length $text;
        for my $name (sort keys %$secrets) {
            my $s = $secrets->{$name};
            next unless defined $s && length $s;
            my $at = 0;
            while ((my $i = index($text, $s, $at)) >= 0) {
                $at = $i + length $s;
                my $ls = rindex($text, "\n", $i) + 1;
                my $le = index($text, "\n", $i);
                $le = length $text if $le < 0;
                my $line = substr($text, $ls, $le - $ls);
                my $no = 1 + (substr($text, 0, $ls) =~ tr/\n//);
                (my $cut = substr($line, 0, 300)) =~ s/[^\x20-\x7e]/?/g;
                my $hit = "$f:$no: secret $name: $cut";
                if ($o{except} && $line =~ $o{except}) {
                    push @excused, $hit;
                } else {
                    push @hits, $hit;
                }
            }
        }
    }
    return (\@hits, \@excused);
}

# api($t, METHOD, PATH, %o): controld's API through nginx
# (gateway.<domain>, the default) or on its unix socket (via => PATH).
#   token => T (Authorization: Bearer T), json => data, body => bytes,
#   headers => [ name => value, ... ], keep => 1 (the socket comes back
#   in {sock}), sock => a kept socket, timeout => s
# Returns DsTest's response hash.
sub api {
    my ($t, $method, $path, %o) = @_;
    my @h;
    push @h, Authorization => "Bearer $o{token}" if defined $o{token};
    push @h, @{ $o{headers} || [] };
    my $body = exists $o{json} ? $JSON->encode($o{json}) : $o{body};
    push @h, 'Content-Type' => 'application/json' if exists $o{json};
    my $via = $o{via} // 'nginx';
    if ($via eq 'nginx') {
        return $t->request($method, $path, host => 'gateway.' . $t->domain,
            headers => \@h, body => $body, keep => $o{keep},
            sock => $o{sock}, timeout => $o{timeout} // 30);
    }
    my $req = $t->build_request($method, $path, host => 'localhost',
        headers => \@h, body => $body, keep => $o{keep});
    my $sock = $o{sock} || IO::Socket::UNIX->new(Type => SOCK_STREAM,
        Peer => $via) or return { status => 0, error => "connect: $!" };
    my $res = eval {
        DsTest::_send_all($sock, $req, time + ($o{timeout} // 30));
        DsTest::_read_response($sock, timeout => $o{timeout} // 30,
            method => $method, t0 => time);
    };
    if (!$res) {
        (my $e = $@ || 'unknown') =~ s/\s+$//;
        close $sock;
        return { status => 0, error => $e };
    }
    if ($o{keep}) {
        $res->{sock} = $sock;
    } else {
        close $sock;
    }
    return $res;
}

1;
