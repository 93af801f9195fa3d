"""Dropout with a cheaper random mask on CPU.

On CPU, `nn.Dropout` draws one Mersenne-Twister number per element (`bernoulli_`), and in a profile of the demo
preset's text-frozen step that was 23% of the time (the matrix products were 48%). Here one
64-bit draw gives four 16-bit uniforms, each compared with p * 2^16: the drop probability is p rounded to a
multiple of 2^-16 (0.1 becomes 0.100006), and kept values are scaled by that probability's inverse so the
expected output equals the input. Measured about 2.8x faster forward and backward on a (32, 25, 1536) activation.
On other devices it is `nn.functional.dropout`: their generators are fast already.
"""

from __future__ import annotations

import torch
from torch import nn

UNIFORM_LEVELS = 2**16


class FastCpuDropout(nn.Dropout):
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return inputs
        if inputs.device.type != "cpu":
            return nn.functional.dropout(inputs, self.p, training=True)
        if self.p >= 1:
            return inputs * 0
        return inputs * keep_mask(inputs, self.p)


def keep_mask(inputs: torch.Tensor, p: float) -> torch.Tensor:
    """1 / (1 - p') where kept, 0 where dropped, shaped and typed like `inputs`; p' is p on the 2^-16 grid."""
    count = inputs.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # every 64-bit value
    uniforms = words.view(torch.int16)[:count].view(inputs.shape)  # uniform over [-2^15, 2^15)
    dropped_levels = min(round(p * UNIFORM_LEVELS), UNIFORM_LEVELS - 1)
    keep = uniforms >= dropped_levels - UNIFORM_LEVELS // 2
    return keep.to(inputs.dtype).mul_(UNIFORM_LEVELS / (UNIFORM_LEVELS - dropped_levels))


def use_fast_cpu_dropout(module: nn.Module) -> nn.Module:
    """Replaces every `nn.Dropout` below `module` (a Hugging Face encoder's too) by `FastCpuDropout`, same p."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastCpuDropout(child.p))
    return module
