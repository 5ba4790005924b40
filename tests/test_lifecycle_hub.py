"""The spawn life cycle on a real JupyterHub with configurable-http-proxy."""

import asyncio

import pytest

from tests.processes import processes_with

pytestmark = pytest.mark.slow


async def spawn(hub, user, server, options):
    status, reply = await hub.request("POST", f"/users/{user}/servers/{server}", body=options)
    assert status in (201, 202), (status, reply)


async def marker_of(hub, user, server):
    model = await hub.server_model(user, server)
    return model["state"].get("marker")


async def test_spawn_shows_remote_events_then_ready(hub, no_leaks):
    no_leaks.append("fbs-sim-alice-s1-")
    await hub.request("POST", "/users/alice")
    await spawn(hub, "alice", "s1", {"events": 3, "event_delay": 0.3})
    events = await hub.progress_events("alice", "s1")
    marker = await marker_of(hub, "alice", "s1")
    messages = [e.get("message", "") for e in events]
    remote = [m for m in messages if "remote step" in m]
    assert [m.split(": ", 1)[1] for m in remote] == [f"remote step {i} of 3" for i in (1, 2, 3)]
    assert all(m[:4].isdigit() and m[23:25] == ": " for m in remote), remote  # stamped
    assert events[-1].get("ready") is True
    await hub.wait_ready("alice", "s1")
    # the server answers through the proxy
    async with hub.session.get(f"{hub.url}/user/alice/s1/x") as r:
        assert r.status == 200
        assert (await r.json())["marker"] == marker
    status, _ = await hub.request("DELETE", "/users/alice/servers/s1")
    assert status in (202, 204)
    await hub.wait_stopped("alice", "s1")
    assert processes_with(marker) == []


async def test_failed_start_shows_clean_reason(hub, no_leaks):
    no_leaks.append("fbs-sim-bob-f1-")
    await hub.request("POST", "/users/bob")
    await spawn(hub, "bob", "f1", {"raise": "the batch system refused the job"})
    events = await hub.progress_events("bob", "f1")
    assert events[-1]["failed"] is True
    text = " ".join(e.get("message", "") for e in events)
    assert "the batch system refused the job" in text
    assert "Traceback" not in text
    status, reply = await hub.request("GET", "/users/progress/events/bob/f1")
    assert status == 200
    failed = [e for e in reply["events"] if e.get("failed")]
    assert failed and "Start failed: the batch system refused the job" in failed[-1]["message"]
    assert reply["active"] is False


async def test_http_error_without_reason_fails_cleanly(hub, no_leaks):
    no_leaks.append("fbs-sim-bob-f2-")
    await hub.request("POST", "/users/bob")
    await spawn(hub, "bob", "f2", {"http_error": 599})
    events = await hub.progress_events("bob", "f2")
    assert events[-1]["failed"] is True
    status, reply = await hub.request("GET", "/users/progress/events/bob/f2")
    assert any("HTTP error 599" in e.get("message", "") or "599" in e.get("message", "") for e in reply["events"])


async def test_cancel_during_start_ends_quickly_and_leaves_nothing(hub, no_leaks):
    no_leaks.append("fbs-sim-carol-c1-")
    await hub.request("POST", "/users/carol")
    await spawn(hub, "carol", "c1", {"start_delay": 120})
    # the remote process runs while _start() still waits (a slow batch queue)
    await hub.wait_for(lambda: asyncio.sleep(0, processes_with("fbs-sim-carol-c1-")))
    answers = []

    async def cancel():  # with the progress stream open, as the spawn page has it
        status, _ = await hub.request("DELETE", "/users/carol/servers/c1")
        answers.append(status)

    events = await asyncio.wait_for(hub.progress_events("carol", "c1", on_open=cancel), 10)
    assert answers == [204], "the cancel was not finished inside JupyterHub's window"
    assert events[-1]["failed"] is True
    assert any("cancel" in e.get("message", "").lower() for e in events if e.get("failed"))
    status, reply = await hub.request("GET", "/users/progress/events/carol/c1")
    assert any(e.get("failed") and "Start cancelled." in e["message"] for e in reply["events"])
    assert "Traceback" not in str(reply)
    assert processes_with("fbs-sim-carol-c1-") == []


async def test_remote_failed_event_cancels_pending_spawn(hub, no_leaks):
    no_leaks.append("fbs-sim-dave-r1-")
    await hub.request("POST", "/users/dave")
    await spawn(hub, "dave", "r1", {"fail": "out of quota on the cluster", "event_delay": 0.2})
    events = await hub.progress_events("dave", "r1")
    assert events[-1]["failed"] is True
    assert any("out of quota on the cluster" in e.get("message", "") for e in events)
    await hub.wait_stopped("dave", "r1")
    model = await hub.server_model("dave", "r1")
    assert model is None or not model["ready"]
    assert processes_with("fbs-sim-dave-r1-") == []


async def test_remote_failed_event_while_start_runs(hub, no_leaks):
    no_leaks.append("fbs-sim-dave-r2-")
    await hub.request("POST", "/users/dave")
    await spawn(hub, "dave", "r2", {"fail": "node crashed", "event_delay": 0.5, "start_delay": 120})
    events = await asyncio.wait_for(hub.progress_events("dave", "r2"), 30)
    assert events[-1]["failed"] is True
    assert any("node crashed" in e.get("message", "") for e in events)
    await hub.wait_stopped("dave", "r2")
    assert processes_with("fbs-sim-dave-r2-") == []


async def test_failed_event_stops_running_server(hub, no_leaks):
    await hub.request("POST", "/users/erin")
    await spawn(hub, "erin", "", {})
    await hub.wait_ready("erin")
    marker = await marker_of(hub, "erin", "")
    no_leaks.append("fbs-sim-erin-default-")
    status, _ = await hub.request("POST", "/users/progress/events/erin", body={"progress": 100, "failed": True, "message": "job killed"})
    assert status == 204
    await hub.wait_stopped("erin")
    assert processes_with(marker) == []


async def test_hub_restart_keeps_running_server(hub, no_leaks):
    await hub.request("POST", "/users/frank")
    await spawn(hub, "frank", "keep", {"events": 1})
    await hub.wait_ready("frank", "keep")
    before = (await hub.server_model("frank", "keep"))["state"]
    no_leaks.append("fbs-sim-frank-keep-")
    await hub.restart_hub()
    after = await hub.wait_ready("frank", "keep")
    assert after["state"]["start_id"] == before["start_id"]
    assert after["state"]["events"] == before["events"]
    async with hub.session.get(f"{hub.url}/user/frank/keep/") as r:
        assert r.status == 200 and (await r.json())["marker"] == before["marker"]
    await hub.request("DELETE", "/users/frank/servers/keep")
    await hub.wait_stopped("frank", "keep")
