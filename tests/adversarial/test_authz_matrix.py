"""The authorization matrix: every route and method of this library × every kind of caller, on a
real Hub. Every cell is asserted: the status, and for a 403 which refusal it is (so "authorized but
refused by policy" is never mistaken for "not authorized").

Bodies are chosen so that an authorized call changes nothing lasting: SetupTunnel names a target
the policy refuses (169.254.169.254, the cloud metadata address), events are non-terminal.
"""

import json
import re

import aiohttp
import pytest

from tests.adversarial.conftest import (
    ADMIN_SERVICE_TOKEN,
    BARE_SERVICE_TOKEN,
    LISTER_TOKEN,
    RESTARTER_TOKEN,
    count,
)
from tests.hubharness import server_token
from tests.processes import processes_with

pytestmark = pytest.mark.slow

EVENTS = "/users/progress/events/alice/s"
TUNNEL = "/users/setuptunnel/alice/s"
ROUTES = {
    # (path, method): body
    (EVENTS, "GET"): None,
    (EVENTS, "POST"): {"progress": 50, "message": "matrix"},
    (TUNNEL, "POST"): {"service": "169.254.169.254:80"},
    ("/servers", "GET"): None,
    ("/recreateforward/127.0.0.1", "POST"): {},
    ("/recreateforward/127.0.0.1", "GET"): None,
}
UNDEFINED_METHODS = [(EVENTS, "PUT"), (EVENTS, "DELETE"), (TUNNEL, "GET"), (TUNNEL, "PATCH"), ("/servers", "POST"),
                     ("/servers", "DELETE"), ("/recreateforward/127.0.0.1", "PUT")]  # fmt: skip

# what a 403 says, by kind: not authorized vs authorized but refused by the tunnel policy
NOT_ALLOWED = re.compile(r"Missing or invalid credentials|Only the server's own API token|Requires one of the scopes|"
                         r"Action is not authorized|Not authorized|does not have|scope", re.I)  # fmt: skip
POLICY = re.compile(r"^Refused: the target")

CALLERS = [
    "anonymous", "other user", "share recipient", "server token", "other server token", "owner",
    "admin", "admin restricted (read:users:name)", "admin restricted (access:servers)",
    "service lister", "service restarter", "service admin:servers", "service without scopes",
    "owner cookie + xsrf", "owner cookie, no xsrf", "admin cookie + xsrf", "admin cookie, no xsrf",
    "admin cookie, navigation",
]  # fmt: skip

E, T, L, RP, RG = (
    (EVENTS, "GET"),
    (EVENTS, "POST"),
    ("/servers", "GET"),
    ("/recreateforward/127.0.0.1", "POST"),
    ("/recreateforward/127.0.0.1", "GET"),
)
TP = (TUNNEL, "POST")
P = "policy"  # 403 from the SetupTunnel target policy: the caller *was* authorized
# expected status per (caller, route); 403 means "not authorized" unless marked P
EXPECTED = {
    "anonymous":                           {E: 403, T: 403, TP: 403, L: 403, RP: 403, RG: 403},
    "other user":                          {E: 404, T: 404, TP: 404, L: 403, RP: 403, RG: 403},
    "share recipient":                     {E: 404, T: 403, TP: 403, L: 403, RP: 403, RG: 403},
    "server token":                        {E: 403, T: 204, TP: P, L: 403, RP: 403, RG: 403},
    "other server token":                  {E: 403, T: 404, TP: 404, L: 403, RP: 403, RG: 403},
    "owner":                               {E: 200, T: 403, TP: 403, L: 403, RP: 403, RG: 403},
    "admin":                               {E: 200, T: 204, TP: P, L: 200, RP: 202, RG: 202},
    "admin restricted (read:users:name)":  {E: 403, T: 404, TP: 404, L: 403, RP: 403, RG: 403},
    "admin restricted (access:servers)":   {E: 403, T: 404, TP: 404, L: 403, RP: 403, RG: 403},
    "service lister":                      {E: 403, T: 404, TP: 404, L: 200, RP: 403, RG: 403},
    "service restarter":                   {E: 403, T: 404, TP: 404, L: 403, RP: 202, RG: 202},
    "service admin:servers":               {E: 200, T: 204, TP: P, L: 200, RP: 202, RG: 202},
    "service without scopes":              {E: 403, T: 404, TP: 404, L: 403, RP: 403, RG: 403},
    "owner cookie + xsrf":                 {E: 200, T: 403, TP: 403, L: 403, RP: 403, RG: 403},
    "owner cookie, no xsrf":               {E: 200, T: 403, TP: 403, L: 403, RP: 403, RG: 403},
    "admin cookie + xsrf":                 {E: 200, T: 204, TP: P, L: 200, RP: 202, RG: 403},
    "admin cookie, no xsrf":               {E: 200, T: 403, TP: 403, L: 200, RP: 403, RG: 403},
    # a top-level navigation (or an <img>) of the admin's browser: a GET that changes state must
    # not pass on the cookie alone (recreateforward by GET takes a token only)
    "admin cookie, navigation":            {E: 200, T: 403, TP: 403, L: 200, RP: 403, RG: 403},
}  # fmt: skip


async def _login(hub, name):
    """A browser-like session of ``name`` (cookie jar), and its XSRF token."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(f"{hub.url}/hub/login") as r:
        await r.text()
    xsrf = next((c.value for c in session.cookie_jar if c.key == "_xsrf"), "")
    async with session.post(f"{hub.url}/hub/login?next=", data={"username": name, "password": "x", "_xsrf": xsrf},
                            allow_redirects=False) as r:  # fmt: skip
        assert r.status in (302, 303), await r.text()
    async with session.get(f"{hub.url}/hub/home") as r:
        await r.text()
    xsrf = next((c.value for c in session.cookie_jar if c.key == "_xsrf"), xsrf)
    return session, xsrf


@pytest.fixture(scope="module")
async def world(adv_hub):
    hub = adv_hub
    for name in ("alice", "bob", "carol"):
        await hub.request("POST", f"/users/{name}")
    await hub.request("POST", "/users/admin", body={"admin": True})
    await hub.request("POST", "/users/alice/servers/s", body={})
    await hub.request("POST", "/users/bob/servers/", body={})
    await hub.wait_ready("alice", "s")
    await hub.wait_ready("bob")
    status, reply = await hub.request("POST", "/shares/alice/s", body={"user": "carol"})
    assert status == 200, reply
    tokens = {
        "anonymous": None,
        "other user": await hub.user_token("bob"),
        "share recipient": await hub.user_token("carol"),
        "server token": server_token("fbs-sim-alice-s-"),
        "other server token": server_token("fbs-sim-bob-default-"),
        "owner": await hub.user_token("alice"),
        "admin": await hub.user_token("admin"),
        "admin restricted (read:users:name)": await hub.user_token("admin", ["read:users:name!user=admin"]),
        "admin restricted (access:servers)": await hub.user_token("admin", ["access:servers!user=admin"]),
        "service lister": LISTER_TOKEN,
        "service restarter": RESTARTER_TOKEN,
        "service admin:servers": ADMIN_SERVICE_TOKEN,
        "service without scopes": BARE_SERVICE_TOKEN,
    }
    sessions = {"owner": await _login(hub, "alice"), "admin": await _login(hub, "admin")}
    yield hub, tokens, sessions
    for session, _ in sessions.values():
        await session.close()
    for path in ("/users/alice/servers/s", "/users/bob/server"):
        await hub.request("DELETE", path)
    await hub.wait_stopped("alice", "s")
    await hub.wait_stopped("bob")
    assert processes_with("fbs-sim-alice-") == [] and processes_with("fbs-sim-bob-") == []


async def _call(world, caller, path, method, body):
    hub, tokens, sessions = world
    count("requests")
    if "cookie" not in caller:
        token = tokens[caller]
        headers = {"Authorization": f"token {token}"} if token else {}
        async with hub.session.request(method, f"{hub.api}{path}", json=body, headers=headers) as r:
            return r.status, await r.text()
    session, xsrf = sessions["owner" if caller.startswith("owner") else "admin"]
    headers = {"Referer": f"{hub.url}/hub/home", "Content-Type": "application/json"}  # as the Hub's own JavaScript
    if caller.endswith("+ xsrf"):
        headers["X-XSRFToken"] = xsrf
    if caller.endswith("navigation"):
        headers = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document", "Sec-Fetch-Site": "cross-site"}
    data = None if body is None else json.dumps(body)
    async with session.request(method, f"{hub.api}{path}", data=data, headers=headers) as r:
        return r.status, await r.text()


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", list(ROUTES), ids=lambda r: f"{r[1]} {r[0]}")
async def test_cell(world, caller, route):
    path, method = route
    status, text = await _call(world, caller, path, method, ROUTES[route])
    count("cells")
    if status >= 500:
        count("status_5xx")
    expected = EXPECTED[caller][route]
    if expected == P:
        assert status == 403 and POLICY.search(_message(text)), (caller, route, status, text)
        return
    assert status == expected, (caller, route, status, text)
    if status == 403:
        assert not POLICY.search(_message(text)), (caller, route, text)
    assert "Traceback" not in text


@pytest.mark.parametrize("caller", ["anonymous", "server token", "admin", "service admin:servers"])
@pytest.mark.parametrize("route", UNDEFINED_METHODS, ids=lambda r: f"{r[1]} {r[0]}")
async def test_undefined_methods_are_405(world, caller, route):
    status, text = await _call(world, caller, route[0], route[1], None)
    count("cells")
    assert status == 405, (caller, route, status, text)


async def test_nothing_was_disturbed(world):
    """After the whole matrix both servers still run; no tunnel was made to the refused target."""
    hub, _, _ = world
    for user, server in (("alice", "s"), ("bob", "")):
        model = await hub.server_model(user, server)
        assert model["ready"], (user, server, model)
        assert "169.254" not in str(model["state"].get("port_forward_info"))


def _message(text):
    try:
        return json.loads(text).get("message", "")
    except (ValueError, AttributeError):
        return text
