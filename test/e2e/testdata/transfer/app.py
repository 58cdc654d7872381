"""Functions of the direct-transfer tests (test/e2e/transfer_test.go).

produce returns {"data": N characters}; consume reports the SHA-256 and
length of the data it received, and whether it saw anything of Baton's
references (it never should)."""

import hashlib
import json


def make(seed, n):
    """The N characters produce returns for seed (the test builds the same)."""
    unit = (seed + "0123456789abcdef") * 4
    reps = n // len(unit) + 1
    return (unit * reps)[:n]


def produce(event, context):
    return {"data": make(event.get("seed", "s"), int(event["n"]))}


def consume(event, context):
    blob = event.get("blob", event) if isinstance(event, dict) else {}
    data = blob.get("data", "") if isinstance(blob, dict) else ""
    return {
        "sha256": hashlib.sha256(data.encode()).hexdigest(),
        "len": len(data),
        "i": event.get("i") if isinstance(event, dict) else None,
        "sawReference": "$baton.transfer" in json.dumps(event),
    }
