"""Builder: images from Dockerfiles, or from a chainable Python API on the same engine.

    Builder("busybox").run("echo hi > /x").copy("src", "/dst").env(A="b") \\
        .workdir("/w").cmd(["sh"]).build(tag="x:y")

    Builder.from_dockerfile("path/to/context", tag="x:y", buildargs={"V": "1"})

Each chained call adds one Dockerfile instruction (``Builder.dockerfile()`` shows
the text); ``build`` runs them with the layer cache, as ``docker build`` would.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Union

from ._root import RootArg, get_root
from .dockerfile import build as _build
from .dockerfile.context import BuildContext
from .dockerfile.parser import parse
from .errors import InvalidArgument
from .image import Image

__all__ = ["Builder", "BuildError"]

BuildError = _build.BuildError

Command = Union[str, Sequence[str]]


def _quote(value: Any) -> str:
    text = str(value)
    if "\n" in text:
        raise InvalidArgument(f"values may not contain newlines: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _word(value: str) -> str:
    if any(c.isspace() for c in value) or "\n" in value:
        raise InvalidArgument(f"paths with spaces need the list form: {value!r}")
    return value


def _command(value: Command) -> str:
    if isinstance(value, str):
        if "\n" in value:
            raise InvalidArgument("a shell command may not contain newlines; use ' && ' or a list")
        return value
    return json.dumps([str(v) for v in value])


class Builder:
    """A chainable image recipe; ``build()`` turns it into an :class:`Image`."""

    def __init__(self, base: Union[str, Image] = "scratch", *, context: Union[None, str, os.PathLike] = None,
                 root: RootArg = None) -> None:
        self._base = base.id if isinstance(base, Image) else str(base)
        self._context = os.fspath(context) if context is not None else None
        self._root = root
        self._lines: List[str] = []

    def __repr__(self) -> str:
        return f"<Builder FROM {self._base}, {len(self._lines)} steps>"

    # ------------------------------------------------------------ instructions
    def instruction(self, text: str) -> "Builder":
        """Any Dockerfile instruction as text (e.g. ``"HEALTHCHECK CMD true"``)."""
        self._lines.append(text)
        return self

    def run(self, command: Command) -> "Builder":
        return self.instruction(f"RUN {_command(command)}")

    def _copy(self, kw: str, src: Union[str, Sequence[str]], dest: str, *, chown: Optional[str],
              chmod: Union[None, int, str], from_: Optional[str] = None) -> "Builder":
        sources = [src] if isinstance(src, (str, os.PathLike)) else list(src)
        flags = []
        if from_:
            flags.append(f"--from={from_}")
        if chown:
            flags.append(f"--chown={chown}")
        if chmod is not None:
            flags.append(f"--chmod={chmod:o}" if isinstance(chmod, int) else f"--chmod={chmod}")
        words = [os.fspath(s) for s in sources] + [dest]
        if any(any(c.isspace() for c in w) for w in words):
            body = json.dumps(words)
        else:
            body = " ".join(words)
        return self.instruction(" ".join([kw, *flags, body]))

    def copy(self, src: Union[str, Sequence[str]], dest: str, *, chown: Optional[str] = None,
             chmod: Union[None, int, str] = None, from_: Optional[str] = None) -> "Builder":
        """COPY from the context (``context=``, default the current directory) or ``from_`` an image."""
        return self._copy("COPY", src, dest, chown=chown, chmod=chmod, from_=from_)

    def add(self, src: Union[str, Sequence[str]], dest: str, *, chown: Optional[str] = None,
            chmod: Union[None, int, str] = None) -> "Builder":
        """ADD: like copy, and local tar archives are extracted."""
        return self._copy("ADD", src, dest, chown=chown, chmod=chmod)

    def env(self, mapping: Optional[Mapping[str, Any]] = None, **values: Any) -> "Builder":
        items = {**(mapping or {}), **values}
        if not items:
            raise InvalidArgument("env() needs at least one variable")
        return self.instruction("ENV " + " ".join(f"{k}={_quote(v)}" for k, v in items.items()))

    def label(self, mapping: Optional[Mapping[str, Any]] = None, **values: Any) -> "Builder":
        items = {**(mapping or {}), **values}
        if not items:
            raise InvalidArgument("label() needs at least one label")
        return self.instruction("LABEL " + " ".join(f"{_quote(k)}={_quote(v)}" for k, v in items.items()))

    def arg(self, name: str, default: Optional[str] = None) -> "Builder":
        return self.instruction(f"ARG {name}" + ("" if default is None else f"={_quote(default)}"))

    def workdir(self, path: str) -> "Builder":
        return self.instruction(f"WORKDIR {_word(path)}")

    def user(self, user: Union[str, int]) -> "Builder":
        return self.instruction(f"USER {_word(str(user))}")

    def expose(self, *ports: Union[int, str]) -> "Builder":
        return self.instruction("EXPOSE " + " ".join(str(p) for p in ports))

    def volume(self, *paths: str) -> "Builder":
        return self.instruction("VOLUME " + json.dumps(list(paths)))

    def cmd(self, command: Command) -> "Builder":
        return self.instruction(f"CMD {_command(command)}")

    def entrypoint(self, command: Command) -> "Builder":
        return self.instruction(f"ENTRYPOINT {_command(command)}")

    def shell(self, shell: Sequence[str]) -> "Builder":
        return self.instruction(f"SHELL {json.dumps(list(shell))}")

    def stopsignal(self, signal: Union[str, int]) -> "Builder":
        return self.instruction(f"STOPSIGNAL {signal}")

    def onbuild(self, instruction: str) -> "Builder":
        return self.instruction(f"ONBUILD {instruction}")

    def healthcheck(self, command: Optional[Command], *, interval: Optional[str] = None,
                    timeout: Optional[str] = None, start_period: Optional[str] = None,
                    retries: Optional[int] = None) -> "Builder":
        if command is None:
            return self.instruction("HEALTHCHECK NONE")
        flags = [f"--{name}={value}" for name, value in (
            ("interval", interval), ("timeout", timeout), ("start-period", start_period),
            ("retries", retries)) if value is not None]
        return self.instruction(" ".join(["HEALTHCHECK", *flags, "CMD", _command(command)]))

    # ----------------------------------------------------------------- build
    def dockerfile(self) -> str:
        """The recipe as Dockerfile text."""
        return "\n".join([f"FROM {self._base}", *self._lines]) + "\n"

    def build(self, tag: Optional[str] = None, *, tags: Iterable[str] = (),
              buildargs: Optional[Mapping[str, str]] = None, nocache: bool = False,
              quiet: bool = False, log: Optional[Callable[[str], None]] = None,
              labels: Optional[Mapping[str, str]] = None) -> Image:
        """Build the recipe; the image (tagged with ``tag`` and ``tags``)."""
        r = get_root(self._root)
        all_tags = ([tag] if tag else []) + list(tags)
        df = parse(self.dockerfile(), filename="<Builder>")
        context = BuildContext(self._context if self._context is not None else os.getcwd(),
                               ignore=None)
        record = _build.build(df, context, root=r, tags=all_tags, buildargs=buildargs,
                              nocache=nocache, quiet=quiet,
                              log=log if log is not None else (lambda line: None) if quiet else None,
                              labels=labels)
        return Image(record, r)

    @classmethod
    def from_dockerfile(cls, path: Union[str, os.PathLike] = ".", dockerfile: str = "Dockerfile",
                        tag: Union[None, str, Sequence[str]] = None,
                        buildargs: Optional[Mapping[str, str]] = None,
                        target: Optional[str] = None, nocache: bool = False,
                        quiet: bool = False, root: RootArg = None,
                        log: Optional[Callable[[str], None]] = None,
                        labels: Optional[Mapping[str, str]] = None, pull: bool = False,
                        network: str = "none") -> Image:
        """``docker build``: ``path`` is the context; ``dockerfile`` is relative to it
        (or absolute); ``tag`` one reference or several."""
        r = get_root(root)
        context_dir = os.fspath(path)
        df_path = dockerfile if os.path.isabs(dockerfile) else os.path.join(context_dir, dockerfile)
        try:
            with open(df_path, "rb") as f:
                text = f.read()
        except FileNotFoundError:
            raise InvalidArgument(f"Cannot locate specified Dockerfile: {dockerfile}") from None
        df = parse(text, filename=dockerfile)
        context = BuildContext(context_dir, dockerfile=df_path)
        tags = [tag] if isinstance(tag, str) else list(tag or [])
        record = _build.build(df, context, root=r, tags=tags, buildargs=buildargs, target=target,
                              nocache=nocache, quiet=quiet, log=log, pull=pull, labels=labels,
                              network=network)
        return Image(record, r)
