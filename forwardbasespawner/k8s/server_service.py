"""One server's Kubernetes Service, as an object: created, taken over, deleted.

It takes resolved settings (the shared :class:`~forwardbasespawner.k8s.client.ServiceClient`, the
names, the Hub pod selector, labels) and never reads a spawner; the manifest itself comes from the
pure builder :func:`~forwardbasespawner.k8s.objects.make_service`.
"""

from ..errors import ServiceConflict
from .objects import is_legacy_service, is_ours, make_service, service_labels


class ServerService:
    """The Service ``namespace/name`` that leads the proxy to one server's forward port in the Hub pod."""

    def __init__(self, client, *, name, namespace, hub_id, user, server, log, log_name=""):
        self.client = client
        self.name = name
        self.namespace = namespace
        self.hub_id = hub_id
        self.user = user  # the user's and server's names, for labels and ownership checks
        self.server = server
        self.log = log
        self.log_name = log_name or f"{user}:{server}"  # user:server, for log lines

    def _may_take_over(self, existing, selector):
        """Whether an existing Service of this name may be taken over: ours for this server (and
        pointing at this Hub's pods: another Hub with the same default hub id is not us), or the
        original package's, after an upgrade."""
        return (
            is_ours(existing, self.hub_id, self.user, self.server)
            and dict((existing.get("spec") or {}).get("selector") or {}) == dict(selector)
        ) or is_legacy_service(existing, selector)

    async def create(self, port, *, selector, extra_labels, start_id, owner_reference=None):
        """Create it (or take over our own leftover of the same name) to ``port`` of the pods that
        ``selector`` matches. A Service of the same name that is not ours raises ServiceConflict
        (it is left alone)."""
        manifest = make_service(
            self.name, self.namespace, port, selector,
            service_labels(self.user, self.server, self.hub_id, extra_labels),
            self.user, self.server, start_id, owner_reference or None,
        )  # fmt: skip
        selector = manifest["spec"]["selector"]
        await self.client.create_service(manifest, lambda existing: self._may_take_over(existing, selector))
        self.log.info("Service %s/%s for %s created", self.namespace, self.name, self.log_name)

    async def delete(self):
        """Delete it; harmless when it is gone."""
        if await self.client.delete_service(self.name, self.namespace):
            self.log.info("Service %s/%s for %s deleted", self.namespace, self.name, self.log_name)


__all__ = ["ServerService", "ServiceConflict"]
