"""Spawners without a Hub, for unit tests: JupyterHub's user, Hub and ORM objects are stand-ins."""

from types import SimpleNamespace

from jupyterhub.objects import Hub

from forwardbasespawner import ForwardBaseSpawner


class Remote(ForwardBaseSpawner):
    polled = 0

    async def _start(self):
        return "node1.cluster:9000"

    async def _poll(self):
        self.polled += 1
        return None

    async def _stop(self, now=False, **kwargs):
        pass


def make(name="alice@example.org", server="gpu/1", cls=Remote, **kwargs):
    """A ``cls`` (default: :class:`Remote`) for ``name``'s ``server``, with ``kwargs`` as its traits."""
    user = SimpleNamespace(name=name, url=f"/user/{name}/", escaped_name=name, id=7)
    hub = Hub(ip="127.0.0.1", port=8081, base_url="/hub/")
    orm_spawner = SimpleNamespace(name=server, display_name="", server=None, state=None, user_options={})
    return cls(user=user, hub=hub, orm_spawner=orm_spawner, **kwargs)
