"""A private OpenSSH sshd on loopback for the tests and benchmarks, with its own host and client keys
in a directory of its own (Debian's openssh-server: only the binary, apt starts nothing); and
``free_port()``. It began as a copy of the demo's remote host (forwardbasespawner/demo/sshhost.py);
the tests own theirs, so that the demo can change without changing the tests' sshd."""

import asyncio
import getpass
import os
import signal
import socket
import subprocess
import textwrap

from tests.processes import processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SSHD = "/usr/sbin/sshd"


class SSHServer:
    def __init__(self, directory):
        self.dir = str(directory)
        self.port = free_port()
        self.user = getpass.getuser()
        self.client_key = os.path.join(self.dir, "client_key")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.process = None

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        for name in ("host_key", "client_key"):
            path = os.path.join(self.dir, name)
            if not os.path.exists(path):
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        with open(os.path.join(self.dir, "authorized_keys"), "w") as f:
            f.write(open(self.client_key + ".pub").read())
        host_public = open(os.path.join(self.dir, "host_key.pub")).read().split()[:2]
        with open(self.known_hosts, "w") as f:
            f.write(f"[127.0.0.1]:{self.port} {' '.join(host_public)}\n")
        with open(os.path.join(self.dir, "sshd_config"), "w") as f:
            f.write(
                textwrap.dedent(f"""\
                ListenAddress 127.0.0.1
                Port {self.port}
                HostKey {self.dir}/host_key
                PidFile {self.dir}/sshd.pid
                AuthorizedKeysFile {self.dir}/authorized_keys
                StrictModes no
                UsePAM no
                PermitRootLogin prohibit-password
                PasswordAuthentication no
                KbdInteractiveAuthentication no
                PubkeyAuthentication yes
                AllowTcpForwarding yes
                PermitListen any
                PermitOpen any
                GatewayPorts no
                MaxSessions 1000
                MaxStartups 1000:30:2000
                LogLevel ERROR
                """)
            )

    def add_forced_command_key(self, name, command):
        """A new client key that can only run ``command`` on this node (its argv arrives in
        SSH_ORIGINAL_COMMAND), as a node's forced-command tunnel script is installed."""
        path = os.path.join(self.dir, name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        with open(os.path.join(self.dir, "authorized_keys"), "a") as f:
            f.write(f'command="{command}",no-pty {open(path + ".pub").read()}')
        return path

    async def start(self):
        if not os.path.exists(os.path.join(self.dir, "sshd_config")):
            self.prepare()
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", os.path.join(self.dir, "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "sshd.log"), "ab"),
            # its own session: a Ctrl-C in a terminal must not end it before the Hub has stopped
            # the servers on it (it is stopped last, by PID)
            start_new_session=True,
        )  # fmt: skip
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def session_pids(self):
        """PIDs of the per-connection sshd processes (children of the listener)."""
        if self.process is None:
            return []
        return [p.pid for p in processes(lambda p: p.ppid == self.process.pid)]

    async def stop(self):
        """Stop the listener and every connection, as a reboot of the node would."""
        if self.process is None:
            return
        sessions = self.session_pids()
        self.process.terminate()
        self.process.wait(10)
        for pid in sessions:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process = None

    async def restart(self):
        await self.stop()
        await self.start()
