"""The server half of a bundle: a SavedModel that classifies from the bytes.

Its signatures take, per stream, one tf.string per image (a batch `[N]`)
and decode them with TFC's range-decoding ops and the model's frozen
tables:

    classify(latent) -> {"probabilities": float32 [N, classes],
                         "classes": int64 [N]}      (also serving_default)
    reconstruct(latent) -> {"images": uint8 [N, H, W, C]}  (with a decoder)

A dithered model's signatures also take `dither_seed`, a scalar int64: the
seed in the file's header, from which the receiver draws the sender's
dither. It has no default: a file always carries its seed, and decoding
with another one would shift every latent without an error.
`file_inputs` turns a file into these inputs, checked by the bundle's
`CodecSpec`.

TFC's ops are custom TensorFlow ops: `import tensorflow_compression` before
`tf.saved_model.load`, as `load` does.
"""

import os

import tensorflow as tf
import tensorflow_compression  # noqa: F401  (registers the decoding ops)

from tfvaeclf.codec_spec import CodecSpec
from tfvaeclf.edge import bundle

__all__ = ["DITHER_SEED", "ServerModule", "save", "load", "file_inputs"]

DITHER_SEED = "dither_seed"


class ServerModule(tf.Module):
  """Strings -> class probabilities (and images), with explicit signatures.

  `codec`: the model's `CodecSpec`, whose streams the signatures take.
  `input_names`: the signatures' inputs, the streams' then `dither_seed`.
  """

  def __init__(self, model, codec):
    super().__init__(name="tfvaeclf_server")
    dithered = codec.dither_seed is not None
    self.input_names = [*codec.stream_names,
                        *([DITHER_SEED] if dithered else [])]
    spec = [tf.TensorSpec([None], tf.string, name=name)
            for name in codec.stream_names]
    if dithered:
      spec.append(tf.TensorSpec([], tf.int64, name=DITHER_SEED))

    def decode(inputs):
      options = {"seed": inputs[-1]} if dithered else {}
      return model.decompress(list(inputs[:codec.num_streams]),
                              codec.latent_shape, **options)

    @tf.function(input_signature=spec)
    def classify(*inputs):
      logits = model.classify(decode(inputs))
      return {"probabilities": tf.nn.softmax(logits),
              "classes": tf.argmax(logits, -1)}

    self.classify = classify
    functions = [classify.get_concrete_function()]
    if model.has_decoder:
      @tf.function(input_signature=spec)
      def reconstruct(*inputs):
        x_hat = model.reconstruct(decode(inputs))
        return {"images": tf.cast(tf.round(x_hat * 255.), tf.uint8)}

      self.reconstruct = reconstruct
      functions.append(reconstruct.get_concrete_function())
    # Exactly the weights the signatures read: the model's other variables
    # (its training prior, metrics) are not part of the server.
    self.weights = list({id(v): v for f in functions
                         for v in f.variables}.values())


def save(model, codec, path):
  """Writes the SavedModel of `model` and its `CodecSpec`; returns the
  signatures' names, inputs and outputs."""
  module = ServerModule(model, codec)
  functions = {"serving_default": module.classify,
               "classify": module.classify}
  if model.has_decoder:
    functions["reconstruct"] = module.reconstruct
  signatures = {name: function.get_concrete_function()
                for name, function in functions.items()}
  tf.saved_model.save(module, path, signatures=signatures)
  return {name: {"inputs": module.input_names,
                 "outputs": sorted(function.structured_outputs)}
          for name, function in signatures.items()}


def load(bundle_dir, expected_fingerprint=None):
  """(SavedModel, manifest) once `server/` matches the bundle's manifest.

  Raises BundleError for a missing, altered or foreign bundle.
  """
  manifest = bundle.read_manifest(bundle_dir, bundle.SERVER_DIR,
                                  expected_fingerprint)
  return tf.saved_model.load(
      os.path.join(bundle_dir, bundle.SERVER_DIR)), manifest


def file_inputs(file_bytes, manifest):
  """A tfvaeclf file's bytes -> the keyword inputs of the signatures.

  The file is checked whole and against the bundle's encoder side; its
  header's dither seed, if any, becomes `dither_seed`. Raises
  BitstreamError.
  """
  codec = CodecSpec.from_manifest(manifest)
  coded = codec.unpack(file_bytes)
  inputs = {name: tf.constant(strings, tf.string)
            for name, strings in zip(codec.stream_names, coded.strings)}
  if coded.dither_seed is not None:
    inputs[DITHER_SEED] = tf.constant(coded.dither_seed, tf.int64)
  return inputs
