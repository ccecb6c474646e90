"""Prometheus metrics for Pulses: ``pulses worker --metrics-port``, or in your own process.

Needs the ``prometheus`` extra: ``pip install 'pulses-core[prometheus]'``. In a program
that runs an App itself::

    from prometheus_client import REGISTRY, start_http_server
    from pulses.prometheus import Metrics

    metrics = Metrics()  # a middleware: times each handle() call
    app = App(broker, subscription, middleware=[metrics]).register(...)

    async def main() -> None:
        REGISTRY.register(metrics.collector(app))  # in the loop that runs the app
        start_http_server(9100)
        await app.run(token)

Every metric, its labels and what to alert on: docs/observability.md.
"""

from __future__ import annotations

try:
    import prometheus_client  # noqa: F401  (only to fail here, naming the extra)
except ImportError as exc:  # pragma: no cover - the tests run with the extra installed
    raise ImportError(
        "pulses.prometheus needs prometheus-client: pip install 'pulses-core[prometheus]'"
    ) from exc

from pulses._metrics import Metrics, PulsesCollector
from pulses._public import claim as _claim
from pulses._stats import DURATION_BUCKETS

__all__ = ["DURATION_BUCKETS", "Metrics", "PulsesCollector"]

_claim(__name__, globals())
