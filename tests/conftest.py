"""Shared fixtures: the real KITTI frames beside the repository (skipped when absent) and tiny synthetic folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from squeeze.kitti import Calibration, ObjectLabels

KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP barriers on a busy 2-core machine cost seconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def kitti_mini() -> Path:
    if not (KITTI_MINI / "training").is_dir():
        pytest.skip(f"real KITTI frames not found at {KITTI_MINI}")
    return KITTI_MINI


def kitti_like_calibration() -> Calibration:
    """A calibration with KITTI's numbers (frame 000000 of the object benchmark), rounded."""
    p2 = np.array([[707.05, 0.0, 604.08, 45.76], [0.0, 707.05, 180.51, -0.35], [0.0, 0.0, 1.0, 0.005]])
    tr = np.array([[0.0069, -1.0, -0.0028, -0.0246], [-0.0012, 0.0027, -1.0, -0.0613], [1.0, 0.0069, -0.0011, -0.332]])
    return Calibration(P0=p2.copy(), P1=p2.copy(), P2=p2, P3=p2.copy(), R0_rect=np.eye(3), Tr_velo_to_cam=tr,
                       Tr_imu_to_velo=np.hstack([np.eye(3), np.zeros((3, 1))]))


def synthetic_labels() -> ObjectLabels:
    return ObjectLabels(
        type=np.array(["Car", "Pedestrian", "DontCare"]),
        truncated=np.array([0.0, 0.25, -1.0]),
        occluded=np.array([0, 1, -1]),
        alpha=np.array([-1.57, 0.5, -10.0]),
        bbox=np.array([[100.0, 150.0, 300.0, 250.0], [500.5, 140.25, 540.0, 260.0], [10.0, 20.0, 30.0, 40.0]]),
        dimensions=np.array([[1.5, 1.6, 3.9], [1.8, 0.6, 0.8], [-1.0, -1.0, -1.0]]),
        location=np.array([[-3.0, 1.7, 20.0], [2.0, 1.6, 12.0], [-1000.0, -1000.0, -1000.0]]),
        rotation_y=np.array([-1.6, 0.3, -10.0]),
    )


@pytest.fixture(autouse=True)
def _default_sigchld_handler():
    """Each test leaves SIGCHLD at its default.

    A DataLoader with worker processes installs torch's own SIGCHLD handler in the main process and leaves it there
    after the workers are gone. With it installed, a later test that runs OpenVINO and then a subprocess crashed the
    whole pytest process with a segmentation fault (test_deploy_openvino after test_defects_core's worker test).
    """
    import signal

    yield
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
