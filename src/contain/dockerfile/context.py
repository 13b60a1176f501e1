"""The build context: a directory, filtered by .dockerignore, that ADD/COPY read from.

.dockerignore follows moby's patternmatcher: one Go ``filepath.Match`` pattern per line
with ``**`` for any number of directories, ``!`` for exceptions, the last matching line
deciding, a leading ``/`` or ``./`` ignored, and a path excluded when it or any of its
parent directories matches.

Sources are resolved safely: a source that climbs out with ``..``, or a symlink (at
the source itself or in its directories) that points outside the context, is refused
with a :class:`ContextError` instead of being followed. Symlinks found *inside* a copied
directory are copied as symlinks, as Docker does.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import attrs

from .parser import DockerfileError

__all__ = ["ContextError", "IgnorePattern", "BuildContext", "Match", "Entry",
           "read_dockerignore", "has_wildcard"]


class ContextError(DockerfileError):
    """A source of ADD/COPY is missing, excluded, or outside the build context."""


_WILDCARDS = re.compile(r"[*?\[]")


def has_wildcard(text: str) -> bool:
    return bool(_WILDCARDS.search(text))


@attrs.frozen
class IgnorePattern:
    text: str
    exclusion: bool
    regex: "re.Pattern[str]"

    @classmethod
    def compile(cls, line: str) -> Optional["IgnorePattern"]:
        line = line.strip()
        if not line or line.startswith("#"):
            return None
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        if not line:
            return None
        cleaned = posixpath.normpath(line.replace("\\", "/") if os.sep == "\\" else line)
        cleaned = cleaned.lstrip("/")
        while cleaned.startswith("./"):
            cleaned = cleaned[2:]
        if cleaned in ("", "."):
            cleaned = "."
        return cls(line, exclusion, re.compile(_pattern_regex(cleaned), re.S))

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def _pattern_regex(pattern: str, double_star: bool = True) -> str:
    """moby/patternmatcher's translation of a pattern to a regular expression
    (double_star=False: plain Go filepath.Match, where ``**`` is just two ``*``)."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if double_star and i + 1 < n and pattern[i + 1] == "*":
                i += 1
                if i + 1 < n and pattern[i + 1] == "/":
                    i += 1
                if i + 1 >= n:
                    out.append(".*")
                else:
                    out.append("(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            i += 1
            if i < n:
                out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2 if i + 1 < n and pattern[i + 1] in "!^" else i + 1)
            if end < 0:
                out.append(r"\[")
            else:
                body = pattern[i + 1:end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif ch in ".$+()|{}^":
            out.append("\\" + ch)
        else:
            out.append(ch)
        i += 1
    out.append("$")
    return "".join(out)


def read_dockerignore(context_dir: str, dockerfile: Optional[str] = None) -> List[str]:
    """Patterns of ``<Dockerfile>.dockerignore`` (BuildKit's per-Dockerfile file) or ``.dockerignore``."""
    candidates = []
    if dockerfile:
        candidates.append(dockerfile + ".dockerignore")
    candidates.append(os.path.join(context_dir, ".dockerignore"))
    for path in candidates:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            continue
    return []


@attrs.frozen
class Match:
    """A source found in the context: its path relative to the context, and on the host."""

    rel: str
    path: str
    is_dir: bool


@attrs.frozen
class Entry:
    """One file, directory or symlink to copy; ``rel`` is relative to the copy's top."""

    rel: str
    path: str
    st: os.stat_result


class BuildContext:
    """A context directory with its .dockerignore patterns."""

    def __init__(self, path: str, *, ignore: Optional[Sequence[str]] = None,
                 dockerfile: Optional[str] = None) -> None:
        self.path = os.path.realpath(path)
        if not os.path.isdir(self.path):
            raise ContextError("the build context is not a directory", filename=path)
        lines = read_dockerignore(self.path, dockerfile) if ignore is None else list(ignore)
        self.patterns: List[IgnorePattern] = [p for p in map(IgnorePattern.compile, lines) if p]
        self._hashes: Dict[Tuple[int, int, int, int], str] = {}
        self._walk_cache: Optional[List[str]] = None

    # ---------------------------------------------------------------- ignoring
    def is_excluded(self, rel: str) -> bool:
        """Whether a context-relative path is left out by .dockerignore."""
        rel = posixpath.normpath(rel).lstrip("/")
        if rel in ("", "."):
            return False
        parents = rel.split("/")[:-1]
        excluded = False
        for pattern in self.patterns:
            hit = pattern.matches(rel)
            if not hit:
                for i in range(len(parents)):
                    if pattern.matches("/".join(parents[:i + 1])):
                        hit = True
                        break
            if hit:
                excluded = not pattern.exclusion
        return excluded

    def _has_exceptions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    # ------------------------------------------------------------- resolving
    def _error(self, message: str, text: str, where) -> ContextError:
        return ContextError(message, filename=getattr(where, "filename", "Dockerfile"),
                            lineno=getattr(where, "lineno", 0), text=text)

    def _secure(self, rel: str, source: str, where) -> str:
        """The host path of context-relative ``rel`` with symlinks resolved; refuses
        anything that leads outside the context."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        resolved: List[str] = []
        hops = 0
        via = ""
        while parts:
            part = parts.pop(0)
            if part == "..":
                if not resolved:
                    raise self._error("forbidden path outside the build context"
                                      + (f" (symlink {via} escapes the build context)" if via else ""),
                                      source, where)
                resolved.pop()
                continue
            candidate = os.path.join(self.path, *resolved, part)
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                missing = os.path.normpath(os.path.join(self.path, *resolved, part, *parts))
                if missing != self.path and not missing.startswith(self.path + os.sep):
                    raise self._error("forbidden path outside the build context", source, where)
                return missing
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > 40:
                    raise self._error("too many levels of symbolic links", source, where)
                target = os.readlink(candidate)
                via = f"{'/'.join(resolved + [part])} -> {target}"
                if target.startswith("/"):
                    real = os.path.normpath(target)
                    if real != self.path and not real.startswith(self.path + os.sep):
                        raise self._error(
                            f"symlink {'/'.join(resolved + [part])} -> {target} escapes the build context",
                            source, where)
                    resolved = []
                    parts = [p for p in os.path.relpath(real, self.path).split(os.sep) if p != "."] + parts
                else:
                    parts = [p for p in target.split("/") if p not in ("", ".")] + parts
                continue
            resolved.append(part)
        return os.path.join(self.path, *resolved)

    def _all_paths(self) -> List[str]:
        if self._walk_cache is None:
            found: List[str] = []
            for dirpath, dirnames, filenames in os.walk(self.path):
                rel_dir = os.path.relpath(dirpath, self.path)
                rel_dir = "" if rel_dir == "." else rel_dir
                for name in sorted(dirnames) + sorted(filenames):
                    found.append(f"{rel_dir}/{name}" if rel_dir else name)
                dirnames.sort()
            self._walk_cache = found
        return self._walk_cache

    def resolve(self, source: str, where=None) -> List[Match]:
        """The context paths a source word names (wildcards expanded); at least one."""
        cleaned = posixpath.normpath("/" + source.replace("\\", "/") if os.sep == "\\" else "/" + source)
        if ".." in source.split("/"):
            # normpath of "/" + src already clamps at the root; refuse climbing explicitly.
            depth = 0
            for part in source.split("/"):
                if part == "..":
                    depth -= 1
                    if depth < 0:
                        raise self._error("forbidden path outside the build context", source, where)
                elif part not in ("", "."):
                    depth += 1
        rel = cleaned.lstrip("/")
        if has_wildcard(rel):
            regex = re.compile(_pattern_regex(rel, double_star=False), re.S)
            matches = []
            for cand in self._all_paths():
                if regex.match(cand) and not self.is_excluded(cand):
                    host = self._secure(cand, source, where)
                    matches.append(Match(cand, host, os.path.isdir(host)))
            if not matches:
                raise self._error("no source files were specified (the pattern matches nothing in the build context)",
                                  source, where)
            return matches
        host = self._secure(rel, source, where)
        if rel and self.is_excluded(rel) and not (os.path.isdir(host) and self._has_exceptions()):
            raise self._error(f"{source} is excluded by .dockerignore", source, where)
        if not os.path.lexists(host):
            raise self._error(f"{source}: not found in the build context", source, where)
        real_rel = os.path.relpath(host, self.path)
        return [Match("" if real_rel == "." else real_rel, host, os.path.isdir(host))]

    def walk(self, match: Match) -> Iterator[Entry]:
        """What copying a match brings: for a file, itself (rel = its name); for a
        directory, its contents not excluded (rel relative to it), parents first."""
        if not match.is_dir:
            yield Entry(posixpath.basename(match.rel) or os.path.basename(match.path),
                        match.path, os.stat(match.path))
            return
        base_rel = match.rel
        keep_dirs: Dict[str, bool] = {}
        entries: List[Entry] = []
        for dirpath, dirnames, filenames in os.walk(match.path):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, match.path)
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in dirnames + sorted(filenames):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                ctx_rel = f"{base_rel}/{rel}" if base_rel else rel
                host = os.path.join(dirpath, name)
                st = os.lstat(host)
                if stat.S_ISDIR(st.st_mode):
                    keep_dirs[rel] = not self.is_excluded(ctx_rel)
                    entries.append(Entry(rel, host, st))
                elif not self.is_excluded(ctx_rel):
                    entries.append(Entry(rel, host, st))
                    parent = posixpath.dirname(rel)
                    while parent and not keep_dirs.get(parent, False):
                        keep_dirs[parent] = True
                        parent = posixpath.dirname(parent)
            if not self._has_exceptions():
                # Without exceptions an excluded directory holds nothing to copy.
                dirnames[:] = [d for d in dirnames
                               if keep_dirs.get(f"{rel_dir}/{d}" if rel_dir else d, True)]
        for e in entries:
            if stat.S_ISDIR(e.st.st_mode) and not keep_dirs.get(e.rel, False):
                continue
            yield e

    # --------------------------------------------------------------- hashing
    def file_hash(self, path: str, st: os.stat_result) -> str:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._hashes.get(key)
        if cached is None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            cached = self._hashes[key] = h.hexdigest()
        return cached

    def content_hash(self, items: Iterable[Tuple[str, Entry]], *, uid: Optional[int] = None,
                     gid: Optional[int] = None, chmod: Optional[int] = None) -> str:
        """One digest of (destination path, type, mode, owner, content) of every entry."""
        h = hashlib.sha256()
        for dest, e in items:
            mode = e.st.st_mode
            kind = stat.S_IFMT(mode)
            perm = stat.S_IMODE(mode) if chmod is None or stat.S_ISLNK(mode) else chmod
            if stat.S_ISLNK(mode):
                body = "link:" + os.readlink(e.path)
            elif stat.S_ISREG(mode):
                body = "file:" + self.file_hash(e.path, e.st)
            elif stat.S_ISDIR(mode):
                body = "dir"
            else:
                body = "other"
            owner = f"{0 if uid is None else uid}:{0 if gid is None else gid}"
            h.update(f"{dest}\0{kind:o}\0{perm:o}\0{owner}\0{body}\n".encode("utf-8", "surrogateescape"))
        return "sha256:" + h.hexdigest()
