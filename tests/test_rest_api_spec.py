"""docs/source/_static/rest-api.yml against a real Hub: the document is valid OpenAPI 3.1, every
status it documents is produced and matches it, and a schema-driven fuzzer (schemathesis) gets
only documented answers, never a 5xx."""

import asyncio
import secrets
import shutil

import hypothesis
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi
from schemathesis import checks as st_checks

from tests.conftest import ssh_config
from tests.hubharness import Hub, server_token
from tests.processes import process_environ, processes_with
from tests.rest_api_check import SPEC_PATH, spec

pytestmark = pytest.mark.slow
LISTER = secrets.token_hex(16)
WATCHER = secrets.token_hex(16)


def test_the_document_is_valid_openapi_3_1():
    with open(SPEC_PATH) as f:
        document = yaml.safe_load(f)
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)


def test_the_document_names_exactly_the_routes_of_the_code():
    from forwardbasespawner.api import ROUTES

    documented = set(spec().document["paths"])
    assert len(ROUTES) == 6 and len(documented) == 6
    for pattern, handler in ROUTES:
        path = pattern.removeprefix("/api")
        matches = [t for t in documented if spec().operation("GET", path.replace("([^/]+)", "x").replace("([^/]*)", "y"))[0] == t]
        assert matches, pattern
        methods = {m for m in ("get", "post", "put", "patch", "delete") if getattr(handler, m) is not getattr(
            handler.__mro__[1], m, None) or m in handler.__dict__}  # fmt: skip
        assert set(spec().document["paths"][matches[0]]) - {"parameters"} == methods, (pattern, methods)


@pytest.fixture(scope="module")
async def hub(tmp_path_factory, sshd):
    directory = tmp_path_factory.mktemp("hub")
    config = (
        ssh_config(sshd, f"{directory}/ctl")
        + f"""
c.SimulatedRemoteSpawner.setuptunnel_allowed_nodes = ["127.0.0.1", "127.0.0.2"]  # nothing listens on .2
c.SimulatedRemoteSpawner.ssh_master_start_timeout = 5
c.JupyterHub.custom_scopes = {{
    "custom:servers:list": {{"description": "list servers"}},
    "custom:sshnode:restart": {{"description": "rebuild the tunnels through a node"}},
}}
c.JupyterHub.services += [{{"name": "lister", "api_token": {LISTER!r}}}, {{"name": "watcher", "api_token": {WATCHER!r}}}]
c.JupyterHub.load_roles += [
    {{"name": "lister", "scopes": ["custom:servers:list"], "services": ["lister"]}},
    {{"name": "watcher", "scopes": ["custom:sshnode:restart"], "services": ["watcher"]}},
]
"""
    )
    hub = Hub(directory, extra_config=config)
    try:
        await hub.start()
        yield hub
    finally:
        await hub.close()
        shutil.rmtree(directory, ignore_errors=True)


SEEN = set()  # (operationId, status) produced by test_every_documented_status


async def call(hub, method, path, token=None, **kwargs):
    status, body = await hub.request(method, path, token=token, **kwargs)
    spec().check(method, path, status, body)
    _, operation = spec().operation(method, path)
    SEEN.add((operation["operationId"], status))
    return status, body


async def running(hub, user, server, options):
    await hub.request("POST", f"/users/{user}")
    status, reply = await hub.request("POST", f"/users/{user}/servers/{server}", body=options)
    assert status in (201, 202), reply
    if not options.get("later"):
        await hub.wait_ready(user, server)

    async def started():
        return len(processes_with(f"fbs-sim-{user}-{server or 'default'}-")) == 1

    await hub.wait_for(started)
    return server_token(f"fbs-sim-{user}-{server or 'default'}-")


async def stopped(hub, user, server):
    await hub.request("POST", f"/users/{user}")
    await hub.request("POST", f"/users/{user}/servers/{server}", body={})
    await hub.wait_ready(user, server)
    await hub.request("DELETE", f"/users/{user}/servers/{server}")
    await hub.wait_stopped(user, server)


async def test_every_documented_status(hub, no_leaks):
    no_leaks += ["fbs-sim-rita-", "fbs-sim-tess-", "fbs-sim-uma-"]
    await running(hub, "rita", "", {})  # default server: events
    await running(hub, "rita", "s", {})  # named server: events
    await stopped(hub, "rita", "gone")
    token_default = server_token("fbs-sim-rita-default-")
    token_named = server_token("fbs-sim-rita-s-")
    bad = {"Authorization": "token not-a-token"}

    for base, token in (("/users/progress/events/rita", token_default), ("/users/progress/events/rita/s", token_named)):
        assert (await call(hub, "GET", base))[0] == 200
        assert (await call(hub, "GET", base, token=token))[0] == 403  # a server's token lacks read:servers
        assert (await call(hub, "POST", base, token=token, body={"progress": 50, "message": "ok"}))[0] == 204
        assert (await call(hub, "POST", base, token=token, body={}))[0] == 400
        assert (await call(hub, "POST", base, headers=bad, body={"progress": 1}))[0] == 403
        assert (await call(hub, "POST", base, token=token, data=b"x" * 70000))[0] == 413
    for base in ("/users/progress/events/nobody", "/users/progress/events/rita/nosuchserver"):
        assert (await call(hub, "GET", base))[0] == 404
        assert (await call(hub, "POST", base, body={"progress": 1}))[0] == 404
    assert (await call(hub, "POST", "/users/progress/events/rita/gone", body={"progress": 1}))[0] == 409
    for base, token in (("/users/progress/events/rita", token_default), ("/users/progress/events/rita/s", token_named)):
        await until_429(hub, base, token, 2000, lambda i: {"progress": 1})  # beyond events_post_burst

    # SetupTunnel: servers that wait for it, on the default and on a named server
    for user, server in (("rita", "t"), ("tess", "")):
        token = await running(hub, user, server, {"later": True, "quiet": True})
        base = f"/users/setuptunnel/{user}" + (f"/{server}" if server else "")
        port = sim_port(user, server)
        assert (await call(hub, "POST", base, token=token, body={"port": 1}))[0] == 400
        assert (await call(hub, "POST", base, token=token, body={"service": "127.0.0.1:1", "ssh_key": "/k"}))[0] == 403
        assert (await call(hub, "POST", base, token=token, data=b" " * 17000))[0] == 413
        assert (await call(hub, "POST", base, headers=bad, body={"service": "127.0.0.1:1"}))[0] == 403
        assert (await call(hub, "POST", base, token=token, body={"service": f"127.0.0.1:{port}"}))[0] == 204
        await hub.wait_ready(user, server)
        assert (await call(hub, "POST", base, token=token, body={"service": f"127.0.0.1:{port}"}))[0] == 204  # again
    # moving the tunnel more often than setuptunnel_max_changes in one start: 429
    uma = await running(hub, "uma", "", {"later": True, "quiet": True})
    for base, token in (("/users/setuptunnel/rita/t", server_token("fbs-sim-rita-t-")), ("/users/setuptunnel/uma", uma)):
        await until_429(hub, base, token, 50, lambda i: {"service": f"127.0.0.1:{i + 1}"})
    for base in ("/users/setuptunnel/nobody", "/users/setuptunnel/rita/nosuchserver"):
        assert (await call(hub, "POST", base, body={"service": "127.0.0.1:1"}))[0] == 404
    assert (await call(hub, "POST", "/users/setuptunnel/rita/gone", body={"service": "127.0.0.1:1"}))[0] == 409
    # a jump node that does not answer: 422, and the spawn ends
    token = await running(hub, "tess", "u", {"later": True, "quiet": True})
    status, reply = await call(hub, "POST", "/users/setuptunnel/tess/u", token=token,
                               body={"service": "127.0.0.1:1", "ssh_node": "127.0.0.2"})  # fmt: skip
    assert status == 422, reply
    await hub.wait_stopped("tess", "u")
    # the default server moves its tunnel to that node: 422, the server is stopped, then 409
    status, reply = await call(hub, "POST", "/users/setuptunnel/tess", body={"service": "127.0.0.1:1", "ssh_node": "127.0.0.2"})
    assert status == 422, reply
    await hub.wait_stopped("tess", "")
    assert (await call(hub, "POST", "/users/setuptunnel/tess", body={"service": "127.0.0.1:1"}))[0] == 409
    assert (await call(hub, "POST", "/users/progress/events/tess", body={"progress": 1}))[0] == 409

    # ListServers
    status, names = await call(hub, "GET", "/servers", token=LISTER)
    assert status == 200 and len(names) == 4 and all(n.count("_") >= 2 for n in names), names
    status, objects = await call(hub, "GET", "/servers?format=objects&limit=2&offset=0", token=LISTER)
    assert status == 200 and len(objects) == 2 and {o["state"] for o in objects} <= {"running", "pending"}
    for query in ("format=xml", "limit=0", "offset=-1", "limit=10001"):
        assert (await call(hub, "GET", f"/servers?{query}", token=LISTER))[0] == 400
    assert (await call(hub, "GET", "/servers", token=WATCHER))[0] == 403

    # SSHNodeRestarted, POST and GET
    for method in ("POST", "GET"):
        status, reply = await call(hub, method, "/recreateforward/127.0.0.1", token=WATCHER)
        assert status == 202 and reply["node"] == "127.0.0.1" and reply["jump_hosts"] == ["127.0.0.1"], reply
        assert (await call(hub, method, "/recreateforward/not_a%20host", token=WATCHER))[0] == 400
        assert (await call(hub, method, "/recreateforward/127.0.0.1", token=LISTER))[0] == 403

    for user, server in (("rita", ""), ("rita", "s"), ("rita", "t"), ("uma", "")):
        await hub.request("DELETE", f"/users/{user}/servers/{server}")
    for user, server in (("rita", ""), ("rita", "s"), ("rita", "t"), ("uma", "")):
        await hub.wait_stopped(user, server)

    documented = {
        (operation["operationId"], int(status))
        for item in spec().document["paths"].values()
        for method, operation in item.items()
        if method != "parameters"
        for status in operation["responses"]
    }
    assert documented - SEEN == set(), f"documented but never produced: {sorted(documented - SEEN)}"
    assert SEEN - documented == set()


async def until_429(hub, path, token, limit, body):
    """POST ``body(i)`` until the answer is 429 (at most ``limit`` times); every other answer is 204."""
    statuses = []
    for i in range(limit):
        status = (await call(hub, "POST", path, token=token, body=body(i)))[0]
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429 and set(statuses) <= {204, 429}, (len(statuses), sorted(set(statuses)))
    return statuses


def sim_port(user, server):
    """The port the simulated remote server of ``user``'s ``server`` listens on."""
    (pid,) = processes_with(f"fbs-sim-{user}-{server or 'default'}-")
    return int(process_environ(pid)["FBS_SIM_PORT"])


# ------------------------------------------------------------------ the fuzzer

FUZZ_CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]
FUZZ_SETTINGS = hypothesis.settings(
    max_examples=25, deadline=None, derandomize=True, database=None, phases=[hypothesis.Phase.generate],
    suppress_health_check=list(HealthCheck),
)  # fmt: skip


def fuzz_operation(hub, operation, mode, pinned, headers):
    """Draw cases of ``operation`` and send each to the Hub; every answer must be documented."""
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned or None)
    answers = []

    @FUZZ_SETTINGS
    @hypothesis.given(case=strategy, auth=st.sampled_from(sorted(headers)))
    def run(case, auth):
        response = case.call(base_url=hub.url + "/hub/api", headers=headers[auth], timeout=30)
        answers.append(response.status_code)
        case.validate_response(response, checks=FUZZ_CHECKS, headers=headers[auth])

    run()
    return answers


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
async def test_fuzzer_gets_documented_answers_only(hub, mode, no_leaks):
    no_leaks.append("fbs-sim-fuzz-")
    token = await running(hub, "fuzz", "f", {"later": True, "quiet": True})
    schema = schemathesis.openapi.from_path(SPEC_PATH)
    headers = {
        "admin": {"Authorization": f"token {hub.admin_token}"},
        "server": {"Authorization": f"token {token}"},
        "lister": {"Authorization": f"token {LISTER}"},
        "watcher": {"Authorization": f"token {WATCHER}"},
        "none": {},
    }
    statuses = []
    loop = asyncio.get_running_loop()
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            pins = [None]
            if "{user}" in operation.path:
                pins.append({"user": "fuzz", "server": "f"} if "{server}" in operation.path else {"user": "fuzz"})
            elif "{node}" in operation.path:
                pins.append({"node": "127.0.0.1"})
            for pinned in pins:
                statuses += await loop.run_in_executor(None, fuzz_operation, hub, operation, mode, pinned, headers)
    finally:
        await hub.request("DELETE", "/users/fuzz/servers/f")
        await hub.wait_stopped("fuzz", "f")
    print(f"fuzzer ({mode.value}): {len(statuses)} requests, statuses {sorted(set(statuses))}")
    assert len(statuses) >= 200 and all(s < 500 for s in statuses)
    if mode == schemathesis.GenerationMode.POSITIVE:
        assert any(s < 300 for s in statuses), "no generated request was accepted: the fuzzer only met the door"
