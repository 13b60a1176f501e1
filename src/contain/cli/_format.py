"""Output the way the Docker CLI prints it: tables, sizes, times, ports."""

from __future__ import annotations

import datetime as _dt
import json
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

NONE = "<none>"


def human_size(size: float) -> str:
    """Docker's units.HumanSizeWithPrecision(size, 3): decimal units, 3 digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    i = 0
    size = float(size)
    while size >= 1000 and i < len(units) - 1:
        size /= 1000
        i += 1
    text = f"{size:.3g}"
    if "e" in text:  # 999.7 rounds to 1e+03: move up one unit as Go would print 1000
        text = f"{size:.0f}"
    return text + units[i]


def bytes_size(size: float) -> str:
    """Docker's units.BytesSize: binary units ("1.5MiB"), as stats prints them."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    size = float(size)
    while size >= 1024 and i < len(units) - 1:
        size /= 1024
        i += 1
    return f"{size:.4g}{units[i]}"


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    m = s // 60
    if m == 1:
        return "About a minute"
    if m < 60:
        return f"{m} minutes"
    h = round(s / 3600)
    if h == 1:
        return "About an hour"
    if h < 48:
        return f"{h} hours"
    if h < 24 * 7 * 2:
        return f"{h // 24} days"
    if h < 24 * 30 * 2:
        return f"{h // 24 // 7} weeks"
    if h < 24 * 365 * 2:
        return f"{h // 24 // 30} months"
    return f"{h // 24 // 365} years"


def parse_time(text: Optional[str]) -> Optional[float]:
    """Seconds since the epoch from an RFC 3339 time; None for a missing or zero time."""
    if not text or str(text).startswith("0001-01-01"):
        return None
    text = str(text)
    main, frac = text, ""
    tz = 0.0
    if text.endswith("Z"):
        main = text[:-1]
    elif len(text) > 6 and text[-6] in "+-" and text[-3] == ":":
        sign = 1 if text[-6] == "+" else -1
        tz = sign * (int(text[-5:-3]) * 3600 + int(text[-2:]) * 60)
        main = text[:-6]
    main, _, frac = main.partition(".")
    try:
        base = _dt.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return None
    return base.timestamp() - tz + (float("0." + frac) if frac.isdigit() else 0.0)


def ago(text: Optional[str]) -> str:
    t = parse_time(text)
    if t is None:
        return "N/A"
    return human_duration(time.time() - t) + " ago"


def local_time(text: Optional[str]) -> str:
    """Docker's CreatedAt: "2024-01-02 15:04:05 +0000 UTC" (in local time)."""
    t = parse_time(text)
    if t is None:
        return ""
    d = _dt.datetime.fromtimestamp(t).astimezone()
    return d.strftime("%Y-%m-%d %H:%M:%S %z ") + (d.tzname() or "")


def ellipsis(text: str, width: int) -> str:
    """Docker's formatter.Ellipsis: cut to width characters ending in '…'."""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def go_quote(text: str) -> str:
    """strconv.Quote for the common cases."""
    return json.dumps(text, ensure_ascii=False)


def short_id(image_or_id: str) -> str:
    return image_or_id.split(":", 1)[-1][:12]


def format_ports(ports: Optional[Mapping[str, Any]]) -> str:
    """NetworkSettings.Ports as Docker's PORTS column: "0.0.0.0:9000->80/tcp"."""
    out = []
    for private, bindings in sorted((ports or {}).items(), key=lambda kv: _port_key(kv[0])):
        if not bindings:
            out.append(private)
            continue
        for b in bindings:
            ip = b.get("HostIp") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            if ip == "::":
                host = ":::"
                out.append(f"{host}{b.get('HostPort')}->{private}")
            else:
                out.append(f"{host}:{b.get('HostPort')}->{private}")
    return ", ".join(out)


def _port_key(spec: str):
    num, _, proto = spec.partition("/")
    try:
        return (int(num.split("-")[0]), proto)
    except ValueError:
        return (0, spec)


def go_json(value: Any, indent: Optional[int] = None) -> str:
    """encoding/json's output (HTML characters escaped, as Go does)."""
    if indent is None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    else:
        text = json.dumps(value, indent=indent, ensure_ascii=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class Table:
    """text/tabwriter with Docker's settings (minwidth 10, padding 3)."""

    def __init__(self, header: Sequence[str]) -> None:
        self.rows: list[list[str]] = [list(header)] if header else []

    def add(self, row: Iterable[Any]) -> None:
        self.rows.append([str(c) for c in row])

    def render(self) -> str:
        if not self.rows:
            return ""
        ncols = max(len(r) for r in self.rows)
        widths = [0] * ncols
        for r in self.rows:
            for i, cell in enumerate(r[:-1]):
                widths[i] = max(widths[i], len(cell))
        lines = []
        for r in self.rows:
            parts = []
            for i, cell in enumerate(r):
                if i < len(r) - 1:
                    parts.append(cell.ljust(max(widths[i] + 3, 10)))
                else:
                    parts.append(cell)
            lines.append("".join(parts))
        return "\n".join(lines) + "\n"


def tab_template_table(rows: list[str]) -> str:
    """Rows whose cells are separated by tabs (a `table` --format) aligned like tabwriter."""
    t = Table([])
    for line in rows:
        t.add(line.split("\t"))
    return t.render()
