"""The interface of an SSH backend, as the supervisor (:class:`~.supervisor.TunnelManager`) uses it.

A *master* is one connection to one jump node and the forwards that should exist on it. The
OpenSSH backend (:class:`~.openssh.ControlMaster`) runs an ``ssh`` process that outlives the Hub;
the in-process backend (:class:`~.asyncssh.AsyncsshMaster`) holds an asyncssh connection.
"""

import abc
import asyncio
import dataclasses


class Master(abc.ABC):
    """One connection to one jump node and the forwards that should exist on it.

    ``wanted`` is the truth: ``{Forward: allocated remote port or None}``; after a restart every
    wanted forward is added again. The manager reads and writes these attributes too:

    - ``endpoint``: the :class:`~.spec.Endpoint` connected to; ``key``: the manager's name for
      this master (``<endpoint id>-<shard>``);
    - ``wanted``; ``unclaimed``: forwards an adopted master carried for the previous Hub process
      that no server has claimed yet;
    - ``stopping``: set once the master is to exit (no restart follows);
    - ``started_at``: ``time.monotonic()`` when the current connection came up, None while down;
    - ``restore_lock``: held around :meth:`restore`, so one restore runs at a time.

    The abstract methods and properties below are everything the manager needs from a backend.
    """

    def __init__(self, endpoint, path, master_args, log, *, ssh="ssh", start_timeout=10, key=None):
        """How the manager makes a master. ``path``: where it may keep its files, in a directory
        private to the Hub's user (OpenSSH: its control socket); ``master_args``: the keywords of
        :func:`~.openssh.connection_options` (``known_hosts``, ``strict_host_key_checking``,
        ``ciphers``, ...); ``ssh``: the ssh binary (OpenSSH); ``start_timeout``: seconds a
        connection may take to come up."""
        self.endpoint = endpoint
        self.master_args = master_args
        self.log = log
        self.start_timeout = start_timeout
        self.key = key
        self.wanted = {}  # Forward -> allocated remote port (R forwards with port 0) or None
        self.unclaimed = set()
        self.stopping = False
        self.started_at = None
        self.restore_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        self._exiting = None

    # ------------------------------------------------------------ the interface
    @classmethod
    @abc.abstractmethod
    def adopt_all(cls, directory, master_args, log, *, ssh="ssh", start_timeout=10):
        """An async iterator of the masters an earlier Hub process left in ``directory`` that
        still answer, each taken over: connected (``up``), with its ``key`` and with the forwards
        it carries in ``unclaimed``. What is left of masters that no longer answer is removed.

        Called once, when the manager starts, before any forward is added. Raises nothing: an
        entry that cannot be adopted is logged and skipped. A backend whose connections end with
        the Hub process yields nothing."""

    @property
    @abc.abstractmethod
    def up(self):
        """Whether the connection is up: authenticated and answering, not merely connecting."""

    @abc.abstractmethod
    def wait_closed(self):
        """An :class:`asyncio.Future` that completes when the current connection ends, whatever
        ends it (one per connection: a restart makes a new one). Called while ``up``; the caller
        may test ``done()`` and wait on it, never cancel it."""

    @abc.abstractmethod
    def exit_reason(self):
        """Why the last connection ended, in ssh's own words where it gave some (a string for
        the log). Called after :meth:`wait_closed` completed."""

    @abc.abstractmethod
    async def check(self):
        """Whether the connection answers now; False when it is down or hung (an answer must come
        within seconds). Called every ``check_interval`` while ``up`` and by ``rebuild_node``;
        raises nothing for a dead connection."""

    @abc.abstractmethod
    def listens(self, port):
        """Whether the process holding this master's listening sockets (the ssh process, or the
        Hub's own for an in-process backend) listens on TCP ``port``. Blocking (reads /proc):
        the manager calls it in a thread, or for one port at a time."""

    @abc.abstractmethod
    async def add(self, forward):
        """Add ``forward`` (connecting first if down) and want it from now on.

        Returns the port the node allocated for a remote forward asked with port 0 (the forward
        is wanted under that port from then on), else None. Raises
        :class:`~forwardbasespawner.errors.ForwardError` if the node refuses the forward and
        :class:`~forwardbasespawner.errors.TunnelError` if the connection cannot be made; after
        any failure, cancellation too, ``forward`` is not wanted."""

    @abc.abstractmethod
    async def remove(self, forward):
        """Stop wanting ``forward`` and cancel it on the connection if that is up. Harmless for a
        forward that is gone; raises nothing for a connection that is down."""

    @abc.abstractmethod
    async def restore(self):
        """Connect (or take over a connection that answers) and add every wanted forward again.

        Returns ``[(forward, reason)]`` for the forwards that could not be added. Raises
        :class:`~forwardbasespawner.errors.TunnelError` (or ``OSError``) if the connection itself
        cannot be made. Called by the manager, under ``restore_lock``, after the connection
        ended or was killed."""

    @abc.abstractmethod
    async def kill(self):
        """End the current connection at once and return when it has ended: ``up`` is False and
        :meth:`wait_closed` is done. The forwards stay wanted (:meth:`restore` brings them
        back). Called for a connection that does not answer its check and by ``rebuild_node``
        for a broken one; harmless when the connection is gone already."""

    @abc.abstractmethod
    def exit(self):
        """Stop on purpose; no restart follows (``stopping`` is set at once). Returns a future,
        the same to every caller, that completes when the connection and whatever it kept
        (processes, files) are gone; the stop runs to its end even if a caller is cancelled.
        Called by the manager when nothing is wanted any more and at ``close()``."""

    @abc.abstractmethod
    def save_journal(self):
        """Record the wanted forwards where the next Hub process finds them (:meth:`adopt_all`
        reads them). Called by the manager after every change of ``wanted`` or ``unclaimed``;
        a backend whose connections end with the Hub records nothing."""

    @abc.abstractmethod
    def terminate(self):
        """Ask the connection to end, without waiting and without an event loop: called at the
        interpreter's exit for a master that carries nothing (a master that outlives the Hub
        would otherwise stay). Raises nothing."""

    # ------------------------------------------------------------ what the backends share
    async def _start_once(self, start):
        """Await ``start()`` unless the connection is up; concurrent callers wait for the same
        start, however many need it."""
        if self.up:
            return
        async with self._start_lock:
            if not self.up:
                await start()

    def _exit_once(self, stop):
        """What :meth:`exit` returns: the one task of ``stop()``, started by the first caller."""
        self.stopping = True
        if self._exiting is None:
            self._exiting = asyncio.ensure_future(stop())
        return self._exiting

    def _pin(self, forward, port):
        """Keep a remote forward under the port the node allocated, so a restore asks for that
        same port again (the server was told it) and a cancel can name it."""
        self.wanted.pop(forward, None)
        self.wanted[dataclasses.replace(forward, listen_port=port)] = port
        return port
