"""Which TFLite interpreter runs the edge encoder.

A board installs a runtime package (`pip install tfvaeclf[edge]` brings
ai-edge-litert); the old tflite-runtime works too. Where neither is
installed, TensorFlow's own `tf.lite` is used, and only then is TensorFlow
imported, so a board without it never loads it, and quietly: its C++
start-up chatter (CUDA, cuDNN, CPU features) says nothing about encoding.
"""

import importlib
import os

__all__ = ["RUNTIMES", "SignatureModel", "load_interpreter"]

# Module of each runtime, first found wins; TensorFlow is the last resort.
RUNTIMES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def _interpreter_class():
  """(Interpreter class, name of the module that provides it)."""
  for module_name in RUNTIMES:
    try:
      return importlib.import_module(module_name).Interpreter, module_name
    except ImportError:
      continue
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read as TF loads
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.lite.Interpreter, "tensorflow.lite"


def load_interpreter(model_path, num_threads=None):
  """(Interpreter of the .tflite file, the runtime module's name)."""
  interpreter_class, runtime = _interpreter_class()
  return interpreter_class(model_path=model_path,
                           num_threads=num_threads), runtime


class SignatureModel:
  """A .tflite file's signature, run through tensor indexes (the signature
  runner reallocates on every call, which costs more than a small model).

  Attributes:
    runtime: the runtime module's name.
    inputs, outputs: {name: TFLite tensor details} of the signature.
  """

  def __init__(self, model_path, num_threads=None):
    self._interpreter, self.runtime = load_interpreter(model_path,
                                                      num_threads)
    runner = self._interpreter.get_signature_runner()
    self.inputs = runner.get_input_details()
    self.outputs = runner.get_output_details()
    self._batch_size = None
    self._input_indexes = {name: d["index"] for name, d in self.inputs.items()}
    self._output_indexes = [(name, d["index"])
                            for name, d in self.outputs.items()]

  def run(self, inputs):
    """{input name: array, batch first} -> {output name: array}."""
    interpreter, indexes = self._interpreter, self._input_indexes
    batch_size = len(next(iter(inputs.values())))
    if batch_size != self._batch_size:
      for name, value in inputs.items():
        interpreter.resize_tensor_input(indexes[name], value.shape)
      interpreter.allocate_tensors()
      self._batch_size = batch_size
    for name, value in inputs.items():
      interpreter.set_tensor(indexes[name], value)
    interpreter.invoke()
    return {name: interpreter.get_tensor(index)
            for name, index in self._output_indexes}
