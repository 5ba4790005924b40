"""OpenSSH ControlMasters against a real sshd on loopback: forwards, supervision, no leaks."""

import asyncio
import logging
import os
import signal
import sys
import threading

import pytest

from forwardbasespawner.ssh.asyncssh import AsyncsshMaster
from forwardbasespawner.ssh.master import Master
from forwardbasespawner.ssh.openssh import (
    ControlMaster,
    ForwardError,
    TunnelError,
    allocated_port,
    control_argv,
    master_argv,
    master_pid,
    run_argv,
)
from forwardbasespawner.ssh.ports import allocate_port, port_is_free
from forwardbasespawner.ssh.server_tunnel import ServerTunnel
from forwardbasespawner.ssh.spec import Endpoint, Forward
from forwardbasespawner.ssh.supervisor import TunnelManager
from tests.processes import ssh_masters, ssh_processes

pytestmark = pytest.mark.slow
log = logging.getLogger("test-ssh")


@pytest.fixture(scope="module")
async def backend():
    """The 'remote server': answers every connection with its port and closes."""

    async def answer(reader, writer):
        await reader.read(100)
        writer.write(f"hello from {port}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port
    server.close()
    await server.wait_closed()


@pytest.fixture(params=["openssh", "asyncssh"])
async def manager(request, tmp_path, sshd):
    directory = str(tmp_path / "ctl")
    manager = TunnelManager(
        log, directory=directory, master_args={"known_hosts": sshd.known_hosts},
        start_timeout=10, check_interval=0.5, restore_attempts=3, idle_timeout=0,
        master_class={"openssh": ControlMaster, "asyncssh": AsyncsshMaster}[request.param],
    )  # fmt: skip
    manager.backend = request.param
    yield manager
    await manager.close()
    assert ssh_processes(directory) == [], "an ssh process outlived the manager"
    # the node's side of each connection ends a moment after ours: the next test counts sessions
    await eventually(lambda: asyncio.sleep(0, not sshd.session_pids()))
    assert os.listdir(directory) == [] if os.path.isdir(directory) else True, "a control socket was left"


def endpoint_of(sshd, **kw):
    return Endpoint(host="127.0.0.1", port=sshd.port, user=sshd.user, key=sshd.client_key, **kw)


async def fetch(port):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.write(b"GET\n")
    await writer.drain()
    data = await asyncio.wait_for(reader.read(100), 5)
    writer.close()
    return data.decode()


async def eventually(check, timeout=15):
    for _ in range(int(timeout / 0.1)):
        try:
            if await check():
                return True
        except (OSError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{check.__name__} did not become true in {timeout}s")


def test_an_operators_keep_alive_and_ciphers_take_effect_with_openssh(tmp_path):
    # ask ssh itself which values it would use (ssh -G prints the resulting configuration)
    import subprocess

    endpoint = Endpoint(host="node1.example.org", options={"ServerAliveInterval": 15, "Ciphers": "aes256-ctr"})
    argv = master_argv(endpoint, str(tmp_path / "ctl"), known_hosts=str(tmp_path / "kh"), ciphers="aes128-gcm@openssh.com")
    config = subprocess.run(["ssh", "-G", *argv[1:]], capture_output=True, text=True, check=True).stdout.lower()
    assert "serveraliveinterval 15" in config and "ciphers aes256-ctr" in config


def test_both_backends_implement_the_whole_master_interface():
    assert Master.__abstractmethods__ == {
        "adopt_all", "up", "wait_closed", "exit_reason", "check", "listens", "add", "remove", "restore", "kill",
        "exit", "save_journal", "terminate",
    }  # fmt: skip
    for backend in (ControlMaster, AsyncsshMaster):
        assert issubclass(backend, Master) and not backend.__abstractmethods__
    with pytest.raises(TypeError):
        Master(Endpoint(host="node1.example.org"), "/ctl/abc", {}, log)


def test_parsers_of_ssh_answers():
    assert master_pid(b"Master running (pid=4242)\r\n") == 4242 and master_pid(b"Control socket connect: refused") is None
    assert allocated_port(b"Allocated port 40123 for remote forward\n40123\n") == 40123 and allocated_port(b"") is None


def test_argv_builders_pass_values_as_single_arguments():
    endpoint = Endpoint(host="node1.example.org", port=2222, user="tunnel", key="/keys/id", options={"ServerAliveInterval": 15})
    argv = master_argv(endpoint, "/ctl/abc", known_hosts="/kh")
    assert argv[0] == "ssh" and argv[-2:] == ["--", "node1.example.org"]
    assert "UserKnownHostsFile=/kh" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-i") + 1] == "/keys/id" and argv[argv.index("-l") + 1] == "tunnel"
    # ssh keeps the first value it reads: the operator's option must come before the library's own
    alive = [a for a in argv if a.startswith("ServerAliveInterval=")]
    assert alive[0] == "ServerAliveInterval=15" and len(alive) == 2
    forward = Forward("L", "127.0.0.1", 40000, "10.0.0.5", 8888)
    assert control_argv(endpoint, "/ctl/abc", "forward", forward) == [
        "ssh", "-S", "/ctl/abc", "-O", "forward", "-L", "127.0.0.1:40000:10.0.0.5:8888", "--", "node1.example.org",
    ]  # fmt: skip
    assert Forward("L", "::1", 1, "fe80::1", 2).argument() == "[::1]:1:[fe80::1]:2"


async def test_forward_carries_traffic_and_leaves_nothing(manager, sshd, backend):
    port = allocate_port()
    forward = Forward("L", "127.0.0.1", port, "127.0.0.1", backend)
    await manager.add(endpoint_of(sshd), forward)
    assert await fetch(port) == f"hello from {backend}\n"
    await manager.remove(endpoint_of(sshd), forward)
    await eventually(lambda: asyncio.sleep(0, port_is_free("127.0.0.1", port)))
    await eventually(lambda: asyncio.sleep(0, not ssh_processes(manager.directory)))


async def test_a_port_is_taken_by_another_only_if_no_master_of_ours_holds_it(manager, sshd, backend, monkeypatch):
    """A forward that could not be restored moves only if another process listens on its port;
    the listeners' owners are read from /proc off the Hub's event loop."""
    threads = []
    holds_port = manager.holds_port
    monkeypatch.setattr(manager, "holds_port", lambda port: threads.append(threading.current_thread()) or holds_port(port))
    tunnel = ServerTunnel(manager, endpoint_of(sshd), bind_host="127.0.0.1", target=("127.0.0.1", backend), name="u:s", log=log)
    port = await tunnel.open(allocate_port())
    assert await tunnel.port_taken_by_another(port) is False  # our master (or the Hub itself) holds it
    other = allocate_port()
    listener = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LISTEN_AND_WAIT, str(other), stdout=asyncio.subprocess.PIPE
    )  # fmt: skip
    try:
        await listener.stdout.readline()
        assert await tunnel.port_taken_by_another(other) is True
    finally:
        listener.kill()
        await listener.wait()
    assert await tunnel.port_taken_by_another(allocate_port()) is False  # nobody listens
    assert len(threads) == 2 and threading.main_thread() not in threads
    await tunnel.close(port)


LISTEN_AND_WAIT = """
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(60)
"""


async def test_fifty_concurrent_forwards_share_one_master(manager, sshd, backend):
    ports = [allocate_port() for _ in range(50)]
    endpoint = endpoint_of(sshd)
    await asyncio.gather(*(manager.add(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend)) for p in ports))
    assert len(manager.masters) == 1
    assert len(sshd.session_pids()) == 1, "one connection to the node carries all forwards"
    answers = await asyncio.gather(*(fetch(p) for p in ports))
    assert set(answers) == {f"hello from {backend}\n"}
    await asyncio.gather(*(manager.remove(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend)) for p in ports))


async def test_killed_master_comes_back_with_its_forwards(manager, sshd, backend):
    ports = [allocate_port() for _ in range(5)]
    endpoint = endpoint_of(sshd)
    for p in ports:
        await manager.add(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend))
    # kill the connection: the ssh client process, or (asyncssh) the node's side of the session
    victim = ssh_masters(manager.directory) if manager.backend == "openssh" else sshd.session_pids()
    (pid,) = victim
    os.kill(pid, signal.SIGKILL)

    async def all_flow_again():
        return all([await fetch(p) == f"hello from {backend}\n" for p in ports])

    await eventually(all_flow_again)
    # the forwards flow as soon as ssh re-added them; the restore is counted when it returns
    await eventually(lambda: asyncio.sleep(0, manager.restores >= 1))


async def test_sshd_restart_heals_the_tunnel(manager, sshd, backend):
    port = allocate_port()
    await manager.add(endpoint_of(sshd), Forward("L", "127.0.0.1", port, "127.0.0.1", backend))
    await sshd.stop()
    await asyncio.sleep(0.5)
    await sshd.start()

    async def flows():
        return await fetch(port) == f"hello from {backend}\n"

    await eventually(flows, timeout=20)


async def test_busy_port_is_a_forward_error(manager, sshd, backend):
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = blocker.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ForwardError):
            await manager.add(endpoint_of(sshd), Forward("L", "127.0.0.1", busy, "127.0.0.1", backend))
    finally:
        blocker.close()


@pytest.mark.parametrize("master_class", [ControlMaster, AsyncsshMaster])
async def test_changed_host_key_fails_loudly(tmp_path, sshd, master_class):
    known_hosts = tmp_path / "known_hosts"
    other = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} ssh-ed25519 {other}\n")
    manager = TunnelManager(
        log, directory=str(tmp_path / "ctl"), master_args={"known_hosts": str(known_hosts)}, idle_timeout=0,
        master_class=master_class,
    )  # fmt: skip
    with pytest.raises(TunnelError, match="(?i)host key"):
        await manager.add(endpoint_of(sshd), Forward("L", "127.0.0.1", allocate_port(), "127.0.0.1", 1))
    await manager.close()
    assert ssh_processes(str(tmp_path / "ctl")) == []


async def test_cancel_while_connecting_leaves_no_process(manager, sshd, backend):
    task = asyncio.ensure_future(manager.add(endpoint_of(sshd), Forward("L", "127.0.0.1", allocate_port(), "127.0.0.1", backend)))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await manager.close()
    assert ssh_processes(manager.directory) == []


async def test_remote_forward_reports_its_port(manager, sshd, backend):
    forward = Forward("R", "127.0.0.1", 0, "127.0.0.1", backend)
    allocated = await manager.add(endpoint_of(sshd), forward)
    assert 0 < allocated < 65536
    # the "remote" side (the node: here the same machine) reaches the hub-side service through it
    assert await fetch(allocated) == f"hello from {backend}\n"
    pinned = Forward("R", "127.0.0.1", allocated, "127.0.0.1", backend)
    assert manager.wants(endpoint_of(sshd), pinned)
    # a restore asks for the same port again: the server was told that one
    await manager.rebuild_node("127.0.0.1")
    assert await fetch(allocated) == f"hello from {backend}\n"
    await manager.remove(endpoint_of(sshd), pinned)
    await eventually(lambda: asyncio.sleep(0, port_is_free("127.0.0.1", allocated)))


async def test_rebuild_node_leaves_a_healthy_master_and_restores_a_broken_one(manager, sshd, backend):
    ports = [allocate_port() for _ in range(10)]
    forwards = [Forward("L", "127.0.0.1", p, "127.0.0.1", backend) for p in ports]
    for forward in forwards:
        await manager.add(endpoint_of(sshd), forward)
    (before,) = sshd.session_pids()
    # healthy: rebuilding would cut every connection through it
    assert await manager.rebuild_node("127.0.0.1") == (0, 0, 1)
    assert sshd.session_pids() == [before]
    # one forward lost behind the supervisor's back: the master is rebuilt with all ten
    (master,) = manager.masters.values()
    if manager.backend == "openssh":
        await run_argv(control_argv(master.endpoint, master.control_path, "cancel", forwards[0]))
    else:
        master.listeners.pop(forwards[0]).close()
    await eventually(lambda: asyncio.sleep(0, port_is_free("127.0.0.1", ports[0])))
    assert await manager.rebuild_node("127.0.0.1") == (10, 0, 0)
    assert sshd.session_pids() not in ([], [before]), "a new connection carries the forwards"
    assert all([await fetch(p) == f"hello from {backend}\n" for p in ports])


async def test_forwards_are_sharded_across_masters(manager, sshd, backend):
    manager.forwards_per_master = 3
    ports = [allocate_port() for _ in range(7)]
    endpoint = endpoint_of(sshd)
    await asyncio.gather(*(manager.add(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend)) for p in ports))
    assert sorted(len(m.wanted) for m in manager.masters.values()) == [1, 3, 3]
    assert len(sshd.session_pids()) == 3
    assert all([await fetch(p) == f"hello from {backend}\n" for p in ports])
    for p in ports:
        await manager.remove(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend))
    await eventually(lambda: asyncio.sleep(0, not manager.masters))


async def test_one_bad_forward_in_a_batch_fails_alone(manager, sshd, backend):
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = blocker.sockets[0].getsockname()[1]
    ports = [allocate_port() for _ in range(4)] + [busy]
    endpoint = endpoint_of(sshd)
    try:
        results = await asyncio.gather(
            *(manager.add(endpoint, Forward("L", "127.0.0.1", p, "127.0.0.1", backend)) for p in ports),
            return_exceptions=True,
        )
    finally:
        blocker.close()
    assert [isinstance(r, ForwardError) for r in results] == [False] * 4 + [True]
    assert all([await fetch(p) == f"hello from {backend}\n" for p in ports[:4]])
    assert not manager.wants(endpoint, Forward("L", "127.0.0.1", busy, "127.0.0.1", backend))


@pytest.mark.parametrize("master_class", [ControlMaster, AsyncsshMaster], ids=["openssh", "asyncssh"])
async def test_accept_new_learns_a_new_key_once_and_refuses_a_changed_one(sshd, backend, tmp_path, master_class):
    """ssh_strict_host_key_checking = "accept-new" means what OpenSSH means, with both backends."""
    known = tmp_path / "known_hosts"  # does not exist yet: the node is new

    def manager():
        return TunnelManager(
            log, directory=str(tmp_path / "ctl"), master_args={"known_hosts": str(known), "strict_host_key_checking": "accept-new"},
            start_timeout=10, check_interval=0.5, restore_attempts=1, idle_timeout=0, master_class=master_class,
        )  # fmt: skip

    first = manager()
    port = allocate_port()
    try:
        await first.add(endpoint_of(sshd), Forward("L", "127.0.0.1", port, "127.0.0.1", backend))
        assert await fetch(port) == f"hello from {backend}\n"
    finally:
        await first.close()
    learned = known.read_text()
    host_key = " ".join(open(os.path.join(sshd.dir, "host_key.pub")).read().split()[:2])
    assert learned.rstrip("\n").endswith(host_key) and learned.count("\n") == 1  # (OpenSSH may hash the name)
    # the node's key changes (a man in the middle): the learned entry no longer matches
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    known.write_text(f"[127.0.0.1]:{sshd.port} {' '.join(open(str(other) + '.pub').read().split()[:2])}\n")
    second = manager()
    try:
        with pytest.raises(TunnelError):
            await second.add(endpoint_of(sshd), Forward("L", "127.0.0.1", allocate_port(), "127.0.0.1", backend))
    finally:
        await second.close()
    assert known.read_text().count("\n") == 1, "a changed key is never learned"


async def test_a_forward_refused_on_a_fresh_master_leaves_no_master(manager, sshd, backend):
    # the port is taken: the forward fails, and the master started for it alone must not linger
    taken = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = taken.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TunnelError):
            await manager.add(endpoint_of(sshd), Forward("L", "127.0.0.1", port, "127.0.0.1", backend))
        # no master object, no ssh process, no session on the node
        await eventually(lambda: asyncio.sleep(0, not manager.masters and not ssh_processes(manager.directory) and not sshd.session_pids()))
    finally:
        taken.close()
        await taken.wait_closed()


def test_a_control_dir_path_taken_by_someone_else_is_not_used(tmp_path, monkeypatch):
    import tempfile

    from forwardbasespawner.ssh.tunnels import default_control_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ours = tmp_path / f"fbs-ssh-{os.getuid()}"
    assert default_control_dir() == str(ours)
    # another local user was first: a symlink (or a directory of theirs) where ours would be
    (tmp_path / "elsewhere").mkdir()
    ours.symlink_to(tmp_path / "elsewhere")
    assert default_control_dir() == os.path.join(os.path.expanduser("~"), ".cache", "fbs-ssh")


async def test_a_forward_claimed_after_its_adopted_master_died_is_kept(sshd, backend, tmp_path):
    """A Hub adopts a master of the previous Hub process; the master dies before the server claims
    its forward: the forward is added afresh and must not be cancelled as 'unclaimed' later."""

    def manager(grace=60):
        return TunnelManager(
            log, directory=str(tmp_path / "ctl"), master_args={"known_hosts": sshd.known_hosts},
            start_timeout=10, check_interval=0.5, restore_attempts=3, idle_timeout=0, adopt_grace=grace,
        )  # fmt: skip

    port = allocate_port()
    forward = Forward("L", "127.0.0.1", port, "127.0.0.1", backend)
    previous = manager()
    await previous.add(endpoint_of(sshd), forward)
    # the previous Hub process ends: its supervisors go, its master keeps serving
    for task in previous._supervisors.values():
        task.cancel()
    current = manager(grace=1)
    try:
        await current.adopted()
        (master,) = current.masters.values()
        assert forward in master.unclaimed and master.pid == previous.masters[master.key].pid
        os.kill(master.pid, signal.SIGKILL)
        await asyncio.wait_for(asyncio.shield(master.wait_closed()), 5)
        await current.add(endpoint_of(sshd), forward)  # the server's first poll
        await asyncio.sleep(2)  # past adopt_grace: only unclaimed forwards are cancelled
        assert await fetch(port) == f"hello from {backend}\n"
    finally:
        await current.close()
    await eventually(lambda: asyncio.sleep(0, not ssh_processes(str(tmp_path / "ctl"))))


def test_a_legacy_control_socket_must_be_a_socket_of_the_hubs_user(tmp_path):
    import socket

    from forwardbasespawner.ssh.legacy import trusted_owner

    path = str(tmp_path / "control_node1")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        assert trusted_owner(path) == os.getuid()
        plain = tmp_path / "control_node2"
        plain.write_text("")
        assert trusted_owner(str(plain)) is None  # not a socket
        if os.getuid() == 0:  # (CI) another local user's socket is never trusted
            os.chown(path, 4321, 4321)
            assert trusted_owner(path) is None
