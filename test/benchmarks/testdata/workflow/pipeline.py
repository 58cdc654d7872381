"""SAND's image pipeline for BenchmarkWorkflowPipeline: extract metadata,
transform, thumbnail, store. Images are raw RGB, made deterministically in
pure Python (no imaging library needed).

How images travel between the steps is the event's "pass":
  "inline"       base64 in the JSON event;
  "file"         a path in /tmp, which the functions of one app share (one
                 sandbox per app per host);
  "data-local", "data-global"
                 a key in Baton's data layer (from baton import data), when
                 the runtime has it.

Every function reports its own time in "t": entry and exit (time.time_ns,
one clock on the machine), "compute" (the image work) and "io" (putting
and getting images), in nanoseconds."""

import base64
import hashlib
import os
import time

try:
    from baton import data as _data
except ImportError:  # a runtime without the data layer
    _data = None

REF_DIR = "/tmp/baton-wf-pipeline"

# _ROW is a row of the base pattern; _SHIFT[k] adds k to every byte.
_ROW_LEN = 4096 * 3
_ROW = bytes((x * 7) & 0xFF for x in range(_ROW_LEN))
_SHIFT = [bytes((i + k) & 0xFF for i in range(256)) for k in range(256)]
_INVERT = bytes(255 - i for i in range(256))


def image(seed, side):
    """A side x side RGB image, the same for the same seed."""
    row = _ROW[: side * 3]
    return b"".join(row.translate(_SHIFT[(y * 3 + seed) & 0xFF]) for y in range(side))


def _timed(event, name, started, compute, io):
    t = dict(event.get("t") or {})
    t[name] = {"in": started, "out": time.time_ns(), "compute": compute, "io": io}
    return t


def _put(event, name, img):
    mode = event.get("pass", "inline")
    if mode == "inline":
        return {"b64": base64.b64encode(img).decode("ascii")}
    key = "wfbench/%s/%s" % (event["run"], name)
    if mode == "file":
        os.makedirs(REF_DIR, exist_ok=True)
        path = os.path.join(REF_DIR, key.replace("/", "_"))
        with open(path, "wb") as f:
            f.write(img)
        return {"path": path}
    if _data is None:
        raise RuntimeError("this runtime has no data layer (from baton import data)")
    _data.put(key, img, scope=mode[len("data-"):])
    return {"key": key}


def _get(ref):
    if "b64" in ref:
        return base64.b64decode(ref["b64"])
    if "path" in ref:
        with open(ref["path"], "rb") as f:
            return f.read()
    img = _data.get(ref["key"])
    if img is None:
        raise RuntimeError("image %s is not in the data layer" % ref["key"])
    return img


def _drop(ref):
    if "path" in ref:
        try:
            os.remove(ref["path"])
        except FileNotFoundError:
            pass
    elif "key" in ref:
        _data.delete(ref["key"])


def extract(event, context):
    """Decodes the upload (here: makes the image from its seed) and
    extracts its metadata."""
    t0 = time.time_ns()
    side = int(event.get("side", 512))
    img = image(int(event.get("seed", 0)), side)
    meta = {"width": side, "height": side, "channels": 3, "bytes": len(img), "mean": sum(img) // len(img)}
    t1 = time.time_ns()
    ref = _put(event, "original", img)
    io = time.time_ns() - t1
    return {"run": event.get("run"), "pass": event.get("pass", "inline"), "meta": meta, "image": ref,
            "t": _timed(event, "extract", t0, t1 - t0, io)}


def _derive(event, name, fn):
    t0 = time.time_ns()
    img = _get(event["image"])
    t1 = time.time_ns()
    out = fn(img, event["meta"])
    t2 = time.time_ns()
    ref = _put(event, name, out)
    io = (t1 - t0) + (time.time_ns() - t2)
    res = {"run": event.get("run"), "pass": event.get("pass"), "kind": name, "image": ref, "bytes": len(out),
           "t": _timed(event, name, t0, t2 - t1, io)}
    if "b64" not in event["image"]:
        res["original"] = event["image"]  # for store to drop; never inline
    return res


def _invert(img, meta):
    return img.translate(_INVERT)


def _thumbnail(img, meta):
    """Every 4th pixel of every 4th row."""
    w, h = meta["width"], meta["height"]
    stride = w * 3
    rows = []
    for y in range(0, h, 4):
        row = img[y * stride:(y + 1) * stride]
        out = bytearray(len(range(0, w, 4)) * 3)
        out[0::3], out[1::3], out[2::3] = row[0::12], row[1::12], row[2::12]
        rows.append(bytes(out))
    return b"".join(rows)


def transform(event, context):
    return _derive(event, "transform", _invert)


def thumbnail(event, context):
    return _derive(event, "thumbnail", _thumbnail)


def store(event, context):
    """Stores the results (here: their checksums) and drops the
    references."""
    t0 = time.time_ns()
    parts = event if isinstance(event, list) else [event]
    imgs, t, drop = [], {}, []
    for p in parts:
        imgs.append((p.get("kind", "original"), _get(p["image"])))
        t.update(p.get("t") or {})
        drop += [r for r in (p["image"], p.get("original")) if r]
    t1 = time.time_ns()
    sums = {kind: hashlib.sha256(img).hexdigest()[:16] for kind, img in imgs}
    t2 = time.time_ns()
    seen = set()
    for r in drop:
        ident = r.get("path") or r.get("key")
        if ident and ident not in seen:
            seen.add(ident)
            _drop(r)
    io = (t1 - t0) + (time.time_ns() - t2)
    return {"stored": sums, "t": _timed({"t": t}, "store", t0, t2 - t1, io)}
