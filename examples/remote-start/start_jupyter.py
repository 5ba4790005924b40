#!/usr/bin/env python3
"""start_jupyter.py COMMAND [ARGS...]: start a single-user server for JupyterHub on this host.

The Python twin of start-jupyter.sh, standard library only (any Python 3.8+ on the remote host).
Run by a batch job (or over ssh) with the environment a ForwardBaseSpawner gives its server:
JUPYTERHUB_API_TOKEN, JUPYTERHUB_EVENTS_URL, JUPYTERHUB_SETUPTUNNEL_URL, JUPYTERHUB_API_URL,
JUPYTERHUB_SERVICE_URL and, with a server → hub tunnel, JUPYTERHUB_HUB_TUNNEL_PORT. It posts
progress events, starts COMMAND on a free port, waits until it listens, then calls SetupTunnel.

    FBS_LISTEN_HOST   the address the server listens on (default 0.0.0.0)
    FBS_SERVICE_HOST  how the jump node reaches this host (default: the fully qualified host name)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def hub_url(url):
    """``url``, through the server → hub tunnel when the Hub made one."""
    port = os.environ.get("JUPYTERHUB_HUB_TUNNEL_PORT")
    if not port:
        return url
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(scheme="http", netloc=f"127.0.0.1:{port}"))


def post(url, body):
    """POST ``body`` as JSON with the server's token; the HTTP status (0: no answer)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


class Cancelled(Exception):
    """The Hub answered 409: it no longer waits for this server."""


def event(progress, message, failed=False):
    body = {"progress": progress, "message": message}
    if failed:
        body["failed"] = True
    status = post(hub_url(os.environ["JUPYTERHUB_EVENTS_URL"]), body)
    if status == 409:
        raise Cancelled()
    if status != 204:
        print(f"event not stored: HTTP {status}", file=sys.stderr)


def stop(server):
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def main(command):
    for name in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_EVENTS_URL", "JUPYTERHUB_SETUPTUNNEL_URL"):
        if not os.environ.get(name):
            print(f"{name} is not set", file=sys.stderr)
            return 2
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_ACTIVITY_URL"):
        if os.environ.get(name):
            os.environ[name] = hub_url(os.environ[name])
    server = None

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        event(20, f"Preparing the server on {socket.gethostname()}")
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        listen_host = os.environ.get("FBS_LISTEN_HOST", "0.0.0.0")
        service_host = os.environ.get("FBS_SERVICE_HOST") or socket.getfqdn()
        prefix = urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://x/")).path
        os.environ["JUPYTERHUB_SERVICE_URL"] = f"http://{listen_host}:{port}{prefix}"

        event(40, "Starting the Jupyter server")
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        probe = "127.0.0.1" if listen_host == "0.0.0.0" else listen_host
        while not listening(probe, port):
            if server.poll() is not None:
                event(100, f"The Jupyter server exited with code {server.returncode} before it listened", failed=True)
                return 1
            time.sleep(0.2)

        event(70, f"Jupyter listens on port {port}; connecting it to the Hub")
        status = post(hub_url(os.environ["JUPYTERHUB_SETUPTUNNEL_URL"]), {"service": f"{service_host}:{port}"})
        if status == 409:
            raise Cancelled()
        if status == 422:
            print("the Hub could not open the tunnel; it has ended the start", file=sys.stderr)
            return 1
        if status != 204:
            event(100, f"SetupTunnel answered HTTP {status}", failed=True)
            return 1
        event(90, "Connected; the Hub checks the server now")
        return server.wait()
    except Cancelled:
        print("the Hub no longer waits for this server (cancelled or stopped)", file=sys.stderr)
        return 0
    finally:
        if server is not None:
            stop(server)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
