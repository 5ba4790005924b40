"""ForwardBaseSpawner: the start/poll/stop orchestration for servers that run on remote systems."""

import asyncio
import hashlib
import uuid
from contextlib import aclosing

from jupyterhub.spawner import Spawner
from jupyterhub.utils import url_escape_path, url_path_join
from tornado import web
from traitlets import Bool, Callable, Dict, Float, Integer, Unicode, Union, default

from .addresses import format_url, parse_server_address
from .events import EventLog, describe_exception
from .hooks import resolve, resolve_sync
from .k8s.services import KubernetesServices
from .ssh.tunnels import SSHTunnels


def token_sha256(token):
    """The digest under which a server's API token is remembered (never the token itself)."""
    return hashlib.sha256(token.encode("utf8")).hexdigest()


class StartAborted(Exception):
    """The remote side reported that the start failed; the message is for the user."""

    def __init__(self, message):
        super().__init__(message)
        self.jupyterhub_message = message


class ForwardBaseSpawner(SSHTunnels, KubernetesServices, Spawner):
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

    # -------------------------------------------------------------- lifecycle hooks
    pre_poll_hook = Union(
        [Callable(), Bool()],
        default_value=None,
        allow_none=True,
        config=True,
        help="""
        Decide, before each poll, whether to ask the remote system at all.

        Default: None (always call ``_poll()``).
        Signature: ``pre_poll_hook(spawner) -> bool | int | None``, sync or async.
        Return True to call ``_poll()``; False to report the server as running without asking;
        an int or None to report that status directly (None: running, int: stopped).

        Example::

            def pre_poll_hook(spawner):
                # the remote system is in maintenance: don't stop servers because it is silent
                return False if maintenance_mode() else True

            c.ForwardBaseSpawner.pre_poll_hook = pre_poll_hook
        """,
    )

    pre_stop_hook = Callable(
        default_value=None,
        allow_none=True,
        config=True,
        help="""
        Called before the remote server is stopped; errors are logged and the stop goes on.

        Default: None.
        Signature: ``pre_stop_hook(spawner)``, sync or async.

        Example::

            async def pre_stop_hook(spawner):
                spawner.log.info("stopping %s on %s", spawner._log_name, spawner.port_forward_info)

            c.ForwardBaseSpawner.pre_stop_hook = pre_stop_hook
        """,
    )

    update_start_response = Callable(
        default_value=None,
        allow_none=True,
        config=True,
        help="""
        Rewrite what ``_start()`` returned before the base uses it.

        Default: None (use it as it is).
        Signature: ``update_start_response(spawner, response) -> str | None``, sync or async.

        Example::

            def update_start_response(spawner, response):
                # the remote system answers with its internal name; the hub knows it by another
                return response.replace("node7.internal", "node7.example.org") if response else response

            c.ForwardBaseSpawner.update_start_response = update_start_response
        """,
    )

    update_expected_path = Callable(
        default_value=None,
        allow_none=True,
        config=True,
        help="""
        Rewrite the URL returned to JupyterHub, e.g. to add a path prefix the remote server serves under.

        Default: None (the URL as the base built it).
        Signature: ``update_expected_path(spawner, url) -> str``, sync or async.

        Example::

            c.ForwardBaseSpawner.update_expected_path = lambda spawner, url: url + "/base/"
        """,
    )

    filter_events = Callable(
        default_value=None,
        allow_none=True,
        config=True,
        help="""
        Inspect or change every event the remote side POSTs, after validation and before it is stored.

        Default: None (store events as they are).
        Signature: ``filter_events(spawner, event) -> dict | None``, sync or async.
        Return the event to store (changed or not); an empty result rejects it (the caller gets 400).

        Example::

            def filter_events(spawner, event):
                # don't show the scheduler's internal job ids to users
                event["message"] = re.sub(r"job \\d+", "job", event.get("message", ""))
                return event

            c.ForwardBaseSpawner.filter_events = filter_events
        """,
    )

    show_first_default_event = Bool(
        True,
        config=True,
        help="""
        Show JupyterHub's generic first progress event ("Server requested") on the spawn page.

        Default: True. Set False when the remote start script sends its own first event.

        Example::

            c.ForwardBaseSpawner.show_first_default_event = False
        """,
    )

    cancelling_event = Union(
        [Callable(), Dict()],
        config=True,
        help="""
        The event that ends the progress stream when a pending start is cancelled.

        Default: ``{"progress": 100, "failed": True, "message": "Start cancelled."}``.
        Signature when callable: ``cancelling_event(spawner) -> dict``, sync or async.
        ``failed`` and ``progress: 100`` are always set.

        Example::

            c.ForwardBaseSpawner.cancelling_event = {
                "progress": 100, "failed": True, "message": "Start cancelled by you.",
            }
        """,
    )

    @default("cancelling_event")
    def _default_cancelling_event(self):
        return {"progress": 100, "failed": True, "message": "Start cancelled."}

    public_api_url = Union(
        [Callable(), Unicode()],
        default_value="",
        config=True,
        help="""
        The Hub API URL the remote server uses (``JUPYTERHUB_API_URL``), when it cannot use the
        Hub's own connect URL, e.g. because it reaches the Hub through an ingress or a tunnel.

        Default: "" (JupyterHub's ``hub_connect_url`` + API path).
        Signature when callable: ``public_api_url(spawner, port_forward_info) -> str``, sync or async.

        Example::

            c.ForwardBaseSpawner.public_api_url = "https://jupyter.example.org/hub/api"
        """,
    )

    ssh_during_startup = Union(
        [Callable(), Bool()],
        default_value=False,
        config=True,
        help="""
        Open the tunnel hub → server while ``start()`` runs, to the address ``_start()`` returned.

        Default: False. With False, an address from ``_start()`` is used as it is (no tunnel), and
        a falsy result from ``_start()`` means the remote side reports the address later.
        Signature when callable: ``ssh_during_startup(spawner) -> bool``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_during_startup = True
        """,
    )

    remote_stop_timeout = Float(
        30,
        config=True,
        help="""
        Seconds ``stop()`` waits for the subclass's ``_stop()``; then it logs and cleans up anyway.

        Default: 30.

        Example::

            c.ForwardBaseSpawner.remote_stop_timeout = 60
        """,
    )

    events_max_count = Integer(
        200,
        config=True,
        help="""
        How many events one spawn keeps; beyond that the oldest non-terminal event is dropped.

        Default: 200.

        Example::

            c.ForwardBaseSpawner.events_max_count = 500
        """,
    )

    events_max_bytes = Integer(
        256 * 1024,
        config=True,
        help="""
        How many bytes of JSON one spawn's events may take; beyond that the oldest non-terminal
        event is dropped. The events are part of the spawner's state in the Hub database.

        Default: 262144 (256 KiB).

        Example::

            c.ForwardBaseSpawner.events_max_bytes = 1024 * 1024
        """,
    )

    event_max_chars = Integer(
        4096,
        config=True,
        help="""
        The longest ``message`` or ``html_message`` of one event, in characters. The API refuses
        longer ones (400); events added by code are cut.

        Default: 4096.

        Example::

            c.ForwardBaseSpawner.event_max_chars = 16384
        """,
    )

    event_max_body_bytes = Integer(
        64 * 1024,
        config=True,
        help="""
        The largest request body the SpawnEvents API accepts; a larger one gets 413.

        Default: 65536.

        Example::

            c.ForwardBaseSpawner.event_max_body_bytes = 256 * 1024
        """,
    )

    # -------------------------------------------------------------- instance state
    # Not config: read and written by subclasses (CONTRACT.md).
    start_id = ""
    tunnel_node = ""  # the jump node this server's forward goes through (SSHNodeRestarted matches it)
    svc_name = ""  # this server's Kubernetes Service, and its in-cluster DNS name
    dns_name = ""
    yield_wait_seconds = 1  # kept for subclasses of the original; progress here is event-driven

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.port_forward_info = {}
        self.server_token_sha256 = ""
        self._configured_port = self.port  # c.Spawner.port; self.port becomes this start's port
        self._events = EventLog(self.events_max_count, self.events_max_bytes, self.event_max_chars)
        self._start_task = None
        self._abort_message = None
        self._cached_public_api_url = ""
        self._tunnel_open = False
        self._remote_forward_open = False
        self._svc_open = False
        self._svc_restore_pending = False
        self._tunnel_needs_restore = False
        self._start_cancelled = False

    @property
    def ready(self):
        # After a cancel, JupyterHub's progress stream asks `ready` before stop() has removed the
        # server, and would end a cancelled spawn with "Server ready"; a cancelled start never is.
        return not self._start_cancelled and super().ready

    @property
    def events(self):
        """This spawn's events, a list-like :class:`~forwardbasespawner.events.EventLog`."""
        return self._events

    @events.setter
    def events(self, events):
        self._events.load(events)

    @property
    def last_event(self):
        """The newest event of this spawn, or None; assigning appends."""
        return self._events[-1] if len(self._events) else None

    @last_event.setter
    def last_event(self, event):
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

    async def get_ssh_during_startup(self):
        return bool(await resolve(self.ssh_during_startup, self))

    async def get_cancelling_event(self):
        event = dict(await resolve(self.cancelling_event, self) or {})
        event.update(failed=True, progress=100)
        return event

    async def run_filter_events(self, event):
        """Apply ``filter_events``; returns the event to store, or a falsy value to reject it."""
        if self.filter_events is None:
            return event
        return await resolve(self.filter_events, self, event)

    def split_service_address(self, address):
        """``"[http[s]://]host:port"`` → ``(host, port)``, validated; raises ``InvalidAddress``."""
        _, host, port = parse_server_address(address)
        return host, port

    # -------------------------------------------------------------- start
    async def start(self):
        self._events.begin()
        if not self.start_id:
            self.start_id = uuid.uuid4().hex
        self._abort_message = None
        self._start_cancelled = False
        if self.api_token:
            self.server_token_sha256 = token_sha256(self.api_token)
        url = await resolve(self.public_api_url, self, self.port_forward_info)
        self._cached_public_api_url = url or ""

        if self._spawn_future is not None:
            # JupyterHub's cancel may come after start() returned, while it waits for the server
            self._spawn_future.add_done_callback(self._spawn_done)
        self._start_task = asyncio.ensure_future(self._start_remote())
        try:
            response = await self._start_task
            if self.update_start_response is not None:
                response = await resolve(self.update_start_response, self, response)
            url = await self._connect(response)
            if self.update_expected_path is not None:
                url = await resolve(self.update_expected_path, self, url)
        except asyncio.CancelledError:
            if self._abort_message is not None:
                # cancelled by us because the remote side reported a failure
                raise StartAborted(self._abort_message) from None
            # cancelled by JupyterHub (the user pressed cancel): cleanup follows in stop()
            await self._record_cancel()
            raise
        except Exception as e:
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
        remote_info = self.port_forward_info.setdefault("remote", {})
        if await resolve(self.ssh_create_remote_forward, self, remote_info):
            self._remote_forward_open = True  # before the call: stop() must clean up a half-made one
            await self.run_ssh_forward_remote()
        return await self._start()

    async def _connect(self, response):
        """The three cases of DESIGN.md: tunnel now, tunnel later, or no tunnel."""
        if not response:
            self._tunnel_open = True  # stop() removes whatever SetupTunnel will have made
            host, port = await self._delayed_tunnel_address()
            return format_url("http", host, port)
        scheme, host, port = parse_server_address(response)
        if await self.get_ssh_during_startup():
            self.port_forward_info["service"] = format_url(scheme, host, port).split("://", 1)[1]
            self._tunnel_open = True  # before the call: stop() must clean up a half-made tunnel
            host, port = await self.run_ssh_forward(create_svc=True)
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

    def mark_start_cancelled(self):
        """Mark a start that JupyterHub is about to cancel after ``start()`` returned as not ready."""
        self._start_cancelled = True

    # -------------------------------------------------------------- progress
    async def _generate_progress(self):
        # JupyterHub's wrapper always yields "Server requested" first; drop it when asked to
        first = True
        async with aclosing(super()._generate_progress()) as events:
            async for event in events:
                if first and not self.show_first_default_event:
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
        if self._start_task is not None and not self._start_task.done():
            return None
        try:
            broken = await self.check_tunnel()
        except Exception as e:  # a bug or a hook's error must not stop JupyterHub's polling
            self.log.exception("Checking the tunnel of %s failed", self._log_id)
            broken = f"the tunnel check failed: {e}"
        if broken:
            self.log.error("Tunnel of %s is down for good: %s; stopping the server", self._log_id, broken)
            self._events.append({"progress": 100, "failed": True, "message": f"The connection to the server was lost: {broken}"})
            # JupyterHub will treat the server as gone and not call stop(): clean up the remote side now
            await self.stop(now=True)
            return 1
        if self.pre_poll_hook is not None:
            decision = await resolve(self.pre_poll_hook, self)
            if decision is False:
                return None
            if decision is not True:
                return decision
        return await self._poll()

    async def stop(self, now=False, **kwargs):
        task = self._start_task
        if task is not None and not task.done():
            # JupyterHub stops a start that ran out of time; make sure it is over before cleanup
            task.cancel()
            await asyncio.wait([task], timeout=1)
        if self.pre_stop_hook is not None:
            try:
                await resolve(self.pre_stop_hook, self)
            except Exception:
                self.log.exception("pre_stop_hook of %s failed; stopping anyway", self._log_id)
        try:
            await asyncio.wait_for(self._stop(now=now, **kwargs), timeout=self.remote_stop_timeout)
        except asyncio.TimeoutError:
            self.log.error("Stopping %s timed out after %ss", self._log_id, self.remote_stop_timeout)
        except Exception:
            self.log.exception("Stopping %s failed on the remote side", self._log_id)
        if self._tunnel_open:
            try:
                await self.run_ssh_forward_remove(delete_svc=True)
            except Exception:
                self.log.exception("Removing the tunnel of %s failed", self._log_id)
            self._tunnel_open = False
        if self._remote_forward_open:
            try:
                await self.run_ssh_forward_remote_remove()
            except Exception:
                self.log.exception("Removing the tunnel to the Hub of %s failed", self._log_id)
            self._remote_forward_open = False
        self._events.close()
        self.log.info("Stopped %s", self._log_id)

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
        if self.port_forward_info:
            state["port_forward_info"] = dict(self.port_forward_info)
        if self.port:
            state["custom_port"] = self.port
        if self.start_id:
            state["start_id"] = self.start_id
        if self.server_token_sha256:
            state["server_token_sha256"] = self.server_token_sha256
        if self._tunnel_open:
            state["tunnel_open"] = True
        if self._remote_forward_open:
            state["remote_forward_open"] = True
        if self._svc_open:
            state["svc_open"] = True
            state["svc_name"] = self.svc_name
        if self.tunnel_node:
            state["tunnel_node"] = self.tunnel_node
        state["events"] = self._events.to_list()
        return state

    def load_state(self, state):
        super().load_state(state)
        info = state.get("port_forward_info")
        self.port_forward_info = dict(info) if isinstance(info, dict) else {}
        port = state.get("custom_port")
        if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
            self.port = port
        self.start_id = str(state.get("start_id") or "")
        self.server_token_sha256 = str(state.get("server_token_sha256") or "")
        self.tunnel_node = str(state.get("tunnel_node") or self.port_forward_info.get("ssh_node") or "")
        # rows written by the original package have no tunnel flag: a recorded forward means one
        self._tunnel_open = bool(state.get("tunnel_open", bool(self.port_forward_info.get("service"))))
        self._remote_forward_open = bool(state.get("remote_forward_open"))
        self._svc_open = bool(state.get("svc_open"))
        self.svc_name = str(state.get("svc_name") or "")
        self._tunnel_needs_restore = self._tunnel_open or self._remote_forward_open
        events = state.get("events")
        if isinstance(events, list):
            self._events.load(events)
        elif events:
            self.log.warning("Ignoring stored events of %s: not a list", self._log_name)

    def clear_state(self):
        super().clear_state()
        self.port_forward_info = {}
        self.start_id = ""
        self.server_token_sha256 = ""
        self._tunnel_open = False
        self._remote_forward_open = False
        self._svc_open = False
        self.svc_name = self.dns_name = ""
        self._cached_public_api_url = ""
        self.tunnel_node = ""
        self.port = self._configured_port

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
