"""OpenSSH ControlMasters against a real sshd on loopback: forwards, supervision, no leaks."""

import asyncio
import logging
import os
import signal

import pytest

from forwardbasespawner.ssh.asyncssh import AsyncsshMaster
from forwardbasespawner.ssh.openssh import ControlMaster, ForwardError, TunnelError, control_argv, master_argv
from forwardbasespawner.ssh.ports import allocate_port, port_is_free
from forwardbasespawner.ssh.spec import Endpoint, Forward
from forwardbasespawner.ssh.supervisor import TunnelManager

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
    assert os.listdir(directory) == [] if os.path.isdir(directory) else True, "a control socket was left"


def endpoint_of(sshd, **kw):
    return Endpoint(host="127.0.0.1", port=sshd.port, user=sshd.user, key=sshd.client_key, **kw)


def ssh_processes(marker):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{pid}/stat") as f:
                    zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
            except OSError:
                continue
            if not zombie and argv and argv[0].endswith(b"ssh") and any(marker.encode() in a for a in argv):
                found.append(int(pid))
    return found


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


def test_argv_builders_pass_values_as_single_arguments():
    endpoint = Endpoint(host="node1.example.org", port=2222, user="tunnel", key="/keys/id", options={"ServerAliveInterval": 15})
    argv = master_argv(endpoint, "/ctl/abc", known_hosts="/kh")
    assert argv[0] == "ssh" and argv[-2:] == ["--", "node1.example.org"]
    assert "UserKnownHostsFile=/kh" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[argv.index("-i") + 1] == "/keys/id" and argv[argv.index("-l") + 1] == "tunnel"
    assert "ServerAliveInterval=15" in argv
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
    victim = ssh_processes(manager.directory) if manager.backend == "openssh" else sshd.session_pids()
    (pid,) = victim
    os.kill(pid, signal.SIGKILL)

    async def all_flow_again():
        return all([await fetch(p) == f"hello from {backend}\n" for p in ports])

    await eventually(all_flow_again)
    assert manager.restores >= 1


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


async def test_rebuild_node_restores_everything(manager, sshd, backend):
    ports = [allocate_port() for _ in range(10)]
    for p in ports:
        await manager.add(endpoint_of(sshd), Forward("L", "127.0.0.1", p, "127.0.0.1", backend))
    (before,) = sshd.session_pids()
    restored, failed = await manager.rebuild_node("127.0.0.1")
    assert (restored, failed) == (10, 0)
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
