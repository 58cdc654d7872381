"""Python functions of Baton's end-to-end tests, one handler per behaviour.

MARKER is read once at import time from marker.txt (tests write it into a
copy of this directory to make a new code version); APP_VERSION comes from
the function's environment; IMPORT_APP_VERSION is APP_VERSION as the module
saw it at import, so that a test can tell which environment the loaded code
(a Python zygote) was started with.
"""

import base64
import json
import os
import sys
import time

try:
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "marker.txt")) as f:
        MARKER = f.read().strip()
except OSError:
    MARKER = ""

IMPORT_APP_VERSION = os.environ.get("APP_VERSION", "")


def _ev(event):
    return event if isinstance(event, dict) else {}


def _pidns():
    """The PID namespace the pid is counted in: in a container sandbox
    that is the sandbox's, and tests map the pair to the host's pid."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _identity(context):
    return {
        "pid": os.getpid(),
        "pidns": _pidns(),
        "version": context.function_version,
        "function": context.function_name,
        "requestId": context.aws_request_id,
        "marker": MARKER,
        "appVersion": os.environ.get("APP_VERSION", ""),
        "importAppVersion": IMPORT_APP_VERSION,
    }


def echo(event, context):
    """Returns the event unchanged."""
    return event


def whoami(event, context):
    """Reports the process, function version, code marker and env version.

    {"sleepMs": N} sleeps first, so that a test can hold an instance busy.
    """
    ms = _ev(event).get("sleepMs", 0)
    if ms:
        time.sleep(ms / 1000.0)
    return _identity(context)


def sleep(event, context):
    """Sleeps {"ms": N} milliseconds and reports who served it."""
    ms = _ev(event).get("ms", 0)
    time.sleep(ms / 1000.0)
    out = _identity(context)
    out["slept"] = ms
    return out


def logs(event, context):
    """Prints the given lines to stdout and stderr."""
    ev = _ev(event)
    for line in ev.get("stdout", []):
        print(line)
    for line in ev.get("stderr", []):
        print(line, file=sys.stderr)
    return {"printed": len(ev.get("stdout", [])) + len(ev.get("stderr", []))}


class CustomError(Exception):
    pass


def fail(event, context):
    """Raises CustomError with the event's message, repeated {"repeat": N}
    times (a huge message without a huge event)."""
    ev = _ev(event)
    print("about to fail")
    raise CustomError(ev.get("message", "boom") * int(ev.get("repeat", 1)))


def crash(event, context):
    """With {"code": N}, ends the process without answering (exit code N);
    without, answers like whoami."""
    ev = _ev(event)
    if "code" in ev:
        print("crashing now", flush=True)
        os._exit(int(ev["code"]))
    return _identity(context)


def http(event, context):
    """A function URL handler; the request path picks the answer."""
    path = _ev(event).get("rawPath", "")
    if path == "/respond":
        data = bytes(range(256))
        return {
            "statusCode": 201,
            "headers": {"Content-Type": "application/octet-stream", "X-Baton-Test": "yes"},
            "cookies": ["session=abc; Path=/; HttpOnly", "theme=dark"],
            "body": base64.b64encode(data).decode("ascii"),
            "isBase64Encoded": True,
        }
    if path == "/plain":
        return {"plain": True, "answer": 42}
    if path == "/text":
        return {"statusCode": 404, "headers": {"Content-Type": "text/plain"}, "body": "nothing here"}
    # Everything else: the event itself, as a JSON response.
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(event)}


def big(event, context):
    """Returns a string of {"n": N} bytes."""
    return "x" * int(_ev(event).get("n", 0))


def partial(event, context):
    """Writes {"text": S} to stdout without a trailing newline."""
    sys.stdout.write(_ev(event).get("text", ""))
    sys.stdout.flush()
    return {"ok": True}


def chatty(event, context):
    """Prints {"lines": N} lines of 100 bytes, then sleeps {"ms": M}."""
    ev = _ev(event)
    for i in range(int(ev.get("lines", 0))):
        print("%05d %s" % (i, "y" * 93))
    sys.stdout.flush()
    ms = ev.get("ms", 0)
    if ms:
        time.sleep(ms / 1000.0)
    return {"ok": True}


def spawn(event, context):
    """Starts a background process that sleeps 60 s, with {"marker": S} as
    its last argument so that tests find it in any PID namespace, and
    prints its pid; then sleeps {"sleepMs": N} and answers, or ends the
    instance with exit code {"exit": N}. The child is this interpreter:
    a base image has no `sleep`."""
    import subprocess

    marker = str(_ev(event).get("marker", ""))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    print("spawned %d" % child.pid, flush=True)
    ev = _ev(event)
    if "exit" in ev:
        os._exit(int(ev["exit"]))
    ms = ev.get("sleepMs", 0)
    if ms:
        time.sleep(ms / 1000.0)
    out = _identity(context)
    out["childPid"] = child.pid
    return out


def attempt(event, context):
    """Fails on an asynchronous event's first attempt and reports the
    attempt number Baton passes in the client context."""
    custom = (context.client_context.custom or {}) if context.client_context else {}
    n = int(custom.get("baton-attempt", "0"))
    if n < 2:
        raise CustomError("attempt %d fails" % n)
    return {"attempt": n}
