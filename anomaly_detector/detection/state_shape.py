"""Shape checks of restored tier state: a checksummed snapshot can still hold arrays no kernel can use.

engine.DetectionEngine.load calls check_state_arrays after each tier's load_state; a StateShapeError
makes storage.atomic set the file aside and try the previous generation, so no worker crash-loops.
"""
import numpy as np

from ..storage.atomic import StateShapeError

# Objects nested deeper than this inside a tier are not walked (tiers hold shallow state).
_MAX_DEPTH = 3
# Arrays indexed by the same id that kernels read together: one shorter than the others means
# reads past its end. Objects whose fresh arrays all share their first dimension are checked
# without being listed here (per-key baselines, seasonality tables, caches).
SAME_LENGTH = {
    "t3": (("template_count", "template_severe", "template_novelty", "template_seen_at", "template_open",
            "slot_index", "role_index"),
           ("num_stats", "cat_hash", "cat_count", "cat_nd", "cat_full", "cat_novelty", "cat_seen_at",
            "cat_last")),
    "t4": (("dur_n", "dur_mean", "dur_var"),),
}

# Arrays whose values index the rows of another array (-1: none): a value past the end is a read
# past the end in a kernel, which numba does not bounds-check.
INDEXES = {
    "t3": (("slot_index", "num_stats"),),
    "t4": (("store.wf", "dur_n"),),
}


def check_state_arrays(tier_name, fresh, loaded):
    """Raise StateShapeError when `loaded`'s arrays differ from a fresh tier's in dtype or dimension count,
    or arrays that must have one length per key do not."""
    _walk(fresh, loaded, tier_name, 0)
    for group in SAME_LENGTH.get(tier_name, ()):
        _same_first_dimension(loaded, group, tier_name)
    for index, target in INDEXES.get(tier_name, ()):
        _indexes_within(loaded, index, target, tier_name)


def _walk(fresh, loaded, where, depth):
    arrays = []
    for attr, expected in vars(fresh).items():
        got = getattr(loaded, attr, None)
        label = "%s.%s" % (where, attr)
        if isinstance(expected, np.ndarray):
            _same_kind(expected, got, label)
            if expected.ndim:
                arrays.append(attr)
        elif depth < _MAX_DEPTH and _is_state_object(expected):
            if type(got) is not type(expected):
                raise StateShapeError("%s is a %s, expected a %s" % (label, type(got).__name__, type(expected).__name__))
            _walk(expected, got, label, depth + 1)
    if len(arrays) >= 2 and len({getattr(fresh, attr).shape[0] for attr in arrays}) == 1:
        _same_first_dimension(loaded, arrays, where)


def _is_state_object(value):
    return hasattr(value, "__dict__") and not isinstance(value, (type, np.generic)) and not callable(value)


def _same_kind(expected, got, label):
    if not isinstance(got, np.ndarray):
        raise StateShapeError("%s is %s, expected an array" % (label, type(got).__name__))
    # trailing dimensions may legitimately differ (a learned basis has as many columns as it found)
    if got.dtype != expected.dtype or got.ndim != expected.ndim:
        raise StateShapeError("%s has dtype %s and %d dimensions, expected dtype %s and %d"
                              % (label, got.dtype, got.ndim, expected.dtype, expected.ndim))


def _same_first_dimension(obj, attrs, where):
    lengths = {attr: getattr(obj, attr).shape[0] for attr in attrs
               if isinstance(getattr(obj, attr, None), np.ndarray) and getattr(obj, attr).ndim}
    if len(set(lengths.values())) > 1:
        raise StateShapeError("%s arrays of one key have different lengths: %s"
                              % (where, ", ".join("%s=%d" % item for item in sorted(lengths.items()))))


def _attribute(obj, dotted):
    for name in dotted.split("."):
        obj = getattr(obj, name, None)
    return obj


def _indexes_within(obj, index, target, where):
    values, rows = _attribute(obj, index), _attribute(obj, target)
    if not isinstance(values, np.ndarray) or not isinstance(rows, np.ndarray) or not values.size:
        return
    low, high = int(values.min()), int(values.max())
    if low < -1 or high >= rows.shape[0]:
        raise StateShapeError("%s.%s holds %d..%d, beyond the %d rows of %s"
                              % (where, index, low, high, rows.shape[0], target))
