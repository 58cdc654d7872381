"""Functions of BenchmarkTransfer: step 1 makes N bytes of data, step 2
hashes them. Each step records time.time_ns() (one clock on the machine):
the transfer runs from step 1's last moment with the data to step 2's
first moment with it."""

import hashlib
import time

from baton import data as batondata

# The data of each size, made once per instance: making it is not part of
# the transfer.
_data = {}


def _make(n):
    d = _data.get(n)
    if d is None:
        d = ("0123456789abcdef" * (n // 16 + 1))[:n]
        _data[n] = d
    return d


def produce(event, context):
    """Returns the data: passed inline or by reference, as Baton does."""
    data = _make(int(event["n"]))
    return {"t1": time.time_ns(), "data": data}


def consume(event, context):
    """Hashes the data it was handed."""
    t2 = time.time_ns()
    data = event["data"]
    return {"transfer_ns": t2 - event["t1"], "sha256": hashlib.sha256(data.encode()).hexdigest(), "len": len(data)}


def put(event, context):
    """Puts the data in the global data layer (JetStream's object store)."""
    data = _make(int(event["n"]))
    key = "xfer/" + context.aws_request_id
    t1 = time.time_ns()
    batondata.put(key, data, scope="global")
    return {"t1": t1, "key": key}


def get(event, context):
    """Gets the data back from the global data layer, then hashes it."""
    data = batondata.get(event["key"], scope="global")
    t2 = time.time_ns()
    out = {"transfer_ns": t2 - event["t1"], "sha256": hashlib.sha256(data.encode()).hexdigest(), "len": len(data)}
    batondata.delete(event["key"], scope="global")
    return out


def json_floor(event, context):
    """What passing the data as a result and an event costs the Python
    runtime itself, whichever way Baton moves it: encoding step 1's result
    and decoding step 2's event, measured here on the same data."""
    import json

    out = {"t1": 0, "data": _make(int(event["n"]))}
    t0 = time.time_ns()
    body = json.dumps(out, allow_nan=False).encode("utf-8")
    json.loads(body)
    return {"transfer_ns": time.time_ns() - t0}
