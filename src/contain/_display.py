"""How contain's objects show themselves in notebooks and terminals.

Jupyter calls `_repr_html_` (a table), IPython's terminal `_repr_pretty_`
(an aligned text table, like `docker ps`), rich calls `__rich__`.  The
functions here take the public objects (Container, Image, Volume, Network,
duck-typed) or lists of them; `install()` attaches them as methods, and
`ResultList` is a list that displays as one table.

`progress(...)` is the progress helper long operations use: a bar in a
terminal or a notebook (tqdm), silent when nothing interactive is attached,
and a callback for programs in every case.
"""

from __future__ import annotations

import html
import importlib.util
import sys
import time
from typing import Any, Callable, Iterable, Optional, Sequence

from ._imageops import _in_notebook

__all__ = [
    "ResultList", "install", "html_table", "text_table",
    "container_row", "image_row", "volume_row", "network_row",
    "container_html", "containers_html", "containers_table",
    "image_html", "images_html", "images_table",
    "volume_html", "volumes_html", "volumes_table",
    "network_html", "networks_html", "networks_table",
    "to_html", "to_text", "to_rich", "Progress", "progress", "interactive",
]


# ------------------------------------------------------------------ cells
def _ago(rfc3339: Optional[str]) -> str:
    from . import _timefmt

    if not rfc3339:
        return ""
    t = _timefmt.parse(rfc3339)
    if not t:
        return ""
    return _timefmt.human_duration(time.time() - t) + " ago"


def _size(n: Optional[int]) -> str:
    if n is None:
        return ""
    # Docker's units.HumanSize: decimal units, 3 significant digits
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"


def _truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ports(settings: dict) -> str:
    out = []
    for key, bindings in sorted((settings.get("Ports") or {}).items()):
        for b in bindings or ():
            out.append(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}->{key}")
        if not bindings:
            out.append(key)
    return ", ".join(out)


CONTAINER_COLUMNS = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
IMAGE_COLUMNS = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
VOLUME_COLUMNS = ["DRIVER", "VOLUME NAME", "LABELS"]
NETWORK_COLUMNS = ["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]


def container_row(c: Any) -> Optional[list]:
    try:
        st = c.inspect()
        status = c.status_text()
    except Exception:  # removed meanwhile
        return None
    cmd = " ".join([st.get("Path", "")] + list(st.get("Args") or []))
    return [c.short_id, st["Config"].get("Image", ""), '"' + _truncate(cmd, 20) + '"',
            _ago(st.get("Created")), status, _ports(st.get("NetworkSettings") or {}),
            st.get("Name", "").lstrip("/")]


def image_rows(img: Any) -> list:
    tags = img.tags or ["<none>:<none>"]
    rows = []
    for t in tags:
        repo, _, tag = t.rpartition(":")
        if "/" in tag or not repo:  # a registry port, not a tag
            repo, tag = t, "<none>"
        rows.append([repo, tag, img.short_id, _ago(img.created), _size(img.size)])
    return rows


def image_row(img: Any) -> list:
    return image_rows(img)[0]


def volume_row(v: Any) -> list:
    try:
        labels = v.labels
    except Exception:
        labels = {}
    return ["local", v.name, ",".join(f"{k}={val}" if val else k for k, val in labels.items())]


def network_row(n: Any) -> list:
    info = _attrs(n)
    subnets = [c.get("Subnet", "") for c in ((info.get("IPAM") or {}).get("Config") or [])]
    nid = getattr(n, "short_id", None) or str(info.get("Id", getattr(n, "id", "")))[:12]
    return [nid, getattr(n, "name", info.get("Name", "")), info.get("Driver", "bridge"),
            info.get("Scope", "local"), ", ".join(s for s in subnets if s)]


def _attrs(obj: Any) -> dict:
    for getter in ("inspect", "attrs"):
        value = getattr(obj, getter, None)
        try:
            value = value() if callable(value) else value
        except Exception:
            continue
        if isinstance(value, dict):
            return value
    return {}


# ------------------------------------------------------------------ tables
def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
               caption: Optional[str] = None) -> str:
    """An HTML table (escaped), styled to fit Jupyter's light and dark themes."""
    parts = ['<table class="contain-table">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f'<th style="text-align:left">{html.escape(h)}</th>'
                                          for h in headers) + "</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f'<td style="text-align:left">{html.escape(str(v))}</td>'
                                      for v in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns aligned with at least three spaces, as the docker CLI prints."""
    rows = [[str(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    lines = ["   ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
             for r in [list(headers)] + rows]
    return "\n".join(lines)


def _kind(obj: Any) -> str:
    name = type(obj).__name__
    return {"Container": "container", "Image": "image", "Volume": "volume",
            "Network": "network"}.get(name, "")


def _table_of(items: Sequence[Any]) -> tuple:
    """(headers, rows, kind) for a homogeneous list of public objects."""
    kinds = {_kind(x) for x in items} or {"container"}
    if len(kinds) != 1 or "" in kinds:
        return ["OBJECT"], [[repr(x)] for x in items], "object"
    kind = kinds.pop()
    if kind == "container":
        return CONTAINER_COLUMNS, [r for r in map(container_row, items) if r is not None], kind
    if kind == "image":
        return IMAGE_COLUMNS, [r for img in items for r in image_rows(img)], kind
    if kind == "volume":
        return VOLUME_COLUMNS, [volume_row(v) for v in items], kind
    return NETWORK_COLUMNS, [network_row(n) for n in items], kind


def _items(obj: Any) -> list:
    return list(obj) if isinstance(obj, (list, tuple)) else [obj]


def to_html(obj: Any) -> str:
    """An object or a list of them as an HTML table."""
    items = _items(obj)
    headers, rows, kind = _table_of(items)
    caption = None
    if isinstance(obj, (list, tuple)):
        caption = f"{len(rows)} {kind}{'s' if len(rows) != 1 else ''}"
    return html_table(headers, rows, caption=caption)


def to_text(obj: Any) -> str:
    headers, rows, _ = _table_of(_items(obj))
    return text_table(headers, rows)


def to_rich(obj: Any) -> Any:
    """A rich Table when rich is installed, else the text table."""
    headers, rows, kind = _table_of(_items(obj))
    try:
        from rich.table import Table
    except ImportError:
        return text_table(headers, rows)
    table = Table(*headers, title=None if not isinstance(obj, (list, tuple)) else f"{kind}s")
    for r in rows:
        table.add_row(*[str(v) for v in r])
    return table


# Names the lead can attach one by one.
def container_html(c: Any) -> str:
    return to_html(c)


def containers_html(cs: Sequence[Any]) -> str:
    return to_html(list(cs))


def containers_table(cs: Sequence[Any]) -> str:
    return to_text(list(cs))


def image_html(i: Any) -> str:
    return to_html(i)


def images_html(imgs: Sequence[Any]) -> str:
    return to_html(list(imgs))


def images_table(imgs: Sequence[Any]) -> str:
    return to_text(list(imgs))


def volume_html(v: Any) -> str:
    return to_html(v)


def volumes_html(vs: Sequence[Any]) -> str:
    return to_html(list(vs))


def volumes_table(vs: Sequence[Any]) -> str:
    return to_text(list(vs))


def network_html(n: Any) -> str:
    return to_html(n)


def networks_html(ns: Sequence[Any]) -> str:
    return to_html(list(ns))


def networks_table(ns: Sequence[Any]) -> str:
    return to_text(list(ns))


# ---------------------------------------------------------- the methods
def _repr_html_(self: Any) -> str:
    return to_html(self)


def _repr_pretty_(self: Any, p: Any, cycle: bool) -> None:
    p.text(repr(self) if cycle else to_text(self))


def __rich__(self: Any) -> Any:
    return to_rich(self)


class ResultList(list):
    """A list (of containers, images, volumes or networks) that shows as
    one table in Jupyter, IPython and rich; otherwise a plain list."""

    _repr_html_ = _repr_html_
    _repr_pretty_ = _repr_pretty_
    __rich__ = __rich__


def install(*classes: Any) -> None:
    """Attach _repr_html_, _repr_pretty_ and __rich__ to the public classes
    (default: Container, Image, Volume and Network when they exist) where
    they do not have their own."""
    if not classes:
        import contain

        classes = tuple(c for c in (getattr(contain, n, None) for n in
                                    ("Container", "Image", "Volume", "Network")) if c is not None)
        if not any(getattr(c, "__name__", "") == "Volume" for c in classes):
            from .volume import Volume

            classes += (Volume,)
    for cls in classes:
        for name, fn in (("_repr_html_", _repr_html_), ("_repr_pretty_", _repr_pretty_),
                         ("__rich__", __rich__)):
            if name not in cls.__dict__:
                setattr(cls, name, fn)


# ---------------------------------------------------------------- progress
def interactive() -> bool:
    """A person is watching: a terminal on stderr, or a Jupyter kernel."""
    if _in_notebook():
        return True
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _bar_class() -> Any:
    if importlib.util.find_spec("tqdm") is None:
        return None
    if _in_notebook() and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm
    else:
        from tqdm.std import tqdm  # plain text: works in a terminal and a notebook's stderr
    return tqdm


class Progress:
    """One progress line: `update(n)` as work gets done; a tqdm bar when
    enabled (default: when interactive), and `callback(event)` for programs
    with event = {"desc", "current", "total", "unit", "done", **info}."""

    def __init__(self, total: Optional[float] = None, desc: str = "", unit: str = "B", *,
                 callback: Optional[Callable[[dict], Any]] = None,
                 enabled: Optional[bool] = None, leave: bool = True) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.current = 0.0
        self.callback = callback
        self.closed = False
        self._bar = None
        if enabled if enabled is not None else interactive():
            cls = _bar_class()
            if cls is not None:
                scale = unit == "B"
                self._bar = cls(total=total, desc=desc, unit=unit, unit_scale=scale,
                                unit_divisor=1024 if scale else 1000, leave=leave,
                                file=sys.stderr, dynamic_ncols=True)

    def _emit(self, done: bool = False, **info: Any) -> None:
        if self.callback is not None:
            self.callback({"desc": self.desc, "current": self.current, "total": self.total,
                           "unit": self.unit, "done": done, **info})

    def update(self, n: float = 1, **info: Any) -> None:
        self.current += n
        if self._bar is not None:
            self._bar.update(n)
        self._emit(**info)

    def set_total(self, total: Optional[float]) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description(desc)

    def close(self, **info: Any) -> None:
        if self.closed:
            return
        self.closed = True
        if self._bar is not None:
            self._bar.close()
        self._emit(done=True, **info)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress(total: Optional[float] = None, desc: str = "", unit: str = "B", *,
             callback: Any = None, enabled: Optional[bool] = None, leave: bool = True) -> Progress:
    """Make a Progress.  `callback` may also be True (a bar even when not
    interactive) or False (never a bar): what long operations accept as
    their progress= argument."""
    if callback is True:
        return Progress(total, desc, unit, enabled=True, leave=leave)
    if callback is False:
        return Progress(total, desc, unit, enabled=False, leave=leave)
    return Progress(total, desc, unit, callback=callback, enabled=enabled, leave=leave)
