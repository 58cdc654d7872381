import os
import time

# What this instance keeps between invocations (BenchmarkMemoryReclaim).
_held = []
_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data.bin")


def handler(event, context):
    # A no-op (the probe of the remaining instance) unless the event names
    # a slot: then the instance keeps anon_mb MiB of anonymous memory and
    # reads its slot's cache_mb MiB of data.bin into the page cache, and
    # holds the invocation until `until` so that every slot gets an instance.
    if not isinstance(event, dict) or "slot" not in event:
        return {"ok": True}
    mib = 1 << 20
    _held[:] = [bytearray(b"\x01") * (event["anon_mb"] * mib)]
    buf = bytearray(mib)
    left, read = event["cache_mb"] * mib, 0
    with open(_data, "rb", buffering=0) as f:
        f.seek(event["slot"] * event["cache_mb"] * mib)
        while left > 0:
            n = f.readinto(buf)
            if not n:
                break
            left -= n
            read += n
    # Every growth event ends at the same moment (until, seconds since the
    # epoch), so that the instances go idle, and are scaled down, together.
    time.sleep(max(0.0, event.get("until", 0) - time.time()))
    return {"read": read, "pid": os.getpid()}
