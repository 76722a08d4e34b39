"""Gatepass's benchmark suite: every performance target of DESIGN.md, measured in one run.

Run it with ``make bench`` (full) or ``make bench-quick``; results land in
``bench/results/``.
"""
