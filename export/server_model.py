"""The server half of a bundle: writes the SavedModel on TensorFlow's own
ops, which `tfvaeclf.serve.bundle_server.BundleServer` feeds.

The SavedModel's signatures take the decoded latent of each image, float32
`[N, *latent_shape, channels]` named `latent_hat` (`bundle.SERVER_INPUT`):
what the classifier reads, so for a dithered model the symbols less their
dither, `m - u`.

    classify(latent_hat) -> {"probabilities": float32 [N, classes],
                             "classes": int64 [N]}     (also serving_default)
    reconstruct(latent_hat) -> {"images": uint8 [N, H, W, C]} (with a decoder)

Stock TensorFlow and TF Serving load it as it is. The bytes are decoded
before it, outside TensorFlow (`BundleServer`). No signature takes the
strings: decoding in the graph needs TFC's custom ops, and its range
decoder, which crafted bytes can keep busy for minutes.

The SavedModel also holds the coder's server functions (its
`server_functions`, e.g. an indexed stream's predictors
`bundle.HYPER_SYNTHESIS` and `bundle.slice_model(k)`) as signatures, with
which the server decodes the streams that need them.
"""

import tensorflow as tf

from tfvaeclf.coding import bundle

__all__ = ["ServerModule", "save"]


class ServerModule(tf.Module):
  """Decoded latents -> class probabilities (and images), with explicit
  signatures.

  `latent_shape`: one image's decoded latent, channels last.
  `parameters`: the coder's server functions, {name: tf.function}.
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
  per-image shape `latent_shape` (and the coder's server functions
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
