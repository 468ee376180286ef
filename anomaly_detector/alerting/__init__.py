"""Alerting: incident events out of the workers (events.py), the on-disk outbox (outbox.py), the
alerter process that delivers them (alerter.py) and one module per sink (sinks/)."""
