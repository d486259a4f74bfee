"""Entropy models: how a latent is quantized, priced in bits and range-coded.

Every model kind codes its latent through a coder from this package, so the
quantizer the classifier trains on is, by construction, the one the decoder
reproduces. Coders quantize to integers (no offset heuristic): TFC's heuristic
shifts decoded values to `round(y - o) + o`, and a classifier trained on
`round(y)` then fails on what the decoder returns; the heuristic is also an
iterative tail search that would run at every training step.

A coder has two lives. While training it owns a learned prior and prices the
latent with additive uniform noise (a differentiable upper bound on the rate).
`freeze()` then turns the prior into integer CDF tables; those tables are the
artifact that is saved (`tables()`/`load_tables()`) and shipped, so encoder
and decoder can never disagree by recomputing them. A frozen coder describes
how its latent travels (`registry.Coder`: its typed streams, the board's and
the server's halves), which is all the exporter and the runtimes know of it.

Bytes from outside are decoded by `decode`, which runs the project's own
range decoder (`tfvaeclf.coding.latent_decoder`, `tfvaeclf.coding.native`):
its work is bounded whatever the bytes, where TFC's decode ops can run for
minutes on a crafted string. It returns what `decompress` (TFC's ops, kept
as the reference in tests) returns, bit for bit.

A coder a module; each registers its `--entropy_model` names
(`registry.register`), in the order below.
"""

from tfvaeclf.coders.factorized import FactorizedCoder
from tfvaeclf.coders.context import ChannelContextCoder, HyperpriorCoder
from tfvaeclf.coders.dithered import DitheredCoder
from tfvaeclf.coders.integer_context import IntegerContextCoder
from tfvaeclf.coders.registry import Coder, build_coder, coder_names
from tfvaeclf.coders.registry import register

__all__ = ["CODER_NAMES", "ChannelContextCoder", "Coder", "DitheredCoder",
           "FactorizedCoder", "HyperpriorCoder", "IntegerContextCoder",
           "build_coder",
           "coder_names", "register"]

# The `--entropy_model` choices: the coders above (one registered later,
# as a test's, is built by name but is no flag choice).
CODER_NAMES = coder_names()
