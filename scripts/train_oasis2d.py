#!/usr/bin/env python
"""Train the bundled ``oasis2d`` generator on the OASIS-1 axial training split (needs ../shared/data), on CPU.

Usage (resumable; run again to continue):
    nohup python scripts/train_oasis2d.py --work work/oasis2d > work/oasis2d.log 2>&1 &

Stages: autoencoder -> diffusion -> mp (if the 2D registration network is bundled) -> export to
Resources/models/oasis2d -> held-out evaluation (metrics written into the model card).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_brain3d import main  # noqa: E402  (same driver, another recipe)

if __name__ == "__main__":
    sys.exit(main("oasis2d", {"autoencoder": 7, "diffusion": 9, "mp": 3}))
