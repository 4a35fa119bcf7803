"""Observability: JSON-lines logs, Prometheus metrics, and request traces (built, redacted, stored and exported over
OTLP by a background writer thread, never on the request path)."""
