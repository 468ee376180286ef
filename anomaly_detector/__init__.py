"""anomaly_detector: watch logs as they are written, learn normal, raise explained alerts.

The package flows one way: inputs -> rings -> workers (parsing -> detection) -> alerting -> sinks.
"""
__version__ = "0.1.0"
