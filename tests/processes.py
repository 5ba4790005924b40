"""The tests' one scan of /proc (:func:`processes`) and the process helpers built on it, for the
tests, the benchmarks and the simulated remote systems.

Standard library only: tests/compat/test_upgrade.py copies this file beside
tests/compat/legacy_sim.py, which the original package's venv imports (``from processes import ...``).
"""

import asyncio
import os
import signal
from typing import NamedTuple


class Process(NamedTuple):
    pid: int
    ppid: int
    pgid: int
    name: str  # the kernel's name of it (/proc/PID/comm: the executable's, at most 15 characters)
    argv: list  # the command line, as str

    @property
    def cmdline(self):
        """The command line as one string, NUL-separated (a marker is found in it wherever it is)."""
        return "\0".join(self.argv)


def processes(matching=None):
    """The live processes (zombies are not), each a :class:`Process`; only those for which
    ``matching(process)`` is true when given."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # it ended meanwhile
            continue
        head, _, tail = stat.rpartition(b")")  # "PID (NAME) STATE PPID PGID ...": NAME may hold ")"
        fields = tail.split()
        if len(fields) < 3 or fields[0] == b"Z":
            continue
        if cmdline.endswith(b"\0"):
            cmdline = cmdline[:-1]
        argv = [os.fsdecode(a) for a in cmdline.split(b"\0")] if cmdline else []
        process = Process(int(entry), int(fields[1]), int(fields[2]), os.fsdecode(head.partition(b"(")[2]), argv)
        if matching is None or matching(process):
            found.append(process)
    return found


def processes_with(marker):
    """PIDs of live processes whose command line contains ``marker``."""
    return [p.pid for p in processes(lambda p: marker in p.cmdline)]


def _is_ssh_with(process, marker):
    return bool(process.argv) and process.argv[0].endswith("ssh") and any(marker in a for a in process.argv)


def ssh_processes(marker):
    """PIDs of live ssh client processes with ``marker`` in an argument (e.g. a control directory)."""
    return [p.pid for p in processes(lambda p: _is_ssh_with(p, marker))]


def ssh_masters(marker):
    """PIDs of live ssh ControlMasters (``ssh -M``) with ``marker`` in an argument: unlike
    :func:`ssh_processes`, never the short-lived ``ssh -O check`` clients of their supervision."""
    return [p.pid for p in processes(lambda p: _is_ssh_with(p, marker) and "-M" in p.argv)]


def process_environ(pid):
    """The environment ``pid`` was started with."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(os.fsdecode(item).split("=", 1) for item in f.read().split(b"\0") if b"=" in item)


def process_alive(pid):
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def stop_process_group(pid, grace=5.0):
    """SIGTERM the process group of ``pid`` (its leader), SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(int(grace * 10)):
        if not process_alive(pid):
            return
        await asyncio.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
