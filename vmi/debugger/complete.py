"""Tab completion for ``vmi debug``: what the word before the cursor can become.

``completions(engine, line)`` takes the line up to the cursor and returns the
candidates for its last whitespace-separated word, each a full replacement of
that word. The shell gives readline only whitespace as word delimiters, so a
word is ``reverse-fi``, ``$es``, ``*bu`` or ``$esp+cou`` as a person sees it
(readline's default delimiters split at ``-``, ``$`` and ``*``, which is how
``rev<Tab><Tab>`` used to complete a symbol after ``reverse-`` and ``$<Tab>``
never reached the register names).

* the first word: command names and aliases (never symbols);
* after ``info``: its topics; after ``help``: command names;
* a word starting with ``$``: register names (``$pc``, ``$sp``, ``$fp`` too),
  and ``set``'s settings after ``set``;
* after a command that takes an address or an expression (``break``, ``x``,
  ``print``, ``watch``...): symbols, also after a ``*`` or an operator
  (``*loop+``, ``$esp+cou``).
"""

from __future__ import annotations

import re
from typing import Any

from vmi.debugger.engine import INFO_TOPICS, REGISTER_NAMES, CommandError, command_names, lookup

#: Commands whose arguments are addresses or expressions (symbols complete there).
EXPRESSION_COMMANDS = frozenset((
    "break", "tbreak", "until", "x", "print", "display", "watch", "rwatch", "awatch",
    "disassemble", "info", "set", "goto", "inject",
))
_REGISTERS = tuple(sorted({*REGISTER_NAMES, "pc", "sp", "fp", "ps"}))
_SETTINGS = ("step-budget", "var")
#: Where an identifier starts inside an expression word.
_TAIL = re.compile(r"[$A-Za-z_.][\w.$]*$")


def completions(engine: Any, line: str) -> list[str]:
    """The sorted candidates for the last word of ``line`` (the text before the
    cursor); empty when nothing fits."""
    words = line.split()
    text = "" if not words or line[-1:].isspace() else words[-1]
    position = len(words) - (1 if text else 0)  # index of the word being completed
    if position == 0:
        if "/" in text:
            return []
        return sorted({name for name in command_names() if name.startswith(text)})
    try:
        command = lookup(re.split(r"[/\s]", words[0], maxsplit=1)[0]).name
    except CommandError:
        return []
    if command == "help" and position == 1:
        return sorted({name for name in command_names() if name.startswith(text)})
    if command == "info" and position == 1:
        topics = {name for names in INFO_TOPICS.values() for name in names}
        return sorted(t for t in topics if t.startswith(text))
    if command == "set" and position == 1 and not text.startswith("$"):
        return sorted(s for s in _SETTINGS if s.startswith(text))
    if command not in EXPRESSION_COMMANDS and not text.startswith("$"):
        return []
    match = _TAIL.search(text)
    if match is None:
        return []
    head, tail = text[:match.start()], match.group()
    if tail.startswith("$"):
        names = ["$" + name for name in _REGISTERS]
    elif command in EXPRESSION_COMMANDS:
        names = list(engine.symbols)
    else:
        return []
    return sorted(head + name for name in names if name.startswith(tail))
