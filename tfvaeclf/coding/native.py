"""The C range coder (`csrc/range_coder.c`), with the numpy coder as fallback;
the integer layers (`csrc/int_layers.c`) with their numpy twin, and the
slice loop a microcontroller runs on them (`csrc/slice_predictor.c`).

`encode_channel`, `encode_index`, `decode_channel`, `decode_index` and
`IndexDecoder` take the arguments of their namesakes in `range_coder` and
return the same bytes and values, coding a whole batch in one C call;
`StreamsEncoder` codes several streams (a conditional coder's hyper-latent
and latent) in one. Tables are parsed by
`range_coder.CdfTables`, errors in values or tables are reported by the
numpy coder (the C coder only detects them), so both speak alike.

The C decoder is also stricter than TFC's: its work is bounded by the
number of values whatever the bytes, and a string that would need bytes
past its end that no TFC encoder leaves out fails like a corrupt one
(`ok` False, or `ValueError` when `check`), where TFC decodes zeros. TFC's
encoder leaves out 2 to 4 trailing bytes, or, when it ends with its interval
straddling 2**32, 4 or 5 plus 2 for each renormalization since: that run
has no bound, so the rule rejects short strings only where no such run
explains them (see `rc_decoder_finish` in range_coder.h).

The shared library is compiled on first use with the system C compiler
(`$CC`, else `cc`) into `$XDG_CACHE_HOME/tfvaeclf` (`~/.cache/tfvaeclf`),
named by a hash of the sources and the compiler, and moved into place
atomically, so concurrent first uses are safe. The build records the
library's sha256 beside it (`.so.sha256`); a library is loaded only if it,
its record and the cache dir belong to this user, are writable by no one
else, and the library's sha256 is the one recorded, so no other user's
library runs here. Without a compiler, if the build fails, or if the cached
library fails a check or lacks a function, one warning says so and every
function runs the numpy coder; `available()` tells which runs.
"""

import ctypes
import fcntl
import hashlib
import logging
import math
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
import threading
import weakref

import numpy as np

from tfvaeclf.coding import int_layers
from tfvaeclf.coding import range_coder as rc

# Argument checks and error messages are range_coder's, shared with it.
# pylint: disable=protected-access

__all__ = ["IndexDecoder", "StreamsEncoder", "available", "decode_channel",
           "decode_index", "encode_channel", "encode_index", "int_conv2d",
           "library_path", "slice_quantize", "slice_scratch_size"]

_SOURCE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "csrc")
_SOURCES = ("range_coder.h", "range_coder.c", "int_layers.h",
            "int_layers.c", "slice_predictor.h", "slice_predictor.c")
_CFLAGS = ("-std=c99", "-O2", "-fPIC", "-shared")

# Status codes of range_coder.h.
_OK = 0
_ERR_CAPACITY = -7
_ERR_ESCAPE = -8
_ERR_INT32 = -9
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
# Output bytes per value with no escape / with any (RC_MAX_BYTES).
_BYTES_DIRECT, _BYTES_ANY = 2, 122

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_UNSET = object()
_lib = _UNSET
_tables = weakref.WeakKeyDictionary()


class _Table(ctypes.Structure):
  """`rc_table` of range_coder.h."""
  _fields_ = [("cdf", ctypes.c_void_p), ("num_symbols", ctypes.c_int32),
              ("offset", ctypes.c_int32), ("precision", ctypes.c_int16),
              ("overflow", ctypes.c_int16), ("cdf16", ctypes.c_void_p)]


class _Stream(ctypes.Structure):
  """`rc_stream` of range_coder.h."""
  _fields_ = [("tables", ctypes.c_void_p), ("num_tables", ctypes.c_int32),
              ("n", ctypes.c_int32), ("index", ctypes.c_void_p),
              ("values", ctypes.c_void_p)]


class _Decoder(ctypes.Structure):
  """`rc_decoder` of range_coder.h."""
  _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_int64),
              ("position", ctypes.c_int64), ("need", ctypes.c_int64),
              ("straddling", ctypes.c_int32), ("base", ctypes.c_uint32),
              ("size_minus1", ctypes.c_uint32), ("value", ctypes.c_uint32),
              ("status", ctypes.c_int)]


# ---------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------
def _compiler():
  cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
  return shlex.split(cc) if cc else None


def library_path():
  """Where the shared library for these sources and compiler lives."""
  digest = hashlib.sha256()
  for name in _SOURCES:
    with open(os.path.join(_SOURCE_DIR, name), "rb") as f:
      digest.update(f.read())
  digest.update(repr((_compiler(), _CFLAGS, platform.machine())).encode())
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(cache, "tfvaeclf",
                      f"range_coder-{digest.hexdigest()[:16]}.so")


def _digest_path(path):
  """Where the build records the library's sha256."""
  return path + ".sha256"


def _sha256(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def _build(path):
  """Compiles the library to `path` and records its sha256, once: a
  concurrent first use waits for the build under way, then finds it."""
  compiler = _compiler()
  if compiler is None:
    raise OSError("no C compiler: set CC or install cc")
  directory = os.path.dirname(path)
  os.makedirs(directory, mode=0o700, exist_ok=True)
  lock = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
  try:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if os.path.exists(path) and os.path.exists(_digest_path(path)):
      return
    fd, temporary = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
      build = subprocess.run(
          [*compiler, *_CFLAGS, "-o", temporary,
           *(os.path.join(_SOURCE_DIR, name) for name in _SOURCES
             if name.endswith(".c"))],
          capture_output=True, text=True, timeout=300, check=False)
      if build.returncode:
        message = (build.stderr.strip() or f"exit {build.returncode}")
        raise OSError(f"{' '.join(compiler)} failed: "
                      f"{message.splitlines()[0]}")
      os.chmod(temporary, 0o644)  # the linker's mode follows the umask
      with open(temporary + ".sha256", "w") as f:
        f.write(_sha256(temporary))
      os.replace(temporary + ".sha256", _digest_path(path))
      os.replace(temporary, path)  # last: a library found is recorded
    finally:
      for leftover in (temporary, temporary + ".sha256"):
        if os.path.exists(leftover):
          os.unlink(leftover)
  finally:
    os.close(lock)


def _check_trusted(path):
  """Raises OSError unless the cache dir, the library and its recorded
  sha256 belong to this user, no one else may write them, and the library's
  sha256 is the one recorded."""
  for name, is_kind in ((os.path.dirname(path), stat.S_ISDIR),
                        (path, stat.S_ISREG), (_digest_path(path),
                                               stat.S_ISREG)):
    status = os.stat(name)
    if not is_kind(status.st_mode):
      raise OSError(f"{name} is not a regular file or directory")
    if status.st_uid != os.getuid():
      raise OSError(f"{name} belongs to uid {status.st_uid}, not to this "
                    f"user ({os.getuid()})")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
      raise OSError(f"{name} is writable by others (mode "
                    f"{stat.S_IMODE(status.st_mode):o})")
  with open(_digest_path(path)) as f:
    recorded = f.read().strip()
  if _sha256(path) != recorded:
    raise OSError(f"{path} is not the library built here (its sha256 "
                  "differs from the one recorded)")


# The C functions called, with their argument and return types.
_P, _I32, _I64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64
_FUNCTIONS = {
    "rc_check_tables": ([_P, _I32], ctypes.c_int),
    "rc_strerror": ([ctypes.c_int], ctypes.c_char_p),
    "rc_encode_batch": ([_P, _I32, _P, _P, _I32, _I32, _P, _I64, _P, _P],
                        ctypes.c_int),
    "rc_encode_streams": ([_P, _I32, _I32, _P, _I64, _P, _P], ctypes.c_int),
    "rc_decode_batch": ([_P, _I32, _P, ctypes.c_char_p, _P, _I32, _I32, _P,
                         _P], None),
    "rc_decoders_init": ([_P, ctypes.c_char_p, _P, _I32], None),
    "rc_decoders_get": ([_P, _I32, _P, _I32, _P, _I32, _P], None),
    "rc_decoders_finish": ([_P, _I32, _P], None),
    "il_conv2d": ([_P, _I32, _I32, _I32, _I32, _P, _I32, _I32, _I32, _P, _P,
                   _I32, _I32, _I32, _I32, _P], ctypes.c_int),
    "il_strerror": ([ctypes.c_int], ctypes.c_char_p),
    "sp_scratch_size": ([_P], _I32),
    "sp_quantize": ([_P, _P, _P, _P, _I32, _P, _P], ctypes.c_int),
}


def _load():
  try:
    path = library_path()
    if not (os.path.exists(path) and os.path.exists(_digest_path(path))):
      _build(path)
    _check_trusted(path)
    lib = ctypes.CDLL(path)
    for name, (argtypes, restype) in _FUNCTIONS.items():
      if not hasattr(lib, name):
        raise OSError(f"{path} lacks {name}")
      getattr(lib, name).argtypes = argtypes
      getattr(lib, name).restype = restype
  except (OSError, subprocess.SubprocessError) as e:
    _log.warning("tfvaeclf.edge: the C range coder is unavailable (%s); "
                 "the numpy coder runs.", " ".join(str(e).split()))
    return None
  _log.info("tfvaeclf.edge: the C range coder runs (%s).", path)
  return lib


def _library():
  global _lib
  if _lib is _UNSET:
    with _lock:
      if _lib is _UNSET:
        _lib = _load()
  return _lib


def available():
  """Whether the C coder runs (else the numpy coder does)."""
  return _library() is not None


class _CTables:
  """A `CdfTables` as an `rc_table` array (kept alive with its CDFs); with
  `sixteen_bit`, each CDF in 16 bits without its implied last entry, as a
  microcontroller's encoder reads it (the decoder cannot)."""

  def __init__(self, lib, tables, sixteen_bit=False):
    cdfs = [c[:-1] for c in tables.cdfs] if sixteen_bit else tables.cdfs
    sizes = [len(c) for c in cdfs]
    self.cdf = np.concatenate(cdfs).astype(
        np.uint16 if sixteen_bit else np.int32)
    starts = np.cumsum([0] + sizes[:-1]) * self.cdf.itemsize
    self.num_tables = tables.num_tables
    self.array = (_Table * self.num_tables)()
    for table, start, symbols, offset, precision, overflow in zip(
        self.array, starts, tables.num_symbols, tables.offsets,
        tables.precision, tables.overflow):
      pointer = self.cdf.ctypes.data + int(start)
      table.cdf, table.cdf16 = (None, pointer) if sixteen_bit else (
          pointer, None)
      table.num_symbols, table.offset = int(symbols), int(offset)
      table.precision, table.overflow = int(precision), int(overflow)
    self.pointer = ctypes.addressof(self.array)
    status = lib.rc_check_tables(self.pointer, self.num_tables)
    if status != _OK:
      raise AssertionError(f"CdfTables -> rc_table: {_strerror(status)}")


def _c_tables(lib, tables, sixteen_bit=False):
  """The C tables of `tables`, or None if their offsets exceed int32."""
  kinds = _tables.setdefault(tables, {})
  if sixteen_bit not in kinds:
    fits = _fits_int32(tables.offsets)
    kinds[sixteen_bit] = _CTables(lib, tables, sixteen_bit) if fits else None
  return kinds[sixteen_bit]


def _fits_int32(array):
  return not array.size or (array.min() >= _I32_MIN and
                            array.max() <= _I32_MAX)


def _strerror(status):
  return _library().rc_strerror(status).decode()


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------
def encode_channel(values, cdf, cdf_offset=None, *, coding_rank=1,
                   sixteen_bit=False):
  """`range_coder.encode_channel`, in C when it runs (`sixteen_bit`: from
  16-bit CDFs, as a microcontroller's encoder; the same bytes)."""
  return _encode(values, None, cdf, cdf_offset, coding_rank, sixteen_bit)


def encode_index(values, indexes, cdf, cdf_offset=None, *, coding_rank=1,
                 sixteen_bit=False):
  """`range_coder.encode_index`, in C when it runs (`sixteen_bit` as
  `encode_channel`'s)."""
  return _encode(values, indexes, cdf, cdf_offset, coding_rank, sixteen_bit)


def _encode(values, indexes, cdf, cdf_offset, coding_rank,
            sixteen_bit=False):
  tables = rc._as_tables(cdf, cdf_offset)
  v = rc._int_values(values)

  def numpy_coder():
    if indexes is None:
      return rc.encode_channel(v, tables, coding_rank=coding_rank)
    return rc.encode_index(v, indexes, tables, coding_rank=coding_rank)

  lib = _library()
  c_tables = lib and _c_tables(lib, tables, sixteen_bit)
  batch, n = rc._split_batch(v.shape, coding_rank)
  index = None
  if indexes is not None:
    index = np.asarray(indexes)
    if index.shape != v.shape or index.dtype.kind not in "iu":
      return numpy_coder()          # which raises
    index = index.reshape(batch, n)
    rc._check_indexes(index, tables.num_tables)
    index = np.ascontiguousarray(index, np.int32)
  if (not c_tables or not _fits_int32(v) or n > _I32_MAX or
      batch > _I32_MAX):
    return numpy_coder()
  if batch == 0:
    return []
  v32 = np.ascontiguousarray(v.reshape(batch, n), np.int32)
  ends = np.empty(batch, np.int64)
  failed = ctypes.c_int32()
  for per_value in (_BYTES_DIRECT, _BYTES_ANY):
    capacity = batch * (2 + per_value * n)
    out = np.empty(capacity, np.uint8)
    status = lib.rc_encode_batch(
        c_tables.pointer, c_tables.num_tables,
        None if index is None else index.ctypes.data, v32.ctypes.data,
        batch, n, out.ctypes.data, capacity, ends.ctypes.data,
        ctypes.byref(failed))
    if status != _ERR_CAPACITY:
      break
  if status != _OK:
    numpy_coder()                   # raises the same error, in its words
    raise AssertionError(f"the C range coder failed on stream "
                         f"{failed.value} ({_strerror(status)}) where the "
                         "numpy coder does not")
  data = out[:ends[-1]].tobytes()
  bounds = [0] + ends.tolist()
  return [data[start:end] for start, end in zip(bounds, bounds[1:])]


class StreamsEncoder:
  """Codes several streams of the same images, each with its own tables:
  per stream, what `encode_channel` (or `encode_index`, given indexes)
  returns, in one C call. A board codes one image at a time, where the
  cost of a call, not the coding, dominates: so the values are copied into
  int32 buffers kept, with the C call's arguments, per shape of input (one
  thread at a time, like the TFLite interpreter it follows).

  Args:
    streams: per stream, (CdfTables, coding_rank).
    numpy_coder: code with the numpy coder, not the C one.
  """

  _MAX_PLANS = 8  # shapes kept; a board codes one shape

  def __init__(self, streams, numpy_coder=False):
    self._streams = [(rc._as_tables(tables, None), int(coding_rank))
                     for tables, coding_rank in streams]
    self._numpy = numpy_coder
    lib = None if numpy_coder else _library()
    self._c_tables = [lib and _c_tables(lib, tables)
                      for tables, _ in self._streams]
    self._lib = lib if all(self._c_tables) else None
    self._plans = {}

  def encode(self, values, indexes):
    """values[stream], indexes[stream] (None: channel coding) ->
    strings[stream][image]."""
    plan = self._lib and self._plan(values, indexes)
    if not plan or not all(_copy_int32(buffer, array) for buffer, array in
                           zip(plan.buffers, (*values, *indexes))):
      return self._encode_each(values, indexes)
    if plan.batch == 0:
      return [[] for _ in values]
    status = self._lib.rc_encode_streams(*plan.arguments)
    if status == _ERR_CAPACITY:  # escapes: room for the worst case
      status = self._lib.rc_encode_streams(*plan.escape_arguments)
    if status != _OK:  # the per-stream coder raises, in its words
      return self._encode_each(values, indexes)
    ends = plan.ends
    data = plan.out[:ends[-1]].tobytes()
    bounds = [0] + ends.tolist()
    strings = [data[start:end] for start, end in zip(bounds, bounds[1:])]
    return [strings[s * plan.batch:(s + 1) * plan.batch]
            for s in range(len(values))]

  def _encode_each(self, values, indexes):
    strings = []
    for v, index, (tables, coding_rank) in zip(values, indexes,
                                               self._streams):
      if not self._numpy:
        strings.append(_encode(v, index, tables, None, coding_rank))
      elif index is None:
        strings.append(rc.encode_channel(v, tables, coding_rank=coding_rank))
      else:
        strings.append(rc.encode_index(v, index, tables,
                                       coding_rank=coding_rank))
    return strings

  def _plan(self, values, indexes):
    """The buffers and C arguments for inputs of these shapes, or None if
    only the per-stream coder can code them (or raise their error)."""
    shapes = tuple(np.shape(v) for v in values)
    key = shapes + tuple(None if i is None else np.shape(i)
                         for i in indexes)
    if key in self._plans:
      return self._plans[key]
    if len(values) != len(self._streams) or any(
        i is not None and np.shape(i) != shape
        for i, shape in zip(indexes, shapes)):
      return None
    if any(rank > len(shape) for (_, rank), shape in zip(self._streams,
                                                         shapes)):
      return None
    sizes = [rc._split_batch(shape, rank)
             for (_, rank), shape in zip(self._streams, shapes)]
    batch = sizes[0][0]
    if (any(b != batch for b, _ in sizes) or
        any(n > _I32_MAX for _, n in sizes) or
        batch * len(sizes) > _I32_MAX):
      return None
    if len(self._plans) >= self._MAX_PLANS:
      self._plans.clear()
    self._plans[key] = _Plan(self._c_tables, shapes, sizes,
                             [i is not None for i in indexes])
    return self._plans[key]


class _Plan:
  """Buffers of one shape of input to `StreamsEncoder`, and the arguments
  of `rc_encode_streams` that point at them."""

  def __init__(self, c_tables, shapes, sizes, indexed):
    self.batch = batch = sizes[0][0]
    values = [np.empty(shape, np.int32) for shape in shapes]
    indexes = [np.empty(shape, np.int32) if has else None
               for shape, has in zip(shapes, indexed)]
    self.buffers = values + indexes
    self._streams = (_Stream * len(shapes))(*(
        _Stream(tables.pointer, tables.num_tables, n,
                None if index is None else index.ctypes.data,
                value.ctypes.data)
        for tables, (_, n), value, index in zip(c_tables, sizes, values,
                                                indexes)))
    self.ends = np.empty(max(batch * len(shapes), 1), np.int64)
    self._failed = ctypes.c_int32()
    capacity = [sum(batch * (2 + per_value * n) for _, n in sizes)
                for per_value in (_BYTES_DIRECT, _BYTES_ANY)]
    self.out = np.empty(capacity[1], np.uint8)
    self.arguments, self.escape_arguments = (
        (self._streams, len(shapes), batch, self.out.ctypes.data, room,
         self.ends.ctypes.data, ctypes.byref(self._failed))
        for room in capacity)


def _copy_int32(buffer, array):
  """Copies the integer `array` into the int32 `buffer` (or nothing, for
  None into None); False if it is not integers that int32 holds."""
  if buffer is None:
    return True
  array = np.asarray(array)
  if array.dtype.kind not in "iu" or array.dtype == np.uint64:
    return False
  np.copyto(buffer, array, casting="unsafe")
  return array.dtype == np.int32 or bool((buffer == array).all())


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------
def decode_channel(strings, cdf, shape, cdf_offset=None, *, check=True):
  """`range_coder.decode_channel`, in C when it runs (see the module doc)."""
  tables = rc._as_tables(cdf, cdf_offset)
  lib = _library()
  c_tables = lib and _c_tables(lib, tables)
  if not c_tables:
    return rc.decode_channel(strings, tables, shape, check=check)
  shape = tuple(int(s) for s in np.reshape(np.asarray(shape, np.int64), -1))
  strings = _bytes_list(strings)
  return _decode(lib, c_tables, strings, None, (len(strings),) + shape, check)


def decode_index(strings, indexes, cdf, cdf_offset=None, *, check=True):
  """`range_coder.decode_index`, in C when it runs (see the module doc)."""
  tables = rc._as_tables(cdf, cdf_offset)
  lib = _library()
  c_tables = lib and _c_tables(lib, tables)
  index = np.asarray(indexes)
  strings = _bytes_list(strings)
  if (not c_tables or index.dtype.kind not in "iu" or index.ndim == 0 or
      index.shape[0] != len(strings)):
    return rc.decode_index(strings, indexes, tables, check=check)
  flat = index.reshape(len(strings), -1)
  rc._check_indexes(flat, tables.num_tables)
  return _decode(lib, c_tables, strings, np.ascontiguousarray(flat, np.int32),
                 index.shape, check)


class IndexDecoder:
  """`range_coder.IndexDecoder`, in C when it runs (see the module doc):
  one C decoder state per string, kept between `decode` calls.

  `isolate`: a string that does not decode fails alone, as a batch of
  payloads from outside needs: `decode` does not raise for it (its values
  are meaningless from where it fails) and `errors` tells why.
  """

  def __init__(self, strings, cdf, cdf_offset=None, *, isolate=False):
    self.tables = rc._as_tables(cdf, cdf_offset)
    strings = _bytes_list(strings)
    lib = _library()
    self._c_tables = lib and _c_tables(lib, self.tables)
    self._isolate = isolate
    if not self._c_tables or len(strings) > _I32_MAX:
      self._numpy = (_NumpyEach(strings, self.tables) if isolate else
                     rc.IndexDecoder(strings, self.tables))
      return
    self._numpy = None
    self._batch = len(strings)
    self._data = b"".join(strings)  # the C states point into it
    ends = np.fromiter(map(len, strings), np.int64, self._batch).cumsum()
    self._states = (_Decoder * max(self._batch, 1))()
    lib.rc_decoders_init(self._states, self._data, ends.ctypes.data,
                         self._batch)

  def decode(self, indexes):
    """The next values: int32 shaped like `indexes` (len(strings), ...)."""
    if self._numpy:
      return self._numpy.decode(indexes)
    idx, flat = rc._stream_indexes(indexes, self._batch,
                                   self.tables.num_tables)
    if flat.shape[1] > _I32_MAX:
      raise ValueError(f"{flat.shape[1]} values per string: too many for "
                       "the C range coder.")
    flat = np.ascontiguousarray(flat, np.int32)
    values = np.empty(flat.shape, np.int32)
    _library().rc_decoders_get(
        self._states, self._batch, self._c_tables.pointer,
        self._c_tables.num_tables, flat.ctypes.data, flat.shape[1],
        values.ctypes.data)
    for bad, state in enumerate(self._states[:self._batch]):
      if state.status in (_ERR_ESCAPE, _ERR_INT32) and not self._isolate:
        raise ValueError(f"Corrupt string {bad}: "
                         f"{_strerror(state.status)}.")
    return values.reshape(idx.shape)

  def finish(self):
    """bool per string: whether it ends as TFC's encoder ends a stream."""
    if self._numpy:
      return self._numpy.finish()
    return self._status() == _OK

  def errors(self):
    """After the last `decode` of an isolating decoder: per string, None or
    why it does not decode (one line)."""
    if self._numpy:
      return self._numpy.errors()
    return [None if status == _OK else _strerror(status)
            for status in self._status().tolist()]

  def _status(self):
    status = np.empty(self._batch, np.int32)
    _library().rc_decoders_finish(self._states, self._batch,
                                  status.ctypes.data)
    return status


class _NumpyEach:
  """The numpy coder's `IndexDecoder` string by string (it raises for a
  whole call), so that a string that fails fails alone."""

  _FAILS_CHECK = "end-of-stream sanity check failed"

  def __init__(self, strings, tables):
    self._tables = tables
    self._decoders = [rc.IndexDecoder([string], tables)
                      for string in strings]
    self._errors = [None] * len(strings)

  def decode(self, indexes):
    idx, flat = rc._stream_indexes(indexes, len(self._decoders),
                                   self._tables.num_tables)
    values = np.zeros(flat.shape, np.int32)
    for b, decoder in enumerate(self._decoders):
      if self._errors[b] is None:
        try:
          values[b] = decoder.decode(flat[b:b + 1])[0]
        except ValueError as e:
          self._errors[b] = str(e)
    return values.reshape(idx.shape)

  def finish(self):
    return np.array([error is None for error in self.errors()], bool)

  def errors(self):
    return [error or (None if decoder.finish()[0] else self._FAILS_CHECK)
            for error, decoder in zip(self._errors, self._decoders)]


def _bytes_list(strings):
  """`range_coder._as_bytes_list`, without its copies for a list of bytes
  (what TFC's .numpy().tolist() and the file readers give)."""
  # Exact types: a subclass of bytes is copied, as range_coder does.
  if type(strings) is list and all(type(s) is bytes for s in strings):
    return strings
  return rc._as_bytes_list(strings)


def _decode(lib, c_tables, strings, index, shape, check):
  batch, n = len(strings), math.prod(shape[1:])
  if n > _I32_MAX or batch > _I32_MAX:
    raise ValueError(f"{n} values per string, {batch} strings: too many for "
                     "the C range coder.")
  values = np.empty((batch, n), np.int32)
  status = np.empty(batch, np.int32)
  if batch:
    ends = np.fromiter(map(len, strings), np.int64, batch).cumsum()
    lib.rc_decode_batch(
        c_tables.pointer, c_tables.num_tables,
        None if index is None else index.ctypes.data, b"".join(strings),
        ends.ctypes.data, batch, n, values.ctypes.data, status.ctypes.data)
  for bad in np.flatnonzero((status == _ERR_ESCAPE) |
                            (status == _ERR_INT32))[:1].tolist():
    raise ValueError(f"Corrupt string {bad}: "
                     f"{_strerror(int(status[bad]))}.")
  ok = status == _OK
  if check and ok.all():
    return values.reshape(shape)
  return rc._finish_decode(values, ok, shape, check)


# ---------------------------------------------------------------------------
# Integer layers
# ---------------------------------------------------------------------------
def int_conv2d(inputs, kernel, bias, divisor, *, stride=1, transpose=False,
               low=_I32_MIN, high=_I32_MAX):
  """`int_layers.conv2d`, in C when it runs: the same int32 array, or the
  same one-line ValueError (checked here, before the C code runs)."""
  inputs = np.ascontiguousarray(inputs, np.int32)
  kernel = np.ascontiguousarray(kernel, np.int8)
  bias, divisor = (np.ascontiguousarray(a, np.int32) for a in (bias, divisor))
  lib = _library()
  if lib is None:
    return int_layers.conv2d(inputs, kernel, bias, divisor, stride=stride,
                             transpose=transpose, low=low, high=high)
  int_layers.check(inputs, kernel, bias, divisor, stride, low, high)
  batch, height, width, in_channels = inputs.shape
  kernel_h, kernel_w, _, out_channels = kernel.shape
  output = np.empty((batch, int_layers.output_size(height, stride, transpose),
                     int_layers.output_size(width, stride, transpose),
                     out_channels), np.int32)
  status = lib.il_conv2d(
      inputs.ctypes.data, batch, height, width, in_channels,
      kernel.ctypes.data, kernel_h, kernel_w, out_channels, bias.ctypes.data,
      divisor.ctypes.data, stride, int(transpose), low, high,
      output.ctypes.data)
  if status:
    raise AssertionError("il_conv2d refused a checked layer: "
                         f"{lib.il_strerror(status).decode()}")
  return output


class _SliceLayer(ctypes.Structure):
  """slice_predictor.h's sp_layer."""
  _fields_ = [("kernel", ctypes.c_void_p), ("bias", ctypes.c_void_p),
              ("divisor", ctypes.c_void_p)] + [
                  (name, ctypes.c_int32) for name in (
                      "kernel_h", "kernel_w", "in_channels", "out_channels",
                      "stride", "transpose", "low", "high")]


class _SlicePredictor(ctypes.Structure):
  """slice_predictor.h's sp_predictor."""
  _fields_ = [("layers", ctypes.c_void_p), ("num_layers", ctypes.c_void_p),
              ("slice_sizes", ctypes.c_void_p)] + [
                  (name, ctypes.c_int32) for name in (
                      "num_slices", "num_scales", "hyper_rows", "hyper_cols",
                      "rows", "cols")]


def _slice_predictor(lib, predictor, hyper_shape, latent_shape):
  """`predictor` (a `slice_predictor.IntegerSlicePredictor`) for a
  hyper-latent and a latent of spatial shapes `hyper_shape`,
  `latent_shape`, as an sp_predictor; its scratch size (int32); and the
  arrays it points into, to keep alive. ValueError (one line) where the C
  code refuses it."""
  groups = [predictor.hyper, *predictor.slices]
  keep = []

  def pointer(array, dtype):
    array = np.ascontiguousarray(array, dtype)
    keep.append(array)
    return array.ctypes.data

  layers = (_SliceLayer * sum(map(len, groups)))()
  keep.append(layers)
  for slot, layer in zip(layers, [l for group in groups for l in group]):
    kernel = layer["kernel"]
    slot.kernel = pointer(kernel, np.int8)
    slot.bias = pointer(layer["bias"], np.int32)
    slot.divisor = pointer(layer["divisor"], np.int32)
    (slot.kernel_h, slot.kernel_w, slot.in_channels,
     slot.out_channels) = kernel.shape
    slot.stride, slot.transpose = layer["stride"], int(layer["transpose"])
    slot.low, slot.high = layer["low"], layer["high"]
  config = _SlicePredictor(
      ctypes.addressof(layers),
      pointer([len(group) for group in groups], np.int32),
      pointer(predictor.slice_sizes, np.int32), len(predictor.slices),
      predictor.num_scales, *(int(d) for d in hyper_shape),
      *(int(d) for d in latent_shape))
  size = lib.sp_scratch_size(ctypes.byref(config))
  if size < 0:
    raise ValueError(f"slice predictor: {lib.il_strerror(-size).decode()}")
  return config, size, keep


def _require_library():
  lib = _library()
  if lib is None:
    raise OSError("no C compiler: the C slice loop cannot build")
  return lib


def slice_scratch_size(predictor, hyper_shape, latent_shape):
  """The int32 scratch the C slice loop (csrc/slice_predictor.c) needs to
  run `predictor` on a hyper-latent and a latent of spatial shapes
  `hyper_shape` and `latent_shape`; ValueError (one line) where it
  refuses them, OSError where it does not build."""
  return _slice_predictor(_require_library(), predictor, hyper_shape,
                          latent_shape)[1]


def slice_quantize(predictor, z_hat, units):
  """`predictor.quantize(z_hat, units)` (a
  `slice_predictor.IntegerSlicePredictor`) by the C slice loop a
  microcontroller runs, image by image: the same int32 (symbols, indexes).
  OSError where the C code does not build; ValueError (one line) where it
  refuses."""
  lib = _require_library()
  z_hat = np.ascontiguousarray(z_hat, np.int32)
  units = np.ascontiguousarray(units, np.int32)
  config, size, _keep = _slice_predictor(lib, predictor, z_hat.shape[1:3],
                                         units.shape[1:3])
  scratch = np.empty(size, np.int32)
  symbols = np.empty((len(units), units[0].size), np.int32)
  indexes = np.empty_like(symbols)
  for n in range(len(units)):
    status = lib.sp_quantize(
        ctypes.byref(config), z_hat[n].ctypes.data, units[n].ctypes.data,
        scratch.ctypes.data, size, symbols[n].ctypes.data,
        indexes[n].ctypes.data)
    if status:
      raise ValueError(f"slice predictor: "
                       f"{lib.il_strerror(status).decode()}")
  return symbols, indexes
