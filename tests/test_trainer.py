"""The shared trainer and checkpoints: exact resume, data-parallel equivalence, weight decay, clipping, schedules,
best.pt, metrics.csv, corrupt and interrupted checkpoints. Tiny models and datasets, CPU only."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import os
import socket
import sys
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

import squeeze.train as trainer_module
from squeeze.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from squeeze.errors import DataError
from squeeze.rng import sample_rng
from squeeze.train import (
    StepSampler,
    TrainConfig,
    build_optimizer,
    build_param_groups,
    clip_gradients,
    lr_factor,
    train,
)


# --------------------------------------------------------------------------------------------- tiny fixtures
class AugmentedRegression(Dataset):
    """Noisy linear regression whose augmentation (noise + sign flip) follows the trainer's dataset contract."""

    def __init__(self, n: int = 12, seed: int = 7):
        data = np.random.default_rng(123)
        self.x = data.standard_normal((n, 4)).astype(np.float32)  # (n, 4)
        self.y = (self.x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)).astype(np.float32)  # (n,)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, self.epoch, index)
        x = self.x[index] + 0.1 * rng.standard_normal(4).astype(np.float32)
        y = self.y[index]
        if rng.random() < 0.5:  # flip augmentation: the target is odd in x
            x, y = -x, -y
        return {"x": torch.from_numpy(x), "y": torch.tensor(y)}


class TinyNet(nn.Module):
    """Two linear layers with LayerNorm and dropout; train mode returns two mean losses."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.fc1 = nn.Linear(4, 16)
        self.norm = nn.LayerNorm(16)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        out = self.fc2(self.drop(torch.relu(self.norm(self.fc1(x))))).squeeze(-1)  # (B,)
        if not self.training:
            return out
        return {"loss_mse": ((out - y) ** 2).mean(), "loss_l1": 0.1 * (out - y).abs().mean()}


VAL_X = torch.from_numpy(np.random.default_rng(5).standard_normal((8, 4)).astype(np.float32))


def evaluate(model: nn.Module) -> dict[str, float]:
    """An evaluation that also draws random numbers: the trainer must keep them out of the training streams."""
    torch.rand(7)
    np.random.rand(3)  # noqa: NPY002 (deliberately touches the legacy global state)
    pred = model(VAL_X)
    return {"neg_mse": -float((pred ** 2).mean()), "mean": float(pred.mean())}


BASE = TrainConfig(lr=0.05, momentum=0.9, weight_decay=1e-3, schedule="step", lr_step_size=4, lr_gamma=0.5,
                   max_steps=10, batch_size=4, grad_clip_norm=1.0, grad_clip_mode="per_parameter", eval_every=5,
                   checkpoint_every=5, log_every=1, seed=7, device="cpu", progress=False)


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    hidden: int = 16  # width of the hidden layer
    dropout: float = 0.2  # dropout probability


def run(out: Path, cfg: TrainConfig = BASE, *, init_seed: int = 0, dropout: float = 0.2, n: int = 12,
        **kwargs: Any) -> tuple[nn.Module, Any]:
    torch.manual_seed(init_seed)
    model = TinyNet(dropout)
    kwargs.setdefault("evaluate", evaluate)
    kwargs.setdefault("best_metric", "neg_mse" if kwargs["evaluate"] is evaluate else None)
    result = train(model, AugmentedRegression(n, seed=cfg.seed), cfg, out, model_config=TinyConfig(dropout=dropout),
                   class_names=["value"], **kwargs)
    return model, result


def assert_same_state(a: Mapping[str, Any], b: Mapping[str, Any], where: str = "") -> None:
    """Bitwise equality of nested dicts/lists of tensors and numbers."""
    assert type(a) is type(b) or (isinstance(a, Mapping) and isinstance(b, Mapping)), where
    if isinstance(a, Mapping):
        assert set(a) == set(b), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 10-step run (checkpoints at 5 and 10, evaluation at 5 and 10)."""
    out = tmp_path_factory.mktemp("reference")
    run(out)
    return out


# ---------------------------------------------------------------------------------------------- exact resume
def test_resume_is_bitwise_exact(reference: Path, tmp_path: Path) -> None:
    """5 steps + resume for 5 more == 10 steps: weights, optimiser, best.pt and metrics.csv, bit for bit.

    Step 5 falls mid-epoch (12 samples, batch 4: 3 batches an epoch), the model has dropout, the dataset augments
    and evaluate() draws random numbers, so this needs the data position, all RNG states and RNG isolation.
    """
    first = tmp_path / "split"
    run(first, dataclasses.replace(BASE, max_steps=5))
    assert load_checkpoint(first / "last.pt")["train_state"]["step"] == 5
    _, result = run(first, BASE, init_seed=99, resume=True)  # another init: the weights must come from last.pt
    assert result.step == 10

    ref, got = load_checkpoint(reference / "last.pt"), load_checkpoint(first / "last.pt")
    assert_same_state(ref["state_dict"], got["state_dict"], "state_dict")
    assert_same_state(ref["train_state"]["optimizer"], got["train_state"]["optimizer"], "optimizer")
    assert_same_state(ref["train_state"]["rng"], got["train_state"]["rng"], "rng")
    assert_same_state(load_checkpoint(reference / "best.pt")["state_dict"],
                      load_checkpoint(first / "best.pt")["state_dict"], "best")
    assert (reference / "metrics.csv").read_text() == (first / "metrics.csv").read_text()


def test_resume_needs_the_saved_rng_states(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The resume test is not vacuous: without restoring RNG states (dropout) the result differs, and so does
    another seed (sample order, augmentation, dropout)."""
    out = tmp_path / "norng"
    run(out, dataclasses.replace(BASE, max_steps=5))
    monkeypatch.setattr(trainer_module, "_restore_rng", lambda state, cuda: None)
    run(out, BASE, resume=True)
    ref = load_checkpoint(reference / "last.pt")["state_dict"]
    assert not torch.equal(load_checkpoint(out / "last.pt")["state_dict"]["fc1.weight"], ref["fc1.weight"])
    monkeypatch.undo()

    other = tmp_path / "seed"
    run(other, dataclasses.replace(BASE, max_steps=10, seed=8))
    assert not torch.equal(load_checkpoint(other / "last.pt")["state_dict"]["fc1.weight"], ref["fc1.weight"])


def test_crash_then_resume_has_no_duplicate_rows(reference: Path, tmp_path: Path) -> None:
    """A crash after step 6 (last.pt at 4) then resume: rows 5-6 are rewritten once, the result is exact."""
    cfg = dataclasses.replace(BASE, checkpoint_every=4)
    calls = {"n": 0}

    def crash_on_seventh(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 7:
            raise RuntimeError("injected crash")
        return batch

    out = tmp_path / "crash"
    with pytest.raises(RuntimeError, match="injected crash"):
        run(out, cfg, batch_to_inputs=crash_on_seventh)
    assert [int(line.split(",")[0]) for line in (out / "metrics.csv").read_text().splitlines()[1:]] == list(
        range(1, 7))
    assert load_checkpoint(out / "last.pt")["train_state"]["step"] == 4

    run(out, cfg, resume=True)
    steps = [int(line.split(",")[0]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))
    assert (out / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    assert_same_state(load_checkpoint(reference / "last.pt")["state_dict"],
                      load_checkpoint(out / "last.pt")["state_dict"])


def test_adamw_cosine_warmup_resume_after_crash_is_exact(tmp_path: Path) -> None:
    cfg = dataclasses.replace(BASE, optimizer="adamw", lr=1e-2, schedule="cosine", warmup_steps=3, max_steps=8,
                              grad_clip_mode="global", checkpoint_every=3, eval_every=4)
    run(tmp_path / "whole", cfg)

    def crash_at_five(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        crash_at_five.calls += 1  # type: ignore[attr-defined]
        if crash_at_five.calls == 5:  # type: ignore[attr-defined]
            raise KeyboardInterrupt  # a Ctrl-C during step 5; last.pt is at step 3
        return batch

    crash_at_five.calls = 0  # type: ignore[attr-defined]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", cfg, batch_to_inputs=crash_at_five)
    run(tmp_path / "split", cfg, resume=True)
    assert_same_state(load_checkpoint(tmp_path / "whole" / "last.pt")["state_dict"],
                      load_checkpoint(tmp_path / "split" / "last.pt")["state_dict"])
    assert (tmp_path / "whole" / "metrics.csv").read_text() == (tmp_path / "split" / "metrics.csv").read_text()


def test_data_workers_give_the_same_run(tmp_path: Path) -> None:
    """Augmentation drawn from sample_rng(seed, epoch, index) is the same in DataLoader worker processes."""
    cfg = dataclasses.replace(BASE, max_steps=4, eval_every=100)
    run(tmp_path / "w0", cfg, evaluate=None)
    run(tmp_path / "w2", dataclasses.replace(cfg, num_workers=2), evaluate=None)
    assert_same_state(load_checkpoint(tmp_path / "w0" / "last.pt")["state_dict"],
                      load_checkpoint(tmp_path / "w2" / "last.pt")["state_dict"])


# ---------------------------------------------------------------------------------------------- data parallel
def test_sampler_ranks_partition_the_single_process_batches() -> None:
    single = StepSampler(22, 8, seed=3)
    ranks = [StepSampler(22, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for epoch in range(3):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        one = list(single)
        assert len(one) == 16 and len(set(one)) == 16  # 2 whole batches, 6 samples dropped
        parts = [list(s) for s in ranks]
        for step in range(2):
            assert parts[0][step * 4:(step + 1) * 4] + parts[1][step * 4:(step + 1) * 4] == one[step * 8:(step + 1) * 8]
    single.set_epoch(0)
    epoch0 = list(single)
    single.set_epoch(1)
    assert list(single) != epoch0
    single.set_epoch(0, start_batch=1)
    assert list(single) == epoch0[8:] and len(single) == 8


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# fork reuses the parent's imported torch (spawn re-imports it, about 5 s per child on 2 busy cores)
START = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
DDP_CFG = dataclasses.replace(BASE, max_steps=6, batch_size=8, eval_every=100, checkpoint_every=100, log_every=2)


def _ddp_worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    run(Path(out), DDP_CFG, dropout=0.0, n=20, evaluate=None)


def test_ddp_two_processes_match_one_process(tmp_path: Path) -> None:
    """2 gloo processes with 4 samples each == 1 process with 8 (same samples per step, averaged gradients)."""
    single, multi = tmp_path / "single", tmp_path / "ddp"
    run(single, DDP_CFG, dropout=0.0, n=20, evaluate=None)
    context = mp.start_processes(_ddp_worker, args=(2, _free_port(), str(multi)), nprocs=2, join=False,
                                 start_method=START)
    deadline = time.monotonic() + 120  # never hang CI: a stuck collective fails the test instead
    while not context.join(timeout=1):  # raises ProcessRaisedException if a rank fails
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("DDP ranks did not finish within 120 s")

    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(multi / "last.pt")
    assert b["train_state"]["world_size"] == 2 and len(b["train_state"]["rng"]) == 2
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    assert not torch.equal(a["state_dict"]["fc1.weight"], TinyNet(0.0).fc1.weight)  # it did train
    rows_a = (single / "metrics.csv").read_text().splitlines()
    rows_b = (multi / "metrics.csv").read_text().splitlines()
    assert rows_a[0] == rows_b[0] and len(rows_a) == len(rows_b) == 4  # header + steps 2, 4, 6
    for line_a, line_b in zip(rows_a[1:], rows_b[1:], strict=True):
        np.testing.assert_allclose([float(v) for v in line_a.split(",")], [float(v) for v in line_b.split(",")],
                                   rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in multi.iterdir()) == ["config.json", "last.pt", "metrics.csv"]  # rank 0 only
    assert json.loads((multi / "config.json").read_text())["per_process_batch"] == 4


# ---------------------------------------------------------------------------------------- optimiser details
class Decayed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3)
        self.stem.requires_grad_(False)  # frozen, like SqueezeDet's conv1
        self.conv = nn.Conv2d(2, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)
        self.compat = nn.Parameter(torch.zeros(4, 4))  # a CRF compatibility matrix: 2-D, but exempt

    def no_weight_decay(self) -> set[str]:
        return {"compat"}


def test_weight_decay_only_on_kernels() -> None:
    model = Decayed()
    groups = build_param_groups(model, 5e-4)
    by_decay = {g["weight_decay"]: set(g["param_names"]) for g in groups}
    assert by_decay == {5e-4: {"conv.weight", "fc.weight"},
                        0.0: {"conv.bias", "bn.weight", "bn.bias", "fc.bias", "compat"}}
    optimizer = build_optimizer(model, dataclasses.replace(BASE, weight_decay=5e-4))
    named = {id(p): n for n, p in model.named_parameters()}
    seen = {named[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert seen == {"conv.weight": 5e-4, "fc.weight": 5e-4, "conv.bias": 0.0, "bn.weight": 0.0, "bn.bias": 0.0,
                    "fc.bias": 0.0, "compat": 0.0}  # stem.* (frozen) is not optimised at all
    # weight_decay only moves the decayed tensors when the loss gradient is zero
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.compat.fill_(1.0)
        before["compat"] = model.compat.detach().clone()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"conv.weight", "fc.weight"}

    class BadNames(Decayed):
        def no_weight_decay(self) -> set[str]:
            return {"compatt"}

    with pytest.raises(ValueError, match="compatt"):
        build_param_groups(BadNames(), 1e-4)


def test_model_param_groups_method_is_preferred() -> None:
    class Custom(Decayed):
        def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
            return [{"params": list(self.parameters()), "weight_decay": 2 * weight_decay, "lr": 0.5}]

    optimizer = build_optimizer(Custom(), dataclasses.replace(BASE, weight_decay=1e-4))
    assert len(optimizer.param_groups) == 1
    group = optimizer.param_groups[0]
    assert group["weight_decay"] == 2e-4 and group["base_lr"] == 0.5
    assert len(group["params"]) == 7  # the 9 parameters minus the frozen stem's 2


def test_clipping_per_parameter_and_global() -> None:
    def params() -> list[torch.Tensor]:
        a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
        a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.3, 0.4])  # norms 5 and 0.5
        return [a, b]

    total = float(np.sqrt(25.25))
    a, b = params()
    assert clip_gradients([a, b], 1.0, "per_parameter") == pytest.approx(total)
    torch.testing.assert_close(a.grad, torch.tensor([0.6, 0.8]))  # clipped to norm 1
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]))  # already below 1: untouched

    a, b = params()
    assert clip_gradients([a, b], 1.0, "global") == pytest.approx(total)
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0]) / total)  # both scaled by the same factor
    torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]) / total)
    assert float(torch.linalg.vector_norm(torch.cat([a.grad, b.grad]))) == pytest.approx(1.0, rel=1e-5)

    a, b = params()
    assert clip_gradients([a, b], None, "global") == pytest.approx(total)
    torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0]))


def test_step_schedule_halves_at_the_right_step(reference: Path) -> None:
    cfg = dataclasses.replace(BASE, lr_step_size=10_000, max_steps=25_000)
    assert [lr_factor(cfg, s) for s in (0, 9_999, 10_000, 19_999, 20_000)] == [1, 1, 0.5, 0.5, 0.25]
    warm = dataclasses.replace(cfg, warmup_steps=4)
    assert [lr_factor(warm, s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    cosine = dataclasses.replace(cfg, schedule="cosine", max_steps=100)
    assert lr_factor(cosine, 0) == 1.0 and lr_factor(cosine, 50) == pytest.approx(0.5)
    assert lr_factor(cosine, 100) == pytest.approx(0.0, abs=1e-12)
    # The reference run (lr 0.05, lr_step_size 4): updates 1-4 at 0.05, 5-8 at 0.025, 9-10 at 0.0125.
    lines = (reference / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("lr")
    assert [float(line.split(",")[column]) for line in lines[1:]] == [0.05] * 4 + [0.025] * 4 + [0.0125] * 2


@pytest.mark.parametrize(("mode", "best_step", "best"), [("max", 6, 0.7), ("min", 8, 0.1)])
def test_best_checkpoint_follows_the_metric(tmp_path: Path, mode: str, best_step: int, best: float) -> None:
    scores = iter([0.5, 0.2, 0.7, 0.1, 0.6])  # at steps 2, 4, 6, 8, 10

    def scripted(model: nn.Module) -> dict[str, float]:
        return {"score": next(scores)}

    cfg = dataclasses.replace(BASE, eval_every=2, checkpoint_every=2)
    _, result = run(tmp_path, cfg, evaluate=scripted, best_metric="score", best_mode=mode)
    best_ckpt = load_checkpoint(tmp_path / "best.pt")
    assert best_ckpt["train_state"]["step"] == best_step and best_ckpt["train_state"]["best_value"] == best
    assert result.best_value == best and result.best_checkpoint == tmp_path / "best.pt"
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["best_value"] == best
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("eval/score")
    assert [line.split(",")[column] for line in lines[1:]] == ["", "0.5", "", "0.2", "", "0.7", "", "0.1", "", "0.6"]


# ---------------------------------------------------------------------------------------- checkpoint files
def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, model_state=TinyNet().state_dict(), config=TinyConfig(), class_names=["value"],
                           train_state={"step": 3})


class NotPlainData:
    """Something torch.save pickles but weights_only refuses to load."""

    value = 1


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "missing", "bitflip", "bare_state_dict",
                                    "object"])
def test_corrupt_checkpoint_raises_checkpoint_error(tmp_path: Path, damage: str) -> None:
    path = _checkpoint(tmp_path / "last.pt")
    data = path.read_bytes()
    torch.manual_seed(0)
    if damage == "bitflip":  # one flipped bit inside a weight tensor: torch alone would load a wrong number
        weight = TinyNet().state_dict()["fc1.weight"].numpy().tobytes()
        at = data.index(weight) + 5
        path.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1:])
        with pytest.raises(CheckpointError, match="CRC-32 mismatch"):
            load_checkpoint(path)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "missing":
        path.unlink()
    elif damage == "bare_state_dict":
        torch.save(TinyNet().state_dict(), path)
    else:
        torch.save({"format": "squeeze-checkpoint", "thing": NotPlainData()}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and isinstance(info.value, DataError) and isinstance(info.value, ValueError)


def test_resume_from_a_corrupt_last_checkpoint_names_it(tmp_path: Path) -> None:
    run(tmp_path, dataclasses.replace(BASE, max_steps=2), evaluate=None)
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="last.pt"):
        run(tmp_path, BASE, evaluate=None, resume=True)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        run(tmp_path / "elsewhere", BASE, evaluate=None, resume=True)
    with pytest.raises(FileExistsError, match="resume=True"):
        run(tmp_path, BASE, evaluate=None)  # a fresh run never overwrites an existing run's last.pt


def test_crash_during_save_keeps_the_previous_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save dies half-way through writing step 4's last.pt: step 2's file stays, byte for byte."""
    real_save: Callable[..., None] = torch.save
    calls = {"n": 0}

    def dying_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"PK\x03\x04 half a zip archive")
            raise OSError("No space left on device (injected)")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dying_save)
    cfg = dataclasses.replace(BASE, checkpoint_every=2)
    with pytest.raises(OSError, match="injected"):
        run(tmp_path, cfg, evaluate=None)
    saved = (tmp_path / "last.pt").read_bytes()
    assert load_checkpoint(tmp_path / "last.pt")["train_state"]["step"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the half file was removed

    with pytest.raises(OSError, match="injected"):  # the same through save_checkpoint directly
        calls["n"] = 1
        _checkpoint(tmp_path / "last.pt")
    assert (tmp_path / "last.pt").read_bytes() == saved

    monkeypatch.undo()
    _, result = run(tmp_path, cfg, evaluate=None, resume=True)  # and the run continues from step 2
    assert result.step == 10


def test_checkpoints_load_weights_only(reference: Path, tmp_path: Path) -> None:
    raw = torch.load(reference / "last.pt", weights_only=True)
    assert raw["config"] == {"hidden": 16, "dropout": 0.2} and raw["class_names"] == ["value"]
    state = raw["train_state"]
    assert state["step"] == 10 and state["epoch"] == 3 and state["batch_in_epoch"] == 1
    rng = state["rng"][0]
    assert rng["torch"].dtype == torch.uint8 and rng["numpy"]["keys"].shape == (624,)
    assert state["train_config"]["batch_size"] == 4 and state["best_metric"] == "neg_mse"
    model = TinyNet()
    model.load_state_dict(raw["state_dict"])

    with pytest.raises(TypeError, match=r"config\['when'\]"):
        save_checkpoint(tmp_path / "x.pt", model_state={}, config={"when": object()}, class_names=[])
    assert not (tmp_path / "x.pt").exists()

    # numpy scalars (numpy.float64 is a float subclass) are stored as Python numbers: loadable weights-only.
    path = save_checkpoint(tmp_path / "np.pt", model_state={}, class_names=[],
                           config={"anchor": (np.float64(12.5), np.float32(3.0)), "k": np.int64(9)})
    config = load_checkpoint(path)["config"]
    assert config == {"anchor": (12.5, 3.0), "k": 9} and type(config["anchor"][0]) is float


def test_run_folder_contents(reference: Path) -> None:
    info = json.loads((reference / "config.json").read_text())
    assert info["train"]["lr"] == 0.05 and info["model"] == {"hidden": 16, "dropout": 0.2}
    assert info["class_names"] == ["value"] and "git_commit" in info and info["world_size"] == 1
    assert info["git_commit"] is None or len(info["git_commit"]) == 40
    header = (reference / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["step", "epoch", "lr", "loss", "grad_norm", "loss_mse", "loss_l1", "eval/neg_mse", "eval/mean"]
    has_tb = importlib.util.find_spec("tensorboard") is not None
    assert (reference / "tb").is_dir() == has_tb  # skipped gracefully without the optional package


def test_tensorboard_receives_every_row_and_purges_on_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With tensorboard installed (faked here: the package is an optional extra), rows go to out_dir/tb too."""
    writers: list[dict[str, Any]] = []

    class FakeWriter:
        def __init__(self, log_dir: str, purge_step: int | None = None):
            self.record = {"log_dir": log_dir, "purge_step": purge_step, "scalars": [], "closed": False}
            writers.append(self.record)

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.record["scalars"].append((tag, step))

        def close(self) -> None:
            self.record["closed"] = True

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    cfg = dataclasses.replace(BASE, max_steps=4, log_every=2, eval_every=4)
    run(tmp_path, cfg)
    run(tmp_path, dataclasses.replace(cfg, max_steps=6), resume=True)
    first, second = writers
    assert first["log_dir"] == str(tmp_path / "tb") and first["purge_step"] is None and first["closed"]
    assert ("train/loss", 2) in first["scalars"] and ("eval/neg_mse", 4) in first["scalars"]
    assert ("train/lr", 4) in first["scalars"] and ("train/loss_mse", 4) in first["scalars"]
    assert second["purge_step"] == 5 and {step for _, step in second["scalars"]} == {6}


def test_bad_losses_are_reported(tmp_path: Path) -> None:
    class NaNNet(TinyNet):
        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
            losses = super().forward(x, y)
            return {"loss_mse": losses["loss_mse"] * float("nan")}

    class TupleNet(TinyNet):
        def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
            return (x.sum(),)

    cfg = dataclasses.replace(BASE, max_steps=2)
    with pytest.raises(FloatingPointError, match="step 1"):
        train(NaNNet(), AugmentedRegression(), cfg, tmp_path / "nan", model_config={}, class_names=[])
    assert not (tmp_path / "nan" / "last.pt").exists()
    with pytest.raises(TypeError, match="dict of named scalar losses"):
        train(TupleNet(), AugmentedRegression(), cfg, tmp_path / "tuple", model_config={}, class_names=[])
    with pytest.raises(ValueError, match="fewer than one global batch"):
        train(TinyNet(), AugmentedRegression(n=3), cfg, tmp_path / "small", model_config={}, class_names=[])
    with pytest.raises(ValueError, match="grad_clip_mode"):
        TrainConfig(grad_clip_mode="per_layer")  # type: ignore[arg-type]


def test_time_limit_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    cfg = dataclasses.replace(BASE, time_limit_s=1e-9)
    _, result = run(tmp_path / "a", cfg)
    assert result.step == 1  # the limit is checked after each step: exactly one ran
    assert load_checkpoint(result.last_checkpoint)["train_state"]["step"] == 1
    _, resumed = run(tmp_path / "a", dataclasses.replace(BASE), resume=True)
    assert resumed.step == BASE.max_steps
    with pytest.raises(ValueError, match="time_limit_s"):
        dataclasses.replace(BASE, time_limit_s=0.0)


def test_time_clock_runs_the_schedule_over_the_time_budget(tmp_path: Path) -> None:
    # A budget of a day: by the clock the cosine has barely moved after 10 steps, by steps it has ended.
    by_time = dataclasses.replace(BASE, schedule="cosine", time_limit_s=86_400.0, schedule_clock="time")
    _, result = run(tmp_path / "slow", by_time)
    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "slow" / "metrics.csv").open()) if r["lr"]]
    assert result.step == BASE.max_steps and min(lrs) > 0.999 * BASE.lr
    assert load_checkpoint(result.last_checkpoint)["train_state"]["train_seconds"] > 0
    # A budget already spent after the first step: the schedule is at its end, the lr 0, and the run stops.
    _, result = run(tmp_path / "spent", dataclasses.replace(by_time, time_limit_s=1e-9))
    rows = list(csv.DictReader((tmp_path / "spent" / "metrics.csv").open()))
    assert result.step == 1 and float(rows[0]["lr"]) == 0.0
    assert lr_factor(by_time, step=3, position=by_time.max_steps / 2) == pytest.approx(0.5)
    assert lr_factor(BASE, step=0, position=4.5) == 0.5  # staircase at the position, not the step
    with pytest.raises(ValueError, match="needs a time_limit_s"):
        dataclasses.replace(BASE, schedule_clock="time")


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    model, result = run(tmp_path / "bf16", dataclasses.replace(BASE, bf16=True))
    assert result.step == BASE.max_steps and math.isfinite(result.losses["loss"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32; only compute is bf16
