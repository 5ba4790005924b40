"""Services through the real kubernetes_asyncio client against the schema-validating test API server."""

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kubernetes_asyncio.client.rest import ApiException

from forwardbasespawner.k8s.client import ServiceClient, ServiceConflict
from forwardbasespawner.k8s.names import DNS1035_LABEL, LABEL_VALUE, label_value, service_name
from forwardbasespawner.k8s.objects import is_ours, make_service, owner_selector, service_labels

log = logging.getLogger("test-k8s")
TEMPLATE = "jupyter-{username}--{servername}"


@pytest.fixture
async def services(k8s_api):
    k8s_api.faults.clear()
    k8s_api.services.clear()
    client = ServiceClient(log, host=k8s_api.url, token=k8s_api.token, retries=4, backoff=0.01, timeout=1)
    yield client
    await client.close()
    await k8s_api.settled()  # a request the client gave up on is carried out before the next test


def manifest(user="alice", server="", hub="hub1", port=40001):
    name = service_name(TEMPLATE, user, 1, server, "jh")
    return make_service(name, "jh", port, {"component": "hub"}, service_labels(user, server, hub), user, server, "abc")


# ------------------------------------------------------------------ names (pure)
names = st.text(min_size=1, max_size=80)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, st.one_of(st.just(""), names)), min_size=2, max_size=30, unique=True))
def test_distinct_servers_get_distinct_valid_names(pairs):
    made = [service_name(TEMPLATE, user, 1, server, "jh") for user, server in pairs]
    assert len(set(made)) == len(made)
    for name in made:
        assert len(name) <= 63 and DNS1035_LABEL.match(name), name


@settings(max_examples=300, deadline=None)
@given(names)
def test_label_values_are_valid(value):
    made = label_value(value)
    assert len(made) <= 63 and LABEL_VALUE.match(made)


def test_readable_names_stay_readable():
    assert service_name(TEMPLATE, "alice", 1, "", "jh") == "jupyter-alice"
    assert service_name(TEMPLATE, "alice", 1, "gpu", "jh") == "jupyter-alice--gpu"
    assert service_name(TEMPLATE, "Alice@example.org", 1, "", "jh").startswith("jupyter-alice-example-org---")
    # a template that makes invalid names still gives a valid, unique one
    odd = service_name("{unescaped_username}", "Ünïcode Üser", 1, "", "jh")
    assert DNS1035_LABEL.match(odd) and odd.endswith("---" + odd[-8:])


def test_manifest_is_owned_and_labelled():
    svc = manifest("Alice@Example.org", "GPU 1")
    assert is_ours(svc, "hub1", "Alice@Example.org", "GPU 1")
    assert not is_ours(svc, "hub2", "Alice@Example.org", "GPU 1")
    assert not is_ours(svc, "hub1", "Alice@Example.org", "")
    assert svc["metadata"]["annotations"]["forwardbasespawner.jupyter.org/username"] == "Alice@Example.org"
    assert all(LABEL_VALUE.match(v) for v in svc["metadata"]["labels"].values())


# ------------------------------------------------------------------ client against the test server
async def test_create_read_delete(k8s_api, services):
    svc = manifest()
    created = await services.create_service(svc, lambda existing: True)
    assert created["metadata"]["name"] == "jupyter-alice" and created["spec"]["ports"][0]["targetPort"] == 40001
    assert (await services.read_service("jupyter-alice", "jh"))["metadata"]["uid"] == created["metadata"]["uid"]
    assert await services.delete_service("jupyter-alice", "jh") is True
    assert await services.delete_service("jupyter-alice", "jh") is False  # gone is fine
    assert await services.read_service("jupyter-alice", "jh") is None


async def test_our_leftover_is_replaced(k8s_api, services):
    await services.create_service(manifest(port=40001), lambda e: True)
    again = await services.create_service(manifest(port=40002), lambda e: is_ours(e, "hub1", "alice", ""))
    assert again["spec"]["ports"][0]["port"] == 40002
    assert len(k8s_api.services) == 1


async def test_foreign_service_is_never_touched(k8s_api, services):
    foreign = manifest()
    foreign["metadata"]["labels"] = {"app": "someone-else"}
    await services.create_service(foreign, lambda e: True)
    before = dict(k8s_api.services)
    with pytest.raises(ServiceConflict):
        await services.create_service(manifest(), lambda e: is_ours(e, "hub1", "alice", ""))
    assert k8s_api.services == before


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503}, {"status": 429}, {"reset": True}, {"delay": 2}])
async def test_faults_are_retried(k8s_api, services, fault):
    k8s_api.faults[:] = [fault, fault]
    created = await services.create_service(manifest(), lambda e: is_ours(e, "hub1", "alice", ""))
    assert created["metadata"]["name"] == "jupyter-alice"
    assert len(k8s_api.services) == 1
    # an unanswered create may still be carried out: the client says so (the stop then watches for it)
    assert services.create_in_doubt("jupyter-alice", "jh") is ("delay" in fault or "reset" in fault or fault.get("status", 0) >= 500)


async def test_a_create_cancelled_in_flight_is_in_doubt(k8s_api, services):
    """JupyterHub cancels a start (start timeout, the user's cancel) while its create is out."""
    release = asyncio.Event()
    k8s_api.faults[:] = [{"method": "POST", "hold": release}]
    task = asyncio.ensure_future(services.create_service(manifest(), lambda e: True))
    for _ in range(200):
        if k8s_api.in_flight:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert services.create_in_doubt("jupyter-alice", "jh")
    release.set()
    await k8s_api.settled()
    assert ("jh", "jupyter-alice") in k8s_api.services  # carried out after all: why it is in doubt


async def test_a_delete_by_uid_and_version_spares_a_service_taken_over_meanwhile(k8s_api, services):
    read = (await services.create_service(manifest(), lambda e: True))["metadata"]
    # a new start takes the Service over: the replace keeps the uid and changes the version
    await services.create_service(manifest(port=40002), lambda e: is_ours(e, "hub1", "alice", ""))
    assert not await services.delete_service("jupyter-alice", "jh", uid=read["uid"], resource_version=read["resourceVersion"])
    current = k8s_api.services["jh", "jupyter-alice"]["metadata"]
    assert current["uid"] == read["uid"]
    assert await services.delete_service("jupyter-alice", "jh", uid=current["uid"], resource_version=current["resourceVersion"])
    assert k8s_api.services == {}
    # a Service of the same name made anew (another start, another Hub) has another uid: spared
    await services.create_service(manifest(), lambda e: True)
    assert not await services.delete_service("jupyter-alice", "jh", uid=current["uid"])
    assert ("jh", "jupyter-alice") in k8s_api.services


async def test_retries_give_up_with_the_error(k8s_api, services):
    k8s_api.faults[:] = [{"status": 500}] * 10
    with pytest.raises(ApiException) as e:
        await services.create_service(manifest(), lambda e: True)
    assert e.value.status == 500
    k8s_api.faults.clear()


async def test_invalid_bodies_are_refused_by_the_schema(k8s_api, services):
    bad = manifest()
    bad["spec"]["ports"][0]["port"] = "not-a-number"
    with pytest.raises(ApiException) as e:
        await services.create_service(bad, lambda e: True)
    assert e.value.status == 422
    bad = manifest()
    bad["metadata"]["name"] = "Not_A_DNS_Label"
    with pytest.raises(ApiException) as e:
        await services.create_service(bad, lambda e: True)
    assert e.value.status == 422


async def test_list_by_owner(k8s_api, services):
    await services.create_service(manifest("a", hub="hub1"), lambda e: True)
    await services.create_service(manifest("b", hub="hub2"), lambda e: True)
    listed = await services.list_services("jh", owner_selector("hub1"))
    assert [s["metadata"]["name"] for s in listed] == ["jupyter-a"]


async def test_slow_api_does_not_block_the_loop(k8s_api, services):
    k8s_api.latency = 0.5
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    try:
        await services.create_service(manifest(), lambda e: True)
    finally:
        task.cancel()
        k8s_api.latency = 0
    assert ticks > 10  # the loop kept running while the call waited
