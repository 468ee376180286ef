"""The interface every detection tier implements, and the values tiers hand to the engine.

Modelled on river's learn_one/score_one, in batch form over a ParsedBatch (parsing/batch.py).
The engine (detection/engine.py) combines tier scores into line scores and incidents.

Per batch the engine calls, for each enabled tier: advance(watermark before the batch) -> Findings, then
score(batch, ctx) -> TierResult, then learn(batch, ctx, weights). Tiers are constructed
Tier(settings) with settings = their [detection][[tierN]] config section plus
"learning_rate" and "warmup_lines" from [detection].
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
    about    int64[n] or None: what each line's score is about, for grouping into incidents (a
             template id, or -1 for its whole source); None: each line's own template
    began    {line index: event time the evidence that scored it began} where that is well before
             the line (a slow burst's first line): it joins the incident open since then
    blame    {line index: source id} where the line's evidence is about another source than its own
             (a workflow step skipped: the source that should have logged it)
    """

    scores: np.ndarray
    reasons: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)
    observed: dict = field(default_factory=dict)
    about: np.ndarray = None
    began: dict = field(default_factory=dict)
    blame: dict = field(default_factory=dict)


@dataclass
class BatchContext:
    """What the engine tells every tier about a batch, beside the batch itself.

    now          event-time watermark after this batch (max finite ts seen so far), epoch s
    lines_seen   lines learned before this batch (tiers compare it with their own warm-up)
    warm         True once the engine-wide warm-up ([detection] warmup_lines) is over
    n_templates  every template_id in the batch is < n_templates (size per-template arrays)
    ts           float64[n] batch.ts with gaps filled (NaN -> previous line's time), so
                 tiers never see NaN; batch.ts itself keeps the raw value for output
    template_text  callable tid -> template string with <*> (explanations only)
    source_name    callable source_id -> source name (explanations only)
    gaps         ((start, end), ...) the input's gaps up to this batch's lines (lines lost on the way,
                 tier2_volume.input_gaps): what they cut is not the sources' doing
    """

    now: float
    lines_seen: int
    warm: bool
    n_templates: int
    ts: np.ndarray
    template_text: object = str
    source_name: object = str
    gaps: tuple = ()


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
    # Seen again before it was raised (a drop still low after drop_hold_seconds): two tests ten minutes
    # apart back it, so it opens an incident from its tier's own minimum, below anomaly_threshold.
    confirmed: bool = False
    # Start of the span the finding covers, where it is about absence (a source with no line since then):
    # an incident of its source that opened inside that span is about the same outage (see IncidentBook).
    since: float | None = None


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

    def set_learning_rate(self, rate):
        """Change how fast state follows the stream (engine calls it at run time)."""
        self.learning_rate = float(rate)

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

    def load_state(self, state):  # noqa: B027 - optional hook: a stateless tier restores nothing
        """Restore from state(); unknown or missing keys fall back to a cold start."""
