# Runs a list of data layer operations and describes their results: through
# `from baton import data` (put, get, delete) and through plain HTTP on the
# instance's Runtime API with urllib (httpget, httpput, httpdelete), as a
# function of any runtime would.
import base64
import hashlib
import json
import os
import urllib.error
import urllib.request

from baton import data


def pattern(n):
    """n bytes the test can hash on its side: byte i is i % 251."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def value_of(op):
    kind = op.get("kind", "json")
    if kind == "bytes":
        return pattern(op["size"]) if "size" in op else base64.b64decode(op["b64"])
    if kind == "str":
        return "s" * op["size"] if "size" in op else op["value"]
    return op["value"]


def describe(v):
    if v is None:
        return {"kind": "none"}
    if isinstance(v, bytes):
        d = {"kind": "bytes", "len": len(v), "sha256": hashlib.sha256(v).hexdigest()}
        if len(v) <= 64:
            d["b64"] = base64.b64encode(v).decode()
        return d
    if isinstance(v, str):
        b = v.encode("utf-8")
        d = {"kind": "str", "len": len(b), "sha256": hashlib.sha256(b).hexdigest()}
        if len(b) <= 200:
            d["value"] = v
        return d
    return {"kind": "json", "value": v}


def http(method, op, body=None):
    url = "http://%s/2018-06-01/baton/data/%s%s" % (os.environ["AWS_LAMBDA_RUNTIME_API"], op["key"], op.get("query", ""))
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", op.get("contentType", "application/octet-stream"))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, headers, payload = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, headers, payload = e.code, e.headers, e.read()
    out = {"status": status, "contentType": headers.get("Content-Type", ""), "scope": headers.get("Baton-Data-Scope", ""),
           "len": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    if len(payload) <= 200:
        out["body"] = payload.decode("utf-8", "replace")
    if status >= 400:
        try:
            out["errorType"] = json.loads(payload)["errorType"]
        except Exception:
            pass
    return out


def run(op):
    name = op["op"]
    scope = op.get("scope")
    try:
        if name == "put":
            if scope is None:
                data.put(op["key"], value_of(op))
            else:
                data.put(op["key"], value_of(op), scope=scope)
            return {"ok": True}
        if name == "get":
            return describe(data.get(op["key"], scope=scope))
        if name == "delete":
            data.delete(op["key"], scope=scope)
            return {"ok": True}
    except data.DataError as e:
        return {"error": e.type, "status": e.status, "message": e.message}
    if name == "httpget":
        return http("GET", op)
    if name == "httpput":
        return http("PUT", op, value_of(op) if op.get("kind") == "bytes" else op["body"].encode("utf-8"))
    if name == "httpdelete":
        return http("DELETE", op)
    raise ValueError("unknown op %r" % name)


def handler(event, context):
    return {"results": [run(op) for op in event["ops"]]}
