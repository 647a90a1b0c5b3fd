"""A small service for the demo: answers every GET with a JSON greeting
naming the replica that served it.  Python's standard library only."""

import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "8000"))


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({
            "message": os.environ.get("GREETING", "hello"),
            "run": os.environ.get("DSTACK_RUN_NAME", ""),
            "replica": int(os.environ.get("DSTACK_REPLICA_NUM", "0")),
            "host": socket.gethostname(),
            "path": self.path,
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("%s %s" % (self.command, self.path), flush=True)


server = ThreadingHTTPServer(("0.0.0.0", PORT), Hello)
server.daemon_threads = True
print("listening on port %d" % PORT, flush=True)
server.serve_forever()
