"""The "batch job" the UNICORE stand-in runs for UnicoreSpawner (its own process, stdlib only).

Like a JupyterLab start script on a compute node, it:

1. posts progress events to ``JUPYTERHUB_EVENTS_URL`` with the server's token
   (``JUPYTERHUB_API_TOKEN``, from the job description's Environment);
2. serves HTTP on a free loopback port: every GET answers 200 with JSON naming the UNICORE job
   (``UC_JOB_ID``) and ``JOB_LABEL``; ``GET <prefix>post-event?message=...`` makes the job post
   that event now and answers with the Hub's HTTP status;
3. POSTs ``{"service": "127.0.0.1:<port>"}`` to ``JUPYTERHUB_SETUPTUNNEL_URL``, after
   ``UNICORE_JOB_TUNNEL_DELAY`` seconds (default 0), so the Hub opens its forward;
4. prints the server's URL to stderr the way jupyter-server does, and runs until SIGTERM
   (exit code 0, or the one the stand-in wrote to ``.exit_code`` for a job that "ends by itself").

Its first argument is a marker (user and server) so tests find stray job processes.
"""

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def log(*args, stream=sys.stdout):
    print(time.strftime("%H:%M:%S"), *args, file=stream, flush=True)


def post(url, body):
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        log(f"POST {url} failed: {e}", stream=sys.stderr)
        return 0


def post_event(message, progress=50):
    status = post(os.environ["JUPYTERHUB_EVENTS_URL"], {"progress": progress, "message": message})
    log(f"event {message!r} answered {status}")
    return status


def setuptunnel_url():
    url = os.environ.get("JUPYTERHUB_SETUPTUNNEL_URL")
    if url:
        return url
    # the original base sets it too; build it from the API URL if a base does not
    parts = ["users", "setuptunnel", urllib.parse.quote(os.environ["JUPYTERHUB_USER"], safe="")]
    if os.environ.get("JUPYTERHUB_SERVER_NAME"):
        parts.append(urllib.parse.quote(os.environ["JUPYTERHUB_SERVER_NAME"], safe=""))
    return os.environ["JUPYTERHUB_API_URL"].rstrip("/") + "/" + "/".join(parts)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        path, _, query = self.path.partition("?")
        reply = {"job": os.environ.get("UC_JOB_ID", ""), "label": os.environ.get("JOB_LABEL", ""), "path": path}
        if path.endswith("/post-event"):
            message = urllib.parse.parse_qs(query).get("message", ["(no message)"])[0]
            reply["status"] = post_event(message, 100)
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def stop(signum, frame):
    code = 0
    try:
        with open(".exit_code") as f:
            code = int(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
    log(f"got signal {signum}, exiting with {code}")
    os._exit(code)


def main():
    signal.signal(signal.SIGTERM, stop)
    log(f"job {os.environ.get('UC_JOB_ID')} started for {os.environ.get('JUPYTERHUB_USER')}:{os.environ.get('JUPYTERHUB_SERVER_NAME')}")
    post_event("job: preparing the environment on the compute node", 40)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    post_event("job: starting JupyterLab", 60)
    delay = float(os.environ.get("UNICORE_JOB_TUNNEL_DELAY") or 0)
    if delay:
        log(f"waiting {delay}s before SetupTunnel")
        time.sleep(delay)
    status = post(setuptunnel_url(), {"service": f"127.0.0.1:{port}"})
    log(f"setuptunnel answered {status}", stream=sys.stderr)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    log(f"Jupyter Server is running at: http://127.0.0.1:{port}{prefix}", stream=sys.stderr)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
