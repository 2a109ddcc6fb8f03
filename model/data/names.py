"""The one place where values from uploads and labelled files are made safe to use as names.

Anything a file says (a session id, a subject, a label, a file's own name) is data, not a name:
before it becomes part of a path, an object key, a file name, an MLflow key, SQL or HTML it goes
through one of these.

- `safe_name`: a slug of the value (ASCII letters, digits, `_`, `-`, `.`) plus a short hash of
  the original, so it is never empty, never `.` or `..`, never hidden (`.`/`_` first), bounded in
  length, one path segment, and distinct for distinct values even when their slugs are equal.
- `upload_name`: `safe_name` of an upload's session id with a short hash of its content key:
  distinct for distinct uploads of one session id, the same for one upload on every run.
- `safe_file_name`: a file name kept as it is when it is already plain, else `safe_name` of its
  stem with its (sanitised) suffix.
- `metric_key`: an MLflow metric or tag key part: kept when plain, else `safe_name`.
- `html_text`: text escaped for HTML (attributes included), unprintable characters replaced.
- `sql_text`: a SQL string literal.
- `terminal_text`: text for the terminal: no escape sequences, no rich markup.
- `csv_cell`: a spreadsheet cell that no spreadsheet runs as a formula; `csv_row` a row's text
  cells so; `csv_value` the value again from a cell read back (the inverse of `csv_cell`).
- `file_name_text`: a file name the OS gave, as text even when its bytes are not UTF-8.
- `exercise_name` and `label_name`: an exercise (a dataset partition value) and a label (a class,
  written `exercise/label` in predictions) as datasets store them: plain names (lower-case
  letters, digits, `_`; at most 40), checked, never changed, so that `Elbows_Bent`,
  `elbows bent` and `bad/<script>` are refused instead of becoming classes of their own.

The original value is kept where it is data (a report's JSON, a dataset row).
"""

from __future__ import annotations

import hashlib
import html
import os
import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache

HASH_CHARS = 12
MAX_SLUG = 48
MAX_PLAIN_FILE = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_PLAIN_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SUFFIX_PART = re.compile(r"[a-z0-9]{1,8}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_/]{1,200}")
_PLAIN_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def short_hash(value: object) -> str:
    """The first HASH_CHARS hex digits of the SHA-256 of the value's text (lone surrogates too)."""
    data = _text(value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def slug(value: object, max_len: int = MAX_SLUG) -> str:
    """ASCII letters, digits, `.`, `_` and `-` of the value (accents dropped, runs of anything
    else as one `_`), without leading or trailing `.`, `_`, `-`; possibly empty."""
    ascii_text = unicodedata.normalize("NFKD", _text(value)).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("_", ascii_text)[:max_len].strip("._-")


def safe_name(value: object) -> str:
    """One safe path segment for any value: `<slug>-<hash>` (`x-<hash>` when no slug is left)."""
    return f"{slug(value) or 'x'}-{short_hash(value)}"


def upload_name(value: object, content: str) -> str:
    """One safe path segment for an upload: `safe_name(value)` (its session id) and a short
    hash of `content` (its content key, e.g. the file's SHA-256)."""
    return f"{safe_name(value)}-{short_hash(content)}"


def safe_file_name(name: object) -> str:
    """A file name kept when plain (ASCII, not hidden, at most MAX_PLAIN_FILE characters), else
    `safe_name` of its stem plus its suffix (`.json`, `.json.gz`) when that suffix is plain."""
    text = _text(name)
    if len(text) <= MAX_PLAIN_FILE and _PLAIN_FILE.fullmatch(text) and text.strip(".") == text:
        return text
    return safe_name(text) + _suffix(text)


def _suffix(name: str) -> str:
    """The last two (or one) `.suffix` parts of a name when they are short and plain, else ""."""
    parts = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].lower().split(".")[1:]
    for n in (2, 1):
        if len(parts) >= n and all(_SUFFIX_PART.fullmatch(p) for p in parts[-n:]):
            return "." + ".".join(parts[-n:])
    return ""


def metric_key(value: object) -> str:
    """A part of an MLflow metric or tag key: kept when only letters, digits, `_` and `/`, else
    `safe_name` (whose `-` no kept key has, so the two never meet)."""
    text = _text(value)
    return text if _PLAIN_KEY.fullmatch(text) else safe_name(text)


def html_text(value: object) -> str:
    """Text for an HTML page (element content or a quoted attribute): `& < > " '` escaped;
    control characters and lone surrogates (which no UTF-8 page can hold) shown as U+FFFD."""
    text = _text(value)
    return _short_html_text(text) if len(text) <= _CACHED_HTML_TEXT else _html_text(text)


#: Texts up to this long are escaped once and remembered: a report page repeats its joints,
#: directions, moments and labels many times over.
_CACHED_HTML_TEXT = 200


def _html_text(text: str) -> str:
    return html.escape(_UNPRINTABLE.sub("\ufffd", text), quote=True)


_short_html_text = lru_cache(maxsize=4096)(_html_text)


def sql_text(value: object) -> str:
    """A SQL string literal of the value: quotes doubled; NUL refused (no SQL string holds it)."""
    text = _text(value)
    if "\x00" in text:
        raise ValueError(f"{text!r}: a NUL character cannot be part of a SQL string")
    return "'" + text.replace("'", "''") + "'"


def terminal_text(value: object) -> str:
    """Text to print on a terminal through rich: control characters (ESC and the other escape
    sequences' starters included) shown as U+FFFD, line breaks and tabs as spaces, and `[`
    escaped so that it is never markup."""
    text = _UNPRINTABLE.sub("\ufffd", _text(value))
    return re.sub(r"[\t\r\n]", " ", text).replace("[", "\\[")


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _looks_like_formula(text: str) -> bool:
    """Whether `csv_cell` prefixes the text: after any leading `'`, it starts like a formula
    and is not a number (a value already starting with `'` is prefixed again, so that
    `csv_value` can tell the two apart)."""
    rest = text.lstrip("'")
    return rest.startswith(_FORMULA_START) and not _is_number(rest)


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet shows as text: a value starting like a formula (`= + - @`, tab,
    carriage return; after any `'` it starts with) gets a leading `'`; numbers and plain text
    are kept as they are."""
    text = _text(value)
    return "'" + text if _looks_like_formula(text) else text


def csv_value(cell: str) -> str:
    """The value `csv_cell` wrote as `cell`: its leading `'` removed where `csv_cell` added it;
    any other cell (one a spreadsheet saved without the `'`, too) as it is."""
    return cell[1:] if cell.startswith("'") and _looks_like_formula(cell[1:]) else cell


def csv_row(row: Mapping[str, object]) -> dict[str, object]:
    """A row for csv.DictWriter with its text cells through `csv_cell`; other values (numbers,
    None) as they are."""
    return {k: csv_cell(v) if isinstance(v, str) else v for k, v in row.items()}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def plain_name(kind: str, value: object) -> str:
    """`value` when it is a plain name (lower-case letters, digits, '_'; at most 40): a dataset
    partition, a path segment and a class name as it is; ValueError naming `kind` otherwise."""
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value):
        raise ValueError(f"{kind} {value!r:.80} is not a plain name (lower-case letters, "
                         "digits, '_'; at most 40)")
    return value


def exercise_name(value: object) -> str:
    """`value` when it is a plain exercise name (`plain_name`); ValueError otherwise."""
    return plain_name("exercise", value)


def label_name(value: object) -> str:
    """`value` when it is a plain label name (`plain_name`); ValueError otherwise."""
    return plain_name("label", value)


def file_name_text(name: str) -> str:
    """A file name as the OS gave it (bytes that are not UTF-8 as surrogate escapes, PEP 383)
    as plain text: each such byte shown as `\\xNN`; a UTF-8 name unchanged."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
