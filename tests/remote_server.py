"""A stand-in for a remote single-user server and its start script (run as its own process).

Like a batch job's start script it posts progress events to the Hub (JUPYTERHUB_EVENTS_URL, with
the server's own token), then serves HTTP on its port: every GET answers 200 with JSON naming
this process's marker, so a test can tell which server answered through the proxy.
Behaviour comes from FBS_SIM_* environment variables set by the test spawner.
"""

import json
import os
import sys
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def hub_url(variable):
    """The URL in ``variable``, through the server → hub tunnel when the Hub made one."""
    url = os.environ[variable]
    port = os.environ.get("JUPYTERHUB_HUB_TUNNEL_PORT")
    if port:
        parts = urllib.parse.urlsplit(url)
        url = urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
    return url


def post_event(event, url_variable="JUPYTERHUB_EVENTS_URL"):
    request = urllib.request.Request(
        hub_url(url_variable),
        data=json.dumps(event).encode(),
        method="POST",
        headers={
            "Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"marker": os.environ["FBS_SIM_MARKER"], "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    count = int(os.environ.get("FBS_SIM_EVENTS", "0"))
    delay = float(os.environ.get("FBS_SIM_EVENT_DELAY", "0"))
    for i in range(count):
        time.sleep(delay)
        via = " via the hub tunnel" if os.environ.get("JUPYTERHUB_HUB_TUNNEL_PORT") else ""
        post_event({"progress": 10 + i, "message": f"remote step {i + 1} of {count}{via}"})
    if os.environ.get("FBS_SIM_FAIL"):
        time.sleep(delay)
        post_event({"progress": 100, "failed": True, "message": os.environ["FBS_SIM_FAIL"]})
        time.sleep(3600)  # a failed job lingers until the hub stops it
        return
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["FBS_SIM_PORT"])), Handler)
    if os.environ.get("FBS_SIM_SETUPTUNNEL"):
        # like a batch job that learns its node only now: tell the Hub where the server listens
        status = post_event({"service": f"127.0.0.1:{os.environ['FBS_SIM_PORT']}"}, "JUPYTERHUB_SETUPTUNNEL_URL")
        print(f"setuptunnel answered {status}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
