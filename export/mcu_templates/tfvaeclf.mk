# tfvaeclf's coder for a board: include this fragment, then add
# $(TFVAECLF_SRCS) to your sources and $(TFVAECLF_INCLUDES) to CFLAGS.
# main.cc is an example that also needs TFLM (tflite-micro's Makefile or
# its CMake/Bazel rules); the coder itself needs only a C99 compiler.
TFVAECLF_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
TFVAECLF_SRCS := $(TFVAECLF_DIR)range_coder.c \
  $(TFVAECLF_DIR)tfvaeclf_message.c $(TFVAECLF_DIR)tfvaeclf_model.c \
  @MODELS@
TFVAECLF_INCLUDES := -I$(TFVAECLF_DIR)
