"""export.sizes: the edge budget counted from the int8 flatbuffer."""

import numpy as np
import tensorflow as tf

from tfvaeclf.export import sizes


def test_macs_count_every_product_of_the_int8_model():
  layers = tf.keras.layers
  images = tf.keras.Input((8, 8, 3))
  x = layers.Conv2D(8, 3, padding="same")(images)          # 8*8*8 * 3*3*3
  x = layers.DepthwiseConv2D(3, padding="same")(x)         # 8*8*8 * 3*3
  y = layers.Conv2DTranspose(4, 3, strides=2, padding="same")(x)  # 8*8*8 * 3*3*4
  x = layers.GlobalAveragePooling2D()(x)
  x = layers.Dense(10)(x)                                  # 10 * 8
  model = tf.keras.Model(images, [x, y])

  def function(images):
    logits, upsampled = model(images)
    return {"logits": logits, "upsampled": upsampled}

  calibration = np.random.default_rng(0).random((4, 8, 8, 3), np.float32)
  cost = sizes.edge_size(function, (8, 8, 3), model.count_params(),
                         calibration)
  assert cost["edge_macs"] == 8 * 8 * 8 * 27 + 8 * 8 * 8 * 9 + 512 * 36 + 80
  assert cost["edge_parameters"] == model.count_params()
  # int8 weights take about a quarter of float32's bytes.
  assert cost["edge_int8_bytes"] < cost["edge_float_bytes"]
