"""Baton synthetic function (Python): each event chooses what it does.

The Go package internal/bench/synthetic documents the event (Behavior) and the
reply (Reply); this file and the Node and Go implementations run the same
steps in the same order. Standard library only.
"""

import http.client
import json
import mmap
import sys
import time
import urllib.parse

try:
    import resource
except ImportError:  # not on every platform; peak RSS is then unknown
    resource = None

RUNTIME = "python3"
PAGE_SIZE = 4096

# Kept-alive connections to the Baton API by (scheme, host:port), so chain
# calls do not pay for a new connection each time.
_conns = {}


class ChainError(Exception):
    """A downstream call of the chain failed."""


def handler(event, context):
    start = time.perf_counter()
    cpu0 = time.process_time()
    ev = event if isinstance(event, dict) else {}

    touch_mb = int(ev.get("touchMB") or 0)
    if touch_mb > 0:
        _touch(touch_mb)
    busy_ms = float(ev.get("busyMs") or 0)
    if busy_ms > 0:
        _busy(busy_ms)
    sleep_ms = float(ev.get("sleepMs") or 0)
    if sleep_ms > 0:
        # time.sleep waits at least this long on the monotonic clock.
        time.sleep(sleep_ms / 1000.0)

    hops = None
    call_ms = 0.0
    chain = ev.get("chain") or []
    if chain:
        hops, call_ms = _call_next(ev, chain, context)

    reply = {"runtime": RUNTIME}
    size = int(ev.get("responseBytes") or 0)
    if size > 0:
        reply["body"] = "x" * size
    rss = _max_rss_mb()
    if rss:
        reply["maxRssMB"] = rss
    reply["cpuMs"] = (time.process_time() - cpu0) * 1000.0
    exec_ms = (time.perf_counter() - start) * 1000.0
    reply["execMs"] = exec_ms
    if hops is not None:
        hops[0] = {"function": context.function_name, "execMs": exec_ms, "callMs": call_ms, "cold": False}
        reply["hops"] = hops
    return reply


def _touch(mb):
    # A fresh anonymous mapping: every page written is one the kernel must
    # back, and closing it frees the memory at once.
    size = mb << 20
    buf = mmap.mmap(-1, size)
    try:
        for off in range(0, size, PAGE_SIZE):
            buf[off] = 1
    finally:
        buf.close()


def _busy(ms):
    end = time.perf_counter() + ms / 1000.0
    while time.perf_counter() < end:
        pass


def _max_rss_mb():
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes, Linux KiB.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024.0


def _call_next(ev, chain, context):
    """Invokes chain[0] with the rest of the chain; returns the hops (the
    first left for the caller to fill in) and the time spent waiting."""
    target = chain[0]
    server = ev.get("server")
    if not server:
        raise ChainError("chain call to %s: the event has no server URL" % target)
    nxt = dict(ev)
    if len(chain) > 1:
        nxt["chain"] = chain[1:]
    else:
        nxt.pop("chain", None)
    payload = json.dumps(nxt).encode("utf-8")
    # Never outlive this invocation's own deadline.
    timeout = max(0.001, context.get_remaining_time_in_millis() / 1000.0)

    start = time.perf_counter()
    status, cold, data = _post(server, target, payload, timeout)
    call_ms = (time.perf_counter() - start) * 1000.0

    if status >= 300:
        raise ChainError("chain call to %s failed: %s" % (target, _error_text(status, data)))
    try:
        down = json.loads(data)
        down_hops = down.get("hops") or [{"execMs": down["execMs"], "callMs": 0.0}]
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        raise ChainError("chain call to %s: the reply is not a synthetic function's: %s" % (target, e)) from None
    first = dict(down_hops[0])
    first["function"] = target
    first["cold"] = cold
    return [None, first] + list(down_hops[1:]), call_ms


def _error_text(status, data):
    # Same shape as the Go client's errors: message (HTTP status code).
    try:
        body = json.loads(data)
        message, code = body.get("message") or "", body.get("code") or ""
    except (ValueError, AttributeError):
        message, code = data[:500].decode("utf-8", "replace").strip(), ""
    if message:
        return "%s (HTTP %d %s)" % (message, status, code) if code else "%s (HTTP %d)" % (message, status)
    return "HTTP %d" % status


def _post(server, target, payload, timeout):
    u = urllib.parse.urlsplit(server)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise ChainError("chain call to %s: server URL %r must look like http://host:port" % (target, server))
    path = u.path.rstrip("/") + "/v1/functions/" + urllib.parse.quote(target, safe="") + "/invoke"
    key = (u.scheme, u.netloc)
    headers = {"Content-Type": "application/json"}
    for attempt in (0, 1):
        conn = _conns.pop(key, None)
        reused = conn is not None
        if conn is None:
            cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
            conn = cls(u.netloc, timeout=timeout)
        else:
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
        try:
            conn.request("POST", path, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            conn.close()
            # The server closes idle kept-alive connections; such a
            # connection fails before the request is read, so one retry on
            # a fresh connection cannot invoke twice.
            if reused and attempt == 0:
                continue
            raise ChainError("chain call to %s: %s: %s" % (target, type(e).__name__, e)) from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise ChainError("chain call to %s: %s: %s" % (target, type(e).__name__, e)) from None
        if resp.will_close:
            conn.close()
        else:
            _conns[key] = conn
        return resp.status, resp.getheader("Baton-Cold-Start") == "true", data
    raise AssertionError("unreachable")
