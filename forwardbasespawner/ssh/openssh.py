"""The OpenSSH backend: pure argv builders and parsers of ssh's answers, the effects that run
ssh and read what its masters leave (logs, journals, /proc), and :class:`ControlMaster`.

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
import time

from ..errors import ForwardError, TunnelError  # (also imported from here, their old place)
from .controldir import control_dir  # (also imported from here, its old place)
from .master import Master
from .sockets import process_listens
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


def remote_command_argv(endpoint: Endpoint, action, *, ssh="ssh", **options):
    """``ssh ... -- node <action>``: the original package's server → hub convention, where a
    forced command on the node starts, checks or stops its own tunnel to the Hub.

    ``action`` is start, status or stop, and nothing follows it: forced-command scripts on jump
    nodes match these words literally.
    """
    if action not in ("start", "status", "stop"):
        raise ValueError(f"unknown remote action {action!r}")
    return [ssh, "-T", *connection_options(endpoint, **options), "--", endpoint.host, action]


# ---------------------------------------------------------------- pure parsers of ssh's answers

_ALLOCATED_PORT = re.compile(rb"^(\d{1,5})\s*$", re.MULTILINE)
_MASTER_PID = re.compile(rb"pid=(\d+)")


def master_pid(output):
    """The pid in a master's answer to ``-O check`` (``Master running (pid=N)``), or None."""
    found = _MASTER_PID.search(output)
    return int(found.group(1)) if found else None


def allocated_port(output):
    """The port the node allocated, from ssh's answer to ``-O forward -R ...:0:...``, or None."""
    found = _ALLOCATED_PORT.search(output)
    return int(found.group(1)) if found else None


def last_line(err):
    """The last non-empty line of ssh's standard error: its reason."""
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message from ssh"


def journal_data(endpoint, forwards, pid):
    """The journal of a master (see :func:`read_journal`), as JSON-ready data."""
    return {
        "pid": pid,
        "endpoint": dataclasses.asdict(endpoint),
        "forwards": [dataclasses.astuple(f) for f in forwards],
    }


# ---------------------------------------------------------------- effects


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


def remove_files(*paths):
    """Remove each of ``paths`` that exists (a directory in their place is left alone)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(path)


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


class ControlMaster(Master):
    """One ssh ControlMaster process and the forwards that should exist on it.

    The process does not belong to the Hub: it runs in its own session and logs to a file beside
    its control socket (``<socket>.log``), so it keeps serving while the Hub restarts or after the
    Hub was killed. A Hub that starts *adopts* a master that answers on its socket instead of
    starting another one; the forwards it carries are listed in its journal, ``<socket>.forwards``.
    """

    def __init__(self, endpoint, control_path, master_args, log, *, ssh="ssh", start_timeout=10, key=None):
        super().__init__(endpoint, control_path, master_args, log, ssh=ssh, start_timeout=start_timeout, key=key)
        self.control_path = control_path
        self.log_path = control_path + ".log"
        self.journal_path = control_path + ".forwards"
        self.ssh = ssh
        self.process = None  # the ssh process when this Hub started it
        self.pid = None  # its pid, started here or adopted
        self.adopted = False
        self._exited = None  # completes when the process with that pid exits
        self._queued = []  # (Forward, future) waiting to go to ssh together
        self._flusher = None

    # ---- the masters of an earlier Hub process
    @classmethod
    async def adopt_all(cls, directory, master_args, log, *, ssh="ssh", start_timeout=10):
        """Every master in ``directory`` that has a journal and answers ``-O check``, adopted."""
        try:
            directory = control_dir(directory)
            keys = sorted({name.split(".", 1)[0] for name in os.listdir(directory) if not name.startswith(".")})
        except OSError as e:  # no adoption then; tunnels are made afresh (never a broken manager)
            log.error("Cannot read the ssh control directory %s: %s", directory, e)
            return
        for key in keys:
            try:
                master = await cls._adopt_left(directory, key, master_args, log, ssh=ssh, start_timeout=start_timeout)
            except Exception:  # one bad entry must not keep the others (or every later tunnel) from working
                log.exception("Adopting the ssh master %s failed", key)
                continue
            if master is not None:
                yield master

    @classmethod
    async def _adopt_left(cls, directory, key, master_args, log, **options):
        """The master of control socket ``key`` if it answers; else None, and what is left of it
        stopped and removed."""
        path = os.path.join(directory, key)
        journal = read_journal(path + ".forwards")
        if journal is None:
            # no record of what it is: leave a socket that may still have a master behind it (a
            # master of ours starting on this path later checks it first), remove the rest
            remove_files(path + ".forwards.tmp")
            return None
        endpoint, forwards, pid = journal
        master = cls(endpoint, path, master_args, log, key=key, **options)
        if await master._take_over():
            master.unclaimed = set(forwards)
            return master
        # it does not answer (dead, or hung): never leave a live master without its socket
        stop_stale_master(pid, path)
        remove_files(path, path + ".forwards", path + ".forwards.tmp", path + ".log")
        return None

    async def _take_over(self):
        """Take over a master that already answers on this socket (started by an earlier Hub
        process, or one of ours whose Hub-side state was lost); return True if there was one."""
        if not os.path.exists(self.control_path):
            return False
        answer = await self._ask_check()
        pid = master_pid(answer[1]) if answer is not None and answer[0] == 0 else None
        if pid is None:
            return False
        exited = process_exit(pid)
        if exited is None:
            return False
        self.pid, self.process, self.adopted, self._exited = pid, None, True, exited
        self.started_at = time.monotonic()
        self.log.info("ssh master to %s adopted (pid %d)", self.endpoint.describe(), pid)
        return True

    # ---- the state of the connection
    @property
    def up(self):
        """Started, authenticated and answering (not merely a process that is still connecting)."""
        return self.started_at is not None and self._exited is not None and not self._exited.done()

    def wait_closed(self):
        """A future that completes when the current master process exits (one per process)."""
        return self._exited

    def exit_reason(self):
        """The last line of the master's log, else its exit code."""
        lines = read_log_tail(self.log_path)
        if lines:
            return lines[-1]
        if self.process is not None and self.process.returncode is not None:
            return f"exit code {self.process.returncode}"
        return "the ssh process ended"

    async def check(self):
        """Whether the master answers ``-O check`` (a hung one does not, within 10 s)."""
        if not self.up:
            return False
        answer = await self._ask_check()
        return answer is not None and answer[0] == 0

    async def _ask_check(self):
        """``-O check``: ``(returncode, what ssh said)``, or None if no answer came within 10 s."""
        try:
            rc, out, err = await run_argv(control_argv(self.endpoint, self.control_path, "check", ssh=self.ssh), 10)
        except asyncio.TimeoutError:
            return None
        return rc, out + err

    def listens(self, port):
        """Whether the ssh process listens on ``port``."""
        return bool(self.pid) and process_listens(self.pid, port)

    # ---- the journal: which forwards this master carries, for the next Hub process
    def save_journal(self):
        """Write the wanted forwards, the endpoint and the pid beside the socket (atomically, 0600)."""
        tmp = f"{self.journal_path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(journal_data(self.endpoint, self.wanted, self.pid), f)
            os.replace(tmp, self.journal_path)
        except OSError as e:
            self.log.warning("Could not write %s: %s", self.journal_path, e)

    # ---- the process
    async def _start(self):
        """Adopt the master that answers on the socket, else start one and wait until it answers."""
        if await self._take_over():
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
            await self.kill()
            raise

    async def kill(self):
        """SIGKILL the master process, wait for its exit, remove its socket."""
        self.started_at = None
        if self._exited is not None and not self._exited.done() and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            await asyncio.shield(self._exited)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.control_path)

    def terminate(self):
        """SIGTERM the master process."""
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def exit(self):
        """``-O exit`` (SIGKILL after 5 s), then its socket, journal and log are removed."""
        return self._exit_once(self._exit)

    async def _exit(self):
        if self.up:
            with contextlib.suppress(asyncio.TimeoutError):
                await run_argv(control_argv(self.endpoint, self.control_path, "exit", ssh=self.ssh), 5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), 5)
        await self.kill()
        for path in (self.journal_path, self.log_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # ---- the forwards
    async def add(self, forward: Forward):
        """Add ``forward`` with ``-O forward``.

        Local forwards requested at about the same time (many spawns at once) go to ssh together,
        one process start for up to ``BATCH`` of them.
        """
        self.wanted[forward] = None
        try:
            if forward.kind == "L":
                await self._start_once(self._start)
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
                    rc, _, _ = await run_argv(control_argv(self.endpoint, self.control_path, "forward", ssh=self.ssh, more=forwards))
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
                # nothing left waiting: a cancel of this flush ends it quietly (the callers have
                # their answers); with requests still queued the cancel propagates
                return  # noqa: B012

    async def _add(self, forward):
        """One ``-O forward`` call for ``forward``; the allocated port of a remote one with port 0."""
        await self._start_once(self._start)
        rc, out, err = await run_argv(control_argv(self.endpoint, self.control_path, "forward", forward, ssh=self.ssh))
        if rc != 0:
            raise ForwardError(f"forward {forward.argument()} via {self.endpoint.describe()} failed: {last_line(err)}")
        if forward.kind == "R" and forward.listen_port == 0:
            port = allocated_port(out)
            if port is None:
                raise TunnelError(f"ssh did not report the port of {forward.argument()}")
            return self._pin(forward, port)
        return None

    async def remove(self, forward: Forward):
        """Cancel ``forward`` with ``-O cancel``."""
        self.wanted.pop(forward, None)
        if not self.up:
            return
        rc, _, err = await run_argv(control_argv(self.endpoint, self.control_path, "cancel", forward, ssh=self.ssh))
        if rc != 0:
            self.log.warning("cancel of %s via %s: %s", forward.argument(), self.endpoint.describe(), last_line(err))

    async def restore(self, concurrency=8, batch=64):
        """Bring the master back (adopt or start) and re-add every wanted forward.

        Local forwards go ``batch`` to one ssh call (one process start instead of ``batch``); a batch
        that fails is retried forward by forward, so one bad forward does not take others with it.
        """
        await self._start_once(self._start)
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
