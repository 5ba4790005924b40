"""The in-process backend: one asyncssh connection per endpoint, with the ControlMaster's interface.

For Hubs without an ``ssh`` binary and for small set-ups. Tunnel bytes move through the Hub's own
event loop here (the OpenSSH backend keeps them in other processes); see the data-plane benchmark.
"""

import asyncio
import collections
import contextlib
import dataclasses
import os
import time

import asyncssh

from ..errors import ForwardError, TunnelError
from .master import Master
from .sockets import process_listens
from .spec import Forward


def learn_new_host_key(known_hosts, host, addr, port, key, log=None):
    """OpenSSH's ``StrictHostKeyChecking=accept-new`` for asyncssh: a host that ``known_hosts``
    does not know at all is trusted on first use and its key appended; a host known with other
    keys is refused (its key changed). Returns whether ``key`` is trusted."""
    try:
        known = asyncssh.read_known_hosts(known_hosts)
    except FileNotFoundError:
        known = None
    if known is not None and any(known.match(host, addr, port)[:3]):
        return False  # known, with other keys (or revoked ones): a changed key is never learned
    spec = host if port == 22 else f"[{host}]:{port}"
    public = " ".join(key.export_public_key().decode().split()[:2])
    fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(f"{spec} {public}\n")
    if log is not None:
        log.info("Learned the host key of %s (accept-new): %s", spec, public.split()[0])
    return True


class AsyncsshMaster(Master):
    """One asyncssh connection, in the Hub process, and the forwards that should exist on it.

    Nothing of it outlives the Hub: there is nothing to adopt, no journal, and the listening
    sockets are the Hub's own. ``path`` and ``ssh`` of the constructor are not used.
    """

    def __init__(self, endpoint, path, master_args, log, *, ssh=None, start_timeout=10, key=None):
        super().__init__(endpoint, path, master_args, log, ssh=ssh, start_timeout=start_timeout, key=key)
        self.connection = None
        self.listeners = {}  # Forward -> SSHListener
        self.errors = collections.deque(maxlen=5)  # why connections ended, the last few
        self._closed = None  # completes when the current connection is lost

    @classmethod
    async def adopt_all(cls, directory, master_args, log, *, ssh=None, start_timeout=10):
        """None: an asyncssh connection ends with the Hub process that made it."""
        return
        yield  # (what makes this an async iterator, of nothing)

    @property
    def up(self):
        """Connected, and the connection not lost."""
        return self.connection is not None and self.started_at is not None and not self._closed.done()

    def wait_closed(self):
        """A future that completes when asyncssh reports the connection lost."""
        return self._closed

    def exit_reason(self):
        """asyncssh's reason for the lost connection."""
        return self.errors[-1] if self.errors else "connection closed"

    async def check(self):
        """Whether the connection is up: asyncssh's keepalive closes a dead connection, which
        completes :meth:`wait_closed`."""
        return self.up

    def listens(self, port):
        """Whether the Hub process (which holds the listeners) listens on ``port``."""
        return process_listens(os.getpid(), port)

    def save_journal(self):
        """Nothing: the connection and its forwards end with the Hub process."""

    def terminate(self):
        """Nothing: the connection ends with the Hub process."""

    async def _start(self):
        """Connect (after ending any earlier connection) and wait until authenticated."""
        await self.kill()
        args = self.master_args
        started = time.monotonic()
        closed = asyncio.get_running_loop().create_future()
        master = self

        known_hosts = self.endpoint.known_hosts or args["known_hosts"]
        strict = self.endpoint.strict_host_key_checking or args.get("strict_host_key_checking", "yes")
        if strict == "accept-new" and not os.path.exists(known_hosts):
            os.close(os.open(known_hosts, os.O_WRONLY | os.O_CREAT, 0o600))  # asyncssh reads it first

        class Client(asyncssh.SSHClient):
            def validate_host_public_key(self, host, addr, port, key):
                # called only for a key that known_hosts does not trust
                return strict == "accept-new" and learn_new_host_key(known_hosts, host, addr, port, key, master.log)

            def connection_lost(self, exc):
                if exc is not None:
                    master.errors.append(str(exc))
                if not closed.done():
                    closed.set_result(None)

        options = dict(self.endpoint.options)
        try:
            self.connection = await asyncio.wait_for(
                asyncssh.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    username=self.endpoint.user or None,
                    client_keys=[self.endpoint.key] if self.endpoint.key else (),
                    known_hosts=known_hosts,
                    encryption_algs=[c for c in args.get("ciphers", "").split(",") if c] or (),
                    keepalive_interval=int(options.get("ServerAliveInterval", args.get("alive_interval", 5))),
                    keepalive_count_max=int(options.get("ServerAliveCountMax", args.get("alive_count", 3))),
                    client_factory=Client,
                    agent_path=None,
                    config=(),
                ),
                self.start_timeout,
            )
        except (OSError, asyncssh.Error, asyncio.TimeoutError) as e:
            reason = str(e) or type(e).__name__
            raise TunnelError(f"ssh to {self.endpoint.describe()} failed: {reason}") from None
        self._closed = closed
        self.listeners.clear()
        self.started_at = time.monotonic()
        self.log.info("asyncssh connection to %s up in %.0f ms", self.endpoint.describe(), (self.started_at - started) * 1000)

    async def kill(self):
        """Abort the connection (its listeners go with it) and wait until it is closed."""
        self.started_at = None
        if self.connection is not None:
            self.connection.abort()
            with contextlib.suppress(Exception):
                await self.connection.wait_closed()
        self.connection = None
        self.listeners.clear()

    def exit(self):
        """The same as :meth:`kill`: nothing else is left."""
        return self._exit_once(self.kill)

    async def add(self, forward: Forward):
        """Listen for ``forward`` on the connection."""
        self.wanted[forward] = None
        try:
            return await self._add(forward)
        except BaseException:
            self.wanted.pop(forward, None)
            raise

    async def _add(self, forward):
        """Listen for ``forward`` unless it has a listener; the allocated port of a remote one with port 0."""
        await self._start_once(self._start)
        if forward in self.listeners:
            return self.wanted.get(forward)  # the same forward twice is harmless
        try:
            if forward.kind == "L":
                listener = await self.connection.forward_local_port(
                    forward.listen_host, forward.listen_port, forward.target_host, forward.target_port
                )
            else:
                listener = await self.connection.forward_remote_port(
                    forward.listen_host, forward.listen_port, forward.target_host, forward.target_port
                )
        except (OSError, asyncssh.Error) as e:
            raise ForwardError(f"forward {forward.argument()} via {self.endpoint.describe()} failed: {e}") from None
        if forward.kind == "R" and forward.listen_port == 0:
            port = self._pin(forward, listener.get_port())
            self.listeners[dataclasses.replace(forward, listen_port=port)] = listener
            return port
        self.listeners[forward] = listener
        return None

    async def remove(self, forward: Forward):
        """Close the listener of ``forward``."""
        self.wanted.pop(forward, None)
        listener = self.listeners.pop(forward, None)
        if listener is not None:
            listener.close()
            with contextlib.suppress(Exception):
                await listener.wait_closed()

    async def restore(self):
        """Connect again and listen for every wanted forward, one after another."""
        await self._start_once(self._start)
        failed = []
        for forward in list(self.wanted):
            try:
                await self._add(forward)
            except TunnelError as e:
                failed.append((forward, str(e)))
        return failed
