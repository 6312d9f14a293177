"""Simulation and benchmarks: the MovieLens quality benchmark (``omega.sim.quality``).

Submodules are imported on use; importing the package loads nothing heavy.
"""
