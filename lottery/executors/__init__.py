"""Executors schedule independent runs; they never re-implement a driver.

- ``grid``: trunks in local worker processes or on SLURM (submitit);
- ``lockstep``: trunks advanced level by level together, their runs fused.
"""
