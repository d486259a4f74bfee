"""The grouped layers against Keras: GroupedConv2D against Conv2D(groups),
GroupedConv2DTranspose against an ungrouped Conv2DTranspose a group."""

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf.layers import GroupedConv2D, GroupedConv2DTranspose

# (input H x W x C, filters, groups, kernel, stride, padding): the seed's
# decoder rows, before their cropping, and an odd-sized, non-square case.
CASES = [
    ((2, 2, 768), 192, 64, 4, 2, "valid"),   # V1 mirror of the heads
    ((16, 16, 12), 3, 1, 4, 2, "same"),      # V1 last row
    ((5, 5, 128), 40, 8, 3, 2, "valid"),     # V2 mirror of the heads
    ((9, 9, 40), 12, 4, 4, 2, "valid"),      # V2 middle row
    ((16, 16, 12), 3, 1, 6, 2, "same"),      # V2 last row
    ((3, 5, 6), 4, 2, (3, 2), (1, 3), "same"),
]


def _inputs(shape, n=2, seed=0):
  return tf.random.stateless_normal((n, *shape), seed=(seed, 2))


def _per_group_keras(layer, inputs):
  """`layer`'s output from a Keras Conv2DTranspose a group, weights sliced."""
  twin = tf.keras.layers.Conv2DTranspose(
      layer.filters // layer.groups, layer.kernel_size, layer.strides,
      padding=layer.padding)
  size = inputs.shape[-1] // layer.groups
  twin.build((None, None, None, size))
  outputs = []
  for group, part in enumerate(tf.split(inputs, layer.groups, axis=-1)):
    twin.set_weights([
        layer.kernel[..., group * size:(group + 1) * size],
        layer.bias[group * twin.filters:(group + 1) * twin.filters]])
    outputs.append(twin(part))
  return tf.concat(outputs, axis=-1)


@pytest.mark.parametrize("shape,filters,groups,kernel,stride,padding", CASES)
def test_equals_separate_transposed_convs_on_channel_slices(
    shape, filters, groups, kernel, stride, padding):
  layer = GroupedConv2DTranspose(filters, kernel, stride, padding, groups)
  inputs = _inputs(shape)
  layer.build(inputs.shape)
  layer.bias.assign(tf.random.normal(layer.bias.shape))  # check biases too
  outputs = layer(inputs)
  expected = _per_group_keras(layer, inputs)
  assert outputs.shape == expected.shape
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_one_group_is_keras_conv2d_transpose(padding):
  keras = tf.keras.layers.Conv2DTranspose(5, 4, 2, padding, activation="elu")
  layer = GroupedConv2DTranspose(5, 4, 2, padding, activation="elu")
  inputs = _inputs((7, 6, 3))
  expected = keras(inputs)
  layer.build(inputs.shape)
  layer.set_weights(keras.get_weights())
  np.testing.assert_allclose(layer(inputs), expected, rtol=1e-5, atol=1e-6)
  assert layer.count_params() == keras.count_params()


@pytest.mark.parametrize("shape,filters,groups,kernel,stride,padding", CASES)
def test_parameter_count_and_static_shape(
    shape, filters, groups, kernel, stride, padding):
  layer = GroupedConv2DTranspose(filters, kernel, stride, padding, groups)
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
  channels = shape[-1]
  layer.build((None, *shape))
  assert layer.count_params() == (
      groups * kh * kw * (channels // groups) * (filters // groups) + filters)
  keras = tf.keras.layers.Conv2DTranspose(filters, kernel, stride, padding)
  # The batch axis free, as in a served model: the rest is still static.
  traced = tf.function(layer).get_concrete_function(
      tf.TensorSpec((None, *shape))).structured_outputs
  assert traced.shape.as_list() == (
      keras.compute_output_shape((None, *shape)).as_list())


def test_config_round_trip():
  layer = GroupedConv2DTranspose(12, (4, 3), 2, "same", groups=4,
                                 activation="elu", use_bias=False,
                                 name="deconv")
  config = layer.get_config()
  again = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
  assert isinstance(again, GroupedConv2DTranspose)
  assert again.get_config() == config
  assert config["groups"] == 4 and config["kernel_size"] == (4, 3)
  again.build((None, 3, 3, 8))
  assert again.bias is None
  assert again.kernel.shape == (4, 3, 3, 8)


def test_gradients_reach_the_kernel_and_the_input_on_cpu():
  layer = GroupedConv2DTranspose(8, 3, 2, groups=4)
  inputs = _inputs((4, 4, 8))

  @tf.function
  def gradients(inputs):
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      loss = tf.reduce_sum(layer(inputs) ** 2)
    return tape.gradient(loss, [inputs, *layer.trainable_variables])

  for gradient in gradients(inputs):
    assert gradient is not None and np.all(np.isfinite(gradient))


@pytest.mark.parametrize("arguments,message", [
    ({"filters": 6, "groups": 4}, "filters=6"),
    ({"filters": 8, "groups": 4, "padding": "full"}, "padding"),
])
def test_bad_arguments_are_refused(arguments, message):
  with pytest.raises(ValueError, match=message):
    GroupedConv2DTranspose(kernel_size=3, **arguments)


def test_input_channels_must_divide_into_groups():
  with pytest.raises(ValueError, match="Input channels"):
    GroupedConv2DTranspose(8, 3, groups=4).build((None, 4, 4, 6))


# (input H x W x C, filters, groups, kernel, stride, padding): the seed's
# encoder rows after their zero padding, and an odd case.
ENCODER_CASES = [
    ((4, 4, 192), 768, 64, 4, 2, "valid"),   # V1 heads
    ((36, 36, 3), 12, 1, 6, 2, "valid"),     # V2 first row
    ((20, 20, 12), 40, 4, 4, 2, "valid"),    # V2 second row
    ((11, 11, 40), 128, 8, 3, 2, "valid"),   # V2 heads
    ((7, 5, 6), 4, 2, (3, 2), (2, 1), "same"),
]


@pytest.mark.parametrize("shape,filters,groups,kernel,stride,padding",
                         ENCODER_CASES)
def test_grouped_conv2d_is_keras_conv2d_with_groups(
    shape, filters, groups, kernel, stride, padding):
  """Same weights, same outputs and gradients: a Keras Conv2D(groups)
  model's weights load unchanged."""
  keras = tf.keras.layers.Conv2D(filters, kernel, stride, padding,
                                 groups=groups, activation="elu")
  layer = GroupedConv2D(filters, kernel, stride, padding, groups,
                        activation="elu")
  inputs = _inputs(shape)
  keras.build(inputs.shape)
  keras.bias.assign(tf.random.normal(keras.bias.shape))
  layer.build(inputs.shape)
  layer.set_weights(keras.get_weights())
  assert layer.count_params() == keras.count_params()

  def outputs_and_gradients(convolution):
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      outputs = convolution(inputs)
      loss = tf.reduce_sum(outputs ** 2)
    return [outputs, *tape.gradient(
        loss, [inputs, *convolution.trainable_variables])]

  for ours, theirs in zip(outputs_and_gradients(layer),
                          outputs_and_gradients(keras)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  traced = tf.function(layer).get_concrete_function(
      tf.TensorSpec((None, *shape))).structured_outputs
  assert traced.shape.as_list() == keras.compute_output_shape(
      (None, *shape)).as_list()
  again = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
  assert isinstance(again, GroupedConv2D)
  assert again.get_config() == layer.get_config()
