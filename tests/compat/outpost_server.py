"""The single-user server a stand-in Outpost "starts remotely" (its own process, tests only).

Started by ``outpost_service.py`` with the environment the Hub sent to the Outpost (so it holds
the server's ``JUPYTERHUB_API_TOKEN``). It serves HTTP on ``FBS_OUTPOST_PORT``: every GET answers
200 with JSON naming this process's marker (argv[1]), so a test can tell which server answered
through the proxy and the SSH tunnel. ``POST .../api/shutdown`` (as Jupyter Server offers) makes
it answer and then exit by itself with status 0: a job that ends on its own.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._reply(200, {"marker": sys.argv[1], "path": self.path, "pid": os.getpid()})

    def do_POST(self):
        if self.path.rstrip("/").endswith("/api/shutdown"):
            self._reply(200, {"marker": sys.argv[1], "shutting_down": True})
            threading.Thread(target=self.server.shutdown, daemon=True).start()
        else:
            self._reply(404, {"message": "not found"})

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["FBS_OUTPOST_PORT"])), Handler)
    server.daemon_threads = True
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
