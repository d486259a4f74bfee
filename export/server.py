"""The server half of a bundle: a SavedModel that classifies from the bytes.

Its signatures take, per stream, one tf.string per image (a batch `[N]`)
and decode them with TFC's range-decoding ops and the model's frozen
tables:

    classify(latent) -> {"probabilities": float32 [N, classes],
                         "classes": int64 [N]}      (also serving_default)
    reconstruct(latent) -> {"images": uint8 [N, H, W, C]}  (with a decoder)

TFC's ops are custom TensorFlow ops: `import tensorflow_compression` before
`tf.saved_model.load`, as `load` does.
"""

import os

import tensorflow as tf
import tensorflow_compression  # noqa: F401  (registers the decoding ops)

from tfvaeclf.edge import bundle

__all__ = ["ServerModule", "save", "load"]


class ServerModule(tf.Module):
  """Strings -> class probabilities (and images), with explicit signatures."""

  def __init__(self, model, stream_names):
    super().__init__(name="tfvaeclf_server")
    latent_shape = model.latent_shape
    spec = [tf.TensorSpec([None], tf.string, name=name)
            for name in stream_names]

    def decode(strings):
      return model.decompress(list(strings), latent_shape)

    @tf.function(input_signature=spec)
    def classify(*strings):
      logits = model.classify(decode(strings))
      return {"probabilities": tf.nn.softmax(logits),
              "classes": tf.argmax(logits, -1)}

    self.classify = classify
    functions = [classify.get_concrete_function()]
    if model.has_decoder:
      @tf.function(input_signature=spec)
      def reconstruct(*strings):
        x_hat = model.reconstruct(decode(strings))
        return {"images": tf.cast(tf.round(x_hat * 255.), tf.uint8)}

      self.reconstruct = reconstruct
      functions.append(reconstruct.get_concrete_function())
    # Exactly the weights the signatures read: the model's other variables
    # (its training prior, metrics) are not part of the server.
    self.weights = list({id(v): v for f in functions
                         for v in f.variables}.values())


def save(model, stream_names, path):
  """Writes the SavedModel; returns its signatures' names, inputs, outputs."""
  module = ServerModule(model, stream_names)
  functions = {"serving_default": module.classify,
               "classify": module.classify}
  if model.has_decoder:
    functions["reconstruct"] = module.reconstruct
  signatures = {name: function.get_concrete_function()
                for name, function in functions.items()}
  tf.saved_model.save(module, path, signatures=signatures)
  return {name: {"inputs": list(stream_names),
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
