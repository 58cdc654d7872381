"""A Python function of Baton's code layer test (codelayer_test.go): it
reports which code it runs, what it sees at /var/task and whether it can
write there. The Go test decides."""

import errno
import os


def code(event, context):
    task = os.environ["LAMBDA_TASK_ROOT"]
    with open(os.path.join(task, "VERSION")) as f:
        version = f.read().strip()
    out = {
        "taskRoot": task,
        "version": version,
        "pidns": os.readlink("/proc/self/ns/pid"),
        "listing": sorted(os.listdir("/var/task")),
        "writes": {},
        "mount": "",
    }
    for p in (os.path.join(task, "app.py"), os.path.join(task, "new"), "/var/task/new"):
        try:
            with open(p, "a"):
                pass
            out["writes"][p] = "ok"
        except OSError as e:
            out["writes"][p] = errno.errorcode.get(e.errno, str(e.errno))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if fields[4] == task:
                out["mount"] = rfields[0] + " " + fields[5]
    return out
