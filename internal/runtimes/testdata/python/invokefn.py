import hashlib

from baton import invoke, InvokeError


def _err(name, payload):
    try:
        invoke(name, payload)
    except InvokeError as e:
        return [e.status, e.type, e.function_error]
    return None


def handler(event, context):
    big = "x" * 100000
    return {
        "echo": invoke("echo", {"a": [1, None, True]}),
        "str": invoke("echo", "h\u00e9llo"),
        "bytes": invoke("echo", b'{"raw":1}'),
        "raw": list(invoke("raw", {})),
        "big": hashlib.sha256(invoke("echo", big).encode()).hexdigest() == hashlib.sha256(big.encode()).hexdigest(),
        "fails": _err("fails", {}),
        "missing": _err("missing", {}),
        "badName": _err("Bad_Name", {}),
    }
