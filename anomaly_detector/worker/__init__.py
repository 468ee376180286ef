"""Detector workers: pop batches from their ring, parse and score them, write the verdicts."""
