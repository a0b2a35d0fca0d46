"""Protocol Buffers' text format, as Caffe's .prototxt files use it, read without a schema:
`read_prototxt(path)` gives a `Message`, the fields in order with the line each is on, and typed
getters that name the field and the line when a value is of the wrong kind.

The syntax read: `name: value` and `name { ... }` (also `name: { ... }` and `name < ... >`);
repeated fields (a name given again, or `name: [v1, v2]`); values that are numbers (integers,
decimals, exponents, hex, inf and nan), quoted strings (single or double quotes, escapes, adjacent
strings joined) or bare identifiers (enums such as MAX, TEST, POTTS and booleans true/false);
`#` comments; optional `,` or `;` after a field. A syntax error is a ValueError naming the file,
the line and the column.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

__all__ = ["Message", "Identifier", "read_prototxt", "parse_prototxt", "format_prototxt"]


class Identifier(str):
    """A bare word of the text format: an enum value (MAX, TEST) or a boolean (true, false)."""


@dataclasses.dataclass
class Message:
    """A message of the text format: its fields in order, [(name, value, line)], where a value is an
    int, a float, a str (quoted), an Identifier (bare) or a Message; `line` is where it starts and
    `source` the file (or "<text>") it came from."""

    fields: list = dataclasses.field(default_factory=list)
    line: int = 1
    source: str = "<text>"

    def __contains__(self, name: str) -> bool:
        return any(field == name for field, _, _ in self.fields)

    def __iter__(self):
        return ((name, value) for name, value, _ in self.fields)

    def all(self, name: str) -> list:
        """Every value of a (repeated) field, in order."""
        return [value for field, value, _ in self.fields if field == name]

    def where(self, name: str | None = None) -> str:
        """"file:line" of the field's (last) value, or of the message itself."""
        lines = [line for field, _, line in self.fields if field == name] if name else []
        return f"{self.source}:{lines[-1] if lines else self.line}"

    def get(self, name: str, default=None):
        """The value of a field that is not repeated (given twice, it is an error, as in protobuf)."""
        values = self.all(name)
        if len(values) > 1:
            raise ValueError(f"{self.where(name)}: field '{name}' is given {len(values)} times, but it is not "
                             f"a repeated field")
        return values[0] if values else default

    def message(self, name: str) -> Message:
        """A sub-message, or an empty one where the field is absent (its defaults)."""
        value = self.get(name, None)
        if value is None:
            return Message(line=self.line, source=self.source)
        if not isinstance(value, Message):
            raise ValueError(f"{self.where(name)}: field '{name}' must be a message {{ ... }}, got {value!r}")
        return value

    def messages(self, name: str) -> list[Message]:
        values = self.all(name)
        wrong = [value for value in values if not isinstance(value, Message)]
        if wrong:
            raise ValueError(f"{self.where(name)}: field '{name}' must be a message {{ ... }}, got {wrong[0]!r}")
        return values

    def string(self, name: str, default: str = "") -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or isinstance(value, Identifier):
            raise ValueError(f"{self.where(name)}: field '{name}' must be a quoted string, got {value!r}")
        return str(value)

    def strings(self, name: str) -> list[str]:
        values = self.all(name)
        for value in values:
            if not isinstance(value, str) or isinstance(value, Identifier):
                raise ValueError(f"{self.where(name)}: field '{name}' must be quoted strings, got {value!r}")
        return [str(value) for value in values]

    def int(self, name: str, default: int = 0, *, minimum: int | None = None) -> int:
        return self._int(name, self.get(name, default), minimum)

    def ints(self, name: str, *, minimum: int | None = None) -> list[int]:
        return [self._int(name, value, minimum) for value in self.all(name)]

    def _int(self, name, value, minimum):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{self.where(name)}: field '{name}' must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{self.where(name)}: field '{name}' must be at least {minimum}, got {value}")
        return value

    def float(self, name: str, default: float = 0.0) -> float:
        return self._float(name, self.get(name, default))

    def floats(self, name: str) -> list[float]:
        return [self._float(name, value) for value in self.all(name)]

    def _float(self, name, value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.where(name)}: field '{name}' must be a number, got {value!r}")
        return float(value)

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.get(name, None)
        if value is None:
            return default
        if isinstance(value, Identifier) and value in _BOOLEANS:
            return _BOOLEANS[value]
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"{self.where(name)}: field '{name}' must be true or false, got {value!r}")

    def enum(self, name: str, choices, default):
        """An enum field: its name (one of `choices`, the enum's names in the order of their numbers,
        so that a number selects one too), or `default`."""
        value = self.get(name, None)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(choices):
            return choices[value]
        if isinstance(value, Identifier) and value in choices:
            return str(value)
        raise ValueError(f"{self.where(name)}: field '{name}' must be one of {', '.join(choices)}, got {value!r}")

    def to_dict(self) -> dict:
        """{name: value or [values]} (a field given more than once becomes a list), sub-messages as dicts."""
        out = {}
        for name, value in self:
            value = value.to_dict() if isinstance(value, Message) else value
            if name in out:
                out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
            else:
                out[name] = value
        return out


_BOOLEANS = {"true": True, "True": True, "t": True, "false": False, "False": False, "f": False}

_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+) | (?P<newline>\n) | (?P<comment>\#[^\n]*)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?[fF]?)(?![A-Za-z_0-9]))
  | (?P<special>-?(?:inf|infinity|nan)\b)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:\[\],;])
""", re.VERBOSE | re.IGNORECASE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f",
            "v": "\v", "?": "?"}


def read_prototxt(path) -> Message:
    """The Message of a Caffe text-format file (a net's .prototxt, a solver): see the module."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"read_prototxt: argument 'path' must be a path (str or os.PathLike), got {path!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"read_prototxt: argument 'path' must name an existing file, got {path!r}")
    with open(path, "rb") as file:
        data = file.read()
    if data.startswith(b"\x89HDF") or b"\x00" in data[:4096]:
        raise ValueError(f"read_prototxt: {path} is a binary file, not a text prototxt (a .caffemodel is read by "
                         f"impls.port.read_caffemodel)")
    try:
        text = data.decode("utf8")
    except UnicodeDecodeError as error:
        raise ValueError(f"read_prototxt: {path} is not UTF-8 text (byte {error.start})") from None
    return parse_prototxt(text, source=path)


def parse_prototxt(text: str, *, source: str = "<text>") -> Message:
    """The Message of text-format `text` (`source` names it in errors)."""
    return _Parser(text, source).parse()


class _Parser:
    def __init__(self, text, source):
        self.source = source
        self.tokens = list(self._tokenize(text))
        self.index = 0

    def _tokenize(self, text):
        line, line_start, position = 1, 0, 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            column = position - line_start + 1
            if match is None:
                snippet = text[position:position + 12].split("\n")[0]
                if text[position] in "\"'":
                    raise self._error(line, column, f"a string is not closed on its line: {snippet!r}")
                raise self._error(line, column, f"unexpected character {text[position]!r} in {snippet!r}")
            kind = match.lastgroup
            if kind == "newline":
                line, line_start = line + 1, match.end()
            elif kind not in ("space", "comment"):
                yield kind, match.group(), line, column
            position = match.end()

    def _error(self, line, column, why):
        return ValueError(f"prototxt syntax error at {self.source}:{line}:{column}: {why}")

    def _peek(self):
        return self.tokens[self.index] if self.index < len(self.tokens) else ("end", "end of file", None, None)

    def _take(self):
        token = self._peek()
        self.index += 1
        return token

    def _fail(self, token, expected):
        kind, text, line, column = token
        if line is None:
            last = self.tokens[-1] if self.tokens else ("end", "", 1, 1)
            line, column = last[2], last[3]
        shown = "the end of the file" if kind == "end" else repr(text)
        return self._error(line, column, f"expected {expected}, got {shown}")

    def parse(self):
        return self._message(close=None, line=1, column=1)

    def _message(self, close, line, column):
        message = Message(line=line, source=self.source)
        while True:
            token = self._peek()
            kind, text, token_line, _ = token
            if kind == "end":
                if close is not None:
                    raise self._error(line, column, f"'{_OPEN[close]}' opened here is never closed with '{close}'")
                return message
            if kind == "punct" and text == close:
                self._take()
                return message
            if kind != "name":
                raise self._fail(token, "a field name" + (f" or '{close}'" if close else ""))
            self._take()
            self._field(message, text, token_line)
            if self._peek()[0] == "punct" and self._peek()[1] in ",;":
                self._take()

    def _field(self, message, name, line):
        token = self._peek()
        colon = token[0] == "punct" and token[1] == ":"
        if colon:
            self._take()
            token = self._peek()
        if token[0] == "punct" and token[1] in "{<":
            self._take()
            message.fields.append((name, self._message(_CLOSE[token[1]], token[2], token[3]), line))
        elif not colon:
            raise self._fail(token, f"':' or '{{' after field name '{name}'")
        elif token[0] == "punct" and token[1] == "[":
            self._take()
            for value in self._list(name):
                message.fields.append((name, value, line))
        else:
            message.fields.append((name, self._scalar(name), line))

    def _list(self, name):
        values = []
        if self._peek()[:2] == ("punct", "]"):
            self._take()
            return values
        while True:
            values.append(self._scalar(name))
            token = self._take()
            if token[:2] == ("punct", "]"):
                return values
            if token[:2] != ("punct", ","):
                raise self._fail(token, f"',' or ']' in the list of '{name}'")

    def _scalar(self, name):
        token = self._take()
        kind, text, _, _ = token
        if kind == "number":
            return _number(text)
        if kind == "special":
            return -math.inf if text.lower().startswith("-inf") else (math.inf if "inf" in text.lower()
                                                                      else math.nan)
        if kind == "name":
            return Identifier(text)
        if kind == "string":
            value = _unquote(text)
            while self._peek()[0] == "string":  # adjacent strings are one
                value += _unquote(self._take()[1])
            return value
        raise self._fail(token, f"a value for field '{name}'")


_CLOSE = {"{": "}", "<": ">"}
_OPEN = {"}": "{", ">": "<"}


def _number(text):
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?\d+", body):
        return int(body)
    return float(body)


def _unquote(text):
    body, out, index = text[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.append(char)
            index += 1
            continue
        following = body[index + 1]
        if following in _ESCAPES:
            out.append(_ESCAPES[following])
            index += 2
        elif following in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[index + 1:]).group()
            out.append(chr(int(digits, 8)))
            index += 1 + len(digits)
        elif following in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[index + 2:])
            out.append(chr(int(digits.group(), 16)) if digits else following)
            index += 2 + (len(digits.group()) if digits else 0)
        else:
            out.append(following)
            index += 2
    return "".join(out)


def format_prototxt(message: Message, indent: str = "") -> str:
    """The text format of a Message (comments are not kept): fields one per line, sub-messages as
    `name { ... }` indented by two spaces."""
    lines = []
    for name, value in message:
        if isinstance(value, Message):
            inner = format_prototxt(value, indent + "  ")
            lines.append(f"{indent}{name} {{\n{inner}{indent}}}\n" if inner else f"{indent}{name} {{\n{indent}}}\n")
        else:
            lines.append(f"{indent}{name}: {_format_value(value)}\n")
    return "".join(lines)


def _format_value(value) -> str:
    if isinstance(value, Identifier):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)
