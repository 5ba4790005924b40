"""What the remote side may ask of a spawner through the Hub API, and the typed requests it asks with.

:class:`RemoteCalls` (mixed into ForwardBaseSpawner) carries out the calls the API handlers take
from the remote side: :meth:`~RemoteCalls.report_event` (SpawnEvents POST),
:meth:`~RemoteCalls.setup_tunnel` (SetupTunnel) and :meth:`~RemoteCalls.end_spawn` (the remote
side gave up). It enforces the operator's limits (:class:`~forwardbasespawner.traits.api.APIPolicy`)
and keeps the state they need: the rate of events, the forward changes of a start, one SetupTunnel
at a time. It knows nothing of HTTP: it raises the errors of :mod:`forwardbasespawner.errors`, which
the handlers answer (``forwardbasespawner.api.common``). For a spawner of another class (a mixed
deployment), :func:`remote_calls` makes the same calls on it, with the policy's defaults.
"""

import asyncio
import math
import time
import weakref
from dataclasses import dataclass

from .errors import (
    CallConflict,
    CallRejected,
    InvalidEvent,
    InvalidSpec,
    TooManyCalls,
    TunnelError,
    TunnelRequestRefused,
    TunnelSetupFailed,
)
from .events import EventLog, is_terminal, parse_event, unknown_fields
from .hooks import resolve, settle
from .policy import APIPolicy, api_ssh_options_allowed, key_allowed, log_safe, service_allowed, setting
from .ssh.spec import TunnelRequest
from .traits.events import EventTraits

#: what callers are told when the forward fails; ssh's own words (user@host, paths, errors of the
#: node) go to the Hub's log only
TUNNEL_FAILED = "The tunnel to the server could not be set up; an administrator finds the reason in the Hub's log."


@dataclass(frozen=True)
class PostedEvent:
    """A SpawnEvents POST: the event as posted, a non-empty JSON object. ``filter_events`` sees it
    so; :func:`~forwardbasespawner.events.parse_event` validates what the filter returns."""

    fields: dict

    @classmethod
    def parse(cls, body):
        if not isinstance(body, dict) or not body:
            raise InvalidEvent("the event must be a non-empty JSON object")
        return cls(body)


class _ThisStart:
    """What the remote calls of one start have used: the token bucket of event POSTs, the
    deferred state write, and the forward changes."""

    def __init__(self, start_id, burst):
        self.start_id = start_id
        self.tokens = float(burst)
        self.refilled = time.monotonic()
        self.saved = 0.0
        self.pending_save = None
        self.tunnel_changes = 0

    def take(self, rate, burst):
        """Take one token; return 0 if there was one, else the seconds until there is."""
        now = time.monotonic()
        self.tokens = min(float(burst), self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        return (1 - self.tokens) / rate if rate > 0 else 3600

    def cancel_save(self):
        if self.pending_save is not None:
            self.pending_save.cancel()
            self.pending_save = None


class RemoteCalls:
    """What the remote side may ask of a spawner through the Hub API.

    Each call checks the server's state and the operator's limits, and raises
    :class:`~forwardbasespawner.errors.RemoteCallError` kinds, :class:`~forwardbasespawner.errors.TunnelRequestRefused` or
    :class:`~forwardbasespawner.errors.InvalidEvent` for what it does not do. A spawn that has to end is ended here as far as
    the spawner can; stopping the server through JupyterHub is left to the caller (see the return
    values), as it needs JupyterHub's handler.
    """

    # ------------------------------------------------------------ SpawnEvents POST
    async def report_event(self, posted):
        """Store an event the remote side posted (a :class:`PostedEvent`).

        Returns True when it was a ``failed`` event that ended the spawn and the server must still
        be stopped through JupyterHub.
        """
        self._require_starting_or_running()
        wait = self._this_start().take(self.events_post_rate, self.events_post_burst)
        if wait:
            raise TooManyCalls("Too many events; retry later.", retry_after=max(1, math.ceil(wait)))
        # filter_events sees the event as it was posted, fields this library drops included
        raw = await self._filtered(posted.fields)
        event = parse_event(raw, max_chars=self.event_max_chars)
        dropped = unknown_fields(raw)
        if dropped:
            self.log.debug("Event for %s: dropped field(s) %s", self._log_name, log_safe(", ".join(map(str, dropped))))
        events = getattr(self, "events", None)
        if not isinstance(events, EventLog):
            raise CallRejected(f"Server {self._log_name} does not keep progress events.")
        terminal = events.terminal_events() if not events.closed else []
        if any(e.get("failed") for e in terminal):
            raise CallConflict(f"Server {self._log_name} has reported a failure; its spawn is ending.")
        if event.get("ready") and any(e.get("ready") for e in terminal):
            raise CallConflict(f"Server {self._log_name} has reported ready already.")
        events.append(event)
        self._save_state_soon(now=is_terminal(event))
        self.log.debug("Event for %s: %s", self._log_name, log_safe(events[-1].get("message", "")))
        if not event.get("failed"):
            return False
        self.log.info("Server %s reported a failure: %s", self._log_name, log_safe(events[-1].get("message", "")))
        return await self.end_spawn(events[-1])

    async def _filtered(self, event):
        rejected = "The event was rejected by the server's event filter."
        try:
            filtered = await settle(self.run_filter_events(event))
        except Exception:
            self.log.exception("filter_events failed for %s", self._log_name)
            raise CallRejected(rejected) from None
        if not filtered:
            raise CallRejected(rejected)
        if not isinstance(filtered, dict):
            self.log.error("filter_events for %s returned %r, not a dict", self._log_name, type(filtered))
            raise CallRejected(rejected)
        return filtered

    def _save_state_soon(self, now=False):
        """Write the state, at most once per ``events_state_write_interval`` (a flood of events
        would otherwise rewrite the whole state row for each one); ``now`` writes at once."""
        start = self._this_start()
        interval = self.events_state_write_interval
        elapsed = time.monotonic() - start.saved
        if now or elapsed >= interval:
            start.cancel_save()
            start.saved = time.monotonic()
            self.save_state()
            return
        if start.pending_save is None:
            ref = weakref.ref(self)

            def flush():
                start.pending_save = None
                target = ref()
                # a server that stopped meanwhile had its state written by JupyterHub's stop
                if target is not None and (target.pending or target.ready) and start.start_id == target.start_id:
                    start.saved = time.monotonic()
                    target.save_state()

            start.pending_save = asyncio.get_running_loop().call_later(interval - elapsed, flush)

    # ------------------------------------------------------------ SetupTunnel
    async def setup_tunnel(self, request):
        """Open (or move) the forward hub → server to what a :class:`TunnelRequest` names.

        Calls of one server run one at a time; a call while ``_start()`` still runs waits for it.
        Raises :class:`TunnelSetupFailed` when the forward cannot be made: the spawn is then
        ended with a failed event saying so.
        """
        await self._check_tunnel_policy(request)
        self._require_starting_or_running()
        async with self._tunnel_lock():
            await self._wait_for_start_call()
            self._require_starting_or_running()  # it may have stopped while we waited
            await self._apply_tunnel_request(request)

    async def _check_tunnel_policy(self, request):
        """The operator's limits on targets, keys and ssh options."""
        not_forwarded = f"the target {request.service} is not one this Hub forwards to."
        if not service_allowed(request.host, request.port, self.setuptunnel_allowed_services):
            self.log.warning("SetupTunnel for %s refused: target %s is not allowed", self._log_name, log_safe(request.service))
            raise TunnelRequestRefused(not_forwarded)
        check = self.setuptunnel_service_check
        if check is not None:
            try:
                verdict = await resolve(check, self._calls_spawner, request.host, request.port)
            except Exception:
                self.log.exception("setuptunnel_service_check failed for %s", self._log_name)
                verdict = False
            if verdict is not True and (verdict is False or isinstance(verdict, str) or not verdict):
                self.log.warning("SetupTunnel for %s refused by setuptunnel_service_check: %s", self._log_name,
                                 log_safe(verdict if isinstance(verdict, str) else request.service))  # fmt: skip
                raise TunnelRequestRefused(not_forwarded)
        if request.ssh_key is not None and not key_allowed(request.ssh_key, self.setuptunnel_allowed_ssh_keys):
            raise TunnelRequestRefused(
                "'ssh_key' is not one of the key files an operator allows (c.ForwardBaseSpawner.setuptunnel_allowed_ssh_keys)"
            )
        if request.ssh_forward_options is not None:
            reason = api_ssh_options_allowed(request.ssh_forward_options)
            if reason:
                raise TunnelRequestRefused(reason)

    def _tunnel_lock(self):
        """The lock that serialises SetupTunnel calls of this server (``port_forward_info`` is shared)."""
        lock = getattr(self, "_setuptunnel_lock", None)
        if lock is None:
            lock = self._setuptunnel_lock = asyncio.Lock()
        return lock

    async def _wait_for_start_call(self):
        """Wait until the subclass's ``_start()`` has returned; CallConflict if the start ended without a URL.

        A remote side may call SetupTunnel before ``_start()`` returned (the start script is faster
        than the ssh session that launched it). The forward is made only after: ``start()`` then knows
        whether it makes the tunnel itself (``ssh_during_startup``) and has handed out the URL, so the
        port never moves under the forward.
        """
        outcome = await self.start_call_outcome(timeout=max(float(getattr(self, "start_timeout", 60) or 60), 1))
        if outcome == "running":
            raise CallConflict(f"Server {self._log_name} is still being started; call again later.")
        if outcome == "failed":
            raise CallConflict(f"Server {self._log_name} failed to start.")
        if outcome == "cancelled":
            raise CallConflict(f"The start of {self._log_name} was cancelled.")

    async def _apply_tunnel_request(self, request):
        wanted = request.port_forward_info()
        moved = any(self.port_forward_info.get(k) != v for k, v in wanted.items())
        if not moved and await self.tunnel_is_up():
            return  # the same call again (a retrying start script, a job restarted by its scheduler)
        start = self._this_start()
        if start.tunnel_changes >= self.setuptunnel_max_changes:
            raise TooManyCalls(f"Server {self._log_name} has changed its tunnel too often in this start.")
        start.tunnel_changes += 1
        if self.port_forward_info.get("service") and moved:
            await self.run_ssh_forward_remove(delete_svc=False)  # the target moved
        self.port_forward_info.update(wanted)
        try:
            await self.run_ssh_forward(create_svc=False)
        except Exception as e:
            if isinstance(e, (TunnelError, InvalidSpec)):
                self.log.error("SetupTunnel for %s failed: %s", self._log_name, log_safe(e, 2000))
            else:  # a bug or a hook's error: the traceback goes to the log, not to the caller
                self.log.exception("SetupTunnel for %s failed", self._log_name)
            self.events.append({"progress": 100, "failed": True, "message": TUNNEL_FAILED})
            stop = await self.end_spawn(self.events[-1])
            raise TunnelSetupFailed(TUNNEL_FAILED, stop_server=stop) from None
        self.save_state()  # run_ssh_forward() recorded the open tunnel
        self.log.info("SetupTunnel for %s: forward to %s is up", self._log_name, request.service)

    # ------------------------------------------------------------ both
    async def end_spawn(self, event):
        """The remote side gave up (``event`` says why): end this spawn as JupyterHub's cancel does.

        A ``_start()`` still running is cancelled (``start()`` raises with the event's message and
        JupyterHub cleans up). Returns True when the server must still be stopped through
        JupyterHub: a start that returned and is waiting for the server (it is cancelled here
        first), or a running server.
        """
        if self.pending != "spawn":
            return bool(self.ready)
        if self.abort_start(event):
            return False
        # start() has returned and JupyterHub is waiting for the server to answer
        self.mark_start_cancelled()
        future = self._spawn_future
        if future is not None and not future.done():
            future.cancel()
            await asyncio.wait([future], timeout=5)
        return True

    def _require_starting_or_running(self):
        """CallConflict unless the server is starting or running (writes to a stopped server would be lost).

        A server that JupyterHub checks at its start-up (``pending == "check"``) counts as running: a
        start that was waiting for SetupTunnel when the Hub restarted is completed by exactly that call.
        """
        if not (self.pending in ("spawn", "check") or (self.ready and not self.pending)):
            raise CallConflict(f"Server {self._log_name} is not starting or running.")

    def _this_start(self):
        """The :class:`_ThisStart` of the current start (a new start begins afresh)."""
        start_id = getattr(self, "start_id", "")
        start = getattr(self, "_remote_calls_start", None)
        if start is None or start.start_id != start_id:
            if start is not None:
                start.cancel_save()
            start = self._remote_calls_start = _ThisStart(start_id, self.events_post_burst)
        return start

    @property
    def _calls_spawner(self):
        """The spawner these calls are made on (what hooks are given)."""
        return self


#: settings a spawner of another class may lack, and what is used then
_POLICY_SETTINGS = frozenset(APIPolicy.class_own_traits())
_EVENT_LIMITS = {name: EventTraits.class_traits()[name].default() for name in ("event_max_chars", "event_max_body_bytes")}


class _CallsOnOtherSpawner(RemoteCalls):
    """:class:`RemoteCalls` made on a spawner of another class (a mixed deployment): the same
    rules on its attributes; the policy settings it lacks are the defaults (:func:`setting`)."""

    def __init__(self, spawner):
        self._wrapped = spawner

    def __getattr__(self, name):  # what RemoteCalls itself does not define
        wrapped = self.__dict__.get("_wrapped")
        if wrapped is None:
            raise AttributeError(name)
        if name in _POLICY_SETTINGS:
            return setting(wrapped, name)
        try:
            return getattr(wrapped, name)
        except AttributeError:
            if name in _EVENT_LIMITS:
                return _EVENT_LIMITS[name]
            raise

    @property
    def _calls_spawner(self):
        return self._wrapped


def remote_calls(spawner):
    """The :class:`RemoteCalls` of ``spawner``: the spawner itself, or for a spawner of another
    class the same calls made on it (kept with it, so its rate limits and lock persist)."""
    if isinstance(spawner, RemoteCalls):
        return spawner
    calls = getattr(spawner, "_remote_calls", None)
    if calls is None:
        calls = spawner._remote_calls = _CallsOnOtherSpawner(spawner)
    return calls


__all__ = ["PostedEvent", "RemoteCalls", "TUNNEL_FAILED", "TunnelRequest", "remote_calls"]
