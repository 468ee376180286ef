"""The interface every detection tier implements, and the values tiers hand to the engine.

Modelled on river's learn_one/score_one, in batch form over a ParsedBatch (parsing/batch.py).
The engine (detection/engine.py) combines tier scores into line scores and incidents.
"""
import abc
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TierResult:
    """Scores for one batch from one tier.

    scores   float32[n], 0..100 (0 = nothing unusual)
    reasons  {line index: short human reason} for lines whose score is worth explaining
    expected {line index: what the model expected}, observed likewise: for incident text
    """

    scores: np.ndarray
    reasons: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    observed: dict = field(default_factory=dict)


@dataclass
class Finding:
    """An anomaly no single line carries (a source went silent, a session never finished)."""

    tier: str
    ts: float
    key: str          # what it is about: "source:web", "template:17", "session:blk_42"
    score: float      # 0..100
    reason: str
    expected: str = ""
    observed: str = ""
    template_id: int = -1
    source: str = ""


class Tier(abc.ABC):
    """Base class: score a batch against current state, then learn from it.

    Subclasses keep all state inside themselves, serialisable with state()/load_state()
    (JSON-able dicts; numpy arrays as lists), and put hot loops in numba kernels beside them.
    """

    name = "t?"

    def __init__(self, settings):
        self.settings = settings
        self.enabled = True
        self.learning_rate = float(settings.get("learning_rate", 0.01))

    @abc.abstractmethod
    def score(self, batch, ctx):
        """Return a TierResult for every line of `batch` (state is not changed)."""

    @abc.abstractmethod
    def learn(self, batch, ctx, weights):
        """Update state from `batch`; weights float32[n] (0 = do not learn this line)."""

    def advance(self, event_time):
        """Move event time forward; return Findings not tied to a line (default: none)."""
        return []

    def state(self):
        return {}

    def load_state(self, state):
        """Restore from state(); unknown or missing keys fall back to a cold start."""
