"""Generated log workloads with labelled incidents, for the demo command, the tests and bench/detect_bench.py.

generator.generate() writes the logs and labels.json; services.py makes the traffic, incidents.py the
incidents, scoring.py matches detections to labels. nab_scoring.py scores per-line detections on
labelled metric series with the Numenta Anomaly Benchmark's rules (bench/nab_bench.py).

labels.json: {"seed", "days", "start", "end", "warmup_end" (epoch s), "files", "lines_per_file",
"incidents": [{"id", "kind", "source", "start", "end" (epoch s), "start_iso", "end_iso", "detail",
"n_lines", "lines": {file name: [1-based line numbers]}}]}. Incident lines carry no marker of their own.
"""
from anomaly_detector.workload.generator import Workload, generate, load_labels
from anomaly_detector.workload.incidents import KINDS

__all__ = ["KINDS", "Workload", "generate", "load_labels"]
