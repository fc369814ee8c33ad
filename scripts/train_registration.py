"""Train the bundled registration networks: the same as ``diffdef-atlas train-registration`` (see its ``--help``).

    python scripts/train_registration.py --dims 3 --work WORKDIR --minutes 60 --export Resources/models/registration3d
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DiffDefAtlasLib.cli.main import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["train-registration", *sys.argv[1:]]))
