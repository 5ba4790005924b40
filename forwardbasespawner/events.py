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
from collections.abc import MutableSequence
from datetime import datetime
from http.client import responses

import nh3

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


class InvalidEvent(ValueError):
    """An event that is not acceptable; the message says why, for the caller."""


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


def _clean_text(text, max_chars):
    text = _CONTROL_CHARS.sub("", text)
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text


def parse_event(raw, *, max_chars=4096):
    """Validate an event from an untrusted caller; return a clean copy or raise :class:`InvalidEvent`.

    Only the known fields are accepted, each with its type; ``progress`` is 0–100; text fields are
    at most ``max_chars`` characters.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent("the event must be a JSON object")
    unknown = sorted(set(raw) - set(EVENT_FIELDS))
    if unknown:
        raise InvalidEvent(f"unknown field(s): {', '.join(unknown)[:200]}; allowed: {', '.join(EVENT_FIELDS)}")
    if not raw:
        raise InvalidEvent("the event is empty")
    for key, value in raw.items():
        kind = EVENT_FIELDS[key]
        # bool is an int in Python; a progress of `true` is a mistake, not 1%
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidEvent(f"'{key}' must be {'an integer' if kind is int else 'a ' + kind.__name__}")
    if "progress" in raw and not 0 <= raw["progress"] <= 100:
        raise InvalidEvent("'progress' must be between 0 and 100")
    for key in TEXT_FIELDS:
        if key in raw and len(raw[key]) > max_chars:
            raise InvalidEvent(f"'{key}' is longer than {max_chars} characters")
    return clean_event(raw, max_chars=max_chars)


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


def stamp(event, now=None):
    """Prefix the event's text fields with a timestamp (once: an already stamped text is kept)."""
    when = timestamp(now)
    for key in TEXT_FIELDS:
        text = event.get(key)
        if text and not _TIMESTAMP_PREFIX.match(text):
            event[key] = f"{when}: {text}"
    return event


def is_terminal(event):
    """Whether the event ends a spawn's progress (``failed`` or ``ready``)."""
    return bool(event.get("failed") or event.get("ready"))


def _size(event):
    return len(json.dumps(event, default=str))


class EventLog(MutableSequence):
    """The events of one spawn: bounded, and awaitable by progress streams.

    Reads like a list of event dicts (``spawner.events.append(...)`` keeps working for hooks);
    every added event is cleaned and stamped. When more than ``max_count`` events or
    ``max_bytes`` of JSON are held, the oldest event that is not terminal is dropped.

    Streams follow the log with :meth:`follow`; an append wakes them at once. Appends are
    synchronous (hooks append from plain functions), so the wake-up is an ``asyncio.Event``
    replaced on every change rather than a Condition, whose notify must be awaited under its lock.
    """

    def __init__(self, max_count=200, max_bytes=256 * 1024, max_chars=4096):
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self._items = []  # (seq, event, size), in seq order
        self._next_seq = 0
        self._bytes = 0
        self._changed = asyncio.Event()
        self.closed = False

    # --- the list interface ---
    def __len__(self):
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [item[1] for item in self._items[index]]
        return self._items[index][1]

    def __setitem__(self, index, event):
        if isinstance(index, slice):
            raise TypeError("EventLog does not support slice assignment")
        self._bytes -= self._items[index][2]
        event = clean_event(event, max_chars=self.max_chars)
        self._items[index] = (self._items[index][0], event, _size(event))
        self._bytes += self._items[index][2]
        self._notify()

    def __delitem__(self, index):
        removed = self._items[index] if isinstance(index, slice) else [self._items[index]]
        self._bytes -= sum(item[2] for item in removed)
        del self._items[index]

    def insert(self, index, event):
        if self.closed:
            # the previous spawn ended; this event opens the next one (e.g. from a pre-spawn hook)
            self.begin()
        event = stamp(clean_event(event, max_chars=self.max_chars))
        item = (self._next_seq, event, _size(event))
        self._next_seq += 1
        self._items.insert(index, item)
        self._bytes += item[2]
        self._trim(keep=item)
        self._notify()

    def __repr__(self):
        return f"EventLog({self.to_list()!r})"

    def __eq__(self, other):
        return list(self) == list(other)

    # --- spawn life cycle ---
    def begin(self):
        """Start a new spawn: events of an ended spawn are dropped, events already added to this
        spawn (by hooks that ran before ``start()``) are kept."""
        if self.closed:
            self._items.clear()
            self._bytes = 0
            self.closed = False

    def close(self):
        """End this spawn: streams finish; the events stay readable until the next spawn."""
        self.closed = True
        self._notify()

    def load(self, events):
        """Replace the contents with stored events (from state); they are cleaned, not re-stamped."""
        self._items.clear()
        self._bytes = 0
        for event in events or []:
            if isinstance(event, dict):
                event = clean_event(event, max_chars=self.max_chars)
                self._items.append((self._next_seq, event, _size(event)))
                self._next_seq += 1
                self._bytes += self._items[-1][2]
        self._trim()
        self._notify()

    def to_list(self):
        return [dict(item[1]) for item in self._items]

    async def follow(self):
        """Yield every event of this spawn, then each new one as it arrives.

        Ends after a terminal event (``failed`` or ``ready``) or when the spawn ends.
        """
        seen = -1
        while True:
            changed = self._changed
            new = []
            for item in reversed(self._items):
                if item[0] <= seen:
                    break
                new.append(item)
            for seq, event, _ in reversed(new):
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
        while len(self._items) > self.max_count or self._bytes > self.max_bytes:
            for i, item in enumerate(self._items):
                if item is not keep and not is_terminal(item[1]):
                    self._bytes -= item[2]
                    del self._items[i]
                    break
            else:
                return  # only terminal events (and the new one) are left


def describe_exception(exc):
    """A clean, user-facing one-line reason for a failed start (never a traceback)."""
    message = getattr(exc, "jupyterhub_message", None)
    if not message and hasattr(exc, "status_code"):  # tornado HTTPError, with or without reason
        log_message = getattr(exc, "log_message", None)
        if log_message:
            try:  # tornado keeps log_message %-escaped and its arguments apart
                log_message = log_message % exc.args
            except (TypeError, ValueError):
                pass
        message = (
            log_message
            or getattr(exc, "reason", None)
            or responses.get(exc.status_code)
            or f"HTTP error {exc.status_code}"
        )
    if not message:
        message = str(exc) or type(exc).__name__
    return _clean_text(str(message), 1000)
