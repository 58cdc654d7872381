"""The floor of BenchmarkWorkflowHop: plain loopback HTTP/1.1 between two
Python processes, with no platform in between.

    python3 floor.py second           serves step 2
    python3 floor.py first PORT       serves step 1, which POSTs to step 2
                                      at 127.0.0.1:PORT over a kept-alive
                                      connection

Each prints its port on its first line and serves one connection at a
time. HTTP is spoken over plain sockets, as Baton's runtime client speaks
it (http.server's parsing alone costs about as much as the hop), so this
is the least a hop between two Python processes over HTTP costs. Step 1
records time.time_ns() just before it sends, step 2 once it has read and
decoded the request (where a Lambda handler is entered)."""

import json
import socket
import sys
import time


def read_request(rfile):
    """The body of the next request or response on rfile; None at EOF."""
    line = rfile.readline()
    if not line:
        return None
    length = 0
    while True:
        h = rfile.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return rfile.read(length)


def message(first_line, body):
    return b"%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (first_line, len(body), body)


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")


def main():
    next_port = int(sys.argv[2]) if sys.argv[1] == "first" else None
    nxt = None
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    print(srv.getsockname()[1], flush=True)
    while True:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = conn.makefile("rb")
        while True:
            body = read_request(rfile)
            if body is None:
                break
            event = json.loads(body or b"{}")
            if next_port is None:
                t2_start = time.time_ns()
                out = {"t2_start": t2_start, "t1_end": event["t1_end"], "hop_ns": t2_start - event["t1_end"]}
            else:
                if nxt is None:
                    nxt = connect(next_port)
                t1_end = time.time_ns()
                nxt[0].sendall(message(b"POST / HTTP/1.1\r\nHost: step2", json.dumps({"t1_end": t1_end}).encode()))
                out = json.loads(read_request(nxt[1]))
            conn.sendall(message(b"HTTP/1.1 200 OK", json.dumps(out).encode()))
        rfile.close()
        conn.close()


if __name__ == "__main__":
    main()
