"""A fleet's metrics from its TVs' expositions: the same names, summed.

A TV listens on no network address, so nothing scrapes it; the simulator (and
any fleet tool) collects each TV's ``ctl metrics`` text and ``aggregate`` adds
them up sample by sample (counters, histogram buckets/sums/counts, gauges), plus
``omega_fleet_tvs``: how many TVs were added. Means and quantiles of the fleet
follow from the summed histograms as from any Prometheus histogram.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

FLEET_TVS = "omega_fleet_tvs"


def sum_samples(expositions: Sequence[str]) -> list[Metric]:
    """Families of all ``expositions`` with every sample summed across them."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in expositions:
        for fam in text_string_to_metric_families(text):
            if fam.name not in families:
                families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            acc = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                acc[key] = acc.get(key, 0.0) + s.value
    out = []
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
        out.append(fam)
    return out


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def aggregate(expositions: Sequence[str]) -> str:
    """The fleet's exposition (text format) from each TV's."""
    metrics = [m for m in sum_samples(expositions)
               if m.name not in ("omega_node_info", "omega_node_uptime_seconds")]
    metrics.append(GaugeMetricFamily(FLEET_TVS, "TVs whose metrics were added",
                                     value=len(expositions)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(metrics))
    return generate_latest(registry).decode()
