package DsOpenAI;
# The gateway.<domain> server of the shipped configuration and the
# OpenAI-compatible test replicas (t/lib/openai_server.py), for the tests
# of the model endpoint.

use strict;
use warnings;
use IO::Select;
use POSIX ();
use Time::HiRes qw(time);
use DsTest;

# The shipped "location /v1/ { ... }" of gateway.<domain>, its include
# pointing into the repository, and its client_body_buffer_size in bytes.
sub shipped_location {
    my $f = "$DsTest::REPO/conf/nginx/dstack-api.conf";
    my $text = DsTest::_slurp($f);
    $text =~ /^([ \t]*location \/v1\/ \{.*?^[ \t]*\})/ms
        or die "$f: no \"location /v1/ { ... }\"\n";
    my $loc = $1;
    $loc =~ s{include\s+\S*/dstack-proxy\.conf;}
             {include $DsTest::REPO/conf/nginx/dstack-proxy.conf;}g;
    $loc =~ /dstack_openai\s+on;/
        or die "$f: location /v1/ lacks dstack_openai\n";
    my ($n, $u) = $loc =~ /client_body_buffer_size\s+(\d+)([kKmM]?);/
        or die "$f: location /v1/ has no client_body_buffer_size\n";
    $n *= { '' => 1, k => 1024, m => 1024 * 1024 }->{ lc $u };
    return ($loc, $n);
}

{
    # text computed when nginx.conf is written: the harness may pick new
    # ports when nginx cannot bind, and the gateway server must listen on
    # the port of the wildcard server (an exact server_name wins over
    # ".<domain>", as in the shipped configuration)
    package DsOpenAI::Lazy;
    use overload '""' => sub { $_[0]->() }, fallback => 1;
    sub new { my ($class, $code) = @_; return bless $code, $class }
}

# Adds the gateway server (and `http` text) to $t's nginx.conf; returns
# the body limit of the model endpoint.
sub add_gateway {
    my ($t, %o) = @_;
    my ($location, $max) = shipped_location();
    my $D = $t->domain;
    my $extra = $o{http} // '';
    $t->{opts}{http} = DsOpenAI::Lazy->new(sub {
        my $port = $t->port;
        return "    server {\n"
            . "        listen 127.0.0.1:$port;\n"
            . "        server_name gateway.$D;\n\n"
            . "        dstack_domain $D;\n\n"
            . "$location\n"
            . "    }\n$extra";
    });
    return $max;
}

# Starts t/lib/openai_server.py; returns "127.0.0.1:PORT".  It is one of
# the harness's backends, so finish() stops it and backend_requests(NAME)
# reads its log.
sub server {
    my ($t, %o) = @_;
    my $name = $o{name};
    my $dir = $t->dir;
    my @cmd = ($DsTest::PYTHON, "$DsTest::REPO/t/lib/openai_server.py",
        '--name', $name, '--port', 0, '--prefix', $o{prefix} // '/v1',
        '--log', "$dir/backend-$name.log", @{ $o{args} // [] });
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        open STDOUT, '>&', $w or POSIX::_exit(127);
        open STDERR, '>>', "$dir/backend-$name.stderr" or POSIX::_exit(127);
        exec @cmd or POSIX::_exit(127);
    }
    close $w;
    $t->{backends}{$name} = { name => $name, pid => $pid, out => $r };
    my ($line, $sel, $deadline) = ('', IO::Select->new($r), time + 20);
    while ($line !~ /\n/ && time < $deadline) {
        last unless $sel->can_read($deadline - time);
        sysread($r, $line, 256, length $line) or last;
    }
    die "openai_server $name did not start: "
        . DsTest::_slurp("$dir/backend-$name.stderr") . "\n"
        unless $line =~ /^ready (\d+)/;
    return "127.0.0.1:$1";
}

1;
