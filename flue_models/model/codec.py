"""How one field's value becomes hash bytes, an index key segment and a sorted-set score.

Rules (DESIGN invariant 5):

* scalars are stored as text: ``str`` as UTF-8, ``int`` in decimal, ``float`` by ``repr``
  (exact), ``bool`` as ``1``/``0``, ``Decimal`` as written, ``UUID`` canonical, ``bytes``
  as they are, an ``Enum`` or ``Literal`` by its value;
* a ``datetime`` must be timezone-aware; it is stored as ISO 8601 in UTC with
  microseconds (``2026-01-02T03:04:05.000006+00:00``). A naive datetime is refused at
  save time rather than guessed to be UTC or local time;
* a ``date`` is stored as ``YYYY-MM-DD``;
* everything else (lists, dicts, tuples, sets, nested models) is JSON with sorted keys
  and no spaces, so equal values are equal bytes;
* ``None`` is never stored: the field is removed from the hash and from its indexes.

Scores: numbers score as themselves, ``bool`` as 0/1, a ``date`` by its day number, a
``datetime`` in epoch milliseconds with the microseconds as a fraction (exact order for
years 1685 to 2255, where epoch microseconds fit in a double).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import math
import sys
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, TypeAdapter

from flue_models.errors import EncodingError

#: Where datetimes are scored from (epoch milliseconds), and stamped times count from.
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_MICROSECOND = dt.timedelta(microseconds=1)
#: Integers beyond this magnitude cannot be sorted-set scores without rounding.
MAX_EXACT_INT = 2**53

Kind = typing.Literal[
    "str", "int", "float", "bool", "decimal", "datetime", "date", "uuid", "bytes", "enum", "json"
]
#: Kinds whose values have an order a sorted-set score can carry exactly.
RANGE_KINDS = frozenset({"int", "float", "bool", "datetime", "date"})


#: The one encoder of :func:`canonical_json` (``json.dumps`` with options builds one per call).
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(value: Any) -> str:
    """Serialize JSON-compatible data with sorted keys and no spaces.

    Raises:
        ValueError: a float is NaN or infinite (JSON has no such number).

    Example:
        >>> canonical_json({"b": 1, "a": [1, "é"]})
        '{"a":[1,"é"],"b":1}'
    """
    return _CANONICAL.encode(value)


def max_int_digits() -> int:
    """Return the most decimal digits an int may have to be stored and read back: Python's
    own limit on turning text into ints (``sys.get_int_max_str_digits()``, 4,300 by
    default).

    Example:
        >>> max_int_digits() >= 640
        True
    """
    return sys.get_int_max_str_digits() or 1_000_000


#: The largest |exponent| a Decimal may have (``Decimal("1E+1000")`` is the largest power
#: of ten), so its index key (written out in full) stays under about 1 KB.
MAX_DECIMAL_EXPONENT = 1_000


def _text_problem(text: str) -> str | None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        found = text[exc.start]
        return f"holds a lone surrogate ({found!r} at {exc.start}), which UTF-8 cannot store"
    return None


@functools.cache
def _int_bound(digits: int) -> int:
    return int(10**digits)


def _int_problem(value: int) -> str | None:
    if abs(value) >= _int_bound(max_int_digits()):  # more digits than can be read back
        return (
            f"holds an int of over {max_int_digits():,} digits, which cannot be read back "
            "(sys.get_int_max_str_digits)"
        )
    return None


def is_plain_json(value: Any) -> bool:
    """Whether ``value`` is made of plain JSON values (dicts with str keys, lists, tuples,
    str, int, float, bool, None) that can all be stored exactly: one quick pass that
    builds no paths. ``False`` for a problem or for any other type (``value_problem``'s
    full walk then says where and why, or that there is none).

    Example:
        >>> is_plain_json({"a": [1, "é", None]}), is_plain_json({"a": float("nan")})
        (True, False)
    """
    bound = _int_bound(max_int_digits())
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and _text_problem(item) is not None:
                return False
        elif kind is dict:
            for key, child in item.items():
                if type(key) is not str or (not key.isascii() and _text_problem(key)):
                    return False
                stack.append(child)
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is int:
            if not -bound < item < bound:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def _as_text(key: Any) -> str:
    """How JSON would give a non-string key back, for a refusal's message."""
    try:
        (back,) = json.loads(json.dumps({key: 0}))
    except (TypeError, ValueError):  # not even JSON can write it
        return ""
    return f" (JSON would give it back as {back!r})"


def value_problem(value: Any, *, text_keys: bool = False) -> str | None:
    """Say why ``value`` (a JSON-like tree, Pydantic models included) cannot be stored
    exactly, or return ``None``: a non-finite float (JSON has none; Pydantic would write
    ``null``), a lone surrogate in a string or key, an int too long to read back, and,
    with ``text_keys`` (a value stored without a type to restore it: an untyped event,
    session content, a submission's input), a dict key that is not a string (JSON would
    give it back as text).

    Example:
        >>> problem = value_problem({"a": [1.0, float("nan")]})
        >>> problem.startswith("at ") and problem.endswith("(it would become null)")
        True
        >>> value_problem({"ok": 1}) is None
        True
        >>> value_problem({1: "a"}, text_keys=True)
        "at the top: a key 1 is not a string (JSON would give it back as '1')"
    """
    if is_plain_json(value):
        return None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        problem: str | None = None
        if isinstance(item, str):
            problem = _text_problem(item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            problem = _int_problem(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                problem = f"holds {item!r}, which JSON cannot store (it would become null)"
        elif isinstance(item, BaseModel):
            stack.append((item.model_dump(mode="python"), path))
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and (key_problem := _text_problem(key)):
                    return f"at {path or 'the top'}: a key {key_problem}"
                if text_keys and not isinstance(key, str):
                    return f"at {path or 'the top'}: a key {key!r} is not a string{_as_text(key)}"
                stack.append((child, f"{path}[{key!r}]"))
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
        if problem:
            return f"at {path}: {problem}" if path else problem
    return None


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _strip_optional(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            inner, inner_nullable = _strip_optional(args[0])
            return inner, nullable or inner_nullable
        return annotation, nullable
    return annotation, False


def _kind_of(annotation: Any) -> Kind:
    if annotation is bool:
        return "bool"
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return "enum"
        for base, kind in (
            (bool, "bool"),
            (int, "int"),
            (float, "float"),
            (Decimal, "decimal"),
            (dt.datetime, "datetime"),
            (dt.date, "date"),
            (uuid.UUID, "uuid"),
            (bytes, "bytes"),
            (str, "str"),
        ):
            if issubclass(annotation, base):
                return typing.cast(Kind, kind)
        return "json"
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        for kind_type, kind in ((bool, "bool"), (int, "int"), (str, "str")):
            if all(type(v) is kind_type for v in values):
                return typing.cast(Kind, kind)
    return "json"


def epoch_score(value: dt.datetime) -> float:
    """Return the score of an aware datetime: epoch milliseconds, microseconds as fraction.

    Example:
        >>> epoch_score(dt.datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=dt.UTC))
        1000.5
    """
    return ((value - EPOCH) // _ONE_MICROSECOND) / 1000


@dataclass(frozen=True)
class FieldCodec:
    """Encoding, decoding and scoring of one model field.

    Example:
        >>> codec = codec_for("priority", int)
        >>> codec.encode(42), codec.decode(b"42"), codec.score(42)
        (b'42', 42, 42.0)
    """

    name: str
    kind: Kind
    nullable: bool
    adapter: TypeAdapter[Any]
    #: Every value the field can hold when that set is finite (``Literal``, ``Enum``,
    #: ``bool``), else empty: a save removes the record from the other values' indexes.
    domain: tuple[Any, ...] = ()

    def _aware(self, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is dt.UTC:  # the common case: nothing to convert or to check
            return value
        if value.tzinfo is None or value.utcoffset() is None:
            raise EncodingError(
                f"Field {self.name!r} holds a naive datetime ({value.isoformat()}); give it a "
                "time zone, e.g. datetime.now(UTC) or value.replace(tzinfo=UTC)."
            )
        try:
            utc = value.astimezone(dt.UTC)
            back = utc.astimezone(value.tzinfo)
        except OverflowError:
            raise self._refuse(
                f"holds {value.isoformat()}, whose UTC time is outside years 1 to 9999"
            ) from None
        if back.replace(tzinfo=None, fold=0) != value.replace(tzinfo=None, fold=0):
            raise self._refuse(
                f"holds {value.isoformat()}, a local time that does not exist in {value.tzinfo} "
                "(skipped by a clock change), so it names no instant"
            )
        return utc

    def _refuse(self, problem: str) -> EncodingError:
        return EncodingError(f"Field {self.name!r} {problem}; nothing was written.")

    def check(self, value: Any) -> None:
        """Refuse a value this field cannot store exactly, before any I/O.

        Raises:
            EncodingError: naming the field and what is wrong: a lone surrogate, a
                non-finite float inside JSON, an int too long to read back, a datetime
                whose UTC form is outside years 1 to 9999, a Decimal that is not finite
                or beyond ``MAX_DECIMAL_EXPONENT``.

        Example:
            >>> codec_for("n", dict[str, float]).check({"x": float("inf")})
            Traceback (most recent call last):
            ...
            flue_models.errors.EncodingError: Field 'n' at ['x']: holds inf, ...
        """
        kind = self.kind
        problem: str | None = None
        if kind == "datetime":
            self._aware(value)
        elif kind == "decimal":
            decimal = Decimal(value)
            if not decimal.is_finite():
                problem = f"holds Decimal({str(decimal)!r}), which has no place in an order"
            elif abs(decimal.adjusted()) > MAX_DECIMAL_EXPONENT:
                problem = (
                    f"holds a Decimal with exponent {decimal.adjusted():,}, beyond "
                    f"±{MAX_DECIMAL_EXPONENT:,}"
                )
        elif kind in ("str", "int", "json", "enum"):
            problem = value_problem(value.value if kind == "enum" else value)
        if problem:
            raise self._refuse(problem)

    def encode(self, value: Any) -> bytes:
        """Return the bytes stored in the hash for ``value`` (never ``None``).

        Raises:
            EncodingError: the value cannot be stored exactly (see :meth:`check`).

        Example:
            >>> codec_for("d", dict[str, int]).encode({"b": 2, "a": 1})
            b'{"a":1,"b":2}'
        """
        kind = self.kind
        # The common kinds check as they encode (one pass, the same refusals as check()).
        if kind == "str":
            try:
                return str(value).encode()
            except UnicodeEncodeError:
                raise self._refuse(_text_problem(str(value)) or "cannot be encoded") from None
        if kind == "datetime":
            return self._aware(value).isoformat(timespec="microseconds").encode()
        if kind == "int":
            if (problem := _int_problem(int(value))) is not None:
                raise self._refuse(problem)
            return str(int(value)).encode()
        self.check(value)
        if kind == "bytes":
            return bytes(value)
        if kind == "bool":
            return b"1" if value else b"0"
        if kind == "float":
            return repr(float(value)).encode()
        if kind == "decimal":
            return str(value).encode()
        if kind == "date":
            return value.isoformat().encode()  # type: ignore[no-any-return]
        if kind == "uuid":
            return str(value).encode()
        if kind == "enum":
            return self._encode_json_value(value.value)
        plain = self.adapter.dump_python(value, mode="json")
        if isinstance(value, set | frozenset) and isinstance(plain, list):
            plain = sorted(plain, key=canonical_json)
        return canonical_json(plain).encode()

    @staticmethod
    def _encode_json_value(value: Any) -> bytes:
        return value.encode() if isinstance(value, str) else canonical_json(value).encode()

    def decode(self, raw: bytes) -> Any:
        """Turn stored bytes back into a value the model validates.

        Raises:
            ValueError: the bytes are not a valid encoding for this field.

        Example:
            >>> codec_for("t", dt.datetime).decode(b"2026-01-02T03:04:05.000006+00:00").year
            2026
        """
        kind = self.kind
        if kind == "bytes":
            return raw
        text = raw.decode()
        if kind in ("str", "uuid"):
            return text
        if kind == "bool":
            if text not in ("0", "1"):
                raise ValueError(f"expected 0 or 1, found {text!r}")
            return text == "1"
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "decimal":
            return Decimal(text)
        if kind == "datetime":
            value = dt.datetime.fromisoformat(text)
            if value.tzinfo is None:
                raise ValueError(f"expected an ISO 8601 time with an offset, found {text!r}")
            return value
        if kind == "date":
            return dt.date.fromisoformat(text)
        if kind == "enum":
            return self.adapter.validate_python(self._decode_json_value(text))
        return self.adapter.validate_json(raw)

    @functools.cached_property
    def decoder(self) -> Callable[[bytes], Any]:
        """:meth:`decode` as one call: for the common kinds the builtin that reads the
        bytes as :meth:`decode` reads their text (``int(b"42")``, ``bytes.decode``; a
        number in other than ASCII digits is refused), else :meth:`decode` itself.

        Example:
            >>> codec_for("priority", int).decoder(b"42")
            42
        """
        return _FAST_DECODERS.get(self.kind, self.decode)

    @functools.cached_property
    def encoder(self) -> Callable[[Any], bytes]:
        """:meth:`encode` as one call: for the common kinds, a function that encodes a
        value of the exact type (text, an int, a UTC datetime) in one step, the same
        bytes :meth:`encode` gives, and hands anything else to :meth:`encode` (with its
        checks and refusals).

        Example:
            >>> codec_for("priority", int).encoder(42)
            b'42'
        """
        encode = self.encode
        kind = self.kind
        if kind == "str":

            def encode_text(value: Any) -> bytes:
                if type(value) is str:
                    try:
                        return value.encode()
                    except UnicodeEncodeError:
                        pass  # (encode refuses it, naming the character)
                return encode(value)

            return encode_text
        if kind == "int":

            def encode_int(value: Any) -> bytes:
                if type(value) is int and -_SHORT_INT < value < _SHORT_INT:
                    return b"%d" % value
                return encode(value)

            return encode_int
        if kind == "datetime":

            def encode_time(value: Any) -> bytes:
                if type(value) is dt.datetime and value.tzinfo is dt.UTC:
                    return _UTC_TIME % (
                        *(value.year, value.month, value.day),
                        *(value.hour, value.minute, value.second, value.microsecond),
                    )
                return encode(value)

            return encode_time
        return encode

    def _decode_json_value(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    def index_value(self, value: Any) -> bytes:
        """Return the canonical bytes naming ``value`` in an equality index key.

        Equal values give equal bytes even where their stored text differs
        (``Decimal("1.0")`` and ``Decimal("1.00")``, ``0.0`` and ``-0.0``).

        Example:
            >>> codec_for("d", Decimal).index_value(Decimal("1.50"))
            b'1.5'
        """
        if self.kind == "decimal":
            normalized = Decimal(value).normalize()
            return format(normalized, "f").encode()
        if self.kind == "float" and value == 0:
            return b"0.0"
        return self.encode(value)

    def score(self, value: Any) -> float:
        """Return the sorted-set score of ``value`` for a range index or ordering.

        Raises:
            EncodingError: the value has no exact score (NaN, an integer beyond 2**53).

        Example:
            >>> codec_for("day", dt.date).score(dt.date(1970, 1, 2))
            1.0
        """
        kind = self.kind
        if kind == "datetime":
            return epoch_score(self._aware(value))
        if kind == "date":
            return float(value.toordinal() - EPOCH.date().toordinal())
        if kind == "int":
            if abs(int(value)) > MAX_EXACT_INT:
                raise EncodingError(
                    f"Field {self.name!r} = {value} is beyond ±2**53, where sorted-set scores "
                    "round; a range index cannot hold it exactly."
                )
            return float(value)
        if kind == "float":
            if math.isnan(value):
                raise EncodingError(f"Field {self.name!r} is NaN, which has no order.")
            return float(value)
        if kind == "bool":
            return 1.0 if value else 0.0
        raise EncodingError(f"Field {self.name!r} ({kind}) cannot be scored.")


def _utf8_text(raw: bytes) -> str:
    return raw.decode()


def _bytes_value(raw: bytes) -> bytes:
    return raw


#: Ints shorter than this are readable back whatever ``sys.set_int_max_str_digits`` is
#: (it takes no limit under 640 digits), so :attr:`FieldCodec.encoder` writes them
#: without the check.
_SHORT_INT = 10**600
#: A UTC datetime as :meth:`FieldCodec.encode` writes it (``isoformat`` with
#: microseconds): the year in at least four digits, then the offset ``+00:00``.
_UTC_TIME = b"%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00"

#: Decoders equal to :meth:`FieldCodec.decode` for their kind, without its dispatch.
_FAST_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "bytes": _bytes_value,
    "str": _utf8_text,
    "uuid": _utf8_text,
    "int": int,
    "float": float,
}


def codec_for(name: str, annotation: Any) -> FieldCodec:
    """Build the codec of a field from its annotation.

    Example:
        >>> codec_for("tags", list[str] | None).kind, codec_for("tags", list[str] | None).nullable
        ('json', True)
    """
    inner, nullable = _strip_optional(annotation)
    return FieldCodec(
        name=name,
        kind=_kind_of(inner),
        nullable=nullable,
        adapter=TypeAdapter(inner),
        domain=_domain(inner),
    )


def _domain(annotation: Any) -> tuple[Any, ...]:
    if annotation is bool:
        return (False, True)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(annotation)
    if typing.get_origin(annotation) is typing.Literal and _kind_of(annotation) != "json":
        return typing.get_args(annotation)
    return ()
