"""Loghub accuracy metrics: grouping accuracy (GA), parsing accuracy (PA) and F1 grouping accuracy (FGA).

Used by bench/parse_bench.py and the GA floor test; definitions follow Loghub and Loghub-2.0.
"""
from collections import defaultdict


def _groups(labels):
    out = defaultdict(list)
    for i, lab in enumerate(labels):
        out[lab].append(i)
    return {k: frozenset(v) for k, v in out.items()}


def grouping_accuracy(truth, predicted):
    """Share of lines whose predicted group holds exactly the lines of their true group (Loghub GA)."""
    true_sets = set(_groups(truth).values())
    return sum(len(s) for s in _groups(predicted).values() if s in true_sets) / max(len(truth), 1)


def f1_grouping_accuracy(truth, predicted):
    """Loghub-2.0 FGA: F1 over groups, a predicted group counting when it equals a true group."""
    true_sets = set(_groups(truth).values())
    pred_sets = list(_groups(predicted).values())
    correct = sum(1 for s in pred_sets if s in true_sets)
    if correct == 0:
        return 0.0
    precision, recall = correct / len(pred_sets), correct / len(true_sets)
    return 2 * precision * recall / (precision + recall)


def parsing_accuracy(true_templates, predicted_templates):
    """Loghub-2.0 PA: share of lines whose template text equals the truth exactly (spaces collapsed)."""
    hits = sum(1 for t, p in zip(true_templates, predicted_templates) if " ".join(t.split()) == " ".join(p.split()))
    return hits / max(len(true_templates), 1)
