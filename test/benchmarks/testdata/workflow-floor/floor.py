"""The floor of BenchmarkWorkflowHop: plain loopback HTTP between two
Python processes, with no platform in between.

    python3 floor.py second           serves step 2
    python3 floor.py first PORT       serves step 1, which POSTs to step 2
                                      at 127.0.0.1:PORT over a kept-alive
                                      connection

Each prints its port on its first line. Step 1 records time.time_ns() just
before it sends, step 2 once it has read and decoded the request (where a
Lambda handler is entered), so the hop is measured as the functions'."""

import http.client
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep connections alive
    disable_nagle_algorithm = True
    next_port = None
    conn = None

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = json.loads(body or b"{}")
        if self.next_port is None:
            t2_start = time.time_ns()
            out = {"t2_start": t2_start, "t1_end": event["t1_end"], "hop_ns": t2_start - event["t1_end"]}
        else:
            if Handler.conn is None:
                Handler.conn = http.client.HTTPConnection("127.0.0.1", self.next_port, timeout=60)
            t1_end = time.time_ns()
            Handler.conn.request("POST", "/", json.dumps({"t1_end": t1_end}).encode(),
                                 {"Content-Type": "application/json"})
            out = json.loads(Handler.conn.getresponse().read())
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    if sys.argv[1] == "first":
        Handler.next_port = int(sys.argv[2])
    srv = HTTPServer(("127.0.0.1", 0), Handler)
    print(srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
