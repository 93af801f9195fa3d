"""Tolerances of the tests that compare numbers across precisions, per precision, with the reasons."""

PRECISIONS = ("fp32", "bf16", "fp16")
# The first epoch's mean training loss against fp32's, relative. fp32: the same arithmetic, only the order of a few
# reductions differs. bf16 keeps 8 significant bits (each rounding up to 2^-9 relative) and fp16 11 (2^-12): through
# the encoders, two Transformer layers and two optimiser steps the losses drift by a few roundings of the logits,
# so the bounds are a few units of each format's rounding.
RELATIVE_TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2, "fp16": 4e-3}
# R~ of a post batched with longer posts against the same post alone, absolute (R~ is O(1), at most about 2, after
# the post-LN layers; its pooling runs in fp32). Padding changes the shapes of the matrix products, so bf16 and fp16
# round the same sums differently: one rounding of a value near 2 is up to 4e-3 in bf16 and 5e-4 in fp16 (measured
# on the small set: 1.5e-3 and 2e-4).
REPRESENTATION_PADDING_TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 1e-3}
# The attention rows of the same comparison: computed in fp32 in every precision, from layer inputs that carry the
# rounding above (measured: 8e-6 in bf16, 2e-6 in fp16).
ATTENTION_PADDING_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-4, "fp16": 1e-4}
