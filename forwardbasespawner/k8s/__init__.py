"""Kubernetes Services that make the Hub pod's forwards reachable for the proxy."""
