import pytest

from forwardbasespawner.hooks import resolve, resolve_sync


async def test_value_sync_and_async_callables():
    assert await resolve(5, "spawner") == 5
    assert await resolve(lambda s: s + "!", "spawner") == "spawner!"

    async def hook(spawner, info):
        return (spawner, info)

    assert await resolve(hook, "s", {"a": 1}) == ("s", {"a": 1})


async def test_shorter_signature_gets_leading_arguments():
    # extra_labels was (spawner) in old configs and is (spawner, user_options) now
    assert await resolve(lambda spawner: spawner, "s", {"opt": 1}) == "s"
    assert await resolve(lambda *args: args, "s", {"opt": 1}) == ("s", {"opt": 1})


def test_sync_resolution_refuses_async_hooks():
    async def hook(spawner):
        return 1

    with pytest.raises(TypeError, match="cannot await"):
        resolve_sync(hook, "s")
    assert resolve_sync(lambda s: 2, "s") == 2
