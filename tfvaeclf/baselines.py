"""Classical image codecs, the baselines a learned codec must beat.

JPEG and WebP through Pillow; HEVC intra (libx265), AV1 (libaom) and
JPEG 2000 (OpenJPEG) through ffmpeg. Every coded image is counted two ways:

* whole: the file a sender would transmit, every byte;
* payload: the entropy-coded data alone. Containers, parameter sets, tables,
  encoder SEI messages and marker segments are left out. On a 28x28 digit
  those fixed costs are most of the file, and a fair comparison must show
  both figures.

What "payload" is for each format:
  jpeg      the scan data after each SOS header, up to the next marker
  webp      the VP8 frame data less its 10-byte frame header (VP8L: 5)
  hevc      VCL NAL units less their 2-byte NAL headers (no VPS/SPS/PPS/SEI)
  av1       payloads of frame, frame-header and tile-group OBUs (no sequence
            header, temporal delimiter or metadata OBUs; no OBU headers)
  jpeg2000  tile-part data after each SOD marker (no main or tile headers)

`measure` codes each image once and hands the decoded images to an optional
`score` (tools/baselines.py: a classifier's accuracy on them), so rates,
PSNR and accuracy describe the same files.
"""

import concurrent.futures
import dataclasses
import io
import os
import shutil
import struct
import subprocess

import numpy as np
from PIL import Image
import tqdm

from tfvaeclf import losses
from tfvaeclf.errors import BaselineUnavailableError

__all__ = ["BaselineUnavailableError", "Codec", "CODECS", "code_images",
           "measure", "psnr"]


# --- payload parsers --------------------------------------------------------


def _jpeg_payload(data):
  """Bytes of entropy-coded scan data (stuffed bytes and RSTs included)."""
  total, pos = 0, 2  # after SOI
  while pos + 4 <= len(data):
    if data[pos] != 0xFF:
      raise ValueError("not a JPEG marker segment")
    marker = data[pos + 1]
    if marker == 0xD9:  # EOI
      break
    (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
    pos += 2 + length
    if marker == 0xDA:  # SOS: scan data runs to the next real marker
      start = pos
      while pos + 1 < len(data) and not (
          data[pos] == 0xFF and data[pos + 1] not in (0x00, *range(0xD0,
                                                                   0xD8))):
        pos += 1
      total += pos - start
  return total


def _webp_payload(data):
  if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
    raise ValueError("not a WebP file")
  pos = 12
  while pos + 8 <= len(data):
    kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
    if kind == b"VP8 ":
      return size - 10
    if kind == b"VP8L":
      return size - 5
    pos += 8 + size + (size & 1)
  raise ValueError("WebP file without image data")


def _annexb_nal_units(data):
  """NAL units of an Annex B stream (start codes removed)."""
  starts = []
  i = 0
  while True:
    i = data.find(b"\x00\x00\x01", i)
    if i < 0:
      break
    starts.append(i + 3)
    i += 3
  ends = [s - 3 - (1 if s >= 4 and data[s - 4] == 0 else 0)
          for s in starts[1:]] + [len(data)]
  return [data[s:e] for s, e in zip(starts, ends)]


def _hevc_payload(data):
  return sum(len(nal) - 2 for nal in _annexb_nal_units(data)
             if (nal[0] >> 1) & 0x3F < 32)  # VCL NAL unit types are 0..31


def _leb128(data, pos):
  value = shift = 0
  while True:
    byte = data[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return value, pos
    shift += 7


_AV1_PICTURE_OBUS = (3, 4, 6)  # frame header, tile group, frame


def _av1_payload(data):
  total, pos = 0, 0
  while pos < len(data):
    header = data[pos]
    kind, has_extension, has_size = (header >> 3) & 0xF, header & 4, header & 2
    pos += 2 if has_extension else 1
    if not has_size:
      raise ValueError("AV1 OBU without a size field")
    size, pos = _leb128(data, pos)
    if kind in _AV1_PICTURE_OBUS:
      total += size
    pos += size
  return total


def _av1_temporal_units(stream):
  """An OBU stream cut before each temporal delimiter: with every frame a
  key frame, each unit is byte for byte the file of its image alone."""
  starts, pos = [], 0
  while pos < len(stream):
    header = stream[pos]
    if (header >> 3) & 0xF == 2:  # OBU_TEMPORAL_DELIMITER
      starts.append(pos)
    size, end = _leb128(stream, pos + (2 if header & 4 else 1))
    pos = end + size
  return [stream[a:b] for a, b in zip(starts, starts[1:] + [len(stream)])]


def _j2k_payload(data):
  total, pos = 0, data.find(b"\xff\x90")  # first SOT
  while pos >= 0 and data[pos:pos + 2] == b"\xff\x90":
    (tile_part_length,) = struct.unpack(">I", data[pos + 6:pos + 10])
    sod = data.find(b"\xff\x93", pos)
    end = (pos + tile_part_length if tile_part_length
           else data.rfind(b"\xff\xd9"))
    total += end - (sod + 2)
    pos = end
  return total


# --- codecs -----------------------------------------------------------------


def _pillow_encoder(format_name):
  def encode(image, quality):
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image
                    ).save(buffer, format=format_name, quality=int(quality))
    return buffer.getvalue()
  return encode


def _pillow_decode(data, shape):
  image = np.asarray(Image.open(io.BytesIO(data)).convert(
      "L" if shape[-1] == 1 else "RGB"))
  return image.reshape(shape)


def _ffmpeg(args, stdin):
  if shutil.which("ffmpeg") is None:
    raise BaselineUnavailableError(
        "ffmpeg is not installed; apt-get install ffmpeg (tools/setup.sh "
        "does it)")
  result = subprocess.run(
      ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args],
      input=stdin, capture_output=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"ffmpeg {' '.join(args)}: "
                       f"{result.stderr.decode(errors='replace').strip()}")
  return result.stdout


def _pixel_format(shape):
  return "gray" if shape[-1] == 1 else "rgb24"


def _png(image):
  png = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image
                  ).save(png, format="PNG")
  return png.getvalue()


def _ffmpeg_encoder(output_format, codec_args):
  """An encoder fed with a PNG on stdin, writing the raw stream to stdout."""
  def encode(image, quality):
    args = [arg.format(quality=quality) for arg in codec_args]
    return _ffmpeg(["-f", "png_pipe", "-i", "pipe:0", *args,
                    "-frames:v", "1", "-f", output_format, "pipe:1"],
                   _png(image))
  return encode


def _ffmpeg_decoder(input_format):
  def decode(data, shape):
    raw = _ffmpeg(["-f", input_format, "-i", "pipe:0", "-f", "rawvideo",
                   "-pix_fmt", _pixel_format(shape), "pipe:1"], data)
    return np.frombuffer(raw, np.uint8).reshape(shape)
  return decode


def _ffmpeg_batch_coder(output_format, codec_args, split):
  """`code(images, quality) -> (files, decoded)` in two ffmpeg runs for
  the whole batch: the images as the frames of one all-key-frame stream,
  `split` cutting it into each image's file. Used where that gives the
  per-image encoder's bytes exactly (tested), at ~40x its speed."""
  def code(images, quality):
    count = len(images)
    pixel_format = _pixel_format(images.shape)
    args = [arg.format(quality=quality) for arg in codec_args]
    # PNGs, as the per-image encoder reads: the same pixel format and range.
    files = split(_ffmpeg(
        ["-f", "png_pipe", "-i", "pipe:0", *args, "-g", "1", "-keyint_min",
         "1", "-f", output_format, "pipe:1"],
        b"".join(_png(image) for image in images)))
    raw = _ffmpeg(["-f", output_format, "-i", "pipe:0", "-f", "rawvideo",
                   "-pix_fmt", pixel_format, "pipe:1"], b"".join(files))
    if len(files) != count or len(raw) != images.size:
      raise RuntimeError(f"ffmpeg coded {len(files)} of {count} images")
    return files, np.frombuffer(raw, np.uint8).reshape(images.shape)
  return code


@dataclasses.dataclass(frozen=True)
class Codec:
  """One classical codec and the quality sweep it is measured over."""
  name: str
  qualities: tuple  # from lowest to highest quality
  encode: callable  # (uint8 HxWxC image, quality) -> file bytes
  decode: callable  # (file bytes, shape) -> uint8 HxWxC image
  payload_bytes: callable  # file bytes -> entropy-coded bytes
  # (uint8 NxHxWxC images, quality) -> (files, decoded), the same as
  # `encode` and `decode` image by image, faster; None: image by image.
  code_batch: callable = None


_AV1_ARGS = ("-c:v", "libaom-av1", "-cpu-used", "6", "-crf", "{quality}")
# Images a batch coder takes at once (one ffmpeg run each way).
_BATCH = 250

# Qualities: Pillow's 1..95 scale; x265 and libaom CRF (lower is better);
# OpenJPEG's compression ratio / 2 (ffmpeg's -compression_level, integers
# only; on 28x28 digits every level from 3 up gives the same minimal
# stream, so JPEG 2000 has three points).
CODECS = {
    "jpeg": Codec("jpeg", (5, 10, 20, 35, 50, 75, 90),
                  _pillow_encoder("JPEG"), _pillow_decode, _jpeg_payload),
    "webp": Codec("webp", (0, 5, 10, 25, 50, 75, 90),
                  _pillow_encoder("WEBP"), _pillow_decode, _webp_payload),
    "hevc": Codec(
        "hevc", (51, 45, 40, 35, 30, 25, 20),
        _ffmpeg_encoder("hevc", [
            "-c:v", "libx265", "-preset", "medium",
            "-x265-params", "log-level=none:keyint=1:crf={quality}"]),
        _ffmpeg_decoder("hevc"), _hevc_payload),
    "av1": Codec(
        "av1", (63, 55, 50, 45, 40, 30, 20),
        _ffmpeg_encoder("obu", _AV1_ARGS), _ffmpeg_decoder("obu"),
        _av1_payload,
        _ffmpeg_batch_coder("obu", _AV1_ARGS, _av1_temporal_units)),
    "jpeg2000": Codec(
        "jpeg2000", (3, 2, 1),
        _ffmpeg_encoder("image2pipe", [
            "-c:v", "libopenjpeg", "-format", "j2k", "-irreversible", "1",
            "-numresolution", "3", "-compression_level", "{quality}"]),
        _ffmpeg_decoder("j2k_pipe"), _j2k_payload),
}


def code_images(codec, images, quality, progress=False):
  """Codes each uint8 image alone: (list of file bytes, decoded images).

  Images are coded on one thread per core: the ffmpeg codecs start two
  processes an image (~0.2 s) and the threads only wait on them; a codec
  with a `code_batch` takes them in batches of 250 instead. `progress`:
  show a bar.
  """
  if codec.code_batch:
    work = [images[start:start + _BATCH]
            for start in range(0, len(images), _BATCH)]
    code = lambda batch: codec.code_batch(batch, quality)
  else:
    work = images

    def code(image):
      data = codec.encode(image, quality)
      return [data], codec.decode(data, image.shape)[None]

  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool, \
      tqdm.tqdm(total=len(images), desc=f"{codec.name} q={quality}",
                unit="image", leave=False, disable=not progress) as bar:
    coded = []
    for files, decoded in pool.map(code, work):
      coded.append((files, decoded))
      bar.update(len(files))
  return ([data for files, _ in coded for data in files],
          np.concatenate([decoded for _, decoded in coded]))


def psnr(images, decoded):
  """Mean PSNR in dB over images (8-bit peak)."""
  mse = losses.mse(images.astype(np.float64), decoded.astype(np.float64))
  return float(np.mean(losses.psnr(mse, peak=255.)))


def measure(codec, images, quality, score=None, progress=False):
  """One row of the rate table: bytes both ways, bits per pixel, PSNR.

  `score(decoded images) -> dict`, if given, adds its columns to the row.
  """
  files, decoded = code_images(codec, images, quality, progress)
  pixels = images.shape[1] * images.shape[2]
  whole = np.mean([len(f) for f in files])
  payload = np.mean([codec.payload_bytes(f) for f in files])
  return {"codec": codec.name, "quality": quality,
          "bytes_per_image": float(whole),
          "payload_bytes_per_image": float(payload),
          "bpp": 8 * float(whole) / pixels,
          "payload_bpp": 8 * float(payload) / pixels,
          "psnr": psnr(images, decoded),
          **(score(decoded) if score else {})}
