import time


def handler(event, context):
    # A no-op unless the event asks it to sleep (sleep_ms), which the
    # benchmarks use to keep an instance busy.
    if isinstance(event, dict) and event.get("sleep_ms"):
        time.sleep(event["sleep_ms"] / 1000.0)
    return {"ok": True}
