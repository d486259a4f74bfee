"""Typed streams: the bundle manifest's schema, and each type's two halves.

A coder codes an image's latent as one string per stream. A stream's type
says how its values pick their range-coding table, and is all that the
exporter, the board, the server and the MCU generator dispatch on:

    ChannelStream  "tables": "channel": table = channel (the factorized
                   coder; the dithered coder's symbols, with a "dither":
                   {"seed", "levels"}; a hyper-latent)
    IndexedStream  "tables": "indexed": table = a scale index that a model
                   predicts slice by slice, conditional on another stream
                   ("conditional": {"on", "slices", "num_scales", "model"};
                   the latent of the hyperprior and channel-context coders)
    IntegerIndexedStream  "tables": "indexed_integer": the same, the scale
                   index and location predicted by an integer network whose
                   weights the stream's tables carry (the integer_context
                   coder), so that every runtime predicts the same tables

Each stream is one manifest entry ("name", "tables", "shape" of the values
one image codes, "dtype") and one `NAME/...` group of tables.npz arrays
(`cdf`, `cdf_offset`, `coding_rank`, `precision`, `shape`). Its "role" says
whether the server's classifier reads it: "latent" streams, concatenated
along channels in plan order, are the classifier's input; a "side" stream
(a hyper-latent) only helps decode another. The role is written only where
it differs from its default: "side" for a stream an indexed stream is
conditional on, "latent" otherwise, so bundles written before the role
existed read as they were meant.

Each type has a board half (`quantize`: the encoder's float latents -> the
values, and table indexes, the range coder takes) and a server half
(`decode`: strings -> float32 values). An indexed stream's models run
outside this module, which imports no TensorFlow: the board hands its
slice coder in (`board_model`, a TFLite signature runner), the server its
SavedModel signatures (`run`).
"""

import os

import numpy as np

from tfvaeclf.coding import (bundle, dither, latent_decoder, range_coder,
                             slice_predictor)
from tfvaeclf.errors import BundleError

__all__ = ["ChannelStream", "IndexedStream", "IntegerIndexedStream",
           "LATENT", "SIDE",
           "decode_input", "input_shape", "input_streams",
           "manifest_entries", "read_plan", "tables_arrays"]

LATENT, SIDE = "latent", "side"
_ARRAYS = ("cdf", "cdf_offset", "coding_rank")


class _Stream:
  """What both types share: a name, a shape, frozen tables and a role.

  Attributes:
    name: the stream's name (the encoder's output, the manifest's entry).
    shape: the values one image codes, (*spatial, channels).
    cdf, cdf_offset: TFC's lookup tables, as the coder froze them.
    coding_rank: the innermost axes coded to one string.
    precision: the range coder's precision.
    role: LATENT (the classifier reads it) or SIDE; None: the default.
  """

  TABLES = None  # the manifest's "tables"

  def __init__(self, name, shape, cdf, cdf_offset, coding_rank,
               precision=16, role=None):
    self.name = name
    self.shape = tuple(int(d) for d in shape)
    self.cdf, self.cdf_offset = np.asarray(cdf), np.asarray(cdf_offset)
    self.coding_rank, self.precision = int(coding_rank), int(precision)
    self.role = role
    self._tables = None

  @property
  def tables(self):
    """The parsed `range_coder.CdfTables` (parsed once)."""
    if self._tables is None:
      self._tables = range_coder.CdfTables(self.cdf, self.cdf_offset)
    return self._tables

  def entry(self):
    """The manifest entry (without its role, see `manifest_entries`)."""
    return {"name": self.name, "tables": self.TABLES,
            "shape": list(self.shape), "dtype": "int32"}

  def arrays(self):
    """The tables.npz arrays of the stream."""
    arrays = {"cdf": self.cdf, "cdf_offset": self.cdf_offset,
              "coding_rank": np.int32(self.coding_rank),
              "precision": np.int32(self.precision),
              "shape": np.array(self.shape, np.int32)}
    return {f"{self.name}/{key}": value for key, value in arrays.items()}

  @classmethod
  def _fields(cls, entry, arrays):
    name = entry["name"]
    return {"name": name, "shape": entry["shape"],
            "cdf": arrays[f"{name}/cdf"],
            "cdf_offset": arrays[f"{name}/cdf_offset"],
            "coding_rank": arrays[f"{name}/coding_rank"],
            "precision": arrays.get(f"{name}/precision", 16),
            "role": entry.get("role")}

  @property
  def board_model(self):
    """The bundle file of the model the board runs for this stream."""
    return None

  def coder_tables(self):
    """(CdfTables, coding_rank) for `native.StreamsEncoder`."""
    return self.tables, self.coding_rank


class ChannelStream(_Stream):
  """Values coded with a table per channel; optionally dithered.

  `dither`: {"seed", "levels"} of a universally quantized stream, which
  codes the symbols `clip(round(y + u), 0, levels - 1)` of its dither `u`
  (`tfvaeclf.coding.dither`) and decodes to `m - u`.
  """

  TABLES = "channel"

  # pylint: disable-next=redefined-outer-name
  def __init__(self, *args, dither=None, **kwargs):
    super().__init__(*args, **kwargs)
    self.dither = dict(dither) if dither else None

  def entry(self):
    return {**super().entry(),
            **({"dither": self.dither} if self.dither else {})}

  @classmethod
  def from_entry(cls, entry, arrays, files):
    del files  # a channel stream needs no model
    return cls(**cls._fields(entry, arrays), dither=entry.get("dither"))

  def quantize(self, latents, first_index=0, coded=None, model=None):
    """Board half: float32 latents (N, ...) -> the int64 values coded,
    rounded half to even like TF's `round`; a dithered stream's in float32
    after adding the dither of indexes `first_index`, `first_index + 1`..."""
    del coded, model  # depends on no other stream
    if self.dither is None:
      return range_coder.quantize(latents)
    u = dither.np_dither(self.dither["seed"], len(latents), latents.shape[1:],
                         first_index)
    return np.clip(range_coder.quantize(latents + u), 0,
                   self.dither["levels"] - 1)

  def empty(self):
    """What `quantize` gives for no images."""
    return np.zeros((0, *self.shape), np.int64)

  @staticmethod
  def coded(values):
    """`quantize`'s result -> (values, table indexes or None)."""
    return values, None

  def decode(self, strings, decoded=None, run=None, dither_seed=None,
             dither_indices=None):
    """Server half: strings -> (float32 values, failures per image, see
    `latent_decoder.decode_channels`); a dithered stream's `m - u` with the
    dither the file or message carries (`dither_seed`, `dither_indices`:
    the receiver draws it from those, not its own)."""
    del decoded, run  # depends on no other stream
    values, failures = latent_decoder.decode_channels(
        strings, self.tables, self.shape[:-1], self.name)
    if dither_seed is not None:
      values -= dither.np_dither(dither_seed, dither_indices,
                                 values.shape[1:])
    return values, failures


class IndexedStream(_Stream):
  """Values coded with a table per predicted scale index, slice by slice.

  `on`: the stream it is conditional on (decoded first); `slices`: channels
  per slice; `num_scales`: the number of tables; `model`: the bundle file
  of the float32 slice coder the board runs (`bundle.SLICE_CODER`:
  (z_hat, latent) -> values, indexes). The server predicts each slice's
  tables with its SavedModel's `bundle.HYPER_SYNTHESIS` and
  `bundle.slice_model(k)` signatures.
  """

  TABLES = "indexed"

  def __init__(self, *args, on, slices, num_scales, model=bundle.SLICE_CODER,
               **kwargs):
    super().__init__(*args, **kwargs)
    self.on, self.slices = on, [int(s) for s in slices]
    self.num_scales, self.model = int(num_scales), model

  def entry(self):
    return {**super().entry(), "conditional": {
        "on": self.on, "slices": list(self.slices),
        "num_scales": self.num_scales, "model": self.model}}

  @classmethod
  def from_entry(cls, entry, arrays, files):
    conditional = entry["conditional"]
    if conditional["model"] not in files:
      raise BundleError(f"the manifest lists no {conditional['model']}: "
                        "export the bundle again")
    return cls(**cls._fields(entry, arrays), on=conditional["on"],
               slices=conditional["slices"],
               num_scales=conditional["num_scales"],
               model=conditional["model"])

  @property
  def board_model(self):
    return self.model

  def coder_tables(self):
    return self.tables, 1  # every value picks its table by index

  def quantize(self, latents, first_index=0, coded=None, model=None):
    """Board half: the slice coder `model` runs the model's slice loop on
    the coded stream it is conditional on (float32 for the int8 encoder
    too: the server predicts the tables in float32 from the same integers,
    so the board's tables are the decoder's) -> (values, table indexes),
    (N, values per image) in coding order."""
    del first_index  # no dither
    outputs = model.run({
        bundle.HYPER_INPUT: coded[self.on].astype(np.float32),
        bundle.LATENT_INPUT: latents})
    return outputs[bundle.VALUES], outputs[bundle.INDEXES]

  def empty(self):
    return (np.zeros((0, int(np.prod(self.shape))), np.int32),) * 2

  @staticmethod
  def coded(values_and_indexes):
    return values_and_indexes

  def decode(self, strings, decoded=None, run=None, dither_seed=None,
             dither_indices=None):
    """Server half: the stream it is conditional on (decoded, by name)
    gives the hyper features, from which `run(signature, **inputs)` (the
    server's SavedModel) predicts each slice's location and scale index,
    in the one slice loop (`latent_decoder.decode_slices`) -> (float32
    values, failures per image)."""
    del dither_seed, dither_indices  # no dither
    latent = latent_decoder.IndexedStreams(strings, self.tables)
    values = latent_decoder.decode_slices(
        latent, len(self.slices), self.num_scales,
        self._predict(decoded[self.on], run))
    return values, latent.failures(self.name)

  def _predict(self, conditioning, run):
    """`predict(k, decoded) -> (loc, index)` of `decode_slices`, from the
    decoded stream this one is conditional on."""
    features = run(bundle.HYPER_SYNTHESIS,
                   **{bundle.HYPER_INPUT: conditioning})[bundle.FEATURES]

    def predict(k, slices):
      inputs = {bundle.FEATURES: features}
      if slices:
        inputs[bundle.DECODED] = np.concatenate(slices, -1)
      outputs = run(bundle.slice_model(k), **inputs)
      return outputs[bundle.LOC], outputs[bundle.INDEX]

    return predict


class IntegerIndexedStream(IndexedStream):
  """An indexed stream whose tables an integer network predicts.

  `predictor`: a `slice_predictor.IntegerSlicePredictor`, whose integers
  travel in tables.npz (under `NAME/predictor/`). The board and the server
  run it, in C or its numpy twin, instead of float32 models: every runtime
  computes the same tables, where float32 kernels can differ by an LSB and
  send a decoder down another table. A tfvaeclf older than this type
  refuses the bundle in one line.
  """

  TABLES = "indexed_integer"

  def __init__(self, *args, predictor, **kwargs):
    super().__init__(*args, model=None, **kwargs)
    self.predictor = predictor

  def entry(self):
    entry = super().entry()
    del entry["conditional"]["model"]  # no model file: the tables hold it
    return entry

  def arrays(self):
    return {**super().arrays(),
            **self.predictor.arrays(f"{self.name}/predictor")}

  @classmethod
  def from_entry(cls, entry, arrays, files):
    del files  # no model file
    conditional = entry["conditional"]
    try:
      predictor = slice_predictor.IntegerSlicePredictor.from_arrays(
          arrays, f"{entry['name']}/predictor")
    except ValueError as e:
      raise BundleError(f"{bundle.TABLES}: {e}") from None
    if (predictor.slice_sizes != list(conditional["slices"])
        or predictor.num_scales != conditional["num_scales"]):
      raise BundleError(f"{bundle.TABLES}: the {entry['name']!r} stream's "
                        "predictor is not for its slices or tables")
    return cls(**cls._fields(entry, arrays), on=conditional["on"],
               slices=conditional["slices"],
               num_scales=conditional["num_scales"], predictor=predictor)

  @property
  def board_model(self):
    return None

  def quantize(self, latents, first_index=0, coded=None, model=None):
    """Board half: the model's slice loop with the integer predictor, on
    the coded stream it is conditional on -> (values, table indexes),
    int32 (N, values per image) in coding order: each slice's
    `round(y - loc)`, rounded in integers as a microcontroller's board does
    (`slice_predictor.symbols`), slice after slice."""
    del first_index, model  # no dither, no model file
    return self.predictor.quantize(
        coded[self.on], slice_predictor.latent_units(latents))

  def _predict(self, conditioning, run=None):
    del run  # no server model: the tables hold the predictor
    features = self.predictor.features(conditioning, self.shape[:-1])

    def predict(k, slices):
      loc_q, index = self.predictor.predict(k, features, slices)
      return (loc_q.astype(np.float32)
              / np.float32(slice_predictor.LOC_UNITS), index)

    return predict


_TYPES = {cls.TABLES: cls for cls in (ChannelStream, IndexedStream,
                                       IntegerIndexedStream)}


def _default_roles(entries):
  """{name: role} where no role is written: a stream another is
  conditional on is side information."""
  conditions = {e.get("conditional", {}).get("on") for e in entries}
  return {e["name"]: SIDE if e["name"] in conditions else LATENT
          for e in entries}


def manifest_entries(plan):
  """The manifest's "streams" of a coder's stream plan."""
  entries = [stream.entry() for stream in plan]
  defaults = _default_roles(entries)
  for stream, entry in zip(plan, entries):
    if stream.role not in (None, defaults[stream.name]):
      entry["role"] = stream.role
  return entries


def tables_arrays(plan):
  """tables.npz's arrays of a plan."""
  arrays = {}
  for stream in plan:
    arrays.update(stream.arrays())
  return arrays


def read_plan(bundle_dir, manifest):
  """The stream plan of a checked bundle: its manifest's streams with
  their tables, roles filled in; BundleError in one line for a stream
  type this tfvaeclf cannot code, a table or a model the bundle lacks."""
  with np.load(os.path.join(bundle_dir, bundle.TABLES),
               allow_pickle=False) as npz:
    arrays = {name: npz[name] for name in npz.files}
  entries = manifest["streams"]
  defaults = _default_roles(entries)
  plan = []
  for entry in entries:
    name = entry["name"]
    if entry["tables"] not in _TYPES:
      raise BundleError(
          f"{bundle_dir}: stream {name!r} uses {entry['tables']!r} tables, "
          "which this tfvaeclf cannot code; update tfvaeclf")
    missing = [key for key in _ARRAYS if f"{name}/{key}" not in arrays]
    if missing:
      raise BundleError(f"{bundle_dir}: {bundle.TABLES} lacks the {name!r} "
                        f"stream's {', '.join(missing)}: export the bundle "
                        "again")
    try:
      stream = _TYPES[entry["tables"]].from_entry(entry, arrays,
                                                  manifest["files"])
    except BundleError as e:
      raise BundleError(f"{bundle_dir}: {e}") from None
    stream.role = stream.role or defaults[name]
    plan.append(stream)
  return plan


def input_streams(plan):
  """The streams the classifier reads, in plan order (role "latent")."""
  defaults = _default_roles([stream.entry() for stream in plan])
  return [stream for stream in plan
          if (stream.role or defaults[stream.name]) == LATENT]


def input_shape(plan):
  """The classifier's input per image: the latent streams' values,
  concatenated along channels."""
  latents = input_streams(plan)
  return [*latents[0].shape[:-1], sum(s.shape[-1] for s in latents)]


def decode_input(plan, strings, run=None, dither_seed=None,
                 dither_indices=None):
  """strings[stream][image] -> (float32 (N, *input_shape), failures): every
  stream decoded in plan order (a stream before those conditional on it),
  the latent ones concatenated along channels; per image, None or the
  (stream, reason) of its first stream that does not decode
  (`latent_decoder.payload_error` makes it a payload's error). An image
  that fails fails alone: the others decode as they would without it."""
  decoded, failures = {}, [None] * len(strings[0])
  for stream, stream_strings in zip(plan, strings):
    decoded[stream.name], stream_failures = stream.decode(
        stream_strings, decoded, run, dither_seed, dither_indices)
    failures = [old or new for old, new in zip(failures, stream_failures)]
  latents = [decoded[stream.name] for stream in input_streams(plan)]
  return (latents[0] if len(latents) == 1 else np.concatenate(latents, -1),
          failures)
