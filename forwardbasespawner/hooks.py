"""Resolve configuration values that may be plain values, sync callables or async callables."""

import inspect

from traitlets import Callable, Union


def value_or_callable(trait, **kwargs):
    """A config trait that takes ``trait``'s kind of value, or a sync or async callable."""
    return Union([Callable(), trait], config=True, **kwargs)


def _fitting_args(func, args):
    """The leading part of ``args`` that ``func`` accepts.

    Lets a hook written for a shorter signature, e.g. ``extra_labels(spawner)``, keep working
    where the base now passes ``(spawner, user_options)``.
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # builtins without a signature
        return args
    params = signature.parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return args
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return args[: len(positional)]


async def resolve(value, *args):
    """Return ``value``; if it is callable, call it with ``args`` and await the result if needed."""
    if callable(value):
        value = value(*_fitting_args(value, args))
    if inspect.isawaitable(value):
        value = await value
    return value


def resolve_sync(value, *args):
    """Like :func:`resolve` for synchronous call sites; an awaitable result is an error."""
    if callable(value):
        value = value(*_fitting_args(value, args))
    if inspect.isawaitable(value):
        if hasattr(value, "close"):
            value.close()  # avoid "coroutine was never awaited"
        raise TypeError("this hook is used where the Hub cannot await; give a value or a sync callable")
    return value
