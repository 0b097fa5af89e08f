"""How a setting is declared, and the checks every front end shares.  Torch-free.

A setting is a field of a dataclass (nst_engine.settings.StyleSettings) whose default comes with a
:class:`SettingSpec` (help, range or choices, unit, which front ends show it), given by :func:`setting`;
its type annotation says what kind of value it takes.  :func:`settings_of` reads them back as
:class:`Setting` records, which check values with messages that name the field.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import InvalidSettingsError
from .layers import LAYER_NAMES, validate_layer_names

_SPEC_KEY = "nst_engine.schema"
MAX_LIST_LENGTH = 64  # numbers in a weight list


class FrontEnd(str, enum.Enum):
    """Where a user can give a setting; every setting is also a StyleSettings field of the Python API."""

    CLI = "cli"  # python -m nst_engine and python -m daemon run
    GIMP = "gimp"  # an argument of the plug-in's procedure, shown in its dialog
    WIRE = "wire"  # the ``settings`` map of the daemon's submit message


class Kind(enum.Enum):
    """What values a setting takes; read from the field's type annotation."""

    NUMBER = "number"  # float
    INTEGER = "integer"  # int
    FLAG = "flag"  # bool
    CHOICE = "choice"  # a str-valued enum; plain values are its members' values
    NUMBERS = "numbers"  # tuple[float, ...] | None: a weight list, None for the default weighting
    INTEGERS = "integers"  # tuple[int, ...] | None: a list of integers in a range, None for the default
    LAYER = "layer"  # str: a VGG19 layer name
    LAYERS = "layers"  # tuple[str, ...]: VGG19 layer names


_KINDS: dict[object, Kind] = {
    float: Kind.NUMBER,
    int: Kind.INTEGER,
    bool: Kind.FLAG,
    tuple[float, ...] | None: Kind.NUMBERS,
    tuple[int, ...] | None: Kind.INTEGERS,
    str: Kind.LAYER,
    tuple[str, ...]: Kind.LAYERS,
}


@dataclass(frozen=True)
class Choice:
    """One value of a choice setting, with its name in a dialog and a line of help."""

    value: str
    label: str
    help: str


@dataclass(frozen=True)
class SettingSpec:
    """Everything about a setting except its name, type and default.

    A number lies in [minimum, maximum]; an integer also on the ``multiple_of`` grid, or is 0 when
    ``zero_means`` says what 0 stands for.  ``label`` is the setting's name in a dialog, with ``_``
    before its access key (a GTK mnemonic).
    """

    help: str
    front_ends: frozenset[FrontEnd] = frozenset()
    label: str = ""
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    zero_means: str | None = None
    none_means: str | None = None  # what the default None stands for (weight lists)
    choices: tuple[Choice, ...] = ()


def setting(default: Any, help: str, *, front_ends: Iterable[FrontEnd] = (), **spec: Any) -> Any:
    """A dataclass field with its default and its :class:`SettingSpec` (typed Any so that it can stand as
    the default of a field of any type)."""
    declared = SettingSpec(help, frozenset(front_ends), **spec)
    return dataclasses.field(default=default, metadata={_SPEC_KEY: declared})


@dataclass(frozen=True)
class Setting:
    """One declared setting, as front ends use it."""

    name: str
    kind: Kind
    default: Any
    spec: SettingSpec
    choice_type: type[enum.Enum] | None = None

    def shown_in(self, front_end: FrontEnd) -> bool:
        return front_end in self.spec.front_ends

    @property
    def option(self) -> str:
        """The command line's option."""
        return "--" + self.name.replace("_", "-")

    @property
    def argument(self) -> str:
        """The GIMP procedure's argument name."""
        return self.name.replace("_", "-")

    @property
    def choice_values(self) -> tuple[str, ...]:
        return tuple(choice.value for choice in self.spec.choices)

    def plain_default(self) -> Any:
        """The default as a wire or command-line value: enum members as their values, tuples as lists."""
        if isinstance(self.default, enum.Enum):
            return self.default.value
        return list(self.default) if isinstance(self.default, tuple) else self.default

    @property
    def bounds(self) -> tuple[float, float]:
        """(minimum, maximum) of a number or an integer, or of the items of a list (settings_of makes sure
        both are declared)."""
        assert self.spec.minimum is not None and self.spec.maximum is not None
        return self.spec.minimum, self.spec.maximum

    def requirement(self) -> str:
        """What a valid value is, in words: completes "<name> must be …"."""
        spec = self.spec
        if self.kind is Kind.NUMBER:
            return f"a finite number from {_number(spec.minimum)} to {_number(spec.maximum)}"
        if self.kind is Kind.INTEGER:
            grid = f"a multiple of {spec.multiple_of}" if spec.multiple_of else "an integer"
            plain = f"{grid} from {_number(spec.minimum)} to {_number(spec.maximum)}"
            return f"0 ({spec.zero_means}) or {plain}" if spec.zero_means else plain
        if self.kind is Kind.FLAG:
            return "true or false"
        if self.kind is Kind.CHOICE:
            return f"one of {', '.join(self.choice_values)}"
        if self.kind is Kind.NUMBERS:
            low, high = (_number(bound) for bound in self.bounds)
            return f"a list of 1 to {MAX_LIST_LENGTH} numbers from {low} to {high}, not all zero"
        if self.kind is Kind.INTEGERS:
            return f"a list of 1 to {MAX_LIST_LENGTH} integers from {_number(spec.minimum)} to {_number(spec.maximum)}"
        if self.kind is Kind.LAYER:
            return f"a VGG19 layer name, {LAYER_NAMES[0]} to {LAYER_NAMES[-1]}"
        return f"a list of 1 to {len(LAYER_NAMES)} VGG19 layer names"

    def check(self, value: Any, prefix: str = "") -> None:
        """Raise InvalidSettingsError naming ``prefix + name`` unless ``value`` is valid; the plain form of
        a value (a choice's string, a list for a tuple) is valid wherever the typed form is."""
        where = prefix + self.name
        if self.kind is Kind.LAYER and isinstance(value, str):
            validate_layer_names([value], where)
        elif self.kind is Kind.LAYERS and _is_list(value) and 1 <= len(value) <= len(LAYER_NAMES) \
                and all(isinstance(name, str) for name in value):
            validate_layer_names(value, where)
        elif not self._accepts(value):
            raise InvalidSettingsError(f"{where} must be {self.requirement()}, got {value!r}")

    def _accepts(self, value: Any) -> bool:
        spec = self.spec
        if self.kind is Kind.NUMBER:
            low, high = self.bounds
            return _is_number(value) and low <= value <= high
        if self.kind is Kind.INTEGER:
            if not isinstance(value, int) or isinstance(value, bool):
                return False
            if value == 0 and spec.zero_means:
                return True
            low, high = self.bounds
            return low <= value <= high and value % (spec.multiple_of or 1) == 0
        if self.kind is Kind.FLAG:
            return isinstance(value, bool)
        if self.kind is Kind.CHOICE:
            return isinstance(value, str) and value in self.choice_values
        if self.kind is Kind.NUMBERS:
            low, high = self.bounds
            return value is None or (
                _is_list(value) and 1 <= len(value) <= MAX_LIST_LENGTH
                and all(_is_number(weight) and low <= weight <= high for weight in value) and sum(value) > 0
            )
        if self.kind is Kind.INTEGERS:
            low, high = self.bounds
            return value is None or (
                _is_list(value) and 1 <= len(value) <= MAX_LIST_LENGTH
                and all(isinstance(item, int) and not isinstance(item, bool) and low <= item <= high for item in value)
            )
        return False  # layer names are checked in check()

    def convert(self, value: Any) -> Any:
        """A valid plain value as the field's type: a choice's enum member, a float, a tuple."""
        if self.kind is Kind.CHOICE:
            assert self.choice_type is not None
            return self.choice_type(value)
        if self.kind is Kind.NUMBER:
            return float(value)
        if self.kind is Kind.NUMBERS and value is not None:
            return tuple(float(weight) for weight in value)
        if self.kind is Kind.INTEGERS and value is not None:
            return tuple(value)
        if self.kind is Kind.LAYERS:
            return tuple(value)
        return value


def settings_of(cls: type) -> dict[str, Setting]:
    """The settings declared by a dataclass's fields, in field order."""
    hints = typing.get_type_hints(cls)
    declared: dict[str, Setting] = {}
    for field in dataclasses.fields(cls):
        spec = field.metadata.get(_SPEC_KEY)
        if spec is None:
            raise TypeError(f"{cls.__name__}.{field.name} is not declared with schema.setting()")
        hint = hints[field.name]
        choice_type = hint if isinstance(hint, type) and issubclass(hint, enum.Enum) else None
        kind = Kind.CHOICE if choice_type is not None else _KINDS.get(hint)
        if kind is None:
            raise TypeError(f"{cls.__name__}.{field.name}: a setting cannot have the type {hint}")
        bounded = (Kind.NUMBER, Kind.NUMBERS, Kind.INTEGER, Kind.INTEGERS)
        if kind in bounded and (spec.minimum is None or spec.maximum is None):
            raise TypeError(f"{cls.__name__}.{field.name}: a number needs a minimum and a maximum")
        if choice_type is not None and tuple(c.value for c in spec.choices) != tuple(m.value for m in choice_type):
            raise TypeError(f"{cls.__name__}.{field.name}: its choices must list "
                            f"{choice_type.__name__}'s values in order")
        item = Setting(field.name, kind, field.default, spec, choice_type)
        item.check(field.default)
        declared[field.name] = item
    return declared


def _number(value: float | None) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)  # an int is finite, and may be too large for a float


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple))
