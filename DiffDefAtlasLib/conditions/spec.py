"""The schema of one condition of a generator: its kind, trained range or categories, units and default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..errors import DiffDefInputError

#: The kinds of condition a model card may declare.
KINDS = ("continuous", "categorical")


@dataclass
class ConditionSpec:
    """One condition of a generator: ``kind`` is ``"continuous"`` (a number in [minimum, maximum], the trained range)
    or ``"categorical"`` (one of ``choices``). ``default`` is the value a GUI starts from; a condition left unset at
    generation time uses the model's learned "null" token instead (classifier-free guidance).

    Example:
        >>> ConditionSpec("sex", "categorical", choices=["F", "M"], default="F").choices
        ['F', 'M']
    """

    name: str
    kind: str = "continuous"
    minimum: float | None = None
    maximum: float | None = None
    units: str = ""
    choices: list[str] | None = None
    default: float | str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DiffDefInputError(f"condition '{self.name}': kind must be one of {', '.join(KINDS)}, found {self.kind!r}")
        if self.kind == "continuous":
            if self.minimum is None or self.maximum is None or not float(self.minimum) < float(self.maximum):
                raise DiffDefInputError(
                    f"condition '{self.name}': a continuous condition needs minimum < maximum, found {self.minimum}, {self.maximum}"
                )
            self.minimum, self.maximum = float(self.minimum), float(self.maximum)
        elif not self.choices:
            raise DiffDefInputError(f"condition '{self.name}': a categorical condition needs a non-empty list of choices")
        else:
            self.choices = [str(c) for c in self.choices]

    def describe_range(self) -> str:
        """``"45-80 years"`` or ``"F|M"``: the trained range as short text."""
        if self.kind == "categorical":
            return "|".join(self.choices or [])
        return f"{self.minimum:g}-{self.maximum:g}{(' ' + self.units) if self.units else ''}"


class ConditionedModel(Protocol):
    """What the condition functions read of a model card: its name, its conditions and a look-up by name
    (:class:`~DiffDefAtlasLib.generate.model_card.ModelCard` is one)."""

    name: str

    @property
    def conditions(self) -> Sequence[ConditionSpec]: ...

    def condition(self, name: str) -> ConditionSpec: ...
