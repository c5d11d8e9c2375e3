"""What a client's upload costs on the wire, in bytes, exactly as the compression stages encode it
(counted on the host, from the upload's tensor sizes and the run's settings: no client's data
changes it).

Per tensor of d values, of which m are sent (m = d, or top-k's count):
- the values, at b bits each when quantized (0 < b < 32), else 32 (float32);
- where m < d, which coordinates: ceil(log2 d) bits per kept index, or a d-bit bitmap, whichever
  is smaller;
- when quantized, the tensor's min and step, two 32-bit floats (clipping for DP scales both,
  so it costs nothing more).
A client's upload is the sum over its tensors (every part of it: SCAFFOLD's control-variate delta
too), rounded up to whole bytes. Uncompressed, that is 4 bytes a value.
"""
import math

from fedprox_jax.aggregation import quantization
from fedprox_jax.aggregation import sparsification


def tensor_bits(size: int, bits: int, topk: float) -> int:
  """Bits of one tensor of `size` values (`topk` as the program has it: sparsification.at_most)."""
  kept = int(sparsification.kept_count(topk, size)) if topk < 1 else size
  quantized = 0 < bits < quantization.EXACT_BITS
  values = kept * (bits if quantized else 32)
  indices = 0 if kept == size else min(kept * math.ceil(math.log2(size)), size)
  return values + indices + (2 * 32 if quantized else 0)


def upload_bytes(sizes, bits: int = 0, topk: float = 1.0) -> int:
  """Bytes of one client's upload of tensors of these `sizes`."""
  topk = sparsification.at_most(topk)
  return -(-sum(tensor_bits(int(d), int(bits), topk) for d in sizes) // 8)
