"""What every command shares: the state root, errors, --format output."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import contain

from . import _format, _template


class CLIError(Exception):
    """A failure to report on stderr and exit with `code`."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class StatusExit(Exception):
    """Leave with this exit code and print nothing more."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Context:
    def __init__(self, root: Optional[str]) -> None:
        self.root = root
        self.out = sys.stdout
        self.err = sys.stderr

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    # ------------------------------------------------------------ lookups
    def container(self, name: str) -> "contain.Container":
        return contain.Container.get(name, root=self.root)

    def image(self, ref: str) -> "contain.Image":
        return contain.Image.get(ref, root=self.root)


def message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:1].upper() + text[1:]


def api(obj: Any, name: str, what: str) -> Callable[..., Any]:
    """A public API function that may not exist yet in this version of contain."""
    fn = getattr(obj, name, None)
    if fn is None:
        raise CLIError(f"Error: {what} is not available in this version of contain", 1)
    return fn


def accepts(fn: Callable[..., Any], name: str) -> bool:
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


def parse_template(source: str) -> _template.Template:
    try:
        return _template.parse(source)
    except _template.TemplateParseError as exc:
        raise CLIError(f"template parsing error: {exc}", 64) from None


def render(tmpl: _template.Template, data: Any) -> str:
    try:
        return tmpl.render(data)
    except (_template.TemplateExecError, _template.TemplateParseError) as exc:
        raise CLIError(str(exc), 1) from None


def format_rows(ctx: Context, fmt: str, rows: Sequence[Mapping[str, Any]], headers: Mapping[str, str]) -> None:
    """--format output: `table ...` aligned with a header row, else one line per row."""
    if fmt.startswith("table"):
        body = fmt[5:].lstrip(" ") or ""
        tmpl = parse_template(body.replace("\\t", "\t"))
        header_ctx = {k: v for k, v in headers.items()}
        header_ctx["Label"] = lambda *_: "LABEL"
        lines = [render(tmpl, header_ctx)]
        lines += [render(tmpl, r) for r in rows]
        text = _format.tab_template_table([ln for ln in lines])
        ctx.out.write(text)
        ctx.out.flush()
        return
    tmpl = parse_template(fmt.replace("\\t", "\t").replace("\\n", "\n"))
    for r in rows:
        ctx.out.write(render(tmpl, r) + "\n")
    ctx.out.flush()


def split_ref(ref: str) -> tuple[str, str]:
    """("repo", "tag") of "repo:tag"; the tag is after the last ':' past the last '/'."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1:]
    return name, ("<none>" if digest else "latest")


def read_kv_file(path: str) -> list[str]:
    """Docker's --env-file / --label-file: KEY=VALUE lines, # comments, bare KEY from the environment."""
    out = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CLIError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}", 125) from None
    for line in lines:
        line = line.lstrip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            if line in os.environ:
                out.append(f"{line}={os.environ[line]}")
            continue
        out.append(line)
    return out


def kv_dict(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out
