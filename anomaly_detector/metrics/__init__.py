"""Metrics: declarations, Prometheus text exposition, and the sidecar's HTTP server."""
