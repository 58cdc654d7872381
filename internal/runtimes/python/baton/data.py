"""Baton's data layers, for passing values between functions by reference.

    from baton import data

    data.put("run/42/image", png_bytes)            # global (the default)
    data.put("run/42/meta", {"w": 640}, scope="local")
    meta = data.get("run/42/meta")                 # -> {"w": 640}
    data.delete("run/42/image")

A value is bytes, str or anything json.dumps takes; get returns it as it
was put (bytes, str, or the decoded JSON), or None when the key is absent.

Scopes:
  "local"   this host's memory: fast, bounded (least recently used values
            are evicted), expires, and gone when the host restarts.
  "global"  Baton's JetStream store: replicated, survives restarts.
put writes "global" unless told otherwise, and keeps a local copy. get
and delete without a scope use both layers (get prefers the local copy).

Keys: 1 to 512 characters of A-Z a-z 0-9 . _ / -, without empty, "." or
".." segments between slashes. Keys belong to the function's application:
other applications neither see nor touch them.

Standard library only. It speaks HTTP to the instance's Runtime API
endpoint (AWS_LAMBDA_RUNTIME_API), where any runtime can reach the same
routes: /2018-06-01/baton/data/{key}?scope=local|global.

Import it at the top of the function's module: a Python instance is forked
from a process that imported the module once, so the import costs nothing
per instance.
"""

import json
import os
import socket

__all__ = ["put", "get", "delete", "DataError"]

_PREFIX = "/2018-06-01/baton/data/"
_TIMEOUT = 60  # seconds; the endpoint bounds its own waits below this

_BYTES = "application/octet-stream"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"

# Characters a key's URL path keeps as they are; others are %-escaped, so
# that a key the endpoint refuses reaches it and gets an answer naming the
# problem instead of breaking the request line.
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-~")


class DataError(Exception):
    """The data layer refused a request or could not serve it.

    status is the HTTP status (0 when the endpoint was not reached), type
    the error type (for example "InvalidKey", "ValueTooLarge",
    "GlobalDataUnavailable").
    """

    def __init__(self, status, type_, message):
        super().__init__("%s: %s" % (type_, message))
        self.status = status
        self.type = type_
        self.message = message


class _Connection:
    """One kept-alive HTTP/1.1 connection to the endpoint. Its own few lines
    of HTTP, as the runtime client's: importing http.client (with email and
    ssl) would cost a Python function's start tens of milliseconds."""

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.address = address
        self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.open = True

    def close(self):
        self.open = False
        for f in (self.rfile, self.sock):
            try:
                f.close()
            except OSError:
                pass

    def request(self, method, path, body, content_type):
        head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, self.address)
        if body is not None:
            head += "Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type, len(body))
        head = (head + "\r\n").encode("latin-1")
        if body and len(body) < 65536:
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head)
            if body:
                self.sock.sendall(body)
        return self._response(method)

    def _line(self):
        line = self.rfile.readline(65537)
        if not line.endswith(b"\n"):
            raise ConnectionError("connection closed or header line too long")
        return line

    def _response(self, method):
        parts = self._line().split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError("bad status line %r" % parts)
        status = int(parts[1])
        headers = {}
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        self.headers = headers  # the last answer's, lower-cased (baton.invoke reads them)
        if headers.get("connection", "").lower() == "close":
            self.open = False
        if status in (204, 304) or method == "HEAD":
            data = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            data = self._chunked()
        elif "content-length" in headers:
            n = int(headers["content-length"])
            data = self.rfile.read(n)
            if len(data) != n:
                raise ConnectionError("connection closed mid-body")
        else:
            data = self.rfile.read()  # until the endpoint closes
            self.open = False
        return status, headers.get("content-type", ""), data

    def _chunked(self):
        chunks = []
        while True:
            size = int(self._line().split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self._line() not in (b"\r\n", b"\n"):
                    pass  # trailers
                return b"".join(chunks)
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise ConnectionError("connection closed mid-chunk")
            chunks.append(chunk)
            self._line()


_conn = None
_conn_key = None  # (pid, address) the connection was made for


def _connection():
    global _conn, _conn_key
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        raise DataError(0, "NoRuntimeAPI", "AWS_LAMBDA_RUNTIME_API is not set: baton.data works inside a Baton function")
    # A forked instance must not share its parent's socket (it leaves the
    # parent's copy alone), and each instance has an endpoint of its own.
    key = (os.getpid(), address)
    if _conn is None or _conn_key != key or not _conn.open:
        if _conn is not None and _conn_key[0] == key[0]:
            _conn.close()
        _conn = None
        _conn = _Connection(address)
        _conn_key = key
    return _conn


def _quote(key):
    return "".join(chr(b) if b in _SAFE else "%%%02X" % b for b in key.encode("utf-8"))


def _request(method, key, scope, body=None, content_type=None):
    global _conn
    if not isinstance(key, str):
        raise TypeError("key must be a str, not %s" % type(key).__name__)
    if scope not in (None, "local", "global"):
        raise ValueError('scope must be "local", "global" or None, not %r' % (scope,))
    path = _PREFIX + _quote(key)
    if scope:
        path += "?scope=" + scope
    # One retry covers a kept-alive connection the endpoint closed while
    # idle; every data request is idempotent.
    for attempt in (0, 1):
        try:
            return _connection().request(method, path, body, content_type)
        except (OSError, ValueError) as e:
            if _conn is not None:
                _conn.close()
                _conn = None
            if attempt:
                raise DataError(0, "RuntimeAPIUnreachable", "%s %s: %s: %s" % (method, path, type(e).__name__, e)) from e
    raise AssertionError("unreachable")


def _fail(status, body):
    try:
        err = json.loads(body)
        raise DataError(status, err.get("errorType", "Error"), err.get("errorMessage", ""))
    except (ValueError, AttributeError):
        raise DataError(status, "Error", body[:500].decode("utf-8", "replace")) from None


def put(key, value, scope="global"):
    """Stores value under key: bytes, str, or a JSON-serialisable value."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        body, ctype = bytes(value), _BYTES
    elif isinstance(value, str):
        body, ctype = value.encode("utf-8"), _TEXT
    else:
        body, ctype = json.dumps(value, allow_nan=False, separators=(",", ":")).encode("utf-8"), _JSON
    status, _, data = _request("PUT", key, scope or "global", body, ctype)
    if status != 204:
        _fail(status, data)


def get(key, scope=None):
    """Returns the value under key as it was put, or None when absent."""
    status, ctype, data = _request("GET", key, scope)
    if status == 404:
        try:
            if json.loads(data).get("errorType") == "KeyNotFound":
                return None
        except (ValueError, AttributeError):
            pass
    if status != 200:
        _fail(status, data)
    return _decode(ctype, data)


def delete(key, scope=None):
    """Removes key (from both layers when scope is None)."""
    status, _, data = _request("DELETE", key, scope)
    if status != 204:
        _fail(status, data)


def _decode(ctype, data):
    mime, _, params = ctype.partition(";")
    mime = mime.strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        return json.loads(data)
    if mime.startswith("text/"):
        charset = "utf-8"
        for p in params.split(";"):
            name, _, val = p.strip().partition("=")
            if name.lower() == "charset" and val:
                charset = val.strip('"')
        return data.decode(charset, "replace")
    return data
