"""Per-stream state (:class:`StreamContext`), records, and the actions a record can take.

A context exists for each format instance in a walk: a plain libxc stream has one; an xl
save file has an xl context, then a libxl one, then a libxc one nested in it. Contexts hold
the layout state the spec's rules need (marks, counts, named state values, statistics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from xenmig_core.diagnostics import ERROR, WARNING, Diagnostic
from xenmig_core.plain import Plain
from xenmig_core.spec.expr import Names

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.registry import Format
    from xenmig_core.spec.model import RecordType


class Action(Plain, frozen=True):
    """What happens after a record: ``continue``, ``end`` this context, ``yield`` to the
    enclosing context (keeping this one for later), start a ``nested`` context of
    ``format``, or ``resume`` the suspended nested context of ``format``."""

    kind: str
    format: str | None = None

    def __init__(self, kind: str, format: str | None = None) -> None:
        self.__dict__.update(kind=kind, format=format)   # (frozen: not through setattr)


CONTINUE = Action("continue")


class Tally(Counter):  # type: ignore[type-arg]
    """A :class:`~collections.Counter` (a missing key counts 0) whose item assignment is
    dict's own, for counts updated record by record: Counter's Python-level ``__delitem__``
    sends every ``tally[key] += n`` through a slot about three times slower. Deleting a
    missing key raises KeyError, as for a dict."""

    __delitem__ = dict.__delitem__
#: the names of the functions each context adds for its expressions (see helpers)
CONTEXT_HELPERS = ("child_state", "child_status")
#: a field of :class:`Record` without a default (see :data:`RECORD_FIELDS`)
REQUIRED: Any = object()


#: :class:`Record`'s fields in order, each with its default (:data:`REQUIRED`: none; ``dict``:
#: a new empty dict), for code that makes records without calling ``__init__``
RECORD_FIELDS: tuple[tuple[str, Any], ...] = (
    ("index", REQUIRED), ("offset", REQUIRED), ("type_id", REQUIRED), ("name", REQUIRED),
    ("length", REQUIRED), ("context", REQUIRED), ("rtype", None), ("fields", dict),
    ("payload_length", 0), ("payload_offset", None), ("optional", False), ("decoded", False),
    ("summary", None), ("padding", b""))


class Record:
    """One framed record, its decoded (non-payload) fields and where it stood.

    A class with ``__slots__`` and the ``__init__``, ``__eq__`` and ``__repr__`` that
    ``@dataclass(slots=True)`` would write for its fields (:data:`RECORD_FIELDS`), written
    out: a dataclass costs its module (and ``inspect``) and code generation at every start.
    """

    __slots__ = tuple(name for name, _default in RECORD_FIELDS)

    def __init__(self, index: int, offset: int, type_id: int, name: str, length: int,
                 context: StreamContext, rtype: RecordType | None = None,
                 fields: dict[str, Any] | None = None, payload_length: int = 0,
                 payload_offset: int | None = None, optional: bool = False,
                 decoded: bool = False, summary: str | None = None,
                 padding: bytes = b"") -> None:
        self.index = index
        self.offset = offset
        self.type_id = type_id
        self.name = name
        self.length = length
        self.context = context
        self.rtype = rtype
        #: the decoded fields (a new dict when none are given)
        self.fields = {} if fields is None else fields
        self.payload_length = payload_length
        self.payload_offset = payload_offset
        self.optional = optional
        self.decoded = decoded
        self.summary = summary
        #: the alignment bytes read after the body (empty when the body was already aligned)
        self.padding = padding

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]   # (mutable and compared by value)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"Record({shown})"

    @property
    def format(self) -> str:
        return self.context.format.name

    @property
    def title(self) -> str:
        return self.rtype.title if self.rtype else self.name


class HeaderValue(Plain):
    """A decoded header."""

    name: str
    title: str
    offset: int
    size: int
    fields: dict[str, Any]
    context: StreamContext
    summary: str | None = None


class StreamContext:
    """The state of one format instance during a walk.

    Handlers read and update ``state`` (named values the spec declares), ``stats`` (counters
    that end up in reports) and report problems with :meth:`error` / :meth:`warning`.
    """

    def __init__(self, fmt: Format, *, parent: StreamContext | None, depth: int,
                 start_offset: int, report: Callable[[Diagnostic], None],
                 drop: Callable[..., bool] | None = None) -> None:
        self.format = fmt
        self.parent = parent
        self.depth = depth
        self.start_offset = start_offset
        self.state: dict[str, Any] = dict(fmt.spec.state)
        self.marks: set[str] = set()
        self.counts: Counter[str] = Tally()
        self.stats: dict[str, Counter[str]] = {}
        self.headers: dict[str, dict[str, Any]] = {}
        self.header_index = 0
        self.byte_order = "<"
        self.finished = False
        self.suspended = False
        self.children: dict[str, StreamContext] = {}
        self.last_record: Record | None = None
        self.current: Record | None = None
        self.walker_state: dict[str, Any] = {}
        #: whether the walk shows record summaries (its consumer's ``wants_summaries``): a
        #: handler may leave a summary it would write out when this is false
        self.summaries = True
        #: the engine's record plans for this context, by record type id (engine-internal)
        self.plans: dict[int, Any] = {}
        self._report = report
        #: the diagnostic caps' early drop (see DiagnosticCaps.drop), when there are caps
        self._drop = drop
        #: the functions an expression may call that read this context (CONTEXT_HELPERS)
        self.helpers = {"child_state": self.child_state, "child_status": self.child_status}
        #: where an expression looks up a name that is not a field of the record, in order
        self.name_fallback = (self.state, self.helpers, fmt.helpers)
        #: the names of :meth:`names` without fields, for the engine's generated code only
        #: (read, never written: state is looked up live)
        self.bare_names = Names((), self.name_fallback)
        #: the engine's compiled record functions, by byte order and type id (None for a
        #: type that takes the general path, a count until one is made); engine-internal
        self.compiled: dict[str, dict[int, Any]] = {}

    @property
    def name(self) -> str:
        return self.format.name

    def names(self, fields: dict[str, Any] | None = None, **extra: Any) -> Names:
        """The names an expression sees: *extra*, record *fields*, state, helpers. State is
        looked up live (a value set after this call is seen); fields and *extra* are copied."""
        names = Names(fields or (), self.name_fallback)
        if extra:
            names.update(extra)
        return names

    def child_state(self, fmt: str, key: str, default: Any = None) -> Any:
        """State value *key* of this context's nested *fmt* stream (*default* when there is
        none yet). Lets a wrapping format's rules depend on what its nested stream found."""
        child = self.children.get(fmt)
        return child.state.get(key, default) if child is not None else default

    def child_status(self, fmt: str) -> str:
        """``none``, ``running``, ``suspended`` (it yielded) or ``finished`` for the nested
        *fmt* stream of this context."""
        child = self.children.get(fmt)
        if child is None:
            return "none"
        if child.finished:
            return "finished"
        return "suspended" if child.suspended else "running"

    def stat(self, group: str, key: str, amount: int = 1) -> None:
        """Add *amount* to counter *key* of statistics group *group*."""
        counter = self.stats.get(group)
        if counter is None:
            counter = self.stats[group] = Tally()
        counter[key] += amount

    def diagnose(self, severity: str, message: str, *, field: str | None = None,
              record: Record | None = None, offset: int | None = None,
              unit: str | None = None, rule: str | None = None) -> None:
        """Report a diagnostic of *severity*; where defaults to the current record. *rule*
        is the id of the spec rule that found it, if one did."""
        record = record if record is not None else (self.current if unit is None else None)
        if self._drop is not None and self._drop(
                self.format.name, record.name if record is not None else unit, severity,
                field, message):
            return
        self._report(Diagnostic(
            severity=severity, message=message,
            offset=offset if offset is not None else (record.offset if record else None),
            record_index=record.index if record else None,
            record_type=record.name if record else None,
            field=field, format=self.format.name, unit=unit, rule=rule))

    def report_capped(self, problems: Iterable[tuple[str, str, str | None]], limit: int, *,
                      more: str | None, field: str | None = None) -> int:
        """Report the first *limit* of *problems* (``(severity, message, field)`` each, at the
        current record); count the rest without reporting them and, when there are any and
        *more* is given, add one diagnostic ``"N more {more} after the first {limit}"`` at
        *field*, as severe as the worst of them. *problems* may be a generator: it is
        consumed once, and only the reported ones need be kept. Returns how many problems
        there were in all."""
        total = 0
        worst = WARNING
        for severity, message, where in problems:
            total += 1
            if total <= limit:
                self.diagnose(severity, message, field=where)
            elif severity == ERROR:
                worst = ERROR
        if total > limit and more is not None:
            self.diagnose(worst, f"{total - limit} more {more} after the first {limit}",
                          field=field)
        return total

    def error(self, message: str, **where: Any) -> None:
        """Report an error (the stream is invalid) at the current record unless told where."""
        self.diagnose(ERROR, message, **where)

    def warning(self, message: str, **where: Any) -> None:
        """Report a warning (worth knowing; the stream stays valid)."""
        self.diagnose(WARNING, message, **where)
