"""A stand-in for the JupyterHub Outpost REST service (tests only), as OutpostSpawner 2.2.13 uses it.

It runs in the test's event loop (aiohttp, 127.0.0.1, a free port) so tests can look at what it
was asked and what it answered. The "remote system" is a local process per start
(``outpost_server.py``), started with the environment the Hub sent, so it holds the server's token.

API, as the real service (``kreuzert/jupyterhub-outpost``, ``project/app/api/services.py``):

- ``POST {base}/services`` with ``{name, env, user_options, misc, certs, internal_trust_bundles}``.
  Sync: start the job, forward its progress events to ``JUPYTERHUB_EVENTS_URL`` with the server's
  own token, answer 200 ``{"service": "127.0.0.1:<port>"}`` once it listens.
  ``execution-type: async``: answer 202 ``{"service": ""}`` at once, start in the background and
  forward events; as the real service gives the Hub no address in this mode, the remote side
  reports it through ``JUPYTERHUB_SETUPTUNNEL_URL`` (here the service does that for the job).
  A start that fails in the background is reported as a failed event whose ``html_message``
  carries the traceback (as the real ``async_start`` does), and the job is removed.
  Errors answer 419 ``{module, class, traceback, args, kwargs}`` (the real exception handler).
- ``GET {base}/services/{name}/{start_id}``: ``{"status": null}`` while the job runs, its exit
  status after it ended; 404 for an unknown (removed) job.
- ``DELETE {base}/services/{name}/{start_id}``: kill the job (by PID) and forget it; 404 if unknown.

Scenarios come from ``user_options`` (what the user asked for; Outpost forwards them):

- ``scenario``: ``"ok"`` (default); ``"refuse"``: 419 at once (``refuse_message``);
  ``"fail"``: (async) events, then a failed event with a traceback longer than 4,096 characters;
  ``"queued"``: (async) the job is started but never reports an address (a queued batch job);
  ``"hold"``: (sync) the POST is answered only when the test releases the server's gate, or not at
  all when the job is deleted first.
- ``events``: list of progress messages the remote side sends; ``kube``: send them as KubeSpawner
  does (``raw_event``, the remote Hub's own "Server requested" first).

``gate(server_name)`` returns an :class:`asyncio.Event` the next start of that server waits for
(after its process started, before its events): tests open the progress stream first.
"""

import asyncio
import base64
import json
import os
import signal
import sys
import traceback
import uuid
from datetime import datetime, timezone

import aiohttp
from aiohttp import web

from tests.processes import process_alive
from tests.sshd import free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER_SCRIPT = os.path.join(HERE, "outpost_server.py")
CREDENTIALS = ("jupyterhub", "outpost-secret")
BASIC_AUTH = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()


def kube_raw_event(pod, reason, message, type_="Normal"):
    """A Kubernetes Event as KubeSpawner's event reflector keeps it (camelCase JSON, nulls included)."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {
            "name": f"{pod}.{uuid.uuid4().hex[:16]}",
            "namespace": "outpost",
            "uid": str(uuid.uuid4()),
            "resourceVersion": "48213",
            "creationTimestamp": now,
            "managedFields": [{"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": now}],
        },
        "involvedObject": {
            "kind": "Pod", "namespace": "outpost", "name": pod, "uid": str(uuid.uuid4()),
            "apiVersion": "v1", "resourceVersion": "48200", "fieldPath": "spec.containers{notebook}",
        },
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "worker-1"},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": type_,
        "eventTime": None,
        "series": None,
        "action": None,
        "related": None,
        "reportingComponent": "kubelet",
        "reportingInstance": "worker-1",
    }  # fmt: skip


class ApiException(Exception):
    """Named and placed as the Kubernetes client's, so the traceback reads like a real one."""


ApiException.__module__ = "kubernetes_asyncio.client.exceptions"


def long_traceback_error(pod):
    """An exception with the traceback text a real failed KubeSpawner start produces (> 4,096 chars)."""
    body = json.dumps({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": f'pods "{pod}" is forbidden: exceeded quota: outpost-quota, requested: '
                   + ", ".join(f"limits.nvidia.com/gpu-{i}=1" for i in range(160))
                   + ", used: limits.cpu=64, limited: limits.cpu=64",
        "details": {"name": pod, "kind": "pods"},
    })  # fmt: skip

    def create_namespaced_pod():
        raise ApiException(
            f"(403)\nReason: Forbidden\nHTTP response headers: <CIMultiDictProxy('Audit-Id': '{uuid.uuid4()}')>\nHTTP response body: {body}\n"
        )

    def make_pod():
        try:
            create_namespaced_pod()
        except ApiException as e:
            raise RuntimeError(f"Could not create pod {pod}") from e

    try:
        make_pod()
    except RuntimeError as e:
        return e, traceback.format_exc()


class Deleted(Exception):
    """The job was deleted (DELETE) while its start ran."""


class Job:
    def __init__(self, body, async_mode):
        self.name = body.get("name", "")
        self.env = dict(body.get("env") or {})
        self.user_options = dict(body.get("user_options") or {})
        self.misc = dict(body.get("misc") or {})
        self.start_id = str(self.user_options.get("start_id", "0"))
        self.user = self.env.get("JUPYTERHUB_USER", "")
        self.async_mode = async_mode
        self.scenario = self.user_options.get("scenario", "ok")
        self.marker = f"fbs-outpost-{self.user}-{self.name or 'default'}-{uuid.uuid4().hex}"
        self.port = 0
        self.proc = None
        self.task = None
        self.deleted = asyncio.Event()

    @property
    def key(self):
        return (self.name, self.start_id)

    @property
    def pid(self):
        return self.proc.pid if self.proc else 0

    def running(self):
        return self.proc is not None and self.proc.returncode is None and process_alive(self.proc.pid)


class OutpostService:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/services/"
        self.jobs = {}  # (name, start_id) -> Job, while the "Outpost database" has it
        self.all_jobs = []  # every job ever started, for the final cleanup
        self.requests = []  # {"method", "name", "start_id", "async", "status"} of every request
        self.posts = []  # {"kind", "user", "name", "start_id", "body", "status"} of every call to the Hub
        self.errors = []  # exceptions in background tasks (a test may assert there are none)
        self._gates = {}
        self._runner = None
        self._session = None

    # ------------------------------------------------------------------ life cycle
    async def start(self):
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession()

    async def stop(self):
        for job in self.all_jobs:
            if job.task and not job.task.done():
                job.task.cancel()
            await self._kill(job)
        if self._runner:
            await self._runner.cleanup()
        if self._session:
            await self._session.close()

    # ------------------------------------------------------------------ for tests
    def gate(self, server_name):
        """The next start of ``server_name`` waits for this event (after its process started)."""
        gate = self._gates[server_name] = asyncio.Event()
        return gate

    def forget_gate(self, server_name):
        """Drop a gate no start has taken (e.g. the start failed before it got there)."""
        self._gates.pop(server_name, None)

    def requests_for(self, method, name, start_id=None):
        return [r for r in self.requests if r["method"] == method and r["name"] == name and (start_id is None or r["start_id"] == start_id)]

    def posts_for(self, name, start_id=None, kind=None):
        return [
            p
            for p in self.posts
            if p["name"] == name and (start_id is None or p["start_id"] == start_id) and (kind is None or p["kind"] == kind)
        ]

    def job_for(self, name):
        """The newest job started for server ``name`` (also after it was deleted)."""
        jobs = [j for j in self.all_jobs if j.name == name]
        return jobs[-1] if jobs else None

    # ------------------------------------------------------------------ HTTP
    async def _dispatch(self, request):
        if request.headers.get("Authorization") != BASIC_AUTH:
            return web.json_response({"detail": "Not authenticated"}, status=401)
        # OutpostSpawner asks for {base}/services/{name}/{start_id}; the default server's name is ""
        parts = request.raw_path.split("?", 1)[0].split("/")
        if len(parts) < 2 or parts[1] != "services":
            return web.json_response({"detail": "Not Found"}, status=404)
        rest = parts[2:]
        if request.method == "POST" and rest in ([], [""]):
            return await self._post(request)
        if len(rest) == 2 and request.method in ("GET", "DELETE"):
            name, start_id = rest
            if request.method == "GET":
                return await self._get(request, name, start_id)
            return await self._delete(request, name, start_id)
        return web.json_response({"detail": "Method Not Allowed"}, status=405)

    def _record(self, method, name, start_id, request, status):
        entry = {"method": method, "name": name, "start_id": start_id, "status": status,
                 "async": request.headers.get("execution-type") == "async"}  # fmt: skip
        self.requests.append(entry)
        return entry

    def _error(self, exc_or_message, status=419):
        """The real service's answer to an exception: 419 with what OutpostSpawner shows."""
        if isinstance(exc_or_message, BaseException):
            e, tb = exc_or_message, "".join(traceback.format_exception(exc_or_message))
        else:
            e = Exception(exc_or_message)
            tb = f'Traceback (most recent call last):\n  File "/src/project/app/api/services.py", line 262, in add_service\nException: {exc_or_message}\n'
        body = {"module": getattr(e, "__module__", ""), "class": e.__class__.__name__, "traceback": tb,
                "args": [str(a) for a in e.args], "kwargs": {}}  # fmt: skip
        return web.json_response(body, status=status)

    async def _post(self, request):
        body = await request.json()
        job = Job(body, request.headers.get("execution-type", "sync") == "async")
        entry = self._record("POST", job.name, job.start_id, request, None)
        if job.scenario == "refuse":
            message = job.user_options.get(
                "refuse_message", f"{job.name} - Start with flavor gpu for jupyterhub not allowed. Maximum (0) already reached."
            )
            entry["status"] = 419
            return self._error(message)
        self.jobs[job.key] = job
        self.all_jobs.append(job)
        if job.async_mode:
            job.task = asyncio.ensure_future(self._async_start(job))
            entry["status"] = 202
            return web.json_response({"service": ""}, status=202)
        job.task = asyncio.ensure_future(self._start_job(job))
        try:
            service = await job.task
        except Deleted:
            entry["status"] = 419
            return self._error(f"Start of {job.name} was cancelled.")
        except Exception as e:
            self.jobs.pop(job.key, None)
            await self._kill(job)
            entry["status"] = 419
            return self._error(e)
        entry["status"] = 200
        return web.json_response({"service": service}, status=200)

    async def _get(self, request, name, start_id):
        job = self.jobs.get((name, start_id))
        if job is None:
            self._record("GET", name, start_id, request, 404)
            return web.json_response({"detail": f"Service {name} ({start_id}) not found"}, status=404)
        if job.proc is None or job.running():
            status = None
        else:
            code = job.proc.returncode
            status = 0 if code is None else code  # reaped or not: it is gone
        self._record("GET", name, start_id, request, 200)
        return web.json_response({"status": status, "logs": []}, status=200)

    async def _delete(self, request, name, start_id):
        job = self.jobs.pop((name, start_id), None)
        if job is None:
            self._record("DELETE", name, start_id, request, 404)
            return web.json_response({"detail": f"Service {name} ({start_id}) not found"}, status=404)
        job.deleted.set()  # a start still running notices and gives up (a failure report still goes out)
        await self._kill(job)
        self._record("DELETE", name, start_id, request, 200)
        return web.json_response({"logs": []}, status=200)

    # ------------------------------------------------------------------ the "remote spawner"
    async def _start_process(self, job):
        job.port = free_port()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
        env.update(job.env)
        env["FBS_OUTPOST_PORT"] = str(job.port)
        job.proc = await asyncio.create_subprocess_exec(
            sys.executable, SERVER_SCRIPT, job.marker, env=env, start_new_session=True,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    async def _wait(self, job, event):
        """Wait for ``event``; raise :class:`Deleted` if the job is deleted first."""
        if not event.is_set():
            waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(job.deleted.wait())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        if job.deleted.is_set():
            raise Deleted(job.name)

    async def _wait_listening(self, job, timeout=20):
        for _ in range(int(timeout / 0.05)):
            if job.deleted.is_set():
                raise Deleted(job.name)
            if not job.running():
                raise RuntimeError(f"The server of {job.name} exited with {job.proc.returncode} before it listened")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", job.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"The server of {job.name} did not listen on {job.port}")

    async def _send(self, job, kind, url_variable, body):
        """POST ``body`` to the Hub with the server's own token, as the real Outpost does; record the answer."""
        entry = {"kind": kind, "user": job.user, "name": job.name, "start_id": job.start_id, "body": body, "status": None}
        self.posts.append(entry)
        headers = {"Authorization": f"token {job.env.get('JUPYTERHUB_API_TOKEN')}", "Content-Type": "application/json",
                   "Accept": "application/json"}  # fmt: skip
        try:
            async with self._session.post(job.env[url_variable], data=json.dumps(body), headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=30)) as r:  # fmt: skip
                entry["status"] = r.status
                entry["text"] = await r.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            entry["status"] = 599
            entry["text"] = repr(e)
        return entry["status"]

    def _events(self, job):
        messages = job.user_options.get("events") or []
        if not job.user_options.get("kube"):
            return [{"progress": 30 + i, "message": m} for i, m in enumerate(messages)]
        # KubeSpawner.progress() behind JupyterHub's _generate_progress(), "ready" popped by Outpost
        pod = f"jupyter-{job.user}-{job.name or 'default'}"
        events, progress = [{"progress": 0, "message": "Server requested"}], 0
        for m in messages:
            raw = kube_raw_event(pod, "Pulling" if "ull" in m else "Scheduled", m)
            progress += (90 - progress) / 3
            events.append({"progress": int(progress), "raw_event": raw,
                           "message": f"{raw['lastTimestamp']} [{raw['type']}] {raw['message']}"})  # fmt: skip
        return events

    async def _start_job(self, job):
        """Start the process, wait for the test's gate, forward the events, wait until it listens."""
        await self._start_process(job)
        gate = self._gates.pop(job.name, None)
        if gate is not None:
            await self._wait(job, gate)
        for event in self._events(job):
            await self._send(job, "event", "JUPYTERHUB_EVENTS_URL", event)
        if job.scenario == "hold":
            await self._wait(job, asyncio.Event())  # never answered: only a DELETE ends it
        await self._wait_listening(job)
        return f"127.0.0.1:{job.port}"

    async def _async_start(self, job):
        try:
            if job.scenario == "fail":
                await self._start_process(job)
                gate = self._gates.pop(job.name, None)
                if gate is not None:
                    await self._wait(job, gate)
                for event in self._events(job):
                    await self._send(job, "event", "JUPYTERHUB_EVENTS_URL", event)
                e, tb = long_traceback_error(f"jupyter-{job.user}-{job.name}")
                now = datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
                details = tb.replace("\n", "<br>")
                event = {"failed": True, "progress": 100,
                         "html_message": f"<details><summary>{now}: JupyterHub Outpost could not start service: {e}</summary>{details}</details>"}  # fmt: skip
                if len(event["html_message"]) <= 4096:
                    raise RuntimeError(f"the stand-in's traceback is too short: {len(event['html_message'])}")
                await self._send(job, "event", "JUPYTERHUB_EVENTS_URL", event)
                # full_stop_and_remove: the job is gone from the Outpost before the Hub asks
                self.jobs.pop(job.key, None)
                await self._kill(job)
                return
            await self._start_job(job)
            if job.scenario == "queued":
                await self._wait(job, asyncio.Event())  # never reports an address
            await self._send(job, "setuptunnel", "JUPYTERHUB_SETUPTUNNEL_URL", {"service": f"127.0.0.1:{job.port}"})
        except Deleted:
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug in the stand-in: tests check self.errors
            self.errors.append(repr(e))

    async def _kill(self, job):
        proc = job.proc
        if proc is None:
            return
        if proc.returncode is None:
            for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), wait)
                    break
                except asyncio.TimeoutError:
                    continue
        else:
            await proc.wait()
