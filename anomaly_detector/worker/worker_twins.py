"""Test-only plain-Python twins of the kernels in joining.py (tests compare each kernel with its twin).

Nothing in production imports this module.
"""
import numpy as np


def join_lines_py(buf, starts, ends):
    """Plain-Python twin of join_lines."""
    data = bytes(buf)
    return np.frombuffer(b"".join(data[s:e] + b"\n" for s, e in zip(starts, ends)), np.uint8)
