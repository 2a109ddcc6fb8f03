"""What a command starts ends with it, even when it is killed (SIGKILL included).

`tie_descendants()` starts a small watcher process (Linux: it reads /proc) that notes every
process descended from the command (Prefect's ephemeral API server, local Ray's processes,
reader workers) every `POLL_S` seconds, and once the command is gone sends the ones still
running SIGTERM, then SIGKILL after `GRACE_S`. A server started by `posecoach server start` is
not a descendant of later commands and lives on; `server start` itself does not arm a watcher.
"""

from __future__ import annotations

import os
import subprocess
import sys

POLL_S = 0.5
GRACE_S = 3.0

WATCHER = r"""
import os, signal, sys, time
parent, poll, grace = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
me = os.getpid()

def children_of():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids

def descendants():
    kids, found, todo = children_of(), set(), [parent]
    while todo:
        for pid in kids.get(todo.pop(), []):
            if pid != me and pid not in found:
                found.add(pid)
                todo.append(pid)
    return found

def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat[stat.rindex(")") + 2:].split()[19]
    except OSError:
        return None

seen = {}
while os.getppid() == parent:
    for pid in descendants():
        seen.setdefault(pid, start_time(pid))
    time.sleep(poll)
left = [p for p, t in seen.items() if t is not None and start_time(p) == t]
for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in left:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while sig == signal.SIGTERM and any(alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in left if alive(p)]
"""

_armed = False


def tie_descendants() -> bool:
    """Arm the watcher for this process (once); False where /proc is not there to read."""
    global _armed
    if _armed or not os.path.isdir("/proc/self/task"):
        return False
    subprocess.Popen([sys.executable, "-S", "-c", WATCHER, str(os.getpid()), str(POLL_S),
                      str(GRACE_S)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    _armed = True
    return True
