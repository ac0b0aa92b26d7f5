"""Tracking for LATTE: carry accepted boxes to the next frame, and fill frames between two keyframes.

The original LATTE (Wang, Wu et al., ITSC 2019; its released code) re-ran the one-click fit on the next frame's
points inside the *old* box footprint: constant position, no ego motion, no filter, so it finds a car only while
the old footprint still overlaps it, and a parked car seen from a moving ego "moves" as much as a driving one (the
fit on a partial view then lands wherever the completion puts it). Here each track is followed in the
*world* frame (the velodyne frame moved by the frame's pose, world_from_velo, from the simulator or OXTS):

1. the track's accepted history (world boxes with times) runs through a constant-velocity Kalman filter in the
   bird's-eye plane (state [x, y, vx, vy]; white-noise acceleration process model, Bar-Shalom, Li and Kirubarajan,
   "Estimation with Applications to Tracking and Navigation", 2001, sec. 6.3.2), whose prediction at the next frame's
   time is carried into that frame's velodyne frame with its pose;
2. the prediction is re-fitted to the points near it (`latte.one_click.refit_near`), and the re-fit enters as one
   more Kalman measurement: a track whose motion is known keeps its prediction, a new one (one observation, velocity
   unknown) takes the fit. A re-fit that is absent, or jumps implausibly (Mahalanobis gate, size change, heading),
   leaves the prediction.

Yaw, z and sizes are not in the filter state: yaw and z come from the last accepted box (world frame), fused with the
re-fit by scalar inverse-variance weights; sizes stay those of the last accepted box (the object is rigid, and a
person accepted them).

The server keeps no filter state between requests: every call runs the filter over the track's accepted history,
a handful of 4x4 updates. Poses None mean the identity (no ego motion known); the filter is still constant-velocity
in the velodyne frame then.

Box arrays are velodyne/world boxes [x, y, z, l, w, h, yaw] (geometric centre, yaw about +z from +x), float64.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from latte.boxes import Box, wrap_yaw
from squeeze.errors import DataError

if TYPE_CHECKING:  # the real geometry lives in latte.one_click; only its type is named here
    from latte.one_click import FrameGeometry

FRAME_PERIOD = 0.1  # s; KITTI's LiDAR runs at 10 Hz (also the simulator's FRAME_RATE)

# A re-fit function: (geometry of the next frame, predicted velodyne box (7,), class) -> fitted box (7,) or None.
Refit = Callable[["FrameGeometry", np.ndarray, "str | None"], "np.ndarray | None"]


@dataclass(frozen=True)
class TrackingConfig:
    """Noise levels and gates of the tracker (metres, seconds, radians)."""

    frame_period: float = FRAME_PERIOD  # s between frames, for a track whose previous time is not given
    accel_std: float = 3.0  # m/s^2 white-noise acceleration: city traffic brakes and accelerates up to ~3 m/s^2
    position_std: float = 0.1  # m, centre accuracy of an accepted box (a person checked it): the measurement noise
    init_speed_std: float = 30.0  # m/s, velocity prior of a track seen once: any road speed (diffuse)
    refit_position_std: float = 0.3  # m, centre accuracy of an automatic re-fit (partial, occluded clusters)
    yaw_std: float = math.radians(2.0)  # heading accuracy of an accepted box
    yaw_rate_std: float = 0.5  # rad/s, how fast a heading may change unmodelled (a car turning at a crossing)
    refit_yaw_std: float = math.radians(6.0)  # heading accuracy of an L-shape re-fit
    z_std: float = 0.05  # m, height accuracy of an accepted box's centre
    z_rate_std: float = 0.5  # m/s, unmodelled vertical motion (slopes, ego pitch)
    refit_z_std: float = 0.15  # m, the re-fit's centre height (cluster top to ground plane)
    gate_chi2: float = 9.21  # chi-square 99% quantile, 2 dof: a re-fit farther (Mahalanobis) is another object
    max_jump: float = 4.0  # m; never accept a re-fit this far from the prediction (40 m/s relative per frame)
    max_size_change: float = 0.35  # relative change of l or w beyond which the re-fit merged or split the object
    max_yaw_change: float = math.radians(30.0)  # heading change (after the 180-degree ambiguity) beyond which to refuse


DEFAULT_CONFIG = TrackingConfig()
REFIT_SCORE = 1.0  # score of a tracked box whose re-fit agreed with the prediction
PREDICTED_SCORE = 0.5  # score of a tracked box that is the prediction alone (no cluster, or an implausible one)


@dataclass(frozen=True)
class TrackObservation:
    """One accepted box of a track: its frame's time (s) and the box in the world frame (pose @ velodyne box)."""

    t: float
    box_world: np.ndarray  # (7,) float64 [x, y, z, l, w, h, yaw], world frame
    std: float | None = None  # m, centre accuracy; None: TrackingConfig.position_std (a box a person placed)


# ------------------------------------------------------------------------------------------------ frames
def check_pose(pose: np.ndarray | None, name: str = "pose") -> np.ndarray:
    """(4, 4) float64 rigid transform from `pose`; None -> the identity. Raises DataError naming `name`."""
    if pose is None:
        return np.eye(4)
    T = np.asarray(pose, dtype=np.float64)
    if T.shape != (4, 4):
        raise DataError(name, f"expected a (4, 4) world_from_velo matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise DataError(name, "matrix has non-finite values")
    if not np.allclose(T[3], (0.0, 0.0, 0.0, 1.0), atol=1e-6):
        raise DataError(name, f"last row must be [0, 0, 0, 1], got {T[3].tolist()}")
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise DataError(name, "upper-left 3x3 is not a rotation")
    return T


def _check_box(box7: np.ndarray, name: str) -> np.ndarray:
    b = np.asarray(box7, dtype=np.float64)
    if b.shape != (7,) or not np.all(np.isfinite(b)):
        raise DataError(name, f"expected a finite (7,) box [x, y, z, l, w, h, yaw], got shape {b.shape}")
    return b


def _heading(T: np.ndarray) -> float:
    """Rotation of T about z: the heading of its x axis in the bird's-eye plane (roll and pitch ignored)."""
    return math.atan2(T[1, 0], T[0, 0])


def box_to_world(box7: np.ndarray, world_from_velo: np.ndarray | None) -> np.ndarray:
    """(7,) velodyne box -> (7,) world box: centre moved by the pose, yaw turned by the pose's rotation about z.

    Boxes stay upright (KITTI boxes only turn about z), so a pose's roll and pitch move the centre but not the box's
    orientation; box_from_world undoes this exactly. None means the identity.
    """
    b = _check_box(box7, "box7")
    T = check_pose(world_from_velo, "world_from_velo")
    out = b.copy()
    out[:3] = T[:3, :3] @ b[:3] + T[:3, 3]
    out[6] = wrap_yaw(b[6] + _heading(T))
    return out


def box_from_world(box7: np.ndarray, world_from_velo: np.ndarray | None) -> np.ndarray:
    """(7,) world box -> (7,) box in the velodyne frame of the pose `world_from_velo` (the inverse of box_to_world)."""
    b = _check_box(box7, "box7")
    T = check_pose(world_from_velo, "world_from_velo")
    out = b.copy()
    out[:3] = T[:3, :3].T @ (b[:3] - T[:3, 3])
    out[6] = wrap_yaw(b[6] - _heading(T))
    return out


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


# ------------------------------------------------------------------------------------------------ filter
class ConstantVelocityKalman:
    """Kalman filter of one track's bird's-eye motion in the world frame: state [x, y, vx, vy] (m, m/s).

    Process model: constant velocity driven by white-noise acceleration of std `accel_std` (the discrete model,
    Q = s^2 [[dt^4/4, dt^3/2], [dt^3/2, dt^2]] per axis). Measurements: box centres (x, y) with std
    `position_std`. The first observation sets the position; its velocity starts at 0 with std `init_speed_std`, so
    after two observations the velocity is (almost exactly) their difference over the time step.
    """

    def __init__(self, first: TrackObservation, config: TrackingConfig = DEFAULT_CONFIG):
        box = _check_box(first.box_world, "first.box_world")
        self.config = config
        self.t = float(first.t)
        self.mean = np.array([box[0], box[1], 0.0, 0.0])  # (4,) x, y, vx, vy
        p, v = self._variance(first), config.init_speed_std ** 2
        self.cov = np.diag([p, p, v, v])  # (4, 4)
        self.last = TrackObservation(self.t, box)  # yaw, z and sizes of the newest accepted box

    def _variance(self, obs: TrackObservation) -> float:
        std = self.config.position_std if obs.std is None else float(obs.std)
        if not (math.isfinite(std) and std > 0):
            raise DataError("obs.std", f"expected a positive centre accuracy (m), got {obs.std}")
        return std ** 2

    def _transition(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        F = np.eye(4)
        F[0, 2] = F[1, 3] = dt
        s2 = self.config.accel_std ** 2
        q = s2 * np.array([[dt ** 4 / 4, dt ** 3 / 2], [dt ** 3 / 2, dt ** 2]])
        Q = np.zeros((4, 4))
        Q[np.ix_([0, 2], [0, 2])] = q
        Q[np.ix_([1, 3], [1, 3])] = q
        return F, Q

    def predict(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """State (4,) and covariance (4, 4) at time t (s), without changing the filter. t may precede the last
        update (extrapolation backwards; the uncertainty still grows with |t - last|)."""
        dt = float(t) - self.t
        F, _ = self._transition(dt)
        _, Q = self._transition(abs(dt))
        return F @ self.mean, F @ self.cov @ F.T + Q

    def update(self, obs: TrackObservation) -> None:
        """Advance to obs.t (no earlier than the last update) and take obs's centre as a measurement."""
        if obs.t < self.t:
            raise DataError("obs.t", f"observation at {obs.t} s is older than the filter's time {self.t} s")
        box = _check_box(obs.box_world, "obs.box_world")
        self.mean, self.cov = self.predict(obs.t)
        self.t = float(obs.t)
        self.mean, self.cov, _ = kalman_update(self.mean, self.cov, box[:2], self._variance(obs))
        self.last = TrackObservation(self.t, box)


def kalman_update(mean: np.ndarray, cov: np.ndarray, z: np.ndarray, r: float
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """One Kalman measurement update of a [x, y, vx, vy] state with a position z (2,) of variance r (m^2) per axis.

    Returns the new mean (4,), covariance (4, 4) and the innovation's squared Mahalanobis distance (for gating).
    Joseph form keeps the covariance symmetric positive definite.
    """
    H = np.zeros((2, 4))
    H[0, 0] = H[1, 1] = 1.0
    y = np.asarray(z, dtype=np.float64) - H @ mean
    S = H @ cov @ H.T + r * np.eye(2)
    K = cov @ H.T @ np.linalg.inv(S)
    IKH = np.eye(4) - K @ H
    new_cov = IKH @ cov @ IKH.T + r * K @ K.T
    return mean + K @ y, new_cov, float(y @ np.linalg.solve(S, y))


def _check_history(history: Sequence[TrackObservation], name: str = "history") -> list[TrackObservation]:
    if len(history) == 0:
        raise DataError(name, "a track needs at least one accepted observation; got an empty history")
    for i, o in enumerate(history):
        if not isinstance(o, TrackObservation):
            raise DataError(f"{name}[{i}]", f"expected a TrackObservation, got {type(o).__name__}")
        if not math.isfinite(o.t):
            raise DataError(f"{name}[{i}].t", f"expected a finite time, got {o.t}")
        _check_box(o.box_world, f"{name}[{i}].box_world")
    out = sorted(history, key=lambda o: o.t)
    for a, b in zip(out, out[1:], strict=False):
        if b.t == a.t:
            raise DataError(name, f"two observations at the same time {a.t} s (one box per track and frame)")
    return out


def filter_history(history: Sequence[TrackObservation], config: TrackingConfig = DEFAULT_CONFIG
                   ) -> ConstantVelocityKalman:
    """The Kalman filter after every observation of `history` (any order; sorted by time). DataError when empty."""
    obs = _check_history(history)
    kf = ConstantVelocityKalman(obs[0], config)
    for o in obs[1:]:
        kf.update(o)
    return kf


def _predicted_world(kf: ConstantVelocityKalman, t_next: float) -> tuple[np.ndarray, np.ndarray]:
    """World box (7,) predicted at t_next (centre from the filter, z / sizes / yaw from the last box) and the
    state covariance (4, 4)."""
    mean, cov = kf.predict(t_next)
    box = kf.last.box_world.copy()
    box[:2] = mean[:2]
    return box, cov


def predict_box(history: Sequence[TrackObservation], t_next: float, velo_from_world_next: np.ndarray | None,
                config: TrackingConfig = DEFAULT_CONFIG) -> np.ndarray:
    """(7,) velodyne box of the next frame predicted from a track's accepted history (world boxes).

    `velo_from_world_next` is the inverse of the next frame's pose (None: the identity). DataError on an empty
    history, a bad pose or a non-finite time.
    """
    if not math.isfinite(t_next):
        raise DataError("t_next", f"expected a finite time, got {t_next}")
    velo_from_world = check_pose(velo_from_world_next, "velo_from_world_next")
    box, _ = _predicted_world(filter_history(history, config), t_next)
    return box_from_world(box, _rigid_inverse(velo_from_world))


# ------------------------------------------------------------------------------------------------ propagation
def _fuse_scalar(pred: float, var_pred: float, meas: float, var_meas: float) -> float:
    w = var_pred / (var_pred + var_meas)
    return pred + w * (meas - pred)


def fuse_refit(pred_world: np.ndarray, cov: np.ndarray, dt: float, fit_world: np.ndarray | None,
               config: TrackingConfig = DEFAULT_CONFIG) -> tuple[np.ndarray, bool]:
    """The tracked world box (7,) from a prediction (7,) with state covariance (4, 4), `dt` seconds after the last
    accepted box, and a re-fit (7,) in the world frame (None: no cluster). Returns (box, whether the re-fit was used).

    The re-fit is refused when its centre fails the chi-square gate or lies more than `max_jump` from the prediction,
    when its length or width differs by more than `max_size_change`, or when its heading (taken modulo 180 degrees:
    an L-shape fit cannot tell front from back) differs by more than `max_yaw_change`.
    """
    if fit_world is None:
        return pred_world.copy(), False
    fit = _check_box(fit_world, "fit_world")
    c = config
    if np.hypot(*(fit[:2] - pred_world[:2])) > c.max_jump:
        return pred_world.copy(), False
    rel = np.abs(fit[3:5] - pred_world[3:5]) / pred_world[3:5]
    if np.any(rel > c.max_size_change):
        return pred_world.copy(), False
    dyaw = wrap_yaw(fit[6] - pred_world[6])
    if abs(dyaw) > math.pi / 2:  # the fit points backwards: same rectangle, heading flipped
        dyaw = wrap_yaw(dyaw + math.pi)
    if abs(dyaw) > c.max_yaw_change:
        return pred_world.copy(), False
    mean = np.array([pred_world[0], pred_world[1], 0.0, 0.0])
    new_mean, _, d2 = kalman_update(mean, cov, fit[:2], c.refit_position_std ** 2)
    if d2 > c.gate_chi2:
        return pred_world.copy(), False
    out = pred_world.copy()
    out[:2] = new_mean[:2]
    dt = abs(dt)
    yaw_var = c.yaw_std ** 2 + (c.yaw_rate_std * dt) ** 2
    out[6] = wrap_yaw(pred_world[6] + _fuse_scalar(0.0, yaw_var, dyaw, c.refit_yaw_std ** 2))
    z_var = c.z_std ** 2 + (c.z_rate_std * dt) ** 2
    out[2] = _fuse_scalar(pred_world[2], z_var, fit[2], c.refit_z_std ** 2)
    return out, True  # sizes: the accepted box's (rigid object; the re-fit sees part of it)


def new_box_id(prefix: str) -> str:
    """A fresh box id ([A-Za-z0-9_-], 1-64 characters as latte.boxes requires)."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _make_box(box7: np.ndarray, prefix: str, cls: str, track_id: int, source: str, score: float) -> Box:
    """A proposal (accepted False) with a new id at velodyne box7 (yaw wrapped)."""
    x, y, z, length, w, h, yaw = (float(v) for v in box7)
    return Box(id=new_box_id(prefix), cls=cls, x=x, y=y, z=z, l=length, w=w, h=h, yaw=wrap_yaw(yaw),
               track_id=track_id, source=source, accepted=False, score=float(score))


def propagate_boxes(prev: Sequence[Box], histories: Mapping[int, Sequence[TrackObservation]], t_next: float,
                    pose_next: np.ndarray | None, geom_next: FrameGeometry | None, pose_prev: np.ndarray | None,
                    *, t_prev: float | None = None, refit: Refit | None = None,
                    config: TrackingConfig = DEFAULT_CONFIG) -> list[Box]:
    """One tracked proposal in the next frame for every accepted box of `prev` that has a track id.

    prev: the previous frame's boxes (velodyne frame of pose_prev); unaccepted or track_id -1 boxes are skipped.
    histories: track id -> that track's accepted observations (world boxes) from frames before the next one; the
        observations at or after the previous frame's time are replaced by the prev box itself (the freshest word;
        an observation at exactly t_prev lends it its `std`).
    t_next / t_prev: frame times (s). t_prev defaults to the time of the track's newest observation, or
        t_next - FRAME_PERIOD for a track without history. DataError unless t_next > t_prev.
    pose_next / pose_prev: (4, 4) world_from_velo of the two frames; None means the identity (no ego motion).
    geom_next: the next frame's latte.one_click.FrameGeometry, passed to `refit` (default
        latte.one_click.refit_near(geom_next, predicted_box7, cls)); None skips the re-fit (prediction only).
    Returns boxes in the next frame's velodyne frame: source "tracked", accepted False, the same cls and track_id, a
    new id, score REFIT_SCORE when the re-fit was used and PREDICTED_SCORE when the box is the prediction alone.
    """
    if not math.isfinite(t_next):
        raise DataError("t_next", f"expected a finite time, got {t_next}")
    T_next = check_pose(pose_next, "pose_next")
    T_prev = check_pose(pose_prev, "pose_prev")
    if refit is None and geom_next is not None:
        from latte.one_click import refit_near  # written beside this module; imported when first needed

        refit = refit_near
    out: list[Box] = []
    for box in prev:
        if not box.accepted or box.track_id < 0:
            continue
        past = list(histories.get(box.track_id, ()))
        if t_prev is not None:
            tp = float(t_prev)
        else:
            tp = max(o.t for o in past) if past else t_next - config.frame_period
        if not t_next > tp:
            raise DataError("t_next", f"{t_next} s is not after the previous frame's time {tp} s")
        same = [o.std for o in past if o.t == tp]  # the prev box's own observation: keep its accuracy
        history = [o for o in past if o.t < tp] + [TrackObservation(tp, box_to_world(box.array, T_prev),
                                                                    same[0] if same else None)]
        kf = filter_history(history, config)
        pred_world, cov = _predicted_world(kf, t_next)
        fit_world = None
        if refit is not None:
            fit = refit(geom_next, box_from_world(pred_world, T_next), box.cls)
            if fit is not None:
                fit_world = box_to_world(np.asarray(fit, dtype=np.float64), T_next)
        world, used = fuse_refit(pred_world, cov, t_next - tp, fit_world, config)
        out.append(_make_box(box_from_world(world, T_next), "trk", box.cls, box.track_id, "tracked",
                             REFIT_SCORE if used else PREDICTED_SCORE))
    return out


# ------------------------------------------------------------------------------------------------ interpolation
def interpolate_track(a: Box, b: Box, t_a: float, t_b: float, pose_a: np.ndarray | None, pose_b: np.ndarray | None,
                      frames: Sequence[tuple[float, np.ndarray | None]]) -> list[Box]:
    """Boxes of one track in the frames between two keyframes, linear in the world frame.

    a, b: the track's boxes in the keyframes (velodyne frames of pose_a / pose_b, None = identity) at times
    t_a < t_b. frames: (t, world_from_velo or None) of each frame to fill, t_a < t < t_b. Centre and sizes move
    linearly in time; yaw turns the short way (at most 180 degrees). Returns one box per frame, in that frame's
    velodyne frame, in the order given: cls and track_id of a, source "interpolated", accepted False, new ids.
    DataError when the boxes belong to different tracks or a time is out of order.
    """
    if a.track_id != b.track_id:
        raise DataError("b.track_id", f"keyframe boxes belong to different tracks ({a.track_id} and {b.track_id})")
    if not (math.isfinite(t_a) and math.isfinite(t_b) and t_a < t_b):
        raise DataError("t_b", f"keyframe times must be finite with t_a < t_b, got {t_a} and {t_b}")
    wa = box_to_world(a.array, check_pose(pose_a, "pose_a"))
    wb = box_to_world(b.array, check_pose(pose_b, "pose_b"))
    dyaw = wrap_yaw(wb[6] - wa[6])
    out = []
    for i, (t, pose) in enumerate(frames):
        if not (math.isfinite(t) and t_a < t < t_b):
            raise DataError(f"frames[{i}]", f"time {t} s is not between the keyframes ({t_a} s, {t_b} s)")
        s = (t - t_a) / (t_b - t_a)
        w = wa + s * (wb - wa)
        w[6] = wa[6] + s * dyaw
        velo = box_from_world(w, check_pose(pose, f"frames[{i}] pose"))
        out.append(_make_box(velo, "int", a.cls, a.track_id, "interpolated", 1.0))
    return out


def bev_iou_velo(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 7) and (M, 7) velodyne boxes -> (N, M) rotated bird's-eye IoU, via squeeze.geometry.bev_iou.

    The footprint is the same in camera axes: camera x = -velodyne y, camera z = velodyne x, ry = -yaw - pi/2
    (squeeze.geometry's conventions); heights do not enter a BEV IoU.
    """
    from squeeze.geometry import bev_iou

    def cam(boxes: np.ndarray) -> np.ndarray:
        v = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        return np.stack([-v[:, 1], np.zeros(len(v)), v[:, 0], v[:, 5], v[:, 4], v[:, 3], -v[:, 6] - math.pi / 2], 1)

    return bev_iou(cam(a), cam(b))
