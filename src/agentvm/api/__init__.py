"""The HTTP surface: status JSON, Prometheus metrics, dashboard."""
