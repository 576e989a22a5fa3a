"""Plain data classes (the spec model's, Detection, StreamParam): they behave as the dataclasses
they replace."""

from __future__ import annotations

import dataclasses
import functools
import pickle

import pytest

from xenmig_core.plain import Plain, factory, replace
from xenmig_core.spec.model import Condition, Framing, RecordType


class Point(Plain, frozen=True):
    x: int
    y: int = 0
    tags: list[str] = factory(list)


class Box(Plain):
    name: str
    items: list[int] = factory(list)

    @functools.cached_property
    def total(self) -> int:
        return sum(self.items)


class Labelled(Box):
    label: str = "none"


@dataclasses.dataclass(frozen=True)
class PointDC:
    x: int
    y: int = 0
    tags: list[str] = dataclasses.field(default_factory=list)


def test_init_takes_fields_by_position_or_name_with_defaults() -> None:
    assert (Point(1).x, Point(1).y, Point(1).tags) == (1, 0, [])
    assert Point(1, 2) == Point(y=2, x=1) == Point(1, y=2)
    assert Point(1).tags is not Point(1).tags      # a factory makes one per instance
    assert Labelled("b", [1]).label == "none"
    assert Labelled.__fields__ == ("name", "items", "label")
    for bad in ((), (1, 2, [], 4)):
        with pytest.raises(TypeError):
            Point(*bad)
    with pytest.raises(TypeError):
        Point(1, x=2)
    with pytest.raises(TypeError):
        Point(1, z=2)


def test_equality_hash_repr_and_frozen_as_a_dataclass() -> None:
    assert Point(1, 2) != Point(1, 3)
    assert Point(1, 2).__eq__(PointDC(1, 2)) is NotImplemented
    assert hash(Point(1, 2, ())) == hash(Point(1, 2, ()))
    assert repr(Point(1, 2)) == repr(PointDC(1, 2)).replace("PointDC", "Point")
    with pytest.raises(AttributeError):
        Point(1).x = 3            # type: ignore[misc]
    with pytest.raises(AttributeError):
        del Point(1).x            # type: ignore[misc]
    box = Box("a")
    box.name = "b"
    assert box.name == "b"
    with pytest.raises(TypeError):
        hash(box)                 # mutable: unhashable, as a dataclass with eq is


def test_replace_makes_a_new_object_through_init() -> None:
    box = Box("a", [1, 2])
    assert box.total == 3
    other = replace(box, items=[5])
    assert (other.name, other.items, other.total, box.total) == ("a", [5], 5, 3)
    assert replace(Point(1, 2), y=5) == Point(1, 5)


def test_model_objects_pickle_and_compare() -> None:
    rtype = RecordType(id=1, name="A", title="a record")
    rtype.length.append("x")
    assert RecordType(id=1, name="A", title="a record").length == []
    copy = pickle.loads(pickle.dumps(rtype))
    assert copy == rtype and copy is not rtype
    framing = Framing("u32", "u32", 8, 1 << 20, 0x80000000)
    assert framing.header_codes == "II"
    cond = pickle.loads(pickle.dumps(Condition(expr=None, message=None, id="c")))  # type: ignore[arg-type]
    assert cond == Condition(expr=None, message=None, id="c")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        cond.id = "d"             # type: ignore[misc]


def test_diagnostic_init_takes_its_fields_as_the_dataclass_did() -> None:
    """Diagnostic writes its ``__init__`` out (speed): it must take exactly its fields, in
    order, with their defaults, and the object must stay frozen, equal and hashable."""
    import inspect

    from xenmig_core.diagnostics import Diagnostic

    params = inspect.signature(Diagnostic.__init__).parameters
    assert list(params)[1:] == list(Diagnostic.__fields__)
    assert {n: p.default for n, p in params.items() if p.default is not p.empty} == \
        Diagnostic.__defaults__
    one = Diagnostic("error", "bad", 16, 2, "PAGE_DATA", "pfn[0]", "libxc", None, "R.1")
    same = Diagnostic(severity="error", message="bad", offset=16, record_index=2,
                      record_type="PAGE_DATA", field="pfn[0]", format="libxc", rule="R.1")
    assert one == same and hash(one) == hash(same) and {one, same} == {one}
    assert [getattr(one, n) for n in Diagnostic.__fields__] == \
        ["error", "bad", 16, 2, "PAGE_DATA", "pfn[0]", "libxc", None, "R.1"]
    assert one.to_dict() == {"severity": "error", "message": "bad", "offset": 16,
                             "record_index": 2, "record_type": "PAGE_DATA", "field": "pfn[0]",
                             "format": "libxc", "rule": "R.1", "text": str(one)}
    with pytest.raises(AttributeError):
        one.message = "other"     # type: ignore[misc]
