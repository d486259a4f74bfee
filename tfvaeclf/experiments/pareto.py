"""The Pareto front of accuracy against rate, shared by the sweeps' tables
and the report's plots (TF-free, flag-free: both import it)."""

__all__ = ["pareto_front"]


def pareto_front(pairs):
  """Whether each (rate, accuracy) pair is on the front: no other pair has
  at least its accuracy at a lower rate, or more at the same."""
  return [not any((rate < own_rate and accuracy >= own_accuracy)
                  or (rate == own_rate and accuracy > own_accuracy)
                  for rate, accuracy in pairs)
          for own_rate, own_accuracy in pairs]
