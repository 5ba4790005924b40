"""Prometheus metrics of the tunnels, served by JupyterHub's own /hub/metrics."""

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

RESTORES = Counter(
    "forwardbasespawner_ssh_restores",
    "Restarts of an ssh master with its forwards re-added, by outcome",
    ["outcome"],
)
ADOPTIONS = Counter(
    "forwardbasespawner_ssh_adoptions",
    "ssh masters (outcome=master) and their forwards (outcome=forward) taken over from an earlier Hub process, per node",
    ["node", "outcome"],
)
TUNNEL_EVENTS = Counter(
    "forwardbasespawner_tunnel_events",
    "What happened to servers' tunnels, per node: restored (after a Hub restart), moved (to a fresh "
    "port because another process held theirs), given_up (the server ended after the grace period)",
    ["node", "event"],
)
NODE_REBUILDS = Counter(
    "forwardbasespawner_ssh_node_rebuilds",
    "ssh masters to a jump node reported restarted (SSHNodeRestarted), per node and outcome: left_alone "
    "(healthy: a rebuild would cut every connection through it) or rebuilt",
    ["node", "outcome"],
)
FORWARD_SETUP_SECONDS = Histogram(
    "forwardbasespawner_ssh_forward_setup_seconds",
    "Time to add one forward (including starting its master when needed)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class TunnelCollector:
    """Gauges read from the live managers at scrape time, so they never drift from the truth."""

    def __init__(self, managers):
        self.managers = managers

    def collect(self):
        masters = [m for manager in list(self.managers) for m in manager.masters.values()]
        failed = sum(len(manager.failed) for manager in list(self.managers))
        up = GaugeMetricFamily("forwardbasespawner_ssh_masters_up", "ssh masters connected and answering")
        up.add_metric([], sum(1 for m in masters if m.up))
        wanted = GaugeMetricFamily("forwardbasespawner_ssh_forwards_wanted", "Forwards the Hub keeps up")
        wanted.add_metric([], sum(len(m.wanted) for m in masters))
        carried = GaugeMetricFamily("forwardbasespawner_ssh_forwards_up", "Wanted forwards on a connected master")
        carried.add_metric([], sum(len(m.wanted) for m in masters if m.up))
        lost = GaugeMetricFamily("forwardbasespawner_ssh_forwards_failed", "Forwards that could not be restored")
        lost.add_metric([], failed)
        return [up, wanted, carried, lost]


def register_collector(managers):
    REGISTRY.register(TunnelCollector(managers))
