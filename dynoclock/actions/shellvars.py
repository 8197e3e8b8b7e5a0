"""``${VAR}`` in a ``shell: true`` command: a value from the environment reaches ``sh`` as a variable, never
as script text.

The schedule expands ``${VAR}`` when it is read (config/envvars.py); pasted into the script, a value such as
``x; rm -rf ~`` would run. Instead each value goes into the command's environment as ``CLOCK_VALUE_<n>`` and
the script refers to it in the form that keeps it one piece of text where it stands: ``"${CLOCK_VALUE_1}"``
outside quotes, ``${CLOCK_VALUE_1}`` inside double quotes, ``$((...))`` and here-documents, and
``'"${CLOCK_VALUE_1}"'`` inside single quotes. sh substitutes a variable's value but never parses it as
commands, so a wrong guess about where a value stands could only change how it is split, never run it. Inside a
here-document with a quoted delimiter (``<<'EOF'``), where sh substitutes nothing, the value is written as
text, and must have no line that would end the document. The words of ``${VAR:-word}`` and ``${VAR:+word}``
are the schedule's own text and stay script, as does an empty value (nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from dynoclock.config.problems import Invalid

PREFIX = "CLOCK_VALUE_"
_HOLE = "\x00"  # where a value stands in the text being scanned: an sh script cannot hold a NUL
_WORD_END = " \t\n;&|()<>"  # outside quotes, these end a word (and what follows starts one)


@dataclass
class _Frame:
    """One nesting level of the script: ``plain`` (the top, ``$(...)`` or backticks), ``double``, ``single``,
    ``arith``, ``comment``, ``here`` or ``quoted-here``."""

    kind: str
    closer: str = ""  # plain: ")" for $(...), "`" for backticks, "" at the top
    depth: int = 0  # plain: "(" open inside it; arith: "(" open, its own two included
    delimiter: str = ""  # here-documents
    strip_tabs: bool = False  # <<-


def shell_script(pieces: tuple[str, ...], refs: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The script for ``pieces`` (literal text and values alternating, as ``Expanded.pieces``; ``refs`` names
    the values in messages) with each value referred to as a variable, and those variables."""
    if any(_HOLE in piece for piece in pieces):
        raise Invalid("expected a command without NUL characters, got one with a NUL")
    scan = _Scan(_HOLE.join(pieces[0::2]), pieces[1::2], refs)
    scan.run()
    return "".join(scan.out), scan.variables


class _Scan:
    """One pass over the script: text is copied as it is, each value is replaced by its reference."""

    def __init__(self, text: str, values: tuple[str, ...], refs: tuple[str, ...]):
        self.text, self.values, self.refs = text, values, refs
        self.i = 0
        self.n = 0  # values met so far
        self.out: list[str] = []
        self.variables: dict[str, str] = {}
        self.stack = [_Frame("plain")]
        self.pending: list[_Frame] = []  # here-documents opened on this line: their text starts on the next
        self.word_start = True

    def run(self) -> None:
        while self.i < len(self.text):
            frame = self.stack[-1]
            if frame.kind in ("here", "quoted-here"):
                self._here_line(frame)
            elif self.text[self.i] == _HOLE:
                self._value(frame.kind)
            else:
                getattr(self, f"_{frame.kind}")(frame, self.text[self.i])

    def _copy(self, count: int = 1) -> None:
        self.out.append(self.text[self.i : self.i + count])
        self.i += count

    def _value(self, kind: str) -> None:
        """The reference to the next value, quoted for where it stands."""
        self.i += 1
        self.n += 1
        name = f"{PREFIX}{self.n}"
        self.variables[name] = self.values[self.n - 1]
        ref = "${" + name + "}"
        self.out.append({"plain": f'"{ref}"', "single": f"'\"{ref}\"'"}.get(kind, ref))
        self.word_start = False

    def _escape(self) -> None:
        """A backslash: it quotes the next character; before a value, it becomes a line continuation
        (backslash-newline, which sh removes), so the value stays whole."""
        if self.text[self.i + 1 : self.i + 2] == _HOLE:
            self.out.append("\\\n")
            self.i += 1
        else:
            self._copy(2)

    def _substitution(self) -> bool:
        """``$((``, ``$(`` or a backtick opens a nested level; True if one did."""
        if self.text.startswith("$((", self.i):
            self.stack.append(_Frame("arith", depth=2))
            self._copy(3)
        elif self.text.startswith("$(", self.i):
            self.stack.append(_Frame("plain", closer=")"))
            self._copy(2)
        elif self.text[self.i] == "`" and self.stack[-1].closer != "`":
            self.stack.append(_Frame("plain", closer="`"))
            self._copy()
        else:
            return False
        self.word_start = True
        return True

    def _plain(self, frame: _Frame, c: str) -> None:
        start, self.word_start = self.word_start, False
        if c == "\\":
            self._escape()
        elif c in "'\"":
            self.stack.append(_Frame("single" if c == "'" else "double"))
            self._copy()
        elif self._substitution():
            pass
        elif (c == "`" and frame.closer == "`") or (c == ")" and frame.closer == ")" and not frame.depth):
            self.stack.pop()
            self._copy()
        elif c == "#" and start:
            self.stack.append(_Frame("comment"))
        elif self.text.startswith("<<", self.i):
            self._here_operator()
        else:
            frame.depth += {"(": 1, ")": -1 if frame.depth else 0}.get(c, 0)
            self.word_start = c in _WORD_END
            self._copy()
            if c == "\n" and self.pending:
                self.stack += reversed(self.pending)  # the first one opened is read first
                self.pending = []

    def _double(self, frame: _Frame, c: str) -> None:
        if c == "\\":
            self._escape()
        elif c == '"':
            self.stack.pop()
            self._copy()
        elif not self._substitution():
            self._copy()

    def _single(self, frame: _Frame, c: str) -> None:
        if c == "'":
            self.stack.pop()
        self._copy()

    def _arith(self, frame: _Frame, c: str) -> None:
        frame.depth += {"(": 1, ")": -1}.get(c, 0)
        if not frame.depth:
            self.stack.pop()
        self._copy()

    def _comment(self, frame: _Frame, c: str) -> None:
        if c == "\n":  # the newline belongs to the level below (here-documents start after it)
            self.stack.pop()
        else:
            self._copy()

    def _here_operator(self) -> None:
        """``<<WORD`` or ``<<-WORD``: the delimiter, quoted or not; the document starts on the next line."""
        j = self.i + 2
        frame = _Frame("here", strip_tabs=self.text.startswith("-", j))
        j += frame.strip_tabs
        while j < len(self.text) and self.text[j] in " \t":
            j += 1
        while j < len(self.text) and self.text[j] not in _WORD_END:
            c = self.text[j]
            if c == _HOLE:
                raise Invalid(f"expected a here-document delimiter written out, got {self.refs[self.n]}")
            if c in "'\"\\":
                frame.kind = "quoted-here"
                end = j + 2 if c == "\\" else self.text.find(c, j + 1) + 1 or len(self.text)
                frame.delimiter += self.text[j + 1 : end - (c != "\\")]
                j = end
            else:
                frame.delimiter += c
                j += 1
        if _HOLE in frame.delimiter:
            raise Invalid(f"expected a here-document delimiter written out, got {self.refs[self.n]}")
        self.pending.append(frame)
        self._copy(j - self.i)

    def _here_line(self, frame: _Frame) -> None:
        """One line of a here-document: its end, or a line of text in which values are substituted."""
        end = self.text.find("\n", self.i)
        end = len(self.text) if end < 0 else end + 1
        line = self.text[self.i : end]
        if _ends(line, frame) and _HOLE not in line:
            self.stack.pop()
            self._copy(len(line))
            return
        if frame.kind == "here":
            while self.i < end:
                if self.text[self.i] == _HOLE:
                    self._value("here")
                elif self.text[self.i] == "\\":
                    self._escape()
                else:
                    self._copy()
            return
        # <<'EOF': sh substitutes nothing here, so the values go in as text, if they cannot end the document.
        parts = line.split(_HOLE)
        values = self.values[self.n : self.n + len(parts) - 1]
        text = "".join(p + v for p, v in zip(parts, (*values, ""), strict=True))
        if any(_ends(written, frame) for written in text.split("\n")):
            where = f"<<{'-' if frame.strip_tabs else ''}'{frame.delimiter}'"
            raise Invalid(
                f"expected {self.refs[self.n]} inside the here-document {where} to have no line "
                f"'{frame.delimiter}' (it would end the document there), got a value that has one"
            )
        self.n += len(values)
        self.out.append(text)
        self.i = end


def _ends(line: str, frame: _Frame) -> bool:
    """Whether ``line`` is the delimiter line of the here-document ``frame``."""
    line = line.rstrip("\n")
    return (line.lstrip("\t") if frame.strip_tabs else line) == frame.delimiter
