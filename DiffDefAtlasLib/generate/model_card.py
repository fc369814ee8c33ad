"""Model cards: the JSON description that travels with every generator's weights.

The card is the single source of truth for a model's conditions (names, kinds, trained ranges, units), its grids,
network sizes, sampler defaults, training data, measured metrics and the sha256 of its safetensors weights. The GUI
sliders, the command line's range checks and the README table are all read from it.

Example:
    >>> card = ModelCard.from_json('''{"name": "demo", "spatial_dims": 2, "description": "toy",
    ...   "conditions": [{"name": "age", "kind": "continuous", "minimum": 60, "maximum": 90, "units": "years"}]}''')
    >>> card.condition("age").maximum
    90.0
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from ..bundles import CARD_FILE, card_path, read_card, verified_weights
from ..errors import DiffDefInputError
from ..conditions.spec import KINDS, ConditionSpec  # noqa: F401 (the card's condition schema)
from ..spatial.grid import Grid

#: ``model_type`` of generator cards; other models under ``Resources/models`` (registration, population) differ.
MODEL_TYPE = "diffdef-generator"


@dataclass
class ModelCard:
    """Everything known about one generator besides its weights.

    Attributes:
        name: model name (folder name under ``Resources/models``).
        spatial_dims: 2 or 3.
        description: one paragraph for humans.
        conditions: the conditions in the order the network sees them.
        grids: ``{"velocity", "working", "output"}`` -> ``{"shape", "affine"}``: the velocity field's coarse grid,
            the grid it is integrated on, and the grid of the atlas and displacement returned.
        template: what is warped: ``{"kind": "mni152"}`` (the bundled template) or ``{"kind": "file", ...}``.
        autoencoder, unet: network hyper-parameters (see :mod:`.networks`).
        latent_shape: ``[channels, *spatial]`` of the diffusion latent.
        velocity_scale: fields are divided by it before encoding (mm).
        latent_scale: latents are multiplied by it before diffusion (unit variance).
        scheduler: DDPM/DDIM settings (``num_train_timesteps``, ``schedule``, ``prediction_type``...).
        sampling: defaults: ``steps`` (the atlas), ``sample_steps`` (draws at temperature > 0; ``steps`` when absent),
            ``guidance``, ``temperature``, ``integration_steps``.
        trend: the fitted least-squares trend of the velocities in the conditions (:mod:`.trend`); empty for a
            model whose autoencoder codes the residual from the unconditional mean.
        training: data, subjects, stages and durations.
        metrics: measured figures (see ``docs/generator.md``).
        weights: ``{"file", "sha256", "bytes"}`` of the safetensors file.
    """

    name: str
    spatial_dims: int
    description: str = ""
    conditions: list[ConditionSpec] = field(default_factory=list)
    grids: dict[str, dict[str, Any]] = field(default_factory=dict)
    template: dict[str, Any] = field(default_factory=dict)
    autoencoder: dict[str, Any] = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)
    latent_shape: list[int] = field(default_factory=list)
    velocity_scale: float = 1.0
    latent_scale: float = 1.0
    scheduler: dict[str, Any] = field(default_factory=dict)
    sampling: dict[str, Any] = field(default_factory=dict)
    trend: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Any] = field(default_factory=dict)
    version: str = "1"
    model_type: str = MODEL_TYPE
    path: Path | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.conditions = [c if isinstance(c, ConditionSpec) else ConditionSpec(**c) for c in self.conditions]
        if int(self.spatial_dims) not in (2, 3):
            raise DiffDefInputError(f"model card '{self.name}': spatial_dims must be 2 or 3, found {self.spatial_dims}")
        self.spatial_dims = int(self.spatial_dims)

    # ----------------------------------------------------------------- conditions
    @property
    def condition_names(self) -> list[str]:
        """Names of the conditions, in network order."""
        return [c.name for c in self.conditions]

    def condition(self, name: str) -> ConditionSpec:
        """The :class:`ConditionSpec` called ``name``; an unknown name raises with the valid names."""
        for spec in self.conditions:
            if spec.name == name:
                return spec
        raise DiffDefInputError(
            f"model '{self.name}' has no condition '{name}'; valid conditions: {', '.join(self.condition_names) or 'none'}"
        )

    # ----------------------------------------------------------------- grids
    def grid(self, which: str) -> Grid:
        """The ``"velocity"``, ``"working"`` or ``"output"`` grid."""
        if which not in self.grids:
            raise DiffDefInputError(f"model card '{self.name}': no '{which}' grid (has {', '.join(self.grids)})")
        entry = self.grids[which]
        return Grid(tuple(entry["shape"]), np.array(entry["affine"], dtype=np.float64))

    @staticmethod
    def grid_entry(grid: Grid) -> dict[str, Any]:
        """JSON form of a grid."""
        return {"shape": list(grid.shape), "spacing_mm": [round(s, 6) for s in grid.spacing], "affine": grid.affine.tolist()}

    # ----------------------------------------------------------------- files
    @property
    def weights_path(self) -> Path:
        """The safetensors file beside the card."""
        if self.path is None:
            raise DiffDefInputError(f"model card '{self.name}' was not read from a folder; its weights cannot be located")
        return self.path.parent / self.weights.get("file", "model.safetensors")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (without the file path)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "path"}
        out["conditions"] = [asdict(c) for c in self.conditions]
        return out

    def to_json(self) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, folder: str | Path) -> Path:
        """Write ``model_card.json`` atomically into ``folder``."""
        path = Path(folder) / CARD_FILE
        write_text_atomic(path, self.to_json())
        self.path = path
        return path

    @classmethod
    def from_json(cls, text: str, path: Path | None = None) -> "ModelCard":
        """Parse card JSON; malformed cards raise :class:`DiffDefInputError`."""
        where = str(path) if path else "model card"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise DiffDefInputError(f"{where}: not valid JSON ({error})") from None
        return cls.from_dict(data, path)

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "ModelCard":
        """A card from its parsed JSON; a card of another kind or with wrong fields raises :class:`DiffDefInputError`."""
        where = str(path) if path else "model card"
        if not isinstance(data, dict) or data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
            raise DiffDefInputError(f"{where}: not a generator model card (model_type {data.get('model_type') if isinstance(data, dict) else None!r})")
        known = {f.name for f in fields(cls)} - {"path"}
        try:
            card = cls(**{k: v for k, v in data.items() if k in known})
        except DiffDefInputError as error:
            raise DiffDefInputError(f"{where}: {error}") from None
        except (TypeError, ValueError, KeyError) as error:  # e.g. "minimum": "abc"
            raise DiffDefInputError(f"{where}: missing or wrong fields ({error})") from None
        card.path = path
        return card

    @classmethod
    def load(cls, folder_or_file: str | Path) -> "ModelCard":
        """Read ``model_card.json`` from a model folder (or the card file itself)."""
        path = card_path(folder_or_file)
        return cls.from_dict(read_card(path), path)


def is_generator_card(path: str | Path) -> bool:
    """True when the card at ``path`` is a generator card (``"model_type": "diffdef-generator"``); a card that is
    not readable JSON raises, naming the file and the parse error (it must not vanish from the model list)."""
    return read_card(path).get("model_type") == MODEL_TYPE




def verify_weights(card: ModelCard) -> Path:
    """Check the weights file against the card's size and sha256; a missing, truncated or altered file raises
    :class:`DiffDefInputError`."""
    path = card.weights_path
    return verified_weights(path.parent, {"weights": {**card.weights, "file": path.name}}, f"weights of model '{card.name}'")
