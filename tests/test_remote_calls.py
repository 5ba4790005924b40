"""The API layer without a Hub: typed requests, the spawner's remote calls, how their errors are
answered, and the authorization helpers (the live routes are tested in test_api_events.py,
test_rest_api_spec.py and tests/adversarial/)."""

import asyncio
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyterhub.spawner import Spawner
from tornado import web

from forwardbasespawner import errors
from forwardbasespawner.addresses import parse_server_address
from forwardbasespawner.api.auth import authorize_scope, authorize_server_reader, authorize_server_writer
from forwardbasespawner.api.common import remote_call
from forwardbasespawner.policy import APIPolicy
from forwardbasespawner.remote_calls import PostedEvent, RemoteCalls, TunnelRequest, remote_calls
from tests.adversarial.hostile import hostile_text, json_values
from tests.standalone import make

FIELDS = ["service", "ssh_node", "ssh_port", "ssh_username", "ssh_key", "ssh_forward_options"]


# ---------------------------------------------------------------- TunnelRequest
@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    st.dictionaries(st.sampled_from([*FIELDS, "ProxyCommand"]) | hostile_text, json_values, max_size=4),
    st.sampled_from([(), ("node*", "fd00:*"), ("*",)]),
    st.sampled_from([(), tuple(FIELDS[2:])]),
)
def test_a_parsed_tunnel_request_keeps_the_address_it_was_parsed_from(body, nodes, keys):
    """Parsed once: the ``service`` it hands on is the address it checked, and a refusal is
    either "not allowed" or "malformed", never another error."""
    try:
        request = TunnelRequest.parse(body, allowed_nodes=nodes, allowed_keys=keys)
    except errors.InvalidSpec:  # TunnelRequestRefused is one
        return
    assert parse_server_address(request.service)[1:] == (request.host, request.port)
    assert request.port_forward_info()["service"] == request.service


def test_tunnel_request_fields_and_fragment():
    keys = ["ssh_port", "ssh_username", "ssh_forward_options"]
    body = {"service": "http://[::1]:8888", "ssh_node": "login1", "ssh_port": "2222", "ssh_forward_options": {"ConnectTimeout": 5}}
    request = TunnelRequest.parse(body, allowed_nodes=["login*"], allowed_keys=keys)
    assert (request.host, request.port, request.ssh_port, request.ssh_username) == ("::1", 8888, 2222, None)
    assert request.ssh_forward_options == {"ConnectTimeout": "5"}
    assert request.port_forward_info() == {
        "service": "[::1]:8888", "ssh_node": "login1", "ssh_port": 2222, "ssh_forward_options": {"ConnectTimeout": "5"},
    }  # fmt: skip
    # an empty options dict is a change of its own (it was given), as before
    assert TunnelRequest.parse({"service": "n:1", "ssh_forward_options": {}}, allowed_keys=keys).port_forward_info() == {
        "service": "n:1", "ssh_forward_options": {},
    }  # fmt: skip
    with pytest.raises(errors.TunnelRequestRefused):
        TunnelRequest.parse({"service": "n:1", "ssh_node": "other"}, allowed_nodes=["login*"])


@pytest.mark.parametrize("body", [None, [], {}, "x"])
def test_posted_event_must_be_a_non_empty_object(body):
    with pytest.raises(errors.InvalidEvent, match="non-empty JSON object"):
        PostedEvent.parse(body)


# ---------------------------------------------------------------- RemoteCalls on a ForwardBaseSpawner
def _starting(**traits):
    spawner = make(**traits)
    spawner._spawn_pending = True
    spawner.saved = 0

    def save_state():
        spawner.saved += 1

    spawner.save_state = save_state
    return spawner


async def test_report_event_limits_rate_and_terminal_events():
    spawner = _starting(events_post_burst=2, events_post_rate=0.5)
    assert remote_calls(spawner) is spawner and isinstance(spawner, RemoteCalls)
    assert await spawner.report_event(PostedEvent({"progress": 10, "message": "a"})) is False
    assert await spawner.report_event(PostedEvent({"progress": 100, "ready": True, "message": "up"})) is False
    assert spawner.saved == 2  # the first write is at once, a terminal event is written at once
    with pytest.raises(errors.TooManyCalls) as caught:
        await spawner.report_event(PostedEvent({"message": "c"}))
    assert caught.value.retry_after == 2
    spawner.events_post_burst = 10
    spawner.start_id = "next"  # a new start begins with a full bucket
    with pytest.raises(errors.CallConflict, match="reported ready already"):
        await spawner.report_event(PostedEvent({"ready": True}))
    with pytest.raises(errors.InvalidEvent):
        await spawner.report_event(PostedEvent({"progress": 500}))
    spawner._spawn_pending = False
    with pytest.raises(errors.CallConflict, match="not starting or running"):
        await spawner.report_event(PostedEvent({"message": "late"}))


async def test_report_event_filter_rejects():
    spawner = _starting(filter_events=lambda spawner, event: None)
    with pytest.raises(errors.CallRejected, match="event filter"):
        await spawner.report_event(PostedEvent({"message": "x"}))


async def test_a_failed_event_ends_the_start_that_runs():
    spawner = _starting()
    spawner._start_task = asyncio.ensure_future(asyncio.sleep(10))
    assert await spawner.report_event(PostedEvent({"failed": True, "message": "no nodes"})) is False
    await asyncio.sleep(0)
    assert spawner._start_task.cancelled() and spawner._abort_message.endswith(": no nodes")


async def test_end_spawn_after_start_returned_cancels_and_asks_for_a_stop():
    spawner = _starting()
    future = spawner._spawn_future = asyncio.ensure_future(asyncio.sleep(10))
    assert await spawner.end_spawn({"failed": True, "message": "gone"}) is True
    assert future.cancelled() and not spawner.ready
    spawner._spawn_pending = False
    assert await spawner.end_spawn({"failed": True}) is False  # neither starting nor ready


async def test_setup_tunnel_policy_refusals_come_first():
    spawner = _starting(setuptunnel_allowed_services=["10.0.0.0/8"])
    with pytest.raises(errors.TunnelRequestRefused, match="not one this Hub forwards to"):
        await spawner.setup_tunnel(TunnelRequest.parse({"service": "127.0.0.1:80"}))
    seen = []

    def check(spawner, host, port):
        seen.append((spawner, host, port))
        return "no"

    spawner = _starting(setuptunnel_service_check=check)
    with pytest.raises(errors.TunnelRequestRefused):
        await spawner.setup_tunnel(TunnelRequest.parse({"service": "node1:8888"}))
    assert seen == [(spawner, "node1", 8888)]


async def test_setup_tunnel_failure_ends_the_spawn_and_says_whether_to_stop():
    spawner = _starting()

    async def fails(create_svc=True):
        raise RuntimeError("a hook's bug")

    spawner.run_ssh_forward = fails
    spawner._spawn_future = asyncio.ensure_future(asyncio.sleep(10))
    with pytest.raises(errors.TunnelSetupFailed) as caught:
        await spawner.setup_tunnel(TunnelRequest.parse({"service": "node1:8888"}))
    assert caught.value.stop_server is True
    assert spawner.events[-1]["failed"] and "could not be set up" in spawner.events[-1]["message"]
    assert spawner.port_forward_info["service"] == "node1:8888"


# ---------------------------------------------------------------- a spawner of another class
class Plain(Spawner):
    """Not a ForwardBaseSpawner: no policy settings, no event log, no event filter."""

    async def start(self):
        return "http://127.0.0.1:1"

    async def poll(self):
        return None

    async def stop(self, now=False):
        pass


class PlainWithPolicy(APIPolicy, Plain):
    pass


def _plain(cls=Plain, **traits):
    spawner = cls(user=SimpleNamespace(name="bob", id=3), orm_spawner=SimpleNamespace(name="", server=None), **traits)
    spawner._spawn_pending = True
    return spawner


async def test_another_spawner_class_gets_the_same_rules_with_the_default_policy():
    spawner = _plain()
    calls = remote_calls(spawner)
    assert calls is remote_calls(spawner)  # kept with the spawner: its rate limit persists
    assert (calls.events_post_burst, calls.event_max_body_bytes, calls.setuptunnel_allowed_nodes) == (200, 64 * 1024, [])
    # as before: no event filter means the filter step rejects the event (400), after the rate limit
    with pytest.raises(errors.CallRejected, match="event filter"):
        await calls.report_event(PostedEvent({"message": "x"}))
    for _ in range(199):
        with pytest.raises(errors.CallRejected):
            await calls.report_event(PostedEvent({"message": "x"}))
    with pytest.raises(errors.TooManyCalls):
        await calls.report_event(PostedEvent({"message": "x"}))
    spawner._spawn_pending = False
    with pytest.raises(errors.CallConflict):
        await calls.report_event(PostedEvent({"message": "x"}))
    assert remote_calls(_plain(PlainWithPolicy, events_post_burst=3)).events_post_burst == 3


# ---------------------------------------------------------------- answering the errors
EVE = SimpleNamespace(name="eve")


class FakeHandler:
    def __init__(self, scopes=(), user=EVE):
        self.headers, self.stopped = {}, []
        self.current_user = user
        self.expanded_scopes = set(scopes)
        self.parsed_scopes = {scope.partition("!")[0]: scope for scope in scopes}
        self.log = SimpleNamespace(warning=lambda *a: None)
        self.request = SimpleNamespace(path="/hub/api/x")

    def set_header(self, name, value):
        self.headers[name] = value

    async def stop_single_user(self, user, server_name):
        self.stopped.append((user, server_name))

    def has_scope(self, scope):
        return scope in self.expanded_scopes

    def find_user(self, name):
        return None


@pytest.mark.parametrize("error, status, message", [
    (errors.TunnelRequestRefused("x"), 403, "Refused: x"),
    (errors.InvalidSpec("x"), 400, "Invalid tunnel request: x"),
    (errors.InvalidEvent("x"), 400, "Invalid event: x"),
    (errors.CallRejected("x"), 400, "x"),
    (errors.CallConflict("x"), 409, "x"),
    (errors.TooManyCalls("x", retry_after=3), 429, "x"),
    (errors.TunnelSetupFailed("x", stop_server=True), 422, "x"),
])  # fmt: skip
async def test_remote_call_answers(error, status, message):
    handler, spawner = FakeHandler(), SimpleNamespace(user="bob", name="s")
    with pytest.raises(web.HTTPError) as caught:
        async with remote_call(handler, spawner):
            raise error
    assert (caught.value.status_code, caught.value.log_message) == (status, message)
    assert handler.headers == ({"Retry-After": "3"} if status == 429 else {})
    assert handler.stopped == ([("bob", "s")] if status == 422 else [])


async def test_remote_call_passes_other_errors_through():
    with pytest.raises(KeyError):
        async with remote_call(FakeHandler(), SimpleNamespace()):
            raise KeyError("a bug is a 500")


# ---------------------------------------------------------------- authorization
def _status(check):
    try:
        check()
    except web.HTTPError as e:
        return e.status_code
    return 200


def test_authorize_server_reader_answers_as_needs_scope():
    assert _status(lambda: authorize_server_reader(FakeHandler(user=None), "bob", "")) == 403
    assert _status(lambda: authorize_server_reader(FakeHandler(), "bob", "")) == 403  # no read:servers at all
    other = FakeHandler(["read:servers!server=alice/"])  # filtered read:servers, not on bob's server
    assert _status(lambda: authorize_server_reader(other, "bob", "")) == 404
    mine = FakeHandler(["read:servers!server=bob/"])
    assert _status(lambda: authorize_server_reader(mine, "bob", "")) == 404  # allowed, but no such server


def test_authorize_server_writer_hides_servers_from_strangers():
    assert _status(lambda: authorize_server_writer(FakeHandler(user=None), "bob", "")) == 403
    assert _status(lambda: authorize_server_writer(FakeHandler(), "bob", "")) == 404
    assert _status(lambda: authorize_server_writer(FakeHandler(["access:servers!server=bob/"]), "bob", "")) == 403
    assert _status(lambda: authorize_server_writer(FakeHandler(["admin:servers!server=bob/"]), "bob", "")) == 404  # none


def test_authorize_scope():
    assert _status(lambda: authorize_scope(FakeHandler(user=None), "custom:servers:list")) == 403
    assert _status(lambda: authorize_scope(FakeHandler(["read:users:name"]), "custom:servers:list")) == 403
    assert _status(lambda: authorize_scope(FakeHandler(["custom:servers:list"]), "custom:servers:list")) == 200
    assert _status(lambda: authorize_scope(FakeHandler(["admin:servers"]), "custom:servers:list")) == 200
