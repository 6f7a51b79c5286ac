"""What a unit of each benchmark runs: ``run``, extras and dataset factories, one module
per spec. These import torch, Lightning and the paper's code; the specs in
``benchmarks/specs/`` name them with :func:`benchmarks.registry.lazy` and import none of it.
"""
