"""Python functions of Baton's isolation tests (isolation_test.go).

Each handler attempts, from inside the function, something a container
sandbox must forbid (or must allow) and reports what happened: results,
errno names, what it could see. The handlers never decide; the Go tests do,
so that a test fails with the evidence when isolation breaks.
"""

import ctypes
import errno
import os
import platform
import random
import signal
import socket
import sys
import time

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long

# System call numbers the C library has no wrapper for.
SYSCALLS = {
    "x86_64": {"init_module": 175, "finit_module": 313, "keyctl": 250, "bpf": 321, "kexec_load": 246, "getpid": 39},
    "aarch64": {"init_module": 105, "finit_module": 273, "keyctl": 219, "bpf": 280, "kexec_load": 104, "getpid": 172},
}

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
KEYCTL_GET_KEYRING_ID = 0
KEY_SPEC_SESSION_KEYRING = -3
BPF_MAP_CREATE = 0


def _ev(event):
    return event if isinstance(event, dict) else {}


def _errname(e):
    if e is None:
        return ""
    return errno.errorcode.get(e, str(e))


def _oserror(e):
    return _errname(e.errno) if isinstance(e, OSError) and e.errno else type(e).__name__ + ": " + str(e)


def _ns(kind):
    try:
        return os.readlink("/proc/self/ns/" + kind)
    except OSError as e:
        return "error " + _oserror(e)


def _read(path, limit=4096):
    with open(path, "rb") as f:
        return f.read(limit)


def _function_of(pid):
    """AWS_LAMBDA_FUNCTION_NAME from a process's environment."""
    env = _read("/proc/%d/environ" % pid, 1 << 20)
    for kv in env.split(b"\0"):
        if kv.startswith(b"AWS_LAMBDA_FUNCTION_NAME="):
            return kv.split(b"=", 1)[1].decode("utf-8", "replace")
    return ""


def procs(event, context):
    """Lists every process this function can see in /proc, with its command
    line and (where readable) the function it belongs to, and names the
    namespaces it runs in. It also writes the function's name into each
    file of {"leave": [...]} and reads each of {"look": [...]}, so that
    functions can look for each other's traces in /tmp and /dev/shm."""
    ev = _ev(event)
    left = {}
    for p in ev.get("leave", []):
        try:
            with open(p, "w") as f:
                f.write(context.function_name)
            left[p] = "ok"
        except OSError as e:
            left[p] = _oserror(e)
    found = {}
    for p in ev.get("look", []):
        try:
            found[p] = _read(p).decode("utf-8", "replace")
        except OSError as e:
            found[p] = "error " + _oserror(e)
    seen = []
    for name in sorted(os.listdir("/proc")):
        if not name.isdigit():
            continue
        pid = int(name)
        entry = {"pid": pid}
        try:
            entry["cmdline"] = _read("/proc/%d/cmdline" % pid).replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError as e:
            entry["cmdlineError"] = _oserror(e)
        try:
            entry["function"] = _function_of(pid)
        except OSError as e:
            entry["environError"] = _oserror(e)
        seen.append(entry)
    return {
        "function": context.function_name,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "hostname": socket.gethostname(),
        "pidns": _ns("pid"),
        "mntns": _ns("mnt"),
        "netns": _ns("net"),
        "utsns": _ns("uts"),
        "ipcns": _ns("ipc"),
        "procs": seen,
        "left": left,
        "found": found,
    }


def files(event, context):
    """Tries to see, list and read each of {"paths": [...]}; $NAME in a path
    stands for the function's environment variable NAME. Results are keyed
    by the path as given, and say which path was tried."""
    out = {}
    for given in _ev(event).get("paths", []):
        p = os.path.expandvars(given)
        r = {"path": p, "exists": os.path.lexists(p)}
        try:
            os.stat(p)
            r["stat"] = "ok"
        except OSError as e:
            r["stat"] = _oserror(e)
        try:
            r["entries"] = len(os.listdir(p))
            r["list"] = "ok"
        except OSError as e:
            r["list"] = _oserror(e)
        try:
            data = _read(p, 256)
            r["read"] = "ok"
            r["content"] = data.decode("utf-8", "replace")
        except OSError as e:
            r["read"] = _oserror(e)
        out[given] = r
    return out


def _mounts():
    """Mount point -> {"fstype", "options"} from /proc/self/mountinfo (the
    last mount wins, as path lookup does)."""
    out = {}
    for line in _read("/proc/self/mountinfo", 1 << 20).decode().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        out[fields[4]] = {"fstype": rfields[0], "options": fields[5] + "," + rfields[2]}
    return out


def write(event, context):
    """Tries to create or overwrite each of {"paths": [...]} ($TASK stands
    for the function's code directory) and reports the mounts of /, /tmp
    and the code directory."""
    task = os.environ.get("LAMBDA_TASK_ROOT", "")
    out = {"taskRoot": task, "uid": os.getuid(), "gid": os.getgid(), "results": {}}
    for p in _ev(event).get("paths", []):
        path = p.replace("$TASK", task)
        try:
            with open(path, "a") as f:
                f.write("written by an isolation test\n")
            with open(path) as f:
                f.read()
            out["results"][p] = "ok"
            if path.startswith("/tmp/"):
                os.unlink(path)
        except OSError as e:
            out["results"][p] = _oserror(e)
    mounts = _mounts()
    out["mounts"] = {k: mounts.get(k) for k in ("/", "/tmp", "/var/task")}
    return out


def _call(fn, *args):
    ctypes.set_errno(0)
    r = fn(*args)
    e = ctypes.get_errno()
    return {"ret": int(r), "errno": _errname(e) if r == -1 else ""}


def _syscall(name, *args):
    nr = SYSCALLS.get(platform.machine(), {}).get(name)
    if nr is None:
        return {"ret": 0, "errno": "unknown system call number on " + platform.machine()}
    return _call(LIBC.syscall, ctypes.c_long(nr), *args)


def _status():
    out = {}
    for line in _read("/proc/self/status", 1 << 16).decode().splitlines():
        k, _, v = line.partition(":")
        if k in ("Uid", "Gid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
            out[k] = " ".join(v.split())
    return out


def syscalls(event, context):
    """Attempts what the seccomp profile and the missing capabilities must
    refuse; each result is {"ret", "errno"}. getpid is the control: it shows
    that the calls themselves are made correctly."""
    out = {"status": _status(), "machine": platform.machine()}
    out["getpid"] = _syscall("getpid")
    os.makedirs("/tmp/mnt", exist_ok=True)
    out["mount"] = _call(LIBC.mount, b"none", b"/tmp/mnt", b"tmpfs", ctypes.c_ulong(0), None)
    out["umount"] = _call(LIBC.umount2, b"/tmp", ctypes.c_int(0))
    out["init_module"] = _syscall("init_module", ctypes.c_char_p(b"\0" * 64), ctypes.c_ulong(64), ctypes.c_char_p(b""))
    fd = os.open(sys.executable, os.O_RDONLY)
    try:
        out["finit_module"] = _syscall("finit_module", ctypes.c_long(fd), ctypes.c_char_p(b""), ctypes.c_long(0))
    finally:
        os.close(fd)
    out["kexec_load"] = _syscall("kexec_load", ctypes.c_ulong(0), ctypes.c_ulong(0), None, ctypes.c_ulong(0))
    out["keyctl"] = _syscall("keyctl", ctypes.c_long(KEYCTL_GET_KEYRING_ID), ctypes.c_long(KEY_SPEC_SESSION_KEYRING), ctypes.c_long(1))
    attr = ctypes.create_string_buffer(128)
    # BPF_MAP_CREATE of a 1-entry array map: allowed to root without seccomp.
    ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)
    out["bpf"] = _syscall("bpf", ctypes.c_long(BPF_MAP_CREATE), attr, ctypes.c_ulong(128))
    out["unshare_user"] = _call(LIBC.unshare, ctypes.c_int(CLONE_NEWUSER))
    out["unshare_net"] = _call(LIBC.unshare, ctypes.c_int(CLONE_NEWNET))
    out["unshare_mnt"] = _call(LIBC.unshare, ctypes.c_int(CLONE_NEWNS))
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        out["setns"] = _call(LIBC.setns, ctypes.c_int(fd), ctypes.c_int(0))
    finally:
        os.close(fd)
    # ptrace of a sibling: a child of this very process, which an
    # unprivileged process may trace unless something forbids it.
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        try:
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    try:
        out["ptrace_attach"] = _call(LIBC.ptrace, ctypes.c_long(PTRACE_ATTACH), ctypes.c_long(child), None, None)
        if out["ptrace_attach"]["ret"] == 0:
            os.waitpid(child, 0)  # the attach stop
            LIBC.ptrace(ctypes.c_long(PTRACE_DETACH), ctypes.c_long(child), None, None)
    finally:
        os.close(w)
        os.waitpid(child, 0)
    # Signalling the sandbox's PID 1 (its reaper, run as root).
    try:
        os.kill(1, 0)
        out["kill_pid1"] = "ok"
    except OSError as e:
        out["kill_pid1"] = _oserror(e)
    return out


def net(event, context):
    """Connects to {"host", "port"} and, unless {"read": false}, reads what
    the peer says; lists the network interfaces this function can see."""
    ev = _ev(event)
    out = {"netns": _ns("net")}
    try:
        out["interfaces"] = sorted(name for _, name in socket.if_nameindex())
    except OSError as e:
        out["interfaces"] = []
        out["interfacesError"] = _oserror(e)
    try:
        out["sysClassNet"] = sorted(os.listdir("/sys/class/net"))
    except OSError as e:
        out["sysClassNet"] = _oserror(e)
    if "port" in ev:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(float(ev.get("timeout", 3)))
        out["connected"] = False
        try:
            s.connect((ev.get("host", "127.0.0.1"), int(ev["port"])))
            out["connected"] = True
            if ev.get("read", True):
                out["data"] = s.recv(256).decode("utf-8", "replace")
        except socket.timeout:
            out["error"] = "timeout"
        except OSError as e:
            out["error"] = _oserror(e)
        finally:
            s.close()
    return out


def runtimeapi(event, context):
    """Reports AWS_LAMBDA_RUNTIME_API and whether a TCP connection to it,
    or to {"probe": "host:port"} (another sandbox's endpoint), succeeds.
    A connection is closed at once: nothing is sent."""
    own = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
    out = {"runtimeApi": own, "netns": _ns("net")}
    for key, addr in (("own", own), ("probe", _ev(event).get("probe", ""))):
        if not addr:
            continue
        host, _, port = addr.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect((host, int(port)))
            out[key] = "connected"
        except socket.timeout:
            out[key] = "timeout"
        except OSError as e:
            out[key] = _oserror(e)
        finally:
            s.close()
    return out


def hog(event, context):
    """Allocates and touches {"mb": N} megabytes, 8 MB at a time."""
    mb = int(_ev(event).get("mb", 0))
    chunks = []
    for _ in range(0, mb, 8):
        chunks.append(b"\x01" * (8 << 20))  # bytes are filled: every page is touched
    return {"allocatedMB": len(chunks) * 8, "pid": os.getpid(), "pidns": _ns("pid")}


def forkbomb(event, context):
    """Forks until fork fails (or {"max": N} children, or {"seconds": S}
    pass); every child blocks on a pipe and exits when this process closes
    it. Reports how many forks succeeded and why the next one failed."""
    ev = _ev(event)
    limit = int(ev.get("max", 400))
    deadline = time.time() + float(ev.get("seconds", 10))
    r, w = os.pipe()
    kids = []
    failure = None
    while len(kids) < limit and time.time() < deadline:
        try:
            pid = os.fork()
        except OSError as e:
            failure = e
            break
        if pid == 0:
            try:
                os.close(w)
                os.read(r, 1)
            finally:
                os._exit(0)
        kids.append(pid)
    os.close(w)
    os.close(r)
    for pid in kids:
        os.waitpid(pid, 0)
    return {"forks": len(kids), "error": _oserror(failure) if failure else "", "pidns": _ns("pid")}


def forkforever(event, context):
    """A fork bomb that does not stop by itself: every process forks again
    and again, pausing briefly whenever fork fails. Once fork has failed
    (the sandbox is full), a process other than the instance itself exits
    now and then ({"churn": P} per failed fork): nobody waits for it, so
    its PID stays taken, and its children are re-parented to the sandbox's
    PID 1, which must reap them when they exit in turn, while the sandbox is
    at its PID limit. Every process stops after {"seconds": S} (a bound for
    the test's sake, beyond the function's timeout). It never answers."""
    ev = _ev(event)
    end = time.time() + float(ev.get("seconds", 20))
    churn = float(ev.get("churn", 0))
    top = os.getpid()
    while time.time() < end:
        try:
            os.fork()
        except OSError:
            if churn and os.getpid() != top and random.random() < churn:
                os._exit(0)
            time.sleep(0.05)
    os._exit(0)


def daemon(event, context):
    """Leaves a process behind: a grandchild in its own session that sleeps
    for ten minutes, as a function that escapes its invocation would.
    Reports the grandchild's pid (as the sandbox sees it)."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        os.setsid()
        grandchild = os.fork()
        if grandchild == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            for fd in (0, 1, 2):
                try:
                    os.close(fd)
                except OSError:
                    pass
            time.sleep(600)
            os._exit(0)
        os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    pid = int(os.read(r, 32) or b"0")
    os.close(r)
    return {"daemon": pid, "pid": os.getpid(), "pidns": _ns("pid")}


def listfunctions(event, context):
    """Tries to list the server's functions: reads the API token file if
    it can, then calls GET /v1/functions with whatever token it has."""
    import urllib.error
    import urllib.request
    ev = _ev(event)
    out = {"tokenRead": False}
    headers = {}
    try:
        with open(ev["tokenFile"]) as f:
            headers["Authorization"] = "Bearer " + f.read().strip()
            out["tokenRead"] = True
    except OSError as e:
        out["tokenError"] = _oserror(e)
    req = urllib.request.Request("http://127.0.0.1:%d/v1/functions" % ev["port"], headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            out["status"] = resp.status
            out["body"] = resp.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        out["status"] = e.code
        out["body"] = e.read(4096).decode("utf-8", "replace")
    except OSError as e:
        out["error"] = _oserror(e)
    return out
