"""Progress events: validation, sanitising, timestamps, and the bounded per-spawn event log.

An event is a dict as JupyterHub's progress stream knows it::

    {"progress": 40, "message": "Job queued", "html_message": "Job <b>queued</b>",
     "failed": False, "ready": False}

``message`` is plain text (the spawn page renders it as text); ``html_message`` is HTML and is
sanitised to a small allow-list of tags before anyone sees it.
"""

import asyncio
import json
import re
from datetime import datetime
from http.client import responses

import nh3

from .errors import InvalidEvent

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_TIMESTAMP_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}: ")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

EVENT_FIELDS = {"progress": int, "failed": bool, "ready": bool, "message": str, "html_message": str}
TEXT_FIELDS = ("message", "html_message")

ALLOWED_TAGS = {
    "a", "b", "br", "code", "details", "em", "i", "li", "ol", "p", "pre", "span", "strong",
    "summary", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
ALLOWED_URL_SCHEMES = {"http", "https", "mailto"}


def timestamp(now=None):
    """The event timestamp: ``%Y-%m-%d %H:%M:%S.%f`` cut to milliseconds."""
    return (now or datetime.now()).strftime(TIMESTAMP_FORMAT)[:-3]


def sanitise_html(html):
    """Reduce ``html`` to the allow-listed tags and attributes; scripts and handlers are dropped."""
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_URL_SCHEMES,
        link_rel="noopener noreferrer",
    )


SHORTENED_MARK = " … [shortened]"


def _clean_text(text, max_chars):
    """Control characters removed; a text over ``max_chars`` is cut and ends with a visible mark."""
    text = _CONTROL_CHARS.sub("", text)
    if len(text) > max_chars:
        text = text[: max(0, max_chars - len(SHORTENED_MARK))] + SHORTENED_MARK
    return text


def parse_event(raw, *, max_chars=4096):
    """Validate an event from an untrusted caller; return a clean copy or raise :class:`InvalidEvent`.

    Real remote systems send more than the known fields (KubeSpawner's ``raw_event``) and long
    texts (tracebacks): unknown fields are dropped and text fields over ``max_chars`` characters
    are shortened with a visible mark. A known field of the wrong type is refused; ``progress``
    is 0–100.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent("the event must be a JSON object")
    known = {key: value for key, value in raw.items() if key in EVENT_FIELDS}
    if not known:
        raise InvalidEvent(f"the event has none of the fields {', '.join(EVENT_FIELDS)}")
    for key, value in known.items():
        kind = EVENT_FIELDS[key]
        # bool is an int in Python; a progress of `true` is a mistake, not 1%
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidEvent(f"'{key}' must be {'an integer' if kind is int else 'a ' + kind.__name__}")
    if "progress" in known and not 0 <= known["progress"] <= 100:
        raise InvalidEvent("'progress' must be between 0 and 100")
    return clean_event(known, max_chars=max_chars)


def unknown_fields(raw):
    """The fields of a posted event that :func:`parse_event` drops (for the log)."""
    return sorted(key for key in raw if key not in EVENT_FIELDS) if isinstance(raw, dict) else []


def clean_event(event, *, max_chars=4096):
    """Make an event safe to show: text fields cleaned and capped, ``html_message`` sanitised.

    For events from trusted code (subclasses, hooks): other keys are kept, nothing is rejected.
    """
    clean = dict(event)
    for key in TEXT_FIELDS:
        if key in clean:
            clean[key] = _clean_text(str(clean[key]), max_chars)
    if "html_message" in clean:
        clean["html_message"] = sanitise_html(clean["html_message"])
    return clean


_SUMMARY_OPEN = "<details><summary>"


def stamp(event, now=None):
    """Prefix the event's text fields with a timestamp, once: a text that carries one is kept.

    An ``html_message`` that is a ``<details><summary>…`` block (as the original package's
    subclasses and remote services write them) gets the timestamp inside its summary, where it
    stays visible when the block is collapsed, as the original placed it.
    """
    when = timestamp(now)
    for key in TEXT_FIELDS:
        text = event.get(key)
        if not text or _TIMESTAMP_PREFIX.match(text):
            continue
        if text.startswith(_SUMMARY_OPEN):
            rest = text[len(_SUMMARY_OPEN) :]
            if not _TIMESTAMP_PREFIX.match(rest):
                event[key] = f"{_SUMMARY_OPEN}{when}: {rest}"
        else:
            event[key] = f"{when}: {text}"
    return event


def is_terminal(event):
    """Whether the event ends a spawn's progress (``failed`` or ``ready``)."""
    return bool(event.get("failed") or event.get("ready"))


def _size(event):
    return len(json.dumps(event, default=str))


class _ComparesEqualToList(type):
    """Metaclass of :class:`EventLog`: ``type(log) == list`` holds.

    Subclasses of the original package test ``type(spawner.events) == list`` before they read or
    append events (OutpostSpawner, UnicoreSpawner's notification handler); a list subclass alone
    fails that test, and they would silently drop their events.
    """

    def __eq__(cls, other):
        return cls is other or other is list

    def __ne__(cls, other):
        return not (cls is other or other is list)

    __hash__ = type.__hash__


class EventLog(list, metaclass=_ComparesEqualToList):
    """The events of one spawn: a real list of event dicts, bounded, and awaitable by streams.

    It is a ``list`` (``json.dumps``, ``isinstance`` and ``type(events) == list`` all work), so
    subclasses and hooks read and append as they did with the original package. Every added
    event is cleaned and stamped. When more than ``max_count`` events or ``max_bytes`` of JSON are
    held, the oldest event that is not terminal is dropped.

    Streams follow the log with :meth:`follow`; an append wakes them at once. Appends are
    synchronous (hooks append from plain functions), so the wake-up is an ``asyncio.Event``
    replaced on every change rather than a Condition, whose notify must be awaited under its lock.
    """

    def __init__(self, max_count=200, max_bytes=256 * 1024, max_chars=4096):
        super().__init__()
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self._meta = []  # (seq, size) of each event, parallel to the list's items
        self._next_seq = 0
        self._bytes = 0
        self._changed = asyncio.Event()
        self.closed = False

    def __reduce_ex__(self, protocol):  # copies and pickles are plain lists of the events
        return (list, (self.to_list(),))

    # --- the list interface: every change goes through insert / __setitem__ / __delitem__ ---
    def append(self, event):
        self.insert(len(self), event)

    def extend(self, events):
        for event in list(events):
            self.append(event)

    def __iadd__(self, events):
        self.extend(events)
        return self

    def insert(self, index, event):
        if self.closed:
            # the previous spawn ended; this event opens the next one (e.g. from a pre-spawn hook)
            self.begin()
        event = stamp(clean_event(event, max_chars=self.max_chars))
        index = min(len(self), index if index >= 0 else max(0, len(self) + index))
        meta = (self._next_seq, _size(event))
        self._next_seq += 1
        list.insert(self, index, event)
        self._meta.insert(index, meta)
        self._bytes += meta[1]
        self._trim(keep=meta)
        self._notify()

    def __setitem__(self, index, event):
        if isinstance(index, slice):
            raise TypeError("EventLog does not support slice assignment")
        event = clean_event(event, max_chars=self.max_chars)
        seq, size = self._meta[index]
        list.__setitem__(self, index, event)
        self._meta[index] = (seq, _size(event))
        self._bytes += self._meta[index][1] - size
        self._notify()

    def __delitem__(self, index):
        list.__delitem__(self, index)
        del self._meta[index]
        self._bytes = sum(size for _, size in self._meta)

    def pop(self, index=-1):
        event = self[index]
        del self[index]
        return event

    def remove(self, event):
        del self[self.index(event)]

    def clear(self):
        list.clear(self)
        self._meta.clear()
        self._bytes = 0

    def _unsupported(self, *args, **kwargs):
        raise TypeError("events keep their order; EventLog does not support this")

    sort = reverse = __imul__ = _unsupported

    def __repr__(self):
        return f"EventLog({self.to_list()!r})"

    # --- spawn life cycle ---
    def begin(self):
        """Start a new spawn: events of an ended spawn are dropped, events already added to this
        spawn (by hooks that ran before ``start()``) are kept."""
        if self.closed:
            self.clear()
            self.closed = False

    def close(self):
        """End this spawn: streams finish; the events stay readable until the next spawn."""
        self.closed = True
        self._notify()

    def load(self, events, *, closed=False):
        """Replace the contents with ``events``; they are cleaned, not re-stamped.

        ``closed=True`` for events of an earlier spawn (read from the database): they stay
        readable, and the next spawn starts without them.
        """
        self.clear()
        for event in events or []:
            if isinstance(event, dict):
                event = clean_event(event, max_chars=self.max_chars)
                list.append(self, event)
                self._meta.append((self._next_seq, _size(event)))
                self._next_seq += 1
                self._bytes += self._meta[-1][1]
        self._trim()
        self.closed = closed
        self._notify()

    def to_list(self):
        return [dict(event) for event in self]

    async def follow(self):
        """Yield every event of this spawn, then each new one as it arrives.

        Ends after a terminal event (``failed`` or ``ready``) or when the spawn ends.
        """
        seen = -1
        while True:
            changed = self._changed
            new = []
            for i in range(len(self) - 1, -1, -1):
                seq = self._meta[i][0]
                if seq <= seen:
                    break
                new.append((seq, list.__getitem__(self, i)))
            for seq, event in reversed(new):
                seen = seq
                yield event
                if is_terminal(event):
                    return
            if self.closed:
                return
            await changed.wait()

    # --- internals ---
    def _notify(self):
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _trim(self, keep=None):
        """Hold the caps: drop the oldest non-terminal event; when only terminal events are left,
        the oldest of those (so the newest terminal event goes last). The newest event (``keep``)
        always stays, and the caps hold whatever is appended (terminal events used to escape them)."""
        while (len(self) > self.max_count or self._bytes > self.max_bytes) and len(self) > 1:
            victim = None
            for i, meta in enumerate(self._meta):
                if meta is not keep and not is_terminal(list.__getitem__(self, i)):
                    victim = i
                    break
            if victim is None:
                # only terminal events besides the newest: the oldest goes (the newest terminal last)
                terminal = [i for i, meta in enumerate(self._meta) if meta is not keep]
                if not terminal:
                    return
                victim = terminal[0]
            del self[victim]

    def terminal_events(self):
        """The terminal (``failed`` or ``ready``) events of this spawn, oldest first."""
        return [event for event in self if is_terminal(event)]


#: what users see when ssh failed: ssh's own words (user@host, key paths, the node's errors) are
#: for the Hub's log, where the spawner writes them
TUNNEL_FAILED_MESSAGE = "the tunnel to the server could not be set up (an administrator finds the reason in the Hub's log)"


def describe_exception(exc):
    """A clean, user-facing one-line reason for a failed start (never a traceback, never ssh's stderr)."""
    from .ssh.openssh import TunnelError

    if isinstance(exc, TunnelError):
        return TUNNEL_FAILED_MESSAGE
    message = getattr(exc, "jupyterhub_message", None)
    if not message and hasattr(exc, "status_code"):  # tornado HTTPError, with or without reason
        log_message = getattr(exc, "log_message", None)
        if log_message:
            try:  # tornado keeps log_message %-escaped and its arguments apart
                log_message = log_message % exc.args
            except (TypeError, ValueError):
                pass
        message = log_message or getattr(exc, "reason", None) or responses.get(exc.status_code) or f"HTTP error {exc.status_code}"
    if not message:
        message = str(exc) or type(exc).__name__
    return _clean_text(str(message), 1000)
