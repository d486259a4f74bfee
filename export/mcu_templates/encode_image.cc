// uint8 pixels (TFVAECLF_IMAGE_BYTES, H x W x C) -> message length in
// `message`, or < 0. `counter` is the message's dither index (dithered models;
// increment it per message, never repeat it).
int EncodeImage(tflite::MicroInterpreter& interpreter, const uint8_t* image,
                uint32_t counter) {
  TfLiteTensor* input = interpreter.input(0);
  for (int i = 0; i < TFVAECLF_IMAGE_BYTES; ++i) {
    input->data.uint8[i] = tfvaeclf_pixel[image[i]];
  }
  if (interpreter.Invoke() != kTfLiteOk) return -100;
  return tfvaeclf_encode_message(&tfvaeclf_model_codec,
                                 interpreter.output(0)->data.int8, counter,
                                 message, sizeof(message));
}
