"""Invoking other functions through Baton.

    from baton import invoke

    result = invoke("resize", {"width": 640})      # -> the callee's result
    digest = invoke("hash", big_bytes)

The payload is bytes (sent as they are: the callee's event, JSON for the
Python and Node runtimes) or anything json.dumps takes (a str is sent as a
JSON string). The result is the callee's result decoded from JSON, or
bytes when it is not JSON.

The call goes through Baton, with its routing, scaling and limits, as the
HTTP invoke route would, but without the bytes crossing the controller
when they are large: a payload (or result) larger than the server's
--transfer-threshold stays on this host and the callee's host pulls it
directly (direct transfers). The function never sees the difference.

Errors raise InvokeError: type is the callee's error type when the callee
raised (function_error is then True), else Baton's code
("function_not_found", "payload_too_large", "queue_full", ...), with
status the HTTP status (0 when the endpoint was not reached).

Standard library only: HTTP to the instance's Runtime API endpoint
(AWS_LAMBDA_RUNTIME_API), POST /2018-06-01/baton/invoke/{function}.
"""

import json
import os

from . import data as _data

__all__ = ["invoke", "InvokeError"]

_PREFIX = "/2018-06-01/baton/invoke/"


class InvokeError(Exception):
    """An invocation through Baton failed.

    function_error is True when the callee itself raised: type and message
    are then its error's, and stack_trace its trace. Otherwise Baton
    refused or could not run it: type is the code ("function_not_found",
    "payload_too_large", "queue_full", "timeout", ...), status the HTTP
    status.
    """

    def __init__(self, function, status, type_, message, function_error=False, stack_trace=None):
        super().__init__("invoke %s: %s: %s" % (function, type_, message))
        self.function = function
        self.status = status
        self.type = type_
        self.message = message
        self.function_error = function_error
        self.stack_trace = stack_trace or []


def invoke(function, payload=None):
    """Runs function with payload and returns its result."""
    if not isinstance(function, str) or not function:
        raise TypeError("function must be a non-empty str, not %r" % (function,))
    if payload is None:
        body = b"{}"
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        body = bytes(payload)
    else:
        body = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode("utf-8")
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        raise InvokeError(function, 0, "NoRuntimeAPI", "AWS_LAMBDA_RUNTIME_API is not set: baton.invoke works inside a Baton function")
    # A connection of its own for each call: an invocation is not
    # idempotent, so a kept-alive connection that failed midway could not
    # safely be retried, and a fresh loopback connection costs little.
    try:
        conn = _data._Connection(address)
    except OSError as e:
        raise InvokeError(function, 0, "RuntimeAPIUnreachable", "%s: %s" % (type(e).__name__, e)) from e
    try:
        conn.sock.settimeout(None)  # the callee's own timeout bounds the call
        status, ctype, body = conn.request("POST", _PREFIX + _data._quote(function), body, "application/json")
        headers = conn.headers
    except (OSError, ValueError) as e:
        raise InvokeError(function, 0, "RuntimeAPIUnreachable", "%s: %s" % (type(e).__name__, e)) from e
    finally:
        conn.close()
    if status == 200 and headers.get("baton-function-error"):
        err = _json(body) or {}
        raise InvokeError(function, status, err.get("errorType") or "Error", err.get("errorMessage", ""),
                          function_error=True, stack_trace=err.get("stackTrace"))
    if status != 200:
        err = _json(body)
        if isinstance(err, dict) and "code" in err:
            raise InvokeError(function, status, err["code"], err.get("message", ""))
        raise InvokeError(function, status, "Error", body[:500].decode("utf-8", "replace"))
    return _data._decode(ctype, body)


def _json(body):
    try:
        return json.loads(body)
    except ValueError:
        return None
