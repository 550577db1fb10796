"""The client's public functions refuse an argument of the wrong type
themselves, naming it: `page_size: must be an int, not str ('10')`. Given
on to a message's constructor, such an argument failed deep inside protobuf
("bad argument type for built-in operation", "'int' object is not
iterable"), naming nothing, or was taken for something else: a dict of
actions its keys, bytes an id (helper-320). Checked against each function's
own annotations, the one description of what it takes."""

from __future__ import annotations

import collections.abc
import functools
import inspect
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final, TypeVar, cast

from google.protobuf.message import Message

_F = TypeVar("_F", bound=Callable[..., Any])
_C = TypeVar("_C", bound=type)

# Of the collections an annotation may name, those whose values are checked
# one by one (a generator is not: reading it would use it up).
_ITEMS: Final = (list, tuple, set, frozenset, collections.abc.KeysView, collections.abc.ValuesView)
_SEQUENCES: Final = frozenset(
    {
        list,
        tuple,
        set,
        frozenset,
        collections.abc.Iterable,
        collections.abc.Sequence,
        collections.abc.Collection,
        collections.abc.Set,
    }
)
# How many characters of a refused value an error shows.
_SHOWN: Final = 60


class _Refused(Exception):
    """`path` (the argument, or an item of it) is not what it must be."""

    def __init__(self, path: str, wanted: str, value: object, *, naive: bool = False) -> None:
        super().__init__(path)
        self.path, self.wanted, self.value, self.naive = path, wanted, value, naive


def checked_arguments(function: _F) -> _F:
    """`function`, refusing an argument its annotations do not allow: a
    TypeError naming it and what it takes (a ValueError for a naive
    datetime, of the right type but no moment). Values of the right type
    are left to the function (a kind it has none of, a negative count); so
    is None for an optional text (a default of "", an event's field), which
    protobuf took for none and callers give (`actor_email=user.email`).

    Cheap where the arguments fit, as a client's calls do (an event built in
    its caller's request path, batches of thousands): the annotations are
    resolved once, at the first call, into a check per parameter (a single
    isinstance for a str), and the arguments are matched to them without
    binding a Signature. Only arguments one of those checks does not pass
    go through the whole description (`_Plan.refuse`), which names what is
    wrong, or finds the call's own TypeError, Python's to word. An int-like
    that is no int (numpy's int64, any object with __index__, not a bool)
    fits where an int goes, as Python's operator.index takes it, and is
    given on as the int it stands for (which protobuf, range() and a
    comparison all take)."""
    plan: _Plan | None = None  # at the first call: the function's module may name a later class

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def checked_coroutine(*args: Any, **kwargs: Any) -> Any:
            nonlocal plan
            if plan is None:
                plan = _Plan(function)
            if not plan.passes(args, kwargs):
                args, kwargs = plan.refuse(args, kwargs)
            return await function(*args, **kwargs)

        return cast(_F, checked_coroutine)

    # A generator's (sync or async) too: refused at the call, not at its first item.
    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        nonlocal plan
        if plan is None:
            plan = _Plan(function)
        if not plan.passes(args, kwargs):
            args, kwargs = plan.refuse(args, kwargs)
        return function(*args, **kwargs)

    return cast(_F, checked)


# A check of one value: the types any value of which fits at once, else
# whether it surely fits (False: to be looked at whole, by _fits).
_Fits = Callable[[Any], bool]
_Check = tuple[frozenset[type], _Fits]
_NONE: Final[type] = type(None)


class _Plan:
    """A function's annotations, resolved, and a check per parameter."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.signature = signature = inspect.signature(function)
        self.hints: dict[str, Any] = typing.get_type_hints(function)
        # `**fields: Unpack[SomeTypedDict]`: its keys' hints.
        self.fields: dict[str, Any] = {}
        positional: list[_Check | None] = []
        named: dict[str, _Check | None] = {}  # the parameters a keyword may name
        keywords: dict[str, _Check | None] = {}  # those `**fields` names
        self.spread = False  # whether it takes *args
        self.open = False  # whether it takes **kwargs
        for name, parameter in signature.parameters.items():
            hint, kind = self.hints.get(name), parameter.kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                self.spread = True
            elif kind is inspect.Parameter.VAR_KEYWORD:
                self.open = True
                if typing.get_origin(hint) is typing.Unpack:
                    (typed,) = typing.get_args(hint)
                    self.fields = typing.get_type_hints(typed)
                    for field, field_hint in self.fields.items():
                        check = _compile(field_hint)
                        keywords[field] = _TEXT_OR_NONE if field_hint is str else check
            else:
                check = None if hint is None else _compile(hint)
                if hint is str and parameter.default == "":
                    check = _TEXT_OR_NONE
                if kind is not inspect.Parameter.KEYWORD_ONLY:
                    positional.append(check)
                if kind is not inspect.Parameter.POSITIONAL_ONLY:
                    named[name] = check
        self.positional = tuple(positional)
        self.known = frozenset(named)
        # A keyword names a parameter before a field of `**fields`, as Python binds it.
        self.checks = {
            name: check for name, check in (keywords | named).items() if check is not None
        }

    def passes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether the arguments surely fit. False for a call this cannot
        tell (more positional arguments than parameters, an unknown keyword)."""
        if args:
            if len(args) > len(self.positional) and not self.spread:
                return False
            for check, value in zip(self.positional, args, strict=False):  # *args: not checked
                if check is not None and type(value) not in check[0] and not check[1](value):
                    return False
        checks = self.checks
        for name, value in kwargs.items():
            check = checks.get(name)
            if check is None:
                if not self.open and name not in self.known:
                    return False  # an unknown keyword: Python's to refuse
            elif type(value) not in check[0] and not check[1](value):
                return False
        return True

    def refuse(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The error of the first argument that does not fit, its parameters
        in order; none for a call Python itself refuses (its own TypeError,
        as Python words it). Arguments that fit after all are returned, an
        int-like among them made the int it stands for."""
        signature = self.signature
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return args, kwargs
        for name, value in bound.arguments.items():
            hint = self.hints.get(name)
            parameter = signature.parameters[name]
            if hint is None or (value is None and hint is str and parameter.default == ""):
                continue  # an optional text given as None: none, as protobuf takes it
            kind = parameter.kind
            try:
                if kind is inspect.Parameter.VAR_KEYWORD:
                    self._check_keywords(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    _check(value, hint, name)
            except _Refused as refused:
                raise _error(refused) from None
        # They fit: an int-like among them (not a quick check's int) made an int.
        converted = False
        for name, value in bound.arguments.items():
            hint, kind = self.hints.get(name), signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                fields = self.fields
                for key, item in value.items():
                    if key in fields and (made := _as_ints(item, fields[key])) is not item:
                        value[key] = made  # `**fields`: a dict of this call's own
                        converted = True
            elif (
                hint is not None
                and kind is not inspect.Parameter.VAR_POSITIONAL
                and (made := _as_ints(value, hint)) is not value
            ):
                bound.arguments[name] = made
                converted = True
        return (bound.args, bound.kwargs) if converted else (args, kwargs)

    def _check_keywords(self, values: Mapping[str, Any]) -> None:
        """`**fields: Unpack[EventFields]`: each keyword as its TypedDict says
        (one it has not is left to the function, which names its fields;
        `**settings: str` is its function's to check, build_sink's)."""
        fields = self.fields
        for name, value in values.items():
            if name in fields and not (value is None and fields[name] is str):  # none, as above
                _check(value, fields[name], name)


def _compile(hint: Any) -> _Check | None:
    """A check of `hint` that passes only what `_fits` passes, without
    walking what it need not (None: anything fits). What it does not pass,
    `_fits` decides, and names."""
    if hint is Any or isinstance(hint, TypeVar):
        return None
    if hint is None or hint is _NONE:
        return frozenset({_NONE}), _never
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        members = [_compile(arg) for arg in args]
        if any(member is None for member in members):
            return None
        # Those with types at once last: their check is for a subclass, rare.
        checks = sorted(cast(list[_Check], members), key=lambda check: bool(check[0]))
        return frozenset().union(*(at_once for at_once, _ in checks)), _any_of(checks)
    if origin is typing.Literal:
        return frozenset(type(choice) for choice in args), lambda value: _of_literal(value, args)
    if hint is int:
        return frozenset({int}), _is_int
    if hint is float:
        return frozenset({int, float}), _is_number
    if hint is datetime:
        return frozenset(), _is_aware
    if origin is collections.abc.Callable:
        return frozenset(), callable
    if origin in _SEQUENCES or origin in (tuple, dict, collections.abc.Mapping):
        return frozenset(), _compile_collection(hint, origin, args)
    if origin is not None:
        return frozenset(), lambda value: isinstance(value, origin)
    if isinstance(hint, type) and (hint.__module__ == "builtins" or issubclass(hint, Message)):
        # Of its own type at once; a subclass's value (a str's), looked at.
        return frozenset({hint}), lambda value: isinstance(value, hint)
    return None  # another class, taken as it acts (see _fits)


def _compile_collection(hint: Any, origin: Any, args: tuple[Any, ...]) -> _Fits:
    def whole(value: Any) -> bool:
        try:
            return _fits(value, hint, "")
        except _Refused:
            return False

    if origin is tuple:
        return whole  # a seq_range, a change: rare, and short
    if origin is collections.abc.Mapping or origin is dict:
        keys, items = _compile(args[0]) if args else None, _compile(args[1]) if args else None
        if items is not None or keys is None:
            return lambda value: (
                (type(value) is dict or isinstance(value, Mapping))
                and _all(keys, value)
                and _all(items, value.values())
            )
        key_types = keys[0]  # the usual, Mapping[str, Any]: its keys' types alone

        def mapping(value: Any) -> bool:
            if type(value) is not dict and not isinstance(value, Mapping):
                return False
            return key_types.issuperset(map(type, value)) or _all(keys, value)

        return mapping
    item = _compile(args[0]) if args else None
    item_types = item[0] if item is not None else frozenset()

    def collection(value: Any) -> bool:
        kind = type(value)
        # The usual, a list or a tuple: no str, no mapping, its items at hand.
        if (kind is list or kind is tuple) and (kind is origin or origin not in _BUILT):
            return item is None or item_types.issuperset(map(type, value)) or _all(item, value)
        return whole(value)

    return collection


# Of the collections _fits_items takes by their own type, not as an Iterable.
_BUILT: Final = frozenset({list, tuple, set, frozenset})


def _all(check: _Check | None, values: Iterable[Any]) -> bool:
    if check is None:
        return True
    at_once, fits = check
    # All of one such type (a list of str): no item to look at one by one.
    return at_once.issuperset(map(type, values)) or all(
        type(value) in at_once or fits(value) for value in values
    )


def _any_of(checks: list[_Check]) -> _Fits:
    # A member all of whose values are at once (None, a Literal) has no more to say.
    members = [fits for _, fits in checks if fits is not _never]
    if not members:
        return _never
    if len(members) == 1:
        return members[0]
    if len(members) == 2:
        first, second = members
        return lambda value: first(value) or second(value)
    return lambda value: any(fits(value) for fits in members)


def _never(value: object) -> bool:
    return False


def _text_or_none(value: object) -> bool:
    return isinstance(value, str)  # a str's own kind: None and str are at once


_TEXT_OR_NONE: Final[_Check] = (frozenset({str, _NONE}), _text_or_none)


def _is_int(value: object) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _is_number(value: object) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_aware(value: Any) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None


def unchecked(function: _F) -> _F:
    """`function` as it was before `checked_arguments`: for a caller whose own
    check took the same arguments by the same annotations (record(**fields),
    build_event's), so that they are not checked twice."""
    return cast(_F, getattr(function, "__wrapped__", function))


def checked_methods(cls: _C) -> _C:
    """`cls`, each of its public methods (and its constructor) `checked_arguments`."""
    for name, member in list(vars(cls).items()):
        if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, checked_arguments(member))
    return cls


def _error(refused: _Refused) -> Exception:
    if refused.naive:
        return ValueError(
            f"{refused.path}: datetime must be timezone-aware (e.g. datetime.now(UTC)), not naive"
        )
    shown = repr(refused.value)
    if len(shown) > _SHOWN:
        shown = shown[: _SHOWN - 3] + "..."
    # A str where its items go (each letter would be one): what one of them is.
    one = f", such as [{shown}]" if isinstance(refused.value, str) else ""
    return TypeError(
        f"{refused.path}: must be {refused.wanted}{one if 'list of str' in refused.wanted else ''},"
        f" not {type(refused.value).__name__} ({shown})"
    )


def _check(value: Any, hint: Any, path: str) -> None:
    if not _fits(value, hint, path):
        raise _Refused(path, _wanted(hint), value)


def _fits(value: Any, hint: Any, path: str) -> bool:
    """Whether `value` is of `hint`; an item of it that is not raises
    _Refused naming that item, a naive datetime too."""
    if hint is Any or isinstance(hint, TypeVar):
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return _fits_one_of(value, args, path)
    if origin is typing.Literal:
        return _of_literal(value, args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return (isinstance(value, int) or _int_like(value)) and not isinstance(value, bool)
    if hint is float:
        return (isinstance(value, int | float) or _int_like(value)) and not isinstance(value, bool)
    if hint is datetime:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise _Refused(path, "", value, naive=True)
        return isinstance(value, datetime)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is tuple:
        return _fits_tuple(value, args, path)
    if origin in _SEQUENCES:
        return _fits_items(value, origin, args, path)
    if origin is collections.abc.Mapping or origin is dict:
        return _fits_mapping(value, args, path)
    if origin is not None:
        return isinstance(value, origin)
    if isinstance(hint, type) and (hint.__module__ == "builtins" or issubclass(hint, Message)):
        return isinstance(value, hint)
    # Another class (a grpc.Channel, a random.Random) is taken as it acts, as
    # Python takes it: a test's stand-in, a wrapper, are no instance of it.
    return True


def _int_like(value: object) -> bool:
    """Whether `value` stands for an int as operator.index takes it (numpy's
    int64, an object with __index__); a bool's own check refuses a bool."""
    try:
        operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    return True


def _as_ints(value: Any, hint: Any) -> Any:
    """`value`, which fits `hint`, with each int-like where an int goes made
    that int (itself if it has none: a list of int a list of int)."""
    if type(value) is int or value is None or isinstance(value, str):
        return value
    if hint is int or hint is float:
        return value if isinstance(value, int | float) else operator.index(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        for member in args:
            try:
                if _fits(value, member, ""):
                    return _as_ints(value, member)
            except _Refused:
                continue
        return value
    if not args:
        return value
    if isinstance(value, Mapping) and (origin is collections.abc.Mapping or origin is dict):
        entries = [
            (key, item, _as_ints(key, args[0]), _as_ints(item, args[1]))
            for key, item in value.items()
        ]
        if all(made_key is key and made is item for key, item, made_key, made in entries):
            return value
        return {made_key: made for _, _, made_key, made in entries}
    if isinstance(value, set | frozenset) and origin in _SEQUENCES:
        pairs = [(item, _as_ints(item, args[0])) for item in value]
        if all(made is item for item, made in pairs):
            return value
        return (frozenset if isinstance(value, frozenset) else set)(made for _, made in pairs)
    if not isinstance(value, list | tuple):
        return value  # a generator, read once: protobuf itself takes an int-like in it
    if origin is tuple:
        hints = (args[0],) * len(value) if len(args) == 2 and args[1] is Ellipsis else args
    elif origin in _SEQUENCES:
        hints = (args[0],) * len(value)
    else:
        return value
    items = [_as_ints(item, item_hint) for item, item_hint in zip(value, hints, strict=True)]
    if all(made is item for made, item in zip(items, value, strict=True)):
        return value
    return type(value)(items) if type(value) in (list, tuple) else items


def _of_literal(value: Any, choices: tuple[Any, ...]) -> bool:
    """Whether `value` is of a choice's type, a subclass's too: a StrEnum's
    member is a str, and taken as its text (not a bool for an int)."""
    return any(
        type(value) is type(choice) or (isinstance(value, type(choice)) and type(value) is not bool)
        for choice in choices
    )


def _fits_one_of(value: Any, hints: tuple[Any, ...], path: str) -> bool:
    """Of a union, the first member of the value's type decides (so an item
    refused in a list is named, not the whole union)."""
    refused: _Refused | None = None
    for hint in hints:
        try:
            if _fits(value, hint, path):
                return True
        except _Refused as error:
            refused = refused or error
    if refused is not None:
        raise refused
    return False


def _fits_tuple(value: Any, args: tuple[Any, ...], path: str) -> bool:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, tuple | list):
        return False
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    if len(value) != len(args):
        return False
    for index, (item, hint) in enumerate(zip(value, args, strict=True)):
        _check(item, hint, f"{path}[{index}]")
    return True


def _fits_items(value: Any, origin: Any, args: tuple[Any, ...], path: str) -> bool:
    """A collection of items (a str, bytes or a mapping is none, where its
    items are meant: a str where a list of them goes)."""
    if isinstance(value, str | bytes | bytearray | Mapping):
        return False
    if not isinstance(value, origin if origin in (list, tuple, set, frozenset) else Iterable):
        return False
    if args and isinstance(value, _ITEMS):
        for index, item in enumerate(value):
            _check(item, args[0], f"{path}[{index}]")
    return True


def _fits_mapping(value: Any, args: tuple[Any, ...], path: str) -> bool:
    if not isinstance(value, Mapping):
        return False
    if args:
        key_hint, value_hint = args
        for key, item in value.items():
            _check(key, key_hint, f"{path} key")
            _check(item, value_hint, f"{path}[{key!r}]")
    return True


def _wanted(hint: Any) -> str:
    """What `hint` takes, as an error says it: "an int", "a str or a list of str"."""
    if hint is None or hint is type(None):
        return "None"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_wanted(arg) for arg in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if hint is datetime:
        return "a timezone-aware datetime"
    if hint is bytes:
        return "bytes"
    if origin is collections.abc.Callable:
        return "a callable"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a tuple of {_bare(args[0])}"
        return f"a tuple ({', '.join(_bare(arg) for arg in args)})"
    if origin in _SEQUENCES:
        return f"a list of {_bare(args[0])}" if args else "a list"
    if origin is collections.abc.Mapping or origin is dict:
        return f"a mapping of {_bare(args[0])} to {_bare(args[1])}" if args else "a mapping"
    name = _bare(hint)
    return f"an {name}" if name[:1] in "aeiouAEIOU" else f"a {name}"


def _bare(hint: Any) -> str:
    """`hint` as a noun without its article: "str", "EventFilter", "int or str"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_bare(arg) for arg in args)
    if hint is Any:
        return "any value"
    if (
        origin is not None
        and args
        and (
            origin in _SEQUENCES
            or origin in (tuple, dict, collections.abc.Mapping, collections.abc.Callable)
            or origin is typing.Literal
        )
    ):
        return _wanted(hint).split(" ", 1)[1]
    if origin is not None:
        hint = origin  # another generic class by its name: os.PathLike[str] a PathLike
    if isinstance(hint, type) and issubclass(hint, Message):
        return f"{hint.__name__} message"
    return getattr(hint, "__name__", str(hint))
