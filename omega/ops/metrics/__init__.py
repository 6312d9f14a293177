"""Prometheus metrics of a node: one registry per node, read at scrape time."""

from omega.ops.metrics.node import RESOURCE, NodeMetrics

__all__ = ["RESOURCE", "NodeMetrics"]
