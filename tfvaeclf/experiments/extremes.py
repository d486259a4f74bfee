"""Where coding for the server beats both trivial extremes: the questions a
frontier answers against sending the class and sending the image.

Given one dataset's points (`tfvaeclf.experiments.points`: joint models
with their board.json, send-the-class classifiers, the codecs' rows with
fine-tuned readers), each function answers one question and returns a
plain result the benchmark prints (tools/bench_cifar10.py):

    beats_the_class      at each edge budget, the most accurate coded
                         point at <= N bytes of payload against the best
                         classifier that fits the same budget
    codec_bytes_to_match the most accurate coded point at <= N bytes, and
                         the payload each codec needs for its accuracy
    gap_at_payload       the best coded point at <= N bytes against one
                         codec's rows either side of N

A coded point's accuracy is its int8 accuracy on the board (board.json:
real bitstreams from the int8 encoder) where measured, else Keras'; a
codec's is its better reader's: fine-tuned on its decoded images, or as
trained. TensorFlow-free and plot-free, as `points` is.
"""

import dataclasses

from tfvaeclf.experiments.budgets import best_on_board, budget_of
from tfvaeclf.experiments.points import codec_sweeps

__all__ = ["coded_accuracy", "codec_accuracy", "beats_the_class",
           "codec_bytes_to_match", "gap_at_payload", "BudgetResult",
           "MatchResult", "GapResult"]


def coded_accuracy(point):
  """A coded point's accuracy: on the board where measured."""
  return (point.board_accuracy if point.board_accuracy is not None
          else point.accuracy)


def codec_accuracy(point):
  """A codec row's accuracy: its better reader's, as trained or fine-tuned
  on the decoded images (where the codec barely changes an image, a few
  epochs of fine-tuning can cost a point)."""
  return max(a for a in (point.accuracy, point.finetuned_accuracy)
             if a is not None)


def _coded(points, max_payload):
  return [p for p in points if p.kind == "model"
          and p.payload_bytes_per_image <= max_payload]


def _most_accurate(points):
  return max(points, key=lambda p: (coded_accuracy(p),
                                    -p.payload_bytes_per_image),
             default=None)


@dataclasses.dataclass(frozen=True)
class BudgetResult:
  budget: int
  coded: object  # Point or None: the best coded point of the budget
  board: object  # Point or None: the best send-the-class point that fits

  @property
  def gain(self):
    """Points of accuracy (fractions) the coded point is ahead; None when
    either is missing."""
    if self.coded is None or self.board is None:
      return None
    return coded_accuracy(self.coded) - self.board.accuracy


def beats_the_class(points, budgets, max_payload):
  """[BudgetResult] a budget: the most accurate coded point whose int8
  encoder belongs to the budget (`budgets.budget_of`) at <= `max_payload`
  bytes, and the most accurate send-the-class classifier that fits it."""
  results = []
  for budget in budgets:
    coded = [p for p in _coded(points, max_payload)
             if budget_of(p, budgets) == budget]
    results.append(BudgetResult(budget, _most_accurate(coded),
                                best_on_board(points, budget)))
  return results


@dataclasses.dataclass(frozen=True)
class MatchResult:
  coded: object  # Point or None
  # {codec: the cheapest of its rows at least as accurate, or None}
  matches: dict
  # {codec: its most accurate row}, for the codecs none of whose rows match
  best_rows: dict

  def ratio(self, codec):
    """The codec's payload over the coded point's; None if it never
    reaches the accuracy (then it needs more than its largest row)."""
    match = self.matches.get(codec)
    if match is None or self.coded is None:
      return None
    return match.payload_bytes_per_image / self.coded.payload_bytes_per_image


def codec_bytes_to_match(points, max_payload):
  """The most accurate coded point at <= `max_payload` bytes and, for each
  codec, its cheapest row (by payload) whose accuracy is at least that
  point's."""
  coded = _most_accurate(_coded(points, max_payload))
  matches, best_rows = {}, {}
  for name, sweep in codec_sweeps(points).items():
    reach = ([p for p in sweep if codec_accuracy(p) >= coded_accuracy(coded)]
             if coded is not None else [])
    matches[name] = min(reach, key=lambda p: p.payload_bytes_per_image,
                        default=None)
    if matches[name] is None:
      best_rows[name] = max(sweep, key=codec_accuracy)
  return MatchResult(coded, matches, best_rows)


@dataclasses.dataclass(frozen=True)
class GapResult:
  payload: float
  coded: object  # Point or None: the best coded point at <= payload
  below: object  # Point or None: the codec's best row at <= payload
  above: object  # Point or None: its cheapest row above payload

  @property
  def gaps(self):
    """(coded minus the codec's accuracy just below `payload`, the same
    just above): the gap at `payload` itself lies between, for a codec
    that is more accurate at more bytes. None for a side the codec has no
    row on (without a row below, the codec cannot go that low: the gap is
    at least the one above)."""
    if self.coded is None:
      return None, None
    return tuple(None if row is None else
                 coded_accuracy(self.coded) - codec_accuracy(row)
                 for row in (self.below, self.above))


def gap_at_payload(points, codec, payload):
  """The best coded point at <= `payload` bytes, and `codec`'s rows either
  side of `payload`: its most accurate at or below, its cheapest above."""
  sweep = codec_sweeps(points).get(codec, [])
  below = [p for p in sweep if p.payload_bytes_per_image <= payload]
  above = [p for p in sweep if p.payload_bytes_per_image > payload]
  return GapResult(
      payload, _most_accurate(_coded(points, payload)),
      max(below, key=codec_accuracy, default=None),
      min(above, key=lambda p: p.payload_bytes_per_image, default=None))
