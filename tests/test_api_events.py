"""SpawnEvents API on a real Hub: who may post, what a post may contain, and what callers get back."""

import asyncio
import json
import re

import aiohttp
import pytest

from tests.hubharness import server_token
from tests.processes import processes_with

pytestmark = pytest.mark.slow

EVENTS = "/users/progress/events"


@pytest.fixture(scope="module")
async def world(hub):
    """alice runs server "s", bob runs his default server and has a share of alice's "s"."""
    for name in ("alice", "bob"):
        await hub.request("POST", f"/users/{name}")
    await hub.request("POST", "/users/admin", body={"admin": True})
    await hub.request("POST", "/users/alice/servers/s", body={})
    await hub.request("POST", "/users/bob/servers/", body={})
    await hub.wait_ready("alice", "s")
    await hub.wait_ready("bob")
    status, reply = await hub.request("POST", "/shares/alice/s", body={"user": "bob"})
    assert status == 200, reply
    tokens = {
        "alice server": server_token("fbs-sim-alice-s-"),
        "bob server": server_token("fbs-sim-bob-default-"),
        "alice": await hub.user_token("alice"),
        "bob": await hub.user_token("bob"),
        "admin": await hub.user_token("admin"),
        "admin service": hub.admin_token,
    }
    yield tokens
    for path in ("/users/alice/servers/s", "/users/bob/server"):
        await hub.request("DELETE", path)
    await hub.wait_stopped("alice", "s")
    await hub.wait_stopped("bob")
    assert processes_with("fbs-sim-alice-") == [] and processes_with("fbs-sim-bob-") == []


@pytest.mark.parametrize(
    "who, expected",
    [
        ("alice server", 204),
        ("admin", 204),
        ("admin service", 204),
        ("alice", 403),  # the owner's own token is not the server's
        ("bob", 403),  # a share recipient: may use the server, not speak for it
        ("bob server", 404),  # another server's token cannot see this one
        ("nobody", 403),
    ],
)
async def test_who_may_post(hub, world, who, expected):
    token = world.get(who, "not-a-token")
    status, reply = await hub.request("POST", f"{EVENTS}/alice/s", token=token, body={"progress": 50, "message": who})
    assert status == expected, reply
    if status != 204:
        assert isinstance(reply, dict) and reply.get("message"), reply


async def test_stranger_gets_404_not_a_hint(hub, world):
    carl = await hub.user_token("carl")
    status, _ = await hub.request("POST", f"{EVENTS}/alice/s", token=carl, body={"progress": 1})
    assert status == 404
    status, _ = await hub.request("GET", f"{EVENTS}/alice/s", token=carl)
    assert status == 404


async def test_who_may_read(hub, world):
    for who in ("alice", "admin"):
        status, reply = await hub.request("GET", f"{EVENTS}/alice/s", token=world[who])
        assert status == 200 and reply["active"] is True and reply["ready"] is True, (who, reply)
    # reading needs read:servers (docs/source/rest-api.md), which a server's own token does not carry
    status, reply = await hub.request("GET", f"{EVENTS}/alice/s", token=world["alice server"])
    assert status == 403 and "read:servers" in reply["message"]


async def test_unknown_user_or_server_is_404(hub, world):
    for path in (f"{EVENTS}/nosuchuser", f"{EVENTS}/alice/nosuchserver", f"{EVENTS}/alice/nosuchserver"):
        assert (await hub.request("POST", path, body={"progress": 1}))[0] == 404
        assert (await hub.request("GET", path))[0] == 404


async def test_stopped_server_is_409(hub, world):
    await hub.request("POST", "/users/alice/servers/gone", body={})
    await hub.wait_ready("alice", "gone")
    await hub.request("DELETE", "/users/alice/servers/gone")
    await hub.wait_stopped("alice", "gone")
    status, reply = await hub.request("POST", f"{EVENTS}/alice/gone", body={"progress": 1})
    assert status == 409 and "not starting or running" in reply["message"]


async def test_cookie_post_needs_xsrf(hub, world):
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(f"{hub.url}/hub/login") as r:
            xsrf = re.search(r'name="_xsrf" value="([^"]+)"', await r.text()).group(1)
        async with browser.post(
            f"{hub.url}/hub/login?next=", data={"username": "admin", "password": "x", "_xsrf": xsrf}, allow_redirects=False
        ) as r:
            assert r.status == 302
        async with browser.post(f"{hub.api}{EVENTS}/alice/s", json={"progress": 1, "message": "csrf"}) as r:
            assert r.status == 403
            assert "_xsrf" in (await r.json())["message"]
        async with browser.get(f"{hub.url}/hub/home") as r:
            # the page's own token, as the Hub's JavaScript sends it
            xsrf = re.search(r'xsrf_token: "([^"]+)"', await r.text()).group(1)
        async with browser.post(
            f"{hub.api}{EVENTS}/alice/s", json={"progress": 1, "message": "with xsrf"}, headers={"X-XSRFToken": xsrf}
        ) as r:
            assert r.status == 204


HOSTILE = [
    ({"message": "<script>window.pwned=1</script>"}, 204),
    ({"html_message": "<img src=x onerror=window.pwned=1><b>bold</b>"}, 204),
    ({"html_message": '<a href="javascript:window.pwned=1">x</a>'}, 204),
    ({"html_message": "<svg onload=window.pwned=1>"}, 204),
    ({"progress": "100"}, 400),
    ({"progress": 1e9}, 400),
    ({"progress": None}, 400),
    ({"failed": "true"}, 400),
    ({"message": {"$gt": ""}}, 400),
    ({"message": "x" * 10000}, 204),  # shortened, with a visible mark
    ({"progress": 50, "raw_event": {"reason": "Pulling"}}, 204),  # KubeSpawner's field, dropped
    ({"url": "https://evil.example.org"}, 400),  # nothing known is left
    ([1, 2, 3], 400),
    ("just a string", 400),
    ({}, 400),
]


@pytest.mark.parametrize("body, expected", HOSTILE)
async def test_hostile_bodies(hub, world, body, expected):
    status, reply = await hub.request("POST", f"{EVENTS}/alice/s", token=world["alice server"], body=body)
    assert status == expected, reply
    if status == 400:
        assert reply["message"].startswith("Invalid event"), reply
    status, reply = await hub.request("GET", f"{EVENTS}/alice/s")
    html = json.dumps([e.get("html_message", "") for e in reply["events"]])
    for payload in ("<script", "onerror", "javascript:", "onload", "<svg", "<img"):
        assert payload not in html
    if status == 204 and "message" in body and len(body["message"]) < 4096:
        # text stays text: the spawn page renders it with .text(), so it is inert there
        assert reply["events"][-1]["message"].endswith(body["message"])
    if status == 204 and len(body.get("message", "")) > 4096:
        assert reply["events"][-1]["message"].endswith("[shortened]")
        assert len(reply["events"][-1]["message"]) == 4096
    if status == 204:
        assert "raw_event" not in reply["events"][-1]


@pytest.mark.parametrize(
    "data, expected",
    [(b"{not json", 400), (b"\xff\xfe", 400), (b"", 400), (b'{"message": "' + b"x" * 70000 + b'"}', 413)],
)
async def test_unparseable_and_oversized_bodies(hub, world, data, expected):
    status, reply = await hub.request("POST", f"{EVENTS}/alice/s", token=world["alice server"], data=data)
    assert status == expected, reply
    assert isinstance(reply, dict) and "message" in reply


async def test_ten_thousand_events_are_bounded_and_never_500(hub, world):
    token = world["alice server"]
    statuses = []
    queue = asyncio.Queue()
    for i in range(10000):
        queue.put_nowait(i)

    async def poster():
        while not queue.empty():
            i = queue.get_nowait()
            status, _ = await hub.request("POST", f"{EVENTS}/alice/s", token=token, body={"progress": i % 100, "message": f"e{i}"})
            statuses.append(status)

    await asyncio.gather(*(poster() for _ in range(20)))
    # the burst (200) is taken, then events_post_rate per second; the rest is told to retry (429)
    assert set(statuses) <= {204, 429} and statuses.count(204) >= 200
    status, reply = await hub.request("GET", f"{EVENTS}/alice/s")
    assert status == 200
    assert len(reply["events"]) <= 200
    assert sum(len(json.dumps(e)) for e in reply["events"]) <= 256 * 1024
    assert "Traceback" not in hub.log_text()
