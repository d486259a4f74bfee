"""Rate-distortion-classification tradeoff curves, end to end and universal.

    python -m tfvaeclf.rdc_sweep --flagfile=configs/mnist_rdc.flags \
        --lambdas=0,0.01,0.05 --rates=8:4,16:4 --out=runs/mnist_rdc_sweep

For each rate (`DIM:L`: latent_dim entries of L levels, R = DIM * log2(L)
bits per image) and each lambda_cls, an end-to-end model trains encoder and
decoder together. Then the encoder of the end-to-end model at
`--encoder_lambda` (default: the first lambda) is frozen and a new decoder
trains for every other lambda: the universal models. The universal model at
`--encoder_lambda` itself is that end-to-end model.

Every model is evaluated on real bitstreams (the frozen classifier c reads
the decoded images). Written to OUT:

    <rate>/end_to_end_l<lambda>/, <rate>/universal_l<lambda>/  model dirs
    points.csv   one row a model: rate, lambda, kind, accuracy, MSE, PSNR,
                 the fixed and the entropy-coded bytes per image, and for
                 universal models the gaps to the end-to-end model
    rdc_<dataset>.png   MSE and PSNR against the accuracy of c(X_hat), one
                 colour a rate, end to end solid, universal dashed

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
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tqdm  # noqa: E402

from tfvaeclf import fileio, specs, sweep, train  # noqa: E402

__all__ = ["parse_rates", "plan", "gaps", "plot"]

FLAGS = flags.FLAGS
flags.DEFINE_list("lambdas", ["0", "0.01", "0.05"],
                  "lambda_cls values: weights of c's cross-entropy.")
flags.DEFINE_list("rates", ["8:4"],
                  "Rates as DIM:L (latent entries : quantization levels).")
flags.DEFINE_float("encoder_lambda", None,
                   "The lambda whose end-to-end encoder the universal "
                   "decoders share (default: the first of --lambdas).")

END_TO_END, UNIVERSAL = "end_to_end", "universal"


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


def plan(out, rates, lambdas, encoder_lambda):
  """Every model of the sweep, in training order: a list of dicts with
  kind, dim, levels, lambda_cls, dir and, for universal ones, the dir of
  the encoder they freeze."""
  points = []
  for dim, levels in rates:
    root = os.path.join(out, _rate_name(dim, levels))
    base = {"dim": dim, "levels": levels}
    encoder_dir = os.path.join(root, f"{END_TO_END}_l{encoder_lambda:g}")
    points += [{**base, "kind": END_TO_END, "lambda_cls": lmbda,
                "dir": os.path.join(root, f"{END_TO_END}_l{lmbda:g}")}
               for lmbda in lambdas]
    points += [{**base, "kind": UNIVERSAL, "lambda_cls": lmbda,
                "dir": os.path.join(root, f"{UNIVERSAL}_l{lmbda:g}"),
                "encoder_dir": encoder_dir}
               for lmbda in lambdas if lmbda != encoder_lambda]
  return points


def _row(point, results, encoder_lambda):
  return {
      "dim": point["dim"], "levels": point["levels"],
      "fixed_bits_per_image": results["fixed_bits_per_image"],
      "kind": point["kind"], "lambda_cls": point["lambda_cls"],
      "accuracy": results["accuracy"], "mse": results["mse"],
      "psnr": results["psnr"],
      "bytes_per_image": results["bytes_per_image"],
      "file_bytes_per_image": results["file_bytes_per_image"],
      "encoder_lambda": encoder_lambda, "dir": point["dir"],
  }


def gaps(rows):
  """Universal rows gain `psnr_gap_db` and `accuracy_gap` (universal minus
  end to end, accuracy in points) against the end-to-end model at their
  rate and lambda; the end-to-end model at the encoder's lambda also
  stands as the universal model there."""
  e2e = {(r["dim"], r["levels"], r["lambda_cls"]): r for r in rows
         if r["kind"] == END_TO_END}
  result = []
  for row in rows:
    result.append(row)
    if row["kind"] == END_TO_END and row["lambda_cls"] == row[
        "encoder_lambda"]:
      result.append({**row, "kind": UNIVERSAL, "psnr_gap_db": 0.,
                     "accuracy_gap": 0.})
    elif row["kind"] == UNIVERSAL:
      ref = e2e[(row["dim"], row["levels"], row["lambda_cls"])]
      row["psnr_gap_db"] = row["psnr"] - ref["psnr"]
      row["accuracy_gap"] = 100. * (row["accuracy"] - ref["accuracy"])
  return result


def plot(rows, title, path):
  """MSE and PSNR against c's accuracy: a colour a rate, end to end solid
  with circles, universal dashed with squares, each curve in lambda order
  and each point labelled with its lambda."""
  figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  rates = sorted({(r["dim"], r["levels"]) for r in rows})
  for color, (dim, levels) in zip(plt.cm.viridis_r(
      [.2 + .6 * i / max(len(rates) - 1, 1) for i in range(len(rates))]),
      rates):
    bits = dim * math.log2(levels)
    for kind, style, marker in ((END_TO_END, "-", "o"),
                                (UNIVERSAL, "--", "s")):
      curve = sorted((r for r in rows if (r["dim"], r["levels"]) ==
                      (dim, levels) and r["kind"] == kind),
                     key=lambda r: r["lambda_cls"])
      if not curve:
        continue
      label = (f"R = {bits:g} bits ({dim}×{levels} levels), "
               f"{kind.replace('_', '-')}")
      for ax, value in zip(axes, ("mse", "psnr")):
        ax.plot([100. * r["accuracy"] for r in curve],
                [r[value] for r in curve], style, marker=marker,
                color=color, label=label)
        for r in curve:
          ax.annotate(f"λ={r['lambda_cls']:g}", (100. * r["accuracy"],
                                                 r[value]),
                      textcoords="offset points", xytext=(4, 4),
                      fontsize=7, color=color)
  for ax, ylabel in zip(axes, ("MSE of X̂ (pixels in [0, 1])",
                               "PSNR of X̂ (dB)")):
    ax.set_xlabel("accuracy of the frozen classifier on X̂ (%)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=.3)
  axes[1].legend(fontsize=8, loc="best")
  figure.suptitle(title)
  figure.tight_layout()
  with fileio.atomic_writer(path) as f:
    figure.savefig(f, format="png", dpi=120)
  plt.close(figure)


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
  encoder_lambda = (lambdas[0] if FLAGS.encoder_lambda is None
                    else FLAGS.encoder_lambda)
  if encoder_lambda not in lambdas:
    raise cli.UserError(f"--encoder_lambda={encoder_lambda:g} is not one of "
                        "--lambdas")
  points = plan(FLAGS.out, parse_rates(FLAGS.rates), lambdas, encoder_lambda)
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
    rows.append(_row(point, results, encoder_lambda))
  rows = gaps(rows)
  sweep.write_csv(os.path.join(FLAGS.out, "points.csv"), rows)
  dataset = run.data.name
  plot(rows, f"{dataset}: distortion against classification, end-to-end "
       f"and universal (encoder of λ = {encoder_lambda:g})",
       os.path.join(FLAGS.out, f"rdc_{dataset}.png"))
  print(f"wrote {len(rows)} points to {FLAGS.out}/points.csv and "
        f"rdc_{dataset}.png")


if __name__ == "__main__":
  cli.run(main, argv=specs.flagfiles_first(sys.argv), many_models=True)
