"""What subclasses and configurations written for the original package rely on, without a Hub.

The names, signatures and meanings here are the ones OutpostSpawner 2.2.13 and UnicoreSpawner
2.1.7 use (tests/compat runs those packages themselves on a real Hub).
"""

import asyncio
from types import SimpleNamespace

import pytest
from jupyterhub.objects import Hub
from traitlets import TraitError

from forwardbasespawner import ForwardBaseSpawner
from forwardbasespawner.ssh.spec import InvalidSpec, TunnelRequest, validate_options


class Legacy(ForwardBaseSpawner):
    """Written the original's way: state in attributes, sync checks of `events`."""

    seen_in_start = None
    stopped = 0
    status = None

    async def _start(self):
        env = self.get_env()
        self.seen_in_start = dict(
            port=self.port, svc_name=self.svc_name, dns_name=self.dns_name, start_id=self.start_id,
            service_url=env["JUPYTERHUB_SERVICE_URL"], events_is_list=type(self.events) == list,  # noqa: E721
            during_startup=self.get_ssh_during_startup(),
        )  # fmt: skip
        return "node1.cluster:9000"

    async def _poll(self):
        return self.status

    async def _stop(self, now=False, **kwargs):
        self.stopped += 1


def make(cls=Legacy, name="alice", server="", **kwargs):
    user = SimpleNamespace(name=name, url=f"/user/{name}/", escaped_name=name, id=7)
    hub = Hub(ip="127.0.0.1", port=8081, base_url="/hub/")
    orm_spawner = SimpleNamespace(name=server, display_name="", server=None, state=None, user_options={})
    return cls(user=user, hub=hub, orm_spawner=orm_spawner, **kwargs)


def test_the_originals_attributes_exist_per_instance():
    a, b = make(), make()
    for spawner in (a, b):
        assert spawner.already_stopped is False and spawner.already_post_stop_hooked is False
        assert spawner.call_during_startup is True and spawner.port_forwarded == 0
        assert spawner.yield_wait_seconds == 1 and spawner.port_forward_info == {}
        assert spawner.svc_name == "jupyter-alice" and spawner.dns_name == "jupyter-alice.default.svc.cluster.local"
    a.port_forward_info["service"] = "x:1"
    assert b.port_forward_info == {}


async def test_port_names_and_service_url_are_known_inside_start():
    spawner = make()
    await spawner.start()
    seen = spawner.seen_in_start
    assert 0 < seen["port"] < 65536 and seen["svc_name"] == "jupyter-alice" and len(seen["start_id"]) == 32
    # jupyterhub-singleuser binds to what JUPYTERHUB_SERVICE_URL says, as with the original
    assert seen["service_url"].startswith(f"http://0.0.0.0:{seen['port']}/")
    assert seen["events_is_list"] is True
    assert seen["during_startup"] is False  # callable the original's way: a plain bool
    assert spawner.call_during_startup is False


async def test_an_operator_ip_is_kept_in_the_service_url():
    spawner = make(ip="10.0.0.5")
    await spawner.start()
    assert spawner.seen_in_start["service_url"].startswith("http://10.0.0.5:")


def test_events_assigned_and_appended_the_originals_way():
    spawner = make()
    spawner.events = [{"progress": 20, "message": "Sending request"}]  # OutpostSpawner's pre-spawn hook
    assert type(spawner.events) == list  # noqa: E721
    spawner.events.append({"progress": 30, "message": "more"})
    spawner.last_event = None  # UnicoreSpawner, when it could not build its stop event
    spawner.last_event = {}
    assert [e["progress"] for e in spawner.events] == [20, 30]
    spawner.last_event = {"progress": 100, "failed": True, "message": "job failed"}
    assert spawner.events[-1]["failed"] is True and spawner.last_event["message"].endswith("job failed")


async def test_a_new_start_does_not_replay_the_last_starts_events():
    spawner = make()
    spawner.load_state({"start_id": "old", "events": [{"progress": 100, "failed": True, "message": "old failure"}]})
    assert spawner.events[-1]["message"] == "old failure"  # still readable (the events API)
    spawner.clear_state()
    spawner._spawn_pending = True
    stream = asyncio.ensure_future(_collect(spawner))
    await spawner.start()
    spawner.events.append({"progress": 100, "ready": True, "message": "up"})
    events = await asyncio.wait_for(stream, 2)
    assert [e["message"][25:] for e in events] == ["up"]


async def _collect(spawner):
    return [e async for e in spawner.progress()]


async def test_a_server_that_ends_by_itself_is_cleaned_up_once():
    spawner = make()
    await spawner.start()
    assert await spawner.poll() is None and spawner.stopped == 0
    spawner.status = 0  # the remote job ended
    assert await spawner.poll() == 0
    assert spawner.stopped == 1  # the subclass's _stop() ran (e.g. to delete the finished job)
    assert spawner.events[-1]["failed"] is True and "stopped" in spawner.events[-1]["message"]
    # JupyterHub's user.stop() polls first and skips stop(); a later stop() does not repeat _stop()
    assert await spawner.poll() == 0
    await spawner.stop()
    assert spawner.stopped == 1
    spawner.clear_state()
    assert spawner.already_stopped is False


async def test_a_server_never_started_is_not_stopped_by_poll():
    spawner = make()
    spawner.status = 0
    assert await spawner.poll() == 0 and spawner.stopped == 0


class StopsItselfInStart(Legacy):
    """OutpostSpawner's failure path: _start() calls self.stop(), sets the flags, raises."""

    async def _start(self):
        self.events.append({"progress": 99, "message": "Start failed. Deleting related resources..."})
        await self.stop()
        self.already_stopped = True
        self.already_post_stop_hooked = True
        raise RuntimeError("the Outpost refused")


async def test_a_subclass_that_stops_itself_inside_start():
    spawner = make(StopsItselfInStart)
    spawner._spawn_pending = True
    stream = asyncio.ensure_future(_collect(spawner))
    with pytest.raises(RuntimeError, match="the Outpost refused"):
        await spawner.start()
    await spawner.stop()  # JupyterHub's own stop after the failed start
    assert spawner.stopped == 1
    events = await asyncio.wait_for(stream, 2)
    assert events[-1]["failed"] is True and "the Outpost refused" in events[-1]["message"]


class OverridesForward(Legacy):
    """UnicoreSpawner overrides the forward with the original's signature (no arguments)."""

    calls = ()

    async def ssh_default_forward(self):
        self.calls += (("forward", self.port),)

    async def ssh_default_forward_remove(self):
        self.calls += (("remove", self.port),)


async def test_forward_overrides_with_the_originals_signature():
    spawner = make(OverridesForward, ssh_during_startup=True)
    url = await spawner.start()
    port = spawner.seen_in_start["port"]
    assert spawner.calls == (("forward", port),) and url == f"http://127.0.0.1:{port}"
    await spawner.stop()
    assert spawner.calls[-1] == ("remove", port)


@pytest.mark.parametrize(
    "config",
    [
        {"pre_poll_hook": False, "pre_stop_hook": False, "filter_events": False, "ssh_custom_forward": False},
        {"ssh_port": "2222", "ssh_remote_port": "22", "custom_port": "0"},
        {"ssh_key": None, "ssh_node": None, "ssh_remote_key": None, "public_api_url": None, "ssh_username": None},
        {"show_first_default_event": lambda spawner: False, "ssh_create_remote_forward": False},
    ],
)
async def test_the_originals_trait_forms_are_accepted(config):
    spawner = make(**config)
    assert spawner.ssh_port in (22, 2222)
    await spawner.start()
    assert await spawner.poll() is None


def test_a_port_that_is_not_a_number_is_still_refused():
    with pytest.raises(TraitError):
        make(ssh_port="22; rm -rf /")


@pytest.mark.parametrize(
    "option, line",
    [
        ("StrictHostKeyChecking", "ssh_strict_host_key_checking"),
        ("UserKnownHostsFile", "ssh_known_hosts"),
        ("IdentityFile", "ssh_key"),
        ("ControlPath", "ssh_control_dir"),
    ],
)
def test_an_old_ssh_option_names_the_config_line_that_replaces_it(option, line):
    with pytest.raises(InvalidSpec, match=f"c.ForwardBaseSpawner.{line}"):
        validate_options({option: "x"})


def test_a_refused_setuptunnel_field_names_the_config_line():
    with pytest.raises(InvalidSpec, match=r"setuptunnel_allowed_keys = \['ssh_username'\]"):
        TunnelRequest.parse({"service": "n:1", "ssh_username": "root"})
    with pytest.raises(InvalidSpec, match=r"setuptunnel_allowed_nodes = \['node9'\]"):
        TunnelRequest.parse({"service": "n:1", "ssh_node": "node9"})


async def test_an_old_configs_ssh_options_become_the_endpoints_settings():
    # the original passed every option to ssh; configurations set identity and known_hosts that way
    spawner = make(ssh_node="jump1", ssh_forward_options={
        "IdentityFile": "/keys/tunnel", "UserKnownHostsFile": "/keys/known_hosts", "Port": "2222",
        "StrictHostKeyChecking": "accept-new", "ControlPath": "/tmp/control_jump1", "ServerAliveInterval": "15",
    })  # fmt: skip
    endpoint = await spawner.get_ssh_endpoint()
    assert (endpoint.key, endpoint.known_hosts, endpoint.port) == ("/keys/tunnel", "/keys/known_hosts", 2222)
    assert endpoint.strict_host_key_checking == "accept-new"
    assert endpoint.options == (("ServerAliveInterval", "15"),)
    spawner = make(ssh_node="jump1", ssh_forward_options={"StrictHostKeyChecking": "no"})
    with pytest.raises(InvalidSpec, match="ssh_strict_host_key_checking"):
        await spawner.get_ssh_endpoint()


async def test_ssh_options_from_a_caller_stay_on_the_allow_list():
    spawner = make(ssh_node="jump1")
    spawner.port_forward_info["ssh_forward_options"] = {"IdentityFile": "/root/.ssh/id_rsa"}
    with pytest.raises(InvalidSpec, match="not taken from ssh options"):
        await spawner.get_ssh_endpoint()


async def test_the_originals_getters_read_port_forward_info_over_the_traits():
    """Subclasses and hooks of the original call ``get_ssh_*()``: a key in ``port_forward_info``
    (or its ``remote`` part) wins over the trait, callables get ``(spawner, info)``, and the node
    goes through ``ssh_node_mapping`` as the tunnel's own endpoint does."""
    spawner = make(
        ssh_node="login1", ssh_port=lambda spawner, info: 2222, ssh_username="tunnel",
        ssh_node_mapping=lambda spawner, node: f"{node}.example.org", ssh_remote_node="login9",
    )  # fmt: skip
    assert await spawner.get_ssh_node() == "login1.example.org"
    assert await spawner.get_ssh_port() == 2222 and await spawner.get_ssh_username() == "tunnel"
    assert await spawner.get_ssh_remote_node() == "login9"
    spawner.port_forward_info.update(ssh_node="login2", ssh_port=22, remote={"ssh_remote_node": "login3"})
    assert await spawner.get_ssh_node() == "login2.example.org" and await spawner.get_ssh_port() == 22
    assert await spawner.get_ssh_remote_node() == "login3"
    spawner.port_forward_info["service"] = "node7:9000"
    assert (await spawner.get_ssh_endpoint()).host == await spawner.get_ssh_node()


def test_state_round_trips_through_the_connection_record():
    """What a running server's state holds comes back as it was (a Hub restart depends on it), in
    the keys rows of earlier releases carry."""
    spawner = make()
    spawner.port_forward_info.update(service="node7:9000", ssh_node="login1", remote={"port": 40001})
    spawner.port, spawner.tunnel_node, spawner.start_id = 41234, "login1", "s1"
    spawner.connection.tunnel_open = spawner.connection.remote_forward_open = spawner.connection.svc_open = True
    state = spawner.get_state()
    assert state["custom_port"] == 41234 and state["tunnel_open"] and state["svc_name"] == "jupyter-alice"
    again = make()
    again.load_state(state)
    assert again.port == 41234 and again.port_forward_info == spawner.port_forward_info
    assert again.tunnel_node == "login1" and again.has_tunnel and again.connection.restore_pending
    assert again.get_state() == state
    again.clear_state()
    assert again.port_forward_info == {} and not again.has_tunnel and again.port == 0
