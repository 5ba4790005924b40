"""The start script RemoteSSHSpawner runs on the remote host: Python 3 and its standard library only.

    python3 -I remote_start.py start -- jupyterhub-singleuser [args...]
        reads the server's environment as JSON on stdin, starts a detached supervisor, prints its PID
    python3 -I remote_start.py status PID      exit 0 while it runs, 1 when not
    python3 -I remote_start.py stop PID        stops it and its server

RemoteSSHSpawner does not need this file on the remote host: by default it sends this source over
the ssh session (``python3 -I -c ...``). It never imports anything but the standard library.

The supervisor posts progress events to JUPYTERHUB_EVENTS_URL, starts the server on a free local
port, waits until it answers, then tells the Hub where it listens (JUPYTERHUB_SETUPTUNNEL_URL). The
API token arrives on stdin, never on a command line.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: the 3xx answer becomes an HTTPError, the token goes nowhere else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url, body, token):
    """POST ``body`` as JSON with the token; the HTTP status, or 0 when the Hub was not reached."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def supervise(env, command):
    """Run in the detached child: report, start the server, wait for it, report where it is."""
    token = env["JUPYTERHUB_API_TOKEN"]
    started = time.monotonic()

    def event(progress, message, **extra):
        post(env["JUPYTERHUB_EVENTS_URL"], {"progress": progress, "message": message, **extra}, token)

    event(20, f"Preparing the server on {socket.gethostname()}")
    delay = float(env.pop("FBS_START_DELAY", "0") or 0)
    if delay:
        event(25, f"Waiting {delay:.0f} s for resources (a slow start, to try cancel)")
        time.sleep(delay)
    port = free_port()
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    env["JUPYTERHUB_SERVICE_URL"] = f"http://127.0.0.1:{port}{prefix}"
    event(40, "Starting the Jupyter server")
    server = subprocess.Popen(command, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    while not listening(port):
        if server.poll() is not None:
            event(100, f"The Jupyter server exited with code {server.returncode} before it listened", failed=True)
            return 1
        time.sleep(0.1)
    event(70, f"Jupyter server listening after {time.monotonic() - started:.2f} s; connecting it to the Hub")
    status = post(env["JUPYTERHUB_SETUPTUNNEL_URL"], {"service": f"127.0.0.1:{port}"}, token)
    if status != 204:
        event(100, f"The Hub could not connect to the server (SetupTunnel answered {status})", failed=True)
        server.terminate()
        return 1
    event(90, "Connected; the Hub checks the server now")
    return server.wait()


def start(command):
    env = json.load(sys.stdin)
    if not isinstance(env, dict) or not command:
        print("usage: start -- COMMAND ... with the environment as JSON on stdin", file=sys.stderr)
        return 2
    child = os.fork()
    if child:
        print(child, flush=True)
        return 0
    # the child: its own session, detached from ssh, so the server outlives the ssh channel
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    code = 1
    try:
        code = supervise(env, command)
    finally:
        os._exit(code)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def group_alive(pgid):
    """Whether a process of the group ``pgid`` still runs: the server too, not only the
    supervisor that leads the group (zombies do not count where /proc tells)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return True
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop(pid):
    """SIGTERM the server's process group, SIGKILL it after 5 s; 0 once no process of it runs."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 2)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pid):
                return 0
            time.sleep(0.1)
    return 0 if not group_alive(pid) else 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "start" and argv[1] == "--":
        return start(argv[2:])
    if len(argv) == 2 and argv[0] in ("status", "stop") and argv[1].isdigit():
        pid = int(argv[1])
        if argv[0] == "status":
            return 0 if alive(pid) else 1
        return stop(pid)
    print(__doc__ or "usage: start -- COMMAND ... | status PID | stop PID", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
