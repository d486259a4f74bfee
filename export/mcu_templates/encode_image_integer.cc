// uint8 pixels (TFVAECLF_IMAGE_BYTES, H x W x C) -> message length in
// `message`, or < 0. The int8 encoder gives the hyper-latent z and the
// latent y; the integer slice predictor (C, no float) picks the latent's
// tables, and the coder writes the message.
int EncodeImage(tflite::MicroInterpreter& encoder, const uint8_t* image) {
  TfLiteTensor* input = encoder.input(0);
  for (int i = 0; i < TFVAECLF_IMAGE_BYTES; ++i) {
    input->data.uint8[i] = tfvaeclf_pixel[image[i]];
  }
  if (encoder.Invoke() != kTfLiteOk) return -100;
  return tfvaeclf_encode_integer_message(
      &tfvaeclf_model_codec,
      encoder.output(TFVAECLF_ENCODER_HYPER_OUTPUT)->data.int8,
      encoder.output(TFVAECLF_ENCODER_LATENT_OUTPUT)->data.int8, message,
      sizeof(message));
}
