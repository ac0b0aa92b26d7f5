"""Typed errors for bad input: each names the file (or field) and what is wrong with it."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Input data that cannot be used as it is: names the source and the fault.

    Subclasses ValueError so callers that only know the standard library still catch it.
    """

    def __init__(self, source: str | Path | None, fault: str):
        self.source = str(source) if source is not None else None
        self.fault = fault
        super().__init__(f"{self.source}: {fault}" if self.source else fault)


class ScanError(DataError):
    """A LiDAR scan (.bin, .pcd, point array) that is malformed."""


class RingOrderError(ScanError):
    """Ring mode cannot find the laser ring of each point: the points are not stored ring by ring, or the scan keeps
    only some of its lasers. Uniform elevation rows still project it (what the predictors fall back to)."""


class LabelError(DataError):
    """A KITTI label line or point-label file that is malformed."""


class CalibrationError(DataError):
    """A KITTI calibration file that is missing a key or has a malformed matrix."""


class RangeImageError(DataError):
    """A range-image array of the wrong shape, dtype or content."""
