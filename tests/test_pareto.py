"""The Pareto front of accuracy against rate."""

from tfvaeclf.experiments.pareto import pareto_front


def test_pareto_front_keeps_the_undominated_points():
  pairs = [(3., 0.90), (5., 0.95), (6., 0.93), (7., 0.95), (9., 0.97),
           (3., 0.89)]
  assert pareto_front(pairs) == [True, True, False, False, True, False]
