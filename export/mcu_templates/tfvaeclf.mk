# tfvaeclf's coder for a board: include this fragment, then add
# $(TFVAECLF_SRCS) to your sources and $(TFVAECLF_INCLUDES) to CFLAGS.
# main.cc is an example that also needs TFLM (tflite-micro's Makefile or
# its CMake/Bazel rules); the coder itself needs only a C99 compiler.
TFVAECLF_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
TFVAECLF_SRCS := @SOURCES@
TFVAECLF_INCLUDES := -I$(TFVAECLF_DIR)
