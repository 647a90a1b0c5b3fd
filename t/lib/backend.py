#!/usr/bin/env python3
"""A replica for the tests: a threaded HTTP/1.1 server, standard library only.

    backend.py --name r1 --port P [--host 127.0.0.1] [--log FILE] [--fail-start]
               [--delay-ms MS] [--nodelay]

Prints "ready PORT" on stdout once it listens (--port 0 picks a free port,
which avoids races between tests that run in parallel).  --log appends one
JSON line per request (replica, method, path, headers, body_len), so a test
can tell which requests reached this replica.  --fail-start exits with
status 3 before listening: a replica that does not come up.  --delay-ms
makes every answer (WebSocket upgrades aside) wait MS milliseconds first:
a slow replica.  Answers and log lines also carry "local", the address the
request came in on (a backend on 0.0.0.0 answers on every 127.x.y.z).
--nodelay sets TCP_NODELAY on accepted connections: without it the header
and body writes of an answer meet Nagle and delayed ACKs (~40 ms each on
a reused connection), which caps a load test at ~25 requests/s a client.

Endpoints (query string in parentheses):
  any path          200 JSON {"replica","method","path","headers","body_len"}
  /slow (ms)        the same after sleeping ms milliseconds
  /sse (n, ms)      text/event-stream: n events 'data: {"i":k,"t":time}', one
                    every ms milliseconds, each flushed, then 'data: [DONE]'
  /chunked (n, ms)  n chunks "chunk k\\n", one every ms milliseconds
  /ws               WebSocket (RFC 6455): echoes text and binary messages
  /status (code)    that status, JSON body unless 1xx/204/304
  /echo             the request body as it came
  /drop             closes the connection without answering
Request bodies are read fully, with Content-Length or chunked.
"""

import argparse
import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

NAME = "backend"
DELAY_MS = 0
LOG = None
LOG_LOCK = threading.Lock()


def log_request(entry):
    if LOG is None:
        return
    line = json.dumps(entry, sort_keys=True) + "\n"
    with LOG_LOCK:
        LOG.write(line)
        LOG.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dstack-test-backend"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    # -- helpers ---------------------------------------------------------

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = bytearray()
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunk size")
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    # trailers up to the empty line
                    while True:
                        t = self.rfile.readline(65537)
                        if t in (b"\r\n", b"\n", b""):
                            break
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(3)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def header_map(self):
        h = {}
        for k, v in self.headers.items():
            k = k.lower()
            h[k] = h[k] + ", " + v if k in h else v
        return h

    def send(self, code, body, ctype="application/json", extra=None):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("X-Replica", NAME)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if code >= 200 and code not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        else:
            self.end_headers()
        self.wfile.flush()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    # -- dispatch --------------------------------------------------------

    def handle_any(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path

        if path == "/ws":
            return self.websocket()

        try:
            body = self.read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            return self.send(400, b'{"error":"bad body"}')

        info = {
            "replica": NAME,
            "method": self.command,
            "path": self.path,
            "headers": self.header_map(),
            "raw_headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "local": "%s:%d" % self.connection.getsockname()[:2],
        }
        log_request(info)

        if DELAY_MS > 0:
            time.sleep(DELAY_MS / 1000.0)

        if path == "/drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if path == "/slow":
            time.sleep(int(q.get("ms", "100")) / 1000.0)
        if path == "/status":
            code = int(q.get("code", "200"))
            return self.send(code, json.dumps(info).encode())
        if path == "/echo":
            return self.send(200, body, "application/octet-stream")
        if path == "/sse":
            return self.stream(int(q.get("n", "5")), int(q.get("ms", "100")),
                               sse=True)
        if path == "/chunked":
            return self.stream(int(q.get("n", "5")), int(q.get("ms", "100")),
                               sse=False)
        return self.send(200, json.dumps(info).encode())

    def stream(self, n, ms, sse):
        self.send_response(200)
        self.send_header("Content-Type",
                         "text/event-stream" if sse else "text/plain")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Replica", NAME)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for i in range(n):
            time.sleep(ms / 1000.0)
            if sse:
                ev = json.dumps({"i": i, "t": time.time()})
                self.chunk(("data: %s\n\n" % ev).encode())
            else:
                self.chunk(("chunk %d\n" % i).encode())
        if sse:
            self.chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- websocket -------------------------------------------------------

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key")
        upgrade = self.headers.get("Upgrade", "").lower()
        log_request({"replica": NAME, "method": self.command,
                     "path": self.path, "headers": self.header_map(),
                     "body_len": 0})
        if upgrade != "websocket" or not key:
            self.close_connection = True
            return self.send(400, b'{"error":"not a websocket upgrade"}')
        accept = base64.b64encode(
            hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("X-Replica", NAME)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        try:
            while True:
                frame = self.ws_read()
                if frame is None:
                    return
                opcode, payload = frame
                if opcode in (1, 2):
                    self.ws_send(opcode, payload)
                elif opcode == 9:
                    self.ws_send(10, payload)
                elif opcode == 8:
                    self.ws_send(8, payload[:2])
                    return
        except (ConnectionError, OSError):
            return

    def ws_read(self):
        head = self.rfile.read(2)
        if len(head) < 2:
            return None
        b0, b1 = head
        opcode = b0 & 0x0F
        masked = b1 & 0x80
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self.rfile.read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.rfile.read(8))[0]
        mask = self.rfile.read(4) if masked else b"\0\0\0\0"
        data = bytearray(self.rfile.read(n))
        if len(data) < n:
            return None
        for i in range(n):
            data[i] ^= mask[i % 4]
        return opcode, bytes(data)

    def ws_send(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        self.wfile.write(head + payload)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = \
        do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main():
    global NAME, LOG, DELAY_MS
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="backend")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--log")
    ap.add_argument("--fail-start", action="store_true")
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--nodelay", action="store_true")
    a = ap.parse_args()
    if a.nodelay:
        Handler.disable_nagle_algorithm = True
    NAME = a.name
    DELAY_MS = a.delay_ms
    if a.fail_start:
        print("failing on purpose (--fail-start)", file=sys.stderr)
        sys.exit(3)
    if a.log:
        LOG = open(a.log, "a", encoding="utf-8")
    if ":" in a.host:
        Server.address_family = socket.AF_INET6
    srv = Server((a.host, a.port), Handler)
    print("ready %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
