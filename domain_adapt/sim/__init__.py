"""The simulated driving world: the suite's embedded default data and the sim-to-real source domain.

One module per concern, each of short functions:

- world pieces: `materials` (classes, surfaces), `mesh` (triangle soups), `shapes` (primitives), `road`
  (layout, surfaces), `ground` (per-scene sensor height, slopes, camber, bumps), `buildings`, `roadside`
  (trees, lamps, signs), `street` (static chunks), `vehicles`, `pedestrians`, `actors` (motion, collisions),
  `traffic` (placement), `world` (`generate_world`, scenes);
- sensors: `lidar` (Velodyne HDL-64E beam model), `camera` (image_2 renderer), `labels` (KITTI labels from
  what the camera sees);
- `simulator`: `Simulator(seed, frames, config).frame(i)` keeps one frame in memory;
- `writer`: `simulate(out_dir, frames, seed, ...)` writes a KITTI object folder plus SqueezeSeg range images,
  through `output` (the folder appears only once complete), in `workers` processes and, for sharding across
  machines, only a `frame_range` of the set.

Importing this package loads open3d and numba; `domain_adapt.cli` imports it only when a command runs.
"""

from domain_adapt.sim.simulator import FRAME_RATE, SimConfig, SimFrame, Simulator, sim_config
from domain_adapt.sim.writer import SimSummary, format_objects, simulate, write_frame

__all__ = ["FRAME_RATE", "SimConfig", "SimFrame", "SimSummary", "Simulator", "format_objects", "sim_config",
           "simulate", "write_frame"]
