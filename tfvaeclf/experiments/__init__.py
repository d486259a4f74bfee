"""Experiments on top of the library: each trains or reads many model dirs
and sets their points beside each other.

    python -m tfvaeclf.experiments.search        a keras-tuner search
    python -m tfvaeclf.experiments.frontier      the rate frontier
    python -m tfvaeclf.experiments.rdc_sweep     rate-distortion-
                                                 classification curves
    python -m tfvaeclf.experiments.split_sweep   a split kind's rate curve
    python -m tfvaeclf.experiments.report        models against codecs

`sweep` is what the sweeps share (train, evaluate, resume), `points` and
`pareto` what the report and the split sweep read and rank, and `plots` the
one module that draws: an experiment computes its points and hands them
there. Nothing is imported here: `report` must start without TensorFlow.
"""

__all__ = []
