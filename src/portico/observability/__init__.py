"""Observability: structured logs now; traces and metrics arrive with their issue."""
