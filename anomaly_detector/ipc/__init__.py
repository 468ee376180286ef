"""Shared memory between the supervisor and its children: segments, SPSC line rings, control block.

Allocated by the supervisor before it forks (shm.py); used by inputs, workers and the metrics sidecar.
"""
