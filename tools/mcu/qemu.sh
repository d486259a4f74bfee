#!/bin/sh
# Builds a bundle's MCU coder for Cortex-M4 (thumb, -Os) with fixed.c and
# runs it on QEMU's mps2-an386 with semihosting: prints the messages of the
# fixed latents, one hex line each, as the host build of fixed.c does.
#
#   tools/mcu/qemu.sh BUNDLE/mcu FIXED_LATENTS_H OUT_DIR
#
# Also writes OUT_DIR/size.txt: arm-none-eabi-size of the coder's objects
# (range_coder.o holds the decoder too, which --gc-sections drops) and the
# stack frames (gcc -fstack-usage) of its functions, and the floating-point
# routines it calls (none: no FPU needed).
# Needs Debian's gcc-arm-none-eabi, libnewlib-arm-none-eabi and
# qemu-system-arm (tools/setup.sh installs them).
set -eu
mcu=$1 fixed=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cp "$fixed" "$out/fixed_latents.h"
flags="-mcpu=cortex-m4 -mthumb -mfloat-abi=soft -Os -std=c99 -Wall -Werror \
  -ffunction-sections -fdata-sections -fstack-usage -I$mcu -I$out"
objects="" frames=""
# The coder's sources: every .c but the TFLM models' arrays.
for source in "$mcu"/*.c; do
  name=$(basename "$source" .c)
  case $name in model_data|slice_coder_data) continue ;; esac
  arm-none-eabi-gcc $flags -c "$source" -o "$out/$name.o"
  objects="$objects $out/$name.o"
  frames="$frames $out/$name.su"
done
for name in fixed startup; do
  arm-none-eabi-gcc $flags -c "$here/$name.c" -o "$out/$name.o"
done
arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb --specs=rdimon.specs -nostartfiles \
  -T "$here/mps2.ld" -Wl,--gc-sections "$out/startup.o" "$out/fixed.o" \
  $objects -o "$out/fixed.elf"
{
  arm-none-eabi-size $objects
  echo "linked from them into fixed.elf (code + const data: flash, bytes):"
  arm-none-eabi-nm --defined-only $objects | awk 'NF == 3 {print $3}' |
    sort -u > "$out/coder_symbols.txt"
  arm-none-eabi-nm -S --radix=d "$out/fixed.elf" |
    awk 'NR == FNR {coder[$1]; next}
         NF == 4 && ($4 in coder) && $3 ~ /^[TtRr]$/ {sum += $2}
         END {print sum}' "$out/coder_symbols.txt" -
  echo "floating-point routines the coder calls (soft-float ABI):"
  floats=$(arm-none-eabi-nm --undefined-only $objects | awk '{print $2}' |
    grep -E '^__aeabi_([fd]|u?i2[fd]|u?l2[fd])' | sort -u || true)
  echo "${floats:-none}"
  cat $frames
} > "$out/size.txt"
timeout 60 qemu-system-arm -M mps2-an386 -nographic -monitor none \
  -serial none -semihosting-config enable=on,target=native \
  -kernel "$out/fixed.elf"
