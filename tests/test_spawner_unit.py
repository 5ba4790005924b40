"""ForwardBaseSpawner without a Hub: state, environment, hooks, per-instance defaults, routes."""

import asyncio
from types import SimpleNamespace

import pytest

import forwardbasespawner
from forwardbasespawner import register_api_handlers
from forwardbasespawner.hooks import settle
from forwardbasespawner.ssh.spec import InvalidSpec
from tests.standalone import make


def test_state_written_by_the_original_package_loads():
    # key names as the original stored them; extra keys of subclasses pass through untouched
    row = {
        "port_forward_info": {"service": "node1:9000", "ssh_node": "jump1"},
        "custom_port": 56789,
        "start_id": "4f3c2a",
        "events": [{"progress": 40, "html_message": "<details><summary>queued</summary></details>"}],
        "job_id": "12345",
    }
    spawner = make()
    spawner.load_state(row)
    assert spawner.port_forward_info == row["port_forward_info"]
    assert spawner.port == 56789
    assert spawner.start_id == "4f3c2a"
    assert spawner.events.to_list() == row["events"]
    state = spawner.get_state()
    for key in ("port_forward_info", "custom_port", "start_id", "events"):
        assert state[key] == row[key]
    # a second instance loads what the first wrote
    again = make()
    again.load_state(state)
    assert again.get_state() == state


@pytest.mark.parametrize("bad", [{"events": "nonsense", "custom_port": "x"}, {"port_forward_info": [1]}, {}])
def test_damaged_state_loads_without_crashing(bad):
    spawner = make()
    spawner.load_state(bad)
    assert spawner.port_forward_info == {}
    assert list(spawner.events) == []


def test_mutable_defaults_are_per_instance():
    a, b = make(), make()
    a.port_forward_info["service"] = "x:1"
    a.events.append({"message": "only a"})
    assert b.port_forward_info == {} and len(b.events) == 0


def test_env_has_escaped_event_and_tunnel_urls():
    spawner = make()
    env = spawner.get_env()
    api = "http://127.0.0.1:8081/hub/api"
    assert env["JUPYTERHUB_API_URL"] == api
    assert env["JUPYTERHUB_EVENTS_URL"] == f"{api}/users/progress/events/alice@example.org/gpu%2F1"
    assert env["JUPYTERHUB_SETUPTUNNEL_URL"] == f"{api}/users/setuptunnel/alice@example.org/gpu%2F1"
    assert env["JUPYTERHUB_ACTIVITY_URL"] == f"{api}/users/alice@example.org/activity"
    default_server = make(server="").get_env()
    assert default_server["JUPYTERHUB_EVENTS_URL"] == f"{api}/users/progress/events/alice@example.org"


async def test_public_api_url_async_hook_reaches_env():
    async def public(spawner, port_forward_info):
        return "https://hub.example.org/hub/api"

    spawner = make(public_api_url=public)
    assert await spawner.start() == "http://node1.cluster:9000"
    env = spawner.get_env()
    assert env["JUPYTERHUB_EVENTS_URL"].startswith("https://hub.example.org/hub/api/users/progress/events/")


async def test_start_id_is_set_before_start_and_kept_when_a_subclass_set_it():
    spawner = make()
    await spawner.start()
    first = spawner.start_id
    assert len(first) == 32
    spawner.clear_state()
    spawner.start_id = "chosen-by-subclass"
    await spawner.start()
    assert spawner.start_id == "chosen-by-subclass"


@pytest.mark.parametrize(
    "hook, status, polled",
    [(None, None, 1), (lambda s: True, None, 1), (lambda s: False, None, 0), (lambda s: 0, 0, 0), (lambda s: 3, 3, 0)],
)
async def test_pre_poll_hook(hook, status, polled):
    spawner = make(pre_poll_hook=hook)
    assert await spawner.poll() == status
    assert spawner.polled == polled


async def test_hooks_rewrite_start_response_and_path():
    async def start_response(spawner, response):
        return response.replace("node1.cluster", "node1.example.org")

    spawner = make(update_start_response=start_response, update_expected_path=lambda s, url: url + "/lab")
    assert await spawner.start() == "http://node1.example.org:9000/lab"


async def test_tunnel_without_a_node_fails_with_a_clear_event():
    spawner = make(ssh_during_startup=True)
    with pytest.raises(InvalidSpec):
        await spawner.start()
    assert spawner.events[-1]["failed"] is True
    assert "no ssh_node is configured" in spawner.events[-1]["message"]


async def test_filter_events_sync_and_async():
    # run_filter_events is a plain method, as in the original (subclasses call and override it
    # that way); with an async hook it returns an awaitable
    spawner = make(filter_events=lambda s, e: {**e, "message": "filtered"})
    assert spawner.run_filter_events({"message": "x"})["message"] == "filtered"

    async def reject(spawner, event):
        return None

    spawner = make(filter_events=reject)
    assert not await settle(spawner.run_filter_events({"message": "x"}))


async def test_cancelling_event_is_always_terminal():
    spawner = make(cancelling_event=lambda s: {"message": "Stopped by you"})
    event = await spawner.get_cancelling_event()
    assert event == {"message": "Stopped by you", "failed": True, "progress": 100}


async def test_progress_skips_jupyterhubs_first_event_when_asked():
    spawner = make(show_first_default_event=False)
    spawner._spawn_pending = True
    spawner.events.append({"progress": 5, "message": "remote"})
    spawner.events.append({"progress": 100, "failed": True, "message": "gone"})
    events = [e async for e in spawner._generate_progress()]
    assert [e["message"][25:] for e in events] == ["remote", "gone"]
    spawner = make()
    spawner._spawn_pending = True
    spawner.events.append({"progress": 100, "failed": True, "message": "gone"})
    events = [e async for e in spawner._generate_progress()]
    assert events[0]["message"] == "Server requested"


def test_routes_register_once():
    from jupyterhub import apihandlers

    before = len(apihandlers.default_handlers)
    assert register_api_handlers() == []
    import importlib

    importlib.reload(forwardbasespawner)
    assert len(apihandlers.default_handlers) == before
    patterns = [p for p, *_ in apihandlers.default_handlers]
    for pattern, _ in forwardbasespawner.ROUTES:
        assert patterns.count(pattern) == 1


def test_check_custom_scopes():
    from tornado import web

    from forwardbasespawner.utils import check_custom_scopes

    handler = SimpleNamespace(
        required_scopes=["custom:servers:list"], current_user=SimpleNamespace(admin=False), expanded_scopes={"read:users"}
    )
    with pytest.raises(web.HTTPError) as e:
        check_custom_scopes(handler)
    assert e.value.status_code == 403 and "custom:servers:list" in e.value.log_message
    handler.expanded_scopes = {"custom:servers:list"}
    check_custom_scopes(handler)


async def test_stop_is_idempotent_and_closes_the_log():
    spawner = make()
    await spawner.start()
    reader = asyncio.ensure_future(_collect(spawner))
    await asyncio.sleep(0.01)
    await spawner.stop()
    await spawner.stop()
    assert await asyncio.wait_for(reader, 2) == []


async def _collect(spawner):
    return [e async for e in spawner.progress()]


@pytest.mark.parametrize("trait, value", [("ssh_known_hosts", "/dev/null"), ("ssh_known_hosts", ""),
                                          ("ssh_strict_host_key_checking", "no")])  # fmt: skip
def test_host_key_checking_cannot_be_switched_off(trait, value):
    from traitlets import TraitError

    with pytest.raises(TraitError):
        make(**{trait: value})
