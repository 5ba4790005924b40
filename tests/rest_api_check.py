"""Check answers of the four forwardbasespawner routes against docs/source/_static/rest-api.yml.

Two ways to use it:

- ``check(method, path, status, body)`` (or :class:`ApiSpec`) in a test: raises AssertionError
  when the status is not documented for that route or the body does not match its schema;
- as a pytest plugin, ``pytest -p tests.rest_api_check``: every answer any test receives from
  these routes through ``tests.hubharness.Hub.request`` is checked, and a test that receives an
  undocumented one fails. Other paths pass through untouched.
"""

import functools
import json
import os
import re
from urllib.parse import urlsplit

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "source", "_static", "rest-api.yml")


class ApiSpec:
    """The OpenAPI document, with its operations matched by method and concrete path."""

    def __init__(self, path=SPEC_PATH):
        with open(path) as f:
            self.document = yaml.safe_load(f)
        self.prefix = self.document["servers"][0]["url"].rstrip("/")  # "/hub/api"
        self.registry = Registry().with_resource("urn:spec", Resource.from_contents(self.document, default_specification=DRAFT202012))
        self.routes = []
        for template, item in self.document["paths"].items():
            # the Hub's routes take an empty server name (".../alice/") as the default server
            pattern = re.sub(r"\{[^}]+\}", "([^/]+)", template)
            if template.endswith("/{server}"):
                pattern = pattern[: -len("([^/]+)")] + "([^/]*)"
            self.routes.append((re.compile(f"^{pattern}$"), template, item))

    def operation(self, method, path):
        """``(template, operation)`` for a request, or None when the path is not one of ours.
        ``path`` is relative to the API prefix or absolute (``/hub/api/...``, a full URL)."""
        path = urlsplit(path).path
        if path.startswith(self.prefix + "/"):
            path = path[len(self.prefix) :]
        for regex, template, item in self.routes:
            if regex.match(path):
                return template, item.get(method.lower())
        return None

    def _resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            node = self.registry.resolver(base_uri="urn:spec").lookup(node["$ref"].replace("#", "urn:spec#", 1)).contents
        return node

    def check(self, method, path, status, body):
        """Raise AssertionError unless ``status`` and ``body`` (parsed JSON, text or None) are
        documented for this request; return False for paths that are not ours, True otherwise."""
        found = self.operation(method, path)
        if found is None:
            return False
        template, operation = found
        where = f"{method.upper()} {template} (requested {path})"
        if operation is None:
            assert status == 405, f"{where}: the method is not documented, yet the answer was {status}"
            return True
        responses = operation["responses"]
        assert str(status) in responses, f"{where}: status {status} is not documented ({sorted(responses)}); body {body!r:.300}"
        response = self._resolve(responses[str(status)])
        content = response.get("content")
        if not content:
            assert body in (None, ""), f"{where}: {status} is documented without a body, got {body!r:.300}"
            return True
        schema = content["application/json"]["schema"]
        validator = jsonschema.Draft202012Validator(_absolute_refs(schema), registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        assert not errors, f"{where}: the {status} body does not match the spec: {errors[0].message} in {body!r:.300}"
        return True


def _absolute_refs(node):
    """A copy of a schema from the document whose local ``#/...`` references point into it."""
    if isinstance(node, dict):
        return {k: ("urn:spec" + v if k == "$ref" and v.startswith("#") else _absolute_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_absolute_refs(v) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def spec():
    return ApiSpec()


def check(method, path, status, body):
    return spec().check(method, path, status, body)


# ------------------------------------------------------------------ the opt-in pytest plugin
CHECKED = []  # (method, template, status) of every answer checked in this run


def pytest_configure(config):
    from tests import hubharness

    original = hubharness.Hub.request
    if getattr(original, "_rest_api_checked", False):
        return

    @functools.wraps(original)
    async def request(self, method, path, *args, **kwargs):
        status, reply = await original(self, method, path, *args, **kwargs)
        if check(method, path, status, reply):
            CHECKED.append((method.upper(), spec().operation(method, path)[0], status))
        return status, reply

    request._rest_api_checked = True
    hubharness.Hub.request = request


def pytest_terminal_summary(terminalreporter):
    if CHECKED:
        counts = {}
        for key in CHECKED:
            counts[key] = counts.get(key, 0) + 1
        terminalreporter.write_line(f"rest_api_check: {len(CHECKED)} answers of the four routes matched the spec:")
        for (method, template, status), n in sorted(counts.items()):
            terminalreporter.write_line(f"  {method:5} {template} {status}: {n}")


def load_json(text):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


__all__ = ["ApiSpec", "CHECKED", "SPEC_PATH", "check", "load_json", "spec"]
