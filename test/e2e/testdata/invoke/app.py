"""Functions of the invoke tests (test/e2e/transfer_invoke_test.go).

caller makes N characters for a seed and sends them to event["target"]
with baton.invoke, answering what the callee answered (or the error it
got); consume reports the SHA-256 and length of what it received and
whether it saw anything of Baton's references (it never should); produce
returns N characters; fetch invokes produce and reports the digest of
what came back."""

import hashlib
import json

from baton import InvokeError, invoke


def make(seed, n):
    """The N characters for seed (the test builds the same)."""
    unit = (seed + "0123456789abcdef") * 4
    reps = n // len(unit) + 1
    return (unit * reps)[:n]


def caller(event, context):
    try:
        return invoke(event["target"], {"data": make(event["seed"], int(event["n"]))})
    except InvokeError as e:
        return {"error": {"status": e.status, "type": e.type, "message": e.message, "functionError": e.function_error}}


def consume(event, context):
    data = event.get("data", "") if isinstance(event, dict) else ""
    return {
        "sha256": hashlib.sha256(data.encode()).hexdigest(),
        "len": len(data),
        "sawReference": "$baton.transfer" in json.dumps(event),
    }


def produce(event, context):
    return {"data": make(event["seed"], int(event["n"]))}


def fetch(event, context):
    data = invoke(event["target"], {"seed": event["seed"], "n": event["n"]})["data"]
    return {"sha256": hashlib.sha256(data.encode()).hexdigest(), "len": len(data), "sawReference": "$baton.transfer" in data[:100]}


def fails(event, context):
    raise ValueError("no thanks")
