# dstack-controld's agent on the hosts of SSH fleets (POSIX sh).
#
# controld uploads this file over SSH at every connection (backend_ssh.c)
# and runs it as `sh agent.sh COMMAND ARGS`; nothing else is installed on
# a host.  State lives in $DSTACK_HOST_DIR (default ~/.dstack/host):
#
#   r/TAG/run.sh    the replica's script (environment, directory, commands)
#   r/TAG/work/     its code and files
#   r/TAG/log       what it writes (controld follows it with tail -F)
#   r/TAG/pid       the process (its own session: pid = process group)
#   r/TAG/start     the pid's start time, so that a reused pid is no match
#   r/TAG/exit      its exit status once it ended
#   r/TAG/net       its network: namespace, interface, NAT rule
#
# A replica gets a network namespace of its own (a /30 from 10.213.0.0/16
# on a veth) and a port of the host forwarded to its port (DNAT), so that
# replicas of one service share a host without sharing a port.  That
# takes root: the user is root or may sudo without a password.
#
# Commands print "key value" lines; errors go to stderr with exit 2.

set -u
umask 077                       # run.sh holds the replica's environment
VERSION=1
D=${DSTACK_HOST_DIR:-$HOME/.dstack/host}
SUBNET=${DSTACK_HOST_SUBNET:-10.213}
mkdir -p "$D/r" || exit 2

if [ "$(id -u)" = 0 ]; then
    SUDO=
    ASUSER=
else
    SUDO="sudo -n"
    ASUSER="runuser -u $(id -un) --"
fi

die() {
    echo "$*" >&2
    exit 2
}

tag_ok() {
    case $1 in
    *[!a-z0-9-]* | '' | -*) die "bad tag \"$1\"" ;;
    esac
}

# ---- facts ---------------------------------------------------------------

facts() {
    echo "agent $VERSION"
    echo "hostname $(cat /proc/sys/kernel/hostname 2>/dev/null)"
    echo "machine $(uname -m)"
    echo "cpus $(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
    awk '/^MemTotal:/ { printf "memory_mb %d\n", $2 / 1024 }' /proc/meminfo
    df -Pm "$D" | awk 'NR == 2 { print "disk_mb", $2 }'
    echo "disk_path $D"
    gpus_nvidia
    gpus_amd
    engine
    isolation
}

gpus_nvidia() {
    smi=${DSTACK_NVIDIA_SMI:-nvidia-smi}
    command -v "$smi" >/dev/null 2>&1 || return 0
    "$smi" --query-gpu=index,name,memory.total \
        --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu nvidia /'
}

# rocm-smi --showproductname --showmeminfo vram --csv:
# device,...,Card series,...,VRAM Total Memory (B),...
gpus_amd() {
    smi=${DSTACK_ROCM_SMI:-rocm-smi}
    command -v "$smi" >/dev/null 2>&1 || return 0
    "$smi" --showproductname --showmeminfo vram --csv 2>/dev/null | awk -F, '
        NR == 1 { for (i = 1; i <= NF; i++) {
                      if ($i ~ /Card [Ss]eries/) n = i
                      if ($i ~ /VRAM Total Memory/) m = i } next }
        /^card/ { sub(/^card/, "", $1)
                  printf "gpu amd %d, %s, %d\n", $1, (n ? $n : "AMD GPU"),
                         (m ? $m / 1048576 : 0) }'
}

engine() {
    for s in ${DSTACK_ENGINE_SOCKET:-} /var/run/docker.sock \
             /run/podman/podman.sock; do
        if [ -S "$s" ]; then
            # Podman says so in /version (its socket may have any name)
            if curl -s --max-time 10 --unix-socket "$s" \
                   http://d/version 2>/dev/null | grep -qi podman; then
                echo "engine podman $s"
            else
                echo "engine docker $s"
            fi
            return 0
        fi
    done
}

isolation() {
    if [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; then
        echo "isolation host no password-less sudo"
    elif ! command -v ip >/dev/null 2>&1; then
        echo "isolation host no ip command (iproute2)"
    elif ! command -v iptables >/dev/null 2>&1; then
        echo "isolation host no iptables"
    else
        echo "isolation netns"
    fi
}

# ---- a replica's network -------------------------------------------------

# net_up TAG INDEX HOSTPORT PORT: namespace dsr-TAG, veth dsvINDEX, DNAT
# of the host port to the replica's; undone whole when anything fails
net_up() {
    ns=dsr-$1
    a=$(($2 / 64))
    b=$((($2 % 64) * 4))
    h=$SUBNET.$a.$((b + 1))
    c=$SUBNET.$a.$((b + 2))
    v=dsv$2
    # written first: a release racing this start finds what to undo
    printf '%s %s %s %s\n' "$ns" "$v" "$3" "$c:$4" > "$D/r/$1/net" || return 1
    net_undo "$ns" "$v" "$3" "$c:$4"
    nat_forget "$3"
    if $SUDO ip netns add "$ns" &&
       $SUDO ip link add "$v" type veth peer name eth0 netns "$ns" &&
       $SUDO ip addr add "$h/30" dev "$v" &&
       $SUDO ip link set "$v" up &&
       $SUDO ip netns exec "$ns" ip addr add "$c/30" dev eth0 &&
       $SUDO ip netns exec "$ns" ip link set eth0 up &&
       $SUDO ip netns exec "$ns" ip link set lo up &&
       $SUDO ip netns exec "$ns" ip route add default via "$h" &&
       $SUDO sysctl -qw net.ipv4.ip_forward=1 &&
       $SUDO iptables -t nat -A PREROUTING -p tcp --dport "$3" \
           -j DNAT --to-destination "$c:$4" &&
       $SUDO iptables -I FORWARD -d "$c" -p tcp --dport "$4" -j ACCEPT &&
       [ -d "$D/r/$1" ]                 # not released meanwhile
    then
        :
    else
        net_undo "$ns" "$v" "$3" "$c:$4"
        return 1
    fi
    if ! $SUDO iptables -t nat -C POSTROUTING -s "$SUBNET.0.0/16" \
            ! -d "$SUBNET.0.0/16" -j MASQUERADE 2>/dev/null; then
        $SUDO iptables -t nat -A POSTROUTING -s "$SUBNET.0.0/16" \
            ! -d "$SUBNET.0.0/16" -j MASQUERADE
    fi
    echo "address $c:$4"
}

# net_undo NETNS VETH HOSTPORT ADDR:PORT
net_undo() {
    $SUDO iptables -t nat -D PREROUTING -p tcp --dport "$3" \
        -j DNAT --to-destination "$4" 2>/dev/null
    $SUDO iptables -D FORWARD -d "${4%:*}" -p tcp --dport "${4##*:}" \
        -j ACCEPT 2>/dev/null
    $SUDO ip link del "$2" 2>/dev/null
    $SUDO ip netns del "$1" 2>/dev/null
    return 0
}

# nat_forget PORT: DNAT rules of the host port left by another start
nat_forget() {
    $SUDO iptables -t nat -S PREROUTING 2>/dev/null |
        grep -e "--dport $1 " | sed 's/^-A //' |
        while read -r rule; do
            # shellcheck disable=SC2086
            $SUDO iptables -t nat -D $rule 2>/dev/null
        done
}

net_down() {
    f=$D/r/$1/net
    [ -f "$f" ] || return 0
    read -r ns v hport to < "$f"
    net_undo "$ns" "$v" "$hport" "$to"
    rm -f "$f"
}

# ---- replicas ------------------------------------------------------------

# the start time of a process (/proc/PID/stat field 22), "" when gone
started() {
    [ -r "/proc/$1/stat" ] || return 0
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20
}

alive() {
    r=$D/r/$1
    [ -f "$r/pid" ] && [ -f "$r/start" ] || return 1
    p=$(cat "$r/pid")
    [ -n "$(started "$p")" ] && [ "$(started "$p")" = "$(cat "$r/start")" ]
}

# code TAG: the archive on stdin, unpacked into the replica's work dir
code() {
    tag_ok "$1"
    w=$D/r/$1/work
    mkdir -p "$w" && tar -xzf - -C "$w" --no-same-owner ||
        die "cannot unpack the code into $w"
}

# start TAG NET HOSTPORT PORT: the script on stdin; NET -1: host network
start() {
    tag_ok "$1"
    r=$D/r/$1
    mkdir -p "$r/work" && cat > "$r/run.sh" || die "cannot write $r/run.sh"
    rm -f "$r/exit" "$r/pid" "$r/start"
    ns=
    if [ "$2" -ge 0 ]; then
        net_up "$1" "$2" "$3" "$4" >/dev/null ||
            { net_down "$1"; die "cannot set up the network of $1"; }
        ns="ip netns exec dsr-$1"
        echo "address $(cut -d' ' -f4 "$r/net")"
    fi
    cd "$r/work" || die "no $r/work"
    # shellcheck disable=SC2086
    # the child writes its start time, then its pid (each whole: a
    # status never sees a pid without its start time)
    $SUDO $ns $ASUSER setsid sh -c \
        'cut -d" " -f22 /proc/$$/stat > "$1/start.new" &&
         mv "$1/start.new" "$1/start" &&
         echo $$ > "$1/pid.new" && mv "$1/pid.new" "$1/pid"
         sh "$1/run.sh" >> "$1/log" 2>&1
         echo $? > "$1/exit"' sh "$r" </dev/null >/dev/null 2>&1 &
    i=0
    while [ ! -s "$r/pid" ] && [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    [ -s "$r/pid" ] || die "the replica did not start"
    echo "pid $(cat "$r/pid")"
}

# status: one line per replica: TAG running PID | exited CODE | lost
status() {
    echo "agent $VERSION"
    for r in "$D"/r/*/; do
        [ -d "$r" ] || continue
        t=$(basename "$r")
        if alive "$t"; then
            echo "replica $t running $(cat "$r/pid")"
        elif [ ! -f "$r/pid" ] && [ ! -f "$r/exit" ]; then
            echo "replica $t starting"
        elif [ -f "$r/exit" ]; then
            echo "replica $t exited $(cat "$r/exit")"
        else
            echo "replica $t lost"
        fi
    done
}

# watch: status each second, each ending with "end", until the
# connection goes (a write to it fails)
watch() {
    while :; do
        status && echo end || exit 0
        sleep 1
    done
}

# stop TAG term|kill: the replica's process group
stop() {
    tag_ok "$1"
    alive "$1" || return 0
    sig=TERM
    [ "$2" = kill ] && sig=KILL
    $SUDO kill -s "$sig" -- "-$(cat "$D/r/$1/pid")" 2>/dev/null
    return 0
}

# release TAG: kills what is left, frees its network and files
release() {
    tag_ok "$1"
    [ -d "$D/r/$1" ] || return 0
    if alive "$1"; then
        $SUDO kill -s KILL -- "-$(cat "$D/r/$1/pid")" 2>/dev/null
    fi
    net_down "$1"
    $SUDO rm -rf "$D/r/$1"
}

# gc TAG...: releases every replica not named
gc() {
    for r in "$D"/r/*/; do
        [ -d "$r" ] || continue
        t=$(basename "$r")
        keep=0
        for k in "$@"; do
            [ "$k" = "$t" ] && keep=1
        done
        if [ $keep = 0 ]; then
            release "$t"
            echo "released $t"
        fi
    done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
facts)   facts ;;
code)    code "$@" ;;
start)   start "$@" ;;
status)  status ;;
watch)   watch ;;
stop)    stop "$@" ;;
release) release "$@" ;;
gc)      gc "$@" ;;
*)       die "usage: agent.sh facts|code|start|status|watch|stop|release|gc" ;;
esac
