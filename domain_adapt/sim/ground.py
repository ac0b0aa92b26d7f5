"""The ground's shape: a smooth height field over the road frame, drawn per scene, and the sensor's height.

Real KITTI scans do not see a flat plane 1.73 m down. A robust plane fit to the near ground of the kitti_mini
scans (points 3-20 m away, |y| < 10 m, z < -1.2 m, iteratively reweighted least squares keeping residuals
within 2.5 robust sigmas) gives, in the velodyne frame, an intercept of -1.72, -1.68 and -1.69 m, a
longitudinal slope dz/dx of +1.3%, +1.3% and +0.5% (the car is pitched slightly nose-down relative to the
road ahead), a lateral slope dz/dy of +1.1%, -1.8% and +1.0%, and 4-9 cm of robust scatter about the plane
(noise, camber, bumps, low kerbs). The height field here reproduces that:

    h(s, d) = g_s s + 0.5 k_v s^2 + g_d d - c min(|d|, e(d)) + sum_i a_i sin(2 pi s / L_i + phi_i)
              + sum_j b_j sin(u_j . (s, d) + psi_j)

- a grade g_s along the road and a cross slope g_d (a few percent), plus a vertical curve k_v (crest or sag,
  radius >= 5 km as in road design) so the slope seen from the car changes with distance;
- a camber c: the carriageway falls from its centre line to the kerbs (0.5-2.5%, RAS-Q's cross fall),
  flat beyond the kerb line e(d) (the sidewalks and terrain keep the kerb's height);
- undulations a_i along the road (wavelengths 12-60 m, a few cm) and roughness b_j (plane waves, wavelengths
  5-12 m, about 1 cm), both smooth so every vertex and every actor can be lifted exactly.

World z of the road surface at road position (s, d) is h(s, d); sidewalks and terrain sit at curb + h. The
ego car stays level (a yaw-only pose, so KITTI's yaw-only boxes stay exact in the velodyne frame) with its
LiDAR `sensor_height` above the road beneath it; the slope of the road under and ahead of it is what the
sensor sees as a tilted, varying ground.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.road import RoadLayout


@dataclass(frozen=True)
class GroundConfig:
    """Per-scene ground draws (normal: (mean, std), clipped to mean +- 2.5 std; uniform: (low, high)).

    Defaults are fitted to kitti_mini (see the module docstring); `flat_ground()` gives the old flat world.
    """

    sensor_height: tuple[float, float] = (1.71, 0.025)  # m above the road under the sensor (KITTI: 1.73 nominal)
    grade: tuple[float, float] = (0.009, 0.008)  # dz/ds along the ego's direction of travel (kitti_mini: ~+1%)
    cross_slope: tuple[float, float] = (0.0, 0.008)  # dz/dd, left positive (with camber: kitti_mini +-1.5%)
    vertical_curve: float = 2e-4  # |k_v| <= this, 1/m (radius >= 5 km)
    camber: tuple[float, float] = (0.005, 0.025)  # uniform cross fall from the centre line to the kerbs
    undulation: float = 0.04  # m, amplitude of each of 2 waves along the road, uniform in [0, this]
    roughness: float = 0.008  # m, amplitude of each of 4 plane waves across the surface, uniform in [0, this]


def flat_ground() -> GroundConfig:
    """A flat road 1.73 m below the sensor everywhere (the simulator before per-scene ground)."""
    return GroundConfig(sensor_height=(1.73, 0.0), grade=(0.0, 0.0), cross_slope=(0.0, 0.0), vertical_curve=0.0,
                        camber=(0.0, 0.0), undulation=0.0, roughness=0.0)


@dataclass(frozen=True, eq=False)
class Ground:
    """A scene's height field over the road frame (see the module docstring) and the LiDAR's height.

    waves_s: (I, 3) amplitude m, wavelength m, phase rad of the undulations along s;
    waves_2d: (J, 4) amplitude m, u_s, u_d (rad/m), phase rad of the roughness plane waves.
    """

    sensor_height: float
    grade: float
    cross_slope: float
    vertical_curve: float
    camber: float
    kerb: tuple[float, float]  # |d| of the kerb line on the (right, left) side, where the camber stops
    waves_s: np.ndarray
    waves_2d: np.ndarray

    def height(self, s: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        """Road-surface z (m, world frame) at road position (s, d), any broadcastable shapes; float64."""
        s = np.asarray(s, np.float64)
        d = np.asarray(d, np.float64)
        kerb = np.where(d < 0, self.kerb[0], self.kerb[1])
        z = self.grade * s + 0.5 * self.vertical_curve * s * s + self.cross_slope * d
        z = z - self.camber * np.minimum(np.abs(d), kerb)
        for a, wavelength, phase in self.waves_s:
            z = z + a * np.sin(2 * math.pi * s / wavelength + phase)
        for b, us, ud, phase in self.waves_2d:
            z = z + b * np.sin(us * s + ud * d + phase)
        return z


def sample_ground(rng: np.random.Generator, cfg: GroundConfig, layout: RoadLayout) -> Ground:
    """Draw one scene's ground. Always draws the same count of numbers from rng, whatever cfg says."""
    u = rng.random(24)
    z = np.clip(rng.standard_normal(3), -2.5, 2.5)
    waves_s = np.stack([cfg.undulation * u[2:4], 12.0 + 48.0 * u[4:6], 2 * math.pi * u[6:8]], 1)
    k = 2 * math.pi / (5.0 + 7.0 * u[12:16])  # rad/m; >= 5 m, resolved by the 2 m road grid
    angle = 2 * math.pi * (np.arange(4) + u[16:20]) / 4  # one wave per quadrant of directions
    waves_2d = np.stack([cfg.roughness * (0.5 + 0.5 * u[8:12]), k * np.cos(angle), k * np.sin(angle),
                         2 * math.pi * u[20:24]], 1)
    lo, hi = cfg.camber
    return Ground(
        sensor_height=float(cfg.sensor_height[0] + cfg.sensor_height[1] * z[0]),
        grade=float(cfg.grade[0] + cfg.grade[1] * z[1]),
        cross_slope=float(cfg.cross_slope[0] + cfg.cross_slope[1] * z[2]),
        vertical_curve=float(cfg.vertical_curve * (2 * u[0] - 1)),
        camber=float(lo + (hi - lo) * u[1]),
        kerb=(layout.edge(0), layout.edge(1)),
        waves_s=waves_s, waves_2d=waves_2d)
