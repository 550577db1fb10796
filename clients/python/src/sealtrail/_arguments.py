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
    protobuf took for none and callers give (`actor_email=user.email`)."""
    signature = inspect.signature(function)
    hints: dict[str, Any] = {}

    def check(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not hints:
            hints.update(typing.get_type_hints(function))
            hints.setdefault("", None)  # resolved, even for a function of no hint
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return  # the call's own TypeError, as Python words it
        for name, value in bound.arguments.items():
            hint = hints.get(name)
            parameter = signature.parameters[name]
            if hint is None or (value is None and hint is str and parameter.default == ""):
                continue  # an optional text given as None: none, as protobuf takes it
            kind = parameter.kind
            try:
                if kind is inspect.Parameter.VAR_KEYWORD:
                    _check_keywords(value, hint)
                elif kind is not inspect.Parameter.VAR_POSITIONAL:
                    _check(value, hint, name)
            except _Refused as refused:
                raise _error(refused) from None

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def checked_coroutine(*args: Any, **kwargs: Any) -> Any:
            check(args, kwargs)
            return await function(*args, **kwargs)

        return cast(_F, checked_coroutine)

    # A generator's (sync or async) too: refused at the call, not at its first item.
    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(args, kwargs)
        return function(*args, **kwargs)

    return cast(_F, checked)


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


def _check_keywords(values: Mapping[str, Any], hint: Any) -> None:
    """`**fields: Unpack[EventFields]`: each keyword as its TypedDict says
    (one it has not is left to the function, which names its fields)."""
    if typing.get_origin(hint) is not typing.Unpack:
        return  # `**settings: str`, which its function checks (build_sink)
    (typed,) = typing.get_args(hint)
    fields = typing.get_type_hints(typed)
    for name, value in values.items():
        if name in fields and not (value is None and fields[name] is str):  # none, as above
            _check(value, fields[name], name)


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
        return any(type(value) is type(choice) for choice in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
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
    if origin is not None and not args:
        hint = origin
    if origin is not None and args:
        return _wanted(hint).split(" ", 1)[1]
    if isinstance(hint, type) and issubclass(hint, Message):
        return f"{hint.__name__} message"
    return getattr(hint, "__name__", str(hint))
