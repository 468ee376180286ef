"""What every sink shares: the DeliveryError it raises and the default no-op hooks."""
import abc

# Bounded reasons of alerts_failed_total{reason}.
FAILURE_REASONS = ("timeout", "connect", "refused_address", "redirect", "http_5xx", "http_4xx", "smtp_4xx", "auth",
                   "rejected", "io")


def situation_text(event, limit=1000):
    """One line telling an event's situation (alerting/noise.py adds it when its incident is linked to
    others): "situation s-...: first cause db (95% sure); db: ... from 10:02:10; app: ..."; "" without one."""
    story = event.get("situation")
    if not isinstance(story, dict):
        return ""
    cause = story.get("first_cause") or {}
    text = "situation %s: first cause %s (%d%% sure); %s" % (
        story.get("id", ""), cause.get("source", ""), round(100 * float(story.get("confidence", 0.0))),
        "; ".join(str(e) for e in story.get("evidence", [])))
    return text[:limit]


class DeliveryError(Exception):
    """The receiver did not take the event. retry False: it never will (the event is skipped, counted)."""

    def __init__(self, reason, message, retry=True):
        super().__init__(message)
        assert reason in FAILURE_REASONS, reason
        self.reason, self.retry = reason, retry


class Sink(abc.ABC):
    """Base: send() is the one method a sink must have."""

    name = ""
    type = ""
    groups = True   # several incidents opened together go out as one message (alerting/noise.py)

    @abc.abstractmethod
    def send(self, event):
        """Deliver one event, or raise DeliveryError."""

    @abc.abstractmethod
    def send_group(self, events):
        """Deliver several events as one message listing them (a group, a quiet-hours digest)."""

    def takes(self, event):
        """Whether this sink delivers `event` at all (the redis sink: not what was read from its stream)."""
        return True

    def tick(self, now):
        """Called when the queue is empty; returns when it wants to be called again (None: no need)."""
        return None

    def state(self):
        return {}

    def restore(self, state):  # noqa: B027 - a hook: most sinks keep no state
        """Take back what state() gave (after a restart)."""

    def close(self):  # noqa: B027 - a hook: most sinks hold nothing open
        """Release what the sink holds (connections)."""
