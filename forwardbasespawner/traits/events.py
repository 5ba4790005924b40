"""Traits of a spawn's progress events: what is kept, shown and accepted.

Declarations only (ForwardBaseSpawner mixes the class in).
"""

from traitlets import Bool, Dict, Integer, default
from traitlets.config import LoggingConfigurable

from ..hooks import Hook, value_or_callable


class EventTraits(LoggingConfigurable):
    """Settings of the progress events one spawn keeps and shows."""

    filter_events = Hook(
        help="""
        Inspect or change every event the remote side POSTs, as it was posted (fields this library
        drops, such as KubeSpawner's ``raw_event``, are still there), before it is validated and stored.

        Default: None (store events as they are).
        Signature: ``filter_events(spawner, event) -> dict | None``, sync or async.
        Return the event to store (changed or not); an empty result rejects it (the caller gets 400).
        What it returns is validated like a posted event: unknown fields dropped, long texts shortened.

        Example::

            def filter_events(spawner, event):
                # don't show the scheduler's internal job ids to users
                event["message"] = re.sub(r"job \\d+", "job", event.get("message", ""))
                return event

            c.ForwardBaseSpawner.filter_events = filter_events
        """,
    )

    show_first_default_event = value_or_callable(
        Bool(),
        default_value=True,
        help="""
        Show JupyterHub's generic first progress event ("Server requested") on the spawn page.

        Default: True. Set False when the remote start script sends its own first event.
        Signature when callable: ``show_first_default_event(spawner) -> bool``, sync or async.

        Example::

            c.ForwardBaseSpawner.show_first_default_event = False
        """,
    )

    cancelling_event = value_or_callable(
        Dict(),
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
