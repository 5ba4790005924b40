"""Pure builders of the Kubernetes objects this library creates (no API calls here)."""

from .names import label_value

MANAGED_BY = "forwardbasespawner"
COMPONENT = "singleuser-server"
ANNOTATION_PREFIX = "forwardbasespawner.jupyter.org"


def service_labels(user_name, server_name, hub_id, extra=None):
    """The labels that mark a Service as ours, for this user's server and this Hub."""
    labels = {k: label_value(str(v)) for k, v in (extra or {}).items()}
    labels.update({
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "component": COMPONENT,
        "hub.jupyter.org/username": label_value(user_name),
        "hub.jupyter.org/servername": label_value(server_name),
        f"{ANNOTATION_PREFIX}/hub": label_value(hub_id),
    })  # fmt: skip
    return labels


def owner_selector(hub_id):
    """The label selector of every Service this Hub created."""
    return f"app.kubernetes.io/managed-by={MANAGED_BY},{ANNOTATION_PREFIX}/hub={label_value(hub_id)}"


def make_service(name, namespace, port, selector, labels, user_name, server_name, start_id="", owner=None):
    """A ClusterIP Service from ``port`` to the same port on the pods of ``selector`` (the Hub pod,
    where the forward listens). The raw user and server names go into annotations.

    ``owner``: an optional ownerReference dict (e.g. the Hub's Deployment) so that the cluster
    removes the Service together with it.
    """
    metadata = {
        "name": name,
        "namespace": namespace,
        "labels": dict(labels),
        "annotations": {
            f"{ANNOTATION_PREFIX}/username": user_name,
            f"{ANNOTATION_PREFIX}/servername": server_name,
            f"{ANNOTATION_PREFIX}/start-id": start_id,
        },
    }
    if owner:
        metadata["ownerReferences"] = [dict(owner)]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": dict(selector),
            "ports": [{"name": "notebook", "protocol": "TCP", "port": int(port), "targetPort": int(port)}],
        },
    }


def is_ours(service, hub_id, user_name, server_name):
    """Whether an existing Service (a dict as the API returns it) is this Hub's, for this server."""
    metadata = service.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    return (
        labels.get("app.kubernetes.io/managed-by") == MANAGED_BY
        and labels.get(f"{ANNOTATION_PREFIX}/hub") == label_value(hub_id)
        and annotations.get(f"{ANNOTATION_PREFIX}/username") == user_name
        and annotations.get(f"{ANNOTATION_PREFIX}/servername") == server_name
    )


def is_legacy_service(service, selector):
    """Whether an existing Service was made by the original package for this server's name.

    The original labelled its Services with the Hub pod's selector plus
    ``component: singleuser-server``, pointed them at the Hub pod, and left no owner marks. Such a
    Service, found under this server's name, is taken over (replaced by ours) after an upgrade.
    """
    metadata = service.get("metadata") or {}
    labels = metadata.get("labels") or {}
    spec = service.get("spec") or {}
    return (
        "app.kubernetes.io/managed-by" not in labels
        and labels.get("component") == COMPONENT
        and dict(spec.get("selector") or {}) == dict(selector)
    )
