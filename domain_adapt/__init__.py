"""Simulated driving world (the suite's embedded default data) and sim-to-real domain adaptation.

Nothing heavy is imported here, so `import domain_adapt` stays cheap.

- `sim`: the simulated world as a subpackage of short modules (scene pieces, LiDAR, camera, labels, the
         KITTI folder writer): `simulate(out_dir, frames, seed, sequence=False, intensity=True,
         azimuth_steps=None)` writes a KITTI object folder plus SqueezeSeg range images;
         `Simulator(seed, frames).frame(i)` keeps a frame in memory. See `domain_adapt/sim/__init__.py`.
- `cli`: `add_sim_parser(subparsers)` registers `squeeze sim`.

The SqueezeSegV2 domain-adaptation steps will live beside `sim`, in this package.
"""
