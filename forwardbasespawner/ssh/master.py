"""What every backend's connection to one jump node shares: the forwards it should carry, and one
start at a time however many callers need it."""

import asyncio
import collections
import dataclasses


class Master:
    """A connection (an ssh process, or an asyncssh connection) and the forwards that should exist
    on it. ``wanted`` is the truth: the supervisor re-adds every wanted forward after a restart.

    Backends implement ``up``, ``_start()``, ``_kill()``, ``add()``, ``_add()``, ``remove()``,
    ``check()``, ``restore()``, ``exit()``, ``wait_closed()`` and ``exit_reason()``.
    """

    def __init__(self, endpoint, master_args, log, *, start_timeout=10):
        self.endpoint = endpoint
        self.master_args = master_args
        self.log = log
        self.start_timeout = start_timeout
        self.wanted = {}  # Forward -> allocated remote port (R forwards with port 0) or None
        self.stopping = False
        self.started_at = None  # set when connected and answering
        self.stderr_tail = collections.deque(maxlen=5)  # the last reasons it gave
        self.lock = asyncio.Lock()
        self.restore_lock = asyncio.Lock()
        self._exiting = None
        # forwards an adopted master carried for the previous Hub process and no server claimed yet
        self.unclaimed = set()

    def save_journal(self):
        """Record the wanted forwards for the next Hub process (backends that outlive it)."""

    def exit(self):
        """Stop on purpose (no restart follows). Every caller awaits the same stop, so none returns
        while another is still ending the connection's processes."""
        self.stopping = True
        if self._exiting is None:
            self._exiting = asyncio.ensure_future(self._exit())
        return self._exiting

    async def ensure_up(self):
        """Connect unless connected; concurrent callers wait for the same start."""
        if self.up:
            return
        async with self.lock:
            if not self.up:
                await self._start()

    def _pin(self, forward, port):
        """Keep a remote forward under the port the node allocated, so a restore asks for that
        same port again (the server was told it) and a cancel can name it."""
        self.wanted.pop(forward, None)
        self.wanted[dataclasses.replace(forward, listen_port=port)] = port
        return port
