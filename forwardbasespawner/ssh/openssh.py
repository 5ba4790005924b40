"""OpenSSH ControlMasters: pure argv builders, and the manager that runs them.

One master process per jump-node identity holds the SSH connection; forwards are added to and
removed from it with ``ssh -S <socket> -O forward|cancel``, so tunnel traffic moves in ssh's own
processes, never in the Hub's event loop. Every command is an argv list; no shell is involved.
"""

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import stat
import time

from ..errors import ForwardError, TunnelError
from .master import Master
from .spec import Endpoint, Forward

# ---------------------------------------------------------------- pure builders


def connection_options(endpoint: Endpoint, *, known_hosts, strict_host_key_checking="yes", ciphers="",
                       alive_interval=5, alive_count=3, connect_timeout=10):  # fmt: skip
    """The ssh options of a connection to ``endpoint`` (host key checking, keep-alives, identity).

    The endpoint's own options (the operator's ``ssh_forward_options``, from an allow-list) come
    first: ssh keeps the first value it reads, so they override this library's keep-alives,
    timeout and ciphers. Host-key checking and the identity are never among them.
    """
    own = dict(endpoint.options)
    argv = []
    for name, value in endpoint.options:
        argv += ["-o", f"{name}={value}"]
    argv += [
        "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={endpoint.known_hosts or known_hosts}",
        "-o", f"StrictHostKeyChecking={endpoint.strict_host_key_checking or strict_host_key_checking}",
        "-o", f"ServerAliveInterval={int(alive_interval)}",
        "-o", f"ServerAliveCountMax={int(alive_count)}",
        "-o", f"ConnectTimeout={int(connect_timeout)}",
        "-p", str(endpoint.port),
    ]  # fmt: skip
    if ciphers and "Ciphers" not in own:  # -c would win over the operator's Ciphers option
        argv += ["-c", ciphers]
    if endpoint.key:
        argv += ["-i", endpoint.key, "-o", "IdentitiesOnly=yes"]
    if endpoint.user:
        argv += ["-l", endpoint.user]
    return argv


def master_argv(endpoint: Endpoint, control_path, *, ssh="ssh", log_file=None, **options):
    """The command line of a ControlMaster for ``endpoint`` (no forwards: they are added later).
    ``log_file``: where ssh writes its messages (``-E``) instead of standard error, so that the
    master does not depend on the Hub reading a pipe. ``options`` are those of
    :func:`connection_options`."""
    return [
        ssh, "-M", "-N", "-T", "-S", control_path,
        "-o", "ControlPersist=no", "-o", "ExitOnForwardFailure=no",
        *(["-E", log_file] if log_file else []),
        *connection_options(endpoint, **options),
        "--", endpoint.host,
    ]  # fmt: skip


def control_argv(endpoint: Endpoint, control_path, command, forward: Forward = None, *, ssh="ssh", more=()):
    """``ssh -S <socket> -O <command> [-L|-R spec ...] -- host``: talk to a running master.

    ``more`` adds further forwards to the same call (ssh sends them one after another).
    """
    if command not in ("check", "forward", "cancel", "exit"):
        raise ValueError(f"unknown control command {command!r}")
    argv = [ssh, "-S", control_path, "-O", command]
    for each in ([forward] if forward is not None else []) + list(more):
        argv += [f"-{each.kind}", each.argument()]
    return argv + ["--", endpoint.host]


def control_dir(path):
    """Create (or check) the private directory of the control sockets: ours, 0700, no symlink."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"{path} must be a directory owned by this user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


_ALLOCATED_PORT = re.compile(rb"^(\d{1,5})\s*$", re.M)
_MASTER_PID = re.compile(rb"pid=(\d+)")
LOG_MAX_BYTES = 256 * 1024


def read_log_tail(path, lines=5):
    """The last non-empty lines of a master's log file (its reasons), or []."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()][-lines:]


def truncate_log(path):
    """Start a master's log afresh (ssh appends to it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)


def process_exit(pid):
    """A future that completes when process ``pid`` (not a child of ours) exits, or None if it is
    gone already. Uses a pidfd (Linux 5.3+), else looks every second."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except (AttributeError, OSError):  # no pidfd: look now and then
        if not _alive(pid):
            return None

        async def watch():
            while _alive(pid):
                await asyncio.sleep(1)
            if not future.done():
                future.set_result(None)

        future.watcher = asyncio.ensure_future(watch())  # keep a reference
        return future

    def readable():
        loop.remove_reader(fd)
        os.close(fd)
        if not future.done():
            future.set_result(None)

    loop.add_reader(fd, readable)
    return future


def read_journal(path):
    """``(Endpoint, [Forward], pid)`` from a master's journal, or None if it is missing or damaged."""
    try:
        with open(path) as f:
            data = json.load(f)
        endpoint = data["endpoint"]
        endpoint["options"] = tuple(tuple(pair) for pair in endpoint.get("options") or ())
        pid = data.get("pid")
        pid = pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1 else None
        return Endpoint(**endpoint), [Forward(*item) for item in data.get("forwards") or []], pid
    except (OSError, ValueError, KeyError, TypeError):  # InvalidSpec is a ValueError
        return None


def stop_stale_master(pid, control_path):
    """SIGTERM ``pid`` if it is an ssh master of ``control_path`` (checked in its command line):
    one that no longer answers on its socket, which is about to be removed."""
    if not pid:
        return
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return
    if argv and argv[0].endswith(b"ssh") and control_path.encode() in argv:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

# ---------------------------------------------------------------- effects




async def run_argv(argv, timeout=30):
    """Run ``argv`` (no shell); return ``(returncode, stdout, stderr)``."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out, err


def _last_line(err):
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message from ssh"


class ControlMaster(Master):
    """One ssh ControlMaster process and the forwards that should exist on it.

    The process does not belong to the Hub: it runs in its own session and logs to a file beside
    its control socket (``<socket>.log``), so it keeps serving while the Hub restarts or after the
    Hub was killed. A Hub that starts *adopts* a master that answers on its socket instead of
    starting another one; the forwards it carries are listed in ``<socket>.forwards``.
    """

    def __init__(self, endpoint, control_path, master_args, log, *, ssh="ssh", start_timeout=10):
        super().__init__(endpoint, master_args, log, start_timeout=start_timeout)  # master_argv's keywords
        self.control_path = control_path
        self.log_path = control_path + ".log"
        self.journal_path = control_path + ".forwards"
        self.ssh = ssh
        self.process = None  # the ssh process when this Hub started it
        self.pid = None  # its pid, started here or adopted
        self.adopted = False
        self._exited = None
        self._queued = []  # (Forward, future) waiting to go to ssh together
        self._flusher = None

    @property
    def up(self):
        """Started, authenticated and answering (not merely a process that is still connecting)."""
        return self.started_at is not None and self._exited is not None and not self._exited.done()

    def wait_closed(self):
        """A future that completes when the current master process exits (one per process)."""
        return self._exited

    def exit_reason(self):
        lines = read_log_tail(self.log_path)
        if lines:
            return lines[-1]
        if self.process is not None and self.process.returncode is not None:
            return f"exit code {self.process.returncode}"
        return "the ssh process ended"

    # ---- the journal: which forwards this master carries, for the next Hub process
    def save_journal(self):
        """Write the wanted forwards and the endpoint beside the socket (atomically, 0600)."""
        data = {
            "pid": self.pid,
            "endpoint": dataclasses.asdict(self.endpoint),
            "forwards": [dataclasses.astuple(f) for f in self.wanted],
        }
        tmp = f"{self.journal_path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, self.journal_path)
        except OSError as e:
            self.log.warning("Could not write %s: %s", self.journal_path, e)

    async def adopt(self):
        """Take over a master that already answers on this socket (started by an earlier Hub
        process); return True if there was one."""
        if not os.path.exists(self.control_path):
            return False
        try:
            rc, out, err = await run_argv(control_argv(self.endpoint, self.control_path, "check", ssh=self.ssh), 10)
        except asyncio.TimeoutError:
            return False
        found = _MASTER_PID.search(out + err)
        if rc != 0 or not found:
            return False
        pid = int(found.group(1))
        exited = process_exit(pid)
        if exited is None:
            return False
        self.pid, self.process, self.adopted, self._exited = pid, None, True, exited
        self.started_at = time.monotonic()
        self.log.info("ssh master to %s adopted (pid %d)", self.endpoint.describe(), pid)
        return True

    async def _start(self):
        if await self.adopt():
            return
        journal = read_journal(self.journal_path)
        if journal is not None:
            stop_stale_master(journal[2], self.control_path)  # a hung master must not outlive its socket
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)  # a stale socket of a dead master
        truncate_log(self.log_path)
        argv = master_argv(self.endpoint, self.control_path, ssh=self.ssh, log_file=self.log_path, **self.master_args)
        self.started_at = None
        started = time.monotonic()
        self.process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.pid, self.adopted = self.process.pid, False
        exit_wait = self._exited = asyncio.ensure_future(self.process.wait())
        try:
            while time.monotonic() - started < self.start_timeout:
                if exit_wait.done():
                    lines = read_log_tail(self.log_path)
                    reason = lines[-1] if lines else "no message from ssh"
                    raise TunnelError(f"ssh to {self.endpoint.describe()} failed: {reason}")
                if os.path.exists(self.control_path):
                    rc, _, _ = await run_argv(control_argv(self.endpoint, self.control_path, "check", ssh=self.ssh), 10)
                    if rc == 0:
                        self.started_at = time.monotonic()
                        self.log.info("ssh master to %s up in %.0f ms", self.endpoint.describe(), (self.started_at - started) * 1000)
                        return
                # the master has no readiness signal but its socket; this wait is start-up only
                await asyncio.wait([exit_wait], timeout=0.02)
            raise TunnelError(f"ssh to {self.endpoint.describe()} did not come up within {self.start_timeout}s")
        except BaseException:
            await self._kill()
            raise

    async def _kill(self):
        self.started_at = None
        if self._exited is not None and not self._exited.done() and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await asyncio.shield(self._exited)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)

    async def add(self, forward: Forward):
        """Add ``forward``; return the port the far end allocated (remote forwards with port 0).

        Local forwards requested at about the same time (many spawns at once) go to ssh together,
        one process start for up to ``BATCH`` of them.
        """
        self.wanted[forward] = None
        try:
            if forward.kind == "L":
                await self.ensure_up()
                return await self._add_coalesced(forward)
            return await self._add(forward)
        except BaseException:
            self.wanted.pop(forward, None)
            raise

    BATCH = 64

    async def _add_coalesced(self, forward):
        future = asyncio.get_running_loop().create_future()
        self._queued.append((forward, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        # shielded: the forward is being made either way; a cancelled caller's add() removes it again
        # from `wanted`, and the next restore or exit takes care of the listener
        return await asyncio.shield(future)

    async def _flush(self):
        await asyncio.sleep(0)  # let the callers of this loop iteration join the batch
        batch = []
        try:
            while self._queued:
                batch, self._queued = self._queued[: self.BATCH], self._queued[self.BATCH :]
                forwards = [f for f, _ in batch]
                error = None
                try:
                    rc, _, _ = await run_argv(
                        control_argv(self.endpoint, self.control_path, "forward", ssh=self.ssh, more=forwards)
                    )
                except Exception as e:  # e.g. a timeout: every caller of this batch learns it
                    rc, error = None, e
                for forward, future in batch:
                    if future.done():
                        continue
                    if rc == 0:
                        future.set_result(None)
                    elif error is not None:
                        future.set_exception(error)
                    else:
                        try:  # one bad forward must not fail the others: find it one by one
                            future.set_result(await self._add(forward))
                        except Exception as e:
                            future.set_exception(e)
        finally:
            # never leave a caller waiting, even if this task itself is cancelled
            for _, future in batch + self._queued:
                if not future.done():
                    future.set_exception(TunnelError("the forward request was interrupted"))
            if not self._queued:
                return

    async def _add(self, forward):
        await self.ensure_up()
        rc, out, err = await run_argv(control_argv(self.endpoint, self.control_path, "forward", forward, ssh=self.ssh))
        if rc != 0:
            raise ForwardError(f"forward {forward.argument()} via {self.endpoint.describe()} failed: {_last_line(err)}")
        if forward.kind == "R" and forward.listen_port == 0:
            match = _ALLOCATED_PORT.search(out)
            if not match:
                raise TunnelError(f"ssh did not report the port of {forward.argument()}")
            return self._pin(forward, int(match.group(1)))
        return None

    async def remove(self, forward: Forward):
        """Cancel ``forward``; harmless if it is gone or the master is down."""
        self.wanted.pop(forward, None)
        if not self.up:
            return
        rc, _, err = await run_argv(control_argv(self.endpoint, self.control_path, "cancel", forward, ssh=self.ssh))
        if rc != 0:
            self.log.warning("cancel of %s via %s: %s", forward.argument(), self.endpoint.describe(), _last_line(err))

    async def check(self):
        """Whether the master answers ``-O check`` (a hung one does not, within 10 s)."""
        if not self.up:
            return False
        try:
            rc, _, _ = await run_argv(control_argv(self.endpoint, self.control_path, "check", ssh=self.ssh), 10)
        except asyncio.TimeoutError:
            return False
        return rc == 0

    async def restore(self, concurrency=8, batch=64):
        """Bring the master back and re-add every wanted forward; return the forwards that failed.

        Local forwards go ``batch`` to one ssh call (one process start instead of ``batch``); a batch
        that fails is retried forward by forward, so one bad forward does not take others with it.
        """
        await self.ensure_up()
        gate = asyncio.Semaphore(concurrency)
        failed = []
        local = [f for f in self.wanted if f.kind == "L"]
        batches = [local[i : i + batch] for i in range(0, len(local), batch)]
        singles = [f for f in self.wanted if f.kind != "L"]

        async def readd(forward):
            async with gate:
                try:
                    await self._add(forward)
                except TunnelError as e:
                    failed.append((forward, str(e)))

        async def readd_batch(forwards):
            async with gate:
                argv = control_argv(self.endpoint, self.control_path, "forward", ssh=self.ssh, more=forwards)
                rc, _, _ = await run_argv(argv)
            if rc != 0:
                await asyncio.gather(*(readd(f) for f in forwards))

        await asyncio.gather(*(readd_batch(b) for b in batches), *(readd(f) for f in singles))
        return failed

    async def _exit(self):
        if self.up:
            with contextlib.suppress(asyncio.TimeoutError):
                await run_argv(control_argv(self.endpoint, self.control_path, "exit", ssh=self.ssh), 5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), 5)
        await self._kill()
        for path in (self.journal_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def remote_command_argv(endpoint: Endpoint, action, *, ssh="ssh", **options):
    """``ssh ... -- node <action>``: the original package's server → hub convention, where a
    forced command on the node starts, checks or stops its own tunnel to the Hub.

    ``action`` is start, status or stop, and nothing follows it: forced-command scripts on jump
    nodes match these words literally.
    """
    if action not in ("start", "status", "stop"):
        raise ValueError(f"unknown remote action {action!r}")
    return [ssh, "-T", *connection_options(endpoint, **options), "--", endpoint.host, action]
