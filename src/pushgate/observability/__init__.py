"""Observing a running Pushgate: structured logs, request ids, metrics, readiness."""
