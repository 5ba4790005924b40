"""A stand-in for a UNICORE REST server (tests only): enough of UNICORE 9/10 for pyunicore 1.3.7 as
UnicoreSpawner 2.1.7 uses it, with batch jobs that run as local processes.

What it serves (``site_url`` = ``http://127.0.0.1:<port>/DEMO-SITE/rest/core``):

- ``GET  {site_url}``: the site's properties (``client.role.selected`` for pyunicore's
  authentication check, ``_links.jobs``)
- ``POST {site_url}/jobs``: submit a job description → 201 with ``Location: {site_url}/jobs/<id>``
- ``GET  {site_url}/jobs/<id>``: status, statusMessage, exitCode, log, ``_links`` (actions,
  workingDirectory, ...); ``DELETE`` removes the job (its process is killed, its directory removed)
- ``POST {site_url}/jobs/<id>/actions/{start,abort,restart}``
- ``GET  {site_url}/storages/<id>-uspace``: the working directory (``resourceStatus`` READY)
- ``GET  {site_url}/storages/<id>-uspace/files/<path>``: ``Accept: application/json`` → stat
  (``isDirectory``, ``size``); ``Accept: application/octet-stream`` → the bytes, ``Range`` honoured
- ``GET  /certificate`` and ``{site_url}/certificate``: the PEM certificate whose key signs the
  notifications (RS256 JWTs), as UnicoreSpawner's notification handler fetches it

Every REST call needs HTTP basic auth (``username``/``password``) or ``Bearer <token>``.

A job is a local process: the shell line ``Executable Arguments...`` (bash) in its own working directory and
session, with ``Environment`` (a dict or ``["K=V", ...]``) on top of a minimal environment;
``Imports`` with inline ``Data`` are written into the working directory first. stdout and stderr go
to files of the working directory. Its life, driven by :class:`Plan`:

    QUEUED (bssStatus PENDING) → [hold] → RUNNING (bssStatus CONFIGURING) → process runs (RUNNING)
    → SUCCESSFUL (exit code 0) or FAILED

At each batch-system status listed in the job's ``NotificationSettings.bssStatus`` and at each
terminal status listed in ``NotificationSettings.status`` (default: SUCCESSFUL, FAILED) it POSTs a
notification ``{"href", "status", "statusMessage", "bssStatus"}`` to the job's ``Notification``
URL with ``Authorization: Bearer <JWT>``, as UNICORE does. Tests read what happened from
:attr:`UnicoreStandIn.history` (every job ever submitted, deleted ones too) and
:attr:`UnicoreStandIn.requests`.

Run alone for manual experiments: ``python -m tests.compat.unicore_service`` (prints its URLs).
"""

import asyncio
import base64
import datetime
import json
import os
import shutil
import signal
import uuid
from dataclasses import dataclass, field

import aiohttp
import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

SITE_PATH = "/DEMO-SITE/rest/core"
TERMINAL = ("SUCCESSFUL", "FAILED")
DEFAULT_NOTIFY_STATUSES = ("SUCCESSFUL", "FAILED")


@dataclass
class Plan:
    """How the next job of a user's server behaves (see :meth:`UnicoreStandIn.plan`)."""

    refuse: tuple = ()  # (HTTP status, errorMessage): the submission is refused
    bss: tuple = ("PENDING", "CONFIGURING")  # batch-system states before the process starts
    hold: bool = False  # stay QUEUED (after the first bss state) until release() or abort
    fail_in_queue: str = ""  # statusMessage: the job FAILs before its process starts
    exit_code: int = 1  # exitCode of a job that fails in the queue
    notify_statuses: tuple = None  # overrides NotificationSettings.status (e.g. () for none)
    job_env: dict = field(default_factory=dict)  # extra environment for the job's process


@dataclass
class UnicoreJob:
    id: str
    url: str
    storage_url: str
    description: dict
    user: str
    server: str
    plan: Plan
    workdir: str
    status: str = "READY"
    status_message: str = ""
    exit_code: int = None
    bss_status: str = "UNKNOWN"
    submitted: str = ""
    log: list = field(default_factory=list)
    actions: list = field(default_factory=list)  # "start", "abort", "restart" as they came in
    aborted: bool = False
    deleted: bool = False
    process: object = None
    notifications: list = field(default_factory=list)  # (body, HTTP status or error text)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    task: object = None

    def add_log(self, line):
        self.log.append(f"{datetime.datetime.now().isoformat(timespec='milliseconds')}: {line}")

    @property
    def running_process(self):
        return self.process is not None and self.process.returncode is None

    def properties(self):
        props = {
            "status": self.status,
            "statusMessage": self.status_message,
            "log": list(self.log),
            "owner": "CN=Demo User, O=UNICORE, C=EU",
            "submissionTime": self.submitted,
            "queue": "batch",
            "name": self.description.get("Name", "JupyterLab"),
            "_links": {
                "self": {"href": self.url},
                "action:start": {"href": f"{self.url}/actions/start"},
                "action:abort": {"href": f"{self.url}/actions/abort"},
                "action:restart": {"href": f"{self.url}/actions/restart"},
                "workingDirectory": {"href": self.storage_url},
                "details": {"href": f"{self.url}/details"},
                "forwarding": {"href": f"{self.url}/forward-port"},
            },
        }
        if self.exit_code is not None:
            props["exitCode"] = self.exit_code
        return props


def _certificate():
    """A fresh RSA key and a self-signed certificate for it (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "UNICORE stand-in")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def _error(status, message):
    return web.json_response({"errorMessage": message, "status": status}, status=status)


class UnicoreStandIn:
    """The UNICORE stand-in, served by aiohttp on the caller's event loop (see the module doc)."""

    def __init__(self, directory, username="demouser", password="test123", token=None):
        self.dir = str(directory)
        self.username = username
        self.password = password
        self.token = token or uuid.uuid4().hex
        self.key_pem, self.cert_pem = _certificate()
        self.jobs = {}  # id -> UnicoreJob, live jobs
        self.history = []  # every job ever submitted, in order
        self.requests = []  # (method, path, status) of every REST call
        self.plans = {}  # (user, server) -> [Plan, ...], used up one per submission
        self.port = 0
        self.url = ""
        self._runner = None
        self._session = None

    @property
    def site_url(self):
        return f"{self.url}{SITE_PATH}"

    @property
    def cert_url(self):
        return f"{self.url}/certificate"

    # ------------------------------------------------------------ life cycle
    async def start(self, port=0):
        os.makedirs(self.dir, exist_ok=True)
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.router.add_get("/certificate", self._certificate)
        app.router.add_get(f"{SITE_PATH}/certificate", self._certificate)
        app.router.add_get(SITE_PATH, self._site)
        app.router.add_get(f"{SITE_PATH}/jobs", self._list_jobs)
        app.router.add_post(f"{SITE_PATH}/jobs", self._submit)
        app.router.add_get(f"{SITE_PATH}/jobs/{{id}}", self._job)
        app.router.add_delete(f"{SITE_PATH}/jobs/{{id}}", self._delete)
        app.router.add_get(f"{SITE_PATH}/jobs/{{id}}/details", self._details)
        app.router.add_post(f"{SITE_PATH}/jobs/{{id}}/actions/{{action}}", self._action)
        app.router.add_get(f"{SITE_PATH}/storages/{{id}}-uspace", self._storage)
        app.router.add_get(f"{SITE_PATH}/storages/{{id}}-uspace/files", self._file)
        app.router.add_get(f"{SITE_PATH}/storages/{{id}}-uspace/files/{{path:.*}}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._session = aiohttp.ClientSession()

    async def close(self):
        """Kill every job process still running (by PID), stop serving, remove the jobs' directories."""
        for job in self.history:
            await self._kill(job)
            if job.task is not None and not job.task.done():
                job.task.cancel()
        tasks = [job.task for job in self.history if job.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._session:
            await self._session.close()
        if self._runner:
            await self._runner.cleanup()

    # ------------------------------------------------------------ test controls
    def plan(self, user, server="", **options):
        """The next job submitted for ``user``'s ``server`` behaves as ``Plan(**options)``."""
        self.plans.setdefault((user, server), []).append(Plan(**options))

    def jobs_of(self, user, server=""):
        """Every job submitted for ``user``'s ``server``, oldest first (deleted ones too)."""
        return [job for job in self.history if job.user == user and job.server == server]

    def job_by_url(self, url):
        return next((job for job in self.history if job.url == url), None)

    def release(self, job):
        """Let a held job (``Plan(hold=True)``) leave the queue."""
        job.released.set()

    async def end_job(self, job, exit_code=0):
        """The job ends by itself (its walltime is up): its process exits with ``exit_code``."""
        if job.running_process:
            # the job script exits with the code it finds in this file when it gets SIGTERM
            with open(os.path.join(job.workdir, ".exit_code"), "w") as f:
                f.write(str(exit_code))
            os.killpg(job.process.pid, signal.SIGTERM)
        await asyncio.wait_for(job.finished.wait(), 30)

    def signed_token(self, subject="demouser"):
        now = datetime.datetime.now(datetime.timezone.utc)
        claims = {"iss": "DEMO-SITE", "sub": subject, "iat": now, "exp": now + datetime.timedelta(minutes=5)}
        return jwt.encode(claims, self.key_pem, algorithm="RS256")

    async def notify(self, job, **body):
        """POST a notification about ``job`` to its ``Notification`` URL, as UNICORE does.

        ``body`` overrides the fields taken from the job. Returns the Hub's HTTP status, or None
        when the job has no Notification URL or the Hub could not be reached.
        """
        url = job.description.get("Notification")
        if not url:
            return None
        full = {"href": job.url, "status": job.status, "statusMessage": job.status_message, "bssStatus": job.bss_status}
        full.update(body)
        headers = {"Authorization": f"Bearer {self.signed_token()}", "Content-Type": "application/json"}
        try:
            async with self._session.post(url, data=json.dumps(full), headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=60)) as r:  # fmt: skip
                await r.read()
                result = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            result = f"{type(e).__name__}: {e}"
        job.notifications.append((full, result))
        return result if isinstance(result, int) else None

    # ------------------------------------------------------------ HTTP plumbing
    @web.middleware
    async def _middleware(self, request, handler):
        if request.path.startswith(SITE_PATH) and not request.path.endswith("/certificate"):
            auth = request.headers.get("Authorization", "")
            basic = "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if auth not in (basic, f"Bearer {self.token}"):
                self.requests.append((request.method, request.path, 401))
                return _error(401, "Authentication failed")
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = _error(e.status, e.reason)
        self.requests.append((request.method, request.path, response.status))
        return response

    def _live_job(self, request):
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            raise web.HTTPNotFound(reason=f"No such job: {request.match_info['id']}")
        return job

    async def _certificate(self, request):
        return web.Response(body=self.cert_pem, content_type="text/plain")

    async def _site(self, request):
        return web.json_response({
            "client": {
                "dn": "CN=Demo User, O=UNICORE, C=EU",
                "role": {"selected": "user", "availableRoles": ["user"]},
                "xlogin": {"UID": self.username, "availableUIDs": [self.username]},
            },
            "server": {"version": "10.1.0", "dn": "CN=UNICORE stand-in"},
            "_links": {
                "self": {"href": self.site_url},
                "jobs": {"href": f"{self.site_url}/jobs"},
                "storages": {"href": f"{self.site_url}/storages"},
                "factories": {"href": f"{self.site_url}/factories"},
                "transfers": {"href": f"{self.site_url}/transfers"},
            },
        })  # fmt: skip

    async def _list_jobs(self, request):
        return web.json_response({"jobs": [job.url for job in self.jobs.values()]})

    async def _submit(self, request):
        try:
            description = await request.json()
        except ValueError:
            return _error(400, "The job description is not JSON")
        if not isinstance(description, dict) or not description.get("Executable"):
            return _error(400, "The job description has no Executable")
        env = self._environment(description)
        user, server = env.get("JUPYTERHUB_USER", ""), env.get("JUPYTERHUB_SERVER_NAME", "")
        plans = self.plans.get((user, server)) or []
        plan = plans.pop(0) if plans else Plan()
        if plan.refuse:
            status, message = plan.refuse
            return _error(status, message)
        job_id = uuid.uuid4().hex
        job = UnicoreJob(
            id=job_id, url=f"{self.site_url}/jobs/{job_id}",
            storage_url=f"{self.site_url}/storages/{job_id}-uspace", description=description,
            user=user, server=server, plan=plan, workdir=os.path.join(self.dir, job_id),
            submitted=datetime.datetime.now().isoformat(timespec="seconds"),
        )  # fmt: skip
        os.makedirs(job.workdir)
        for item in description.get("Imports") or []:
            if isinstance(item, dict) and "Data" in item and item.get("To"):
                target = self._inside(job, item["To"])
                if target:
                    with open(target, "w") as f:
                        f.write(item["Data"])
        job.add_log("Job submitted to the UNICORE stand-in")
        self.jobs[job_id] = job
        self.history.append(job)
        if not description.get("haveClientStageIn"):
            job.task = asyncio.ensure_future(self._run(job))
        return web.Response(status=201, headers={"Location": job.url})

    async def _job(self, request):
        return web.json_response(self._live_job(request).properties())

    async def _details(self, request):
        job = self._live_job(request)
        return web.json_response({"bssStatus": job.bss_status, "rawDetailsData": ""})

    async def _action(self, request):
        job = self._live_job(request)
        action = request.match_info["action"]
        if action not in ("start", "abort", "restart"):
            return _error(404, f"No such action: {action}")
        job.actions.append(action)
        if action == "start" and job.task is None:
            job.task = asyncio.ensure_future(self._run(job))
        elif action == "abort":
            await self._abort(job)
        return web.json_response({})

    async def _delete(self, request):
        job = self._live_job(request)
        job.deleted = True
        del self.jobs[job.id]
        await self._abort(job)
        await self._kill(job)
        shutil.rmtree(job.workdir, ignore_errors=True)
        return web.Response(status=204)

    async def _storage(self, request):
        job = self._live_job(request)
        return web.json_response({
            "resourceStatus": "READY",
            "mountPoint": job.workdir,
            "_links": {"self": {"href": job.storage_url}, "files": {"href": f"{job.storage_url}/files"}},
        })  # fmt: skip

    async def _file(self, request):
        job = self._live_job(request)
        path = self._inside(job, request.match_info.get("path", ""))
        if path is None or not os.path.exists(path):
            return _error(404, f"File {request.match_info.get('path', '')} not found")
        if "octet-stream" not in request.headers.get("Accept", ""):
            if os.path.isdir(path):
                return web.json_response({"isDirectory": True, "size": 0, "content": {
                    f"/{name}": {} for name in sorted(os.listdir(path))}})  # fmt: skip
            return web.json_response({
                "isDirectory": False, "size": os.path.getsize(path), "owner": self.username,
                "permissions": "rw-", "lastAccessed": datetime.datetime.now().isoformat(), "metadata": {},
            })  # fmt: skip
        with open(path, "rb") as f:
            data = f.read()
        range_header = request.headers.get("Range", "")
        if range_header.startswith("bytes="):
            first, _, last = range_header[6:].partition("-")
            start = int(first or 0)
            end = int(last) + 1 if last else len(data)
            return web.Response(status=206, body=data[start:end], content_type="application/octet-stream")
        return web.Response(body=data, content_type="application/octet-stream")

    @staticmethod
    def _inside(job, relative):
        path = os.path.realpath(os.path.join(job.workdir, relative.lstrip("/")))
        root = os.path.realpath(job.workdir)
        return path if path == root or path.startswith(root + os.sep) else None

    @staticmethod
    def _environment(description):
        env = description.get("Environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env if "=" in item)
        return {str(k): str(v) for k, v in env.items()}

    # ------------------------------------------------------------ the batch system
    def _settings(self, job, kind):
        settings = job.description.get("NotificationSettings") or {}
        if kind == "status":
            if job.plan.notify_statuses is not None:
                return tuple(job.plan.notify_statuses)
            return tuple(settings.get("status", DEFAULT_NOTIFY_STATUSES))
        return tuple(settings.get("bssStatus", ()))

    async def _enter(self, job, status, bss):
        job.status, job.bss_status = status, bss
        job.add_log(f"Status {status}, batch system status {bss}")
        if bss in self._settings(job, "bssStatus") and not job.deleted:
            await self.notify(job)

    async def _finish(self, job, status, message, exit_code):
        if job.status in TERMINAL:
            return
        job.status, job.status_message, job.exit_code = status, message, exit_code
        job.bss_status = "COMPLETED" if status == "SUCCESSFUL" else "FAILED"
        job.add_log(f"Job {status}: {message} (exit code {exit_code})")
        job.finished.set()
        if status in self._settings(job, "status") and not job.deleted:
            await self.notify(job)

    async def _run(self, job):
        plan = job.plan
        for i, bss in enumerate(plan.bss):
            if job.aborted:
                break
            await self._enter(job, "QUEUED" if i == 0 else "RUNNING", bss)
            if i == 0 and plan.fail_in_queue:
                await self._finish(job, "FAILED", plan.fail_in_queue, plan.exit_code)
                return
            if i == 0 and plan.hold:
                await job.released.wait()
        if job.aborted:
            await self._finish(job, "FAILED", "Job was aborted by the user", None)
            return
        await self._launch(job)
        if job.aborted:  # the abort came while the process was being started
            await self._kill(job)
        await self._enter(job, "RUNNING", "RUNNING")
        rc = await job.process.wait()
        if job.aborted:
            await self._finish(job, "FAILED", "Job was aborted by the user", rc)
        elif rc == 0:
            await self._finish(job, "SUCCESSFUL", "", 0)
        else:
            await self._finish(job, "FAILED", f"User application exited with non-zero exit code {rc}", rc)

    async def _launch(self, job):
        # like UNICORE's job script: one shell line "Executable Arguments..." (bash execs a lone command)
        line = " ".join([job.description["Executable"]] + [str(a) for a in job.description.get("Arguments") or []])
        argv = ["/bin/bash", "-c", line]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": job.workdir, "LANG": "C.UTF-8",
            "UC_JOB_ID": job.id, "UC_WORKING_DIRECTORY": job.workdir,
        }  # fmt: skip
        env.update(self._environment(job.description))
        env.update(job.plan.job_env)
        with open(os.path.join(job.workdir, "stdout"), "wb") as out, open(os.path.join(job.workdir, "stderr"), "wb") as err:
            job.process = await asyncio.create_subprocess_exec(
                *argv, cwd=job.workdir, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,  # its own process group: abort kills the whole job
            )  # fmt: skip
        job.add_log(f"Job process {job.process.pid} started")

    async def _abort(self, job):
        if job.status in TERMINAL:
            return
        job.aborted = True
        job.released.set()
        if job.running_process:
            await self._kill(job)
        elif job.task is None or job.task.done():
            await self._finish(job, "FAILED", "Job was aborted by the user", None)

    async def _kill(self, job):
        """SIGTERM the job's process group, SIGKILL after 5 s; by PID only."""
        if not job.running_process:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(job.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(job.process.wait(), wait)
                return
            except asyncio.TimeoutError:
                continue


async def _main():
    import tempfile

    service = UnicoreStandIn(tempfile.mkdtemp(prefix="unicore-standin-"))
    await service.start(int(os.environ.get("UNICORE_STANDIN_PORT", "0")))
    print(f"site URL: {service.site_url}\ncertificate URL: {service.cert_url}\n"
          f"basic auth: {service.username}:{service.password}  bearer: {service.token}", flush=True)  # fmt: skip
    try:
        await asyncio.Event().wait()
    finally:
        await service.close()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
