"""Traits of the Kubernetes Service that makes a tunnel reachable for the proxy.

Declarations only (ForwardBaseSpawner mixes the class in; the behaviour is in
:mod:`forwardbasespawner.k8s`).
"""

from traitlets import Bool, Dict, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from ..hooks import Hook, value_or_callable

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class KubernetesTraits(LoggingConfigurable):
    """Settings of the per-server Kubernetes Service and of the API client."""

    svc_create = value_or_callable(
        Bool(),
        default_value=None,
        allow_none=True,
        help="""
        Create a Kubernetes Service for each tunnelled server, so the proxy pod reaches the Hub pod's
        forward.

        Default: None (yes when the Hub runs in Kubernetes, judged by KUBERNETES_SERVICE_HOST).
        Signature when callable: ``svc_create(spawner) -> bool``, sync or async.

        Example::

            c.ForwardBaseSpawner.svc_create = True
        """,
    )

    svc_name_template = Unicode(
        "jupyter-{username}--{servername}",
        config=True,
        help="""
        The Service name, with KubeSpawner's keys: {username}, {servername}, {user_server},
        {userid}, {unescaped_username}, {unescaped_servername}, {escaped_username},
        {escaped_servername}, {hubnamespace}. The result is made a valid DNS-1035 name of at most
        63 characters; where that changes it, a hash of the raw names keeps it unique.

        Default: "jupyter-{username}--{servername}".

        Example::

            c.ForwardBaseSpawner.svc_name_template = "remote-{userid}-{servername}"
        """,
    )

    dns_name_template = Unicode(
        "{name}.{namespace}.svc.cluster.local",
        config=True,
        help="""
        The address the proxy uses for the Service; keys {name} and {namespace}.

        Default: "{name}.{namespace}.svc.cluster.local".

        Example::

            c.ForwardBaseSpawner.dns_name_template = "{name}.{namespace}"
        """,
    )

    namespace = Unicode(
        config=True,
        help="""
        The namespace of the Services.

        Default: the Hub pod's own namespace (from its service account), else "default".

        Example::

            c.ForwardBaseSpawner.namespace = "jupyterhub"
        """,
    )

    @default("namespace")
    def _default_namespace(self):
        try:
            with open(SERVICE_ACCOUNT_NAMESPACE) as f:
                return f.read().strip()
        except OSError:
            return "default"

    extra_labels = value_or_callable(
        Dict(),
        help="""
        Labels added to each Service.

        Default: {}. Signature when callable: ``extra_labels(spawner)`` or
        ``extra_labels(spawner, user_options)``, sync or async, returning a dict.

        Example::

            c.ForwardBaseSpawner.extra_labels = lambda spawner, user_options: {"system": user_options.get("system", "")}
        """,
    )

    ssh_custom_svc = Hook(
        help="""
        Replace the built-in Service creation.

        Default: None. Signature: ``ssh_custom_svc(spawner, port_forward_info) -> (host, port)``,
        sync or async: where the proxy reaches the server.

        Example::

            c.ForwardBaseSpawner.ssh_custom_svc = lambda spawner, info: ("tunnels.example.org", spawner.port)
        """,
    )

    ssh_custom_svc_remove = Hook(
        help="""
        Replace the built-in Service removal (pairs with ``ssh_custom_svc``).

        Default: None. Signature: ``ssh_custom_svc_remove(spawner, port_forward_info)``, sync or async.

        Example::

            c.ForwardBaseSpawner.ssh_custom_svc_remove = my_svc_remove
        """,
    )

    k8s_hub_selector = Dict(
        config=True,
        help="""
        The pod selector of the Hub pod, which the Services point to.

        Default: {} (read the selector of the Hub's own Service, ``k8s_hub_service_name``).

        Example::

            c.ForwardBaseSpawner.k8s_hub_selector = {"app": "jupyterhub", "component": "hub", "release": "jhub"}
        """,
    )

    k8s_hub_service_name = Unicode(
        "hub",
        config=True,
        help="""
        The Hub's own Service (its selector is used when ``k8s_hub_selector`` is empty).

        Default: "hub" (as Zero to JupyterHub names it).

        Example::

            c.ForwardBaseSpawner.k8s_hub_service_name = "jhub-hub"
        """,
    )

    k8s_hub_id = Unicode(
        "jupyterhub",
        config=True,
        help="""
        This Hub's identity in the labels of its Services: start-up clean-up deletes only Services
        with this identity. Give each Hub sharing a namespace its own.

        Default: "jupyterhub".

        Example::

            c.ForwardBaseSpawner.k8s_hub_id = "jhub-production"
        """,
    )

    k8s_owner_reference = Dict(
        config=True,
        help="""
        An ownerReference put on every Service, so the cluster deletes them with their owner
        (e.g. the Hub's Deployment).

        Default: {} (none).

        Example::

            c.ForwardBaseSpawner.k8s_owner_reference = {
                "apiVersion": "apps/v1", "kind": "Deployment", "name": "hub", "uid": "<the Deployment's uid>",
            }
        """,
    )

    k8s_api_host = Unicode(
        "",
        config=True,
        help="""
        The Kubernetes API server, when neither in-cluster configuration nor a kubeconfig applies.

        Default: "" (in-cluster, else the kubeconfig of the Hub's user).

        Example::

            c.ForwardBaseSpawner.k8s_api_host = "https://k8s.example.org:6443"
        """,
    )

    k8s_api_token = Unicode("", config=True, help='Bearer token for ``k8s_api_host``. Default: "".')

    k8s_api_ca_file = Unicode("", config=True, help='CA bundle for ``k8s_api_host``. Default: "" (system).')

    k8s_api_retries = Integer(5, config=True, help="Attempts per API call on 5xx, 429, timeouts, resets. Default: 5.")

    k8s_api_timeout = Float(10, config=True, help="Seconds per API request. Default: 10.")
