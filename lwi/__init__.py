"""LWI: Learnable Weight Initialization for volumetric medical image segmentation.

The PyTorch core of the LWI 3D Slicer extension. It imports nothing from Slicer, Qt, CTK or VTK, so
it runs the same inside Slicer's Python, on a GPU server and in CI. Heavy modules (torch, MONAI) are
imported by the submodules that need them, not here, so ``import lwi`` stays cheap.
"""

__version__ = "0.1.0"
