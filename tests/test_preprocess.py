"""Preprocessing in the model, on real photos re-saved as a user's files.

Training's pipeline, `codec compress`, the board (a process without
TensorFlow) and evaluate turn the same JPEG, PNG, WebP, palette GIF, CMYK
JPEG, greyscale, 16-bit and RGBA files of odd sizes into the same inputs, and
a folder-trained model into the same bytes and classes.
"""

import json
import os
from pathlib import Path
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
import tensorflow as tf

from tfvaeclf import (codec, data, evaluate, export, imageio, model_dir,
                      models, specs, train)
from tfvaeclf.coding import bundle
from tfvaeclf.edge import __main__ as edge_main

from tests.conftest import SMALL_JOINT, edge_process, run_cli
from tests.support import hostile

DATA = Path(__file__).parent / "data"
# 20 CIFAR-10 test images (32x32 PNG) and 4 ImageNet photos (512x512 and
# 1024x683 JPEG), as shipped by PyPI's foolbox 3.3.4 in foolbox/data/.
PHOTOS = (sorted((DATA / "cifar10").glob("*.png"))
          + sorted((DATA / "imagenet").glob("*.jpg")))
# (height, width): small, odd, upscaled, and ImageNet's biggest.
SIZES = ((20, 20), (20, 31), (33, 47), (61, 97), (224, 224), (300, 451),
         (683, 1024), (1024, 683))


def _sixteen_bit(image):
  """A 16-bit greyscale image, each 8-bit value v as v * 257 + noise."""
  grey = np.asarray(image.convert("L"), np.uint16) * 257
  noise = np.random.default_rng(0).integers(0, 257, grey.shape, np.uint16)
  return Image.fromarray(grey + noise)


def _rgba(image):
  alpha = Image.linear_gradient("L").resize(image.size)
  rgba = image.convert("RGB")
  rgba.putalpha(alpha)
  return rgba


# Name -> (file extension, how a photo is turned into that file's image).
FORMATS = {
    "jpeg": (".jpg", lambda image: image.convert("RGB")),
    "png": (".png", lambda image: image.convert("RGB")),
    "webp": (".webp", lambda image: image.convert("RGB")),
    "gif": (".gif", lambda image: image.convert("RGB").convert(
        "P", palette=Image.Palette.ADAPTIVE)),
    "cmyk": (".jpeg", lambda image: image.convert("CMYK")),
    "grey": (".png", lambda image: image.convert("L")),
    "grey16": (".png", _sixteen_bit),
    "rgba": (".png", _rgba),
}


def write_photos(root, split):
  """Every photo in every format, each at its own size of SIZES (upscaled
  or shrunk with Pillow), in root/CLASS/, CLASS "cifar10" or "imagenet";
  `split(i)` picks the photos (by index) written."""
  for i, photo in enumerate(PHOTOS):
    if not split(i):
      continue
    folder = root / photo.name.split("_")[0]
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(photo) as image:
      image.load()
    for j, (name, (extension, convert)) in enumerate(FORMATS.items()):
      height, width = SIZES[(i + j) % len(SIZES)]
      resized = image.resize((width, height), Image.Resampling.LANCZOS)
      path = folder / f"{photo.stem}_{name}{extension}"
      lossy = extension in (".jpg", ".jpeg", ".webp")
      convert(resized).save(path, **({"quality": 90} if lossy else {}))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  """root/train/CLASS/ and root/test/CLASS/: the even and odd photos."""
  root = tmp_path_factory.mktemp("photos")
  write_photos(root / "train", lambda i: i % 2 == 0)
  write_photos(root / "test", lambda i: i % 2 == 1)
  return root


@pytest.mark.slow
def test_the_files_are_what_a_user_has(photos):
  kinds = {}
  for path in photos.rglob("*.*"):
    with Image.open(path) as image:
      kinds.setdefault((image.format, image.mode), set()).add(image.size)
  assert set(kinds) == {("JPEG", "RGB"), ("PNG", "RGB"), ("WEBP", "RGB"),
                        ("GIF", "P"), ("JPEG", "CMYK"), ("PNG", "L"),
                        ("PNG", "I;16"), ("PNG", "RGBA")}
  sizes = set().union(*kinds.values())
  assert (20, 20) in sizes and (1024, 683) in sizes and len(sizes) == 8


def split_files(photos):
  """The files of the folder dataset's test split, in the split's order."""
  return sorted(str(p) for p in (photos / "test").rglob("*.*"))


def _closest_pairing(images, references):
  """For each of `images`, the index of the closest of `references` (max
  pixel difference) and that difference."""
  images = images.astype(np.int16)
  references = references.astype(np.int16)
  pairs = [min((int(np.abs(image - ref).max()), k)
               for k, ref in enumerate(references)) for image in images]
  return [k for _, k in pairs], [d for d, _ in pairs]


@pytest.mark.parametrize("image_size", [32, (17, 29)])
@pytest.mark.slow
def test_training_pipeline_and_files_agree(photos, image_size):
  splits = data.load(f"folder:{photos}", image_size=image_size,
                     validation_size=4)
  size = (image_size,) * 2 if isinstance(image_size, int) else image_size
  preprocessing = imageio.Preprocessing((*size, 3), resize=True)
  assert splits.info.preprocessing == preprocessing
  files = sorted(str(p) for p in photos.rglob("*.*"))
  from_files = imageio.read_image_files(files, preprocessing)
  pipeline = np.concatenate([
      np.stack([x for x, _ in getattr(splits, k).as_numpy_iterator()])
      for k in ("train", "validation", "test")])
  assert pipeline.shape == from_files.shape == (len(files), *size, 3)
  pairing, differences = _closest_pairing(pipeline, from_files)
  assert sorted(pairing) == list(range(len(files)))  # one file each
  assert max(differences) <= 1
  # The test split keeps its files' order: compared file by file.
  test = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
  np.testing.assert_allclose(test, imageio.read_image_files(
      split_files(photos), preprocessing), atol=1)


def _tensorflow_resize(image, size):
  """What training ran before it used `imageio` (and what model dirs from
  then were trained on): TF's antialiased bilinear resize to cover `size`,
  then a centre crop."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  target = tf.constant(size, tf.float32)
  scale = tf.reduce_max(target / shape)
  covering = tf.cast(tf.maximum(tf.round(shape * scale), target), tf.int32)
  image = tf.image.resize(image, covering, antialias=True)
  top, left = tf.unstack((covering - tf.constant(size)) // 2)
  image = image[top:top + size[0], left:left + size[1]]
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8).numpy()


@pytest.mark.parametrize("size", [(32, 32), (17, 29), (224, 224)])
@pytest.mark.slow
def test_tensorflow_resize_agrees_within_one(size, photos):
  """Older model dirs were trained through TF's resize: they get Pillow's
  now, at most 1 apart on every pixel."""
  preprocessing = imageio.Preprocessing((*size, 3), resize=True)
  worst = 0
  for path in sorted(photos.rglob("*.*")):
    with Image.open(path) as image:
      pixels = np.asarray(image.convert("RGB"))
    ours = preprocessing.fit_pixels(pixels).astype(int)
    worst = max(worst, int(np.abs(ours - _tensorflow_resize(pixels,
                                                            size)).max()))
  assert worst <= 1


# --- A model trained on the folder ------------------------------------------


@pytest.fixture(scope="module")
def folder_run(photos, tmp_path_factory):
  """A small joint model trained on the photo folder at 32x32 (36 steps:
  ~89% accurate, telling CIFAR-10 from ImageNet photos): (splits, model
  dir, loaded model, bundle dir)."""
  run = specs.RunSpec(
      "joint", models.get("joint").Config(**SMALL_JOINT),
      specs.DataSpec(name=f"folder:{photos}", image_size=32,
                     validation_size=8, seed=0),
      specs.TrainSpec(epochs=6, batch_size=16, learning_rate=3e-3, seed=0),
      model_dir=str(tmp_path_factory.mktemp("folder_joint")))
  splits = data.load(**{k: getattr(run.data, k) for k in (
      "name", "image_size", "validation_size", "seed")})
  run = run.with_data(splits.info)
  train.run_training(run, splits, verbose=0)
  loaded = model_dir.load(run.model_dir)
  out = str(tmp_path_factory.mktemp("folder_export") / "bundle")
  export.export_bundle(loaded, out, export.calibration_images(
      loaded.config, 32))
  return splits, run.model_dir, loaded, out


@pytest.mark.slow
def test_the_model_dir_and_bundle_record_the_preprocessing(folder_run):
  splits, _, loaded, bundle_dir = folder_run
  record = splits.info.preprocessing.record()
  assert record == {"decode": "pillow_first_frame", "mode": "RGB",
                    "size": [32, 32], "convert": "any_mode",
                    "resize": "cover_bilinear_center_crop",
                    "scale": "pixel/255"}
  assert loaded.config["preprocessing"] == record
  assert loaded.preprocessing == splits.info.preprocessing
  with open(os.path.join(bundle_dir, bundle.MANIFEST)) as f:
    assert json.load(f)[bundle.PREPROCESSING] == record


@pytest.mark.slow
def test_codec_board_and_evaluate_agree(folder_run, photos, tmp_path,
                                        capsys):
  """Same bytes and classes from the files (codec compress, the board) as
  from training's pipeline (evaluate's), hence the same accuracy."""
  splits, directory, loaded, bundle_dir = folder_run
  files = split_files(photos)
  labels = np.array([0 if "/cifar10/" in f else 1 for f in files])
  pipeline = np.stack([x for x, _ in splits.test.as_numpy_iterator()])
  np.testing.assert_array_equal(
      [y for _, y in splits.test.as_numpy_iterator()], labels)

  output = tmp_path / "codec.tfvc"
  code, _, err = run_cli(codec.main, [
      "compress", f"--model_dir={directory}", f"--output={output}",
      *files], capsys)
  assert code is None, err
  from_codec = output.read_bytes()
  assert from_codec == codec.compress_images(loaded, pipeline)

  edge_output = tmp_path / "edge.tfvc"
  result = edge_process("encode", f"--bundle={bundle_dir}",
                        f"--output={edge_output}", *files)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "tensorflow" not in result.stdout
  assert edge_output.read_bytes() == from_codec

  classes = codec.classify_file(loaded, from_codec)
  assert set(classes) == {0, 1}  # a model that tells the classes apart
  in_graph = tf.argmax(loaded.model(data.to_float(pipeline),
                                    training=False)["logits"], -1).numpy()
  np.testing.assert_array_equal(classes, in_graph)
  results = evaluate.evaluate(loaded, splits.test, progress=False)
  assert results["num_images"] == len(files)
  assert results["accuracy"] == np.mean(classes == labels)



def _edge(argv, capsys):
  """`python -m tfvaeclf.edge` in-process: (exit code, stderr)."""
  code = edge_main.main(argv)
  return code, capsys.readouterr().err


@pytest.mark.slow
def test_a_file_that_cannot_be_converted_ends_in_one_line(
    folder_run, photos, tmp_path, capsys):
  _, directory, _, bundle_dir = folder_run
  jpeg = next(iter(sorted((photos / "test").rglob("*.jpg"))))
  truncated = tmp_path / "truncated.jpg"
  truncated.write_bytes(jpeg.read_bytes()[:600])
  not_an_image = tmp_path / "notes.png"
  not_an_image.write_text("a shopping list, not a photo")
  for bad in (truncated, not_an_image, tmp_path / "absent.png"):
    output = tmp_path / "out.tfvc"
    code, _, err = run_cli(codec.main, [
        "compress", f"--model_dir={directory}", f"--output={output}",
        str(jpeg), str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {bad}: not a readable image (")
    code, err = _edge(["encode", f"--bundle={bundle_dir}",
                       f"--output={output}", str(jpeg), str(bad)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {bad}: not a readable image (")
    assert not output.exists()  # nothing half-written


@pytest.mark.slow
def test_a_bundle_without_a_record_takes_files_as_they_come(
    folder_run, photos, tmp_path, capsys):
  """A bundle exported before the record: no resizing, and the message
  says to export it again."""
  _, _, loaded, bundle_dir = folder_run
  old = tmp_path / "old_bundle"
  shutil.copytree(bundle_dir, old)
  with open(old / bundle.MANIFEST) as f:
    manifest = json.load(f)
  del manifest[bundle.PREPROCESSING]
  with open(old / bundle.MANIFEST, "w") as f:
    json.dump(manifest, f)
  photo = str(next(iter(sorted((photos / "test").rglob("*.webp")))))
  output = tmp_path / "out.tfvc"
  code, err = _edge(["encode", f"--bundle={old}", f"--output={output}",
                     photo], capsys)
  assert code == 2 and err.count("\n") == 1
  assert "expected 32x32 mode RGB" in err and "export it again" in err
  exact = tmp_path / "exact.png"
  pixels = loaded.preprocessing.load(photo)
  Image.fromarray(pixels).save(exact)
  code, err = _edge(["encode", f"--bundle={old}", f"--output={output}",
                     str(exact)], capsys)
  assert code == 0, err
  assert output.read_bytes() == codec.compress_images(loaded, pixels[None])


@pytest.mark.slow
def test_a_record_this_tfvaeclf_cannot_apply_is_refused(folder_run, tmp_path,
                                                        capsys):
  _, _, loaded, bundle_dir = folder_run
  record = loaded.preprocessing.record()
  for changed in ({"resize": "cover_lanczos_center_crop"}, {"size": [64, 64]},
                  {"mode": "L"}, {"scale": "pixel/127.5-1"}):
    with pytest.raises(ValueError, match="update tfvaeclf"):
      imageio.Preprocessing.from_record({**record, **changed}, (32, 32, 3))
  newer = tmp_path / "newer_bundle"
  shutil.copytree(bundle_dir, newer)
  with open(newer / bundle.MANIFEST) as f:
    manifest = json.load(f)
  manifest[bundle.PREPROCESSING]["resize"] = "cover_lanczos_center_crop"
  with open(newer / bundle.MANIFEST, "w") as f:
    json.dump(manifest, f)
  code, err = _edge(["encode", f"--bundle={newer}",
                     f"--output={tmp_path / 'out.tfvc'}", "x.png"], capsys)
  assert code == 2 and err.count("\n") == 1 and "update tfvaeclf" in err


@pytest.mark.parametrize("dataset,resize", [
    ({"name": "mnist", "image_size": None}, False),
    ({"name": "fashion_mnist", "image_size": 32}, True),
    ({"name": "imagenet2012", "image_size": None}, True),
    ({"name": "folder:/photos", "image_size": 64}, True)])
def test_a_model_dir_without_a_record_gets_its_datasets(dataset, resize):
  """Dirs trained before the record resized exactly when their dataset
  did (then with TensorFlow: within 1 of Pillow, tested above)."""
  config = {"dataset": dataset, "model_config": {"image_shape": [8, 8, 3]}}
  assert model_dir.preprocessing_of(config) == imageio.Preprocessing(
      (8, 8, 3), resize=resize)


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
  path = tmp_path / "huge.png"
  Image.new("RGB", (40, 30)).save(path)
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
  with pytest.raises(imageio.ImageFileError,
                     match=r"huge.png: is 30x40, more than the 1000 pixels"):
    imageio.read_image_files([path], imageio.Preprocessing((8, 8, 3), True))


def _png_header(width, height, mode):
  """A PNG that claims `width`x`height` pixels of `mode` ("L", "RGB" or
  "RGBA") but holds one row: what a header alone says."""
  def chunk(kind, body):
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body)))
  color, channels = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}[mode]
  row = zlib.compress(bytes(1 + width * channels))
  return (b"\x89PNG\r\n\x1a\n"
          + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color,
                                       0, 0, 0))
          + chunk(b"IDAT", row) + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, mode", [(9400, 9400, "RGBA"),
                                                 (28, 28, "RGB")])
def test_a_file_taken_as_it_comes_is_checked_from_its_header(
    width, height, mode, monkeypatch):
  """A model that takes images as they come refuses another size or mode
  from the header alone: a 9400x9400 RGBA file (343 KB, 0.5 s and 712 MB
  to decode) is refused without a pixel decoded."""
  def decode(image):
    raise AssertionError(f"decoded {image.size}")
  monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
  preprocessing = imageio.Preprocessing((28, 28, 1))
  with pytest.raises(imageio.ImageFileError, match=(
      rf"^image: is {height}x{width} mode {mode}, expected 28x28 mode L ")):
    preprocessing.decode(_png_header(width, height, mode))


def test_an_image_too_narrow_to_cover_the_size_is_refused(tmp_path,
                                                         monkeypatch):
  """Covering 8x8 with a 1x100 strip takes 8x800 pixels: refused in one line
  before they are made, once that is more than an image may have."""
  path = tmp_path / "strip.png"
  Image.new("L", (100, 1), 200).save(path)
  preprocessing = imageio.Preprocessing((8, 8, 1), resize=True)
  assert preprocessing.load(path).min() == 200  # 6,400 pixels: covered
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
  with pytest.raises(imageio.ImageFileError,
                     match=r"^\S*strip.png: is 1x100, too far from the model's "
                     r"8x8 shape to cover it \(it would take 8x800 pixels\)$"):
    preprocessing.load(path)
  padded = imageio.Preprocessing((8, 8, 1), resize=True, fit="pad")
  assert padded.load(path).shape == (8, 8, 1)  # pad only shrinks


@pytest.mark.parametrize("height, width", [(20, 31), (61, 97), (32, 32),
                                           (1, 2000), (2000, 1), (3, 700)])
def test_pad_shrinks_only_what_is_larger_and_centres_it(height, width):
  """`pad` keeps the aspect ratio and never enlarges: a small image's pixels
  are kept as they are, a large one is shrunk to fit, black around it."""
  rng = np.random.default_rng(height)
  pixels = rng.integers(1, 256, (height, width), np.uint8)
  preprocessing = imageio.Preprocessing((32, 32, 3), resize=True, fit="pad")
  padded = preprocessing.fit_pixels(pixels)
  assert padded.shape == (32, 32, 3)
  scale = min(1., 32 / height, 32 / width)
  inner = (max(1, round(height * scale)), max(1, round(width * scale)))
  top, left = (32 - inner[0]) // 2, (32 - inner[1]) // 2
  box = padded[top:top + inner[0], left:left + inner[1]]
  assert box.min() > 0  # the image fills its box, every channel alike
  np.testing.assert_array_equal(box[..., 0], box[..., 2])
  assert padded.sum() == box.sum()  # and only its box
  if scale == 1.:
    np.testing.assert_array_equal(box[..., 1], pixels)
  record = preprocessing.record()
  assert imageio.Preprocessing.from_record(record, (32, 32, 3)) == (
      preprocessing)


@pytest.mark.parametrize("fit", imageio.FITS)
@pytest.mark.slow
def test_mutated_image_files_end_in_one_line_within_a_bound(fit, photos):
  """Bit flips, truncations, splices and garbage of real PNG, JPEG, WebP
  and GIF files: every one gives the model's input or a one-line
  ImageFileError, each within a second (about 5 ms a file here)."""
  files = [path.read_bytes() for path in
           sorted((photos / "train" / "cifar10").iterdir())[:8]]
  preprocessing = imageio.Preprocessing((32, 32, 3), resize=True, fit=fit)
  for file_bytes in files:
    assert preprocessing.decode(file_bytes).shape == (32, 32, 3)
  cases = hostile.raw_mutations(np.random.default_rng(7), files, 400)
  outcomes, _ = hostile.fuzz(preprocessing.decode, cases, base_seconds=1.)
  assert outcomes.get("refused", 0) > 100 and outcomes["decoded"] > 20, (
      outcomes)
