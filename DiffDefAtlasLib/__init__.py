"""DiffDefAtlas: conditional brain atlases from diffusion-generated deformation fields.

The library is pure Python (no Slicer, Qt or CTK imports). Volumes are arrays with a
4x4 (3D) or 3x3 (2D) affine from voxel indices to RAS millimetres; see
:mod:`DiffDefAtlasLib.spatial`.
"""

__version__ = "0.1.0"
