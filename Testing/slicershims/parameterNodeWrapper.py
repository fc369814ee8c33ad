"""``slicer.parameterNodeWrapper``: typed, validated properties stored in a ``vtkMRMLScriptedModuleNode``
(Slicer's ``Base/Python/slicer/parameterNodeWrapper``), for the types the module declares.

What it reproduces of Slicer's serializers and validators:
- a value missing from the node is written with the class default when the wrapper is made;
- ``str`` is stored as is, ``int``/``float`` as ``str(value)`` and read back with the type, ``bool`` as
  ``"True"``/``"False"``; a node as an empty parameter plus a node reference of the same name;
- writing checks ``NotNone`` and ``IsInstance`` (an ``int`` property refuses a ``float``; a ``float`` takes both;
  a node property takes only its node class) and the ``WithinRange`` annotations, raising ``ValueError`` or
  ``TypeError`` as Slicer does, before anything is stored;
- ``AddObserver``, ``RemoveObserver``, ``Modified``, ``StartModify``, ``EndModify`` act on the node.
``connectGui`` and ``disconnectGui`` bind Qt widgets, which do not exist here; they return a tag and do nothing.
"""

from __future__ import annotations

import typing

import slicer


class WithinRange:
    """Validates that a value lies in ``[minimum, maximum]`` (Slicer's message)."""

    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class _Parameter:
    def __init__(self, name: str, kind: type, validators: list, default) -> None:
        self.name, self.kind, self.validators, self.default = name, kind, validators, default
        self.is_node = isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)

    def validate(self, value) -> None:
        if self.is_node:
            if value is not None and not isinstance(value, self.kind):
                raise TypeError(f"Expected type {self.kind}, got type {type(value)}")
            return
        if value is None:
            raise ValueError("Value must not be None")
        allowed = (int, float) if self.kind is float else self.kind
        if not isinstance(value, allowed) or (self.kind is not bool and isinstance(value, bool)):
            raise TypeError(f"Expected type {self.kind}, got type {type(value)}")
        for validator in self.validators:
            validator.validate(value)

    def write(self, node, value) -> None:
        self.validate(value)
        if self.is_node:
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        elif self.kind is bool:
            node.SetParameter(self.name, "True" if value else "False")
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node):
        if not node.HasParameter(self.name):
            self.write(node, self.default)
        if self.is_node:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        return text == "True" if self.kind is bool else self.kind(text)


def _property(parameter: _Parameter) -> property:
    return property(lambda self: parameter.read(self.parameterNode), lambda self, value: parameter.write(self.parameterNode, value))


def parameterNodeWrapper(cls):
    """Class decorator: each annotated attribute becomes a property stored in the wrapped node."""
    parameters = {}
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        kind, validators = hint, []
        if typing.get_origin(hint) is typing.Annotated:
            kind, *validators = typing.get_args(hint)
        default = getattr(cls, name, None if isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode) else kind())
        parameters[name] = _Parameter(name, kind, validators, default)

    def __init__(self, parameterNode, prefix=None) -> None:
        self.parameterNode = parameterNode
        for parameter in parameters.values():
            if not parameterNode.HasParameter(parameter.name):
                parameter.write(parameterNode, parameter.default)

    for name, parameter in parameters.items():
        setattr(cls, name, _property(parameter))
    cls.__init__ = __init__
    cls.allParameters = parameters
    cls.connectGui = lambda self, gui: 0
    cls.disconnectGui = lambda self, tag: None
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.Modified = lambda self: self.parameterNode.Modified()
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, wasModified: self.parameterNode.EndModify(wasModified)
    return cls
