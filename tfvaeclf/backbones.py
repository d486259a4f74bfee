"""Image classifiers to train, cut in two, or take as a frozen teacher.

Six backbones, each a functional Keras model from float images in [0, 1]
to class logits, whose named block outputs are the split points of a
split DNN (the device runs the front, the server the back):

    small_resnet  a stride-2 3x3 stem, three residual stages (16, 32, 64
                  channels by default; strides 1, 2, 2), a global average
                  pool and a linear head; trained here on MNIST,
                  Fashion-MNIST or CIFAR-10. At the default widths it has
                  78 k weights and trains about as fast as the joint model.
    resnet8       the same stages after a stride-1 stem, as He et al.'s
                  CIFAR ResNets and MLPerf Tiny's image-classification
                  model (78 k weights at 16, 32, 64): for 32x32 natural
                  images, where halving the image first costs accuracy.
    resnet20      He et al.'s ResNet-20: resnet8 with three residual blocks
                  a stage (270 k weights at 16, 32, 64).
    resnet9       Page's fast CIFAR-10 ResNet ("How to train your ResNet",
                  2018): a 3x3 stem, then three stages of a 3x3
                  convolution and a 2x2 max pool, the first and last with
                  a residual pair of 3x3 convolutions, a global max pool
                  and a linear head (6.6 M weights at 128, 256, 512):
                  a strong server-side reader trained in minutes on a GPU.
    plain_cnn     one 3x3 convolution a stage (batch norm, ReLU; strides
                  1, 2, 2), a global average pool and a linear head: no
                  residual adds or projections, so the smallest int8 file
                  for its weights (a board of a few kilobytes).
    resnet50      Keras' ResNet-50 with ImageNet's "caffe" preprocessing
                  built in, a global average pool and a linear head named
                  `predictions`, as in Keras. Its weights come from a file
                  the user gives (Keras' resnet50_weights_tf_dim_ordering_
                  tf_kernels[_notop].h5); they are never downloaded.

Split points, deepest first, as the split-DNN bottleneck paper (Matsubara
et al.'s SC2 benchmark) names them on ResNet-50:

    point  resnet50 (torchvision name)       small_resnet, resnet8, resnet20,
                                             resnet9, plain_cnn
    S1     conv5_block3_out (layer4[2])      stage3_out
    S2     conv5_block1_out (layer4[0])      stage2_out
    S3     conv4_block5_out (layer3[4])      stage1_out

`split(backbone, point)` gives `(front, back)` sharing the backbone's
layers, with `back(front(x))` equal to `backbone(x)`.
"""

import os

import h5py
import tensorflow as tf

__all__ = ["NAMES", "build", "small_resnet", "resnet8", "resnet20",
           "resnet9", "plain_cnn", "resnet50", "split_points", "split", "load_weights",
           "residual_stages", "residual_features"]

NAMES = ("small_resnet", "resnet8", "resnet20", "resnet9", "plain_cnn",
         "resnet50")
# Backbones whose stage widths are set by `widths` (--backbone_widths).
WIDTH_BACKBONES = ("small_resnet", "resnet8", "resnet20", "resnet9",
                   "plain_cnn")

_SPLIT_POINTS = {
    **{name: {"S1": "stage3_out", "S2": "stage2_out", "S3": "stage1_out"}
       for name in WIDTH_BACKBONES},
    "resnet50": {"S1": "conv5_block3_out", "S2": "conv5_block1_out",
                 "S3": "conv4_block5_out"},
}
HEAD = "predictions"  # the dense layer that gives the logits
_IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
_RESNET50_MIN_SIZE = 32


def _batch_norm(name):
  # PyTorch's momentum (0.1 there, 0.9 here): Keras' 0.99 leaves the moving
  # statistics unusable for the first few hundred steps.
  return tf.keras.layers.BatchNormalization(momentum=0.9, name=name)


def _head(num_classes):
  """The linear head. Its logits stay float32 when the layers before it
  compute in bfloat16 (training with --precision=mixed_bfloat16): the loss
  needs their precision."""
  return tf.keras.layers.Dense(num_classes, name=HEAD, dtype="float32")


def _residual_block(x, width, stride, name):
  """Two 3x3 convolutions with batch norm, added to a (projected) shortcut."""
  layers = tf.keras.layers
  y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                    name=f"{name}_conv1")(x)
  y = _batch_norm(f"{name}_bn1")(y)
  y = layers.ReLU(name=f"{name}_relu1")(y)
  y = layers.Conv2D(width, 3, padding="same", use_bias=False,
                    name=f"{name}_conv2")(y)
  y = _batch_norm(f"{name}_bn2")(y)
  if stride != 1 or x.shape[-1] != width:
    x = layers.Conv2D(width, 1, strides=stride, use_bias=False,
                      name=f"{name}_shortcut")(x)
    x = _batch_norm(f"{name}_shortcut_bn")(x)
  y = layers.Add(name=f"{name}_add")([x, y])
  return layers.ReLU(name=f"{name}_out")(y)


def residual_stages(x, widths, blocks_per_stage, prefix=""):
  """Residual stages of `widths` on tensor `x`, the first at stride 1, each
  later one halving the size; stage N's last block output is
  `{prefix}stage{N}_out`."""
  for stage, width in enumerate(widths, start=1):
    for block in range(1, blocks_per_stage + 1):
      last = block == blocks_per_stage
      x = _residual_block(
          x, width, 2 if stage > 1 and block == 1 else 1,
          f"{prefix}stage{stage}" if last
          else f"{prefix}stage{stage}_block{block}")
  return x


def _stem(images, width, stride, name="stem"):
  """A 3x3 convolution, batch norm and ReLU."""
  layers = tf.keras.layers
  x = layers.Conv2D(width, 3, strides=stride, padding="same",
                    use_bias=False, name=f"{name}_conv")(images)
  x = _batch_norm(f"{name}_bn")(x)
  return layers.ReLU(name=f"{name}_relu")(x)


def residual_features(image_shape, widths, blocks_per_stage, name):
  """Images -> the last stage's features: a stride-1 3x3 stem, then
  `residual_stages`. A joint model's residual encoder."""
  images = tf.keras.Input(tuple(image_shape), name="images")
  x = _stem(images, widths[0], 1)
  return tf.keras.Model(
      images, residual_stages(x, widths, blocks_per_stage), name=name)


def _staged_resnet(image_shape, num_classes, widths, stem_stride,
                   blocks_per_stage, name):
  """A 3x3 stem, three residual stages (strides 1, 2, 2), pool, linear
  head; each stage's last block output is `stage{N}_out`."""
  layers = tf.keras.layers
  images = tf.keras.Input(tuple(image_shape), name="images")
  x = _stem(images, widths[0], stem_stride)
  x = residual_stages(x, widths, blocks_per_stage)
  x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  logits = _head(num_classes)(x)
  return tf.keras.Model(images, logits, name=name)


def small_resnet(image_shape, num_classes, widths=(16, 32, 64)):
  """A stride-2 stem, one residual block a stage, pool, linear head.

  The stem halves the image at once (28x28 -> 14x14): full-resolution
  activations cost a third of the time for no accuracy on digits. The
  stages' outputs (14, 7 and 4 pixels square on MNIST) are `stage1_out`
  ... `stage3_out`: S3, S2, S1.
  """
  return _staged_resnet(image_shape, num_classes, widths, 2, 1,
                        "small_resnet")


def resnet8(image_shape, num_classes, widths=(16, 32, 64)):
  """small_resnet with a stride-1 stem: full-resolution first stage."""
  return _staged_resnet(image_shape, num_classes, widths, 1, 1, "resnet8")


def resnet20(image_shape, num_classes, widths=(16, 32, 64)):
  """He et al.'s ResNet-20: a stride-1 stem, three blocks a stage."""
  return _staged_resnet(image_shape, num_classes, widths, 1, 3, "resnet20")


def resnet9(image_shape, num_classes, widths=(128, 256, 512)):
  """Page's ResNet-9: a stem of half the first stage's width, then a stage
  of each width: a 3x3 convolution and a 2x2 max pool, plus (first and
  last stage) a residual pair of 3x3 convolutions; global max pool, linear
  head. Wide and shallow, it reaches the accuracy of far deeper CIFAR
  ResNets in a few dozen epochs."""
  layers = tf.keras.layers
  images = tf.keras.Input(tuple(image_shape), name="images")
  x = _stem(images, max(1, widths[0] // 2), 1)
  for stage, width in enumerate(widths, start=1):
    x = _stem(x, width, 1, name=f"stage{stage}")
    x = layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
    if stage != 2:
      y = _stem(x, width, 1, name=f"stage{stage}_res1")
      y = _stem(y, width, 1, name=f"stage{stage}_res2")
      x = layers.Add(name=f"stage{stage}_add")([x, y])
    x = layers.Identity(name=f"stage{stage}_out")(x)
  x = layers.GlobalMaxPooling2D(name="max_pool")(x)
  # Page's 1/8 on the logits: the max pool's features are large, and
  # unscaled logits saturate the softmax in the first steps.
  x = layers.Rescaling(0.125, name="head_scale")(x)
  return tf.keras.Model(images, _head(num_classes)(x), name="resnet9")


def plain_cnn(image_shape, num_classes, widths=(8, 16, 32)):
  """A stem-less stack: one 3x3 convolution a stage, pool, linear head."""
  layers = tf.keras.layers
  images = tf.keras.Input(tuple(image_shape), name="images")
  x = images
  for stage, width in enumerate(widths, start=1):
    x = _stem(x, width, 2 if stage > 1 else 1, name=f"stage{stage}")
    x = layers.Identity(name=f"stage{stage}_out")(x)
  x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
  logits = _head(num_classes)(x)
  return tf.keras.Model(images, logits, name="plain_cnn")


class CaffePreprocess(tf.keras.layers.Layer):
  """[0, 1] RGB (or grey) -> what ImageNet's Keras ResNet-50 weights expect:
  0..255 BGR less ImageNet's mean (`resnet50.preprocess_input`)."""

  def call(self, images):
    images = 255. * images
    if images.shape[-1] == 1:
      images = tf.tile(images, [1, 1, 1, 3])
    return images[..., ::-1] - tf.constant(_IMAGENET_BGR_MEAN)


def resnet50(image_shape, num_classes):
  """Keras' ResNet-50 (random weights; see `load_weights`) with a linear head.

  Its layers keep Keras' names, so an ImageNet weights file loads by name.
  """
  height, width, channels = image_shape
  if min(height, width) < _RESNET50_MIN_SIZE or channels not in (1, 3):
    raise ValueError(
        f"resnet50 needs RGB or grey images of at least {_RESNET50_MIN_SIZE}"
        f"x{_RESNET50_MIN_SIZE} pixels, not {tuple(image_shape)}; set "
        "--image_size")
  images = tf.keras.Input(tuple(image_shape), name="images")
  features = tf.keras.applications.ResNet50(
      include_top=False, weights=None,
      input_tensor=CaffePreprocess(name="preprocess")(images)).output
  x = tf.keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
  logits = _head(num_classes)(x)
  return tf.keras.Model(images, logits, name="resnet50")


def build(name, image_shape, num_classes, weights=None, **options):
  """Backbone `name` for images of `image_shape`; `weights` a file or None;
  `options` go to the builder (the `widths` of WIDTH_BACKBONES).

  ValueError, in one line, for an unknown name, an image size the backbone
  cannot take, or a weights file that is missing or does not fit.
  """
  builders = {"small_resnet": small_resnet, "resnet8": resnet8,
              "resnet20": resnet20, "resnet9": resnet9,
              "plain_cnn": plain_cnn,
              "resnet50": resnet50}
  if name not in builders:
    raise ValueError(f"Unknown backbone {name!r}; choose one of "
                     f"{', '.join(NAMES)}.")
  backbone = builders[name](image_shape, num_classes, **options)
  if weights:
    load_weights(backbone, weights)
  return backbone


def split_points(name):
  """{point: layer name}, deepest point first, of backbone `name`."""
  if name not in _SPLIT_POINTS:
    raise ValueError(f"Unknown backbone {name!r}; choose one of "
                     f"{', '.join(NAMES)}.")
  return dict(_SPLIT_POINTS[name])


def split(backbone, point):
  """(front, back): images -> features at `point`, features -> logits.

  Both share the backbone's layers (and so its weights); `point` is S1, S2
  or S3. A split point is a block output that every later layer reaches
  only through it, so the back is the rest of the graph, fed from there.
  """
  points = split_points(backbone.name)
  if point not in points:
    raise ValueError(f"Unknown split point {point!r} of {backbone.name}; "
                     f"choose one of {', '.join(points)}.")
  features = backbone.get_layer(points[point]).output
  front = tf.keras.Model(backbone.input, features,
                         name=f"{backbone.name}_{point}_front")
  back = tf.keras.Model(features, backbone.output,
                        name=f"{backbone.name}_{point}_back")
  return front, back


def _h5_layer_names(path):
  """Layer names of a Keras 2 .h5 weights (or whole-model) file; None for
  Keras 3's .weights.h5 layout."""
  try:
    with h5py.File(path, "r") as f:
      group = f["model_weights"] if "model_weights" in f else f
      if "layer_names" not in group.attrs:
        return None
      return {n.decode() if isinstance(n, bytes) else str(n)
              for n in group.attrs["layer_names"]}
  except OSError as e:
    raise ValueError(f"backbone weights {path}: not a Keras .h5 file "
                     f"({str(e).splitlines()[0]})") from None


def load_weights(backbone, path):
  """Loads a Keras .h5 weights file into `backbone`, in place.

  A Keras 2 file (what `save_weights("x.h5")` and keras.applications
  write) is matched by layer name: every layer but the head must be in it,
  and the head is loaded only if its shape fits, so ImageNet's file with or
  without its top serves any number of classes. A `.weights.h5` file (Keras
  3 layout) must come from the same backbone. ValueError, in one line, if
  the file is missing or does not fit.
  """
  if not os.path.isfile(path):
    raise ValueError(f"backbone weights file {path} does not exist")
  names = _h5_layer_names(path)
  try:
    if names is None:
      backbone.load_weights(path)
      return
    missing = [layer.name for layer in backbone.layers
               if layer.weights and layer.name != HEAD
               and layer.name not in names]
    if missing:
      raise ValueError(
          f"it has no weights for {len(missing)} layers of {backbone.name} "
          f"(the first is {missing[0]})")
    try:
      backbone.load_weights(path, by_name=True)
    except ValueError:  # the head is for another number of classes
      without_head = tf.keras.Model(
          backbone.input, backbone.get_layer(HEAD).input)
      without_head.load_weights(path, by_name=True)
  except (ValueError, OSError) as e:
    raise ValueError(f"backbone weights {path} do not fit {backbone.name}: "
                     f"{' '.join(str(e).split())}") from None
