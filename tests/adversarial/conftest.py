"""Shared pieces of the adversarial suite: the figures it reports, the canary, a Hub set up with
every kind of caller the authorization matrix needs."""

import json
import os
import secrets

import pytest

from tests.conftest import ssh_config
from tests.hubharness import running_hub

#: a file no request may ever create: every hostile input names it in a command
CANARY = "/tmp/fbs-adversarial-canary"

FIGURES = {"requests": 0, "status_5xx": 0, "faults_injected": 0, "events_lost": 0, "leaks": 0, "cells": 0}
LISTER_TOKEN = secrets.token_hex(16)
RESTARTER_TOKEN = secrets.token_hex(16)
ADMIN_SERVICE_TOKEN = secrets.token_hex(16)
BARE_SERVICE_TOKEN = secrets.token_hex(16)


def count(name, n=1):
    FIGURES[name] += n


def pytest_sessionfinish(session):
    path = os.environ.get("FBS_ADVERSARIAL_FIGURES")
    if path and FIGURES["requests"]:
        with open(path, "w") as f:
            json.dump(FIGURES, f, indent=1)


def pytest_terminal_summary(terminalreporter):
    if FIGURES["requests"] or FIGURES["faults_injected"]:
        terminalreporter.write_line("adversarial suite: " + ", ".join(f"{k}={v}" for k, v in FIGURES.items()))


@pytest.fixture(scope="module")
async def adv_hub(tmp_path_factory, sshd):
    """A Hub whose servers are simulated remote systems, tunnels through a real sshd, with the
    custom scopes and services of the authorization matrix."""
    directory = tmp_path_factory.mktemp("adv-hub")
    control = f"{directory}/ctl"
    config = (
        ssh_config(sshd, control, "AdversarialSpawner")
        + f"""
c.JupyterHub.spawner_class = "tests.adversarial.spawners.AdversarialSpawner"
c.AdversarialSpawner.ssh_check_interval = 1
c.AdversarialSpawner.ssh_restore_attempts = 2
c.AdversarialSpawner.ssh_during_startup = lambda spawner: bool((spawner.user_options or {{}}).get("tunnel"))
c.AdversarialSpawner.setuptunnel_allowed_nodes = ["127.0.0.1", "fd00:*"]
c.AdversarialSpawner.setuptunnel_allowed_keys = ["ssh_key", "ssh_forward_options", "ssh_username"]
c.AdversarialSpawner.setuptunnel_allowed_ssh_keys = [{sshd.client_key!r}]
c.AdversarialSpawner.setuptunnel_allowed_services = ["127.0.0.0/8:1024-65535"]
# the operator's own rule on top of the list: one port range is reserved on the nodes
c.AdversarialSpawner.setuptunnel_service_check = lambda spawner, host, port: not 4400 <= port < 4500 or "reserved ports"
c.Spawner.poll_interval = 1
c.JupyterHub.custom_scopes = {{
    "custom:sshnode:restart": {{"description": "rebuild the tunnels through a node"}},
    "custom:servers:list": {{"description": "list the running servers"}},
}}
c.JupyterHub.services += [
    {{"name": "lister", "api_token": {LISTER_TOKEN!r}}},
    {{"name": "restarter", "api_token": {RESTARTER_TOKEN!r}}},
    {{"name": "server-admin", "api_token": {ADMIN_SERVICE_TOKEN!r}}},
    {{"name": "bare", "api_token": {BARE_SERVICE_TOKEN!r}}},
]
c.JupyterHub.load_roles += [
    {{"name": "lister", "scopes": ["custom:servers:list"], "services": ["lister"]}},
    {{"name": "restarter", "scopes": ["custom:sshnode:restart"], "services": ["restarter"]}},
    {{"name": "server-admin", "scopes": ["admin:servers"], "services": ["server-admin"]}},
]
"""
    )
    async with running_hub(directory, config) as hub:
        yield hub
