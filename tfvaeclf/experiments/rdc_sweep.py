"""Rate-distortion-classification tradeoff curves, end to end and universal.

    python -m tfvaeclf.experiments.rdc_sweep \
        --flagfile=configs/mnist_rdc.flags \
        --lambdas=0,0.01,0.05 --rates=8:4,16:4 --out=runs/mnist_rdc_sweep

For each rate (`DIM:L`: latent_dim entries of L levels, R = DIM * log2(L)
bits per image) and each lambda_cls, an end-to-end model trains encoder and
decoder together. Then the encoder of the end-to-end model at each of
`--encoder_lambdas` (default: the first lambda) is frozen and a new decoder
trains on it for every other lambda: the universal models. The universal
model at an encoder's own lambda is its end-to-end model.

Every model is evaluated on real bitstreams (the frozen classifier c reads
the decoded images). Written to OUT:

    <rate>/end_to_end_l<lambda>/, <rate>/universal_e<lambda_enc>_l<lambda>/
                 model dirs
    points.csv   one row a model: rate, lambda, kind, encoder lambda,
                 accuracy, MSE, PSNR, the fixed and the entropy-coded bytes
                 per image, and for universal models the gaps to the
                 end-to-end model
    gaps.md      the gaps as a table over rate x encoder lambda x lambda,
                 each marked whether reuse costs at most 1 point and 1 dB
                 (the claim of the universal rate-distortion-
                 classification paper)
    rdc_<dataset>.png   MSE and PSNR against the accuracy of c(X_hat), one
                 colour a rate, end to end solid, universal dashed (one
                 style an encoder)
    gaps_<dataset>.png  the accuracy and PSNR gaps against lambda, a line
                 per rate and encoder, the 1-point / 1-dB band shaded

A rerun skips finished models and resumes an unfinished one; a model whose
loss goes NaN stops the sweep (exit code 3) with its last good checkpoint.
`--max_examples` (of `tfvaeclf.evaluate`) evaluates on fewer test images.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import dataclasses
import math
import os
import sys

from absl import flags
import tqdm

from tfvaeclf import fileio, specs, train
from tfvaeclf.experiments import plots, sweep

__all__ = ["parse_rates", "plan", "gaps", "within_claim", "gaps_markdown",
           "curves"]

FLAGS = flags.FLAGS
flags.DEFINE_list("lambdas", ["0", "0.01", "0.05"],
                  "lambda_cls values: weights of c's cross-entropy.")
flags.DEFINE_list("rates", ["8:4"],
                  "Rates as DIM:L (latent entries : quantization levels).")
flags.DEFINE_list("encoder_lambdas", None,
                  "The lambdas whose end-to-end encoders universal decoders "
                  "are trained on, each for every other lambda (default: "
                  "the first of --lambdas).")

END_TO_END, UNIVERSAL = "end_to_end", "universal"
# The universal rate-distortion-classification paper's claim: a universal
# decoder costs at most this much.
CLAIM_POINTS, CLAIM_DB = 1., 1.


def parse_rates(specs):
  """["8:4", ...] -> [(8, 4), ...]; UserError in one line if malformed."""
  rates = []
  for spec in specs:
    dim, colon, levels = spec.partition(":")
    if not (colon and dim.isdigit() and levels.isdigit()
            and int(dim) >= 1 and int(levels) >= 2):
      raise cli.UserError(f"--rates: {spec!r} is not DIM:L with DIM >= 1 "
                          "and L >= 2, e.g. 8:4")
    rates.append((int(dim), int(levels)))
  if len(set(rates)) != len(rates):
    raise cli.UserError("--rates: a rate is repeated")
  return rates


def _rate_name(dim, levels):
  return f"d{dim}_L{levels}"


def plan(out, rates, lambdas, encoder_lambdas):
  """Every model of the sweep, in training order: a list of dicts with
  kind, dim, levels, lambda_cls, encoder_lambda, dir and, for universal
  ones, the dir of the encoder they freeze."""
  points = []
  for dim, levels in rates:
    root = os.path.join(out, _rate_name(dim, levels))
    base = {"dim": dim, "levels": levels}
    points += [{**base, "kind": END_TO_END, "lambda_cls": lmbda,
                "encoder_lambda": lmbda,
                "dir": os.path.join(root, f"{END_TO_END}_l{lmbda:g}")}
               for lmbda in lambdas]
    points += [{**base, "kind": UNIVERSAL, "lambda_cls": lmbda,
                "encoder_lambda": encoder,
                "dir": os.path.join(root,
                                    f"{UNIVERSAL}_e{encoder:g}_l{lmbda:g}"),
                "encoder_dir": os.path.join(root,
                                            f"{END_TO_END}_l{encoder:g}")}
               for encoder in encoder_lambdas
               for lmbda in lambdas if lmbda != encoder]
  return points


def _row(point, results):
  return {
      "dim": point["dim"], "levels": point["levels"],
      "fixed_bits_per_image": results["fixed_bits_per_image"],
      "kind": point["kind"], "lambda_cls": point["lambda_cls"],
      "encoder_lambda": point["encoder_lambda"],
      "accuracy": results["accuracy"], "mse": results["mse"],
      "psnr": results["psnr"],
      "bytes_per_image": results["bytes_per_image"],
      "file_bytes_per_image": results["file_bytes_per_image"],
      "dir": point["dir"],
  }


def gaps(rows, encoder_lambdas):
  """Universal rows gain `psnr_gap_db` and `accuracy_gap` (universal minus
  end to end, accuracy in points) against the end-to-end model at their
  rate and lambda; the end-to-end model at each of `encoder_lambdas` also
  stands as the universal model on its own encoder."""
  e2e = {(r["dim"], r["levels"], r["lambda_cls"]): r for r in rows
         if r["kind"] == END_TO_END}
  result = []
  for row in rows:
    result.append(row)
    if row["kind"] == END_TO_END and row["lambda_cls"] in encoder_lambdas:
      result.append({**row, "kind": UNIVERSAL, "psnr_gap_db": 0.,
                     "accuracy_gap": 0.})
    elif row["kind"] == UNIVERSAL:
      ref = e2e[(row["dim"], row["levels"], row["lambda_cls"])]
      row["psnr_gap_db"] = row["psnr"] - ref["psnr"]
      row["accuracy_gap"] = 100. * (row["accuracy"] - ref["accuracy"])
  return result


def within_claim(row):
  """Whether a universal row loses at most CLAIM_POINTS and CLAIM_DB."""
  return (row["accuracy_gap"] >= -CLAIM_POINTS
          and row["psnr_gap_db"] >= -CLAIM_DB)


def gaps_markdown(rows):
  """The universal rows as a Markdown table over rate x encoder lambda x
  lambda, each marked against the claim (CLAIM_POINTS, CLAIM_DB)."""
  e2e = {(r["dim"], r["levels"], r["lambda_cls"]): r for r in rows
         if r["kind"] == END_TO_END}
  lines = ["| R (bits) | λ encoder | λ decoder | end-to-end: accuracy / "
           "PSNR | universal: accuracy / PSNR | gap: points / dB | "
           f"within {CLAIM_POINTS:g} point and {CLAIM_DB:g} dB |",
           "|---|---|---|---|---|---|---|"]
  universal = sorted((r for r in rows if r["kind"] == UNIVERSAL and
                      r["lambda_cls"] != r["encoder_lambda"]),
                     key=lambda r: (r["fixed_bits_per_image"],
                                    r["encoder_lambda"], r["lambda_cls"]))
  for row in universal:
    ref = e2e[(row["dim"], row["levels"], row["lambda_cls"])]
    lines.append(
        f"| {row['fixed_bits_per_image']:g} ({row['dim']}×{row['levels']} "
        f"levels) | {row['encoder_lambda']:g} | {row['lambda_cls']:g} | "
        f"{100 * ref['accuracy']:.2f}% / {ref['psnr']:.2f} dB | "
        f"{100 * row['accuracy']:.2f}% / {row['psnr']:.2f} dB | "
        f"{row['accuracy_gap']:+.2f} / {row['psnr_gap_db']:+.2f} | "
        f"{'yes' if within_claim(row) else 'no'} |")
  return "\n".join(lines) + "\n"


def curves(rows):
  """The sweep's curves, for `plots.rdc_curves`: [(rate as (dim, levels),
  encoder λ, rows in λ order)], per rate (in bits) its end-to-end curve
  (encoder None), then its universal one on each encoder (in λ order)."""
  rates = sorted({(r["dim"], r["levels"]) for r in rows},
                 key=lambda rate: rate[0] * math.log2(rate[1]))
  encoders = sorted({r["encoder_lambda"] for r in rows
                     if r["kind"] == UNIVERSAL})
  result = []
  for rate in rates:
    for kind, encoder in [(END_TO_END, None)] + [(UNIVERSAL, encoder)
                                                  for encoder in encoders]:
      curve = sorted((r for r in rows if (r["dim"], r["levels"]) == rate
                      and r["kind"] == kind
                      and encoder in (None, r["encoder_lambda"])),
                     key=lambda r: r["lambda_cls"])
      if curve:
        result.append((rate, encoder, curve))
  return result


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.model != "rdc":
    raise cli.UserError("rdc_sweep trains --model=rdc (give its flagfile, "
                        "e.g. configs/mnist_rdc.flags)")
  if not FLAGS.out:
    raise cli.UserError("--out is required")
  run = specs.from_flags(FLAGS)
  try:
    lambdas = [float(v) for v in FLAGS.lambdas]
  except ValueError:
    raise cli.UserError(f"--lambdas: not numbers: {FLAGS.lambdas}") from None
  if not lambdas or len(set(lambdas)) != len(lambdas):
    raise cli.UserError("--lambdas: give distinct values")
  try:
    encoder_lambdas = [float(v) for v in FLAGS.encoder_lambdas or
                       [lambdas[0]]]
  except ValueError:
    raise cli.UserError(f"--encoder_lambdas: not numbers: "
                        f"{FLAGS.encoder_lambdas}") from None
  strangers = [f"{v:g}" for v in encoder_lambdas if v not in lambdas]
  if strangers:
    raise cli.UserError(f"--encoder_lambdas={','.join(strangers)}: not one "
                        "of --lambdas")
  points = plan(FLAGS.out, parse_rates(FLAGS.rates), lambdas,
                encoder_lambdas)
  rows, splits_cache = [], {}
  for point in tqdm.tqdm(points, desc="rdc sweep", unit="model"):
    tqdm.tqdm.write(f"{point['kind']} R={point['dim']}x{point['levels']} "
                    f"lambda_cls={point['lambda_cls']:g}: {point['dir']}")
    variant = dataclasses.replace(
        run, model_dir=point["dir"],
        model=dataclasses.replace(run.model, latent_dim=point["dim"],
                                  levels=point["levels"],
                                  lambda_cls=point["lambda_cls"]),
        train=dataclasses.replace(
            run.train, freeze_encoder_from=point.get("encoder_dir")))
    try:
      results = sweep.train_and_evaluate(
          variant, max_examples=FLAGS.max_examples,
          splits_cache=splits_cache)
    except ValueError as e:
      raise cli.UserError(str(e)) from None
    except train.TrainingDiverged as e:
      print(f"error: {point['dir']}: {e}", file=sys.stderr)
      sys.exit(3)
    rows.append(_row(point, results))
  rows = gaps(rows, encoder_lambdas)
  sweep.write_csv(os.path.join(FLAGS.out, "points.csv"), rows)
  table = gaps_markdown(rows)
  with fileio.atomic_writer(os.path.join(FLAGS.out, "gaps.md"), "w") as f:
    f.write(table)
  dataset = run.data.name
  encoders = ", ".join(f"{v:g}" for v in encoder_lambdas)
  every = curves(rows)
  plots.rdc_curves(every, f"{dataset}: distortion against classification, "
                   f"end-to-end and universal (encoders of λ = {encoders})",
                   os.path.join(FLAGS.out, f"rdc_{dataset}.png"))
  plots.rdc_gaps([curve for curve in every if curve[1] is not None],
                 sorted({r["lambda_cls"] for r in rows}),
                 (CLAIM_POINTS, CLAIM_DB),
                 f"{dataset}: what reusing one encoder costs",
                 os.path.join(FLAGS.out, f"gaps_{dataset}.png"))
  print(table)
  print(f"wrote {len(rows)} points to {FLAGS.out}/points.csv, gaps.md, "
        f"rdc_{dataset}.png and gaps_{dataset}.png")


if __name__ == "__main__":
  cli.run(main, argv=specs.flagfiles_first(sys.argv), many_models=True)
