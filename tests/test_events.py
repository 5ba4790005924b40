"""Events: validation, sanitising, stamping, the bounded log and how streams follow it."""

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tornado import web

from forwardbasespawner.events import (
    SHORTENED_MARK,
    EventLog,
    InvalidEvent,
    describe_exception,
    parse_event,
    sanitise_html,
    stamp,
    unknown_fields,
)


@pytest.mark.parametrize(
    "raw, why",
    [
        ([], "JSON object"),
        ("x", "JSON object"),
        ({}, "none of the fields"),
        ({"raw_event": {"reason": "Pulling"}}, "none of the fields"),
        ({"progress": "50"}, "'progress' must be an integer"),
        ({"progress": True}, "'progress' must be an integer"),
        ({"progress": 50.5}, "'progress' must be an integer"),
        ({"progress": 101}, "between 0 and 100"),
        ({"progress": -1}, "between 0 and 100"),
        ({"failed": "yes"}, "'failed' must be a bool"),
        ({"ready": 1}, "'ready' must be a bool"),
        ({"message": 5}, "'message' must be a str"),
        ({"message": ["a"]}, "'message' must be a str"),
        ({"html_message": {"a": 1}}, "'html_message' must be a str"),
    ],
)
def test_parse_event_refuses_with_a_reason(raw, why):
    with pytest.raises(InvalidEvent, match=None) as e:
        parse_event(raw)
    assert why in str(e.value)


def test_parse_event_drops_unknown_fields_as_real_remote_systems_send_them():
    # KubeSpawner's events, as an Outpost forwards them, carry the Kubernetes event itself
    raw = {"progress": 50, "message": "Pulling image", "raw_event": {"reason": "Pulling", "involvedObject": {}}}
    assert parse_event(raw) == {"progress": 50, "message": "Pulling image"}
    assert unknown_fields(raw) == ["raw_event"]


def test_parse_event_shortens_long_texts_with_a_visible_mark():
    traceback = "<details><summary>Start failed</summary>" + "Traceback line\n" * 1000 + "</details>"
    event = parse_event({"progress": 100, "failed": True, "html_message": traceback, "message": "x" * 5000})
    assert len(event["message"]) == 4096 and event["message"].endswith(SHORTENED_MARK)
    assert len(event["html_message"]) <= 4096 + len("</details>")  # the sanitiser closes the cut tag
    assert SHORTENED_MARK in event["html_message"] and event["html_message"].startswith("<details><summary>Start failed")


def test_event_log_is_a_list_for_subclasses_of_the_original():
    # OutpostSpawner and UnicoreSpawner test `type(self.events) == list` before they use events
    log = EventLog()
    assert type(log) == list and list == type(log) and isinstance(log, list)  # noqa: E721 (the subclasses' own test)
    assert type(log) != dict and type(log) != tuple  # noqa: E721
    log.append({"progress": 5, "message": "a"})
    log += [{"progress": 6, "message": "b"}]
    assert json.loads(json.dumps(log))[1]["message"].endswith(": b")
    assert [e["progress"] for e in log] == [5, 6] and log.pop()["progress"] == 6 and len(log) == 1


def test_parse_event_keeps_valid_fields():
    event = parse_event({"progress": 40, "message": "queued", "failed": False, "ready": False})
    assert event == {"progress": 40, "message": "queued", "failed": False, "ready": False}


@pytest.mark.parametrize(
    "html, forbidden",
    [
        ("<script>window.pwned=1</script>ok", "<script"),
        ('<img src=x onerror="window.pwned=1">', "onerror"),
        ('<a href="javascript:window.pwned=1">x</a>', "javascript:"),
        ('<b onclick="window.pwned=1">x</b>', "onclick"),
        ("<svg><script>alert(1)</script></svg>", "<svg"),
        ('<iframe src="http://evil"></iframe>', "<iframe"),
        ("<style>body{display:none}</style>", "<style"),
        ('<a href="http://ok" target="_top">x</a>', "target"),
    ],
)
def test_html_message_is_sanitised(html, forbidden):
    clean = parse_event({"html_message": html})["html_message"]
    assert forbidden not in clean.lower()


def test_html_message_keeps_allowed_markup():
    html = '<details><summary>Job 7</summary><a href="https://x.org/log">log</a> <b>ok</b></details>'
    clean = sanitise_html(html)
    assert "<details><summary>Job 7</summary>" in clean
    assert 'href="https://x.org/log"' in clean and 'rel="noopener noreferrer"' in clean


def test_message_is_text_without_control_characters():
    event = parse_event({"message": "<b>a</b>\x00\x1b[31m\nb"})
    assert event["message"] == "<b>a</b>[31m\nb"  # kept as text: the page renders it as text


def test_stamp_prefixes_once():
    event = stamp({"message": "hello", "html_message": "<b>hi</b>"})
    assert event["message"][23:] == ": hello"
    assert event["html_message"].endswith(": <b>hi</b>")
    assert stamp(dict(event)) == event


def test_describe_exception_never_crashes_and_has_no_traceback():
    assert describe_exception(web.HTTPError(500)) == "Internal Server Error"
    assert describe_exception(web.HTTPError(599)) == "HTTP error 599"
    assert describe_exception(web.HTTPError(400, "bad %s", "input")) == "bad input"
    assert describe_exception(web.HTTPError(400, "100%")) == "100%"
    assert describe_exception(RuntimeError()) == "RuntimeError"
    assert describe_exception(ValueError("no quota")) == "no quota"


def test_log_drops_oldest_non_terminal_events():
    log = EventLog(max_count=3)
    log.append({"progress": 1, "message": "a"})
    log.append({"progress": 100, "failed": True, "message": "failed"})
    for i in range(10):
        log.append({"progress": 2, "message": f"m{i}"})
    assert len(log) == 3
    assert log[0]["failed"] is True  # the terminal event is never dropped
    assert [e["message"][25:] for e in log[1:]] == ["m8", "m9"]


def test_log_respects_byte_cap():
    log = EventLog(max_count=1000, max_bytes=2000)
    for _ in range(100):
        log.append({"message": "x" * 100})
    assert sum(len(json.dumps(e)) for e in log) <= 2000
    assert len(log) < 20


def test_log_begin_keeps_events_of_this_spawn_drops_old_ones():
    log = EventLog()
    log.append({"message": "old spawn"})
    log.close()
    log.append({"message": "from a pre-spawn hook"})  # opens the next spawn
    log.begin()  # start() runs
    assert [e["message"][25:] for e in log] == ["from a pre-spawn hook"]


def test_log_assignment_of_list_like_old_subclasses_do():
    log = EventLog()
    log.load([{"progress": 5, "message": "2024-01-01 00:00:00.000: kept"}, "not an event"])
    assert log.to_list() == [{"progress": 5, "message": "2024-01-01 00:00:00.000: kept"}]


async def test_follow_replays_then_waits_without_polling():
    log = EventLog()
    log.append({"progress": 10, "message": "first"})
    readers = [asyncio.ensure_future(_collect(log)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert all(not r.done() for r in readers)
    log.append({"progress": 50, "message": "second"})
    log.append({"progress": 100, "ready": True, "message": "done"})
    log.append({"progress": 100, "message": "after the end"})
    for received in await asyncio.wait_for(asyncio.gather(*readers), 2):
        assert [e["message"][25:] for e in received] == ["first", "second", "done"]


async def test_follow_ends_when_spawn_closes():
    log = EventLog()
    reader = asyncio.ensure_future(_collect(log))
    await asyncio.sleep(0.01)
    log.close()
    assert await asyncio.wait_for(reader, 2) == []


async def _collect(log):
    return [e async for e in log.follow()]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(max_size=15), st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=50), st.lists(st.integers())))
)
def test_parse_event_only_raises_invalid_event(raw):
    try:
        event = parse_event(raw)
    except InvalidEvent:
        return
    assert set(event) <= {"progress", "failed", "ready", "message", "html_message"}


def test_stamp_goes_inside_a_details_summary_and_never_twice():
    # OutpostSpawner and UnicoreSpawner write "<details><summary>{now}: ...</summary>..." themselves
    theirs = {"html_message": "<details><summary>2026-01-02 03:04:05.678: Job queued</summary>x</details>"}
    assert stamp(dict(theirs)) == theirs
    plain = stamp({"html_message": "<details><summary>Job queued</summary>x</details>", "message": "Job queued"})
    assert plain["html_message"].startswith("<details><summary>2") and ": Job queued</summary>" in plain["html_message"]
    assert plain["message"][:2] == "20" and plain["message"].endswith(": Job queued")


def test_describe_exception_keeps_ssh_stderr_from_users():
    from forwardbasespawner.ssh.openssh import ForwardError, TunnelError

    for error in (TunnelError("ssh to tunnel@login1:22 failed: Permission denied (publickey) /srv/keys/k"),
                  ForwardError("bind [127.0.0.1]:4000: Address already in use")):  # fmt: skip
        text = describe_exception(error)
        assert "login1" not in text and "/srv/keys" not in text and "127.0.0.1" not in text
        assert "Hub's log" in text
