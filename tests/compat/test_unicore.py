"""UnicoreSpawner 2.1.7 (from PyPI, unmodified) on our base, end to end.

A real JupyterHub + configurable-http-proxy (tests/hubharness.py), a real OpenSSH sshd on loopback
(the Hub's forward hub → job goes through it), and the UNICORE stand-in
(tests/compat/unicore_service.py) whose "batch jobs" are local processes running
tests/compat/unicore_job.py. pyunicore talks to the stand-in with HTTP basic auth; the stand-in
POSTs UNICORE notifications (RS256 JWT, certificate served at ``unicore_cert_url``) to the route
UnicoreSpawner registers. ``unicore_internal_forwarding = False``: the job calls SetupTunnel itself.

Every test ends with a leak check: no job process of it alive, its forward's port free, no ssh
master left (idle masters exit at once here).
"""

import asyncio
import json
import os
import sys

import pytest

from forwardbasespawner.ssh.ports import port_is_free
from tests.compat.unicore_service import UnicoreStandIn
from tests.conftest import ssh_config
from tests.hubharness import running_hub
from tests.processes import processes_with, ssh_masters, ssh_processes

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
JOB_SCRIPT = os.path.join(HERE, "unicore_job.py")
STREAM_TIMEOUT = 90  # a progress stream that never ends is a failure, not a hung run

PENDING_SUMMARY = "Your slurm job is currently in status PENDING."
CONFIGURING_SUMMARY = "Your slurm job is currently in status CONFIGURING."
RUNNING_SUMMARY = "UNICORE reports the batch job RUNNING."

# What a deployment writes: UnicoreSpawner replaces <JUPYTERHUB_...> from the server's environment
# and <label> from user_options.
JOB_DESCRIPTION = {
    "Name": "JupyterLab",
    "Executable": f"{sys.executable} {JOB_SCRIPT}",
    "Arguments": ["unicore-job:<JUPYTERHUB_USER>:<JUPYTERHUB_SERVER_NAME>:"],
    "Environment": {"JOB_LABEL": "<label>"},
    "Notification": "<JUPYTERHUB_UNICORE_NOTIFICATION_URL>",
    "NotificationSettings": {"status": ["SUCCESSFUL", "FAILED"], "bssStatus": ["PENDING", "CONFIGURING"]},
    "Resources": {"Nodes": "1", "Runtime": "3600"},
}


def marker(user, server=""):
    """The command-line marker of ``user``'s ``server``'s job processes."""
    return f"unicore-job:{user}:{server}:"


@pytest.fixture(scope="module")
async def unicore(tmp_path_factory):
    service = UnicoreStandIn(tmp_path_factory.mktemp("unicore"))
    await service.start()
    try:
        yield service
        outlived = [f"{job.user}:{job.server} ({job.id})" for job in service.history if job.running_process]
    finally:
        await service.close()  # kills what is left, by PID
    assert not outlived, f"job processes outlived the tests: {outlived}"


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd, unicore):
    directory = tmp_path_factory.mktemp("hub")
    control = f"{directory}/ctl"
    config = (
        ssh_config(sshd, control, "UnicoreSpawner")
        + f"""
import json
from pyunicore.credentials import UsernamePassword
from unicorespawner import UnicoreSpawner

c.JupyterHub.spawner_class = "unicorespawner.UnicoreSpawner"
c.UnicoreSpawner.unicore_site_url = {unicore.site_url!r}
c.UnicoreSpawner.unicore_cert_url = {unicore.cert_url!r}
c.UnicoreSpawner.unicore_cert_path = False  # aiohttp ssl=False: plain http on loopback

def unicore_transport_kwargs(spawner):
    return {{"credential": UsernamePassword({unicore.username!r}, {unicore.password!r}), "verify": False, "timeout": 15}}

c.UnicoreSpawner.unicore_transport_kwargs = unicore_transport_kwargs
c.UnicoreSpawner.unicore_internal_forwarding = False
c.UnicoreSpawner.svc_create = False
c.UnicoreSpawner.job_description = json.loads({json.dumps(JOB_DESCRIPTION)!r})
c.UnicoreSpawner.bss_notification_config = dict(
    UnicoreSpawner.class_traits()["bss_notification_config"].default_value,
    RUNNING={{"progress": 90, "summary": {RUNNING_SUMMARY!r}, "details": "The job runs."}},
)
c.UnicoreSpawner.ssh_check_interval = 1
c.UnicoreSpawner.ssh_restore_attempts = 2
c.Spawner.poll_interval = 1
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 60
"""
    )
    async with running_hub(directory, config) as hub:
        yield hub


# ------------------------------------------------------------------ helpers
def text(event):
    return f"{event.get('message', '')} {event.get('html_message', '')}"


def first_terminal(events):
    """The event the spawn page stops at (JupyterHub's stream adds its own closing event after it)."""
    return next((e for e in events if e.get("failed") or e.get("ready")), {})


def texts(events):
    return [text(e) for e in events]


async def spawn(hub, user, server="", **options):
    await hub.request("POST", f"/users/{user}")
    options.setdefault("label", f"{user}-{server or 'default'}")
    status, reply = await hub.request("POST", f"/users/{user}/servers/{server}", body=options)
    assert status in (201, 202), (status, reply)


async def progress(hub, user, server=""):
    """The real progress EventStream until it ends (bounded, so a stuck stream fails the test)."""
    return await asyncio.wait_for(hub.progress_events(user, server), STREAM_TIMEOUT)


async def stored_events(hub, user, server=""):
    status, reply = await hub.request("GET", f"/users/progress/events/{user}/{server}")
    assert status == 200, reply
    return reply["events"]


async def through_proxy(hub, user, server="", path="probe"):
    """GET a path of the server through the proxy (and the SSH forward); JSON or None."""
    url = f"{hub.url}/user/{user}/{server + '/' if server else ''}{path}"
    try:
        async with hub.session.get(url) as r:
            if r.status != 200 or r.content_type != "application/json":
                return None
            return await r.json()
    except Exception:
        return None


async def stop(hub, user, server=""):
    status, reply = await hub.request("DELETE", f"/users/{user}/servers/{server}")
    assert status in (202, 204), (status, reply)
    await hub.wait_stopped(user, server)


async def wait_until(condition, what, timeout=30, interval=0.1):
    """Wait for a plain (sync) condition; fail with ``what`` when it does not come."""
    for _ in range(int(timeout / interval)):
        if condition():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


async def nothing_left(hub, user, server="", port=None):
    """No job process of this server, its forward's port free, no ssh master: waited for, then asserted."""

    def leftovers():
        found = {}
        if processes_with(marker(user, server)):
            found["job processes"] = processes_with(marker(user, server))
        if port and not port_is_free("127.0.0.1", port):
            found["forward listener"] = port
        if ssh_processes(hub.control_dir):
            found["ssh masters"] = ssh_processes(hub.control_dir)
        return found

    for _ in range(150):
        if not leftovers():
            return
        await asyncio.sleep(0.2)
    assert not leftovers(), f"left behind by {user}:{server}: {leftovers()}"


def only_job(unicore, user, server="", index=-1):
    jobs = unicore.jobs_of(user, server)
    assert jobs, f"no job was submitted for {user}:{server}"
    return jobs[index]


def assert_aborted_and_deleted(job):
    assert "abort" in job.actions, f"the job was not aborted; its actions: {job.actions}"
    assert job.deleted, "the job was not deleted"


# ------------------------------------------------------------------ tests
async def test_spawn_shows_job_and_batch_events_then_stop_cleans_up(hub, unicore, no_leaks):
    no_leaks.append(marker("ann"))
    await spawn(hub, "ann", label="first-lab")
    events = await progress(hub, "ann")
    shown = texts(events)
    assert events[-1].get("ready") is True, shown
    job = only_job(unicore, "ann")
    assert [n[1] for n in job.notifications if n[0]["bssStatus"] in ("PENDING", "CONFIGURING")] == [200, 200], job.notifications

    def index(fragment):
        found = [i for i, t in enumerate(shown) if fragment in t]
        assert found, f"{fragment!r} is not among the events the user saw: {shown}"
        return found[0]

    # Unicore's batch-system notifications, then the job's own events, in the order they happened
    assert index(PENDING_SUMMARY) < index(CONFIGURING_SUMMARY) < index("job: preparing the environment") < index("job: starting JupyterLab")

    model = await hub.wait_ready("ann")
    port = model["state"]["custom_port"]
    assert model["state"]["resource_url"] == job.url
    reply = await through_proxy(hub, "ann")
    assert reply == {"job": job.id, "label": "first-lab", "path": "/user/ann/probe"}
    assert len(ssh_masters(hub.control_dir)) == 1, "the server is reached through the ssh forward"

    await stop(hub, "ann")
    assert_aborted_and_deleted(job)
    await nothing_left(hub, "ann", port=port)


@pytest.mark.parametrize("notified", [False, True], ids=["noticed-by-poll", "notified"])
async def test_job_that_ends_by_itself_stops_the_server(hub, unicore, no_leaks, notified):
    server = "e-notified" if notified else "e-polled"
    no_leaks.append(marker("bob", server))
    if not notified:
        unicore.plan("bob", server, notify_statuses=())  # no notification at the end: only JupyterHub's poll notices
    await spawn(hub, "bob", server)
    model = await hub.wait_ready("bob", server)
    port = model["state"]["custom_port"]
    assert await through_proxy(hub, "bob", server)
    job = only_job(unicore, "bob", server)

    await unicore.end_job(job, exit_code=0)  # walltime over: the job is gone, UNICORE says SUCCESSFUL
    assert job.status == "SUCCESSFUL"
    await hub.wait_stopped("bob", server)
    # UnicoreSpawner's _stop() ran (it deletes the job): JupyterHub itself skips stop() for a
    # server that poll() reports gone, so the base's poll() must have cleaned up
    await wait_until(lambda: job.deleted, "UnicoreSpawner's _stop() to delete the ended job")
    if notified:
        await wait_until(lambda: [n for n in job.notifications if n[0]["status"] == "SUCCESSFUL"], "the Hub's answer")
        assert [n[1] for n in job.notifications if n[0]["status"] == "SUCCESSFUL"] == [200], job.notifications
    await nothing_left(hub, "bob", server, port=port)


async def test_refused_submission_is_shown_and_a_new_start_works(hub, unicore, no_leaks):
    no_leaks.append(marker("cid"))
    unicore.plan("cid", refuse=(503, "The DEMO-SITE is in maintenance until 14:00"))
    await spawn(hub, "cid")
    events = await progress(hub, "cid")
    assert events[-1].get("failed") is True, texts(events)
    assert any("The DEMO-SITE is in maintenance until 14:00" in t for t in texts(events)), texts(events)
    await hub.wait_stopped("cid")
    assert unicore.jobs_of("cid") == []

    await spawn(hub, "cid")
    events = await progress(hub, "cid")
    assert events[-1].get("ready") is True, texts(events)
    assert not any("maintenance" in t for t in texts(events)), "the new start replays the old failure"
    model = await hub.wait_ready("cid")
    assert await through_proxy(hub, "cid")
    job = only_job(unicore, "cid")
    await stop(hub, "cid")
    assert_aborted_and_deleted(job)
    await nothing_left(hub, "cid", port=model["state"]["custom_port"])


@pytest.mark.parametrize("where", ["queued", "running"])
async def test_cancel_of_a_pending_start_aborts_the_job(hub, unicore, no_leaks, where):
    server = f"c-{where}"
    no_leaks.append(marker("dee", server))
    if where == "queued":
        unicore.plan("dee", server, hold=True)  # waits in the batch queue
    else:
        unicore.plan("dee", server, job_env={"UNICORE_JOB_TUNNEL_DELAY": "3600"})  # runs, never reports its address
    await spawn(hub, "dee", server)
    stream = asyncio.ensure_future(progress(hub, "dee", server))
    await wait_until(lambda: unicore.jobs_of("dee", server), "the job submission")
    job = only_job(unicore, "dee", server)
    if where == "queued":
        await wait_until(lambda: any(n[0]["bssStatus"] == "PENDING" for n in job.notifications), "the PENDING notification")
    else:
        await wait_until(lambda: job.running_process and processes_with(marker("dee", server)), "the job process")
        stdout = os.path.join(job.workdir, "stdout")
        await wait_until(lambda: "waiting" in open(stdout).read(), "the job to post its events")
    model = await hub.server_model("dee", server)
    assert model["pending"] == "spawn" and not model["ready"], model

    status, reply = await hub.request("DELETE", f"/users/dee/servers/{server}")
    assert status in (202, 204), (status, reply)
    await hub.wait_stopped("dee", server)
    events = await stream
    assert events[-1].get("failed") is True, texts(events)
    assert_aborted_and_deleted(job)
    await nothing_left(hub, "dee", server)


async def test_failed_notification_during_start_ends_the_spawn_with_unicores_event(hub, unicore, no_leaks):
    no_leaks.append(marker("eve"))
    unicore.plan("eve", fail_in_queue="Job rejected by the batch system: budget of project demo exhausted", exit_code=2)
    await spawn(hub, "eve")
    events = await progress(hub, "eve")
    assert events[-1].get("failed") is True, texts(events)
    # the spawn page stops at the first failed event: it must be Unicore's, with the reason
    shown = first_terminal(events)
    assert "UNICORE Job stopped with exitCode: 2" in text(shown), texts(events)
    assert "budget of project demo exhausted" in text(shown), texts(events)
    job = only_job(unicore, "eve")
    await hub.wait_stopped("eve")
    # the Hub answers the notification only after it has stopped the server
    await wait_until(lambda: [n for n in job.notifications if n[0]["status"] == "FAILED"], "the Hub's answer to the FAILED notification")
    assert [n[1] for n in job.notifications if n[0]["status"] == "FAILED"] == [200], job.notifications
    await wait_until(lambda: job.deleted, "the failed job to be deleted")
    await nothing_left(hub, "eve")


async def test_restart_from_saved_state_does_not_replay_the_old_failure(hub, unicore, no_leaks):
    no_leaks.append(marker("fay", "s6"))
    unicore.plan("fay", "s6", fail_in_queue="node j3c045 crashed during boot")
    await spawn(hub, "fay", "s6")
    events = await progress(hub, "fay", "s6")
    assert first_terminal(events).get("failed") is True and "node j3c045 crashed" in text(first_terminal(events)), texts(events)
    await hub.wait_stopped("fay", "s6")

    await hub.restart_hub()  # the named server's spawner now comes from its saved state
    await spawn(hub, "fay", "s6")
    events = await progress(hub, "fay", "s6")
    assert not any("j3c045" in t for t in texts(events)), f"the previous start's failure was replayed: {texts(events)}"
    assert events[-1].get("ready") is True, texts(events)
    assert not any("j3c045" in t for t in texts(await stored_events(hub, "fay", "s6")))
    model = await hub.wait_ready("fay", "s6")
    assert await through_proxy(hub, "fay", "s6")
    job = only_job(unicore, "fay", "s6")
    await stop(hub, "fay", "s6")
    assert_aborted_and_deleted(job)
    await nothing_left(hub, "fay", "s6", port=model["state"]["custom_port"])


async def test_hub_restart_keeps_the_server_and_its_channels(hub, unicore, no_leaks):
    no_leaks.append(marker("gus", "r7"))
    await spawn(hub, "gus", "r7")
    model = await hub.wait_ready("gus", "r7")
    port = model["state"]["custom_port"]
    job = only_job(unicore, "gus", "r7")
    assert (await through_proxy(hub, "gus", "r7"))["job"] == job.id

    await hub.restart_hub()
    model = await hub.wait_ready("gus", "r7")
    assert model["state"]["resource_url"] == job.url and model["state"]["custom_port"] == port

    async def answers():
        reply = await through_proxy(hub, "gus", "r7")
        return reply and reply["job"] == job.id

    await hub.wait_for(answers)
    # the job still posts events with its token (through the forward, the job asks itself to)
    reply = await through_proxy(hub, "gus", "r7", "post-event?message=still+alive+after+the+restart")
    assert reply and reply["status"] == 204, reply
    # UNICORE's notifications still reach the spawner (start id, JWT check, bss config)
    assert await unicore.notify(job, status="RUNNING", bssStatus="RUNNING") == 200
    shown = texts(await stored_events(hub, "gus", "r7"))
    assert any("still alive after the restart" in t for t in shown), shown
    assert any(RUNNING_SUMMARY in t for t in shown), shown

    await stop(hub, "gus", "r7")
    assert_aborted_and_deleted(job)
    await nothing_left(hub, "gus", "r7", port=port)
