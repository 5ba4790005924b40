"""The adversarial suite's spawner: the simulated remote system with the operator policy traits."""

from forwardbasespawner.policy import APIPolicy
from tests.remotesim import SimulatedRemoteSpawner

# APIPolicy is mixed in here until ForwardBaseSpawner carries it itself
_BASES = (SimulatedRemoteSpawner,) if issubclass(SimulatedRemoteSpawner, APIPolicy) else (APIPolicy, SimulatedRemoteSpawner)


class AdversarialSpawner(*_BASES):
    pass
