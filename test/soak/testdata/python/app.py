"""Functions of Baton's asynchronous soak test (test/soak).

Every execution appends one line "<invocation id> <attempt>" to the file
named by SOAK_FILE (the function's environment), so that the test can count
how often each accepted invocation ran and which attempt it was. The
invocation id is Lambda's aws_request_id; the attempt number is what Baton
passes in the client context (custom["baton-attempt"]; "0" for a
synchronous call). The line is one write(2) of a few dozen bytes on a file
opened with O_APPEND, so concurrent instances never interleave lines.
"""

import os
import time


def _attempt(context):
    cc = context.client_context
    custom = (cc.custom or {}) if cc else {}
    return str(custom.get("baton-attempt", "0"))


def _record(context):
    line = ("%s %s\n" % (context.aws_request_id, _attempt(context))).encode("ascii")
    fd = os.open(os.environ["SOAK_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _sleep(event):
    ms = event.get("sleepMs", 0) if isinstance(event, dict) else 0
    if ms:
        time.sleep(ms / 1000.0)


def work(event, context):
    """Sleeps {"sleepMs": N}, then records its run (its side effect is its
    completion) and returns the event."""
    _sleep(event)
    _record(context)
    return event


class SoakError(Exception):
    pass


def flaky(event, context):
    """Records its run, then always fails."""
    _record(context)
    key = event.get("key", "") if isinstance(event, dict) else ""
    raise SoakError("flaky %s fails" % key)


def slow(event, context):
    """Records its run, then sleeps {"sleepMs": N}: longer than its
    timeout, so that every attempt times out."""
    _record(context)
    _sleep(event)
    return event
