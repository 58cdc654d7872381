"""Functions of the workflow tests (test/e2e/workflow_*_test.go).

A handful of functions serve every case: each one's behaviour is chosen by
its event. A workflow step sees its attempt, execution and state in the
client context, as custom["baton-attempt"], ["baton-execution"] and
["baton-state"].
"""

import time


def _custom(context):
    cc = context.client_context
    custom = cc.custom if cc is not None else None
    return custom if isinstance(custom, dict) else {}


def _error(name, message):
    """An exception whose class is called name: the error type a workflow's
    Retry and Catch see is the class name."""
    return type(str(name), (Exception,), {})(message)


def echo(event, context):
    """Returns the event unchanged."""
    return event


def add(event, context):
    """Returns event["a"] + event["b"]."""
    return event["a"] + event["b"]


def fail(event, context):
    """Raises the exception class event["error"] with event["cause"]."""
    raise _error(event.get("error", "Failure"), event.get("cause", ""))


def flaky(event, context):
    """Attempt n raises event["errors"][n-1] while there is one (its message
    says the attempt), then returns what the step saw: the attempt number is
    the workflow's, so the count is per execution and state, with no files.
    """
    custom = _custom(context)
    attempt = int(custom.get("baton-attempt", "0"))
    errors = event.get("errors", []) if isinstance(event, dict) else []
    if 1 <= attempt <= len(errors):
        raise _error(errors[attempt - 1], "attempt %d" % attempt)
    return {
        "attempt": attempt,
        "execution": custom.get("baton-execution"),
        "state": custom.get("baton-state"),
    }


def sleep(event, context):
    """Sleeps event["seconds"]; says when it ran (to check overlaps)."""
    start = time.time()
    time.sleep(float(event.get("seconds", 0)))
    return {"item": event.get("item"), "start": start, "end": time.time()}
