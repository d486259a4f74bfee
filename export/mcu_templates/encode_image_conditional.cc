// uint8 pixels (TFVAECLF_IMAGE_BYTES, H x W x C) -> message length in
// `message`, or < 0. The int8 encoder gives the hyper-latent z and the
// latent y; the float32 slice coder takes the coded z (as floats) and the
// dequantized y, and gives the latent's values and table indexes.
int EncodeImage(tflite::MicroInterpreter& encoder,
                tflite::MicroInterpreter& slice_coder, const uint8_t* image) {
  TfLiteTensor* input = encoder.input(0);
  for (int i = 0; i < TFVAECLF_IMAGE_BYTES; ++i) {
    input->data.uint8[i] = tfvaeclf_pixel[image[i]];
  }
  if (encoder.Invoke() != kTfLiteOk) return -100;
  const int8_t* z = encoder.output(TFVAECLF_ENCODER_HYPER_OUTPUT)->data.int8;
  const int8_t* y = encoder.output(TFVAECLF_ENCODER_LATENT_OUTPUT)->data.int8;
  float* z_hat = slice_coder.input(TFVAECLF_SLICE_HYPER_INPUT)->data.f;
  float* latent = slice_coder.input(TFVAECLF_SLICE_LATENT_INPUT)->data.f;
  for (int i = 0; i < TFVAECLF_HYPER_VALUES; ++i) {
    z_hat[i] = tfvaeclf_hyper_codec.value[z[i] + 128];
  }
  for (int i = 0; i < TFVAECLF_LATENT_VALUES; ++i) {
    latent[i] = tfvaeclf_latent_input[y[i] + 128];
  }
  if (slice_coder.Invoke() != kTfLiteOk) return -101;
  return tfvaeclf_encode_conditional_message(
      &tfvaeclf_model_codec, z,
      slice_coder.output(TFVAECLF_SLICE_VALUES_OUTPUT)->data.i32,
      slice_coder.output(TFVAECLF_SLICE_INDEXES_OUTPUT)->data.i32, message,
      sizeof(message));
}
