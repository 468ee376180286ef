"""`python -m anomaly_detector`: the same entry point as the console script."""
from anomaly_detector.cli import main

main()
