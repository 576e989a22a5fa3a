"""Plain data classes, declared like dataclasses but built without code generation:
:class:`Plain` (the spec model's classes, and a few others every run loads).

``@dataclass`` writes and compiles an ``__init__``, ``__repr__``, ``__eq__`` (and, frozen,
``__setattr__``, ``__delattr__``, ``__hash__``) for every class when its module is imported:
a millisecond or more per class, paid by every run, although a run whose formats come from
the compiled-spec cache never calls ``__init__`` (pickle restores the objects). A
:class:`Plain` subclass gets the same behaviour from generic methods that read the field
list its class statement made: declaring a class costs what a plain class costs. (For classes
made at import and rarely instantiated; a class made per record keeps ``@dataclass``, whose
generated ``__init__`` is faster per call.)

The contract is that of ``@dataclass`` (``frozen=True`` as a class keyword) for what the model
uses: fields are the annotated class attributes in order, base classes' first; a class
attribute gives a field's default, :func:`factory` a default made per instance; ``__init__``
takes the fields positionally or by name and raises TypeError for a missing, unexpected or
repeated one; ``__eq__`` compares the fields of objects of the same class; ``__repr__``
shows them; a frozen class's instances refuse attribute assignment (AttributeError) and
hash by their fields, a mutable one's are unhashable. :func:`replace` is
``dataclasses.replace``. Annotations are not evaluated.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, ClassVar, TypeVar

    T = TypeVar("T", bound="Plain")   # (at run time, a TypeVar's bound compiles its text)
_MISSING = object()


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def factory(make: Callable[[], Any]) -> Any:
    """A field default made anew for each instance (``dataclasses.field(default_factory=)``)."""
    return _Factory(make)


class FrozenError(AttributeError):
    """Assignment to a field of a frozen :class:`Plain` object."""


class Plain:
    """Base of the model's data classes (see the module's docstring)."""

    __fields__: ClassVar[tuple[str, ...]] = ()
    __defaults__: ClassVar[dict[str, Any]] = {}
    __frozen__: ClassVar[bool] = False

    def __init_subclass__(cls, frozen: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = dict.fromkeys(cls.__fields__)
        defaults = dict(cls.__defaults__)
        # (not inspect.get_annotations: its module costs more to import than this saves)
        own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        for name, note in own.items():
            if str(note).startswith(("ClassVar", "typing.ClassVar")):
                continue
            names[name] = None
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, _Factory):
                delattr(cls, name)
            if value is not _MISSING:
                defaults[name] = value
        cls.__fields__ = tuple(names)
        cls.__defaults__ = defaults
        cls.__frozen__ = frozen
        if frozen:
            cls.__hash__ = Plain._hash  # type: ignore[method-assign]
        else:
            cls.__hash__ = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fields = cls.__fields__
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} arguments, "
                            f"{len(args)} given")
        values = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in cls.__defaults__ and name not in fields:
                raise TypeError(f"{cls.__name__}() got an unexpected argument {name!r}")
            if name in values:
                raise TypeError(f"{cls.__name__}() got multiple values for {name!r}")
            values[name] = value
        for name in fields:
            if name not in values:
                default = cls.__defaults__.get(name, _MISSING)
                if default is _MISSING:
                    raise TypeError(f"{cls.__name__}() missing argument {name!r}")
                values[name] = default.make() if isinstance(default, _Factory) else default
        self.__dict__.update(values)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in type(self).__fields__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    def _hash(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in type(self).__fields__)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: Any) -> None:
        if type(self).__frozen__:
            raise FrozenError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if type(self).__frozen__:
            raise FrozenError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)


def replace(obj: T, **changes: Any) -> T:
    """A new object of *obj*'s class with its fields, but *changes* (``dataclasses.replace``:
    made through ``__init__``, so defaults and derived values are made afresh)."""
    values = {name: getattr(obj, name) for name in type(obj).__fields__}
    values.update(changes)
    return type(obj)(**values)
