"""The supervisor's mechanics: process states, signal queue, child lifecycle, systemd notify.

The arbiter loop (wired to config, inputs and workers) is built on these modules.
"""
