"""The CPU dropout: same distribution as nn.Dropout (drop rate, scale, unbiased), seeded, and used everywhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clmlf.config import build_config
from clmlf.dropout import FastCpuDropout, use_fast_cpu_dropout
from clmlf.model import CLMLF

COUNT = 1_000_000
# Binomial standard deviation of a drop fraction over COUNT elements at p = 0.5 is 5e-4; 4e-3 is 8 of them.
FRACTION_TOLERANCE = 4e-3


def dropped(p: float, shape=(COUNT,)) -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.ones(shape, requires_grad=True)
    outputs = FastCpuDropout(p).train()(inputs)
    return inputs, outputs


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_scale_and_expectation_match_the_setting(p):
    torch.manual_seed(0)
    _, outputs = dropped(p)
    zeros = outputs == 0
    assert zeros.float().mean().item() == pytest.approx(p, abs=FRACTION_TOLERANCE)
    # Kept values are scaled by the inverse keep rate (p on the 2^-16 grid), so the output is unbiased.
    assert torch.unique(outputs[~zeros]).tolist() == pytest.approx([1 / (1 - round(p * 2**16) / 2**16)])
    assert outputs.mean().item() == pytest.approx(1.0, abs=2 * FRACTION_TOLERANCE)


def test_every_16_bit_lane_of_a_64_bit_draw_drops_at_the_same_rate():
    # Four mask values come from one 64-bit draw; a draw missing its sign bit would never drop the fourth.
    torch.manual_seed(1)
    _, outputs = dropped(0.2, shape=(COUNT // 4, 4))
    for lane in range(4):
        assert (outputs[:, lane] == 0).float().mean().item() == pytest.approx(0.2, abs=FRACTION_TOLERANCE)


def test_gradient_is_the_same_mask():
    torch.manual_seed(2)
    inputs, outputs = dropped(0.25, shape=(64, 7, 33))
    outputs.sum().backward()
    assert torch.equal(inputs.grad, outputs.detach())


def test_seeded_like_the_rest_of_training():
    layer = FastCpuDropout(0.1).train()
    inputs = torch.ones(10_000)
    torch.manual_seed(3)
    first = layer(inputs)
    torch.manual_seed(3)
    assert torch.equal(layer(inputs), first)
    assert not torch.equal(layer(inputs), first)


def test_identity_in_eval_and_at_zero_and_zeros_at_one():
    inputs = torch.randn(5, 6)
    assert FastCpuDropout(0.5).eval()(inputs) is inputs
    assert FastCpuDropout(0.0).train()(inputs) is inputs
    assert torch.equal(FastCpuDropout(1.0).train()(inputs), torch.zeros_like(inputs))


def test_bfloat16_activations_keep_their_dtype():
    torch.manual_seed(4)
    outputs = FastCpuDropout(0.1).train()(torch.ones(100_000, dtype=torch.bfloat16))
    assert outputs.dtype == torch.bfloat16
    assert (outputs == 0).float().mean().item() == pytest.approx(0.1, abs=0.01)


def test_the_model_uses_it_in_every_dropout_including_the_text_encoders():
    model = CLMLF(build_config("demo", "tiny").model, classes=3)
    dropouts = [module for module in model.modules() if isinstance(module, nn.Dropout)]
    assert dropouts and all(type(module) is FastCpuDropout for module in dropouts)
    assert any(name.startswith("text_encoder.") for name, module in model.named_modules() if module in dropouts)
    # The probabilities are the configured ones: the fusion layers' and the encoder's own.
    assert {module.p for module in dropouts} == {model.config.dropout, model.text_encoder.config.hidden_dropout_prob}


def test_replacing_keeps_p_and_leaves_other_modules_alone():
    tree = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.2), nn.Sequential(nn.Dropout(0.4), nn.ReLU()))
    use_fast_cpu_dropout(tree)
    assert type(tree[0]) is nn.Linear and type(tree[2][1]) is nn.ReLU
    assert (type(tree[1]), tree[1].p) == (FastCpuDropout, 0.2)
    assert (type(tree[2][0]), tree[2][0].p) == (FastCpuDropout, 0.4)
