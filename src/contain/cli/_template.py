"""A subset of Go's text/template, enough for Docker's --format and -f.

Supported: {{.Field.Path}}, {{.}}, {{$}}, variables ({{$x := ...}}, {{range $i, $v := ...}}),
pipelines with |, parentheses, string/number/bool literals, {{if}}/{{else if}}/{{else}},
{{range}} (with {{else}}), {{with}}, {{- trim -}} markers, comments, and the functions
json, join, split, lower, upper, title, truncate, pad, print, printf, println, len, index,
eq, ne, lt, le, gt, ge, and, or, not.  Anything else is a TemplateParseError naming it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

from ._format import go_json


class TemplateParseError(Exception):
    pass


class TemplateExecError(Exception):
    pass


class _Missing:
    def __repr__(self) -> str:
        return "<no value>"


MISSING = _Missing()

_UNSUPPORTED = {"define", "template", "block", "break", "continue"}

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<char>'(?:[^'\\]|\\.)')
  | (?P<decl>:=)
  | (?P<assign>=)
  | (?P<num>-?(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?))
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[()|,])
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise TemplateParseError(f"template: :1: unexpected {text[pos]!r} in command")
        kind = m.lastgroup
        pos = m.end()
        if kind == "ws":
            continue
        value = m.group()
        if kind == "punct" and value == ")" and pos < len(text) and text[pos] == ".":
            # (expr).Field
            fm = re.compile(r"(?:\.[A-Za-z0-9_]+)+").match(text, pos)
            if fm:
                out.append(("punct", ")"))
                out.append(("chain", fm.group()))
                pos = fm.end()
                continue
        out.append((kind, value))
    return out


# ----------------------------------------------------------------------------- parse

class _Node:
    pass


class _Text(_Node):
    def __init__(self, text: str) -> None:
        self.text = text


class _Action(_Node):
    def __init__(self, pipe) -> None:
        self.pipe = pipe


class _Block(_Node):
    def __init__(self, kind: str, pipe, body, orelse) -> None:
        self.kind, self.pipe, self.body, self.orelse = kind, pipe, body, orelse


class _Pipe:
    def __init__(self, decl: list[str], cmds: list[list], assign: bool = False) -> None:
        self.decl, self.cmds, self.assign = decl, cmds, assign


def _split_actions(src: str) -> list[tuple[str, str]]:
    """[("text", ...), ("action", ...)] with trim markers applied."""
    parts: list[tuple[str, str]] = []
    pos = 0
    while True:
        start = src.find("{{", pos)
        if start < 0:
            parts.append(("text", src[pos:]))
            break
        text = src[pos:start]
        inner_start = start + 2
        if src.startswith("- ", inner_start) or src.startswith("-\t", inner_start) or src.startswith("-\n", inner_start):
            text = text.rstrip()
            inner_start += 1
        parts.append(("text", text))
        # find the closing braces outside of quotes
        i = inner_start
        quote = None
        while i < len(src):
            c = src[i]
            if quote:
                if c == "\\" and quote != "`":
                    i += 2
                    continue
                if c == quote:
                    quote = None
            elif c in "\"`'":
                quote = c
            elif src.startswith("}}", i):
                break
            i += 1
        else:
            raise TemplateParseError("template: :1: unclosed action")
        inner = src[inner_start:i]
        pos = i + 2
        if inner.endswith(" -") or inner.endswith("\t-") or inner.endswith("\n-"):
            inner = inner[:-1]
            rest = src[pos:]
            stripped = rest.lstrip()
            pos += len(rest) - len(stripped)
        parts.append(("action", inner.strip()))
    return parts


class _Parser:
    def __init__(self, src: str) -> None:
        self.items = _split_actions(src)
        self.i = 0

    def parse(self) -> list[_Node]:
        nodes, end = self._list()
        if end is not None:
            raise TemplateParseError(f"template: :1: unexpected {{{{{end}}}}}")
        return nodes

    def _list(self):
        nodes: list[_Node] = []
        while self.i < len(self.items):
            kind, text = self.items[self.i]
            self.i += 1
            if kind == "text":
                if text:
                    nodes.append(_Text(text))
                continue
            if text.startswith("/*"):
                if not text.endswith("*/"):
                    raise TemplateParseError("template: :1: unclosed comment")
                continue
            word = text.split(None, 1)[0] if text else ""
            if word in ("end", "else"):
                return nodes, text
            if word in _UNSUPPORTED:
                raise TemplateParseError(f"template: :1: {{{{{word}}}}} is not supported by contain's templates")
            if word in ("if", "range", "with"):
                nodes.append(self._block(word, text[len(word):]))
                continue
            if not text:
                raise TemplateParseError("template: :1: missing value for command")
            nodes.append(_Action(_parse_pipe(text)))
        return nodes, None

    def _block(self, kind: str, rest: str) -> _Block:
        pipe = _parse_pipe(rest, allow_two=(kind == "range"))
        body, end = self._list()
        if end is None:
            raise TemplateParseError(f"template: :1: unexpected EOF (missing {{{{end}}}} for {{{{{kind}}}}})")
        orelse = None
        if end.startswith("else"):
            tail = end[4:].strip()
            if tail.startswith("if ") and kind == "if":
                orelse = [self._block("if", tail[2:])]
                return _Block(kind, pipe, body, orelse)
            if tail:
                raise TemplateParseError(f"template: :1: unexpected {tail!r} after else")
            orelse, end = self._list()
            if end != "end":
                raise TemplateParseError(f"template: :1: expected {{{{end}}}} for {{{{{kind}}}}}")
        elif end != "end":
            raise TemplateParseError(f"template: :1: unexpected {{{{{end}}}}}")
        return _Block(kind, pipe, body, orelse)


def _parse_pipe(text: str, allow_two: bool = False) -> _Pipe:
    toks = _tokens(text)
    decl: list[str] = []
    assign = False
    # $x := ... or $i, $v := ...
    for n in ((3, 1) if allow_two else (1,)):
        if n == 3 and len(toks) > 3 and toks[0][0] == "var" and toks[1] == ("punct", ",") \
                and toks[2][0] == "var" and toks[3][0] == "decl":
            decl = [toks[0][1], toks[2][1]]
            toks = toks[4:]
            break
        if n == 1 and len(toks) > 1 and toks[0][0] == "var" and toks[1][0] in ("decl", "assign"):
            decl = [toks[0][1]]
            assign = toks[1][0] == "assign"
            toks = toks[2:]
            break
    pos = 0

    def operand():
        nonlocal pos
        if pos >= len(toks):
            raise TemplateParseError("template: :1: missing value for command")
        kind, value = toks[pos]
        pos += 1
        if kind == "punct" and value == "(":
            inner = pipeline(")")
            node = ("pipe", inner)
            if pos < len(toks) and toks[pos][0] == "chain":
                node = ("chain", node, toks[pos][1])
                pos += 1
            return node
        if kind == "str":
            return ("lit", json.loads(value))
        if kind == "raw":
            return ("lit", value[1:-1])
        if kind == "char":
            return ("lit", ord(json.loads('"' + value[1:-1].replace('"', '\\"') + '"')))
        if kind == "num":
            return ("lit", int(value, 0) if re.fullmatch(r"-?(0x[0-9a-fA-F]+|\d+)", value) else float(value))
        if kind == "field":
            return ("field", value)
        if kind == "var":
            return ("var", value)
        if kind == "ident":
            if value in ("true", "false"):
                return ("lit", value == "true")
            if value == "nil":
                return ("lit", None)
            if value in _UNSUPPORTED or value in ("if", "range", "with", "end", "else"):
                raise TemplateParseError(f"template: :1: unexpected {value!r} in command")
            if value not in FUNCS:
                raise TemplateParseError(f'template: :1: function "{value}" not defined')
            return ("func", value)
        raise TemplateParseError(f"template: :1: unexpected {value!r} in operand")

    def pipeline(closer: Optional[str]) -> list[list]:
        nonlocal pos
        cmds: list[list] = [[]]
        while pos < len(toks):
            kind, value = toks[pos]
            if kind == "punct" and value == closer:
                pos += 1
                break
            if kind == "punct" and value == "|":
                pos += 1
                if not cmds[-1]:
                    raise TemplateParseError("template: :1: missing command before '|'")
                cmds.append([])
                continue
            if kind == "punct" and value in "),":
                raise TemplateParseError(f"template: :1: unexpected {value!r} in operand")
            cmds[-1].append(operand())
        else:
            if closer is not None:
                raise TemplateParseError("template: :1: unclosed left paren")
        if not cmds[-1]:
            raise TemplateParseError("template: :1: missing value for command")
        return cmds

    return _Pipe(decl, pipeline(None), assign)


# ----------------------------------------------------------------------------- run

def _field(value: Any, name: str) -> Any:
    if value is MISSING or value is None:
        return MISSING
    if isinstance(value, dict):
        return value.get(name, MISSING)
    attr = getattr(value, name, MISSING)
    if attr is MISSING:
        raise TemplateExecError(f"template: :1: can't evaluate field {name} in type {type(value).__name__}")
    return attr


def _chain(value: Any, path: str) -> Any:
    for name in path.strip(".").split("."):
        if name:
            value = _field(value, name)
    return value


def _truth(v: Any) -> bool:
    if v is MISSING or v is None:
        return False
    if isinstance(v, (list, dict, str, tuple)):
        return len(v) > 0
    return bool(v)


def go_str(v: Any) -> str:
    """fmt's %v."""
    if v is MISSING:
        return "<no value>"
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e21:
            return str(int(v)) if abs(v) < 1e21 and "e" not in repr(v) else repr(v)
        return repr(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k)}:{go_str(v[k])}" for k in sorted(v, key=str)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x) for x in v) + "]"
    return str(v)


def _printf(fmt: str, *args: Any) -> str:
    out = []
    it = iter(args)
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        m = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([a-zA-Z%])").match(fmt, i)
        if not m:
            out.append(c)
            i += 1
            continue
        i = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        arg = next(it, MISSING)
        if verb in ("v", "s"):
            text = go_str(arg)
        elif verb == "q":
            text = json.dumps(go_str(arg))
        elif verb in ("d",):
            text = str(int(arg))
        elif verb in ("f", "e", "g"):
            text = ("%" + (f".{prec}" if prec else "") + verb) % float(arg)
        elif verb == "x":
            text = format(int(arg), "x") if not isinstance(arg, str) else arg.encode().hex()
        elif verb == "t":
            text = go_str(bool(arg))
        else:
            raise TemplateExecError(f"template: printf: unsupported verb %{verb}")
        if prec and verb in ("s", "v"):
            text = text[: int(prec)]
        if width:
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width), "0" if "0" in flags and verb == "d" else " ")
        out.append(text)
    return "".join(out)


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if v is MISSING or v is None:
            return MISSING
        if isinstance(v, dict):
            v = v.get(k, MISSING)
        elif isinstance(v, (list, tuple, str)):
            try:
                v = v[int(k)]
            except (IndexError, ValueError, TypeError):
                raise TemplateExecError(f"template: :1: error calling index: index out of range: {k}") from None
        else:
            raise TemplateExecError(f"template: :1: error calling index: can't index item of type {type(v).__name__}")
    return v


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        a = None if a is MISSING else a
        return any(op(a, None if b is MISSING else b) for b in bs) if op is _eq else all(
            op(a, None if b is MISSING else b) for b in bs)
    return f


def _eq(a: Any, b: Any) -> bool:
    return a == b


def _and(*args: Any) -> Any:
    for a in args:
        if not _truth(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if _truth(a):
            return a
    return args[-1]


def _pad(s: Any, left: int, right: int) -> str:
    return " " * int(left) + go_str(s) + " " * int(right)


def _truncate(s: Any, n: int) -> str:
    text = go_str(s)
    return text[: int(n)]


def _plain(v: Any) -> Any:
    """Data as JSON sees it: methods (like ps's .Label) left out."""
    if v is MISSING:
        return None
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items() if not callable(x)}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


FUNCS: dict[str, Callable[..., Any]] = {
    "json": lambda v: go_json(_plain(v)),
    "join": lambda v, sep: sep.join(go_str(x) for x in (v or [])),
    "split": lambda s, sep: go_str(s).split(sep),
    "lower": lambda s: go_str(s).lower(),
    "upper": lambda s: go_str(s).upper(),
    "title": lambda s: go_str(s).title(),
    "truncate": _truncate,
    "pad": _pad,
    "print": lambda *a: "".join(go_str(x) for x in a),
    "println": lambda *a: " ".join(go_str(x) for x in a) + "\n",
    "printf": _printf,
    "len": lambda v: len(v) if v not in (None, MISSING) else 0,
    "index": _index,
    "eq": _cmp(_eq),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "and": _and,
    "or": _or,
    "not": lambda v: not _truth(v),
}


class Template:
    def __init__(self, source: str) -> None:
        self.source = source
        self.nodes = _Parser(source).parse()

    def render(self, data: Any) -> str:
        out: list[str] = []
        self._run(self.nodes, data, {"$": data}, out)
        return "".join(out)

    def _run(self, nodes, dot, vars_, out) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                value = self._pipe(node.pipe, dot, vars_)
                if not node.pipe.decl:
                    out.append(go_str(value))
            else:
                self._block(node, dot, vars_, out)

    def _block(self, node: _Block, dot, vars_, out) -> None:
        if node.kind == "range":
            pipe = _Pipe([], node.pipe.cmds)
            value = self._pipe(pipe, dot, vars_)
            if isinstance(value, dict):
                items = [(k, value[k]) for k in sorted(value, key=str)]
            elif isinstance(value, (list, tuple)):
                items = list(enumerate(value))
            elif isinstance(value, int) and not isinstance(value, bool):
                items = [(i, i) for i in range(value)]
            elif value is None or value is MISSING:
                items = []
            else:
                raise TemplateExecError(f"template: :1: range can't iterate over {go_str(value)}")
            if not items:
                if node.orelse:
                    self._run(node.orelse, dot, vars_, out)
                return
            for k, v in items:
                inner = dict(vars_)
                if len(node.pipe.decl) == 2:
                    inner[node.pipe.decl[0]] = k
                    inner[node.pipe.decl[1]] = v
                elif len(node.pipe.decl) == 1:
                    inner[node.pipe.decl[0]] = v
                self._run(node.body, v, inner, out)
            return
        value = self._pipe(node.pipe, dot, vars_)
        inner = dict(vars_)
        if _truth(value):
            self._run(node.body, value if node.kind == "with" else dot, inner, out)
        elif node.orelse:
            self._run(node.orelse, dot, inner, out)

    def _pipe(self, pipe: _Pipe, dot, vars_) -> Any:
        value: Any = MISSING
        first = True
        for cmd in pipe.cmds:
            value = self._cmd(cmd, dot, vars_, None if first else value, not first)
            first = False
        if pipe.decl:
            vars_[pipe.decl[0]] = value
        return value

    def _operand(self, op, dot, vars_) -> Any:
        kind = op[0]
        if kind == "lit":
            return op[1]
        if kind == "field":
            return dot if op[1] == "." else _chain(dot, op[1])
        if kind == "var":
            name, _, path = op[1].partition(".")
            if name not in vars_:
                raise TemplateParseError(f'template: :1: undefined variable "{name}"')
            return _chain(vars_[name], path) if path else vars_[name]
        if kind == "pipe":
            return self._pipe(_Pipe([], op[1]), dot, vars_)
        if kind == "chain":
            return _chain(self._operand(op[1], dot, vars_), op[2])
        if kind == "func":
            return FUNCS[op[1]]
        raise TemplateExecError(f"template: bad operand {op!r}")

    def _cmd(self, cmd, dot, vars_, piped, has_piped) -> Any:
        head = cmd[0]
        args = [self._operand(a, dot, vars_) for a in cmd[1:]]
        if has_piped:
            args.append(piped)
        if head[0] == "func":
            try:
                return FUNCS[head[1]](*args)
            except TemplateExecError:
                raise
            except Exception as exc:
                raise TemplateExecError(f"template: :1: error calling {head[1]}: {exc}") from None
        value = self._operand(head, dot, vars_)
        if callable(value) and head[0] in ("field", "chain", "var"):
            try:
                return value(*args)
            except Exception as exc:
                raise TemplateExecError(f"template: :1: error calling {head[1]}: {exc}") from None
        if args:
            raise TemplateExecError(f"template: :1: can't give argument to non-function {head[1]}")
        return value


def parse(source: str) -> Template:
    return Template(source)
