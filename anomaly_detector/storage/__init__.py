"""Durable state on disk: atomic, versioned, checksummed snapshots."""
