"""The Kubernetes side of ForwardBaseSpawner: its settings resolved into each tunnelled server's
Service (:class:`~forwardbasespawner.k8s.server_service.ServerService`), and the clean-up of stray
Services once per Hub process."""

import asyncio
import os
import weakref

from traitlets.config import LoggingConfigurable

from ..errors import ServiceConflict
from ..hooks import resolve
from ..hubdb import server_rows
from .client import ServiceClient
from .names import dns_name, service_name
from .objects import is_ours, owner_selector
from .server_service import ServerService

_CLIENTS = weakref.WeakKeyDictionary()  # event loop -> {settings: ServiceClient}
_RECONCILED = weakref.WeakKeyDictionary()  # event loop -> {hub id: task}
_LIVE = set()  # (hub id, user, server) whose Service this process is making or keeps
_LATE_CREATE_WATCHES = set()  # running watches (a reference keeps each task alive)
# seconds between looks for a Service whose unanswered create the API server may still carry out
# after the Service was deleted (about 5 minutes in all: the API server gives up on a request
# within its own request timeout, one minute by default)
LATE_CREATE_CHECKS = (1, 2, 4, 8, 16, 32, 60, 60, 60, 60)


class KubernetesServices(LoggingConfigurable):
    """Methods of the per-server Service (mixed into ForwardBaseSpawner; the traits are
    :class:`~forwardbasespawner.traits.kubernetes.KubernetesTraits`)."""

    # ------------------------------------------------------------ client and names
    def k8s_client(self):
        """The Hub's shared :class:`ServiceClient` (one per event loop and API settings)."""
        loop = asyncio.get_running_loop()
        clients = _CLIENTS.setdefault(loop, {})
        key = (self.k8s_api_host, self.k8s_api_token, self.k8s_api_ca_file)
        if key not in clients:
            clients[key] = ServiceClient(
                self.log, host=self.k8s_api_host, token=self.k8s_api_token, ca_file=self.k8s_api_ca_file,
                retries=self.k8s_api_retries, timeout=self.k8s_api_timeout,
            )  # fmt: skip
        return clients[key]

    async def svc_enabled(self):
        if self.ssh_custom_svc is not None:
            return True
        wanted = await resolve(self.svc_create, self)
        if wanted is None:
            return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        return bool(wanted)

    def _name_svc(self):
        self.svc_name = service_name(self.svc_name_template, self.user.name, self.user.id, self.name, self.namespace)
        self.dns_name = dns_name(self.dns_name_template, self.svc_name, self.namespace)

    async def get_extra_labels(self):
        return dict(await resolve(self.extra_labels, self, self.user_options or {}) or {})

    async def _hub_selector(self):
        if self.k8s_hub_selector:
            return dict(self.k8s_hub_selector)
        hub = await self.k8s_client().read_service(self.k8s_hub_service_name, self.namespace)
        selector = (hub or {}).get("spec", {}).get("selector")
        if not selector:
            raise RuntimeError(
                f"no Hub pod selector: set k8s_hub_selector, or give the Hub's Service "
                f"{self.namespace}/{self.k8s_hub_service_name} a selector"
            )
        return selector

    def server_service(self):
        """This server's Service, as an object (see :class:`ServerService`)."""
        if not self.svc_name:
            self._name_svc()
        return ServerService(
            self.k8s_client(), name=self.svc_name, namespace=self.namespace, hub_id=self.k8s_hub_id,
            user=self.user.name, server=self.name, log=self.log, log_name=self._log_name,
        )  # fmt: skip

    # ------------------------------------------------------------ the Service
    async def ssh_default_svc(self):
        """Create (or take over our own leftover) Service to the Hub pod's forward port; return
        ``(dns_name, port)``. A Service of the same name that is not ours fails the start."""
        await self.reconcile_services_once()
        service = self.server_service()
        self.dns_name = dns_name(self.dns_name_template, self.svc_name, self.namespace)
        key = (self.k8s_hub_id, self.user.name, self.name)
        _LIVE.add(key)
        selector = await self._hub_selector()
        extra_labels = await self.get_extra_labels()
        self.connection.svc_open = True  # before the call: stop() deletes one whose creation timed out
        try:
            await service.create(
                self.port, selector=selector, extra_labels=extra_labels, start_id=self.start_id,
                owner_reference=self.k8s_owner_reference,
            )  # fmt: skip
        except ServiceConflict as e:
            self.connection.svc_open = False  # not ours: never deleted
            _LIVE.discard(key)
            raise RuntimeError(f"{e}; ask an administrator to remove it") from None
        return self.dns_name, self.port

    async def ssh_default_svc_remove(self):
        service = self.server_service()
        await service.delete()
        _LIVE.discard((self.k8s_hub_id, self.user.name, self.name))
        self.connection.svc_open = False
        if service.client.create_in_doubt(service.name, service.namespace):
            task = asyncio.ensure_future(self._remove_late_service(service))
            _LATE_CREATE_WATCHES.add(task)
            task.add_done_callback(_LATE_CREATE_WATCHES.discard)

    async def _remove_late_service(self, service, checks=LATE_CREATE_CHECKS):
        """A create of this server's Service went unanswered (a slow or cut-off API call): the API
        server may carry it out after the Service was deleted at stop, leaving a Service of a
        stopped server. Look for it for a while (``checks``: seconds between looks) and delete
        what appears, as long as the server is not running or being started again (then the
        Service is the new start's)."""
        client = service.client
        client.settle_doubt(service.name, service.namespace)  # taken on here; a later start's doubt is its own
        try:
            selector = await self._hub_selector()
            for delay in checks:
                await asyncio.sleep(delay)
                found = await client.read_service(service.name, service.namespace)
                if found is None:
                    continue
                if not self._stray(found, self.user.name, self.name, selector):
                    continue  # a new start's (or not ours): never deleted here; looked at again later
                metadata = found["metadata"]
                # only the object as read: a start that took it over meanwhile has replaced it
                if await client.delete_service(service.name, service.namespace, uid=metadata.get("uid"),
                                               resource_version=metadata.get("resourceVersion")):  # fmt: skip
                    self.log.warning(
                        "Service %s/%s of %s appeared after the server stopped (a create the API server carried out "
                        "late); deleted", service.namespace, service.name, self._log_name,
                    )  # fmt: skip
        except Exception:
            self.log.exception("Watching for a late Service of %s failed; the start-up clean-up removes it", self._log_name)

    async def run_svc_create(self):
        """Where the proxy reaches the server: the Service (built-in or custom)."""
        if self.ssh_custom_svc is not None:
            host, port = await resolve(self.ssh_custom_svc, self, self.port_forward_info)
            self.connection.svc_open = True
            return host, port
        return await self.ssh_default_svc()

    async def run_svc_remove(self):
        if self.ssh_custom_svc_remove is not None:
            await resolve(self.ssh_custom_svc_remove, self, self.port_forward_info)
        elif self.ssh_custom_svc is None:
            await self.ssh_default_svc_remove()
        self.connection.svc_open = False

    # ------------------------------------------------------------ reconciliation
    async def reconcile_services_once(self):
        """Once per Hub process: delete Services of this Hub whose server is not running (a crash
        between creating one and saving the server's state leaves such). Missing Services of
        running servers come back at their first poll."""
        tasks = _RECONCILED.setdefault(asyncio.get_running_loop(), {})
        if self.k8s_hub_id not in tasks:
            tasks[self.k8s_hub_id] = asyncio.ensure_future(self._reconcile())
        try:
            await asyncio.shield(tasks[self.k8s_hub_id])
        except Exception:
            self.log.exception("Cleaning up stray Services failed; trying again at the next start")
            tasks.pop(self.k8s_hub_id, None)

    async def _reconcile(self):
        """Delete this Hub's Services whose server is not running; each one re-checked first.

        A Service is deleted only if it carries this Hub's id, points at this Hub's pods (its
        selector is ours: two Hubs left with the default ``k8s_hub_id`` in one namespace never
        delete each other's), its server is not running in the database read just before the
        delete nor being started here, and it is still the same object (uid precondition).
        """
        client = self.k8s_client()
        try:
            selector = await self._hub_selector()
        except Exception as e:  # without our selector nothing can be told apart: delete nothing
            self.log.warning("Service clean-up for hub %s skipped: %s", self.k8s_hub_id, e)
            return
        deleted = 0
        for service in await client.list_services(self.namespace, owner_selector(self.k8s_hub_id)):
            metadata = service["metadata"]
            annotations = metadata.get("annotations") or {}
            user = annotations.get("forwardbasespawner.jupyter.org/username", "")
            server = annotations.get("forwardbasespawner.jupyter.org/servername", "")
            if not self._stray(service, user, server, selector):
                continue
            current = await client.read_service(metadata["name"], self.namespace)  # it may have changed since the list
            if current is None or current["metadata"].get("uid") != metadata.get("uid"):
                continue
            if not self._stray(current, user, server, selector):
                continue
            if await client.delete_service(metadata["name"], self.namespace, uid=metadata.get("uid"),
                                           resource_version=current["metadata"].get("resourceVersion")):  # fmt: skip
                deleted += 1
        self.log.info("Service clean-up for hub %s: %d stray Services deleted", self.k8s_hub_id, deleted)

    def _stray(self, service, user, server, selector):
        """Whether ``service`` is this Hub's and its server is not running (read now)."""
        if not is_ours(service, self.k8s_hub_id, user, server):
            return False
        if dict((service.get("spec") or {}).get("selector") or {}) != dict(selector):
            return False  # another Hub's (same hub id, other pods): never ours to delete
        if (self.k8s_hub_id, user, server) in _LIVE:
            return False
        return (user, server) not in self._running_servers()

    def _running_servers(self):
        # a column query: it reads the rows as the database holds them now, not cached objects
        return {
            (user_name, server_name or "")
            for _, user_name, server_name, state in server_rows(self.user.db)
            if (state or {}).get("svc_open")
        }
