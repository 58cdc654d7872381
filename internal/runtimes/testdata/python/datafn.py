# Uses Baton's data layers through `from baton import data`.
from baton import data


def handler(event, context):
    data.put("k/bytes", b"\x00\xffraw")
    data.put("k/str", "h\u00e9llo")
    data.put("k/json", {"a": [1, None, True]})
    data.put("k/local", "here", scope="local")
    out = {
        "bytes": list(data.get("k/bytes")),
        "str": data.get("k/str"),
        "json": data.get("k/json"),
        "local": data.get("k/local", scope="local"),
        "localFromGlobal": data.get("k/local", scope="global"),
        "missing": data.get("k/missing"),
    }
    data.delete("k/str")
    out["deleted"] = data.get("k/str")
    try:
        data.put("bad/../key", "x")
    except data.DataError as e:
        out["badKey"] = [e.status, e.type]
    return out
