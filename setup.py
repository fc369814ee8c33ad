"""Packaging shim: ships the top-level ``Resources/`` folder inside the wheel.

All metadata lives in ``pyproject.toml``. This file only adds the package
``DiffDefAtlasLib._resources`` (mapped to ``Resources/``), which the automatic
package discovery cannot see because it sits outside ``DiffDefAtlasLib/``.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["DiffDefAtlasLib", "DiffDefAtlasLib.*"]) + ["DiffDefAtlasLib._resources"],
    package_dir={"DiffDefAtlasLib._resources": "Resources"},
    package_data={"DiffDefAtlasLib._resources": ["*", "**/*"]},
)
