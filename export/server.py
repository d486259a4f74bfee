"""The server half of a bundle: a SavedModel on TensorFlow's own ops, fed by
the project's decoder.

The SavedModel's signatures take the decoded latent of each image, float32
`[N, *latent_shape, channels]` named `latent_hat` (`bundle.SERVER_INPUT`):
what the classifier reads, so for a dithered model the symbols less their
dither, `m - u`.

    classify(latent_hat) -> {"probabilities": float32 [N, classes],
                             "classes": int64 [N]}     (also serving_default)
    reconstruct(latent_hat) -> {"images": uint8 [N, H, W, C]} (with a decoder)

Stock TensorFlow and TF Serving load it as it is. The bytes are decoded
before it, outside TensorFlow: `BundleServer` checks a file against the
bundle's `CodecSpec`, decodes it with the bundle's frozen tables by
`tfvaeclf.coding.latent_decoder` (whose work is bounded whatever the bytes), and
runs the signatures. No signature takes the strings: decoding in the graph
needs TFC's custom ops, and its range decoder, which crafted bytes can keep
busy for minutes.

A conditional coder's latent is decoded slice by slice: the SavedModel
also holds its sub-models (`bundle.HYPER_SYNTHESIS`, `bundle.slice_model(k)`)
as signatures, which predict each slice's tables from the hyper-latent and
the slices decoded before, as `entropy.ChannelContextCoder.decode` does.

Nothing here imports TFC, nor the model code: a server without TFC runs
`BundleServer` (`save` is handed a built model).
"""

import os

import numpy as np
import tensorflow as tf

from tfvaeclf.coding import latent_decoder
from tfvaeclf.coding.codec_spec import CodecSpec
from tfvaeclf.coding import bundle
from tfvaeclf.errors import BitstreamError, BundleError

__all__ = ["BundleServer", "ServerModule", "save"]


class ServerModule(tf.Module):
  """Decoded latents -> class probabilities (and images), with explicit
  signatures.

  `latent_shape`: one image's decoded latent, channels last.
  `parameters`: a conditional coder's sub-models, {name: tf.function}.
  """

  def __init__(self, model, latent_shape, parameters=None):
    super().__init__(name="tfvaeclf_server")
    spec = [tf.TensorSpec([None, *latent_shape], tf.float32,
                          name=bundle.SERVER_INPUT)]

    @tf.function(input_signature=spec)
    def classify(latent_hat):
      logits = model.classify(latent_hat)
      return {"probabilities": tf.nn.softmax(logits),
              "classes": tf.argmax(logits, -1)}

    self.classify = classify
    functions = [classify.get_concrete_function()]
    if model.has_decoder:
      @tf.function(input_signature=spec)
      def reconstruct(latent_hat):
        x_hat = model.reconstruct(latent_hat)
        return {"images": tf.cast(
            tf.round(tf.clip_by_value(x_hat, 0., 1.) * 255.), tf.uint8)}

      self.reconstruct = reconstruct
      functions.append(reconstruct.get_concrete_function())
    self.parameters = dict(parameters or {})
    functions += [function.get_concrete_function()
                  for function in self.parameters.values()]
    # Exactly the weights the signatures read: the model's other variables
    # (its coder, training prior, metrics) are not part of the server.
    self.weights = list({id(v): v for f in functions
                         for v in f.variables}.values())


def _describe(function):
  """A signature's inputs (dtype, shape; null: any size) and outputs."""
  return {"inputs": {spec.name: {"dtype": spec.dtype.name,
                                 "shape": spec.shape.as_list()}
                     for spec in tf.nest.flatten(
                         function.structured_input_signature)},
          "outputs": sorted(function.structured_outputs)}


def save(model, latent_shape, path, parameters=None):
  """Writes the SavedModel of `model`, whose decoded latents have the
  per-image shape `latent_shape` (and a conditional coder's sub-models
  `parameters`); returns its signatures' descriptions."""
  module = ServerModule(model, latent_shape, parameters)
  functions = {"serving_default": module.classify,
               "classify": module.classify, **module.parameters}
  if model.has_decoder:
    functions["reconstruct"] = module.reconstruct
  signatures = {name: function.get_concrete_function()
                for name, function in functions.items()}
  tf.saved_model.save(module, path, signatures=signatures)
  return {name: _describe(function)
          for name, function in signatures.items()}


class BundleServer:
  """A bundle's server side: file bytes -> decoded latents -> classes.

  Loads `server/` and the coding tables once they match the manifest
  (`expected_fingerprint`, 8 bytes, refuses a bundle of another model);
  raises BundleError in one line otherwise.

  Attributes:
    manifest: the bundle's checked manifest.
    codec: its `CodecSpec`, which every file is checked against.
    class_names: the model's class names, by class index.
    has_decoder: whether `reconstruct` exists.
  """

  def __init__(self, bundle_dir, expected_fingerprint=None):
    self.manifest = bundle.read_manifest(
        bundle_dir, (bundle.SERVER_DIR, bundle.TABLES), expected_fingerprint)
    signatures = self.manifest["server"]["signatures"]
    if bundle.SERVER_INPUT not in signatures["serving_default"]["inputs"]:
      raise BundleError(
          f"{bundle_dir}: its server/ decodes strings with TFC's ops (made "
          "by an older tfvaeclf); export the bundle again")
    self.codec = CodecSpec.from_manifest(self.manifest)
    self.class_names = self.manifest["model"]["class_names"]
    self.has_decoder = "reconstruct" in signatures
    self._tables = {name: tables for name, (tables, _) in
                    bundle.read_tables(bundle_dir, self.manifest).items()}
    self._streams = self.manifest["streams"]
    self._signatures = tf.saved_model.load(
        os.path.join(bundle_dir, bundle.SERVER_DIR)).signatures

  def decode(self, data):
    """A file's or message's bytes -> float32 `[N, *latent_shape,
    channels]`, the signatures' input; BitstreamError in one line for bytes
    that are corrupt or not of this bundle's encoder side."""
    return self.decode_coded(self.codec.read(data))

  def decode_coded(self, coded):
    """`decode` of a file or message already read by `codec.read`."""
    return self._decode(coded.strings, coded.latent_shape,
                        coded.dither_seed,
                        coded.dither_index + np.arange(coded.num_images))

  def decode_many(self, coded):
    """`decode_coded` of several files or messages in one call of the range
    decoder (the per-call cost dominates one-image messages): per payload,
    its latents or the BitstreamError it alone raises."""
    seeds = {c.dither_seed for c in coded}
    if len(seeds) == 1:
      strings = [[s for c in coded for s in c.strings[stream]]
                 for stream in range(self.codec.num_streams)]
      indices = np.concatenate(
          [c.dither_index + np.arange(c.num_images) for c in coded])
      try:
        latents = self._decode(strings, coded[0].latent_shape, seeds.pop(),
                               indices)
        return np.split(latents,
                        np.cumsum([c.num_images for c in coded])[:-1])
      except BitstreamError:
        pass  # one payload or more is bad: decode each to find which
    return [self._decode_or_error(c) for c in coded]

  def _decode_or_error(self, coded):
    try:
      return self.decode_coded(coded)
    except BitstreamError as e:
      return e

  def _decode(self, strings, latent_shape, dither_seed, dither_indices):
    """strings[stream][image] -> the decoded latents."""
    if len(strings) == 2:
      return self._decode_conditional(*strings)
    ((strings, stream),) = zip(strings, self._streams)
    tables = self._tables[stream["name"]]
    if dither_seed is None:
      return latent_decoder.decode_factorized(strings, tables, latent_shape)
    # The receiver draws the dither from the file's seed, not its own, and
    # from a message's counter.
    return latent_decoder.decode_dithered(strings, tables, latent_shape,
                                          dither_seed, dither_indices)

  def _decode_conditional(self, hyper_strings, strings):
    """The hyper-latent, then the latent slice by slice, each slice's
    tables predicted by the SavedModel's sub-models."""
    hyper, latent = self._streams
    z_hat = latent_decoder.decode_factorized(
        hyper_strings, self._tables[hyper["name"]], hyper["shape"][:-1],
        stream=hyper["name"])
    features = self._run(bundle.HYPER_SYNTHESIS,
                         **{bundle.HYPER_INPUT: z_hat})[bundle.FEATURES]

    streams = latent_decoder.IndexedStreams(strings,
                                            self._tables[latent["name"]])
    num_scales = latent["conditional"]["num_scales"]
    decoded = []
    for k in range(len(latent["conditional"]["slices"])):
      inputs = {bundle.FEATURES: features}
      if decoded:
        inputs[bundle.DECODED] = np.concatenate(decoded, -1)
      outputs = self._run(bundle.slice_model(k), **inputs)
      # The index as the model rounds it: half to even, within the table.
      index = np.clip(np.rint(outputs[bundle.INDEX]), 0, num_scales - 1)
      symbols = streams.decode(index.astype(np.int32))
      decoded.append(symbols.astype(np.float32) + outputs[bundle.LOC])
    streams.finish(latent["name"])
    return np.concatenate(decoded, -1)

  def _run(self, name, **inputs):
    outputs = self._signatures[name](
        **{key: tf.constant(value, tf.float32)
           for key, value in inputs.items()})
    return {key: value.numpy() for key, value in outputs.items()}

  def classify(self, latent_hat):
    """Decoded latents -> {"probabilities": [N, classes], "classes": [N]}."""
    return self._run("classify", **{bundle.SERVER_INPUT: latent_hat})

  def reconstruct(self, latent_hat):
    """Decoded latents -> uint8 images, for a model with a decoder."""
    if not self.has_decoder:
      raise BundleError("the bundle's model has no decoder: it classifies "
                        "but does not reconstruct images")
    return self._run("reconstruct",
                     **{bundle.SERVER_INPUT: latent_hat})["images"]
