"""Imaging: images on grids, below the data, registration and generation layers.

- :mod:`.resampling`: working grids, affine displacements, resampling of images and label maps;
- :mod:`.masks`: binary dilation and the brain mask of a skull-stripped image;
- :mod:`.intensity`: intensity normalisation;
- :mod:`.affine`: the SimpleITK Mattes-MI affine and RAS/ITK matrix conversion;
- :mod:`.head`: full-head scans: the top-anchored affine, skull detection and brain extraction.
"""
