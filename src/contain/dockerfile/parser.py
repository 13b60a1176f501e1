"""Dockerfile parser: text -> an instruction model (attrs classes).

Follows the Dockerfile reference as BuildKit reads it: parser directives
(``# syntax=``, ``# escape=``), comments, line continuations with the escape
character, heredocs (``<<EOF``, ``<<-EOF``, quoted delimiters, several per
instruction), exec (JSON) and shell forms, flags (``--from=``, ``--chown=``,
``--mount=``, ...), and the shell-like variable substitution of the
instructions that support it (``$var``, ``${var:-default}``, ``${var:+alt}``,
``${var-x}``, ``${var+x}``, ``${var:?err}``, ``${var#p}``, ``${var%p}``, escaped ``\\$``).

Parsing does no substitution: values depend on build arguments, so each
instruction keeps its raw words and offers ``expand(lookup)``, which returns
a copy with the words substituted (only for instructions Docker expands).
Every error is a :class:`DockerfileError` naming file, line and the text at fault.
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from ..errors import InvalidArgument

__all__ = [
    "DockerfileError",
    "Heredoc",
    "Instruction",
    "From",
    "Run",
    "Cmd",
    "Entrypoint",
    "Label",
    "Maintainer",
    "Expose",
    "Env",
    "Add",
    "Copy",
    "Volume",
    "User",
    "Workdir",
    "Arg",
    "Onbuild",
    "Stopsignal",
    "Healthcheck",
    "Shell",
    "Stage",
    "Dockerfile",
    "parse",
    "parse_instruction",
    "expand_word",
    "split_words",
    "parse_duration",
    "PREDEFINED_ARGS",
]

DEFAULT_ESCAPE = "\\"
DEFAULT_SHELL = ("/bin/sh", "-c")

PREDEFINED_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})

Lookup = Callable[[str], Optional[str]]


class DockerfileError(InvalidArgument):
    """A Dockerfile (or one instruction of it) is malformed.

    ``filename``, ``lineno`` (1-based, 0 when unknown) and ``text`` (the text at
    fault) are attributes as well as parts of the message.
    """

    def __init__(self, message: str, *, filename: str = "Dockerfile", lineno: int = 0,
                 text: str = "") -> None:
        self.filename = filename
        self.lineno = lineno
        self.text = text
        self.reason = message
        where = f"{filename}:{lineno}" if lineno else filename
        shown = f": {text.strip()[:200]!r}" if text.strip() else ""
        super().__init__(f"{where}: {message}{shown}")


# --------------------------------------------------------------------------- model


@attrs.frozen
class Heredoc:
    """One here-document: ``name`` is the delimiter; ``expand`` is False when it was quoted."""

    name: str
    content: str
    expand: bool = True
    chomp: bool = False  # <<- : leading tabs were stripped


@attrs.frozen(kw_only=True)
class Instruction:
    """What every instruction has: its source position and original text."""

    keyword: str = ""
    original: str = ""
    lineno: int = 0
    filename: str = "Dockerfile"

    def error(self, message: str, text: Optional[str] = None) -> DockerfileError:
        return DockerfileError(message, filename=self.filename, lineno=self.lineno,
                               text=self.original if text is None else text)

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Instruction":
        """A copy with variables substituted (identity for instructions Docker does not expand)."""
        return self

    def _x(self, word: str, lookup: Lookup, escape: str) -> str:
        try:
            return expand_word(word, lookup, escape)
        except _SubstitutionError as exc:
            raise self.error(str(exc), word) from None

    def __str__(self) -> str:
        return self.original


@attrs.frozen(kw_only=True)
class From(Instruction):
    image: str
    name: Optional[str] = None  # AS name (lower-cased, as Docker does)
    platform: Optional[str] = None

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "From":
        return attrs.evolve(self, image=self._x(self.image, lookup, escape),
                            platform=None if self.platform is None
                            else self._x(self.platform, lookup, escape))


@attrs.frozen(kw_only=True)
class _CommandInstruction(Instruction):
    """RUN, CMD, ENTRYPOINT: exec form (a list) or shell form (one string)."""

    args: Tuple[str, ...] = ()
    shell_form: bool = True

    @property
    def command(self) -> str:
        """The shell-form text (or the exec form's words joined by spaces)."""
        return self.args[0] if self.shell_form and self.args else " ".join(self.args)

    def argv(self, shell: Sequence[str]) -> List[str]:
        """The process arguments: exec form as given, shell form prefixed by SHELL."""
        if self.shell_form:
            return [*shell, self.args[0]] if self.args else []
        return list(self.args)


@attrs.frozen(kw_only=True)
class Run(_CommandInstruction):
    mounts: Tuple[str, ...] = ()
    network: Optional[str] = None
    security: Optional[str] = None
    heredocs: Tuple[Heredoc, ...] = ()

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Run":
        # The command itself is left to the shell; only flags are substituted.
        return attrs.evolve(self, mounts=tuple(self._x(m, lookup, escape) for m in self.mounts),
                            network=None if self.network is None
                            else self._x(self.network, lookup, escape))

    def argv(self, shell: Sequence[str]) -> List[str]:
        if not self.heredocs:
            return super().argv(shell)
        # As BuildKit: "RUN <<EOF" alone runs the document as the script;
        # otherwise the shell gets the line and the documents, as a shell would.
        text = self.args[0] if self.args else ""
        first = self.heredocs[0]
        if len(self.heredocs) == 1 and re.fullmatch(r"\s*<<-?\s*['\"]?" + re.escape(first.name)
                                                    + r"['\"]?\s*", text):
            return [*shell, first.content]
        script = text + "\n" + "".join(
            (h.content if h.content.endswith("\n") or not h.content else h.content + "\n")
            + h.name + "\n" for h in self.heredocs)
        return [*shell, script]


@attrs.frozen(kw_only=True)
class Cmd(_CommandInstruction):
    pass


@attrs.frozen(kw_only=True)
class Entrypoint(_CommandInstruction):
    pass


@attrs.frozen(kw_only=True)
class _PairsInstruction(Instruction):
    pairs: Tuple[Tuple[str, str], ...] = ()

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE):
        # All pairs see the values from before the instruction (Docker's rule).
        return attrs.evolve(self, pairs=tuple((self._x(k, lookup, escape), self._x(v, lookup, escape))
                                              for k, v in self.pairs))


@attrs.frozen(kw_only=True)
class Env(_PairsInstruction):
    pass


@attrs.frozen(kw_only=True)
class Label(_PairsInstruction):
    pass


@attrs.frozen(kw_only=True)
class Maintainer(Instruction):
    name: str


@attrs.frozen(kw_only=True)
class Expose(Instruction):
    ports: Tuple[str, ...]

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Expose":
        out: List[str] = []
        for p in self.ports:
            out += self._x(p, lookup, escape).split()
        return attrs.evolve(self, ports=tuple(out))

    def port_specs(self) -> List[str]:
        """Each port as "80/tcp", ranges spelled out; raises on malformed ports."""
        specs: List[str] = []
        for raw in self.ports:
            port, _, proto = raw.partition("/")
            proto = (proto or "tcp").lower()
            if proto not in ("tcp", "udp", "sctp"):
                raise self.error(f"invalid proto {proto!r} in EXPOSE", raw)
            if ":" in port:
                raise self.error("EXPOSE does not publish ports; 'host:container' is not allowed", raw)
            lo, sep, hi = port.partition("-")
            try:
                start, end = int(lo), int(hi) if sep else int(lo)
            except ValueError:
                raise self.error("invalid port in EXPOSE", raw) from None
            if not (0 < start <= end <= 65535):
                raise self.error("invalid port range in EXPOSE", raw)
            specs += [f"{n}/{proto}" for n in range(start, end + 1)]
        return specs


@attrs.frozen(kw_only=True)
class _CopyInstruction(Instruction):
    sources: Tuple[str, ...]
    dest: str
    chown: Optional[str] = None
    chmod: Optional[str] = None
    link: bool = False
    heredocs: Tuple[Heredoc, ...] = ()
    exclude: Tuple[str, ...] = ()
    parents: bool = False

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE):
        x = lambda w: None if w is None else self._x(w, lookup, escape)  # noqa: E731
        heredocs = tuple(attrs.evolve(h, content=x(h.content)) if h.expand else h
                         for h in self.heredocs)
        return attrs.evolve(self, sources=tuple(s if s.startswith("<<") else x(s) for s in self.sources),
                            dest=x(self.dest), chown=x(self.chown), chmod=x(self.chmod),
                            heredocs=heredocs, exclude=tuple(x(e) for e in self.exclude),
                            **self._extra_expand(x))

    def _extra_expand(self, x) -> dict:
        return {}

    def heredoc(self, source: str) -> Optional[Heredoc]:
        """The here-document a source word ("<<EOF") stands for, if any."""
        m = _HEREDOC_WORD.fullmatch(source)
        if not m:
            return None
        for h in self.heredocs:
            if h.name == m.group(3):
                return h
        return None


@attrs.frozen(kw_only=True)
class Add(_CopyInstruction):
    checksum: Optional[str] = None
    keep_git_dir: bool = False


@attrs.frozen(kw_only=True)
class Copy(_CopyInstruction):
    from_: Optional[str] = None

    def _extra_expand(self, x) -> dict:
        return {"from_": x(self.from_)}


@attrs.frozen(kw_only=True)
class Volume(Instruction):
    paths: Tuple[str, ...]

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Volume":
        paths = tuple(self._x(p, lookup, escape) for p in self.paths)
        for p in paths:
            if not p.strip():
                raise self.error("VOLUME specified can not be an empty string")
        return attrs.evolve(self, paths=paths)


@attrs.frozen(kw_only=True)
class User(Instruction):
    user: str

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "User":
        return attrs.evolve(self, user=self._x(self.user, lookup, escape))


@attrs.frozen(kw_only=True)
class Workdir(Instruction):
    path: str

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Workdir":
        return attrs.evolve(self, path=self._x(self.path, lookup, escape))


@attrs.frozen(kw_only=True)
class Arg(Instruction):
    """ARG name[=default] [name2[=default2] ...]; a default of None means none given."""

    args: Tuple[Tuple[str, Optional[str]], ...]

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Arg":
        return attrs.evolve(self, args=tuple((k, None if v is None else self._x(v, lookup, escape))
                                             for k, v in self.args))


@attrs.frozen(kw_only=True)
class Onbuild(Instruction):
    trigger: Instruction
    expression: str  # the trigger's text, as stored in the image config


@attrs.frozen(kw_only=True)
class Stopsignal(Instruction):
    signal: str

    def expand(self, lookup: Lookup, escape: str = DEFAULT_ESCAPE) -> "Stopsignal":
        return attrs.evolve(self, signal=self._x(self.signal, lookup, escape))


@attrs.frozen(kw_only=True)
class Healthcheck(Instruction):
    """HEALTHCHECK NONE (test == ["NONE"]) or HEALTHCHECK [opts] CMD ...; durations in ns."""

    test: Tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_config(self) -> Dict[str, object]:
        out: Dict[str, object] = {"Test": list(self.test)}
        for key, value in (("Interval", self.interval), ("Timeout", self.timeout),
                           ("StartPeriod", self.start_period),
                           ("StartInterval", self.start_interval), ("Retries", self.retries)):
            if value:
                out[key] = value
        return out


@attrs.frozen(kw_only=True)
class Shell(Instruction):
    shell: Tuple[str, ...]


@attrs.frozen
class Stage:
    """One build stage: its FROM and the instructions after it."""

    index: int
    from_: From
    instructions: List[Instruction] = attrs.field(factory=list)

    @property
    def name(self) -> Optional[str]:
        return self.from_.name


@attrs.frozen
class Dockerfile:
    """A parsed Dockerfile: directives, the ARGs before the first FROM, the stages."""

    filename: str
    directives: Dict[str, str]
    escape: str
    global_args: List[Arg]
    stages: List[Stage]
    instructions: List[Instruction]  # every instruction in file order

    def stage(self, name_or_index: Union[str, int]) -> Stage:
        if isinstance(name_or_index, int) or str(name_or_index).isdigit():
            idx = int(name_or_index)
            if 0 <= idx < len(self.stages):
                return self.stages[idx]
        else:
            for st in self.stages:
                if st.name == str(name_or_index).lower():
                    return st
        raise DockerfileError(f"target stage {name_or_index!r} could not be found",
                              filename=self.filename)


# ------------------------------------------------------------------ substitution


class _SubstitutionError(Exception):
    pass


_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]*")


def expand_word(word: str, lookup: Union[Lookup, Mapping[str, str]],
                escape: str = DEFAULT_ESCAPE) -> str:
    """Substitute variables in one word and remove quotes, as BuildKit's shell lexer does.

    ``lookup`` maps a name to its value (None when unset). Inside single quotes
    nothing is special; inside double quotes ``$`` expands and the escape character
    escapes only ``"``, ``$`` and itself.
    """
    if isinstance(lookup, Mapping):
        mapping = lookup
        lookup = mapping.get  # type: ignore[assignment]
    return _Lexer(word, lookup, escape).process()  # type: ignore[arg-type]


def split_words(text: str, escape: str = DEFAULT_ESCAPE) -> List[str]:
    """Split on unquoted, unescaped whitespace, keeping quotes and escapes in the words
    (they are removed later, by :func:`expand_word`)."""
    words: List[str] = []
    cur: List[str] = []
    in_word = False
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            cur.append(ch)
            if ch == escape and quote == '"' and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch.isspace():
            if in_word:
                words.append("".join(cur))
                cur = []
                in_word = False
        else:
            in_word = True
            cur.append(ch)
            if ch == escape and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 2
                continue
            if ch in "'\"":
                quote = ch
        i += 1
    if quote:
        raise _SubstitutionError(f"unmatched quote {quote}")
    if in_word:
        words.append("".join(cur))
    return words


class _Lexer:
    def __init__(self, text: str, lookup: Lookup, escape: str) -> None:
        self.text = text
        self.pos = 0
        self.lookup = lookup
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += 1
        return ch

    def process(self, stop: str = "") -> str:
        out: List[str] = []
        while self.pos < len(self.text):
            ch = self.peek()
            if stop and ch in stop:
                break
            if ch == self.escape:
                self.pos += 1
                if self.pos < len(self.text):
                    out.append(self.next())
                continue
            if ch == "'":
                self.pos += 1
                end = self.text.find("'", self.pos)
                if end < 0:
                    raise _SubstitutionError("unexpected end of statement while looking for matching single-quote")
                out.append(self.text[self.pos:end])
                self.pos = end + 1
                continue
            if ch == '"':
                self.pos += 1
                out.append(self._double_quoted())
                continue
            if ch == "$":
                out.append(self._dollar())
                continue
            out.append(self.next())
        return "".join(out)

    def _double_quoted(self) -> str:
        out: List[str] = []
        while True:
            if self.pos >= len(self.text):
                raise _SubstitutionError("unexpected end of statement while looking for matching double-quote")
            ch = self.peek()
            if ch == '"':
                self.pos += 1
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            if ch == self.escape:
                self.pos += 1
                nxt = self.peek()
                if nxt in ('"', "$", self.escape) and nxt:
                    out.append(self.next())
                else:
                    out.append(ch)
                continue
            out.append(self.next())

    def _dollar(self) -> str:
        self.pos += 1  # the $
        ch = self.peek()
        if ch == "{":
            self.pos += 1
            return self._braced()
        m = _NAME_START.match(ch) if ch else None
        if not m:
            return "$"
        name_match = _NAME_CHARS.match(self.text, self.pos)
        assert name_match is not None
        name = name_match.group(0)
        self.pos = name_match.end()
        return self.lookup(name) or ""

    def _braced(self) -> str:
        name_match = _NAME_CHARS.match(self.text, self.pos)
        assert name_match is not None
        name = name_match.group(0)
        self.pos = name_match.end()
        if not name or not _NAME_START.match(name[0]):
            raise _SubstitutionError(f"bad substitution at {self.text!r}")
        ch = self.peek()
        if ch == "}":
            self.pos += 1
            return self.lookup(name) or ""
        value = self.lookup(name)
        if ch == ":":
            self.pos += 1
            op = self.next()
            if op not in "-+?" or not op:
                raise _SubstitutionError(f"unsupported modifier (:{op}) in substitution")
            word = self._word_until_brace()
            unset_or_empty = not value
            if op == "-":
                return word if unset_or_empty else value  # type: ignore[return-value]
            if op == "+":
                return "" if unset_or_empty else word
            if unset_or_empty:
                raise _SubstitutionError(f"{name}: {word or 'is not allowed to be unset'}")
            return value  # type: ignore[return-value]
        if ch in ("-", "+", "?"):
            self.pos += 1
            word = self._word_until_brace()
            if ch == "-":
                return word if value is None else value
            if ch == "+":
                return "" if value is None else word
            if value is None:
                raise _SubstitutionError(f"{name}: {word or 'is not allowed to be unset'}")
            return value
        if ch in ("#", "%"):
            self.pos += 1
            longest = self.peek() == ch
            if longest:
                self.pos += 1
            pattern = self._word_until_brace()
            return _trim(value or "", pattern, prefix=(ch == "#"), longest=longest)
        raise _SubstitutionError(f"missing '}}' or unsupported modifier in substitution of {name}")

    def _word_until_brace(self) -> str:
        # The word may itself hold quotes and substitutions; nested braces count.
        out: List[str] = []
        while True:
            if self.pos >= len(self.text):
                raise _SubstitutionError("missing '}' in substitution")
            ch = self.peek()
            if ch == "}":
                self.pos += 1
                return "".join(out)
            if ch == self.escape:
                self.pos += 1
                if self.pos < len(self.text):
                    out.append(self.next())
                continue
            if ch == "$":
                out.append(self._dollar())
                continue
            if ch in "'\"":
                self.pos += 1
                if ch == '"':
                    out.append(self._double_quoted())
                else:
                    end = self.text.find("'", self.pos)
                    if end < 0:
                        raise _SubstitutionError("unmatched single-quote in substitution")
                    out.append(self.text[self.pos:end])
                    self.pos = end + 1
                continue
            out.append(self.next())


def _trim(value: str, pattern: str, *, prefix: bool, longest: bool) -> str:
    lengths = range(len(value), -1, -1) if longest else range(0, len(value) + 1)
    for n in lengths:
        part = value[:n] if prefix else value[len(value) - n:]
        if fnmatch.fnmatchcase(part, pattern):
            return value[n:] if prefix else value[:len(value) - n]
    return value


# ------------------------------------------------------------------------ parsing

_DIRECTIVE = re.compile(r"#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*\Z")
_KNOWN_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_MARK = re.compile(r"(?<!<)<<(-?)(['\"]?)([A-Za-z0-9_][A-Za-z0-9_.\-]*)\2")
_HEREDOC_WORD = re.compile(r"<<(-?)(['\"]?)([A-Za-z0-9_][A-Za-z0-9_.\-]*)\2")
_FLAGS: Dict[str, Dict[str, str]] = {
    # flag -> kind: "str", "bool" or "list" (repeatable)
    "FROM": {"platform": "str"},
    "RUN": {"mount": "list", "network": "str", "security": "str"},
    "ADD": {"chown": "str", "chmod": "str", "link": "bool", "checksum": "str",
            "keep-git-dir": "bool", "exclude": "list", "parents": "bool"},
    "COPY": {"from": "str", "chown": "str", "chmod": "str", "link": "bool",
             "exclude": "list", "parents": "bool"},
    "HEALTHCHECK": {"interval": "str", "timeout": "str", "start-period": "str",
                    "start-interval": "str", "retries": "str"},
}
_HEREDOC_INSTRUCTIONS = ("RUN", "COPY", "ADD")


@attrs.frozen
class _Line:
    keyword: str
    rest: str
    original: str
    lineno: int
    heredocs: Tuple[Heredoc, ...]


def parse(text: Union[str, bytes], filename: str = "Dockerfile") -> Dockerfile:
    """Parse a whole Dockerfile."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DockerfileError(f"not valid UTF-8 ({exc.reason})", filename=filename) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").split("\n")
    directives, start = _directives(lines, filename)
    escape = directives.get("escape", DEFAULT_ESCAPE)
    logical = _logical_lines(lines, start, escape, filename)
    instructions = [_make(line, escape, filename) for line in logical]

    global_args: List[Arg] = []
    stages: List[Stage] = []
    names: set = set()
    for ins in instructions:
        if isinstance(ins, From):
            if ins.name is not None:
                if ins.name in names:
                    raise ins.error(f"duplicate stage name {ins.name!r}")
                names.add(ins.name)
            stages.append(Stage(len(stages), ins))
        elif not stages:
            if not isinstance(ins, Arg):
                raise ins.error(f"{ins.keyword} before the first FROM: only ARG may precede FROM")
            global_args.append(ins)
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise DockerfileError("the Dockerfile has no FROM instruction" if instructions
                              else "the Dockerfile is empty", filename=filename)
    return Dockerfile(filename, directives, escape, global_args, stages, instructions)


def parse_instruction(text: str, *, filename: str = "Dockerfile", lineno: int = 1,
                      escape: str = DEFAULT_ESCAPE) -> Instruction:
    """One instruction ("ENV A=b", "CMD [\"sh\"]"), as ``docker commit -c`` takes them.

    Continuation lines and heredocs are honoured.
    """
    lines = text.replace("\r\n", "\n").split("\n")
    logical = _logical_lines(lines, 0, escape, filename, first_lineno=lineno)
    if len(logical) != 1:
        raise DockerfileError("expected exactly one instruction", filename=filename,
                              lineno=lineno, text=text)
    return _make(logical[0], escape, filename)


def _directives(lines: List[str], filename: str) -> Tuple[Dict[str, str], int]:
    found: Dict[str, str] = {}
    i = 0
    for i, line in enumerate(lines):
        m = _DIRECTIVE.match(line.strip())
        if not m:
            return found, i
        key, value = m.group(1).lower(), m.group(2)
        if key not in _KNOWN_DIRECTIVES:
            continue  # an unknown directive is a comment
        if key in found:
            raise DockerfileError(f"only one {key} parser directive can be used",
                                  filename=filename, lineno=i + 1, text=line)
        if key == "escape" and value not in ("\\", "`"):
            raise DockerfileError(f"invalid escape token {value!r} does not match ` or \\",
                                  filename=filename, lineno=i + 1, text=line)
        found[key] = value
    return found, len(lines)


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _continues(line: str, escape: str) -> bool:
    stripped = line.rstrip()
    return stripped.endswith(escape)


def _logical_lines(lines: List[str], start: int, escape: str, filename: str,
                   first_lineno: int = 1) -> List[_Line]:
    out: List[_Line] = []
    i = start
    n = len(lines)
    while i < n:
        line = lines[i]
        if not line.strip() or _is_comment(line):
            i += 1
            continue
        lineno = i + first_lineno
        parts: List[str] = []
        original: List[str] = [line]
        cur = line
        while _continues(cur, escape):
            parts.append(cur.rstrip()[:-1])
            i += 1
            # Comment and empty lines inside a continuation are dropped.
            while i < n and (_is_comment(lines[i]) or not lines[i].strip()):
                original.append(lines[i])
                i += 1
            if i >= n:
                cur = ""
                break
            cur = lines[i]
            original.append(cur)
        else:
            parts.append(cur)
        i += 1
        joined = "".join(parts).strip()
        m = re.match(r"(\S+)\s*(.*)\Z", joined, re.S)
        if m is None:
            continue  # only continuation characters: nothing to parse
        keyword, rest = m.group(1).upper(), m.group(2)
        heredocs: List[Heredoc] = []
        if keyword in _HEREDOC_INSTRUCTIONS or (keyword == "ONBUILD" and
                                                rest.split(None, 1)[:1] and
                                                rest.split(None, 1)[0].upper() in _HEREDOC_INSTRUCTIONS):
            for m2 in _heredoc_marks(rest, escape):
                chomp, quote, name = m2
                body: List[str] = []
                while True:
                    if i >= n:
                        raise DockerfileError(f"unterminated heredoc: no line {name!r} ends it",
                                              filename=filename, lineno=lineno, text=joined)
                    body_line = lines[i]
                    original.append(body_line)
                    i += 1
                    check = body_line.lstrip("\t") if chomp else body_line
                    if check == name:
                        break
                    body.append(check)
                content = "\n".join(body) + ("\n" if body else "")
                heredocs.append(Heredoc(name, content, expand=not quote, chomp=bool(chomp)))
        out.append(_Line(keyword, rest, "\n".join(original), lineno, tuple(heredocs)))
    return out


def _heredoc_marks(rest: str, escape: str) -> List[Tuple[str, str, str]]:
    """Heredoc markers outside quotes: (chomp, quote, name) each."""
    found = []
    quote = ""
    i = 0
    while i < len(rest):
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote == '"':
                i += 1
        elif ch == escape:
            i += 1
        elif ch in "'\"":
            quote = ch
        elif rest.startswith("<<", i) and not rest.startswith("<<<", i) and \
                (i == 0 or rest[i - 1] != "<"):
            m = _HEREDOC_MARK.match(rest, i)
            if m:
                found.append((m.group(1), m.group(2), m.group(3)))
                i = m.end()
                continue
        i += 1
    return found


def _split_flags(line: _Line, escape: str, filename: str) -> Tuple[Dict[str, object], str]:
    allowed = _FLAGS.get(line.keyword)
    flags: Dict[str, object] = {}
    rest = line.rest
    if allowed is None:
        return flags, rest
    while rest.startswith("--"):
        m = re.match(r"(\S+)\s*", rest)
        assert m is not None
        # A flag's value may be quoted: take the word with quotes balanced.
        try:
            word = split_words(rest, escape)[0]
        except (_SubstitutionError, IndexError):
            word = m.group(1)
        if word == "--":
            break
        rest = rest[len(word):].lstrip() if rest.startswith(word) else rest[m.end():]
        name, eq, value = word[2:].partition("=")
        kind = allowed.get(name.lower())
        if kind is None:
            raise DockerfileError(f"unknown flag: {name}", filename=filename,
                                  lineno=line.lineno, text=line.original)
        name = name.lower()
        if kind == "bool":
            if eq and value.lower() not in ("true", "false"):
                raise DockerfileError(f"expecting boolean value for flag {name}, not: {value}",
                                      filename=filename, lineno=line.lineno, text=line.original)
            flags[name] = (value.lower() != "false") if eq else True
            continue
        if not eq:
            raise DockerfileError(f"missing a value on flag: {name}", filename=filename,
                                  lineno=line.lineno, text=line.original)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if kind == "list":
            flags.setdefault(name, [])
            flags[name].append(value)  # type: ignore[union-attr]
        else:
            if name in flags:
                raise DockerfileError(f"duplicate flag specified: {name}", filename=filename,
                                      lineno=line.lineno, text=line.original)
            flags[name] = value
    return flags, rest


def _json_array(rest: str) -> Optional[List[str]]:
    text = rest.strip()
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return value


def _name_values(rest: str, line: _Line, escape: str, filename: str, *,
                 allow_legacy: bool) -> List[Tuple[str, str]]:
    err = lambda msg: DockerfileError(msg, filename=filename, lineno=line.lineno,  # noqa: E731
                                      text=line.original)
    try:
        words = split_words(rest, escape)
    except _SubstitutionError as exc:
        raise err(str(exc)) from None
    if not words:
        raise err(f"{line.keyword} requires at least one argument")
    if "=" not in words[0] or words[0].startswith("="):
        if not allow_legacy:
            raise err(f"{line.keyword} names must have a value (key=value)")
        # Legacy "ENV key value with spaces": the rest of the line is the value.
        parts = rest.strip().split(None, 1)
        if len(parts) < 2:
            raise err(f"{line.keyword} must have two arguments")
        return [(parts[0], parts[1])]
    pairs = []
    for w in words:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise err(f"syntax error - can't find = in {w!r}. Must be of the form: name=value")
        pairs.append((key, value))
    return pairs


def _make(line: _Line, escape: str, filename: str) -> Instruction:
    kw = line.keyword
    common = dict(keyword=kw, original=line.original, lineno=line.lineno, filename=filename)

    def err(msg: str, text: Optional[str] = None) -> DockerfileError:
        return DockerfileError(msg, filename=filename, lineno=line.lineno,
                               text=line.original if text is None else text)

    flags, rest = _split_flags(line, escape, filename)
    rest_stripped = rest.strip()

    if kw == "FROM":
        words = rest_stripped.split()
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if not re.fullmatch(r"[a-z][a-z0-9\-_.]*", name):
                raise err(f"invalid name for build stage: {words[2]!r}, name can't start with a number or contain symbols")
            return From(image=words[0], name=name, platform=flags.get("platform"), **common)  # type: ignore[arg-type]
        if len(words) != 1:
            raise err("FROM requires either one or three arguments (image [AS name])")
        return From(image=words[0], platform=flags.get("platform"), **common)  # type: ignore[arg-type]

    if kw in ("RUN", "CMD", "ENTRYPOINT"):
        exec_args = _json_array(rest)
        if exec_args is not None:
            args, shell_form = tuple(exec_args), False
        else:
            args, shell_form = ((rest_stripped,) if rest_stripped else ()), True
        if kw == "RUN":
            if not args and not line.heredocs:
                raise err("RUN requires at least one argument")
            return Run(args=args, shell_form=shell_form, mounts=tuple(flags.get("mount", ())),  # type: ignore[arg-type]
                       network=flags.get("network"), security=flags.get("security"),  # type: ignore[arg-type]
                       heredocs=line.heredocs, **common)
        if not args and kw == "CMD":
            raise err("CMD requires at least one argument")
        cls = Cmd if kw == "CMD" else Entrypoint
        return cls(args=args, shell_form=shell_form, **common)

    if kw == "ENV":
        return Env(pairs=tuple(_name_values(rest, line, escape, filename, allow_legacy=True)), **common)

    if kw == "LABEL":
        return Label(pairs=tuple(_name_values(rest, line, escape, filename, allow_legacy=True)), **common)

    if kw == "MAINTAINER":
        if not rest_stripped:
            raise err("MAINTAINER requires exactly one argument")
        return Maintainer(name=rest_stripped, **common)

    if kw == "EXPOSE":
        ports = tuple(rest_stripped.split())
        if not ports:
            raise err("EXPOSE requires at least one argument")
        return Expose(ports=ports, **common)

    if kw in ("ADD", "COPY"):
        exec_args = _json_array(rest)
        if exec_args is not None:
            words = exec_args
        else:
            try:
                words = split_words(rest, escape)
            except _SubstitutionError as exc:
                raise err(str(exc)) from None
        if len(words) < 2:
            raise err(f"{kw} requires at least two arguments, but only one was provided. Destination could not be determined"
                      if len(words) == 1 else f"{kw} requires at least two arguments")
        for w in words[:-1]:
            if _HEREDOC_WORD.fullmatch(w) and not any(h.name == _HEREDOC_WORD.fullmatch(w).group(3)  # type: ignore[union-attr]
                                                      for h in line.heredocs):
                raise err(f"heredoc {w} has no body")
        kwargs = dict(sources=tuple(words[:-1]), dest=words[-1], chown=flags.get("chown"),
                      chmod=flags.get("chmod"), link=bool(flags.get("link", False)),
                      heredocs=line.heredocs, exclude=tuple(flags.get("exclude", ())),  # type: ignore[arg-type]
                      parents=bool(flags.get("parents", False)))
        if kw == "ADD":
            return Add(checksum=flags.get("checksum"), keep_git_dir=bool(flags.get("keep-git-dir")),  # type: ignore[arg-type]
                       **kwargs, **common)  # type: ignore[arg-type]
        from_ = flags.get("from")
        if from_ is not None and not from_:
            raise err("COPY --from needs a stage name, index or image")
        return Copy(from_=from_, **kwargs, **common)  # type: ignore[arg-type]

    if kw == "VOLUME":
        exec_args = _json_array(rest)
        paths = tuple(exec_args) if exec_args is not None else tuple(rest_stripped.split())
        if not paths:
            raise err("VOLUME requires at least one argument")
        for p in paths:
            if not p.strip():
                raise err("VOLUME specified can not be an empty string")
        return Volume(paths=paths, **common)

    if kw in ("USER", "WORKDIR", "STOPSIGNAL"):
        if not rest_stripped or (kw != "WORKDIR" and len(rest_stripped.split()) != 1):
            raise err(f"{kw} requires exactly one argument")
        if kw == "USER":
            return User(user=rest_stripped, **common)
        if kw == "WORKDIR":
            return Workdir(path=rest_stripped, **common)
        return Stopsignal(signal=rest_stripped, **common)

    if kw == "ARG":
        try:
            words = split_words(rest, escape)
        except _SubstitutionError as exc:
            raise err(str(exc)) from None
        if not words:
            raise err("ARG requires at least one argument")
        args = []
        for w in words:
            name, eq, value = w.partition("=")
            if not name or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise err(f"invalid ARG name {name!r}", w)
            args.append((name, value if eq else None))
        return Arg(args=tuple(args), **common)

    if kw == "ONBUILD":
        if not rest_stripped:
            raise err("ONBUILD requires at least one argument")
        inner_kw = rest_stripped.split(None, 1)[0].upper()
        if inner_kw == "ONBUILD":
            raise err("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if inner_kw in ("FROM", "MAINTAINER"):
            raise err(f"{inner_kw} isn't allowed as an ONBUILD trigger")
        m = re.match(r"(\S+)\s*(.*)\Z", rest_stripped, re.S)
        assert m is not None
        inner_line = _Line(m.group(1).upper(), m.group(2), line.original, line.lineno, line.heredocs)
        trigger = _make(inner_line, escape, filename)
        return Onbuild(trigger=trigger, expression=rest_stripped, **common)

    if kw == "HEALTHCHECK":
        words = rest_stripped.split(None, 1)
        if not words:
            raise err("HEALTHCHECK requires an argument (NONE or CMD ...)")
        typ = words[0].upper()
        if typ == "NONE":
            if len(words) > 1 or flags:
                raise err("HEALTHCHECK NONE takes no arguments")
            return Healthcheck(test=("NONE",), **common)
        if typ != "CMD":
            raise err(f"unknown type {words[0]!r} for HEALTHCHECK (try CMD)")
        cmd_text = words[1] if len(words) > 1 else ""
        exec_args = _json_array(cmd_text)
        if exec_args is not None:
            test: Tuple[str, ...] = ("CMD", *exec_args)
        elif cmd_text.strip():
            test = ("CMD-SHELL", cmd_text.strip())
        else:
            raise err("HEALTHCHECK CMD requires a command")
        durations = {}
        for flag in ("interval", "timeout", "start-period", "start-interval"):
            if flag in flags:
                try:
                    ns = parse_duration(str(flags[flag]))
                except ValueError:
                    raise err(f"invalid duration for --{flag}: {flags[flag]!r}") from None
                if ns != 0 and ns < 1_000_000:
                    raise err(f"--{flag} cannot be less than 1ms")
                durations[flag.replace("-", "_")] = ns
        retries = 0
        if "retries" in flags:
            try:
                retries = int(str(flags["retries"]))
            except ValueError:
                raise err(f"invalid --retries value: {flags['retries']!r}") from None
            if retries < 0:
                raise err("--retries cannot be negative")
        return Healthcheck(test=test, retries=retries, **durations, **common)

    if kw == "SHELL":
        exec_args = _json_array(rest)
        if exec_args is None:
            raise err("SHELL requires the arguments to be in JSON form")
        if not exec_args:
            raise err("SHELL requires at least one argument")
        return Shell(shell=tuple(exec_args), **common)

    raise err(f"unknown instruction: {line.keyword}", line.keyword)


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration(text: str) -> int:
    """A Go duration ("30s", "1m30s", "500ms", "1.5h") in nanoseconds."""
    text = text.strip()
    if text == "0":
        return 0
    pos, total = 0, 0.0
    if not text:
        raise ValueError("empty duration")
    for m in re.finditer(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text):
        if m.start() != pos:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(text)
    return int(total)
