"""Upgrade in place: a Hub that ran the ORIGINAL package (jupyterhub-forwardbasespawner 2.1.2, in
its own venv: ``make test`` builds it, see ORIGINAL_VENV in the Makefile) restarts on OURS with the
same config file, the same database, the same proxy and its servers still running.

The spawner is tests/compat/legacy_sim.py, written in the original's conventions; the config is
one the original accepts (its ssh options, its Service hooks). The original runs ssh through a
shell as uid 1000 when it can (we are root), with ControlPath /tmp/control_<node>, forwards
binding 0.0.0.0:<port>; so the key and known_hosts it is given are readable by uid 1000.

Scenario: on the original, 5 tunnelled servers and 1 pending delayed-tunnel spawn (its process
waits for a file before it calls SetupTunnel). SIGTERM the Hub (proxy, servers and the
original's ssh master stay; in the second variant the master is killed too, as in a new pod),
start the Hub on our venv. Then: every server answers through the proxy (probed continuously
from before the stop; failed probes are counted), each remote process can still POST events and
SetupTunnel with the token it holds, the pending spawn completes when its process calls
SetupTunnel after the restart, and stopping every server leaves no server process, no ssh
process and no listener on the forward ports.
"""

import asyncio
import json
import os
import pwd
import shutil
import signal
import sqlite3
import sys
import tempfile

import aiohttp
import pytest

from tests.hubharness import Hub
from tests.probing import Prober
from tests.processes import process_environ, processes, processes_with

pytestmark = pytest.mark.slow

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
REPO = os.path.dirname(TESTS)
ORIGINAL_VENV = os.environ.get("FBS_ORIGINAL_VENV") or (sys.prefix + "-original")
if not os.path.isabs(ORIGINAL_VENV):
    ORIGINAL_VENV = os.path.join(REPO, ORIGINAL_VENV)
ORIGINAL_PYTHON = os.path.join(ORIGINAL_VENV, "bin", "python")
ORIGINAL_CONTROL_PATH = "/tmp/control_127.0.0.1"  # the original's ControlPath for ssh_node 127.0.0.1
SSH_UID = 1000  # the original's subprocess_cmd does setuid(1000) when it can

TUNNELLED = [("ua", ""), ("ua", "s1"), ("ub", ""), ("ub", "s2"), ("uc", "")]
DELAYED = ("ud", "later")


def original_version():
    import subprocess

    out = subprocess.run(
        [ORIGINAL_PYTHON, "-c", "import importlib.metadata as m; print(m.version('jupyterhub-forwardbasespawner'))"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd="/",
    )  # fmt: skip
    return out.stdout.strip()


@pytest.fixture(scope="module")
def original_venv():
    if not os.path.exists(ORIGINAL_PYTHON):
        pytest.fail(f"{ORIGINAL_VENV} is missing: run `make test` (it builds the original package's venv)")
    version = original_version()
    assert version == "2.1.2", f"{ORIGINAL_VENV} has jupyterhub-forwardbasespawner {version!r}, not 2.1.2"
    return ORIGINAL_PYTHON


@pytest.fixture(scope="module")
def ssh_files(sshd):
    """The sshd fixture's client key and known_hosts, copied where the original's ssh (uid 1000)
    can read them: a directory of its own under /tmp, not pytest's (other pytest sessions reset
    /tmp/pytest-of-<user> to 0700)."""
    if os.geteuid() == 0:
        try:
            pwd.getpwuid(SSH_UID)
        except KeyError:
            pytest.fail(
                f"uid {SSH_UID} has no passwd entry: the original's ssh runs as uid {SSH_UID}; "
                f"`make test` creates one (.ci/system-deps test)"
            )
    directory = tempfile.mkdtemp(prefix="fbs-legacy-ssh-")
    try:
        key = os.path.join(directory, "id_ed25519")
        known_hosts = os.path.join(directory, "known_hosts")
        shutil.copyfile(sshd.client_key, key)
        shutil.copyfile(sshd.known_hosts, known_hosts)
        os.chmod(key, 0o600)
        os.chmod(known_hosts, 0o644)
        os.chmod(directory, 0o755)
        if os.geteuid() == 0:
            for path in (directory, key, known_hosts):
                os.chown(path, SSH_UID, SSH_UID)
        yield key, known_hosts
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def legacy_config(sshd, key, known_hosts):
    """Hub config for LegacySimSpawner, in terms the ORIGINAL understands (and nothing of ours)."""
    return f"""
c.JupyterHub.spawner_class = "legacy_sim.LegacySimSpawner"
c.LegacySimSpawner.remote_server = {os.path.join(TESTS, "remote_server.py")!r}
c.LegacySimSpawner.remote_wrapper = {os.path.join(HERE, "legacy_remote.py")!r}
c.LegacySimSpawner.ssh_node = "127.0.0.1"
c.LegacySimSpawner.ssh_port = {sshd.port}
c.LegacySimSpawner.ssh_username = {sshd.user!r}
c.LegacySimSpawner.ssh_key = {key!r}
c.LegacySimSpawner.ssh_forward_options = {{"UserKnownHostsFile": {known_hosts!r}}}
# tunnel at once when _start() returns an address; "later" servers call SetupTunnel themselves
# (the original's case 3 needs ssh_during_startup False: it would split the empty address)
c.LegacySimSpawner.ssh_during_startup = lambda spawner: not (spawner.user_options or {{}}).get("later")
# No Kubernetes: the original's Service code calls the Kubernetes API, and with svc_create = False
# its run_ssh_forward() returns None, which start() unpacks (TypeError). Custom Service hooks are
# the original's way to say where the forward is reached.
c.LegacySimSpawner.svc_create = True
c.LegacySimSpawner.ssh_custom_svc = lambda spawner, port_forward_info: ("127.0.0.1", spawner.port)
c.LegacySimSpawner.ssh_custom_svc_remove = lambda spawner, port_forward_info: None
# the original's case 3 expects the server at http://<svc_name>:<port> before SetupTunnel
c.LegacySimSpawner.svc_name_template = "127.0.0.1"
c.JupyterHub.init_spawners_timeout = 5
"""


# ------------------------------------------------------------------ helpers
def db_states(hub):
    """{(user, server): state dict} of every spawner row in the Hub's database."""
    con = sqlite3.connect(os.path.join(hub.dir, "jupyterhub.sqlite"))
    try:
        rows = con.execute(
            "select users.name, spawners.name, spawners.state, spawners.server_id from spawners join users on spawners.user_id = users.id"
        ).fetchall()
    finally:
        con.close()
    return {(user, server or ""): {"state": json.loads(state) if state else {}, "server_id": sid}
            for user, server, state, sid in rows}  # fmt: skip


def server_process(user, server):
    pids = processes_with(f"fbs-legacy-{user}-{server or 'default'}-")
    assert len(pids) == 1, f"server processes of {user}/{server}: {pids}"
    return pids[0]


def ssh_clients(port):
    """Live ssh client processes (:class:`tests.processes.Process`) that connect to the sshd on
    ``port`` (ours and the original's: ``-p PORT`` / ``-oPort=PORT``)."""
    return processes(lambda p: p.name == "ssh" and any(a in p.argv for a in (str(port), f"-oPort={port}", f"Port={port}")))


def original_masters():
    return [p.pid for p in processes(lambda p: p.name == "ssh" and f"ControlPath={ORIGINAL_CONTROL_PATH}" in p.cmdline)]


def listening_ports(ports):
    """Those of ``ports`` that have a TCP listener on any address."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":  # LISTEN
                        port = int(fields[1].rsplit(":", 1)[1], 16)
                        if port in ports:
                            found.add(port)
        except FileNotFoundError:
            pass
    return found


def kill_pids(pids, sig=signal.SIGKILL):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


async def post(session, url, token, body):
    async with session.post(url, data=json.dumps(body), headers={"Authorization": f"token {token}"}) as r:
        return r.status, await r.text()


# ------------------------------------------------------------------ the scenario
@pytest.mark.parametrize("master", ["kept", "killed"])
async def test_upgrade_in_place(master, original_venv, sshd, ssh_files, tmp_path):
    key, known_hosts = ssh_files
    users = {u for u, _ in TUNNELLED} | {DELAYED[0]}
    stale = original_masters()
    assert not stale, f"an ssh master of the original (ControlPath {ORIGINAL_CONTROL_PATH}) is already running: {stale}"
    if os.path.lexists(ORIGINAL_CONTROL_PATH):
        os.unlink(ORIGINAL_CONTROL_PATH)  # a stale socket would make the original run ssh without a master

    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    shutil.copy(os.path.join(HERE, "legacy_sim.py"), legacy_dir / "legacy_sim.py")
    shutil.copy(os.path.join(TESTS, "processes.py"), legacy_dir / "processes.py")
    hub_dir = tmp_path / "hub"
    # only the legacy module on the path: the repo there would make the original venv import OUR package
    hub = Hub(hub_dir, legacy_config(sshd, key, known_hosts), python=original_venv, pythonpath=str(legacy_dir))
    hub.log_path = str(tmp_path / "hub-original.log")
    wait_file = tmp_path / "queued-job-may-run"
    prober = None
    report = {}
    try:
        await hub.start()
        # ---- on the original
        for user, server in TUNNELLED:
            await hub.spawn(user, server, {"events": 2})
            await hub.wait_ready(user, server)
        await hub.spawn(*DELAYED, {"later": True, "wait_file": str(wait_file)})

        async def delayed_saved():  # the original saves the state before it waits for the server
            row = db_states(hub).get(DELAYED)
            return row and row["server_id"] and row["state"].get("pid")

        await hub.wait_for(delayed_saved)
        servers = {}
        for user, server in TUNNELLED:
            servers[(user, server)] = f"fbs-legacy-{user}-{server or 'default'}-"
        prober = Prober(hub, servers)
        prober.start()
        await asyncio.sleep(1)
        assert prober.ok and not prober.failures, f"servers do not answer on the original: {prober.summary()}"

        original_states = db_states(hub)
        report["original_state"] = original_states
        with open(tmp_path / "original-states.json", "w") as f:
            json.dump({f"{u}/{s}": v for (u, s), v in original_states.items()}, f, indent=1)
        print("spawners.state after the original ran:", json.dumps(original_states[TUNNELLED[1]]["state"]))
        forward_ports = {int(v["state"]["custom_port"]) for v in original_states.values() if v["state"].get("custom_port")}
        masters = original_masters()
        assert len(masters) == 1, f"the original's ssh masters: {masters}"

        # ---- the upgrade: stop the Hub (proxy, servers and, unless killed, the master stay)
        prober.phase = "hub down"
        await hub.stop_hub()
        if master == "killed":
            kill_pids(masters)
            if os.path.lexists(ORIGINAL_CONTROL_PATH):
                os.unlink(ORIGINAL_CONTROL_PATH)  # the pod and its /tmp are gone
        await asyncio.sleep(1)
        down_failures = len(prober.failures)
        hub.python = sys.executable  # our venv: our package, the same config file and database
        hub.log_path = str(tmp_path / "hub-ours.log")
        prober.phase = "our hub starting"
        try:
            await hub.start_hub()
        finally:
            wait_file.touch()  # the queued job runs now, during or after our Hub's start-up check
        prober.phase = "our hub up"

        # ---- every server answers through the proxy (all along, when the master was kept)
        async def all_answer():
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
                for (user, server), prefix in servers.items():
                    if await prober.probe_once(session, user, server, prefix):
                        return False
            return True

        await hub.wait_for(all_answer, timeout=30)
        for user, server in TUNNELLED:
            model = await hub.server_model(user, server)
            assert model and model["ready"], (user, server, model)
        await asyncio.sleep(2)
        if master == "kept":
            assert not prober.failures, f"tunnelled servers did not answer across the upgrade: {prober.summary()}"
        else:
            assert down_failures or prober.failures, "killing the original's master should break its forwards"
            late = [f for f in prober.failures if f[1] == "our hub up"]
            assert len(late) <= len(servers), f"servers did not come back on our Hub: {prober.summary()}"

        # ---- the pending spawn completes when its process calls SetupTunnel after the restart
        model = await hub.wait_ready(*DELAYED)
        delayed_prefix = f"fbs-legacy-{DELAYED[0]}-{DELAYED[1]}-"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            problem = await prober.probe_once(session, *DELAYED, delayed_prefix)
        assert problem is None, f"the delayed server does not answer through the proxy: {problem}\n{hub.log_tail()}"
        prober.servers[DELAYED] = delayed_prefix

        # ---- the remote processes' tokens (JupyterHub's token records, made by the original) work
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            for user, server in TUNNELLED + [DELAYED]:
                env = process_environ(server_process(user, server))
                token = env["JUPYTERHUB_API_TOKEN"]
                async with session.get(f"{hub.api}/user", headers={"Authorization": f"token {token}"}) as r:
                    assert r.status == 200, f"JupyterHub refuses {user}/{server}'s token: {r.status} {await r.text()}"
                status, text = await post(session, env["JUPYTERHUB_EVENTS_URL"], token,
                                          {"progress": 100, "message": "still here after the upgrade"})  # fmt: skip
                assert status == 204, f"event POST of {user}/{server} after the upgrade: {status} {text}"
                status, text = await post(session, env["JUPYTERHUB_SETUPTUNNEL_URL"], token,
                                          {"service": f"127.0.0.1:{env['FBS_SIM_PORT']}"})  # fmt: skip
                assert status == 204, f"SetupTunnel of {user}/{server} after the upgrade: {status} {text}"
        await asyncio.sleep(1)
        before = len(prober.failures)
        await asyncio.sleep(1)
        assert len(prober.failures) == before, f"servers stopped answering after SetupTunnel: {prober.summary()}"
        report["probes"] = prober.summary()
        print(f"[{master}] probes: {prober.summary()}")
        await prober.stop()
        prober = None

        ours_states = db_states(hub)
        forward_ports |= {int(v["state"]["custom_port"]) for v in ours_states.values() if v["state"].get("custom_port")}

        # ---- stopping every server leaves nothing behind
        for user, server in TUNNELLED + [DELAYED]:
            path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
            status, reply = await hub.request("DELETE", path)
            assert status in (202, 204), (user, server, status, reply)
        for user, server in TUNNELLED + [DELAYED]:
            await hub.wait_stopped(user, server)

        async def nothing_left():
            return not (any(processes_with(f"fbs-legacy-{u}-") for u in users) or ssh_clients(sshd.port) or listening_ports(forward_ports))

        try:
            await hub.wait_for(nothing_left, timeout=45, interval=0.5)  # an idle master may linger a while
        except AssertionError:
            left = {
                "server processes": [p for u in users for p in processes_with(f"fbs-legacy-{u}-")],
                "ssh processes": {p.pid: " ".join(p.argv) for p in ssh_clients(sshd.port)},
                "listening forward ports": sorted(listening_ports(forward_ports)),
            }
            raise AssertionError(f"left behind after stopping every server: {left}\n{hub.log_tail()}") from None
    finally:
        if prober:
            print(f"[{master}] probes: {prober.summary()}")
            await prober.stop()
        await hub.close()
        # everything this test started, directly or through its Hubs, by PID
        kill_pids([p for u in users for p in processes_with(f"fbs-legacy-{u}-")])
        kill_pids([p.pid for p in ssh_clients(sshd.port)])
        if os.path.lexists(ORIGINAL_CONTROL_PATH) and not original_masters():
            os.unlink(ORIGINAL_CONTROL_PATH)
        wait_file.touch()
