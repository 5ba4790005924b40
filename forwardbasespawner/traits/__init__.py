"""The configuration of ForwardBaseSpawner, declared by topic: one module and one class of traits each.

ForwardBaseSpawner inherits every class here; the behaviour that reads the traits lives elsewhere
(spawner.py, ssh/, k8s/, api/). The configuration reference in the docs is generated from these
declarations, grouped the same way.
"""

from .api import APIPolicy
from .events import EventTraits
from .kubernetes import KubernetesTraits
from .lifecycle import LifecycleTraits
from .server_to_hub import RemoteForwardTraits
from .ssh import SSHTunnelTraits

__all__ = ["APIPolicy", "EventTraits", "KubernetesTraits", "LifecycleTraits", "RemoteForwardTraits", "SSHTunnelTraits"]
