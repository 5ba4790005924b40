"""OutpostSpawner 2.2.13 (from PyPI, unmodified) on our base, end to end.

A real JupyterHub + configurable-http-proxy, a real OpenSSH sshd (the Hub reaches every server
only through an SSH forward), and a stand-in for the Outpost REST service
(``outpost_service.py``) that starts each "remote" server as a local process and forwards
progress events to the Hub with the server's own token, as the real Outpost does.

The Hub is configured as an operator of the original package configures it: the original's trait
forms (``ssh_port`` as a string, ``custom_poll_interval`` in milliseconds, ``start_async`` as a
callable). Every test checks afterwards that no server process, SSH master or forward is left.
"""

import asyncio
import os
import signal

import pytest

from forwardbasespawner.ssh.ports import port_is_free

try:  # OutpostSpawner 2.2.13 itself needs this (from JupyterHub 6.0 on): on 5.4 it cannot be imported
    from jupyterhub.metrics import ServerSpawnFailureReason  # noqa: F401
except ImportError:
    pytest.skip("OutpostSpawner 2.2.13 needs JupyterHub >= 6 (jupyterhub.metrics.ServerSpawnFailureReason)",
                allow_module_level=True)  # fmt: skip

from tests.compat.outpost_service import BASIC_AUTH, OutpostService
from tests.conftest import ssh_config
from tests.hubharness import running_hub, server_token
from tests.processes import processes_with, ssh_processes

pytestmark = pytest.mark.slow

OUTPOST_START = "Sending request to Outpost service to start your service."
OUTPOST_SENT = "Outpost communication successful. Waiting for the service to start..."
MAX_CHARS = 4096  # the base's default event_max_chars


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
async def outpost():
    service = OutpostService()
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd, outpost):
    directory = tmp_path_factory.mktemp("hub")
    control = f"{directory}/ctl"
    config = (
        f"""
c.JupyterHub.spawner_class = "outpostspawner.OutpostSpawner"
c.OutpostSpawner.request_url = {outpost.url!r}
c.OutpostSpawner.request_headers = {{"Authorization": {BASIC_AUTH!r}}}
c.OutpostSpawner.start_async = lambda spawner: bool((spawner.user_options or {{}}).get("async"))
c.OutpostSpawner.custom_poll_interval = 1000  # milliseconds, as OutpostSpawner counts
c.OutpostSpawner.svc_create = False
c.OutpostSpawner.ssh_during_startup = True
"""
        + ssh_config(sshd, control, cls="OutpostSpawner")
        + f"""
c.OutpostSpawner.ssh_port = "{sshd.port}"  # old configs give the port as a string
"""
    )
    async with running_hub(directory, config) as hub:
        yield hub


@pytest.fixture(autouse=True)
async def safety_net(hub, outpost):
    """After each test: stop what a failed test left running, so the next test starts clean.
    (Each test asserts its own cleanliness; this only keeps one failure from spreading.)"""
    yield
    status, users = await hub.request("GET", "/users?include_stopped_servers=0")
    for user in users if status == 200 else []:
        for server, model in (user.get("servers") or {}).items():
            if model.get("ready") or model.get("pending"):
                path = f"/users/{user['name']}/servers/{server}" if server else f"/users/{user['name']}/server"
                await hub.request("DELETE", path)
                try:
                    await hub.wait_stopped(user["name"], server)
                except AssertionError:
                    pass
    for job in outpost.all_jobs:
        if job.running():
            os.kill(job.pid, signal.SIGKILL)
    await eventually(lambda: not ssh_processes(hub.control_dir), timeout=15, what="ssh masters to end")
    errors, outpost.errors[:] = list(outpost.errors), []
    assert errors == [], f"the Outpost stand-in failed: {errors}"


# ---------------------------------------------------------------------------- helpers
async def eventually(condition, timeout=30, interval=0.1, what="condition"):
    """Wait until ``condition()`` (sync or async) is truthy; fail after ``timeout`` seconds."""
    for _ in range(int(timeout / interval)):
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def server_path(user, server):
    return f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"


def text(event):
    return f"{event.get('message', '')} {event.get('html_message', '')}"


def messages(events):
    return [text(e) for e in events]


async def spawn(hub, user, server, options):
    await hub.request("POST", f"/users/{user}")
    status, reply = await hub.request("POST", server_path(user, server), body=options)
    assert status in (201, 202), (status, reply)


async def spawn_and_watch(hub, outpost, user, server, options):
    """Spawn; read the progress stream from the start (the stand-in holds the start until the
    stream is open); return its events."""
    gate = outpost.gate(server)
    try:
        await spawn(hub, user, server, options)

        async def opened():
            gate.set()

        return await asyncio.wait_for(hub.progress_events(user, server, on_open=opened), 90)
    finally:
        outpost.forget_gate(server)


async def stop(hub, user, server):
    status, reply = await hub.request("DELETE", server_path(user, server))
    assert status in (202, 204), (status, reply)
    await hub.wait_stopped(user, server)


async def answers_through_proxy(hub, user, server, job):
    prefix = f"{hub.url}/user/{user}/{server + '/' if server else ''}"
    try:
        async with hub.session.get(f"{prefix}probe") as r:
            return r.status == 200 and (await r.json())["marker"] == job.marker
    except Exception:
        return False


def event_posts_ok(outpost, job):
    posts = outpost.posts_for(job.name, job.start_id)
    return [(p["kind"], p["status"], p.get("text", "")[:300]) for p in posts if not 200 <= (p["status"] or 0) < 300]


async def assert_nothing_left(hub, job, forward_port=None):
    """No server process, no ssh master, no forward listener."""
    if job is not None:
        await eventually(lambda: not processes_with(job.marker), timeout=15, what=f"{job.marker} to end")
    await eventually(lambda: not ssh_processes(hub.control_dir), timeout=15, what="no ssh master")
    if forward_port:
        await eventually(lambda: port_is_free("127.0.0.1", forward_port), timeout=15, what=f"forward port {forward_port} to close")


# ---------------------------------------------------------------------------- 1. spawn, use, poll, stop
async def test_spawn_through_tunnel_poll_and_stop(hub, outpost, no_leaks):
    no_leaks.append("fbs-outpost-ann-default-")
    events = await spawn_and_watch(hub, outpost, "ann", "", {"events": ["remote step 1 of 2", "remote step 2 of 2"]})
    job = outpost.job_for("")
    assert job is not None and job.user == "ann"
    assert event_posts_ok(outpost, job) == []
    texts = messages(events)
    assert any(OUTPOST_START in t for t in texts), texts
    assert any(OUTPOST_SENT in t for t in texts), texts
    plain = [e.get("message", "") for e in events]  # (the first html_message repeats the user's options)
    first, second = (next(i for i, m in enumerate(plain) if s in m) for s in ("remote step 1 of 2", "remote step 2 of 2"))
    assert first < second, plain
    assert events[-1].get("ready") is True, events[-1]
    (post,) = outpost.requests_for("POST", "")
    assert post["status"] == 200 and not post["async"]

    model = await hub.wait_ready("ann")
    forward_port = model["state"]["custom_port"]
    assert forward_port != job.port  # the Hub talks to its end of the SSH forward
    assert ssh_processes(hub.control_dir), "the server must be reached through an ssh master"
    assert await answers_through_proxy(hub, "ann", "", job)

    # JupyterHub polls through OutpostSpawner (GET {url}/{name}/{start_id}); the server keeps running
    polls_before = len(outpost.requests_for("GET", "", job.start_id))
    await eventually(lambda: len(outpost.requests_for("GET", "", job.start_id)) >= polls_before + 2, timeout=20, what="two polls")
    assert all(r["status"] == 200 for r in outpost.requests_for("GET", "", job.start_id))
    model = await hub.server_model("ann")
    assert model["ready"] and not model["pending"]
    assert await answers_through_proxy(hub, "ann", "", job)

    await stop(hub, "ann", "")
    assert [r["status"] for r in outpost.requests_for("DELETE", "", job.start_id)] == [200]
    await assert_nothing_left(hub, job, forward_port)


# ---------------------------------------------------------------------------- 2. async start, KubeSpawner events, failure
async def test_async_start_with_kubespawner_events_then_failure(hub, outpost, no_leaks):
    no_leaks.append("fbs-outpost-bob-f-")
    kube = ["Successfully assigned outpost/jupyter-bob-f to worker-1", 'Pulling image "jupyter/minimal-notebook:latest"']
    events = await spawn_and_watch(hub, outpost, "bob", "f", {"async": True, "scenario": "fail", "kube": True, "events": kube})
    job = outpost.job_for("f")
    (post,) = outpost.requests_for("POST", "f")
    assert post["async"] and post["status"] == 202
    posts = outpost.posts_for("f", job.start_id, kind="event")
    # the Hub answers the failed event once it has ended the spawn: that may come after the stream ended
    await eventually(lambda: all(p["status"] is not None for p in posts), what="the Hub to answer every event")
    assert len(posts) == 4 and any("raw_event" in p["body"] for p in posts)
    assert len(posts[-1]["body"]["html_message"]) > MAX_CHARS
    assert event_posts_ok(outpost, job) == [], "every event the Outpost forwards must be accepted"

    texts = messages(events)
    for message in kube:
        assert any(f"[Normal] {message}" in t for t in texts), (message, texts)
    assert events[-1].get("failed") is True, events[-1]
    failure = [e for e in events if e.get("failed") and "JupyterHub Outpost could not start service" in text(e)]
    assert failure, texts
    assert "Could not create pod jupyter-bob-f" in text(failure[0])
    for e in events:  # shown, but shortened to what the base allows
        assert len(e.get("message", "")) <= MAX_CHARS and len(e.get("html_message", "")) <= MAX_CHARS, len(text(e))

    await hub.wait_stopped("bob", "f")
    model = await hub.server_model("bob", "f")
    assert not (model and (model["ready"] or model["pending"]))
    await assert_nothing_left(hub, job)


async def test_async_start_reports_its_address_through_setuptunnel(hub, outpost, no_leaks):
    """The real Outpost answers an async start with {"service": ""}; the remote side then calls
    SetupTunnel with the server's token, and the Hub opens the forward."""
    no_leaks.append("fbs-outpost-bob-a-")
    events = await spawn_and_watch(hub, outpost, "bob", "a", {"async": True, "kube": True, "events": ["Started container notebook"]})
    job = outpost.job_for("a")
    await eventually(lambda: all(p["status"] is not None for p in outpost.posts_for("a", job.start_id)), what="the Hub's answers")
    assert event_posts_ok(outpost, job) == []
    assert [p["status"] for p in outpost.posts_for("a", job.start_id, kind="setuptunnel")] == [204]
    assert events[-1].get("ready") is True, events[-1]
    assert any("[Normal] Started container notebook" in t for t in messages(events))
    model = await hub.wait_ready("bob", "a")
    assert model["state"]["custom_port"] != job.port
    assert await answers_through_proxy(hub, "bob", "a", job)
    await stop(hub, "bob", "a")
    assert [r["status"] for r in outpost.requests_for("DELETE", "a", job.start_id)] == [200]
    await assert_nothing_left(hub, job, model["state"]["custom_port"])


# ---------------------------------------------------------------------------- 3. refused start, then a good one
async def test_refused_start_shows_reason_then_starts_again(hub, outpost, no_leaks):
    no_leaks.append("fbs-outpost-cid-r-")
    reason = "Start with flavor gpu for jupyterhub not allowed. Maximum (0) already reached."
    events = await spawn_and_watch(hub, outpost, "cid", "r", {"scenario": "refuse", "refuse_message": reason})
    assert [r["status"] for r in outpost.requests_for("POST", "r")] == [419]
    assert events[-1].get("failed") is True, events[-1]
    assert any(reason in t for t in messages(events)), messages(events)
    await hub.wait_stopped("cid", "r")
    status, reply = await hub.request("GET", "/users/progress/events/cid/r")
    assert status == 200 and reply["active"] is False

    events = await spawn_and_watch(hub, outpost, "cid", "r", {"events": ["remote step 1 of 1"]})
    assert events[-1].get("ready") is True, events[-1]
    assert not any(reason in t for t in messages(events)), "the new start must not show the old failure"
    job = outpost.job_for("r")
    model = await hub.wait_ready("cid", "r")
    assert await answers_through_proxy(hub, "cid", "r", job)
    await stop(hub, "cid", "r")
    assert [r["status"] for r in outpost.requests_for("DELETE", "r", job.start_id)] == [200]
    await assert_nothing_left(hub, job, model["state"]["custom_port"])


# ---------------------------------------------------------------------------- 4. cancel while pending
@pytest.mark.parametrize(
    "server, options",
    [
        # async: the Outpost answered, the job sits in a queue and has not reported where it runs
        ("qa", {"async": True, "scenario": "queued", "events": ["Job 4711 queued on partition batch"]}),
        # sync: the Outpost has not answered the start request yet
        ("qs", {"scenario": "hold", "events": ["Pod jupyter-dee-qs scheduled"]}),
    ],
    ids=["async-queued", "sync-unanswered"],
)
async def test_cancel_pending_start(hub, outpost, no_leaks, server, options):
    no_leaks.append(f"fbs-outpost-dee-{server}-")
    await spawn(hub, "dee", server, options)
    stream = asyncio.ensure_future(hub.progress_events("dee", server))
    try:
        await eventually(lambda: outpost.job_for(server) and outpost.posts_for(server, kind="event"), what="the remote side to report")
        job = outpost.job_for(server)
        await eventually(lambda: outpost.posts_for(server, job.start_id, kind="event")[-1]["status"] is not None, what="the event post")
        assert event_posts_ok(outpost, job) == []
        assert processes_with(job.marker), "the job runs on the remote side"
        model = await hub.server_model("dee", server)
        assert model["pending"] == "spawn", model

        status, reply = await hub.request("DELETE", server_path("dee", server))
        assert status in (202, 204), (status, reply)
        await hub.wait_stopped("dee", server)
        events = await asyncio.wait_for(stream, 30)
    finally:
        stream.cancel()
    assert events[-1].get("failed") is True, events[-1]
    assert not any(e.get("ready") for e in events)
    assert any("queued" in t or "scheduled" in t for t in messages(events))
    assert [r["status"] for r in outpost.requests_for("DELETE", server, job.start_id)] == [200]
    await assert_nothing_left(hub, job)


# ---------------------------------------------------------------------------- 5. the job ends by itself
async def test_job_that_ends_by_itself_is_noticed_and_stopped_once(hub, outpost, no_leaks):
    no_leaks.append("fbs-outpost-eve-e-")
    events = await spawn_and_watch(hub, outpost, "eve", "e", {"events": ["remote step 1 of 1"]})
    assert events[-1].get("ready") is True, events[-1]
    job = outpost.job_for("e")
    model = await hub.wait_ready("eve", "e")
    forward_port = model["state"]["custom_port"]
    assert outpost.requests_for("DELETE", "e") == []

    # the user shuts the server down from inside (as Jupyter Server's /api/shutdown): the job ends
    async with hub.session.post(f"{hub.url}/user/eve/e/api/shutdown") as r:
        assert r.status == 200 and (await r.json())["marker"] == job.marker
    await eventually(lambda: not job.running(), timeout=15, what="the job to end")

    await hub.wait_stopped("eve", "e")
    await eventually(lambda: outpost.requests_for("DELETE", "e", job.start_id), timeout=15, what="DELETE")
    assert any(r["status"] == 200 for r in outpost.requests_for("GET", "e", job.start_id))
    await asyncio.sleep(3)  # three poll intervals: a second stop would have come by now
    deletes = outpost.requests_for("DELETE", "e", job.start_id)
    assert len(deletes) == 1, f"OutpostSpawner._stop() ran {len(deletes)} times: {deletes}"
    model = await hub.server_model("eve", "e")
    assert not (model and (model["ready"] or model["pending"]))
    await assert_nothing_left(hub, job, forward_port)


# ---------------------------------------------------------------------------- 6. restart from saved state
@pytest.mark.parametrize("restart_hub_between", [False, True], ids=["same-hub", "hub-restarted"])
async def test_restart_does_not_replay_previous_events(hub, outpost, no_leaks, restart_hub_between):
    server = "s2" if restart_hub_between else "s1"
    no_leaks.append(f"fbs-outpost-fay-{server}-")
    events = await spawn_and_watch(hub, outpost, "fay", server, {"events": ["first start step"]})
    assert events[-1].get("ready") is True, events[-1]
    first = outpost.job_for(server)
    await hub.wait_ready("fay", server)
    await stop(hub, "fay", server)
    await assert_nothing_left(hub, first)
    if restart_hub_between:
        await hub.restart_hub()  # the spawner comes back from its saved state

    events = await spawn_and_watch(hub, outpost, "fay", server, {"events": ["second start step"]})
    second = outpost.job_for(server)
    assert second is not first and second.start_id != first.start_id, "the Outpost tells starts apart by start_id"
    texts = messages(events)
    assert events[-1].get("ready") is True, events[-1]
    assert any("second start step" in t for t in texts), texts
    assert not any("first start step" in t for t in texts), texts
    assert sum(OUTPOST_START in t for t in texts) == 1, texts
    status, reply = await hub.request("GET", f"/users/progress/events/fay/{server}")
    assert status == 200 and not any("first start step" in text(e) for e in reply["events"]), reply

    model = await hub.wait_ready("fay", server)
    await stop(hub, "fay", server)
    assert [r["status"] for r in outpost.requests_for("DELETE", server, second.start_id)] == [200]
    await assert_nothing_left(hub, second, model["state"]["custom_port"])


# ---------------------------------------------------------------------------- 7. Hub restart
async def test_hub_restart_with_a_running_server(hub, outpost, no_leaks):
    no_leaks.append("fbs-outpost-gus-h-")
    events = await spawn_and_watch(hub, outpost, "gus", "h", {"events": ["remote step 1 of 1"]})
    assert events[-1].get("ready") is True, events[-1]
    job = outpost.job_for("h")
    await hub.wait_ready("gus", "h")
    token = server_token(job.marker)  # what the remote server holds

    await hub.restart_hub()
    polls_before = len(outpost.requests_for("GET", "h", job.start_id))
    model = await hub.wait_ready("gus", "h")
    await eventually(lambda: answers_through_proxy(hub, "gus", "h", job), timeout=30, what="the server to answer through the proxy")
    await eventually(
        lambda: len(outpost.requests_for("GET", "h", job.start_id)) > polls_before, timeout=20, what="a poll after the restart"
    )
    assert all(r["status"] == 200 for r in outpost.requests_for("GET", "h", job.start_id))
    model = await hub.server_model("gus", "h")
    assert model["ready"] and not model["pending"]

    status, reply = await hub.request(
        "POST", "/users/progress/events/gus/h", token=token, body={"progress": 100, "message": "still here after the restart"}
    )
    assert 200 <= status < 300, (status, reply)

    await stop(hub, "gus", "h")
    assert [r["status"] for r in outpost.requests_for("DELETE", "h", job.start_id)] == [200]
    await assert_nothing_left(hub, job, model["state"]["custom_port"])
