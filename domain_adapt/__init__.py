"""Simulated driving world (the suite's embedded default data) and sim-to-real domain adaptation.

Simulation, one module per stage (nothing heavy is imported here, so `import domain_adapt` stays cheap):

- `world`:  seeded procedural streets as triangle meshes with classes, instances and materials;
            `generate_world(rng, duration)` -> World, `World.scene_at(t)` -> Scene (velodyne frame).
- `lidar`:  Velodyne HDL-64E beam model (`hdl64e()`, `scan(...)`), KITTI point order.
- `camera`: KITTI image_2 renderer and visibility-based KITTI labels (`kitti_calibration()`, `render`,
            `label_objects`).
- `sim`:    `simulate(out_dir, frames, seed, sequence=False, intensity=True, azimuth_steps=None)` writes a
            KITTI object folder plus SqueezeSeg range images; `Simulator(seed, frames).frame(i)` keeps a
            frame in memory.
- `cli`:    `add_sim_parser(subparsers)` registers `squeeze sim`.
"""
