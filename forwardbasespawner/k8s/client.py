"""One shared kubernetes_asyncio client per Hub: Services created, replaced, listed and deleted,
with retries on 5xx, 429, timeouts and dropped connections. Never blocks the Hub's event loop."""

import asyncio
import json
import os
import random

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from ..errors import ServiceConflict


def _retryable(error):
    if isinstance(error, ApiException):
        return error.status == 429 or error.status >= 500 or error.status == 0
    return isinstance(error, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError))


def _may_have_been_done(error):
    """Whether a failed call may still be carried out by the API server: no answer came back but
    the request may have reached it (a timeout, a connection cut after sending), or the server
    answered that it could not finish in time (5xx: its own request timeout, an etcd timeout)."""
    if isinstance(error, ApiException):
        return error.status >= 500  # status 0: the client could not even build the request
    if isinstance(error, aiohttp.ClientConnectorError):
        return False  # never connected
    return isinstance(error, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError))


class ServiceClient:
    """Services in one cluster, through the real ``kubernetes_asyncio`` client.

    Configuration, in order: explicit ``host`` (and ``token``); in-cluster (the pod's service
    account); the kubeconfig of the Hub's user.
    """

    def __init__(self, log, *, host="", token="", verify_ssl=True, ca_file="", retries=5, backoff=0.2, timeout=10,
                 connections=16):  # fmt: skip
        self.log = log
        self.host = host
        self.token = token
        self.verify_ssl = verify_ssl
        self.ca_file = ca_file
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.connections = connections
        self._core = None
        self._lock = asyncio.Lock()
        self._creates_in_doubt = set()  # (namespace, name): a create of it may still be carried out

    async def core(self):
        if self._core is None:
            async with self._lock:
                if self._core is None:
                    self._core = client.CoreV1Api(client.ApiClient(await self._configuration()))
        return self._core

    async def _configuration(self):
        cfg = client.Configuration()
        # a few kept-alive connections serve bursts of spawns; a hundred new ones at once cost the
        # Hub's loop more in connect() than the calls themselves
        cfg.connection_pool_maxsize = self.connections
        if self.host:
            cfg.host = self.host
            if self.token:
                # "BearerToken" is the name current clients use; "authorization" older ones
                cfg.api_key = {"BearerToken": self.token, "authorization": self.token}
                cfg.api_key_prefix = {"BearerToken": "Bearer", "authorization": "Bearer"}
            cfg.verify_ssl = self.verify_ssl
            if self.ca_file:
                cfg.ssl_ca_cert = self.ca_file
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            await config.load_kube_config(client_configuration=cfg)
        return cfg

    async def close(self):
        if self._core is not None:
            await self._core.api_client.close()
            self._core = None

    async def _call(self, what, method, *args, in_doubt=None, **kwargs):
        """``core.<method>(*args, **kwargs)`` with retries; the answer's JSON as a dict. ``in_doubt()``
        is called when an attempt failed in a way the API server may still carry out."""
        core = await self.core()
        for attempt in range(1, self.retries + 1):
            try:
                # raw JSON back: turning every answer into model objects and then into dicts
                # again costs the Hub's loop far more than the call itself
                response = await getattr(core, method)(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
                try:
                    body = await response.read()
                finally:
                    response.release()
                if not 200 <= response.status <= 299:
                    error = ApiException(status=response.status, reason=response.reason)
                    error.body = body.decode(errors="replace")
                    raise error
                return json.loads(body) if body else {}
            except asyncio.CancelledError:
                # JupyterHub cancels a start (its start timeout, the user's cancel): a request that
                # went out may still be carried out
                if in_doubt is not None:
                    in_doubt()
                raise
            except Exception as e:
                if in_doubt is not None and _may_have_been_done(e):
                    in_doubt()
                if not _retryable(e) or attempt == self.retries:
                    raise
                # exponential backoff with full jitter, so many Hubs' retries do not align
                delay = random.uniform(0, self.backoff * 2 ** (attempt - 1))
                self.log.warning("%s failed (%s); retry %d in %.2fs", what, _describe(e), attempt, delay)
                await asyncio.sleep(delay)

    async def read_service(self, name, namespace):
        """The Service as a dict, or None when there is none."""
        try:
            return await self._call(f"reading Service {namespace}/{name}", "read_namespaced_service", name, namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def create_service(self, manifest, is_ours):
        """Create the Service; if the name is taken by ours (``is_ours(existing)``), replace it;
        if it is taken by anything else, raise :class:`ServiceConflict` and touch nothing."""
        metadata = manifest["metadata"]
        name, namespace = metadata["name"], metadata["namespace"]

        def in_doubt():
            self._creates_in_doubt.add((namespace, name))

        try:
            return await self._call(f"creating Service {namespace}/{name}", "create_namespaced_service", namespace, manifest,
                                    in_doubt=in_doubt)  # fmt: skip
        except ApiException as e:
            if e.status != 409:
                raise
        existing = await self.read_service(name, namespace)
        if existing is None:  # deleted meanwhile: try once more
            return await self._call(f"creating Service {namespace}/{name}", "create_namespaced_service", namespace, manifest,
                                    in_doubt=in_doubt)  # fmt: skip
        if not is_ours(existing):
            raise ServiceConflict(f"Service {namespace}/{name} exists and does not belong to this server")
        replacement = dict(manifest, metadata=dict(metadata, resourceVersion=existing["metadata"]["resourceVersion"]))
        replacement["spec"] = dict(manifest["spec"], clusterIP=existing.get("spec", {}).get("clusterIP"))
        self.log.info("Replacing Service %s/%s left from an earlier start", namespace, name)
        return await self._call(f"replacing Service {namespace}/{name}", "replace_namespaced_service", name, namespace, replacement)

    def create_in_doubt(self, name, namespace):
        """Whether a create of this Service went unanswered (timed out, cut off, cancelled) or got a
        5xx: the API server may still carry it out, also after the Service was deleted."""
        return (namespace, name) in self._creates_in_doubt

    def settle_doubt(self, name, namespace):
        """Forget that a create of this Service went unanswered (its late arrival was watched for)."""
        self._creates_in_doubt.discard((namespace, name))

    async def delete_service(self, name, namespace, uid=None, resource_version=None):
        """Delete the Service; True if it was there, False if it was already gone.

        With ``uid``, only that very object (a precondition the API server checks): a Service
        of the same name created meanwhile, by another start or another Hub, is left alone
        (False). With ``resource_version`` as well, only if nobody changed it since it was read
        (a start that took it over replaces it, which keeps the uid).
        """
        preconditions = {"uid": uid, "resourceVersion": resource_version}
        preconditions = {k: v for k, v in preconditions.items() if v}
        kwargs = {"body": {"preconditions": preconditions}} if preconditions else {}
        try:
            await self._call(f"deleting Service {namespace}/{name}", "delete_namespaced_service", name, namespace, **kwargs)
            return True
        except ApiException as e:
            if e.status == 404 or (preconditions and e.status == 409):
                return False
            raise

    async def list_services(self, namespace, selector):
        reply = await self._call(f"listing Services in {namespace}", "list_namespaced_service", namespace, label_selector=selector)
        return reply.get("items") or []


def _describe(error):
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return type(error).__name__ + (f": {error}" if str(error) else "")
