"""The same Service life cycle against a real cluster, when one is configured.

Set FBS_KUBECONFIG to a kubeconfig (and FBS_K8S_NAMESPACE, default "default") to run it; without
one it is skipped, and pytest reports it as skipped.
"""

import logging
import os

import pytest

from forwardbasespawner.k8s.client import ServiceClient
from forwardbasespawner.k8s.names import service_name
from forwardbasespawner.k8s.objects import is_ours, make_service, service_labels

KUBECONFIG = os.environ.get("FBS_KUBECONFIG", "")
pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="no real cluster configured (set FBS_KUBECONFIG)")


async def test_service_round_trip_on_a_real_cluster(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", KUBECONFIG)
    namespace = os.environ.get("FBS_K8S_NAMESPACE", "default")
    user, server = "fbs-test@example.org", "real-cluster"
    name = service_name("jupyter-{username}--{servername}", user, 0, server, namespace)
    svc = make_service(name, namespace, 40123, {"component": "fbs-test"}, service_labels(user, server, "fbs-test"), user, server)
    client = ServiceClient(logging.getLogger("real-cluster"))
    try:
        created = await client.create_service(svc, lambda e: is_ours(e, "fbs-test", user, server))
        assert created["spec"]["ports"][0]["targetPort"] == 40123
        again = await client.create_service(svc, lambda e: is_ours(e, "fbs-test", user, server))
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
    finally:
        await client.delete_service(name, namespace)
        await client.close()
