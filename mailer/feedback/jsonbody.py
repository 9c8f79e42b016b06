"""JSON from strangers, read with a bound on nesting: a hostile body is a 400, never a 500.

Python's json parser recurses once per level: a body of 100,000 ``[`` raises RecursionError,
which would be a 500 with a traceback in the log (and a provider retrying it for days). A
structure just under the interpreter's limit parses, but breaks whatever walks it again later
and deeper in the stack (hashing it for an event id, storing it as JSON). So a body is parsed
first, with RecursionError caught like any other malformed body, and then its depth is
measured on the text before anyone walks it: the brackets outside strings, stripped one level
at a time at C speed (a regex, `bytes.translate`, `bytes.replace`), which costs a fraction of
what parsing the same body does.

Measuring after a successful parse matters: the text is then known to be valid JSON, so every
``"`` outside a string opens one that closes, and the string pattern never has to give up and
rescan (on arbitrary bytes it could, quadratically).
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deepest nesting of arrays and objects accepted. Real provider events nest five or six levels
#: (SES's headers, Mailgun's user-variables); this leaves room and stays far below the
#: interpreter's recursion limit wherever the value is walked later.
MAX_DEPTH = 32

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


class JsonRefused(ValueError):
    """Not UTF-8 JSON, or nested deeper than allowed; the message says which, in one line."""


def deeper_than(text: bytes, limit: int) -> bool:
    """Whether the arrays and objects of a valid UTF-8 JSON text nest more than `limit` deep.

    In UTF-8 the bytes of ``"``, ``\\`` and the brackets never occur inside another
    character, so the bytes can be read directly. Once strings are gone and every bracket is
    ``[`` or ``]``, each `replace` removes exactly the innermost level (the pairs it creates
    are only found by the next one), so at most `limit` passes answer exactly."""
    brackets = _STRING.sub(b"", text).translate(_ONE_KIND, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body (UTF-8 bytes) or an embedded JSON string; JsonRefused otherwise.

    Why one function: every door that reads JSON from outside (each webhook, and the SES
    message inside SNS's envelope) gets the same bound and the same one-line refusal."""
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        value = json.loads(text)
    except RecursionError:
        raise JsonRefused(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError:  # includes UnicodeDecodeError and json.JSONDecodeError
        raise JsonRefused("body is not JSON") from None
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if isinstance(value, (list, dict)) and deeper_than(raw, max_depth):
        raise JsonRefused(f"JSON nested deeper than {max_depth} levels")
    return value
