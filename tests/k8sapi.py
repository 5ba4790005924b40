"""A Kubernetes API test server for core/v1 Services (aiohttp), for the real kubernetes_asyncio client.

Every body is validated against the schemas of a real Kubernetes release (kubernetes-validate);
names are checked as DNS-1035 labels, which the schemas do not do. Answers carry the status codes
and Status bodies of the real API server. ``faults`` injects 500s, 429s, slow or held answers and
connection resets, one per request in order (or per request of a ``method``): a delayed request is
carried out after the client gave up, as a real API server may; ``latency`` delays every answer.
"""

import asyncio
import copy
import functools
import json
import re
import sys
import uuid
from datetime import datetime, timezone

import kubernetes_validate
import kubernetes_validate.utils
from aiohttp import web

# the package reads the schema files on every validation; they do not change while we run
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)

K8S_VERSION = "1.30"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def status(code, reason, message, name=None):
    body = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }  # fmt: skip
    if name:
        body["details"] = {"name": name, "kind": "services"}
    return web.json_response(body, status=code)


def matches(labels, selector):
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif labels.get(term) is None:
            return False
    return True


class KubernetesAPI:
    def __init__(self, token="test-token"):
        self.token = token
        self.services = {}  # (namespace, name) -> object
        self.version = 100
        self.faults = []
        self.latency = 0.0
        self.calls = []  # (method, path) of every request
        self.history = []  # ("created" | "deleted", namespace, name, uid), in the order carried out
        self.in_flight = 0  # requests being worked on (a delayed one goes on after its client gave up)
        self.runner = None
        self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        app = web.Application(middlewares=[self.middleware])
        base = "/api/v1/namespaces/{namespace}/services"
        app.router.add_post(base, self.create)
        app.router.add_get(base, self.list)
        app.router.add_get(base + "/{name}", self.read)
        app.router.add_put(base + "/{name}", self.replace)
        app.router.add_patch(base + "/{name}", self.patch)
        app.router.add_delete(base + "/{name}", self.delete)
        app.router.add_get("/_test/stats", self.stats)  # for benchmarks running it in another process
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self):
        await self.runner.cleanup()

    async def stats(self, request):
        reply = {"calls": len(self.calls), "services": len(self.services)}
        if request.query.get("reset"):
            self.calls.clear()
        return web.json_response(reply)

    @web.middleware
    async def middleware(self, request, handler):
        if request.path.startswith("/_test/"):
            return await handler(request)
        self.calls.append((request.method, request.path))
        self.in_flight += 1
        try:
            return await self._answer(request, handler)
        finally:
            self.in_flight -= 1

    async def settled(self, timeout=30):
        """Wait until no request is being worked on (delayed ones included)."""
        for _ in range(int(timeout / 0.05)):
            if not self.in_flight:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{self.in_flight} requests still in flight after {timeout}s")

    async def _answer(self, request, handler):
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        await request.read()  # as the real API server: the whole request is in before it is worked on
        if self.latency:
            await asyncio.sleep(self.latency)
        # the first fault meant for this request (a fault with "method" waits for one of that method)
        fault = next((f for f in self.faults if f.get("method", request.method) == request.method), None)
        if fault is not None:
            self.faults.remove(fault)
            if fault.get("delay"):
                await asyncio.sleep(fault["delay"])
            if fault.get("hold"):  # an asyncio.Event: the request is worked on once the test sets it
                await fault["hold"].wait()
            if fault.get("reset"):
                request.transport.abort()
                raise asyncio.CancelledError()
            if fault.get("status"):
                return status(fault["status"], "InternalError" if fault["status"] >= 500 else "TooManyRequests", "injected")
        return await handler(request)

    # ---------------------------------------------------------------- validation
    async def _body(self, request, namespace, name=None):
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None, status(400, "BadRequest", "the body is not JSON")
        if not isinstance(body, dict):
            return None, status(400, "BadRequest", "the body is not an object")
        body.setdefault("apiVersion", "v1")  # the client leaves these out
        body.setdefault("kind", "Service")
        return body, self._check(body, namespace, name)

    def _check(self, body, namespace, name=None):
        metadata = body.get("metadata") or {}
        given = metadata.get("name", "")
        if body.get("kind") != "Service" or body.get("apiVersion") != "v1":
            return status(400, "BadRequest", "not a v1 Service")
        if not DNS1035.match(given or "") or len(given) > 63:
            return status(422, "Invalid", f'Service "{given}" is invalid: metadata.name: Invalid value: a DNS-1035 label', given)
        if name is not None and given != name:
            return status(400, "BadRequest", "the name in the body does not match the URL")
        if metadata.get("namespace", namespace) != namespace:
            return status(400, "BadRequest", "the namespace in the body does not match the URL")
        try:
            kubernetes_validate.validate(body, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            return status(422, "Invalid", f'Service "{given}" is invalid: {e.message}', given)
        return None

    def _stored(self, body, namespace, uid=None, created=None):
        self.version += 1
        obj = copy.deepcopy(body)
        metadata = obj.setdefault("metadata", {})
        metadata.update(
            namespace=namespace,
            resourceVersion=str(self.version),
            uid=uid or str(uuid.uuid4()),
            creationTimestamp=created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        obj.setdefault("spec", {}).setdefault("clusterIP", f"10.96.{self.version % 250}.{self.version // 250 % 250}")
        obj["status"] = {"loadBalancer": {}}
        return obj

    # ---------------------------------------------------------------- handlers
    async def create(self, request):
        namespace = request.match_info["namespace"]
        body, problem = await self._body(request, namespace)
        if problem:
            return problem
        name = body["metadata"]["name"]
        if (namespace, name) in self.services:
            return status(409, "AlreadyExists", f'services "{name}" already exists', name)
        self.services[namespace, name] = obj = self._stored(body, namespace)
        self.history.append(("created", namespace, name, obj["metadata"]["uid"]))
        return web.json_response(obj, status=201)

    async def list(self, request):
        namespace = request.match_info["namespace"]
        selector = request.query.get("labelSelector", "")
        items = [
            obj for (ns, _), obj in sorted(self.services.items())
            if ns == namespace and matches(obj["metadata"].get("labels") or {}, selector)
        ]  # fmt: skip
        return web.json_response(
            {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)}, "items": items}
        )

    async def read(self, request):
        key = request.match_info["namespace"], request.match_info["name"]
        if key not in self.services:
            return status(404, "NotFound", f'services "{key[1]}" not found', key[1])
        return web.json_response(self.services[key])

    async def replace(self, request):
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if (namespace, name) not in self.services:
            return status(404, "NotFound", f'services "{name}" not found', name)
        body, problem = await self._body(request, namespace, name)
        if problem:
            return problem
        current = self.services[namespace, name]
        wanted = body["metadata"].get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            return status(409, "Conflict", f'Operation cannot be fulfilled on services "{name}": the object has been modified', name)
        body["spec"]["clusterIP"] = current["spec"]["clusterIP"]
        obj = self._stored(body, namespace, current["metadata"]["uid"], current["metadata"]["creationTimestamp"])
        self.services[namespace, name] = obj
        return web.json_response(obj)

    async def patch(self, request):
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if (namespace, name) not in self.services:
            return status(404, "NotFound", f'services "{name}" not found', name)
        try:
            change = json.loads(await request.read())
        except ValueError:
            return status(400, "BadRequest", "the body is not JSON")
        current = self.services[namespace, name]
        merged = merge(copy.deepcopy(current), change)
        merged.pop("status", None)
        problem = self._check(merged, namespace, name)
        if problem:
            return problem
        obj = self._stored(merged, namespace, current["metadata"]["uid"], current["metadata"]["creationTimestamp"])
        self.services[namespace, name] = obj
        return web.json_response(obj)

    async def delete(self, request):
        key = request.match_info["namespace"], request.match_info["name"]
        if key not in self.services:
            return status(404, "NotFound", f'services "{key[1]}" not found', key[1])
        body = await request.read()  # (read already: can_read_body would say False now)
        if body:  # DeleteOptions: uid and resourceVersion preconditions, as the real API server checks them
            options = json.loads(body)
            preconditions = (options or {}).get("preconditions") or {}
            meta = self.services[key]["metadata"]
            for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
                wanted = preconditions.get(field)
                if wanted and wanted != meta[field]:
                    return status(409, "Conflict", f"Precondition failed: {label} in precondition: {wanted}, {label} in object "
                                  f"meta: {meta[field]}", key[1])  # fmt: skip
        obj = self.services.pop(key)
        self.history.append(("deleted", *key, obj["metadata"]["uid"]))
        return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                  "details": {"name": key[1], "kind": "services", "uid": obj["metadata"]["uid"]}})  # fmt: skip


def merge(target, change):
    """JSON merge patch (RFC 7386)."""
    if not isinstance(change, dict):
        return change
    for key, value in change.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge(target.get(key) if isinstance(target.get(key), dict) else {}, value)
    return target


async def _serve(latency, token):
    api = KubernetesAPI(token)
    api.latency = latency
    await api.start()
    print(api.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    # python tests/k8sapi.py LATENCY TOKEN: serve until killed, printing the port
    asyncio.run(_serve(float(sys.argv[1]), sys.argv[2]))
