"""Resolve configuration values that may be plain values, sync callables or async callables."""

import inspect

from traitlets import Callable, Integer, Union


def value_or_callable(trait, **kwargs):
    """A config trait that takes ``trait``'s kind of value, or a sync or async callable.

    None is accepted too and means "not set" (configuration files written for the original
    package use None for unset values); the code that reads the trait falls back to its default.
    """
    kwargs.setdefault("allow_none", True)
    return Union([Callable(), trait], config=True, **kwargs)


class Hook(Callable):
    """A config trait for an optional hook: a sync or async callable, or None for "no hook".

    False is taken as None: configuration files written for the original package use it.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("default_value", None)
        super().__init__(allow_none=True, config=True, **kwargs)

    def validate(self, obj, value):
        if value is False:
            return None
        return super().validate(obj, value)


class PortNumber(Integer):
    """An Integer trait that also takes a string of digits ("2222"), as old configurations do."""

    def validate(self, obj, value):
        if isinstance(value, str) and value.strip().isdigit() and value.strip().isascii():
            value = int(value.strip())
        return super().validate(obj, value)


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


def resolve_sync_or_awaitable(value, *args):
    """Like :func:`resolve`, without awaiting: for methods that the original package offered as
    plain functions; an async hook's result is returned as an awaitable (use :func:`settle`)."""
    if callable(value):
        value = value(*_fitting_args(value, args))
    return value


async def settle(value):
    """``value``, awaited if it is awaitable: for methods a subclass may override sync or async."""
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
