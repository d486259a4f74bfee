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


def build(name, config):
  """Instantiates model `name` from its config dataclass or a plain dict."""
  cls = get(name)
  if isinstance(config, dict):
    config = cls.Config(**config)
  return cls(config)


def names():
  return sorted(_MODELS)
