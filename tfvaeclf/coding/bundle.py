"""The deployment bundle: its layout, and the manifest checks every loader runs.

    BUNDLE/manifest.json               what the bundle is; sha256 + size of
                                       every other file
    BUNDLE/edge/encoder.tflite         float32 encoder: images -> latents
    BUNDLE/edge/encoder_int8.tflite    the same, full-integer
    BUNDLE/edge/tables.npz             frozen range-coding tables, per stream
    BUNDLE/edge/slice_coder.tflite     conditional coders only: float32
                                       (z_hat, latent) -> values, indexes
    BUNDLE/server/                     SavedModel: decoded latents ->
                                       probabilities (`export.server_model`)

The manifest also carries the model's `CodecSpec`
(`tfvaeclf.coding.codec_spec`): `codec_fingerprint`, the identity of its encoder side that the board's
files carry, and the image and latent shapes; and under "preprocessing"
how training turned an image file into the encoder's input
(`tfvaeclf.imageio.Preprocessing.record`), which the board applies too.

`python -m export` writes it; the edge runtime and the server load it. Both
sides check the files they use against the manifest before using them, so a
board never codes with tables, or an encoder, that the server's model does
not match. A board needs only `manifest.json` and `edge/`; a server only
`manifest.json`, `server/` and the tables, which it decodes with.

Each stream of the model's coder is one entry of the manifest's "streams"
list and one `NAME/...` group of arrays in tables.npz: their schema, and
what the board and the server do with each type of stream, is
`tfvaeclf.coding.streams`'s (which reads them back: `streams.read_plan`).
A bundle with a dithered stream is format version 2, which a tfvaeclf that
would code it without the dither refuses; one whose stream types a
tfvaeclf does not know is refused in one line.

An indexed stream's float32 `SLICE_CODER` model (z_hat, y -> values,
indexes) runs the model's slice loop on the board: each slice's location
and scale index predicted from the coded hyper-latent and the slices
quantized before it, as the server's decoder predicts them with its
SavedModel's `HYPER_SYNTHESIS` and `slice_model(k)` signatures.

numpy only: this module runs on the board.
"""

import hashlib
import json
import os

from tfvaeclf.coding import codec_spec
from tfvaeclf.errors import BundleError

__all__ = ["BundleError", "FORMAT", "FORMAT_VERSION", "MANIFEST",
           "EDGE_DIR", "SERVER_DIR", "ENCODER", "ENCODER_INT8", "TABLES",
           "ENCODER_INPUT", "SERVER_INPUT", "SLICE_CODER", "HYPER_INPUT",
           "LATENT_INPUT", "VALUES", "INDEXES", "HYPER_SYNTHESIS",
           "FEATURES", "DECODED", "LOC", "INDEX", "PREPROCESSING",
           "file_digests", "format_version", "read_manifest",
           "slice_model"]

FORMAT = "tfvaeclf-bundle"
FORMAT_VERSION = 2  # the newest; it adds a stream's "dither" to version 1
_VERSIONS = (1, FORMAT_VERSION)
MANIFEST = "manifest.json"
EDGE_DIR = "edge"
SERVER_DIR = "server"
ENCODER = f"{EDGE_DIR}/encoder.tflite"
ENCODER_INT8 = f"{EDGE_DIR}/encoder_int8.tflite"
TABLES = f"{EDGE_DIR}/tables.npz"
# The encoders' signature: `serving_default(images) -> {stream name: latent}`.
ENCODER_INPUT = "images"
# The server's signatures' input: the decoded latent, float32 [N, ..., C].
SERVER_INPUT = "latent_hat"
# The manifest's key for the model's preprocessing (absent: exported before
# it was recorded).
PREPROCESSING = "preprocessing"
# A conditional coder's board model: (z_hat, latent) -> (values, indexes),
# int32 (N, values per image) in coding order.
SLICE_CODER = f"{EDGE_DIR}/slice_coder.tflite"
HYPER_INPUT, LATENT_INPUT, VALUES, INDEXES = (
    "z_hat", "latent", "values", "indexes")
# Its server signatures: z_hat -> features, and per slice (features[,
# decoded]) -> loc, index.
HYPER_SYNTHESIS = "hyper_synthesis"
FEATURES, DECODED, LOC, INDEX = "features", "decoded", "loc", "index"
_CHUNK = 1 << 20
_REQUIRED = ("model", codec_spec.FINGERPRINT_KEY, "image_shape",
             "latent_shape", "streams", "files")


def _sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def file_digests(bundle_dir):
  """{relative path: {"sha256", "size"}} of every file but the manifest."""
  digests = {}
  for root, _, names in os.walk(bundle_dir):
    for name in names:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, bundle_dir).replace(os.sep, "/")
      if relative != MANIFEST:
        digests[relative] = {"sha256": _sha256(path),
                             "size": os.path.getsize(path)}
  return dict(sorted(digests.items()))


def _load_json(bundle_dir):
  path = os.path.join(bundle_dir, MANIFEST)
  try:
    with open(path) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise BundleError(
        f"{bundle_dir} is not a tfvaeclf bundle (no {MANIFEST}); make one "
        "with: python -m export --model_dir=DIR --out=BUNDLE") from None
  except (OSError, ValueError) as e:
    reason = " ".join(str(e).split())
    raise BundleError(f"{path} is unreadable ({reason})") from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise BundleError(f"{path} is not a {FORMAT} manifest")
  if manifest.get("format_version") not in _VERSIONS:
    raise BundleError(
        f"{path} has format version {manifest.get('format_version')}, this "
        f"tfvaeclf reads {' and '.join(map(str, _VERSIONS))}: export the "
        "bundle again")
  missing = [key for key in _REQUIRED if key not in manifest]
  if missing:
    raise BundleError(f"{path} lacks {', '.join(missing)}: export the "
                      "bundle again")
  if not _well_formed(manifest):
    raise BundleError(f"{path} has a malformed model or files entry: export "
                      "the bundle again")
  outside = [name for name in manifest["files"] if not _inside(name)]
  if outside:
    raise BundleError(f"{path} names a file outside the bundle "
                      f"({outside[0]!r}); a bundle names its files by "
                      "relative paths without '..'")
  return manifest


def _well_formed(manifest):
  """Whether the entries the checks read have their types: the model's
  fingerprint text, and each file's integer size and sha256 text."""
  model, files = manifest["model"], manifest["files"]
  return (isinstance(model, dict) and isinstance(model.get("fingerprint"), str)
          and isinstance(files, dict)
          and all(isinstance(entry, dict)
                  and type(entry.get("size")) is int
                  and isinstance(entry.get("sha256"), str)
                  for entry in files.values()))


def _inside(name):
  """Whether a manifest's file name stays inside the bundle: a relative
  '/'-separated path with no empty, '.' or '..' part (so no absolute
  path either)."""
  return "\\" not in name and all(
      part not in ("", ".", "..") for part in name.split("/"))


def slice_model(k):
  """The name of slice `k`'s server signature."""
  return f"slice_{k}"


def format_version(streams):
  """The oldest format version that describes `streams` (manifest entries):
  a bundle without a dither stays readable by older boards."""
  return FORMAT_VERSION if any("dither" in s for s in streams) else 1


def read_manifest(bundle_dir, parts, expected_fingerprint=None):
  """The manifest, once the files under `parts` match it: a dir or file of
  the bundle ("edge"), or a tuple of them (("server", TABLES)).

  `expected_fingerprint` (8 bytes) refuses a bundle of another model; a
  manifest naming a file outside the bundle (by '..', an absolute path, or
  a symbolic link out) is refused too. Raises BundleError with a one-line
  reason.
  """
  manifest = _load_json(bundle_dir)
  fingerprint = manifest["model"]["fingerprint"]
  if (expected_fingerprint is not None
      and fingerprint != expected_fingerprint.hex()):
    raise BundleError(
        f"{bundle_dir} was exported from another model (fingerprint "
        f"{fingerprint}, expected {expected_fingerprint.hex()})")
  files = {}
  for part in (parts,) if isinstance(parts, str) else parts:
    listed = {name: entry for name, entry in manifest["files"].items()
              if name == part or name.startswith(part + "/")}
    if not listed:
      raise BundleError(f"{bundle_dir}: the manifest lists no {part}")
    files.update(listed)
  root = os.path.realpath(bundle_dir)
  for name, entry in files.items():
    path = os.path.join(bundle_dir, *name.split("/"))
    if not os.path.isfile(path):
      raise BundleError(f"{bundle_dir} is incomplete: {name} is missing")
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
      raise BundleError(f"{bundle_dir}: {name} is a symbolic link out of "
                        "the bundle (or lies in a linked dir)")
    if (os.path.getsize(path) != entry["size"]
        or _sha256(path) != entry["sha256"]):
      raise BundleError(
          f"{bundle_dir}: {name} does not match the manifest (sha256 or "
          "size differs); the bundle was altered or damaged")
  return manifest
