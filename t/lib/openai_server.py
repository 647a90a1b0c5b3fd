#!/usr/bin/env python3
"""An OpenAI-compatible model server for the tests, standard library only.

    openai_server.py --name NAME [--port 0] [--host 127.0.0.1] [--prefix /v1]
                     [--model ID ...] [--log FILE]

Prints "ready PORT" on stdout once it listens (--port 0 picks a free port).
It stands in for a replica of a model service (vLLM, TGI's Messages API,
...): it answers the OpenAI API under --prefix and records every request.

Endpoints (PREFIX = --prefix):
  POST PREFIX/chat/completions  non-stream: a chat.completion whose content
        names this server ("Hello from NAME ..."), the request's model
        echoed, usage {prompt_tokens, completion_tokens, total_tokens}.
        "stream": true: text/event-stream, HTTP/1.1 chunked, each event
        written and flushed on its own: a first chunk with the role, then
        N content chunks one every DELAY ms, a chunk with finish_reason
        "stop", a chunk with "choices": [] and usage when
        stream_options.include_usage, then "data: [DONE]".  Every chunk
        carries "x_sent_at" (unix seconds, float): when it was written.
  POST PREFIX/completions       the same for text_completion (stream too)
  POST PREFIX/embeddings        deterministic vectors: component k of the
        vector of text T is (b[k] - 128) / 128 where b is the bytes of
        SHA-256(T), then of SHA-256(T + "#1"), ... (exact in float32);
        "dimensions" (default 8); encoding_format "float" (default) or
        "base64" (little-endian float32, as the OpenAI SDK asks for)
  GET  PREFIX/models            {"object":"list","data":[...]} of --model
        (default: "NAME-model")
  GET  /__requests              every log entry so far (JSON array)
  GET  /__last                  the last "request" entry
  anything else                 404 in OpenAI's error shape (logged)

Per request:
  N      = "max_tokens" (or "max_completion_tokens") of the body, else 4
  DELAY  = the X-Test-Delay-Ms request header, else 200 (streams only)
  X-Test-Status: CODE answers CODE with an OpenAI-shaped error instead.
  X-Test-Header-Delay-Ms: MS waits MS before answering at all.
  X-Test-First-Ms: MS (streams) waits MS after the header, then writes
        the role chunk and the first content chunk together (as a model
        server does with its first token), the others DELAY apart.
  X-Test-Split-Events: N (streams) writes each event in pieces of N
        bytes, 5 ms apart, so that a proxy receives events cut anywhere.
  X-Test-Compact: 1 writes JSON without spaces (as vLLM does).
  X-Test-CRLF: 1 ends the lines of a stream with CRLF.
  X-Test-Ratelimit: 1 answers with x-ratelimit-limit-requests and
        x-ratelimit-remaining-requests of its own (as a metered API).

A prefix cache, to measure affinity routing (--prefix-cache, or the
X-Test-Prefix-Cache: 1 header per request): a completion's prefix is the
first --prefix-bytes (X-Test-Prefix-Bytes) bytes of its "messages" (or
"prompt") as compact JSON; a replica that has served the prefix before
waits --hit-ms (X-Test-Hit-Ms, default 10) before its answer's header, one
that has not waits --miss-ms (X-Test-Miss-Ms, default 100) and remembers
it.  --cache-entries K keeps only the K prefixes used last (a KV cache
is finite; 0, the default: all).  The answer says which in X-Test-Cache:
hit|miss (X-Replica names the replica, as always); GET /__cache gives
{"hits": H, "misses": M}.

The log (--log FILE: one JSON object a line; also kept in memory):
  {"event":"request","id":K,"replica":NAME,"method","path","headers":
   {lowercase name: value},"body_len","body": parsed JSON or null,"t"}
  {"event":"stream_end","id":K,"replica":NAME,"path","chunks": content
   chunks written,"complete": true|false,"reason": "done" or "client
   closed","t"}
A stream notices that its client went away between two chunks (the socket
becomes readable at EOF) or when a write fails, and logs complete: false.
"""

import argparse
import base64
import hashlib
import json
import select
import socket
import struct
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

NAME = "openai"
PREFIX = "/v1"
MODELS = []
LOG = None
LOG_LOCK = threading.Lock()
ENTRIES = []
COUNTER = [0]
CACHE = {"on": False, "bytes": 512, "hit_ms": 10, "miss_ms": 100,
         "entries": 0, "seen": OrderedDict(), "hits": 0, "misses": 0}


class ClientGone(Exception):
    pass


def log(entry):
    entry["replica"] = NAME
    entry["t"] = time.time()
    with LOG_LOCK:
        ENTRIES.append(entry)
        if LOG is not None:
            LOG.write(json.dumps(entry, sort_keys=True) + "\n")
            LOG.flush()


def next_id():
    with LOG_LOCK:
        COUNTER[0] += 1
        return COUNTER[0]


def words(text):
    return len(str(text).split())


def prompt_tokens_chat(body):
    n = 0
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, str):
            n += words(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    n += words(part["text"])
    return max(n, 1)


def prompt_tokens_text(p):
    if isinstance(p, str):
        return max(words(p), 1)
    if isinstance(p, list):
        return max(sum(prompt_tokens_text(x) if not isinstance(x, int) else 1
                       for x in p), 1)
    return 1


def embedding(text, dims):
    out = []
    k = 0
    while len(out) < dims:
        seed = text if k == 0 else "%s#%d" % (text, k)
        for b in hashlib.sha256(seed.encode("utf-8")).digest():
            out.append((b - 128) / 128.0)
        k += 1
    return out[:dims]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # the header and the body are two writes: without this, Nagle and the
    # client's delayed ACK hold the body back ~40 ms
    disable_nagle_algorithm = True
    server_version = "dstack-test-openai"
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

    def send_json(self, code, obj):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Replica", NAME)
        if getattr(self, "cache_status", None):
            self.send_header("X-Test-Cache", self.cache_status)
        if self.headers.get("X-Test-Ratelimit"):
            # as a metered API answers: its own x-ratelimit-* headers
            self.send_header("x-ratelimit-limit-requests", "99999")
            self.send_header("x-ratelimit-remaining-requests", "99998")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def error(self, code, message, etype="invalid_request_error",
              param=None, ecode=None):
        self.send_json(code, {"error": {"message": message, "type": etype,
                                        "param": param, "code": ecode}})

    # -- streaming -------------------------------------------------------

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Replica", NAME)
        if getattr(self, "cache_status", None):
            self.send_header("X-Test-Cache", self.cache_status)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data):
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            raise ClientGone()

    def event(self, obj):
        if isinstance(obj, dict):
            obj["x_sent_at"] = time.time()
            if self.headers.get("X-Test-Compact"):
                data = json.dumps(obj, separators=(",", ":"))
            else:
                data = json.dumps(obj)
        else:
            data = obj
        eol = "\r\n" if self.headers.get("X-Test-CRLF") else "\n"
        raw = ("data: %s%s%s" % (data, eol, eol)).encode()
        split = int(self.headers.get("X-Test-Split-Events") or 0)
        if split <= 0:
            self.write_chunk(raw)
            return
        for i in range(0, len(raw), split):
            if i:
                self.wait(0.005)
            self.write_chunk(raw[i:i + split])

    def wait(self, seconds):
        """Sleeps, unless the client closes the connection meanwhile."""
        deadline = time.time() + seconds
        while True:
            left = deadline - time.time()
            if left <= 0:
                return
            try:
                r, _, _ = select.select([self.connection], [], [], left)
            except (OSError, ValueError):
                raise ClientGone()
            if not r:
                return
            try:
                peek = self.connection.recv(1, socket.MSG_PEEK)
            except OSError:
                raise ClientGone()
            if peek == b"":
                raise ClientGone()
            # bytes of a next request before this answer ended: not
            # something a proxy sends; just wait the delay out
            time.sleep(max(0.0, deadline - time.time()))
            return

    def end_stream(self, rid, path, sent, complete):
        log({"event": "stream_end", "id": rid, "path": path,
             "chunks": sent, "complete": complete,
             "reason": "done" if complete else "client closed"})
        if not complete:
            self.close_connection = True

    def stream(self, rid, path, n, delay, make_chunk, finish, usage):
        self.start_stream()
        sent = 0
        first_ms = self.headers.get("X-Test-First-Ms")
        try:
            if first_ms:
                self.wait(int(first_ms) / 1000.0)
            first = make_chunk(None)
            if first is not None:
                self.event(first)
            for i in range(n):
                if i > 0 or not first_ms:
                    self.wait(delay)
                self.event(make_chunk(i))
                sent += 1
            self.event(finish())
            if usage is not None:
                self.event(usage)
            self.event("[DONE]")
            self.write_chunk(b"")           # the last chunk, "0\r\n\r\n"
        except ClientGone:
            self.end_stream(rid, path, sent, False)
            return
        self.end_stream(rid, path, sent, True)

    # -- dispatch --------------------------------------------------------

    def handle_any(self):
        url = urlsplit(self.path)
        path = url.path

        self.cache_status = None

        if path == "/__cache" and self.command == "GET":
            with LOG_LOCK:
                counts = {"hits": CACHE["hits"], "misses": CACHE["misses"]}
            return self.send_json(200, counts)

        if path in ("/__requests", "/__last") and self.command == "GET":
            with LOG_LOCK:
                entries = list(ENTRIES)
            if path == "/__last":
                reqs = [e for e in entries if e["event"] == "request"]
                return self.send_json(200, reqs[-1] if reqs else None)
            return self.send_json(200, entries)

        try:
            raw = self.read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            return self.error(400, "bad request body framing")

        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None

        rid = next_id()
        log({"event": "request", "id": rid, "method": self.command,
             "path": self.path, "headers": self.header_map(),
             "body_len": len(raw),
             "body": body if len(raw) <= 65536 else None})

        # time to the answer's header, for the gateway's ttfb metric
        wait_ms = self.headers.get("X-Test-Header-Delay-Ms")
        if wait_ms:
            time.sleep(int(wait_ms) / 1000.0)

        forced = self.headers.get("X-Test-Status")
        if forced:
            code = int(forced)
            return self.error(code, "forced status %d by %s" % (code, NAME),
                              etype="server_error" if code >= 500
                              else "invalid_request_error")

        if self.command == "GET" and path == PREFIX + "/models":
            return self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": NAME}
                for m in MODELS]})

        if self.command != "POST" or path not in (
                PREFIX + "/chat/completions", PREFIX + "/completions",
                PREFIX + "/embeddings"):
            return self.error(404, "%s: no route for %s %s"
                              % (NAME, self.command, path),
                              ecode="unknown_url")

        if not isinstance(body, dict):
            return self.error(400, "%s: the body is not a JSON object" % NAME)
        model = body.get("model")
        if not isinstance(model, str):
            return self.error(400, "%s: model is missing" % NAME,
                              param="model")

        if not path.endswith("/embeddings"):
            self.prefix_cache(body)

        if path.endswith("/chat/completions"):
            return self.chat(rid, path, body, model)
        if path.endswith("/embeddings"):
            return self.embeddings(body, model)
        return self.completions(rid, path, body, model)

    def prefix_cache(self, body):
        h = self.headers
        if not (CACHE["on"] or h.get("X-Test-Prefix-Cache") == "1"):
            return
        n = int(h.get("X-Test-Prefix-Bytes") or CACHE["bytes"])
        hit_ms = int(h.get("X-Test-Hit-Ms") or CACHE["hit_ms"])
        miss_ms = int(h.get("X-Test-Miss-Ms") or CACHE["miss_ms"])
        text = body.get("messages", body.get("prompt"))
        key = json.dumps(text, separators=(",", ":"))[:n]
        with LOG_LOCK:
            seen = CACHE["seen"]
            hit = key in seen
            seen[key] = True
            seen.move_to_end(key)
            if CACHE["entries"] and len(seen) > CACHE["entries"]:
                seen.popitem(last=False)
            CACHE["hits" if hit else "misses"] += 1
        self.cache_status = "hit" if hit else "miss"
        time.sleep((hit_ms if hit else miss_ms) / 1000.0)

    def params(self, body):
        n = body.get("max_tokens", body.get("max_completion_tokens", 4))
        if not isinstance(n, int) or n < 0:
            n = 4
        try:
            delay = int(self.headers.get("X-Test-Delay-Ms", "200")) / 1000.0
        except ValueError:
            delay = 0.2
        include_usage = bool((body.get("stream_options") or {})
                             .get("include_usage"))
        return n, delay, include_usage

    def chat(self, rid, path, body, model):
        n, delay, include_usage = self.params(body)
        cid = "chatcmpl-%s-%d" % (NAME, rid)
        created = int(time.time())
        ptok = prompt_tokens_chat(body)
        usage = {"prompt_tokens": ptok, "completion_tokens": n,
                 "total_tokens": ptok + n}
        tokens = ["Hello from %s" % NAME] + [" t%d" % i
                                             for i in range(1, n)]

        if not body.get("stream"):
            return self.send_json(200, {
                "id": cid, "object": "chat.completion", "created": created,
                "model": model, "system_fingerprint": None,
                "choices": [{"index": 0, "message": {
                    "role": "assistant",
                    "content": "".join(tokens[:n]) if n else
                               "Hello from %s" % NAME},
                    "logprobs": None, "finish_reason": "length"}],
                "usage": usage})

        def base(choices):
            c = {"id": cid, "object": "chat.completion.chunk",
                 "created": created, "model": model,
                 "system_fingerprint": None, "choices": choices}
            if include_usage:
                c["usage"] = None
            return c

        def make_chunk(i):
            if i is None:
                return base([{"index": 0, "delta": {"role": "assistant",
                                                    "content": ""},
                              "logprobs": None, "finish_reason": None}])
            return base([{"index": 0, "delta": {"content": tokens[i]},
                          "logprobs": None, "finish_reason": None}])

        def finish():
            return base([{"index": 0, "delta": {}, "logprobs": None,
                          "finish_reason": "length"}])

        last = None
        if include_usage:
            last = base([])
            last["usage"] = usage
        self.stream(rid, path, n, delay, make_chunk, finish, last)

    def completions(self, rid, path, body, model):
        n, delay, include_usage = self.params(body)
        cid = "cmpl-%s-%d" % (NAME, rid)
        created = int(time.time())
        ptok = prompt_tokens_text(body.get("prompt", ""))
        usage = {"prompt_tokens": ptok, "completion_tokens": n,
                 "total_tokens": ptok + n}
        tokens = ["Hello from %s" % NAME] + [" t%d" % i
                                             for i in range(1, n)]

        def base(choices):
            return {"id": cid, "object": "text_completion",
                    "created": created, "model": model, "choices": choices}

        if not body.get("stream"):
            c = base([{"text": "".join(tokens[:n]) if n
                       else "Hello from %s" % NAME, "index": 0,
                       "logprobs": None, "finish_reason": "length"}])
            c["usage"] = usage
            return self.send_json(200, c)

        def make_chunk(i):
            if i is None:
                return None
            return base([{"text": tokens[i], "index": 0, "logprobs": None,
                          "finish_reason": None}])

        def finish():
            return base([{"text": "", "index": 0, "logprobs": None,
                          "finish_reason": "length"}])

        last = None
        if include_usage:
            last = base([])
            last["usage"] = usage
        self.stream(rid, path, n, delay, make_chunk, finish, last)

    def embeddings(self, body, model):
        inp = body.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, int)
                                                   for x in inp):
            texts = [json.dumps(inp)]
        elif isinstance(inp, list) and inp:
            texts = [x if isinstance(x, str) else json.dumps(x) for x in inp]
        else:
            return self.error(400, "%s: input is missing" % NAME,
                              param="input")
        dims = body.get("dimensions", 8)
        if not isinstance(dims, int) or dims < 1 or dims > 4096:
            return self.error(400, "%s: bad dimensions" % NAME,
                              param="dimensions")
        fmt = body.get("encoding_format") or "float"
        data = []
        for i, t in enumerate(texts):
            v = embedding(t, dims)
            if fmt == "base64":
                v = base64.b64encode(struct.pack("<%df" % dims, *v)).decode()
            data.append({"object": "embedding", "index": i, "embedding": v})
        ptok = sum(max(words(t), 1) for t in texts)
        return self.send_json(200, {
            "object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": ptok, "total_tokens": ptok}})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = \
        do_HEAD = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    global NAME, PREFIX, MODELS, LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", default="openai")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--prefix", default="/v1")
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument("--log")
    ap.add_argument("--prefix-cache", action="store_true")
    ap.add_argument("--prefix-bytes", type=int, default=512)
    ap.add_argument("--hit-ms", type=int, default=10)
    ap.add_argument("--miss-ms", type=int, default=100)
    ap.add_argument("--cache-entries", type=int, default=0)
    a = ap.parse_args()
    CACHE.update({"on": a.prefix_cache, "bytes": a.prefix_bytes,
                  "hit_ms": a.hit_ms, "miss_ms": a.miss_ms,
                  "entries": a.cache_entries})
    NAME = a.name
    PREFIX = a.prefix.rstrip("/")
    MODELS = a.model or ["%s-model" % a.name]
    if a.log:
        LOG = open(a.log, "a")
    srv = Server((a.host, a.port), Handler)
    sys.stdout.write("ready %d\n" % srv.server_address[1])
    sys.stdout.flush()
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
