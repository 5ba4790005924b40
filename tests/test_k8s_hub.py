"""Services on a real Hub: tunnelled servers get exactly one Service in the (test) Kubernetes API."""

import asyncio
import os
import secrets

import pytest

from forwardbasespawner.k8s.objects import make_service, service_labels
from tests.conftest import ssh_config
from tests.hubharness import Hub
from tests.processes import processes_with

pytestmark = pytest.mark.slow
LISTER_TOKEN = secrets.token_hex(16)
NS = "jh"


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd, k8s_api):
    directory = tmp_path_factory.mktemp("hub")
    config = (
        ssh_config(sshd, f"{directory}/ctl")
        + f"""
c.SimulatedRemoteSpawner.ssh_during_startup = True
c.SimulatedRemoteSpawner.svc_create = True
c.SimulatedRemoteSpawner.namespace = {NS!r}
c.SimulatedRemoteSpawner.k8s_api_host = {k8s_api.url!r}
c.SimulatedRemoteSpawner.k8s_api_token = {k8s_api.token!r}
c.SimulatedRemoteSpawner.k8s_api_timeout = 1
c.SimulatedRemoteSpawner.k8s_hub_selector = {{"component": "hub"}}
c.SimulatedRemoteSpawner.extra_labels = lambda spawner, user_options: {{"system": user_options.get("system", "none")}}
# kube-proxy stands in here: the Service's address leads to the Hub pod's forward port
c.SimulatedRemoteSpawner.dns_name_template = "127.0.0.1"
c.Spawner.poll_interval = 1
c.JupyterHub.custom_scopes = {{"custom:servers:list": {{"description": "list running servers"}}}}
c.JupyterHub.services.append({{"name": "unicore-cleaner", "api_token": {LISTER_TOKEN!r}}})
c.JupyterHub.load_roles.append({{"name": "server-lister", "scopes": ["custom:servers:list"], "services": ["unicore-cleaner"]}})
"""
    )
    hub = Hub(directory, extra_config=config)
    try:
        await hub.start()
        yield hub
    finally:
        await hub.close()


def ours(k8s_api):
    return {name: obj for (ns, name), obj in k8s_api.services.items() if ns == NS}


async def stop(hub, user, server):
    await hub.request("DELETE", f"/users/{user}/servers/{server}")
    await hub.wait_stopped(user, server)


async def test_one_service_per_server_and_none_after_stop(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-ann.lee@example.org-")
    await hub.spawn("ann.lee@example.org", "gpu-1", {"system": "JUWELS"})
    model = await hub.wait_ready("ann.lee@example.org", "gpu-1")
    services = ours(k8s_api)
    assert len(services) == 1
    ((name, svc),) = services.items()
    assert len(name) <= 63 and name.startswith("jupyter-ann-lee-example-org---")
    assert svc["metadata"]["annotations"]["forwardbasespawner.jupyter.org/username"] == "ann.lee@example.org"
    assert svc["metadata"]["labels"]["system"] == "JUWELS"
    assert svc["spec"]["ports"][0]["targetPort"] == model["state"]["custom_port"]
    assert model["state"]["svc_name"] == name
    async with hub.session.get(f"{hub.url}/user/ann.lee@example.org/gpu-1/x") as r:
        assert r.status == 200
    await stop(hub, "ann.lee@example.org", "gpu-1")
    assert ours(k8s_api) == {}


async def test_foreign_service_survives_and_the_spawn_fails_clearly(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-bo-")
    foreign = make_service("jupyter-bo", NS, 1234, {"app": "other"}, {"app": "other"}, "someone", "")
    k8s_api.services[NS, "jupyter-bo"] = k8s_api._stored(foreign, NS)
    try:
        await hub.spawn("bo", "")
        events = await hub.progress_events("bo")
        assert events[-1]["failed"] is True
        assert any("does not belong to this server" in e.get("message", "") for e in events), events
        assert ours(k8s_api)["jupyter-bo"]["spec"]["ports"][0]["port"] == 1234
        await hub.wait_stopped("bo")
    finally:
        k8s_api.services.pop((NS, "jupyter-bo"), None)


async def test_api_errors_are_retried(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-cy-")
    k8s_api.faults[:] = [{"status": 500}, {"status": 429}, {"reset": True}]
    await hub.spawn("cy", "r")
    await hub.wait_ready("cy", "r")
    assert len(ours(k8s_api)) == 1 and not k8s_api.faults
    await stop(hub, "cy", "r")
    assert ours(k8s_api) == {}


async def test_hub_stays_responsive_while_the_api_is_slow(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-di-")
    k8s_api.latency = 3
    try:
        await hub.spawn("di", "s")
        # the Hub answers other requests while the spawn waits on the API server
        model = await hub.server_model("di", "s")
        assert model["pending"] == "spawn"
        status, _ = await hub.request("GET", "/users/di")
        assert status == 200 and (await hub.server_model("di", "s"))["pending"] == "spawn"
    finally:
        k8s_api.latency = 0
    await hub.wait_ready("di", "s")
    await stop(hub, "di", "s")
    # creates the Hub gave up on are carried out late; none leaves a Service behind
    await k8s_api.settled()
    await hub.wait_for(lambda: asyncio.sleep(0, ours(k8s_api) == {}))


async def test_a_create_the_api_server_carries_out_after_the_stop_leaves_no_service(hub, k8s_api, no_leaks):
    """The Hub gives up on a slow create and retries; the API server still carries out the first
    one, after the server has stopped and its Service was deleted: that Service is removed too."""
    no_leaks.append("fbs-sim-fay-")
    release = asyncio.Event()
    k8s_api.faults[:] = [{"method": "POST", "hold": release}]  # the first create waits; the Hub gives up after 1 s
    try:
        await hub.spawn("fay", "l")
        await hub.wait_ready("fay", "l")
        (name,) = ours(k8s_api)
        await stop(hub, "fay", "l")
        assert name not in ours(k8s_api)
    finally:
        release.set()  # the create the Hub gave up on is carried out now, after the stop

    def carried_out():
        return [(what, uid) for what, ns, n, uid in k8s_api.history if (ns, n) == (NS, name)]

    # the create the Hub gave up on lands after the stop's delete ...
    await hub.wait_for(lambda: asyncio.sleep(0, [what for what, _ in carried_out()][:3] == ["created", "deleted", "created"]))
    late_uid = carried_out()[2][1]
    # ... and is deleted: that very object, by the watch for late creates
    await hub.wait_for(lambda: asyncio.sleep(0, ("deleted", late_uid) in carried_out()), timeout=30)
    assert name not in ours(k8s_api)
    assert not k8s_api.faults


async def test_restart_cleans_strays_and_recreates_missing(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-ed-")
    await hub.spawn("ed", "keep")
    await hub.wait_ready("ed", "keep")
    (name,) = ours(k8s_api)
    # a crash between creating a Service and saving the server's state leaves a stray ...
    stray = make_service("jupyter-ghost", NS, 4321, {"component": "hub"}, service_labels("ghost", "", "jupyterhub"), "ghost", "")
    k8s_api.services[NS, "jupyter-ghost"] = k8s_api._stored(stray, NS)
    # ... and someone deleted the Service of a running server
    del k8s_api.services[NS, name]
    await hub.restart_hub()
    await hub.wait_ready("ed", "keep")
    await hub.wait_for(lambda: asyncio.sleep(0, set(ours(k8s_api)) == {name}))
    async with hub.session.get(f"{hub.url}/user/ed/keep/x") as r:
        assert r.status == 200
    await stop(hub, "ed", "keep")
    assert ours(k8s_api) == {}


async def test_list_servers_for_a_remote_system(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-fi-")
    await hub.spawn("fi", "a")
    model = await hub.wait_ready("fi", "a")
    status, listed = await hub.request("GET", "/servers", token=LISTER_TOKEN)
    assert status == 200
    start_id = model["state"]["start_id"]
    assert any(entry.endswith(f"_a_{start_id}") for entry in listed), listed
    status, objects = await hub.request("GET", "/servers?format=objects", token=LISTER_TOKEN)
    assert {"user": "fi", "server": "a", "start_id": start_id, "state": "running"}.items() <= [o for o in objects if o["user"] == "fi"][
        0
    ].items()
    page = (await hub.request("GET", "/servers?offset=0&limit=1", token=LISTER_TOKEN))[1]
    assert len(page) == 1
    for bad in ("?limit=0", "?limit=x", "?format=xml", "?offset=-1"):
        assert (await hub.request("GET", f"/servers{bad}", token=LISTER_TOKEN))[0] == 400
    fi_token = await hub.user_token("fi")
    status, reply = await hub.request("GET", "/servers", token=fi_token)
    assert status == 403 and "custom:servers:list" in reply["message"]
    await stop(hub, "fi", "a")
    assert processes_with("fbs-sim-fi-") == []


async def test_list_servers_shows_the_start_id_of_a_pending_spawn(hub, k8s_api, no_leaks):
    # an external cleaner matches jobs by start id: an empty one would let it reap a starting job
    no_leaks.append("fbs-sim-gil-")
    await hub.spawn("gil", "p", {"start_delay": 5})
    await hub.wait_for(lambda: asyncio.sleep(0, processes_with("fbs-sim-gil-")))
    status, objects = await hub.request("GET", "/servers?format=objects", token=LISTER_TOKEN)
    (entry,) = [o for o in objects if o["user"] == "gil"]
    assert entry["state"] == "pending" and len(entry["start_id"]) == 32, entry
    status, listed = await hub.request("GET", "/servers", token=LISTER_TOKEN)
    assert any(e.endswith(f"_p_{entry['start_id']}") for e in listed), listed
    model = await hub.wait_ready("gil", "p")
    assert model["state"]["start_id"] == entry["start_id"]
    await stop(hub, "gil", "p")


async def test_a_server_that_ends_by_itself_leaves_no_service(hub, k8s_api, no_leaks):
    no_leaks.append("fbs-sim-hu-")
    await hub.spawn("hu", "")
    await hub.wait_ready("hu")
    assert len(ours(k8s_api)) == 1
    (pid,) = processes_with("fbs-sim-hu-")
    os.kill(pid, 9)  # the remote job ends by itself
    await hub.wait_stopped("hu")
    await hub.wait_for(lambda: asyncio.sleep(0, ours(k8s_api) == {}))


async def test_a_service_of_the_original_package_is_taken_over(hub, k8s_api, no_leaks):
    # jupyterhub-forwardbasespawner 2.1.2 labelled its Services with the Hub's selector plus
    # component=singleuser-server and nothing else; after an upgrade such a Service must not
    # block the next start of its server
    no_leaks.append("fbs-sim-ivy-")
    legacy = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "jupyter-ivy", "labels": {"component": "singleuser-server"}},
        "spec": {"ports": [{"name": "http", "port": 1234, "protocol": "TCP", "targetPort": 1234}],
                 "selector": {"component": "hub"}},
    }  # fmt: skip
    k8s_api.services[NS, "jupyter-ivy"] = k8s_api._stored(legacy, NS)
    await hub.spawn("ivy", "")
    model = await hub.wait_ready("ivy")
    svc = ours(k8s_api)["jupyter-ivy"]
    assert svc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "forwardbasespawner"
    assert svc["spec"]["ports"][0]["port"] == model["state"]["custom_port"]
    await stop(hub, "ivy", "")
    assert ours(k8s_api) == {}


async def test_list_servers_with_a_thousand_servers(hub, k8s_api):
    """Rows as the Hub writes them for running servers, added straight to its database."""
    from jupyterhub import orm

    session = orm.new_session_factory(f"sqlite:///{hub.dir}/jupyterhub.sqlite")()
    try:
        for i in range(1000):
            user = orm.User(name=f"bulk{i:04d}")
            session.add(user)
            spawner = orm.Spawner(user=user, name="", state={"start_id": f"sid{i}"})
            spawner.server = orm.Server(base_url=f"/user/bulk{i:04d}/")
            session.add(spawner)
        session.commit()
        status, listed = await hub.request("GET", "/servers", token=LISTER_TOKEN)
        assert status == 200
        bulk = [entry for entry in listed if "_sid" in entry]
        assert len(bulk) == 1000 and len(set(bulk)) == 1000
        pages = []
        for offset in range(0, 1100, 250):
            status, page = await hub.request("GET", f"/servers?format=objects&limit=250&offset={offset}", token=LISTER_TOKEN)
            pages += page
        assert len(pages) == len(listed) and len({(p["user"], p["server"]) for p in pages}) == len(listed)
    finally:
        for user in session.query(orm.User).filter(orm.User.name.like("bulk%")):
            session.delete(user)
        session.commit()
        session.close()
