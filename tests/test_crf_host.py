"""squeeze.crf: SqueezeSeg's recurrent CRF on the host (numba), by hand, against the torch module, and as a user sees
it (a lone pixel on a surface joins its neighbours; across a depth edge it does not)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from squeeze.crf import CrfParams, apply_crf, gaussian_taps, gaussian_window, half_offsets
from squeeze.jit import exp_nonpositive
from squeezeseg.crf import RecurrentCRF


def params(**overrides) -> CrfParams:
    k = 4
    base = dict(mode="textbook", iterations=3, window=(3, 5), theta_a=(0.9, 0.9, 0.6, 0.6),
                bilateral_theta_a=(0.9, 0.9, 0.6, 0.6), theta_r=(0.015, 0.015, 0.01, 0.01),
                angular_compat=tuple(tuple(0.02 * (i != j) for j in range(k)) for i in range(k)),
                bilateral_compat=tuple(tuple(0.1 * (i != j) for j in range(k)) for i in range(k)))
    return CrfParams(**{**base, **overrides})


def test_textbook_step_by_hand():
    """One 1 x 3 row, two classes, a 1 x 3 window (neighbours left and right), one mean-field step, worked out
    with the textbook equations: out_o(i) = logit_o(i) - sum_c M_a[c, o] ang_c(i) + M_b[c, o] bi_c(i)."""
    logits = np.array([[[2.0, 0.0, 0.0]], [[0.0, 1.0, 3.0]]], np.float32)  # (K=2, 1, 3)
    xyz = np.zeros((3, 1, 3), np.float32)
    xyz[0, 0] = (0.0, 0.01, 0.5)  # pixels 0 and 1 close, pixel 2 far (its bilateral weight underflows to 0)
    mask = np.ones((1, 3), bool)
    a, b = 0.5, 1.0
    p = CrfParams(mode="textbook", iterations=1, window=(1, 3), theta_a=(1.0, 1.0), bilateral_theta_a=(1.0, 1.0),
                  theta_r=(0.01, 0.01), angular_compat=((0.0, a), (a, 0.0)), bilateral_compat=((0.0, b), (b, 0.0)))
    out = apply_crf(logits, xyz, mask, p)

    def softmax(v):
        e = [math.exp(x - max(v)) for x in v]
        return [x / sum(e) for x in e]

    q = [softmax([logits[0, 0, i], logits[1, 0, i]]) for i in range(3)]  # q[i][c]
    g = math.exp(-0.5)  # spatial Gaussian one column away, theta_a = 1
    w01 = math.exp(-0.01**2 / (2 * 0.01**2))  # bilateral weight of pixels 0 and 1 = exp(-0.5)
    ang = {0: [g * q[1][c] for c in (0, 1)], 1: [g * (q[0][c] + q[2][c]) for c in (0, 1)],
           2: [g * q[1][c] for c in (0, 1)]}
    bi = {0: [g * w01 * q[1][c] for c in (0, 1)], 1: [g * w01 * q[0][c] for c in (0, 1)], 2: [0.0, 0.0]}
    for i in range(3):
        expect = [logits[0, 0, i] - (a * ang[i][1] + b * bi[i][1]), logits[1, 0, i] - (a * ang[i][0] + b * bi[i][0])]
        np.testing.assert_allclose(out[:, 0, i], expect, rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["textbook", "reference"])
@pytest.mark.parametrize("bilateral_theta_a", [(0.9, 0.9, 0.6, 0.6), (1.2, 0.9, 0.7, 0.5)])
def test_host_crf_equals_the_torch_module(mode, bilateral_theta_a):
    """Trained-looking (asymmetric) compatibilities, a smooth surface with holes, image borders: the same output."""
    torch.manual_seed(0)
    crf = RecurrentCRF(4, iterations=3, bilateral_theta_a=bilateral_theta_a, mode=mode)
    with torch.no_grad():
        crf.angular_compat.add_(torch.rand(4, 4) * 0.05)
        crf.bilateral_compat.add_(torch.rand(4, 4) * 0.3)
    h, w = 12, 40
    logits = torch.randn(1, 4, h, w) * 3
    xyz = torch.randn(1, 3, h, w).cumsum(-1) * 0.004  # neighbours 0-0.02 apart: bilateral weights of all sizes
    mask = torch.rand(1, h, w) > 0.2
    with torch.no_grad():
        expect = crf(logits, xyz, mask)[0].numpy()
    p = crf.host_params()
    assert p.mode == mode and p.theta_r == (0.015, 0.015, 0.01, 0.01) and p.bilateral_theta_a == bilateral_theta_a
    out = apply_crf(logits[0].numpy(), xyz[0].numpy(), mask[0].numpy(), p)
    assert out.dtype == np.float32 and out.shape == (4, h, w)
    np.testing.assert_allclose(out, expect, rtol=0, atol=1e-5)
    one_thread = apply_crf(logits[0].numpy(), xyz[0].numpy(), mask[0].numpy(), p, threads=1)
    np.testing.assert_array_equal(one_thread, out)  # rows are independent: threads change nothing


def test_a_lone_pixel_joins_its_surface_but_not_across_a_depth_edge():
    h, w = 5, 9
    logits = np.zeros((4, h, w), np.float32)
    logits[0] = 3.0  # background all around, confidently
    logits[:, 2, 4] = (0.0, 0.2, 0.0, 0.0)  # the centre leans to car, by 0.2
    xyz = np.zeros((3, h, w), np.float32)
    xyz[0] = np.arange(w)[None, :] * 0.002  # one smooth surface (normalised units)
    mask = np.ones((h, w), bool)
    on_surface = apply_crf(logits, xyz, mask, params(iterations=1))
    assert on_surface[:, 2, 4].argmax() == 0  # the Potts pull of 14 background neighbours beats a 0.2 lean
    xyz[0, 2, 4] = 0.5  # the centre far behind: no bilateral message, the weak angular one alone
    behind = apply_crf(logits, xyz, mask, params(iterations=1))
    assert behind[:, 2, 4].argmax() == 1
    assert (on_surface.argmax(0)[mask] == 0).sum() == h * w and (behind.argmax(0) == 0).sum() == h * w - 1


def test_gaussian_window_and_taps_by_hand():
    window, thetas = (3, 5), (0.9, 0.6, 1.3)
    kernel = gaussian_window(window, thetas)  # (K, 3, 5); the torch module's kernels are these
    assert kernel.shape == (3, 3, 5) and kernel.dtype == np.float32 and (kernel[:, 1, 2] == 0).all()
    assert kernel[1, 0, 0] == np.float32(math.exp(-(1 + 4) / (2 * 0.36)))  # two columns left, one row up
    np.testing.assert_array_equal(RecurrentCRF(3, theta_a=thetas, bilateral_theta_a=thetas,
                                               theta_r=(0.01,) * 3).spatial_kernels[:, 0].numpy(), kernel)
    taps = gaussian_taps(window, thetas)
    assert half_offsets(window) == [(0, 1), (0, 2), (1, -2), (1, -1), (1, 0), (1, 1), (1, 2)]
    for m, (dr, dc) in enumerate(half_offsets(window)):
        np.testing.assert_array_equal(taps[:, m], kernel[:, 1 + dr, 2 + dc])
        np.testing.assert_array_equal(taps[:, m], kernel[:, 1 - dr, 2 - dc])
    assert taps[0, 0] == np.float32(math.exp(-1 / (2 * 0.81)))


def test_the_vectorised_exp_is_float32_exact_enough():
    x = np.linspace(-87.0, 0.0, 200_001)
    got = np.array([exp_nonpositive(np.float32(v)) for v in x[::97]], np.float64)
    rel = np.abs(got / np.exp(x[::97].astype(np.float32).astype(np.float64)) - 1)
    assert rel.max() < 2e-7
    assert exp_nonpositive(np.float32(0.0)) == 1.0 and exp_nonpositive(np.float32(-80.0)) > 1e-35


def test_bad_inputs_are_refused():
    p = params()
    logits, xyz, mask = np.zeros((4, 8, 16), np.float32), np.zeros((3, 8, 16), np.float32), np.ones((8, 16), bool)
    with pytest.raises(ValueError, match=r"logits \(K=4, H, W\), got \(3, 8, 16\)"):
        apply_crf(logits[:3], xyz, mask, p)
    with pytest.raises(ValueError, match=r"xyz \(3, H, W\) and mask \(H, W\) of the logits' \(8, 16\)"):
        apply_crf(logits, xyz[:, :4], mask, p)
    with pytest.raises(ValueError, match="CRF mode must be one of"):
        params(mode="dense")
    with pytest.raises(ValueError, match="CRF window must have two odd positive sides"):
        params(window=(3, 4))
    with pytest.raises(ValueError, match=r"CRF theta_r needs 4 positive values"):
        params(theta_r=(0.015, 0.015, 0.0, 0.01))
    with pytest.raises(ValueError, match=r"CRF bilateral_compat must be a finite 4 x 4 matrix"):
        params(bilateral_compat=((0.0, 0.1), (0.1, 0.0)))
    with pytest.raises(ValueError, match="CRF iterations must be >= 1"):
        params(iterations=0)
