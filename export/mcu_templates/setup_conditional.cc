  static tflite::MicroInterpreter slice_coder(
      tflite::GetModel(tfvaeclf_slice_coder_data), resolver, slice_arena,
      sizeof(slice_arena));
  if (slice_coder.AllocateTensors() != kTfLiteOk) return 1;
