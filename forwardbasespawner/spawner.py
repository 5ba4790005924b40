"""ForwardBaseSpawner: the start/poll/stop orchestration for servers that run on remote systems."""

import asyncio
import hashlib
import time
import uuid
from contextlib import aclosing

from jupyterhub.spawner import Spawner
from jupyterhub.utils import url_escape_path, url_path_join
from tornado import web
from traitlets import observe

from .addresses import format_url, parse_server_address
from .connecting import ConnectionSteps
from .connection import Connection, ConnectionField
from .errors import StartAborted
from .events import EventLog, describe_exception
from .hooks import resolve, resolve_sync, resolve_sync_or_awaitable, settle
from .k8s.services import KubernetesServices
from .original_methods import OriginalMethods
from .remote_calls import RemoteCalls
from .ssh.metrics import TUNNEL_EVENTS
from .ssh.tunnels import SSHTunnels
from .traits import (
    APIPolicy,
    EventTraits,
    KubernetesTraits,
    LifecycleTraits,
    RemoteForwardTraits,
    SSHTunnelTraits,
)


def token_sha256(token):
    """The digest under which a server's API token is remembered (never the token itself)."""
    return hashlib.sha256(token.encode("utf8")).hexdigest()


class ForwardBaseSpawner(
    OriginalMethods,
    ConnectionSteps,
    SSHTunnels,
    KubernetesServices,
    LifecycleTraits,
    EventTraits,
    SSHTunnelTraits,
    RemoteForwardTraits,
    KubernetesTraits,
    RemoteCalls,
    APIPolicy,
    Spawner,
):
    """Base class for spawners whose single-user servers run on another system.

    Subclasses implement three coroutines:

    - ``_start()``: start the remote server; return ``"http[s]://host:port"`` (or ``"host:port"``)
      where it listens, or a falsy value when the remote side reports it later (SetupTunnel).
    - ``_poll()``: ``None`` while the remote server runs, an exit status (int) when it does not.
    - ``_stop(now=False, **kwargs)``: stop the remote server; must tolerate a half-started one.

    The base owns ``start()``, ``poll()`` and ``stop()``: progress events, cancel, the tunnel
    hub → server (``run_ssh_forward``, see :class:`~forwardbasespawner.ssh.tunnels.SSHTunnels`),
    and the state kept across Hub restarts.
    """

    # The configuration is declared in forwardbasespawner.traits (one class per topic, above);
    # how the Hub reaches this server and what of it is open is ``self.connection``.

    # -------------------------------------------------------------- instance state
    # Not config: read and written by subclasses (see the subclass contract in the docs).
    start_id = ""
    yield_wait_seconds = 1  # kept for subclasses of the original; progress here is event-driven

    def __init__(self, **kwargs):
        self.connection = Connection()  # how the Hub reaches this server, and what is open
        super().__init__(**kwargs)
        self.connection.port = self.port
        self.server_token_sha256 = ""
        self._configured_port = self.port  # c.Spawner.port; self.port becomes this start's port
        self._events = EventLog(self.events_max_count, self.events_max_bytes, self.event_max_chars)
        self._start_task = None
        self._abort_message = None
        self._cached_public_api_url = ""
        self._start_cancelled = False
        self._exit_status = None
        self._start_failed = False  # the last start() raised (failed or cancelled)
        self._tunnel_broken_since = None  # monotonic time the tunnel was first seen down
        # the original package's flags, which its subclasses read and set (see the migration guide):
        # stop() has run for this server (a second stop() does not reach the remote side again)
        self.already_stopped = False
        self.already_post_stop_hooked = False
        # True until the first start() or poll() of this spawner object (i.e. after a Hub restart)
        self.call_during_startup = True
        self.port_forwarded = 0  # kept for old code; this library does not read it
        self._stop_pending_event = None  # an asyncio.Event set when this server stops
        if self.user is not None and getattr(self.user, "name", None) is not None:
            self._name_svc()

    # -------------------------------------------------------------- the connection's public views
    @observe("port")
    def _port_is_the_connections(self, change):
        if "connection" in self.__dict__:
            self.connection.port = change["new"]

    @property
    def port_forward_info(self):
        """The original package's dict of this server's tunnel settings (``service``, ``ssh_node``,
        ..., ``remote``): the :class:`~forwardbasespawner.connection.Connection`'s ``info``."""
        return self.connection.info

    @port_forward_info.setter
    def port_forward_info(self, info):
        self.connection.info = info if isinstance(info, dict) else dict(info or {})

    tunnel_node = ConnectionField("node", "The jump node this server's forward goes through (SSHNodeRestarted matches it).")
    svc_name = ConnectionField("svc_name", "This server's Kubernetes Service (named before ``_start()``, as the original did).")
    dns_name = ConnectionField("dns_name", "The address the proxy uses for the Service.")

    @property
    def has_tunnel(self):
        """Whether a hub → server tunnel is recorded for this server (open, or being made)."""
        return self.connection.tunnel_open

    @property
    def ready(self):
        # After a cancel, JupyterHub's progress stream asks `ready` before stop() has removed the
        # server, and would end a cancelled spawn with "Server ready"; a cancelled start never is.
        return not self._start_cancelled and super().ready

    @property
    def events(self):
        """This spawn's events: a ``list`` of event dicts (an :class:`~forwardbasespawner.events.EventLog`)."""
        return self._events

    @events.setter
    def events(self, events):
        # subclasses assign a fresh list when a spawn begins (OutpostSpawner's pre-spawn hook)
        self._events.load(events, closed=False)

    @property
    def last_event(self):
        """The newest event of this spawn, or None; assigning appends."""
        return self._events[-1] if len(self._events) else None

    @last_event.setter
    def last_event(self, event):
        if event:  # the original's handlers also assign None or {} ("no event")
            self._events.append(event)

    @property
    def _log_id(self):
        """user:server (start id) for log lines."""
        return f"{self._log_name} ({self.start_id or 'no start id'})"

    # -------------------------------------------------------------- hooks as methods
    def get_public_api_url(self):
        """The Hub API URL for the remote server (see ``public_api_url``)."""
        if self._cached_public_api_url:
            return self._cached_public_api_url
        url = resolve_sync(self.public_api_url, self, self.port_forward_info)
        return url or self.hub.api_url

    def get_ssh_during_startup(self):
        """Whether to open the tunnel while ``start()`` runs: a bool, as the original package
        returned it, or an awaitable of one when ``ssh_during_startup`` is an async hook."""
        return resolve_sync_or_awaitable(self.ssh_during_startup, self)

    async def get_cancelling_event(self):
        event = dict(await resolve(self.cancelling_event, self) or {})
        event.update(failed=True, progress=100)
        return event

    def run_filter_events(self, event):
        """Apply ``filter_events``; returns the event to store, or a falsy value to reject it
        (an awaitable of that when the hook is async). Overridable, sync or async."""
        if self.filter_events is None:
            return event
        return resolve_sync_or_awaitable(self.filter_events, self, event)

    def split_service_address(self, address):
        """``"[http[s]://]host:port"`` → ``(host, port)``, validated; raises ``InvalidAddress``."""
        _, host, port = parse_server_address(address)
        return host, port

    # -------------------------------------------------------------- start
    async def start(self):
        self.call_during_startup = False
        self._start_failed = False
        self._events.begin()
        if not self.start_id:
            self.start_id = uuid.uuid4().hex
        self._abort_message = None
        self._start_cancelled = False
        self._exit_status = None
        self._stop_pending_event = asyncio.Event()
        if self.api_token:
            self.server_token_sha256 = token_sha256(self.api_token)
        url = await resolve(self.public_api_url, self, self.port_forward_info)
        self._cached_public_api_url = url or ""
        # as in the original package, the port and the Service's name are known before _start():
        # subclasses send them to their remote side, and JUPYTERHUB_SERVICE_URL carries the port
        self.port = await self._reserve_port()
        self._name_svc()

        if self._spawn_future is not None:
            # JupyterHub's cancel may come after start() returned, while it waits for the server
            self._spawn_future.add_done_callback(self._spawn_done)
        self._start_task = asyncio.ensure_future(self._start_remote())
        try:
            response = await self.run_update_start_response(await self._start_task)
            url = await self._connect(response)
            self._connected_url_out = True  # from now on the port stays (the route uses it)
            url = await self.run_update_expected_path(url)
        except asyncio.CancelledError:
            self._start_failed = True
            if self._abort_message is not None:
                # cancelled by us because the remote side reported a failure
                raise StartAborted(self._abort_message) from None
            # cancelled by JupyterHub (the user pressed cancel): cleanup follows in stop()
            await self._record_cancel()
            raise
        except Exception as e:
            self._start_failed = True
            if self._abort_message is None:
                message = describe_exception(e)
                self.log.error("Start of %s failed: %s", self._log_id, message, exc_info=not isinstance(e, web.HTTPError))
                self._events.append({"progress": 100, "failed": True, "message": f"Start failed: {message}"})
            raise
        self.log.info("Started %s at %s", self._log_id, url)
        return url

    async def _record_cancel(self):
        """The user cancelled this start: say so in the events, once, and never report it ready."""
        if self._start_cancelled:
            return
        self._start_cancelled = True
        self.log.info("Start of %s cancelled", self._log_id)
        try:
            event = await self.get_cancelling_event()
        except Exception:
            self.log.exception("cancelling_event of %s failed; using the default", self._log_id)
            event = self._default_cancelling_event()
        self._events.append(event)

    def _spawn_done(self, future):
        if future.cancelled() and self._abort_message is None:
            self._cancel_record = asyncio.ensure_future(self._record_cancel())  # keep a reference

    async def _start_remote(self):
        """The server → hub tunnel when asked for (its port goes into the environment), then ``_start()``."""
        if await resolve(self.ssh_create_remote_forward, self, self.connection.remote_info):
            self.connection.remote_forward_open = True  # before the call: stop() must clean up a half-made one
            await self.run_ssh_forward_remote()
        return await self._start()

    async def _connect(self, response):
        """The three cases: tunnel now, tunnel later (SetupTunnel), or no tunnel."""
        if not response:
            self.connection.tunnel_open = True  # stop() removes whatever SetupTunnel will have made
            host, port = await self._delayed_tunnel_address()
            return format_url("http", host, port)
        scheme, host, port = parse_server_address(response)
        if await settle(self.get_ssh_during_startup()):
            self.port_forward_info["service"] = format_url(scheme, host, port).split("://", 1)[1]
            host, port = await self.run_ssh_forward(create_svc=True)
        elif not self.connection.tunnel_open:
            self.port = port  # no tunnel: the server's own port, as the original recorded it
        return format_url(scheme, host, port)

    def abort_start(self, event):
        """The remote side reported a failure while ``_start()`` still runs: end the start with it.

        Returns True if a running ``_start()`` was cancelled (``start()`` then raises
        :class:`StartAborted` with the event's message), False if no ``_start()`` was running.
        """
        task = self._start_task
        if task is None or task.done():
            return False
        self._abort_message = event.get("message") or "The remote system reported a failure."
        task.cancel()
        return True

    async def start_call_outcome(self, timeout):
        """Wait up to ``timeout`` seconds for the subclass's ``_start()`` to return; then say how it
        went: "done" (or no start under way), "failed", "cancelled", or "running" (still under way)."""
        task = self._start_task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout)
            if not task.done():
                return "running"
        if self._start_cancelled or (task is not None and task.cancelled()):
            return "cancelled"
        if task is not None and task.exception() is not None:
            return "failed"
        return "done"

    def mark_start_cancelled(self):
        """Mark a start that JupyterHub is about to cancel after ``start()`` returned as not ready."""
        self._start_cancelled = True

    # -------------------------------------------------------------- progress
    async def _generate_progress(self):
        # JupyterHub's wrapper always yields "Server requested" first; drop it when asked to
        show_first = bool(await resolve(self.show_first_default_event, self))
        first = True
        async with aclosing(super()._generate_progress()) as events:
            async for event in events:
                if first and not show_first:
                    first = False
                    continue
                first = False
                yield event

    async def progress(self):
        """Every event of this spawn so far, then each new one as it is added."""
        # a stream may open before start() runs; it belongs to the new spawn, not the last one
        self._events.begin()
        async for event in self._events.follow():
            yield event

    # -------------------------------------------------------------- poll and stop
    async def poll(self):
        self.call_during_startup = False
        if self._start_task is not None and not self._start_task.done():
            return None
        if self.already_stopped:
            # stop() ran (or the server ended and poll() cleaned up): it is not running
            return 0 if self._exit_status is None else self._exit_status
        broken = None
        # JupyterHub polls before it stops a server (and a failed or cancelled start): no tunnel to
        # check or restore then, only whether the remote side still runs
        if not (self._start_failed or self._start_cancelled or self._stop_pending):
            try:
                broken = await self.check_tunnel()
            except Exception:
                # a bug or an operator hook's error says nothing about the tunnel: never a reason to
                # end the server, nor to stop JupyterHub's polling
                self.log.exception("Checking the tunnel of %s failed; the server is left as it is", self._log_id)
        if broken:
            # a lost tunnel alone never ends the server at once: it is being restored meanwhile
            now = time.monotonic()
            if self._tunnel_broken_since is None:
                self._tunnel_broken_since = now
                self.log.warning(
                    "Tunnel of %s is down (%s); restoring it, the server is given up after %ss",
                    self._log_id, broken, self.ssh_tunnel_grace,
                )  # fmt: skip
            if now - self._tunnel_broken_since < self.ssh_tunnel_grace:
                return None
            self.log.error("Tunnel of %s stayed down for %ss: %s; stopping the server", self._log_id, self.ssh_tunnel_grace, broken)
            TUNNEL_EVENTS.labels(node=self.tunnel_node or "", event="given_up").inc()
            # ssh's own words (user names, hosts) stay in the log; the user gets a plain reason
            minutes = max(1, round(self.ssh_tunnel_grace / 60))
            await self._end_by_itself(1, f"The connection to the server was lost and could not be restored within {minutes} min.")
            return 1
        if self._tunnel_broken_since is not None:
            self.log.info("Tunnel of %s is back", self._log_id)
            self._tunnel_broken_since = None
        decision = await self.run_pre_poll_hook()
        if decision is False:
            return None
        status = await self._poll() if decision is True else decision
        if status is not None and self.start_id:
            if self._start_failed or self._start_cancelled:  # JupyterHub's poll before its stop
                self.log.info("Cleaning up after the unfinished start of %s (status %s)", self._log_id, status)
            else:
                self.log.info("Server %s ended by itself (status %s); cleaning up", self._log_id, status)
            await self._end_by_itself(status, f"The server has stopped (exit status {status}).")
        return status

    async def _end_by_itself(self, status, message):
        """The server is gone without anyone stopping it: clean up now, as the original package did.

        JupyterHub's ``user.stop()`` polls first and skips ``stop()`` for a server that poll
        reports gone, so nothing else would remove the tunnel and the Service or run the
        subclass's ``_stop()`` (e.g. to delete a finished batch job).
        """
        if not (len(self._events) and self._events[-1].get("failed")):
            self._events.append({"progress": 100, "failed": True, "message": message})
        await self.stop(now=True)
        self._exit_status = status

    async def stop(self, now=False, **kwargs):
        task = self._start_task
        inside_start = task is not None and task is asyncio.current_task()
        if task is not None and not task.done() and not inside_start:
            # JupyterHub stops a start that ran out of time; make sure it is over before cleanup
            task.cancel()
            await asyncio.wait([task], timeout=1)
        if self.already_stopped:
            # a second stop (JupyterHub's after the subclass's own, or after poll() cleaned up)
            # does not reach the remote side again; what the base made is removed below if left
            self.log.debug("%s was stopped already; removing what is left", self._log_id)
        else:
            self.already_stopped = True
            await self._stop_remote(now, **kwargs)
        await self.remove_connections()
        if self._stop_pending_event is not None:
            self._stop_pending_event.set()
        if not inside_start:  # a subclass that stops itself in _start() still reports its failure
            self._events.close()
        self.log.info("Stopped %s", self._log_id)

    async def _stop_remote(self, now, **kwargs):
        """``pre_stop_hook``, then the subclass's ``_stop()``; errors are logged, never raised."""
        try:
            await self.run_pre_stop_hook()
        except Exception:
            self.log.exception("pre_stop_hook of %s failed; stopping anyway", self._log_id)
        try:
            await asyncio.wait_for(self._stop(now=now, **kwargs), timeout=self.remote_stop_timeout)
        except asyncio.TimeoutError:
            self.log.error("Stopping %s timed out after %ss", self._log_id, self.remote_stop_timeout)
        except Exception:
            self.log.exception("Stopping %s failed on the remote side", self._log_id)

    # -------------------------------------------------------------- state and environment
    def save_state(self):
        """Write this spawner's state to the Hub database, unless ``start()`` is still running.

        JupyterHub saves state when ``start()`` returns and after a stop; events posted after
        ``start()`` returned (while JupyterHub waits for the server, or while it runs) would
        otherwise be lost at a Hub restart. During ``start()`` JupyterHub's own save covers them.
        """
        if self.orm_spawner is None or (self._start_task is not None and not self._start_task.done()):
            return
        self.orm_spawner.state = self.get_state()
        self.user.db.commit()

    def get_state(self):
        state = super().get_state()
        state.update(self.connection.to_state())
        if self.start_id:
            state["start_id"] = self.start_id
        if self.server_token_sha256:
            state["server_token_sha256"] = self.server_token_sha256
        state["events"] = self._events.to_list()
        return state

    def load_state(self, state):
        super().load_state(state)
        connection = Connection.from_state(state)
        connection.svc_name = connection.svc_name or self.svc_name  # named at __init__ unless stored
        connection.dns_name = self.dns_name
        if not connection.port:
            connection.port = self.port  # none stored: the configured one
        self.connection = connection
        self.port = connection.port
        self.start_id = str(state.get("start_id") or "")
        self.server_token_sha256 = str(state.get("server_token_sha256") or "")
        events = state.get("events")
        if isinstance(events, list):
            # the events of a start that has ended: readable, but the next start begins afresh
            self._events.load(events, closed=True)
        elif events:
            self.log.warning("Ignoring stored events of %s: not a list", self._log_name)

    def clear_state(self):
        super().clear_state()
        self.connection = Connection(port=self._configured_port)
        self.start_id = ""
        self.server_token_sha256 = ""
        self._name_svc()
        self._cached_public_api_url = ""
        self.port = self._configured_port
        self.already_stopped = False
        self.already_post_stop_hooked = False
        self._exit_status = None
        if self._stop_pending_event is not None:
            self._stop_pending_event.set()

    def get_env(self):
        env = super().get_env()
        api_url = self.get_public_api_url()
        user = url_escape_path(self.user.name)
        server = url_escape_path(self.name) if self.name else ""
        env["JUPYTERHUB_API_URL"] = api_url
        env["JUPYTERHUB_ACTIVITY_URL"] = url_path_join(api_url, "users", user, "activity")
        env["JUPYTERHUB_EVENTS_URL"] = url_path_join(api_url, "users/progress/events", user, server)
        env["JUPYTERHUB_SETUPTUNNEL_URL"] = url_path_join(api_url, "users/setuptunnel", user, server)
        hub_tunnel_port = (self.port_forward_info.get("remote") or {}).get("port")
        if hub_tunnel_port:
            env["JUPYTERHUB_HUB_TUNNEL_PORT"] = str(hub_tunnel_port)
        return env

    # -------------------------------------------------------------- subclass interface
    async def _start(self):
        raise NotImplementedError("a ForwardBaseSpawner subclass implements _start()")

    async def _poll(self):
        raise NotImplementedError("a ForwardBaseSpawner subclass implements _poll()")

    async def _stop(self, now=False, **kwargs):
        raise NotImplementedError("a ForwardBaseSpawner subclass implements _stop()")


__all__ = ["ForwardBaseSpawner", "StartAborted", "token_sha256"]
