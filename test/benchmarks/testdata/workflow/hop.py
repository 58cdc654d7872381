"""No-op functions for BenchmarkWorkflowHop. Each records time.time_ns()
(one clock on the machine) at its entry or exit, so that the hop, from the
end of step 1 to the start of step 2, is measured where it happens."""

import http.client
import json
import time
import urllib.request

# The instance's invocations so far: 0 in a fresh instance (each one is
# forked from the grain worker, where it is 0), so step 2 can say whether
# it ran cold.
_calls = 0

# kept-alive connections to the API, per address, for the caller's
# "keepalive" mode.
_conns = {}


def first(event, context):
    """Step 1: only its end time."""
    return {"t1_end": time.time_ns()}


def second(event, context):
    """Step 2: its start time against step 1's end."""
    global _calls
    t2_start = time.time_ns()
    cold = _calls == 0
    _calls += 1
    out = {"t2_start": t2_start, "cold": cold}
    if isinstance(event, dict) and "t1_end" in event:
        out["t1_end"] = event["t1_end"]
        out["hop_ns"] = t2_start - event["t1_end"]
    return out


def caller(event, context):
    """Step 1 calling step 2 itself through Baton's HTTP API (POST
    /v1/functions/NAME/invoke at event["api"]): with urllib, a new
    connection per call as a function typically makes it, or with
    event["keepalive"] over a connection kept from the previous call."""
    path = "/v1/functions/%s/invoke" % event["next"]
    headers = {"Content-Type": "application/json"}
    if event.get("keepalive"):
        conn = _conns.get(event["api"])
        if conn is None:
            host = event["api"].split("://", 1)[1]
            conn = _conns[event["api"]] = http.client.HTTPConnection(host, timeout=60)
        t1_end = time.time_ns()
        try:
            conn.request("POST", path, json.dumps({"t1_end": t1_end}).encode(), headers)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            del _conns[event["api"]]
            raise
        if resp.status != 200:
            raise RuntimeError("invoke %s: HTTP %d: %s" % (event["next"], resp.status, body[:200]))
        return json.loads(body)
    t1_end = time.time_ns()
    req = urllib.request.Request(event["api"] + path, data=json.dumps({"t1_end": t1_end}).encode(),
                                 headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())
