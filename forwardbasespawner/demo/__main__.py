"""The demo: a real JupyterHub spawning real Jupyter servers on a "remote" host, reached only
through an SSH tunnel.

    python -m forwardbasespawner.demo [--ip 127.0.0.1] [--port 8000] [--allow-root]

The remote host is a private OpenSSH sshd on loopback with its own keys; RemoteSSHSpawner starts
``jupyterhub-singleuser`` there over SSH, the start script reports its progress to the spawn page
and calls SetupTunnel, and the Hub reaches the server through an OpenSSH forward. Ctrl-C stops
every server, the Hub, the proxy and the sshd.

Every run has its own random password (printed at start-up). The demo runs every user's server
under the one local account (``remote_shared_account``): it is for one person on their own
machine, and it listens on loopback unless told otherwise. It refuses to run as root (the servers
would run as root) unless ``--allow-root`` is given.
"""

import argparse
import asyncio
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap

from .sshhost import SSHServer, free_port


def new_password():
    """A fresh password for this run (the demo's users all share it)."""
    return secrets.token_urlsafe(12)


def is_loopback(ip):
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def find_proxy():
    """configurable-http-proxy: on PATH, or in node_modules/.bin of the current directory."""
    local = os.path.join(os.getcwd(), "node_modules", ".bin", "configurable-http-proxy")
    return shutil.which("configurable-http-proxy") or (local if os.path.exists(local) else None)


def hub_config(directory, ip, port, sshd, proxy, password, allow_root=False):
    singleuser = os.path.join(os.path.dirname(sys.executable), "jupyterhub-singleuser")
    server_command = [singleuser] + (["--allow-root"] if allow_root and os.getuid() == 0 else [])
    try:
        import jupyterlab  # noqa: F401

        default_url = "/lab"
    except ImportError:
        default_url = "/api/status"
    return textwrap.dedent(f"""
        c = get_config()  # noqa
        c.JupyterHub.ip = {ip!r}
        c.JupyterHub.port = {port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {free_port()}
        c.JupyterHub.db_url = "sqlite:///{directory}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = "{directory}/cookie_secret"
        c.JupyterHub.pid_file = "{directory}/hub.pid"
        c.ConfigurableHTTPProxy.command = [{proxy!r}]
        c.ConfigurableHTTPProxy.pid_file = "{directory}/proxy.pid"
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
        c.JupyterHub.authenticator_class = "dummy"
        c.DummyAuthenticator.password = {password!r}
        c.Authenticator.allow_all = True
        c.Authenticator.admin_users = {{"admin"}}
        c.JupyterHub.spawner_class = "forwardbasespawner.remotessh.RemoteSSHSpawner"
        c.RemoteSSHSpawner.remote_host = "127.0.0.1"
        c.RemoteSSHSpawner.remote_port = {sshd.port}
        c.RemoteSSHSpawner.remote_username = {sshd.user!r}
        # one local account for every demo user: fine for one person on their own machine only
        c.RemoteSSHSpawner.remote_shared_account = True
        c.RemoteSSHSpawner.remote_key = {sshd.client_key!r}
        c.RemoteSSHSpawner.ssh_known_hosts = {sshd.known_hosts!r}
        c.RemoteSSHSpawner.ssh_control_dir = "{directory}/ctl"
        c.RemoteSSHSpawner.ssh_master_idle_timeout = 5
        # the start script's source goes over the ssh session: nothing is installed on the "remote"
        c.RemoteSSHSpawner.remote_python = {sys.executable!r}
        c.RemoteSSHSpawner.server_command = {server_command!r}
        c.RemoteSSHSpawner.offer_slow_start = True
        c.RemoteSSHSpawner.slow_start_seconds = 30
        c.RemoteSSHSpawner.show_first_default_event = False
        c.Spawner.default_url = {default_url!r}
        c.Spawner.http_timeout = 60
        c.Spawner.start_timeout = 120
        c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
    """)


async def wait_for_hub(url, hub, timeout=60):
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout * 10)):
            if hub.poll() is not None:
                raise RuntimeError(f"JupyterHub exited with {hub.returncode}")
            try:
                async with session.get(f"{url}/hub/api/") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("JupyterHub did not come up")


async def run(args):
    if os.getuid() == 0 and not args.allow_root:
        sys.exit("the demo would run Jupyter servers as root: run it as an ordinary user, or pass --allow-root")
    if not is_loopback(args.ip):
        print(
            f"WARNING: the demo listens on {args.ip}, not on loopback: anyone who can reach it and learns the "
            "password can run code as this account. Use it on a trusted network only.",
            file=sys.stderr,
            flush=True,
        )
    password = new_password()
    proxy = find_proxy()
    if proxy is None:
        sys.exit("configurable-http-proxy was not found (npm install configurable-http-proxy, or run `make demo`)")
    if not os.path.exists("/usr/sbin/sshd"):
        sys.exit("the demo's remote host is an OpenSSH sshd: install openssh-server (or run `make demo`)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with tempfile.TemporaryDirectory(prefix="fbs-demo-") as directory:
        sshd = SSHServer(os.path.join(directory, "remote-host"))
        await sshd.start()
        port = args.port or free_port()
        url = f"http://{args.ip}:{port}"
        with open(os.path.join(directory, "jupyterhub_config.py"), "w") as f:
            f.write(hub_config(directory, args.ip, port, sshd, proxy, password, allow_root=args.allow_root))
        log = open(os.path.join(directory, "jupyterhub.log"), "ab")
        hub = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", os.path.join(directory, "jupyterhub_config.py")],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            await wait_for_hub(url, hub)
            print(
                textwrap.dedent(f"""
                forwardbasespawner demo is running.

                  Open      {url}/hub/login
                  Log in    as any user name, password: {password}  (new for every run)
                  Remote    sshd on 127.0.0.1:{sshd.port} (servers start there over SSH)
                  Log       {directory}/jupyterhub.log

                Tick "Slow start" on the spawn form to try cancel. Press Ctrl-C to stop.
            """),
                flush=True,
            )
            await stop.wait()
        finally:
            print("Stopping servers, JupyterHub, the proxy and the remote host ...", flush=True)
            if hub.poll() is None:
                hub.send_signal(signal.SIGTERM)  # JupyterHub stops every server and its proxy
                for _ in range(300):
                    if hub.poll() is not None:
                        break
                    await asyncio.sleep(0.1)
                else:
                    hub.kill()
                    hub.wait()
            await sshd.stop()
            print("Stopped.", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m forwardbasespawner.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="127.0.0.1", help="address the proxy listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port of the proxy (default 8000; 0 = any free port)")
    parser.add_argument("--allow-root", action="store_true", help="run even as root (the servers then run as root)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
