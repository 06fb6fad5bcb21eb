"""nflows ``Transform`` subclasses used to build the image flows (data -> noise)."""

from mixerflow.transforms.coupling import BoundedAffineCoupling, MLPConditioner, make_coupling
from mixerflow.transforms.mixing import RowWise, flow_step
from mixerflow.transforms.patches import Patchify, PermutePixels, Shift, Transpose

__all__ = [
    "BoundedAffineCoupling",
    "MLPConditioner",
    "Patchify",
    "PermutePixels",
    "RowWise",
    "Shift",
    "Transpose",
    "flow_step",
    "make_coupling",
]
