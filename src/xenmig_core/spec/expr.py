"""A small, safe expression language for specs: ``8 + 16 * count``, ``version >= 3``.

Expressions are Python syntax restricted to literals, names, arithmetic, bit operations,
comparisons, ``and``/``or``/``not``, ``x if c else y``, subscripts and calls of the helper
functions in :data:`FUNCTIONS`. They are parsed and checked once when a spec loads, compiled
to a code object, and evaluated per record against a mapping of names (record fields first,
then stream state). Templates (``"{guest_width * 8}-bit guest"``) embed expressions in text.

Against a :class:`Names` mapping (what the engine builds) an expression runs as a compiled
function whose every name is one dict look-up (``N["count"]``), not through ``eval`` and a
chain of mappings; against any other mapping it is evaluated with ``eval`` as before. Both
give the same value, and an unknown name raises ``NameError`` in both. Expressions and
templates pickle as their source text and are recompiled when loaded (the compiled-spec
cache stores them compiled instead: :meth:`Expression.cache_state`).
"""

from __future__ import annotations

import marshal
import re
from collections.abc import Callable, Mapping
from types import FunctionType

from xenmig_core.errors import SpecError

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    import ast
    from typing import Any

# ``ast`` (a millisecond and more to import) is imported where expressions are parsed,
# rewritten or compiled: a run whose formats come from the compiled-spec cache, their
# expressions stored compiled, never does.
_syntax: dict[str, Any] = {}


def _allowed_nodes() -> tuple[type, ...]:
    """The syntax nodes an expression may hold (made once)."""
    if "allowed" not in _syntax:
        import ast
        _syntax["allowed"] = (
            ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp,
            ast.Call, ast.Name, ast.Load, ast.Store, ast.Constant, ast.Subscript, ast.Tuple,
            ast.List, ast.GeneratorExp, ast.ListComp, ast.comprehension, ast.Slice,
            ast.And, ast.Or, ast.Not, ast.USub, ast.UAdd, ast.Invert,
            ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift,
            ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor,
            ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn, ast.Is,
            ast.IsNot,
        )
    return _syntax["allowed"]  # type: ignore[no-any-return]


def _bits(value: int, low: int, count: int) -> int:
    return (value >> low) & ((1 << count) - 1)


#: Functions an expression may call. Enum look-ups are bound per format (``enum``).
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "min": min, "max": max, "hex": hex, "abs": abs, "sum": sum,
    "bits": _bits, "any": any, "all": all, "str": str, "int": int, "bool": bool,
    "join": lambda items, sep=", ": sep.join(str(i) for i in items),
    "plural": lambda n, word: f"{n} {word}" + ("" if n == 1 else "s"),
}


class Names(dict[str, "Any"]):
    """The names an expression sees, as one dict with fallbacks: its own items (record
    fields and extras such as ``body_length``) first, then each mapping of *fallback* in
    order (stream state, helper functions), looked up live when a name is not its own.

    Contract: ``names[key]`` raises ``NameError`` (as ``eval`` does) for a name found
    nowhere; ``in``, ``get`` and :meth:`flat` see the fallbacks too. Iteration and ``len``
    see only its own items.
    """

    __slots__ = ("fallback",)

    def __init__(self, own: Mapping[str, Any], fallback: tuple[Mapping[str, Any], ...]
                 ) -> None:
        super().__init__(own)
        self.fallback = fallback

    def __missing__(self, key: str) -> Any:
        for mapping in self.fallback:
            if key in mapping:
                return mapping[key]
        raise NameError(f"name {key!r} is not defined")

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or any(key in m for m in self.fallback)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[key]
        except NameError:
            return default

    def flat(self) -> dict[str, Any]:
        """Every visible name in one plain dict (own items win over fallbacks)."""
        out: dict[str, Any] = {}
        for mapping in reversed(self.fallback):
            out.update(mapping)
        out.update(self)
        return out

    def with_value(self, **extra: Any) -> Names:
        """A copy with *extra* names added (winning over every other)."""
        names = Names(self, self.fallback)
        names.update(extra)
        return names


def _rename_class() -> Any:
    """The transformer that rewrites every free name ``x`` to ``_N["x"]`` (names a
    comprehension binds stay); made once."""
    if "rename" not in _syntax:
        import ast

        class _Rename(ast.NodeTransformer):
            def __init__(self, bound: frozenset[str]) -> None:
                self.bound = bound

            def visit_Name(self, node: ast.Name) -> ast.AST:
                if node.id in self.bound or not isinstance(node.ctx, ast.Load):
                    return node
                return ast.copy_location(ast.Subscript(value=ast.Name("_N", ast.Load()),
                                                       slice=ast.Constant(node.id),
                                                       ctx=ast.Load()), node)
        _syntax["rename"] = _Rename
    return _syntax["rename"]


def _renamed(tree: ast.Expression) -> ast.expr:
    """*tree*'s body with every free name ``x`` read as ``_N["x"]``."""
    import ast

    bound = frozenset(n.id for n in ast.walk(tree)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return _rename_class()(bound).visit(ast.parse(ast.unparse(tree), mode="eval")).body


def _function(body: ast.expr, filename: str) -> Callable[[Names], Any]:
    """Compile *body* (names already read from ``_N``) to ``lambda _N: <body>``."""
    import ast

    args = ast.arguments(posonlyargs=[], args=[ast.arg("_N")], kwonlyargs=[], kw_defaults=[],
                         defaults=[])
    wrapper = ast.fix_missing_locations(ast.Expression(ast.Lambda(args, body)))
    return eval(compile(wrapper, filename, "eval"), {"__builtins__": {}})  # type: ignore


def _rebuild(cls: type, source: str, where: str) -> Any:
    return cls(source, where=where)


class Expression:
    """A checked expression. ``evaluate(names)`` returns its value.

    The source is parsed and checked when the expression is made (a bad one is a SpecError
    then); it is compiled on first evaluation, so a spec's unused expressions cost no
    compilation. An unknown name at evaluation time raises ``NameError``; the engine reports
    it as a spec error naming the expression, since specs are validated against known names
    where possible.
    """

    __slots__ = ("_code", "_fast_source", "_fn", "_scoped", "_stored", "names", "source",
                 "where")

    def __init__(self, source: str, *, where: str = "<expr>") -> None:
        self.source = source
        self.where = where
        import ast

        tree = self._tree()
        allowed = _allowed_nodes()
        for node in ast.walk(tree):
            if not isinstance(node, allowed):
                raise SpecError(f"expression {source!r} uses {type(node).__name__}, "
                                "which specs do not allow", path=where)
            if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
                raise SpecError(f"expression {source!r}: only plain function calls allowed",
                                path=where)
            if isinstance(node, ast.Name) and node.id.startswith("_"):
                raise SpecError(f"expression {source!r}: names may not start with '_'",
                                path=where)
        self.names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))
        # Comprehensions have their own scope and see only globals: give them a real dict.
        self._scoped = any(isinstance(n, ast.comprehension) for n in ast.walk(tree))
        self._code: Any = None
        self._fn: Callable[[Names], Any] | None = None
        self._fast_source: str | None = None
        #: the compiled code as marshal data, as the compiled-spec cache stores it (made into
        #: a function or code object on first evaluation), or None
        self._stored: bytes | None = None

    def _tree(self) -> ast.Expression:
        import ast

        try:
            return ast.parse(self.source.strip(), mode="eval")
        except SyntaxError as exc:
            raise SpecError(f"invalid expression {self.source!r}: {exc.msg}",
                            path=self.where) from None

    @property
    def scoped(self) -> bool:
        """True when the expression has a comprehension (it is evaluated with ``eval``, and
        generated code does not embed it)."""
        return self._scoped

    @property
    def fast_source(self) -> str:
        """Python source of the expression reading every name from a :class:`Names` ``_N``
        (generated code embeds it: see :mod:`xenmig_core.engine.guards`)."""
        if self._fast_source is None:
            import ast

            self._fast_source = ast.unparse(_renamed(self._tree()))
        return self._fast_source

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (Expression, self.source, self.where))

    def cache_state(self) -> dict[str, Any]:
        """The expression's state as the compiled-spec cache stores it: compiled (the
        :class:`Names` function's code, or a comprehension's ``eval`` code) as marshal
        data, turned back into code only when the expression is first evaluated, so a warm
        run neither compiles an expression nor loads the code of those it does not use."""
        if self._stored is None:
            code = self._load_code() if self._scoped else self._load_fn().__code__
            self._stored = marshal.dumps(code)
        state = {name: getattr(self, name) for name in self.__slots__ if hasattr(self, name)}
        state.update(_fn=None, _code=None)
        return state

    def _load_fn(self) -> Callable[[Names], Any]:
        """The :class:`Names` function (made once): from the stored code, else compiled."""
        if self._fn is None:
            if self._stored is not None:
                self._fn = FunctionType(marshal.loads(self._stored), {"__builtins__": {}})
            else:
                import ast

                self._fn = _function(ast.parse(self.fast_source, mode="eval").body,
                                     f"<spec {self.where}>")
        return self._fn

    def _load_code(self) -> Any:
        """The ``eval`` code (made once): a comprehension's from the stored code, else
        compiled."""
        if self._code is None:
            if self._scoped and self._stored is not None:
                self._code = marshal.loads(self._stored)
            else:   # (from the text, already checked: the same code as from its tree)
                self._code = compile(self.source.strip(), f"<spec {self.where}>", "eval")
        return self._code

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """Evaluate against *names* (a mapping: fields, state, helper functions)."""
        if type(names) is Names and not self._scoped:
            fn = self._fn
            if fn is None:
                fn = self._load_fn()
            return fn(names)
        if self._code is None:
            self._load_code()
        if self._scoped:   # a comprehension binds names of its own: plain eval, one dict
            scope = names.flat() if type(names) is Names else dict(names)
            scope["__builtins__"] = {}
            return eval(self._code, scope)
        return eval(self._code, {"__builtins__": {}}, names)

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"


#: a template's ``{...}`` part (compiled by ``re`` when a template is first made: a run
#: whose formats come from the cache makes none)
_TEMPLATE_PART = r"\{([^{}]+)\}"


class Template:
    """Text with ``{expression}`` or ``{expression:format}`` parts, e.g. ``"{khz} kHz"``.

    Against a :class:`Names` mapping it renders through one function compiled on first use
    (the text's parts and every expression inlined, as :attr:`Expression.fast_source`), with
    the same text and the same exceptions as rendering part by part."""

    __slots__ = ("_fn", "_parts", "source", "where")

    def __init__(self, source: str, *, where: str = "<template>") -> None:
        self.source = source
        self.where = where
        self._fn: Callable[[Names], str] | None = None
        self._parts: list[str | tuple[Expression, str]] = []
        pos = 0
        for match in re.finditer(_TEMPLATE_PART, source):
            self._parts.append(source[pos:match.start()])
            body = match.group(1)
            expr, fmt = _split_format(body)
            self._parts.append((Expression(expr, where=where), fmt))
            pos = match.end()
        self._parts.append(source[pos:])

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (Template, self.source, self.where))

    def render(self, names: Mapping[str, Any]) -> str:
        if type(names) is Names:
            fn = self._fn
            if fn is None:
                fn = self._fn = self._compile()
            return fn(names)
        out = []
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
            else:
                expr, fmt = part
                out.append(format(expr.evaluate(names), fmt))
        return "".join(out)


    def _compile(self) -> Callable[[Names], str]:
        """``lambda _N: 'text ' + _format(<expression>, 'fmt') + ...``: the parts in order,
        left to right as :meth:`render` takes them (an expression with a comprehension is
        called as itself: generated code does not embed it)."""
        scope: dict[str, Any] = {"__builtins__": {}, "_format": format}
        pieces = []
        for i, part in enumerate(self._parts):
            if isinstance(part, str):
                if part:
                    pieces.append(repr(part))
                continue
            expr, fmt = part
            if expr.scoped:
                scope[f"_E{i}"] = expr
                value = f"_E{i}.evaluate(_N)"
            else:
                value = f"({expr.fast_source})"
            pieces.append(f"_format({value}, {fmt!r})")
        source = f"lambda _N: {' + '.join(pieces) or repr('')}"
        fn: Callable[[Names], str] = eval(compile(source, f"<spec {self.where}>", "eval"),
                                          scope)
        return fn


def _split_format(body: str) -> tuple[str, str]:
    """Split ``expr:format`` at the first ':' outside brackets and string literals."""
    depth = 0
    quote = ""
    for i, ch in enumerate(body):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ":" and depth == 0:
            return body[:i], body[i + 1:]
    return body, ""


def compile_value(value: Any, *, where: str) -> Expression | int:
    """An int stays an int; a string becomes an Expression."""
    if isinstance(value, bool):
        raise SpecError(f"expected a number or an expression, got {value!r}", path=where)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return Expression(value, where=where)
    raise SpecError(f"expected a number or an expression, got {value!r}", path=where)


#: What evaluating a well-formed expression against stream values can raise: an unknown
#: name, a value of the wrong type, a division by zero, an index out of range, a number too
#: big. Each means the spec's expression does not fit the stream: a spec error, not a crash.
EVAL_ERRORS: tuple[type[Exception], ...] = (
    NameError, KeyError, TypeError, ValueError, ZeroDivisionError, IndexError, OverflowError)


def evaluate(expr: Expression, names: Mapping[str, Any], *, context: str = "") -> Any:
    """Evaluate *expr*; any of :data:`EVAL_ERRORS` becomes a SpecError naming the spec file
    the expression came from, *context* (e.g. ``"format libxc, PAGE_DATA"``) and the
    expression. Every evaluation of spec expressions goes through here (or :func:`render`)."""
    try:
        return expr.evaluate(names)
    except EVAL_ERRORS as exc:
        prefix = f"{context}: " if context else ""
        raise SpecError(f"{prefix}expression {expr.source!r} failed: "
                        f"{type(exc).__name__}: {exc}", path=expr.where) from None


def render(template: Template, names: Mapping[str, Any], *, context: str = "") -> str:
    """Render *template*, turning :data:`EVAL_ERRORS` into a SpecError like :func:`evaluate`."""
    try:
        return template.render(names)
    except EVAL_ERRORS as exc:
        prefix = f"{context}: " if context else ""
        raise SpecError(f"{prefix}template {template.source!r} failed: "
                        f"{type(exc).__name__}: {exc}", path=template.where) from None


def resolve(value: Expression | int, names: Mapping[str, Any], *, context: str = "") -> Any:
    """Evaluate an Expression (through :func:`evaluate`), or return a literal as it is."""
    return evaluate(value, names, context=context) if isinstance(value, Expression) else value
