"""remote_start.py on a remote host that has nothing but Python 3: run by a bare interpreter
(``python3 -I``, no JupyterHub, no forwardbasespawner, no site-packages), from the file and as
RemoteSSHSpawner sends it (its source inline). And it never follows a redirect with the token.
"""

import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from forwardbasespawner import remote_start
from forwardbasespawner.remotessh import inline_python_argv, remote_start_source
from tests.processes import processes_with

# the system's interpreter, not the venv's: it has no JupyterHub. -I: isolated, -S: not even site
BARE = ["/usr/bin/python3", "-I", "-S"] if os.path.exists("/usr/bin/python3") else [sys.executable, "-I", "-S"]


def _bare_has_no_jupyterhub():
    probe = subprocess.run([*BARE, "-c", "import jupyterhub"], capture_output=True, cwd="/")
    return probe.returncode != 0


@pytest.fixture
def scratch():
    """A fresh empty directory as the cwd: nothing of the repository on the path."""
    with tempfile.TemporaryDirectory() as d:
        yield d


def test_the_bare_interpreter_really_is_bare(scratch):
    assert _bare_has_no_jupyterhub()
    probe = subprocess.run([*BARE, "-c", "import forwardbasespawner"], capture_output=True, cwd=scratch)
    assert probe.returncode != 0 and b"ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("how", ["file", "inline"])
def test_status_and_usage_run_on_a_bare_interpreter(scratch, how):
    argv = [*BARE, remote_start.__file__] if how == "file" else inline_python_argv(BARE[0], remote_start_source())
    if how == "inline":
        argv = [BARE[0], "-S", *argv[1:]]
    alive = subprocess.run([*argv, "status", str(os.getpid())], capture_output=True, cwd=scratch)
    assert alive.returncode == 0, alive.stderr
    gone = subprocess.run([*argv, "status", "999999999"], capture_output=True, cwd=scratch)
    assert gone.returncode == 1, gone.stderr
    usage = subprocess.run([*argv, "nonsense"], capture_output=True, cwd=scratch)
    assert usage.returncode == 2 and b"status PID" in usage.stderr and b"Traceback" not in usage.stderr


def test_inline_command_has_no_newline_or_quote_for_the_remote_shell():
    argv = inline_python_argv("python3", remote_start_source())
    command = " ".join(shlex.quote(w) for w in [*argv, "status", "1"])
    assert "\n" not in command and argv[1] == "-I"
    # one quoted word for the code: a POSIX shell gives it back exactly
    assert shlex.split(command)[3] == argv[3]


class _Recorder(BaseHTTPRequestHandler):
    """Records every request (path, Authorization) and answers as ``self.server.answer`` says."""

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        code, location = self.server.answer(self.path)
        self.send_response(code)
        if location:
            self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def _serve(answer):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []
    server.answer = answer
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_never_carries_the_token_elsewhere(scratch, code):
    """The Hub URL answers with a redirect to another host:port; the start script must not follow."""
    other = _serve(lambda path: (204, None))
    hub = _serve(lambda path: (code, f"http://127.0.0.1:{other.server_address[1]}/stolen"))
    try:
        code_text = (
            f"import runpy,sys; m=runpy.run_path({remote_start.__file__!r}); "
            f"print(m['post']('http://127.0.0.1:{hub.server_address[1]}/hub/api/x', {{'a': 1}}, 'SECRET'))"
        )
        result = subprocess.run([*BARE, "-c", code_text], capture_output=True, cwd=scratch, timeout=60)
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) == code  # the redirect is an answer, not a hop
        assert hub.seen == [("/hub/api/x", "token SECRET")]
        assert other.seen == []
    finally:
        hub.shutdown()
        other.shutdown()


async def test_start_reports_and_sets_up_the_tunnel_from_a_bare_interpreter(scratch):
    """The whole start on a bare interpreter: the supervisor posts events, starts the "server"
    (here: python3 -m http.server on the port it was given), and calls SetupTunnel."""
    posts = []

    def answer(path):
        posts.append(path)
        return 204, None

    hub = _serve(answer)
    base = f"http://127.0.0.1:{hub.server_address[1]}/hub/api"
    marker = f"fbs-bare-{os.getpid()}"
    env = {
        "JUPYTERHUB_API_TOKEN": "SECRET",
        "JUPYTERHUB_EVENTS_URL": f"{base}/users/progress/events/u/",
        "JUPYTERHUB_SETUPTUNNEL_URL": f"{base}/users/setuptunnel/u/",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/u/",
    }
    # the "server": binds the port from JUPYTERHUB_SERVICE_URL, as jupyterhub-singleuser does
    server = ("import os,http.server,urllib.parse;"
              "p=urllib.parse.urlsplit(os.environ['JUPYTERHUB_SERVICE_URL']).port;"
              "http.server.HTTPServer(('127.0.0.1',p),http.server.BaseHTTPRequestHandler).serve_forever()")  # fmt: skip
    argv = inline_python_argv(BARE[0], remote_start_source())
    try:
        started = subprocess.run(
            [*argv, "start", "--", BARE[0], "-I", "-c", server, marker],
            input=json.dumps(env).encode(), capture_output=True, cwd=scratch, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        pid = int(started.stdout)
        for _ in range(600):
            if any("/setuptunnel/" in p for p, _ in hub.seen):
                break
            await asyncio.sleep(0.05)
        paths = [p for p, _ in hub.seen]
        assert any("/setuptunnel/" in p for p in paths), paths
        assert all(auth == "token SECRET" for _, auth in hub.seen)
        status = subprocess.run([*argv, "status", str(pid)], cwd=scratch)
        assert status.returncode == 0
        stop = subprocess.run([*argv, "stop", str(pid)], cwd=scratch, timeout=60)
        assert stop.returncode == 0
    finally:
        hub.shutdown()
    assert processes_with(marker) == []
