"""Getter methods of the original package, kept for code written against it.

The original ForwardBaseSpawner (jupyterhub-forwardbasespawner 2.x) offered an ``async get_<trait>()``
or ``run_<hook>()`` for most of its traits, and subclasses or hooks may call them. This library
resolves its traits where it uses them; the methods here return what the original's returned,
from the same traits (``port_forward_info`` overriding SSH settings as before).
"""

from .hooks import resolve


class OriginalMethods:
    """Mixed into ForwardBaseSpawner: the original package's getters, as thin delegates."""

    def _remote_info(self):
        return self.port_forward_info.get("remote") or {}

    async def get_ssh_node(self):
        return await self.map_ssh_node(await self._info_or_trait(self.port_forward_info, "ssh_node", self.ssh_node))

    async def get_ssh_port(self):
        return await self._info_or_trait(self.port_forward_info, "ssh_port", self.ssh_port)

    async def get_ssh_username(self):
        return await self._info_or_trait(self.port_forward_info, "ssh_username", self.ssh_username)

    async def get_ssh_key(self):
        return await self._info_or_trait(self.port_forward_info, "ssh_key", self.ssh_key)

    async def get_ssh_forward_options(self):
        return await self._info_or_trait(self.port_forward_info, "ssh_forward_options", self.ssh_forward_options)

    async def get_ssh_remote_node(self):
        return await self._info_or_trait(self._remote_info(), "ssh_remote_node", self.ssh_remote_node)

    async def get_ssh_remote_port(self):
        return await self._info_or_trait(self._remote_info(), "ssh_remote_port", self.ssh_remote_port)

    async def get_ssh_remote_username(self):
        return await self._info_or_trait(self._remote_info(), "ssh_remote_username", self.ssh_remote_username)

    async def get_ssh_remote_key(self):
        return await self._info_or_trait(self._remote_info(), "ssh_remote_key", self.ssh_remote_key)

    async def get_ssh_forward_remote_options(self):
        return await self._info_or_trait(self._remote_info(), "ssh_forward_remote_options", self.ssh_forward_remote_options)

    async def get_ssh_create_remote_forward(self):
        return await resolve(self.ssh_create_remote_forward, self, self._remote_info())

    async def get_ssh_recreate_at_start(self):
        return await resolve(self.ssh_recreate_at_start, self)

    async def get_svc_create(self):
        return await self.svc_enabled()

    async def get_show_first_default_event(self):
        return await resolve(self.show_first_default_event, self)

    async def run_pre_poll_hook(self):
        """True (ask ``_poll()``) without a hook, as the original."""
        return True if self.pre_poll_hook is None else await resolve(self.pre_poll_hook, self)

    async def run_pre_stop_hook(self):
        return True if self.pre_stop_hook is None else await resolve(self.pre_stop_hook, self)

    async def run_update_start_response(self, response):
        if self.update_start_response is None:
            return response
        return await resolve(self.update_start_response, self, response)

    async def run_update_expected_path(self, url):
        if self.update_expected_path is None:
            return url
        return await resolve(self.update_expected_path, self, url)
