"""Triangle soups with per-triangle class, instance and material: what the sensors ray-cast.

`MeshData` is the soup; `MeshBuilder` collects the parts of one object (or one chunk of street) and
concatenates them once, because a non-sequence frame builds a whole new world and per-part numpy calls add up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.materials import (
    CLASS_IDS,
    MATERIAL_COLOR,
    MATERIAL_IDS,
    MATERIAL_REFLECTANCE,
    MATERIALS,
    TINTABLE,
)


@dataclass
class MeshData:
    """A triangle soup with per-triangle attributes. V vertices, T triangles (either may be 0).

    vertices:    (V, 3) float32 metres
    triangles:   (T, 3) int32 indices into vertices
    material:    (T,) uint8 index into MATERIALS
    cls:         (T,) uint8 class id (CLASS_IDS)
    instance:    (T,) uint16 instance id, 0 for stuff
    reflectance: (T,) float32 LiDAR reflectivity with the instance's variation applied
    color:       (T, 3) float32 linear RGB albedo with the instance's variation applied
    """

    vertices: np.ndarray
    triangles: np.ndarray
    material: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    reflectance: np.ndarray
    color: np.ndarray

    @staticmethod
    def empty() -> MeshData:
        """A mesh with no vertices and no triangles (every array of length 0)."""
        return MeshData(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.uint8),
                        np.zeros(0, np.uint8), np.zeros(0, np.uint16), np.zeros(0, np.float32),
                        np.zeros((0, 3), np.float32))

    def __len__(self) -> int:
        return len(self.triangles)

    @staticmethod
    def concatenate(parts: list[MeshData]) -> MeshData:
        """One soup from several; empty parts are skipped, an empty list gives an empty mesh."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return MeshData.empty()
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        return MeshData(
            vertices=np.concatenate([p.vertices for p in parts]).astype(np.float32, copy=False),
            triangles=np.concatenate([p.triangles + o for p, o in zip(parts, offsets, strict=True)]).astype(
                np.int32),
            material=np.concatenate([p.material for p in parts]),
            cls=np.concatenate([p.cls for p in parts]),
            instance=np.concatenate([p.instance for p in parts]),
            reflectance=np.concatenate([p.reflectance for p in parts]),
            color=np.concatenate([p.color for p in parts]))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> MeshData:
        """A copy with vertices mapped by p -> rotation (3, 3) @ p + translation (3,)."""
        v = self.vertices.astype(np.float64) @ np.asarray(rotation).T + np.asarray(translation)
        return MeshData(v.astype(np.float32), self.triangles, self.material, self.cls, self.instance,
                        self.reflectance, self.color)

    def with_instance(self, instance_id: int) -> MeshData:
        """The same mesh with every triangle labelled as instance `instance_id`."""
        return MeshData(self.vertices, self.triangles, self.material, self.cls,
                        np.full(len(self), instance_id, np.uint16), self.reflectance, self.color)


@dataclass(frozen=True)
class _MaterialArrayPart:
    """A part given a per-triangle material array, with the tint for its tintable triangles (None: none)."""

    index: int  # position of the part in the builder
    materials: np.ndarray  # (T,) uint8 material ids
    color: np.ndarray | tuple | None  # (3,) albedo of the tintable triangles
    reflectance: float | None  # LiDAR reflectivity of the tintable triangles


class MeshBuilder:
    """Collects mesh parts and concatenates them once in `build`.

    Attributes are stored per part (a scalar, or a per-triangle material array when given) and only
    expanded to per-triangle arrays in `build`.
    """

    def __init__(self) -> None:
        self.vertices: list[np.ndarray] = []  # per part (V_i, 3)
        self.triangles: list[np.ndarray] = []  # per part (T_i, 3), already offset into the concatenation
        self.n_triangles: list[int] = []
        self.material: list[int] = []
        self.cls: list[int] = []
        self.instance: list[int] = []
        self.reflectance: list[float] = []
        self.color: list[np.ndarray | tuple] = []
        self.material_arrays: list[_MaterialArrayPart] = []
        self.n_vertices = 0

    def add(self, v: np.ndarray, t: np.ndarray, material: str | np.ndarray, cls: str, instance: int = 0,
            color: np.ndarray | tuple | None = None, reflectance: float | None = None) -> None:
        """Add vertices v (V, 3) and triangles t (T, 3); material is a name or a (T,) array of material ids.

        color (3,) / reflectance override the material's defaults (the caller applies instance variation);
        with a material array they apply to its tintable triangles only (paint, cloth, facade, ...).
        """
        if isinstance(material, str):
            mid = MATERIAL_IDS[material]
            m = MATERIALS[mid]
            self.material.append(mid)
            self.reflectance.append(m.reflectance if reflectance is None else reflectance)
            self.color.append(m.color if color is None else color)
        else:
            part = _MaterialArrayPart(len(self.n_triangles), np.asarray(material, np.uint8), color, reflectance)
            self.material_arrays.append(part)
            self.material.append(0)  # placeholders, replaced in build
            self.reflectance.append(0.0)
            self.color.append((0.0, 0.0, 0.0))
        self.vertices.append(v)
        self.triangles.append(t + self.n_vertices)
        self.n_triangles.append(len(t))
        self.cls.append(CLASS_IDS[cls])
        self.instance.append(instance)
        self.n_vertices += len(v)

    def build(self) -> MeshData:
        """The concatenated mesh (empty when nothing was added)."""
        if not self.triangles:
            return MeshData.empty()
        counts = np.asarray(self.n_triangles)
        mat = np.repeat(np.asarray(self.material, np.uint8), counts)
        refl = np.repeat(np.asarray(self.reflectance, np.float32), counts)
        col = np.repeat(np.asarray(self.color, np.float32).reshape(-1, 3), counts, axis=0)
        if self.material_arrays:
            self._apply_material_arrays(counts, mat, refl, col)
        return MeshData(np.concatenate(self.vertices).astype(np.float32),
                        np.concatenate(self.triangles).astype(np.int32), mat,
                        np.repeat(np.asarray(self.cls, np.uint8), counts),
                        np.repeat(np.asarray(self.instance, np.uint16), counts), refl, col)

    def _apply_material_arrays(self, counts: np.ndarray, mat: np.ndarray, refl: np.ndarray,
                               col: np.ndarray) -> None:
        """Write the per-triangle materials of array parts into mat (T,), refl (T,), col (T, 3) in place."""
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for part in self.material_arrays:
            sl = slice(offsets[part.index], offsets[part.index + 1])
            m = part.materials
            mat[sl] = m
            refl[sl] = MATERIAL_REFLECTANCE[m]
            col[sl] = MATERIAL_COLOR[m]
            tintable = TINTABLE[m]
            if part.color is not None:
                col[sl][tintable] = part.color
            if part.reflectance is not None:
                refl[sl][tintable] = part.reflectance
