"""Functions of BenchmarkTransfer: step 1 makes N bytes of data, step 2
hashes them. Each step records time.time_ns() (one clock on the machine):
the transfer runs from step 1's last moment with the data to step 2's
first moment with it."""

import hashlib
import http.client
import os
import time
import urllib.parse

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


# The S3 way's bucket (http://HOST:PORT/BUCKET, anonymous access) and one
# kept-alive connection to it per instance, as an S3 client library keeps.
_s3 = None


def _s3_request(method, key, body=None):
    global _s3
    url = urllib.parse.urlsplit(os.environ["XFER_S3_BUCKET"])
    path = url.path + "/" + key
    for attempt in (1, 2):
        if _s3 is None:
            _s3 = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
        try:
            _s3.request(method, path, body=body)
            resp = _s3.getresponse()
            got = resp.read()
        except (ConnectionError, http.client.HTTPException):
            # The server closed the kept-alive connection: once more on a
            # new one.
            _s3.close()
            _s3 = None
            if attempt == 2:
                raise
            continue
        if resp.status // 100 != 2:
            raise RuntimeError("S3 %s %s: %d %s: %.300r" % (method, path, resp.status, resp.reason, got))
        return got


def s3_put(event, context):
    """PUTs the data to the S3 server's bucket."""
    data = _make(int(event["n"]))
    key = "xfer/" + context.aws_request_id
    t1 = time.time_ns()
    _s3_request("PUT", key, data.encode())
    return {"t1": t1, "key": key}


def s3_get(event, context):
    """GETs the data back from the S3 server, then hashes it."""
    data = _s3_request("GET", event["key"]).decode()
    t2 = time.time_ns()
    out = {"transfer_ns": t2 - event["t1"], "sha256": hashlib.sha256(data.encode()).hexdigest(), "len": len(data)}
    _s3_request("DELETE", event["key"])
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
