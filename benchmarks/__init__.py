"""Benchmarks of anogen-aug: speed against reference implementations, and downstream quality on real data.

Not part of the test suite. Run each from the repository root as a module, e.g.
``python -m benchmarks.speed_stage1 --backbone tiny``; `harness` holds what they share (timing, FLOP counting,
memory, provenance of the result files). See ``benchmarks/README.md``.
"""
