"""The in-process backend: one asyncssh connection per endpoint, with the ControlMaster's interface.

For Hubs without an ``ssh`` binary and for small set-ups. Tunnel bytes move through the Hub's own
event loop here (the OpenSSH backend keeps them in other processes); see the data-plane benchmark.
"""

import asyncio
import contextlib
import dataclasses
import os
import time

import asyncssh

from .master import Master
from .openssh import ForwardError, TunnelError
from .spec import Endpoint, Forward


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
    """One asyncssh connection and the forwards that should exist on it (see ControlMaster)."""

    def __init__(self, endpoint: Endpoint, control_path, master_args, log, *, ssh=None, start_timeout=10):
        super().__init__(endpoint, master_args, log, start_timeout=start_timeout)
        self.connection = None
        self.listeners = {}  # Forward -> SSHListener
        self._closed = None

    @property
    def up(self):
        return self.connection is not None and self.started_at is not None and not self._closed.done()

    @property
    def process(self):
        return None  # in-process: nothing outlives the Hub

    def exit_reason(self):
        return self.stderr_tail[-1] if self.stderr_tail else "connection closed"

    def wait_closed(self):
        """An awaitable that completes when the current connection ends."""
        return self._closed

    async def _start(self):
        await self._kill()
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
                    master.stderr_tail.append(str(exc))
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

    async def _kill(self):
        self.started_at = None
        if self.connection is not None:
            self.connection.abort()
            with contextlib.suppress(Exception):
                await self.connection.wait_closed()
        self.connection = None
        self.listeners.clear()

    async def add(self, forward: Forward):
        self.wanted[forward] = None
        try:
            return await self._add(forward)
        except BaseException:
            self.wanted.pop(forward, None)
            raise

    async def _add(self, forward):
        await self.ensure_up()
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
        self.wanted.pop(forward, None)
        listener = self.listeners.pop(forward, None)
        if listener is not None:
            listener.close()
            with contextlib.suppress(Exception):
                await listener.wait_closed()

    async def check(self):
        return self.up  # asyncssh's keepalive closes a dead connection, which ends wait_closed()

    async def restore(self):
        await self.ensure_up()
        failed = []
        for forward in list(self.wanted):
            try:
                await self._add(forward)
            except TunnelError as e:
                failed.append((forward, str(e)))
        return failed

    async def _exit(self):
        await self._kill()
