"""The examples the docs show, run for real: the README's minimal subclass (examples/minimal),
the Slurm-style batch subclass (examples/slurm) with both remote start script templates
(examples/remote-start), each spawned on a real JupyterHub, through a real sshd where they tunnel."""

import asyncio
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ssh_config
from tests.hubharness import REPO, running_hub
from tests.processes import process_environ, processes

pytestmark = pytest.mark.slow

EXAMPLES = os.path.join(REPO, "examples")
SINGLEUSER = [os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")] + (["--allow-root"] if os.getuid() == 0 else [])


def fenced_blocks(path, language):
    """The fenced code blocks of ``language`` in a Markdown file, in order."""
    with open(path) as f:
        text = f.read()
    return [m.group(2) for m in re.finditer(r"^```(\w+)[^\n]*\n(.*?)^```", text, re.S | re.M) if m.group(1) == language]


def process_group(pgid):
    """Live processes of process group ``pgid``."""
    return [p.pid for p in processes(lambda p: p.pgid == pgid)]


async def wait_gone(pgid, timeout=20):
    for _ in range(int(timeout * 10)):
        if not process_group(pgid):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"processes of job {pgid} outlived its server: {process_group(pgid)}")


# ------------------------------------------------------------------ the README's minimal subclass


def test_readme_shows_the_example_files():
    readme = fenced_blocks(os.path.join(REPO, "README.md"), "python")
    for name in ("myspawner.py", "jupyterhub_config.py"):
        with open(os.path.join(EXAMPLES, "minimal", name)) as f:
            assert f.read() in readme, f"README.md does not show examples/minimal/{name} as it is"


@pytest.fixture(scope="module")
async def minimal_hub(tmp_path_factory, sshd):
    directory = tmp_path_factory.mktemp("hub")
    with open(os.path.join(EXAMPLES, "minimal", "jupyterhub_config.py")) as f:
        readme_config = f.read()
    config = (
        readme_config
        + ssh_config(sshd, f"{directory}/ctl", cls="MySpawner")
        + textwrap.dedent(f"""
        c.MySpawner.public_api_url = "http://127.0.0.1:{{}}/hub/api".format(c.JupyterHub.port)
        c.MySpawner.cmd = {SINGLEUSER!r}
        # the named server "tunnel" goes through the sshd; the others are reached directly
        c.MySpawner.ssh_during_startup = lambda spawner: spawner.name == "tunnel"
        c.Spawner.http_timeout = 60
        """)
    )
    pythonpath = os.pathsep.join([os.path.join(EXAMPLES, "minimal"), REPO, os.environ.get("PYTHONPATH", "")])
    async with running_hub(directory, config, pythonpath=pythonpath) as hub:
        yield hub


@pytest.mark.parametrize("server", ["", "tunnel"])
async def test_minimal_subclass_on_a_real_hub(minimal_hub, server):
    hub = minimal_hub
    await hub.request("POST", "/users/mia")
    status, reply = await hub.request("POST", f"/users/mia/servers/{server}", body={})
    assert status in (201, 202), reply
    model = await hub.wait_ready("mia", server)
    job = int(model["state"]["job_id"])
    assert process_group(job), "the job's server does not run"
    info = model["state"]["port_forward_info"]
    if server == "tunnel":
        assert model["state"].get("tunnel_open") and info["service"].startswith("127.0.0.1:")
        assert int(info["service"].rsplit(":", 1)[1]) != model["state"]["custom_port"]  # the forward's own port
    else:
        assert "tunnel_open" not in model["state"]

    # the README's curl line, run with the job's own environment, adds an event
    (curl,) = [b for b in fenced_blocks(os.path.join(REPO, "README.md"), "sh") if "curl" in b]
    env = process_environ(job)
    run = subprocess.run(["bash", "-c", curl], env={"PATH": os.environ["PATH"], **{k: env[k] for k in (
        "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_EVENTS_URL")}}, capture_output=True, text=True, timeout=30)  # fmt: skip
    assert run.returncode == 0, run.stderr
    status, reply = await hub.request("GET", f"/users/progress/events/mia/{server}")
    assert status == 200 and reply["events"][-1]["message"].endswith("Job is running, starting Jupyter"), reply

    # the job id is in the state: after a Hub restart poll() and stop() still find the job
    await hub.restart_hub()
    await hub.wait_ready("mia", server)
    assert process_group(job)
    async with hub.session.get(f"{hub.url}/user/mia/{server}/api/status".replace("//api", "/api")) as r:
        assert r.status in (200, 302, 403), r.status  # the server answers through the proxy
    await hub.request("DELETE", f"/users/mia/servers/{server}")
    await hub.wait_stopped("mia", server)
    await wait_gone(job)


# ------------------------------------------------------------------ the Slurm-style batch subclass

FAKE_SLURM = '''#!{python}
"""sbatch, squeue and scancel for tests: each job runs its script locally, in its own session."""
import os, signal, subprocess, sys
STATE = {state!r}
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
def alive(pid):
    try:
        with open(f"/proc/{{pid}}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
if name == "sbatch":
    assert "--parsable" in args and "--export=ALL" in args, args
    script = os.path.join(STATE, f"job-{{os.getpid()}}.sh")
    with open(script, "w") as f:
        f.write(sys.stdin.read())
    job = subprocess.Popen(["bash", script], start_new_session=True, stdin=subprocess.DEVNULL,
                           stdout=open(script + ".out", "w"), stderr=subprocess.STDOUT)
    print(job.pid)
elif name == "squeue":
    job = int([a for a in args if a.startswith("--jobs=")][0].split("=", 1)[1])
    if not alive(job):
        print("slurm_load_jobs error: Invalid job id specified", file=sys.stderr)
        sys.exit(1)
    print("RUNNING None")
elif name == "scancel":
    try:
        os.killpg(int(args[0]), signal.SIGTERM)
    except ProcessLookupError:
        pass
'''


@pytest.fixture(scope="module")
def fake_slurm(tmp_path_factory):
    directory = tmp_path_factory.mktemp("slurm")
    script = directory / "fake_slurm"
    script.write_text(FAKE_SLURM.format(python=sys.executable, state=str(directory)))
    script.chmod(0o755)
    for name in ("sbatch", "squeue", "scancel"):
        os.symlink(script, directory / name)
    return directory


@pytest.fixture(scope="module")
async def slurm_hub(tmp_path_factory, sshd, fake_slurm):
    directory = tmp_path_factory.mktemp("hub")
    closed_port = sshd.port + 1 if sshd.port < 65535 else sshd.port - 1  # nothing listens there (checked below)
    bash_template = os.path.join(EXAMPLES, "remote-start", "start-jupyter.sh")
    python_template = os.path.join(EXAMPLES, "remote-start", "start_jupyter.py")
    config = ssh_config(sshd, f"{directory}/ctl", cls="SlurmSpawner") + textwrap.dedent(f"""
        c.JupyterHub.spawner_class = "slurmspawner.SlurmSpawner"
        c.SlurmSpawner.sbatch_command = [{str(fake_slurm / "sbatch")!r}]
        c.SlurmSpawner.squeue_command = [{str(fake_slurm / "squeue")!r}]
        c.SlurmSpawner.scancel_command = [{str(fake_slurm / "scancel")!r}]
        c.SlurmSpawner.queue_poll_seconds = 0.2
        c.SlurmSpawner.cmd = {SINGLEUSER!r}
        c.SlurmSpawner.batch_prologue = "export FBS_LISTEN_HOST=127.0.0.1 FBS_SERVICE_HOST=127.0.0.1"
        # the server name picks the template; user "broken" gets a jump node that does not answer
        c.SlurmSpawner.start_script = {bash_template!r}
        templates = {{"python": {python_template!r}}}
        c.SlurmSpawner.pre_spawn_hook = lambda spawner: setattr(
            spawner, "start_script", templates.get(spawner.name.split("-")[0], spawner.start_script))
        c.SlurmSpawner.ssh_port = lambda spawner, info: {closed_port} if spawner.user.name == "broken" else {sshd.port}
        c.SlurmSpawner.show_first_default_event = False
        c.Spawner.http_timeout = 60
        """)
    pythonpath = os.pathsep.join([os.path.join(EXAMPLES, "slurm"), REPO, os.environ.get("PYTHONPATH", "")])
    async with running_hub(directory, config, pythonpath=pythonpath) as hub:
        hub.closed_port = closed_port
        yield hub


@pytest.mark.parametrize("template", ["bash", "python"])
async def test_slurm_example_with_start_script_template(slurm_hub, template):
    hub = slurm_hub
    server = f"{template}-ok"
    await hub.request("POST", "/users/sam")
    status, reply = await hub.request("POST", f"/users/sam/servers/{server}", body={})
    assert status in (201, 202), reply
    events = await hub.progress_events("sam", server)
    model = await hub.wait_ready("sam", server)
    job = int(model["state"]["job_id"])
    messages = [e.get("message", "").split(": ", 1)[-1] for e in events]
    assert messages[0] == f"Submitted as job {job}"
    for expected in ("is running; starting Jupyter", "Starting the Jupyter server", "connecting it to the Hub",
                     "Connected; the Hub checks the server now"):  # fmt: skip
        assert any(expected in m for m in messages), (expected, messages)
    assert model["state"]["tunnel_open"] and model["state"]["port_forward_info"]["service"].startswith("127.0.0.1:")
    await hub.request("DELETE", f"/users/sam/servers/{server}")
    await hub.wait_stopped("sam", server)
    await wait_gone(job)


@pytest.mark.parametrize("template", ["bash", "python"])
async def test_templates_stop_their_server_when_the_tunnel_fails(slurm_hub, template):
    """SetupTunnel answers 422: the Hub ends the start, the template stops Jupyter and exits."""
    hub = slurm_hub
    import socket

    with socket.socket() as s:  # the "jump node" port must really be closed
        assert s.connect_ex(("127.0.0.1", hub.closed_port)) != 0
    server = f"{template}-broken"
    await hub.request("POST", "/users/broken")
    status, reply = await hub.request("POST", f"/users/broken/servers/{server}", body={})
    assert status in (201, 202), reply
    events = await hub.progress_events("broken", server)
    assert events[-1]["failed"] is True  # JupyterHub's own "Spawn cancelled" may follow ours
    assert any("The tunnel to the server could not be set up" in e.get("message", "") for e in events), events
    await hub.wait_stopped("broken", server)
    (job,) = [int(m.rsplit(" ", 1)[1]) for m in (e.get("message", "").split(": ", 1)[-1] for e in events)
              if m.startswith("Submitted as job ")]  # fmt: skip
    await wait_gone(job)
