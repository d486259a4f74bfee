"""The name -> model class table behind `--model`."""

__all__ = ["register", "get", "build", "names"]

_MODELS = {}


def register(name):
  """Class decorator: makes a model kind available as `--model=name`."""
  def decorator(cls):
    if name in _MODELS:
      raise ValueError(f"Model name {name!r} is registered twice.")
    cls.registered_name = name
    _MODELS[name] = cls
    return cls
  return decorator


def get(name):
  try:
    return _MODELS[name]
  except KeyError:
    raise ValueError(
        f"Unknown model {name!r}; choose one of {', '.join(names())}."
    ) from None


def build(name, config, precision="float32"):
  """Instantiates model `name` from its config dataclass or a plain dict.

  Its layers take the Keras dtype policy `precision` (mixed_bfloat16:
  bfloat16 computation, float32 variables, so the weights load into a
  float32 build); the process's policy is left as it was.
  """
  import tensorflow as tf  # the table itself needs no TensorFlow
  cls = get(name)
  if isinstance(config, dict):
    config = cls.Config(**config)
  policy = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(precision)
  try:
    return cls(config)
  finally:
    tf.keras.mixed_precision.set_global_policy(policy)


def names():
  return sorted(_MODELS)
