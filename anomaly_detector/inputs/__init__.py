"""Inputs: one module per source (file_tail, stdin), each producing chunks of raw line bytes.

Next stage: the input process hands chunks to the shared-memory rings; parsing turns bytes into records.
"""
