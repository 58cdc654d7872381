"""Functions of BenchmarkTransferInvoke: caller makes N bytes and sends
them to consume, through baton.invoke or through the HTTP invoke route
(urllib); consume hashes them. Times are time.time_ns() (one clock on the
machine): transfer runs from the caller's last moment before the call to
consume's entry (the payload's JSON encoding included), call from then
until the result is back."""

import hashlib
import json
import time
import urllib.request

from baton import invoke

# The data of each size, made once per instance: making it is not part of
# the transfer.
_data = {}


def _make(n):
    d = _data.get(n)
    if d is None:
        d = ("0123456789abcdef" * (n // 16 + 1))[:n]
        _data[n] = d
    return d


def caller(event, context):
    data = _make(int(event["n"]))
    target = event["target"]
    if event.get("via") == "http":
        # What a function does without baton.invoke: the HTTP API, with
        # its token, the bytes through the controller. Both ways encode
        # the payload as JSON inside the timed part.
        t1 = time.time_ns()
        body = json.dumps({"t1": t1, "data": data}, allow_nan=False, separators=(",", ":")).encode("utf-8")
        req = urllib.request.Request(event["url"] + "/v1/functions/" + target + "/invoke", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + event["token"]})
        with urllib.request.urlopen(req, timeout=120) as resp:
            out = json.loads(resp.read())
    else:
        t1 = time.time_ns()
        out = invoke(target, {"t1": t1, "data": data})
    out["call_ns"] = time.time_ns() - t1
    return out


def consume(event, context):
    t2 = time.time_ns()
    data = event["data"]
    return {"transfer_ns": t2 - event["t1"], "sha256": hashlib.sha256(data.encode()).hexdigest(), "len": len(data)}
