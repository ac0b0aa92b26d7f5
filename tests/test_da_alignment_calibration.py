"""Geodesic correlation alignment and progressive domain calibration (SqueezeSegV2 sec. III-D, III-E)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from domain_adapt.alignment import (
    correlation_alignment_loss,
    log_euclidean_distance,
    output_covariance,
    spd_log,
)
from domain_adapt.calibration import batchnorm_layers_in_order, progressive_domain_calibration


def test_spd_log_of_a_diagonal_matrix_is_the_log_of_its_entries():
    m = torch.diag(torch.tensor([1.0, math.e, math.e**2], dtype=torch.float64))
    assert torch.allclose(spd_log(m), torch.diag(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)), atol=1e-12)


def test_log_euclidean_distance_hand_computed():
    # logm(a) - logm(b) = diag(log 4, 0) -> squared Frobenius (log 4)^2, / (4 * 2^2)
    a = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    b = torch.eye(2, dtype=torch.float64)
    assert log_euclidean_distance(a, b).item() == pytest.approx(math.log(4.0) ** 2 / 16)
    assert log_euclidean_distance(a, a).item() == pytest.approx(0.0, abs=1e-14)
    # invariant under a rotation applied to both (a geodesic distance on SPD matrices is)
    r = torch.tensor([[math.cos(0.3), -math.sin(0.3)], [math.sin(0.3), math.cos(0.3)]], dtype=torch.float64)
    assert log_euclidean_distance(r @ a @ r.T, r @ b @ r.T).item() == pytest.approx(math.log(4.0) ** 2 / 16)


def test_output_covariance_uses_only_valid_pixels():
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0] = torch.tensor([1.0, -1.0, 100.0, 7.0])
    logits[0, 1, 0] = torch.tensor([2.0, -2.0, -50.0, 3.0])
    mask = torch.tensor([[[True, True, False, False]]])
    cov = output_covariance(logits, mask, eps=0.0)
    # two samples (1, 2) and (-1, -2): mean 0, unbiased covariance [[2, 4], [4, 8]]
    assert torch.allclose(cov, torch.tensor([[2.0, 4.0], [4.0, 8.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 2 valid pixels"):
        output_covariance(logits, torch.tensor([[[True, False, False, False]]]))
    with pytest.raises(ValueError, match="mask must be"):
        output_covariance(logits, torch.ones(1, 2, 4, dtype=torch.bool))


def test_alignment_loss_falls_when_trained_and_moves_target_outputs_toward_the_source():
    torch.manual_seed(0)
    source = torch.randn(4, 3, 8, 8)
    source[:, 0] *= 3.0  # the source's outputs: one dominant, correlated class
    source[:, 1] += 0.8 * source[:, 0]
    target_in = torch.randn(4, 3, 8, 8)
    head = nn.Conv2d(3, 3, 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = correlation_alignment_loss(source, head(target_in))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert torch.isfinite(torch.tensor(losses)).all()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3)
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.head(torch.relu(self.bn2(self.conv2(x))))


def test_progressive_calibration_gives_each_layer_the_statistics_of_its_target_inputs():
    torch.manual_seed(1)
    net = _Net().eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    target = [torch.randn(3, 2, 6, 6) * 2.0 + 1.5 for _ in range(3)]  # a shifted, wider "real" domain
    names = progressive_domain_calibration(net, lambda: iter(target))
    assert names == ["bn1", "bn2"]
    assert not net.training
    # the oracle: inputs of each BN in eval mode after calibration, stacked, torch's own mean and unbiased var
    captured = {"bn1": [], "bn2": []}
    hooks = [getattr(net, n).register_forward_pre_hook(lambda m, i, n=n: captured[n].append(i[0])) for n in captured]
    with torch.no_grad():
        for batch in target:
            net(batch)
    for h in hooks:
        h.remove()
    for name in ("bn1", "bn2"):
        x = torch.cat(captured[name]).transpose(0, 1).reshape(getattr(net, name).num_features, -1).double()
        bn = getattr(net, name)
        assert torch.allclose(bn.running_mean.double(), x.mean(dim=1), atol=1e-5)
        assert torch.allclose(bn.running_var.double(), x.var(dim=1, unbiased=True), rtol=1e-5, atol=1e-6)
    # no weight moved
    for k, v in net.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k


def test_progressive_differs_from_all_at_once_and_needs_data():
    torch.manual_seed(2)
    net = _Net()
    with torch.no_grad():
        net.bn1.running_mean.fill_(5.0)  # stale source statistics upstream
    target = [torch.randn(2, 2, 5, 5) + 3.0]
    order = batchnorm_layers_in_order(net, target[0])
    assert [n for n, _ in order] == ["bn1", "bn2"]
    # AdaBN-style: bn2's statistics estimated while bn1 still normalises with the stale mean
    stale = {}
    h = net.bn2.register_forward_pre_hook(lambda m, i: stale.setdefault("x", i[0]))
    with torch.no_grad():
        net.eval()(target[0])
    h.remove()
    progressive_domain_calibration(net, lambda: iter(target))
    stale_mean = stale["x"].transpose(0, 1).reshape(3, -1).mean(dim=1)
    assert not torch.allclose(net.bn2.running_mean, stale_mean, atol=1e-3)
    with pytest.raises(ValueError, match="at least one target batch"):
        progressive_domain_calibration(net, lambda: iter([]))
