"""Baton runtime client for Python (AWS Lambda Runtime API 2018-06-01).

Two modes:

  python3 -u baton_runtime.py          plain runtime: import the handler, then
                                       serve invocations until the API goes away.
  python3 -u baton_runtime.py zygote   grain worker: import the handler once and
                                       fork a ready-to-serve child per request
                                       received on the control socket (fd 3).
                                       Each child waits on its hold pipe until
                                       Baton has confined it, before any of the
                                       function's code runs in it.

Standard library only, so it runs on any stock python3. It speaks the
Runtime API's plain HTTP/1.1 itself: importing http.client (with ssl and
email) would cost about a third of an interpreter's start. When Baton gives
it a unix socket (BATON_RUNTIME_SOCKET), the invocation loop runs over that
instead, in Baton's framed protocol (internal/node/runtimeapi/frame), which
saves HTTP's cost on every invocation; init errors still go over HTTP.
"""

import importlib
import io
import json
import os
import socket
import struct
import sys
import time
import _thread

API_PREFIX = "/2018-06-01/runtime"

# The runtime socket's path, when Baton offers one.
SOCKET_ENV = "BATON_RUNTIME_SOCKET"

# Where Baton's modules for functions are installed, beside this file.
LIBRARY_DIR = "python"

# Keep messages on the SEQPACKET control socket well below the socket buffer
# size: a packet larger than it cannot be sent at all.
MAX_ERROR_MESSAGE = 8192
MAX_STACK_ENTRIES = 50

_MISSING = object()


class RuntimeAPIError(Exception):
    """The Runtime API could not be reached or answered unexpectedly."""


class _Headers(dict):
    """Response headers; names compare case-insensitively."""

    def get(self, name, default=None):
        return dict.get(self, name.lower(), default)


class _Response:
    def __init__(self, status, headers):
        self.status = status
        self.headers = headers


class _Connection:
    """One kept-alive HTTP/1.1 connection to the Runtime API."""

    MAX_HEADER_LINE = 64 << 10

    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.sock = socket.create_connection((host.strip("[]"), int(port)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb")
        self.host = address
        self.closed = False

    def close(self):
        for f in (self.rfile, self.sock):
            try:
                f.close()
            except OSError:
                pass

    def request(self, method, path, body, headers):
        body = body or b""
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + self.host]
        if method != "GET" or body:
            lines.append("Content-Length: %d" % len(body))
        for name, value in headers.items():
            lines.append("%s: %s" % (name, value))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.sendall(head + body if len(body) < 16384 else head)
        if len(body) >= 16384:
            self.sock.sendall(body)
        return self._read_response()

    def _line(self):
        line = self.rfile.readline(self.MAX_HEADER_LINE + 1)
        if not line:
            raise ConnectionError("connection closed by the Runtime API")
        if len(line) > self.MAX_HEADER_LINE:
            raise ConnectionError("header line too long")
        return line

    def _read_response(self):
        parts = self._line().split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ConnectionError("bad status line %r" % parts)
        status = int(parts[1])
        headers = _Headers()
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = self._read_chunked()
        else:
            length = int(headers.get("Content-Length", "0"))
            data = self.rfile.read(length)
            if len(data) != length:
                raise ConnectionError("connection closed mid-body")
        if headers.get("Connection", "").lower() == "close":
            self.close()
            self.closed = True
        return _Response(status, headers), data

    def _read_chunked(self):
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


class Invocation:
    """One event, whichever transport brought it."""

    __slots__ = ("request_id", "deadline_ms", "function_arn", "trace_id", "client_context", "cognito_identity", "body")

    def __init__(self, request_id, deadline_ms, function_arn, trace_id, client_context, cognito_identity, body):
        self.request_id = request_id
        self.deadline_ms = deadline_ms
        self.function_arn = function_arn
        self.trace_id = trace_id
        self.client_context = client_context  # JSON text or None
        self.cognito_identity = cognito_identity  # JSON text or None
        self.body = body


class RuntimeClient:
    """Talks to the Runtime API over one kept-alive HTTP connection."""

    def __init__(self, address):
        self.address = address
        self.conn = None

    def _request(self, method, path, body=None, headers=None):
        # One retry covers a kept-alive connection that the server closed
        # while we were idle; anything beyond that is a real failure.
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = _Connection(self.address)
                resp, data = self.conn.request(method, path, body, headers or {})
                if self.conn.closed:
                    self.conn = None
                return resp, data
            except (OSError, ValueError) as e:
                if self.conn is not None:
                    self.conn.close()
                    self.conn = None
                if attempt:
                    raise RuntimeAPIError(
                        "%s %s: %s: %s" % (method, path, type(e).__name__, e)
                    ) from e
        raise AssertionError("unreachable")

    def next(self):
        resp, body = self._request("GET", API_PREFIX + "/invocation/next")
        if resp.status != 200:
            raise RuntimeAPIError("GET /invocation/next: status %d: %r" % (resp.status, body[:200]))
        headers = resp.headers
        try:
            deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0"))
        except ValueError:
            deadline_ms = 0
        return Invocation(
            headers.get("Lambda-Runtime-Aws-Request-Id", ""),
            deadline_ms,
            headers.get("Lambda-Runtime-Invoked-Function-Arn"),
            headers.get("Lambda-Runtime-Trace-Id"),
            headers.get("Lambda-Runtime-Client-Context"),
            headers.get("Lambda-Runtime-Cognito-Identity"),
            body,
        )

    def _post(self, path, body, headers):
        _flush_std()
        resp, data = self._request("POST", path, body, headers)
        if resp.status >= 300:
            # The API rejected this one post (e.g. payload too large); the
            # runtime itself is still healthy, so log and keep serving.
            sys.stderr.write(
                "baton runtime: POST %s: status %d: %s\n"
                % (path, resp.status, data[:500].decode("utf-8", "replace"))
            )
            sys.stderr.flush()

    def post_response(self, request_id, body):
        self._post(
            "%s/invocation/%s/response" % (API_PREFIX, request_id),
            body,
            {"Content-Type": "application/json"},
        )

    def post_error(self, request_id, err):
        self._post(
            "%s/invocation/%s/error" % (API_PREFIX, request_id),
            _encode_error(err),
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Function-Error-Type": _header_safe(err["errorType"]),
            },
        )

    def post_init_error(self, err):
        self._post(
            API_PREFIX + "/init/error",
            _encode_error(err),
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Function-Error-Type": _header_safe(err["errorType"]),
            },
        )


# The socket's frames: uint32 length (of kind and body), kind, body.
_HEAD = struct.Struct(">IB")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_NEXT, _RESPONSE, _ERROR, _EVENT, _REJECTED = 0x01, 0x02, 0x03, 0x81, 0x82
_NEXT_FRAME = _HEAD.pack(1, _NEXT)
# Results up to this size are joined with the following Next into one write.
_JOIN_LIMIT = 64 << 10


class SocketClient:
    """The invocation loop over Baton's runtime socket. A result is sent
    together with the Next that follows it, in one write: one round trip
    per invocation. Init errors go over HTTP."""

    def __init__(self, path, http):
        self.path = path
        self.http = http
        self.sock = None
        self.rfile = None
        self.pending = None  # the last result's frame, as chunks
        self._connect()

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def _close(self):
        for f in (self.rfile, self.sock):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self.sock = self.rfile = None

    def next(self):
        # One reconnect covers a connection the node dropped after a
        # refused result (too large); the result itself is not sent again:
        # the node has failed that invocation.
        for attempt in (0, 1):
            try:
                if self.sock is None:
                    self._connect()
                pending, self.pending = self.pending, None
                if pending is None:
                    self.sock.sendall(_NEXT_FRAME)
                elif len(pending[1]) <= _JOIN_LIMIT:
                    self.sock.sendall(pending[0] + pending[1] + _NEXT_FRAME)
                else:
                    self.sock.sendall(pending[0])
                    self.sock.sendall(pending[1])
                    self.sock.sendall(_NEXT_FRAME)
                while True:
                    kind, body = self._read_frame()
                    if kind == _EVENT:
                        return _parse_event(body)
                    if kind == _REJECTED:
                        self._log_rejected(body)
                        continue
                    raise ConnectionError("unexpected frame kind 0x%02x" % kind)
            except (OSError, ValueError, struct.error) as e:
                self._close()
                if attempt:
                    raise RuntimeAPIError("runtime socket %s: %s: %s" % (self.path, type(e).__name__, e)) from e
        raise AssertionError("unreachable")

    def _read_frame(self):
        head = self.rfile.read(5)
        if len(head) != 5:
            raise ConnectionError("runtime socket closed")
        length, kind = _HEAD.unpack(head)
        if length == 0:
            raise ValueError("malformed frame: length 0")
        body = self.rfile.read(length - 1) if length > 1 else b""
        if len(body) != length - 1:
            raise ConnectionError("runtime socket closed mid-frame")
        return kind, body

    def _log_rejected(self, body):
        # The node refused a result (e.g. too large); the runtime itself is
        # still healthy, so log and keep serving.
        status = int.from_bytes(body[:2], "big") if len(body) >= 2 else 0
        sys.stderr.write(
            "baton runtime: result refused: status %d: %s\n" % (status, body[2:502].decode("utf-8", "replace"))
        )
        sys.stderr.flush()

    def post_response(self, request_id, body):
        _flush_std()
        rid = request_id.encode("utf-8")
        self.pending = (_HEAD.pack(5 + len(rid) + len(body), _RESPONSE) + _U32.pack(len(rid)) + rid, body)

    def post_error(self, request_id, err):
        _flush_std()
        rid = request_id.encode("utf-8")
        typ = str(err.get("errorType", "")).encode("utf-8")
        doc = _encode_error(err)
        head = _HEAD.pack(9 + len(rid) + len(typ) + len(doc), _ERROR) + _U32.pack(len(rid)) + rid + _U32.pack(len(typ)) + typ
        self.pending = (head, doc)

    def post_init_error(self, err):
        self.http.post_init_error(err)


def _parse_event(body):
    (deadline_ms,) = _I64.unpack_from(body, 0)
    pos = 8
    fields = []
    for _ in range(5):
        (n,) = _U32.unpack_from(body, pos)
        pos += 4
        if pos + n > len(body):
            raise ValueError("malformed event frame: field beyond the frame")
        fields.append(body[pos:pos + n].decode("utf-8"))
        pos += n
    request_id, arn, trace_id, client_context, identity = fields
    return Invocation(request_id, deadline_ms, arn, trace_id, client_context or None, identity or None, body[pos:])


def _flush_std():
    # The caller reads our pipes; everything the invocation printed must be
    # there before the result is.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _header_safe(value):
    return "".join(c if " " <= c <= "~" else "?" for c in str(value))


def _encode_error(err):
    return json.dumps(err, default=str).encode("utf-8")


def error_body(exc, error_type=None, skip_frames=0):
    """Builds the Runtime API error document for an exception."""
    import traceback  # only on errors; the zygote imports it before forking

    frames = traceback.extract_tb(exc.__traceback__)[skip_frames:]
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable %s>" % type(exc).__name__
    return {
        "errorMessage": message,
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_list(frames),
    }


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, doc):
        doc = doc if isinstance(doc, dict) else {}
        self.cognito_identity_id = doc.get("cognitoIdentityId")
        self.cognito_identity_pool_id = doc.get("cognitoIdentityPoolId")


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, doc):
        doc = doc if isinstance(doc, dict) else {}
        self.installation_id = doc.get("installation_id")
        self.app_title = doc.get("app_title")
        self.app_version_name = doc.get("app_version_name")
        self.app_version_code = doc.get("app_version_code")
        self.app_package_name = doc.get("app_package_name")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, doc):
        doc = doc if isinstance(doc, dict) else {}
        self.client = Client(doc["client"]) if isinstance(doc.get("client"), dict) else None
        self.custom = doc.get("custom")
        self.env = doc.get("env")


class LambdaContext:
    """The context object handed to handlers, shaped like Lambda's."""

    def __init__(self, request_id, deadline_ms, function_arn, identity, client_context):
        env = os.environ
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = env.get("AWS_LAMBDA_FUNCTION_NAME")
        self.function_version = env.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.memory_limit_in_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.log_group_name = env.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = env.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.identity = identity
        self.client_context = client_context
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self):
        return "LambdaContext(aws_request_id=%r, function_name=%r)" % (self.aws_request_id, self.function_name)


def _json_field(raw, factory):
    if not raw:
        return None
    try:
        return factory(json.loads(raw))
    except Exception:
        return None


def load_handler():
    """Imports the _HANDLER function. Returns (handler, None) or (None, error)."""
    spec = os.environ.get("_HANDLER", "")
    modname, _, funcname = spec.rpartition(".")
    if not modname or not funcname:
        return None, {
            "errorMessage": "Bad handler '%s': expected module.function" % spec,
            "errorType": "Runtime.MalformedHandlerName",
            "stackTrace": [],
        }
    modname = modname.replace("/", ".")
    try:
        module = importlib.import_module(modname)
    except SyntaxError as e:
        return None, error_body(e, "Runtime.UserCodeSyntaxError")
    except ImportError as e:
        err = error_body(e, "Runtime.ImportModuleError")
        err["errorMessage"] = "Unable to import module '%s': %s" % (modname, e)
        return None, err
    except BaseException as e:
        # SystemExit or KeyboardInterrupt at import time is still an init
        # failure of the function, not of the runtime.
        return None, error_body(e)
    handler = getattr(module, funcname, None)
    if handler is None:
        return None, {
            "errorMessage": "Handler '%s' missing on module '%s'" % (funcname, modname),
            "errorType": "Runtime.HandlerNotFound",
            "stackTrace": [],
        }
    if not callable(handler):
        return None, {
            "errorMessage": "Handler '%s' on module '%s' is not callable" % (funcname, modname),
            "errorType": "Runtime.HandlerNotFound",
            "stackTrace": [],
        }
    return handler, None


def setup_task_root():
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    # Our own directory must not shadow the function's modules.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]
    sys.path.insert(0, task_root)
    # Baton's own modules (`from baton import data`) come last, so that a
    # module of the function's named baton still wins.
    sys.path.append(os.path.join(here, LIBRARY_DIR))
    try:
        os.chdir(task_root)
    except OSError as e:
        sys.stderr.write("baton runtime: chdir %s: %s\n" % (task_root, e))


def handle_one(client, handler, inv):
    request_id = inv.request_id
    body = inv.body
    if inv.trace_id:
        os.environ["_X_AMZN_TRACE_ID"] = inv.trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    context = LambdaContext(
        request_id,
        inv.deadline_ms,
        inv.function_arn,
        _json_field(inv.cognito_identity, CognitoIdentity),
        _json_field(inv.client_context, ClientContext),
    )
    try:
        event = json.loads(body) if body else None
    except (ValueError, RecursionError) as e:
        # A valid document nested deeper than the interpreter's recursion
        # limit is as undecodable as a malformed one; it must fail the
        # invocation, not the instance.
        client.post_error(request_id, {
            "errorMessage": "Unable to unmarshal input: %s" % e,
            "errorType": "Runtime.UnmarshalError",
            "stackTrace": [],
        })
        return
    try:
        result = handler(event, context)
    except Exception as e:
        # Drop the frame of this function: it is ours, not the user's.
        client.post_error(request_id, error_body(e, skip_frames=1))
        return
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and the response
        # is posted as application/json.
        payload = json.dumps(result, allow_nan=False).encode("utf-8")
    except Exception as e:
        client.post_error(request_id, {
            "errorMessage": "Unable to marshal response: %s" % e,
            "errorType": "Runtime.MarshalError",
            "stackTrace": [],
        })
        return
    client.post_response(request_id, payload)


def invocation_loop(client, handler):
    while True:
        handle_one(client, handler, client.next())


def _runtime_api():
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not address:
        sys.stderr.write("baton runtime: AWS_LAMBDA_RUNTIME_API is not set\n")
        sys.exit(1)
    return address


def _loop_client(http):
    """The client for the invocation loop: the runtime socket when Baton
    offers one that answers, HTTP otherwise."""
    path = os.environ.get(SOCKET_ENV)
    if path:
        try:
            return SocketClient(path, http)
        except OSError as e:
            sys.stderr.write("baton runtime: runtime socket %s: %s; using HTTP\n" % (path, e))
    return http


def serve(handler, init_error):
    """Runs one runtime process to its end; never returns."""
    code = 1
    try:
        client = RuntimeClient(_runtime_api())
        if init_error is not None:
            client.post_init_error(init_error)
        else:
            invocation_loop(_loop_client(client), handler)
    except RuntimeAPIError as e:
        sys.stderr.write("baton runtime: %s\n" % e)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    _flush_std()
    os._exit(code)


def plain_main():
    setup_task_root()
    handler, init_error = load_handler()
    if init_error is not None:
        sys.stderr.write("baton runtime: init error: %s: %s\n" % (init_error["errorType"], init_error["errorMessage"]))
    serve(handler, init_error)


# ---------------------------------------------------------------------------
# Zygote ("grain worker") mode.


def _kill_group(pid, sig):
    """Signals an instance's process group, or just the instance if its
    group is already gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        os.kill(pid, sig)


class Zygote:
    CTRL_FD = 3

    def __init__(self):
        import signal
        import socket
        import selectors

        self.signal = signal
        self.socket = socket
        self.pid = os.getpid()
        self.children = {}  # pid -> spawn id
        self.ctrl = socket.socket(fileno=self.CTRL_FD)
        self.ctrl.setblocking(True)
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ctrl, selectors.EVENT_READ, "ctrl")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.prctl = None
        self.handler = None
        self.init_error = None
        # The hold pipe of the child being forked, and the thread forking it.
        self.hold_fd = None
        self.hold_thread = None
        # Registered before the function's code is imported, so that this
        # runs in a new child before any at-fork handler of that code.
        os.register_at_fork(after_in_child=self.wait_for_release)

    def prepare(self):
        # Imported here, not after each fork: a child's first error
        # would otherwise pay for them (traceback formats with ast).
        import ast  # noqa: F401
        import traceback  # noqa: F401
        import ctypes
        import gc

        # A no-op Python handler is needed for SIGCHLD to reach the wakeup
        # fd at all; the real work happens in the main loop.
        self.signal.signal(self.signal.SIGCHLD, lambda signum, frame: None)
        self.signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            self.prctl = libc.prctl
        except (OSError, AttributeError):
            self.prctl = None
        # The child's first connect resolves the API address, which
        # imports the idna codec (plus stringprep and unicodedata) and loads
        # the resolver: several milliseconds per child unless done here.
        try:
            self.socket.getaddrinfo("127.0.0.1", 9001, 0, self.socket.SOCK_STREAM)
            "localhost".encode("idna")
        except (OSError, LookupError):
            pass
        setup_task_root()
        self.handler, self.init_error = load_handler()
        if self.init_error is not None:
            err = self.init_error
            err["errorMessage"] = str(err.get("errorMessage", ""))[:MAX_ERROR_MESSAGE]
            err["stackTrace"] = list(err.get("stackTrace") or [])[-MAX_STACK_ENTRIES:]
        _flush_std()
        # Objects that exist now are shared with every child; keeping the
        # collector away from them keeps those pages shared after fork.
        gc.collect()
        gc.freeze()

    def send(self, msg):
        self.ctrl.send(json.dumps(msg, separators=(",", ":")).encode("utf-8"))

    def run(self):
        self.send({"op": "ready", "pid": self.pid, "initError": self.init_error})
        while True:
            for key, _ in self.sel.select():
                if key.data == "wake":
                    self.drain_wakeup()
                    self.reap()
                elif not self.read_ctrl():
                    return
            # Children may end between wakeups we already drained; reaping
            # each round is cheap and never misses one.
            self.reap()

    def drain_wakeup(self):
        try:
            while os.read(self.wake_r, 256):
                pass
        except BlockingIOError:
            pass

    def read_ctrl(self):
        """Handles one control packet; returns False at end of stream."""
        socket = self.socket
        fds = []
        try:
            data, ancdata, flags, _ = self.ctrl.recvmsg(
                1 << 16, socket.CMSG_SPACE(8 * 4), socket.MSG_CMSG_CLOEXEC
            )
        except (ConnectionResetError, BrokenPipeError):
            return False
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                fds.extend(int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, usable, 4))
        try:
            if not data:
                return False
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                self.log("control message truncated, dropped")
                return True
            try:
                msg = json.loads(data)
            except ValueError as e:
                self.log("bad control message: %s" % e)
                return True
            op = msg.get("op") if isinstance(msg, dict) else None
            if op == "spawn":
                self.spawn(msg, fds)
            elif op == "kill":
                self.kill(msg)
            else:
                self.log("unknown control op %r" % (op,))
            return True
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def spawn(self, msg, fds):
        spawn_id = msg.get("id")
        env = msg.get("env") or {}
        if len(fds) != 3:
            self.send({"op": "spawnError", "id": spawn_id, "error": "want 3 fds (stdout, stderr, hold), got %d" % len(fds)})
            return
        if not isinstance(env, dict):
            self.send({"op": "spawnError", "id": spawn_id, "error": "env must be an object"})
            return
        _flush_std()
        self.hold_fd, self.hold_thread = fds[2], _thread.get_ident()
        try:
            pid = os.fork()
        except OSError as e:
            self.send({"op": "spawnError", "id": spawn_id, "error": "fork: %s" % e})
            return
        finally:
            self.hold_fd = None
        if pid == 0:
            self.child(env, fds[0], fds[1])  # never returns
        # Each instance leads its own process group, so that killing it
        # also kills whatever it started. Set from both sides of the fork
        # so no kill can arrive before the group exists.
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        self.children[pid] = spawn_id
        self.send({"op": "spawned", "id": spawn_id, "pid": pid})

    def wait_for_release(self):
        # Only the zygote's own fork of a child is held: a fork by a thread
        # the function's code started in the zygote is not.
        fd = self.hold_fd
        if fd is None or _thread.get_ident() != self.hold_thread:
            return
        self.hold_fd = None
        try:
            os.set_blocking(fd, True)  # Baton's end may have made it non-blocking
            go = os.read(fd, 1)
        except OSError:
            go = b""
        if go != b"g":
            os._exit(1)  # Baton gave this child up
        os.close(fd)

    def child(self, env, out_fd, err_fd):
        try:
            try:
                os.setpgid(0, 0)
            except OSError:
                pass
            signal = self.signal
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Closing via the objects (not raw fds) so no stale object can
            # later close a reused descriptor number. The epoll instance is
            # shared with the zygote, so it must be closed, never modified.
            self.sel.close()
            self.ctrl.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            os.close(out_fd)
            os.close(err_fd)
            sys.stdout = io.TextIOWrapper(
                io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                line_buffering=True, write_through=True,
            )
            sys.stderr = io.TextIOWrapper(
                io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace",
                line_buffering=True, write_through=True,
            )
            os.environ.update({str(k): str(v) for k, v in env.items()})
            if self.prctl is not None:
                self.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
            if os.getppid() != self.pid:
                # The zygote died before the death signal was armed.
                os._exit(1)
        except BaseException:
            try:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(1)
        serve(self.handler, self.init_error)

    def kill(self, msg):
        pid = msg.get("pid")
        sig = msg.get("signal")
        if not isinstance(pid, int) or not isinstance(sig, int) or pid not in self.children:
            return
        # An optional spawn id guards against a reused pid.
        if "id" in msg and msg["id"] is not None and msg["id"] != self.children[pid]:
            return
        try:
            _kill_group(pid, sig)
        except (ProcessLookupError, ValueError, OSError) as e:
            self.log("kill %d: %s" % (pid, e))

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            # Orphans re-parented to us (e.g. inside a PID namespace) are
            # reaped too, but only our own children are reported.
            if self.children.pop(pid, _MISSING) is _MISSING:
                continue
            # Nothing an instance started may outlive it.
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
            if os.WIFSIGNALED(status):
                code, sig = -1, os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                code, sig = os.WEXITSTATUS(status), 0
            else:
                continue
            self.send({"op": "exit", "pid": pid, "status": code, "signal": sig})

    def shutdown(self):
        for pid in list(self.children):
            try:
                _kill_group(pid, 9)
            except OSError:
                pass
        # Reap them before leaving so none lingers as a zombie of whoever
        # inherits it.
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.children.clear()

    def log(self, text):
        sys.stderr.write("baton zygote: %s\n" % text)
        sys.stderr.flush()


def zygote_main():
    # Children get exactly 0, 1 and 2 from us: stdin is /dev/null and any
    # descriptor we inherited beyond the control socket is dropped.
    try:
        os.closerange(Zygote.CTRL_FD + 1, os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        pass
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    z = Zygote()
    z.prepare()
    try:
        z.run()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        z.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "zygote":
        zygote_main()
    elif len(sys.argv) > 1:
        sys.stderr.write("usage: baton_runtime.py [zygote]\n")
        sys.exit(2)
    else:
        plain_main()
