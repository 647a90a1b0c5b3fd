"""
What bench/http2 and bench/conns share: a private directory, nginx
instances (plain or with the module), the shipped snippets made into
the two variants that bench/run compares (the module's location, and
the same proxy directives without the module), certificates, the state
seeded through dstack-seed, CPU pinning and a worker's memory.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(os.environ.get("DSTACK_BUILD") or
                        os.path.join(REPO, "build"))
NGINX = os.environ.get("DSTACK_NGINX") or "/usr/sbin/nginx"
PROXY_CONF = os.path.join(REPO, "conf/nginx/dstack-proxy.conf")
HTTP_CONF = os.path.join(REPO, "conf/nginx/dstack-http.conf")
DOMAIN = "bench.local"
TOKEN = "dst_bench_" + "t" * 32


class BenchError(Exception):
    pass


def read(path):
    with open(path) as f:
        return f.read()


def sh(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise BenchError("%s failed: %s" % (args[0], r.stderr.strip()))
    return r.stdout


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpus():
    """(the proxies' CPU, the others' CPUs): the proxy is the bottleneck"""
    c = sorted(os.sched_getaffinity(0))
    if len(c) < 2 or os.environ.get("BENCH_PIN") == "off":
        return set(c), set(c)
    return {c[0]}, set(c[1:])


def certs(d):
    """a CA (ca.crt) and a certificate for *.DOMAIN (gw.crt, gw.key)"""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    sh(["openssl", "req", "-x509"] + ec + ["-subj", "/CN=bench CA",
        "-days", "2", "-keyout", d + "/ca.key", "-out", d + "/ca.crt"])
    with open(d + "/gw.ext", "w") as f:
        f.write("subjectAltName=DNS:*.%s\nbasicConstraints=CA:FALSE\n"
                % DOMAIN)
    sh(["openssl", "req"] + ec + ["-subj", "/CN=gw", "-keyout",
        d + "/gw.key", "-out", d + "/gw.csr"])
    sh(["openssl", "x509", "-req", "-in", d + "/gw.csr", "-CA",
        d + "/ca.crt", "-CAkey", d + "/ca.key", "-CAcreateserial", "-days",
        "2", "-extfile", d + "/gw.ext", "-out", d + "/gw.crt"])


def seed(state, ops):
    os.makedirs(state, exist_ok=True)
    r = subprocess.run([BUILD + "/dstack-seed", state], input=json.dumps(ops),
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError("dstack-seed: " + r.stderr.strip())


def service(name, addr, auth=True):
    return [{"op": "service", "name": name, "auth": auth},
            {"op": "replicas", "service": name,
             "replicas": [{"addr": addr, "state": "ready", "version": 1}]}]


def strip_comments(text):
    return "\n".join(l for l in text.splitlines()
                     if l.strip() and not l.strip().startswith("#"))


# plain nginx's usual WebSocket map, for $dstack_connection (http level)
PLAIN_MAP = """
    map $http_upgrade $plain_connection {
        default upgrade;
        "" "";
    }
"""


def plain_location(upstream):
    """dstack-proxy.conf without the module (as bench/run's plain); the
    http block needs PLAIN_MAP"""
    out = []
    for line in strip_comments(read(PROXY_CONF)).splitlines():
        s = line.strip()
        if s.startswith("dstack_"):
            continue
        if s.startswith("proxy_pass "):
            s = "proxy_pass http://%s;" % upstream
        s = s.replace("$dstack_connection", "$plain_connection")
        s = s.replace("$dstack_authorization", "$http_authorization")
        if "$dstack_" in s:
            raise BenchError("dstack-proxy.conf uses a module variable "
                             "the plain variant cannot map: %s" % s)
        out.append("            " + s)
    return "\n".join(out)


def module_http(state, capacity="services=64 replicas=256"):
    """dstack-http.conf with this run's state path and capacity"""
    lines = []
    for line in read(HTTP_CONF).splitlines():
        s = line.strip()
        if s.startswith("dstack_state "):
            line = "dstack_state %s;" % state
        elif s.startswith("dstack_capacity "):
            line = "dstack_capacity %s;" % capacity
        lines.append("    " + line)
    return "\n".join(lines)


class Nginx:
    """one nginx in DIR/NAME, one worker unless told"""

    def __init__(self, root, name, module=False):
        self.dir = os.path.join(root, name)
        self.name = name
        self.module = module
        self.proc = None
        os.makedirs(self.dir + "/tmp", exist_ok=True)

    def start(self, http, ports, workers=1, connections=1024, nofile=0):
        d = self.dir
        load = ("load_module %s/ngx_http_dstack_module.so;\n" % BUILD
                if self.module else "")
        user = "user root root;\n" if os.geteuid() == 0 else ""
        rlimit = "worker_rlimit_nofile %d;\n" % nofile if nofile else ""
        conf = f"""{load}{user}{rlimit}worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log notice;
daemon off;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
{http}
}}
"""
        with open(d + "/nginx.conf", "w") as f:
            f.write(conf)
        self.proc = subprocess.Popen([NGINX, "-p", d, "-c", d + "/nginx.conf",
                                      "-e", d + "/error.log"],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise BenchError("nginx %s exited:\n%s" %
                                 (self.name, read(d + "/error.log")))
            if all(port_open(p) for p in ports) and self.workers():
                return
            time.sleep(0.05)
        raise BenchError("nginx %s did not start" % self.name)

    def workers(self):
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid,
                                                     self.proc.pid)) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def pin(self, cpuset):
        for w in self.workers():
            os.sched_setaffinity(w, cpuset)

    def alerts(self):
        text = read(self.dir + "/error.log")
        return [l for l in text.splitlines()
                if "[alert]" in l or "[crit]" in l or "[emerg]" in l]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def cpu_ns(n):
    """CPU time of nginx N's (first) worker so far, /proc/PID/schedstat"""
    with open("/proc/%d/schedstat" % n.workers()[0]) as f:
        return int(f.read().split()[0])


def memory_kb(pid):
    """(Rss, Pss) of a process in kB, from /proc/PID/smaps_rollup"""
    rss = pss = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


class Workdir:
    """a private temp directory, removed at the end unless BENCH_KEEP=1"""

    def __init__(self, name):
        self.path = tempfile.mkdtemp(prefix="dstack-bench-%s-" % name)
        self.nginxes = []
        self.name = name

    def nginx(self, name, module=False):
        n = Nginx(self.path, name, module)
        self.nginxes.append(n)
        return n

    def close(self):
        for n in self.nginxes:
            n.stop()
        if os.environ.get("BENCH_KEEP") == "1":
            print("bench/%s: kept %s" % (self.name, self.path),
                  file=sys.stderr)
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def median(xs):
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2.0) \
        if n else 0.0


def pct(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p / 100.0))] if s else 0.0


def write_json(name, data):
    """BUILD/bench/NAME.json, as bench/run writes results.json"""
    os.makedirs(BUILD + "/bench", exist_ok=True)
    with open("%s/bench/%s.json" % (BUILD, name), "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
