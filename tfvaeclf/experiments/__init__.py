"""Experiments on top of the library: each trains or reads many model dirs
and sets their points beside each other.

    python -m tfvaeclf.experiments.search        a keras-tuner search
    python -m tfvaeclf.experiments.frontier      the rate frontier
    python -m tfvaeclf.experiments.rdc_sweep     rate-distortion-
                                                 classification curves
    python -m tfvaeclf.experiments.split_sweep   a split kind's rate curve
    python -m tfvaeclf.experiments.report        models against codecs

`sweep` is what the sweeps share (train, evaluate, resume), `points` and
`pareto` what the report and the split sweep read and rank. What a model kind knows about itself (its depth
field, its split points) comes from its own file in `tfvaeclf/models/`.
Nothing is imported here: `report` must start without TensorFlow.
"""

__all__ = []
