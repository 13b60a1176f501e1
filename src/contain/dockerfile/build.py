"""The build engine: runs a parsed Dockerfile step by step, with a layer cache.

Every step yields an image, as in Docker's classic builder:

* RUN runs the command in a container made from the previous step's image
  (shell form through SHELL, the build arguments in its environment, network
  "none"), checks the exit code, commits the container's writable layer as one
  layer, and removes the container.
* ADD and COPY write the files into a fresh staging directory laid out like an
  overlay upper directory, at the destination resolved *through the image's
  layers* (symlinks in the image are interpreted relative to the image root,
  never the host), and commit it as one layer.  The owners of staged files are
  declared (`_Staging.own`) rather than set with chown, and recorded so in the
  layer: an ordinary user cannot give a file to another id, and with the
  layer store's id mapping the ids of an image's files on the host are not the
  image's (Store.image_owner).
* Every other instruction changes the config only (a history entry with
  ``empty_layer``); WORKDIR adds a layer only when it had to create the directory.

The cache maps (parent image, the instruction's text after substitution, the
build arguments it sees, and for ADD/COPY the content hash of its sources) to
the resulting image, in small JSON records under ``<root>/build-cache/``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import attrs

from .._commit import _env_lookup, apply_instruction, commit_directory
from .._root import Root, get_root
from ..errors import ContainError, ImageNotFound, InvalidArgument
from ..oci.imageconfig import ContainerConfig, host_platform
from ..storage.store import ImageRecord
from . import parser as p
from .context import BuildContext, Entry, Match, has_wildcard

__all__ = ["BuildError", "build", "LayeredFS", "BuildCache"]

# Opaque directory markers: root's layers, and an ordinary user's (storage/unpack.py).
_OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


class BuildError(ContainError):
    """A build step failed: ``step`` is its text, ``exit_code`` the command's code
    (RUN), ``log`` its last output lines."""

    def __init__(self, message: str, *, step: str = "", exit_code: Optional[int] = None,
                 log: Sequence[str] = ()) -> None:
        self.step = step
        self.exit_code = exit_code
        self.log = list(log)
        self.msg = message
        text = f"{step}: {message}" if step else message
        if self.log:
            text += "\n" + "\n".join("  " + line for line in self.log)
        super().__init__(text)


# ------------------------------------------------------------------- image reading


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    for name in _OPAQUE_XATTRS:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


class LayeredFS:
    """Read an image's root filesystem through its layer dirs (top-most first),
    honouring overlay whiteouts and opaque directories; symlinks are interpreted
    relative to the image root."""

    def __init__(self, layers: Sequence[str], scanner: Optional[Callable[[Sequence[str]], Any]] = None) -> None:
        self.layers = list(layers)
        self._dirs: Dict[str, List[str]] = {"": list(self.layers)}
        # An ordinary user's layers: a directory only a subordinate id may
        # search is looked through by `scanner` (storage.userns.scan), as
        # root of the user namespace, once for all below it.
        self._scanner = scanner
        self._scanned: List[str] = []
        self._stats: Dict[str, os.stat_result] = {}
        self._opaque: set = set()
        self._links: Dict[str, str] = {}
        self._children: Dict[str, tuple] = {}

    def _scan(self, d: str) -> None:
        found = self._scanner([d])  # type: ignore[misc]
        self._stats.update(found.stats)
        self._opaque |= found.opaque
        self._links.update(found.links)
        self._children.update(found.children)
        self._scanned.append(d.rstrip("/") + "/")

    def _was_scanned(self, path: str) -> bool:
        return any((path + "/").startswith(top) for top in self._scanned)

    def lstat(self, host: str) -> os.stat_result:
        """os.lstat of a layer's path, through the scanner where the user may not."""
        st = self._stats.get(host)
        if st is not None:
            return st
        try:
            return os.lstat(host)
        except PermissionError:
            if self._scanner is None:
                raise
        parent = os.path.dirname(host)
        if not self._was_scanned(parent):
            self._scan(parent)
        st = self._stats.get(host)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), host)
        return st

    def _listdir(self, d: str) -> List[str]:
        names = self._children.get(d)
        if names is not None:
            return list(names)
        try:
            return os.listdir(d)
        except PermissionError:
            if self._scanner is None or self._was_scanned(d):
                raise
        self._scan(d)
        return list(self._children.get(d, ()))

    def _is_opaque(self, host: str) -> bool:
        if host in self._stats:
            return host in self._opaque
        return _is_opaque(host)

    def readlink(self, host: str) -> str:
        link = self._links.get(host)
        return link if link is not None else os.readlink(host)

    @staticmethod
    def _norm(path: str) -> str:
        return posixpath.normpath("/" + path).lstrip("/")

    def _dir_layers(self, rel: str) -> List[str]:
        """Host dirs (top first) that make up image directory ``rel`` (no symlinks in it)."""
        cached = self._dirs.get(rel)
        if cached is not None:
            return cached
        parent, name = posixpath.split(rel)
        out: List[str] = []
        for d in self._dir_layers(parent):
            host = os.path.join(d, name)
            try:
                st = self.lstat(host)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                break  # a whiteout or a non-directory hides everything below
            out.append(host)
            if self._is_opaque(host):
                break
        self._dirs[rel] = out
        return out

    def entry(self, path: str) -> Optional[Tuple[str, os.stat_result]]:
        """(host path, lstat) of the top-most visible entry at ``path``, or None."""
        rel = self._norm(path)
        if rel == "":
            return (self.layers[0], os.lstat(self.layers[0])) if self.layers else None
        parent, name = posixpath.split(rel)
        for d in self._dir_layers(parent):
            host = os.path.join(d, name)
            try:
                st = self.lstat(host)
            except FileNotFoundError:
                continue
            if _is_whiteout(st):
                return None
            return host, st
        return None

    def resolve(self, path: str, *, follow_final: bool = True) -> str:
        """``path`` with every symlink resolved inside the image ("/a/b")."""
        parts = [x for x in path.split("/") if x not in ("", ".")]
        resolved: List[str] = []
        hops = 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                if resolved:
                    resolved.pop()
                continue
            e = self.entry("/".join(resolved + [name]))
            if e is not None and stat.S_ISLNK(e[1].st_mode) and (parts or follow_final):
                hops += 1
                if hops > 40:
                    raise InvalidArgument(f"too many levels of symbolic links at {path}")
                target = self.readlink(e[0])
                if target.startswith("/"):
                    resolved = []
                parts = [x for x in target.split("/") if x not in ("", ".")] + parts
                continue
            resolved.append(name)
        return "/" + "/".join(resolved)

    def listdir(self, path: str) -> Dict[str, Tuple[str, os.stat_result]]:
        rel = self._norm(path)
        seen: set = set()
        out: Dict[str, Tuple[str, os.stat_result]] = {}
        for d in self._dir_layers(rel):
            for name in self._listdir(d):
                if name in seen:
                    continue
                seen.add(name)
                host = os.path.join(d, name)
                st = self.lstat(host)
                if not _is_whiteout(st):
                    out[name] = (host, st)
        return out

    def walk(self, path: str) -> Iterator[Tuple[str, str, os.stat_result]]:
        """(relative path, host path, lstat) below directory ``path``, parents first."""
        stack = [""]
        base = self._norm(path)
        while stack:
            rel = stack.pop()
            listing = self.listdir(posixpath.join(base, rel) if rel else base)
            for name in sorted(listing, reverse=True):
                host, st = listing[name]
                child = f"{rel}/{name}" if rel else name
                yield child, host, st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(child)

    def read(self, path: str) -> Optional[bytes]:
        e = self.entry(self.resolve(path))
        if e is None or not stat.S_ISREG(e[1].st_mode):
            return None
        with open(e[0], "rb") as f:
            return f.read()


# -------------------------------------------------------------------------- cache


class BuildCache:
    """key -> image id records under <root>/build-cache/, checked against the store."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self.dir = os.path.join(root.path, "build-cache")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> Optional[ImageRecord]:
        try:
            with open(os.path.join(self.dir, key + ".json")) as f:
                image_id = json.load(f)["image"]
            return self.root.store.resolve(image_id)
        except (FileNotFoundError, ValueError, KeyError, ImageNotFound):
            return None

    def put(self, key: str, record: ImageRecord) -> None:
        path = os.path.join(self.dir, key + ".json")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"image": record.id, "created": time.time()}, f)
        os.replace(tmp, path)


# ------------------------------------------------------------------------- engine


@attrs.define
class _StageState:
    name: Optional[str]
    image: Optional[ImageRecord]  # None: scratch, nothing yet
    args: Dict[str, Optional[str]]  # ARGs declared in this stage -> value
    shell: Optional[List[str]] = None

    @property
    def config(self) -> ContainerConfig:
        return self.image.config.config if self.image is not None else ContainerConfig()


def _short(image_id: str) -> str:
    return image_id.split(":", 1)[-1][:12]


class _Engine:
    def __init__(self, df: p.Dockerfile, context: Optional[BuildContext], *, root: Root,
                 buildargs: Mapping[str, str], target: Optional[str], nocache: bool,
                 quiet: bool, log: Callable[[str], None], pull: bool,
                 labels: Optional[Mapping[str, str]], network: str) -> None:
        self.df = df
        self.context = context
        self.root = root
        self.store = root.store
        self.buildargs = {k: ("" if v is None else str(v)) for k, v in (buildargs or {}).items()}
        self.target = target
        self.nocache = nocache
        self.quiet = quiet
        self._log = log
        self.pull = pull
        self.labels = dict(labels or {})
        self.network = network
        self.cache = BuildCache(root)
        self.stage_images: Dict[str, ImageRecord] = {}
        self.used_buildargs: set = set()
        plat = host_platform()
        target_platform = f"{plat['os']}/{plat['architecture']}" + (
            f"/{plat['variant']}" if plat.get("variant") else "")
        self.platform_args = {
            "TARGETPLATFORM": target_platform, "TARGETOS": plat["os"],
            "TARGETARCH": plat["architecture"], "TARGETVARIANT": plat.get("variant", ""),
            "BUILDPLATFORM": target_platform, "BUILDOS": plat["os"],
            "BUILDARCH": plat["architecture"], "BUILDVARIANT": plat.get("variant", ""),
        }
        self.step = 0
        self.total = 0
        self.build_tmp = os.path.join(root.path, "build-tmp")
        os.makedirs(self.build_tmp, mode=0o700, exist_ok=True)

    def log(self, text: str) -> None:
        if not self.quiet:
            self._log(text)

    # ------------------------------------------------------------------ driver
    def run(self) -> ImageRecord:
        df = self.df
        target = df.stage(self.target) if self.target is not None else df.stages[-1]
        stages = df.stages[:target.index + 1]
        self.total = sum(1 + len(s.instructions) for s in stages)
        global_args: Dict[str, Optional[str]] = {}
        for ins in df.global_args:
            ins = ins.expand(self._lookup_in(global_args, None))
            for name, default in ins.args:
                global_args[name] = self._arg_value(name, default)
        global_args_with_platform = {**self.platform_args, **global_args}
        self.global_args = global_args
        result: Optional[ImageRecord] = None
        for stage in stages:
            result = self._run_stage(stage, global_args_with_platform)
        if result is None:
            raise BuildError("the build produced no image (a scratch stage with no steps)")
        unused = [k for k in self.buildargs
                  if k not in self.used_buildargs and k not in p.PREDEFINED_ARGS]
        if unused:
            self.log(f"[Warning] One or more build-args {unused} were not consumed")
        return result

    def _arg_value(self, name: str, default: Optional[str]) -> Optional[str]:
        if name in self.buildargs:
            self.used_buildargs.add(name)
            return self.buildargs[name]
        return default

    @staticmethod
    def _lookup_in(args: Mapping[str, Optional[str]], config: Optional[ContainerConfig]):
        env = _env_lookup(config.env) if config is not None else (lambda k: None)

        def lookup(name: str) -> Optional[str]:
            value = env(name)  # ENV wins over ARG
            if value is not None:
                return value
            return args.get(name)

        return lookup

    def _header(self, ins: p.Instruction) -> str:
        self.step += 1
        text = " ".join(ins.original.split("\n")[0].split()) if not getattr(ins, "heredocs", ()) \
            else ins.original.split("\n")[0]
        if "\n" in ins.original and not getattr(ins, "heredocs", ()):
            text = " ".join(ins.original.replace("\\\n", " ").split())
        self.log(f"Step {self.step}/{self.total} : {text}")
        return f"Step {self.step}/{self.total} : {text}"

    # ---------------------------------------------------------------- stages
    def _run_stage(self, stage: p.Stage, global_args: Dict[str, Optional[str]]) -> Optional[ImageRecord]:
        header = self._header(stage.from_)
        fr = stage.from_.expand(self._lookup_in(global_args, None), self.df.escape)
        if fr.platform:
            wanted = fr.platform.lower()
            here = self.platform_args["TARGETPLATFORM"]
            if wanted != here and not here.startswith(wanted + "/"):
                raise BuildError(f"platform {fr.platform} is not this machine's ({here}); "
                                 "cross-platform builds are not supported", step=header)
        state = _StageState(stage.name, None, {})
        image_ref = fr.image
        if image_ref.lower() == "scratch":
            self.log(" ---> (scratch)")
        elif image_ref.lower() in self.stage_images:
            state.image = self.stage_images[image_ref.lower()]
            self.log(f" ---> {_short(state.image.id)}")
        else:
            try:
                state.image = self.store.resolve(image_ref)
            except ImageNotFound:
                raise BuildError(f"pull access denied: image {image_ref!r} is not in the local store "
                                 "(pulling during builds is not supported yet; pull or load it first)",
                                 step=header) from None
            except InvalidArgument as exc:
                raise BuildError(f"invalid image reference {image_ref!r}: {exc}", step=header) from None
            self.log(f" ---> {_short(state.image.id)}")
        state.args = {}
        triggers = list(state.config.on_build or [])
        if triggers:
            self.log(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for text in triggers:
                try:
                    ins = p.parse_instruction(text, filename=f"{image_ref} ONBUILD",
                                              escape=self.df.escape)
                except p.DockerfileError as exc:
                    raise BuildError(str(exc), step=header) from None
                self._dispatch(ins, state, trigger=True)
            # The child image does not inherit the triggers it ran.
            if state.image is not None and state.config.on_build:
                cfg = attrs.evolve(state.config, on_build=None)
                state.image = self._cached_config(state, ins, cfg, "#(nop) ONBUILD triggers ran")
        for ins in stage.instructions:
            self._header(ins)
            self._dispatch(ins, state)
        if state.image is not None:
            if stage.name:
                self.stage_images[stage.name] = state.image
            self.stage_images[str(stage.index)] = state.image
        return state.image

    # ------------------------------------------------------------- dispatch
    def _dispatch(self, ins: p.Instruction, state: _StageState, trigger: bool = False) -> None:
        try:
            if isinstance(ins, p.Arg):
                self._arg(ins, state)
            elif isinstance(ins, p.Run):
                self._run(ins, state)
            elif isinstance(ins, (p.Copy, p.Add)):
                self._copy(ins, state)
            elif isinstance(ins, p.Workdir):
                self._workdir(ins, state)
            elif isinstance(ins, p.Maintainer):
                self._config_step(ins, state, author=ins.name)
            elif isinstance(ins, p.From):
                raise ins.error("FROM is not allowed here")
            else:
                self._config_step(ins, state)
        except p.DockerfileError as exc:
            raise BuildError(str(exc), step=ins.original.split("\n")[0]) from None
        if state.image is not None:
            self.log(f" ---> {_short(state.image.id)}")

    def _lookup(self, state: _StageState):
        return self._lookup_in(state.args, state.config)

    def _arg(self, ins: p.Arg, state: _StageState) -> None:
        ins = ins.expand(self._lookup(state), self.df.escape)
        for name, default in ins.args:
            if name in self.platform_args and default is None:
                value: Optional[str] = self.platform_args[name]
            elif default is None and name in self.global_args:
                value = self._arg_value(name, self.global_args[name])
            else:
                value = self._arg_value(name, default)
            state.args[name] = value
        # ARG changes no image: the step only declares what later steps see.

    def _visible_args(self, state: _StageState) -> Dict[str, str]:
        """Build args a RUN sees: declared ones with a value, plus predefined proxies given."""
        out = {k: v for k, v in state.args.items() if v is not None}
        for k in p.PREDEFINED_ARGS:
            if k in self.buildargs and k not in out:
                out[k] = self.buildargs[k]
        return out

    def _cached_config(self, state: _StageState, ins: p.Instruction, config: ContainerConfig,
                       created_by: str, author: Optional[str] = None) -> ImageRecord:
        key = BuildCache.key(parent=state.image.id if state.image else "scratch",
                             step=created_by, config=config.to_dict(), author=author)
        hit = None if self.nocache else self.cache.get(key)
        if hit is not None:
            self.log(" ---> Using cache")
            return hit
        record = commit_directory(self.store, state.image, None, config,
                                  created_by=created_by, author=author, empty_layer=True)
        self.cache.put(key, record)
        return record

    def _config_step(self, ins: p.Instruction, state: _StageState, author: Optional[str] = None) -> None:
        escape = self.df.escape
        lookup = self._lookup(state)
        config = state.config
        expanded = ins.expand(lookup, escape)
        new_config = apply_instruction(config, ins, lookup=lookup, escape=escape)
        if isinstance(ins, p.Onbuild):
            created = f"/bin/sh -c #(nop)  ONBUILD {ins.expression}"
        else:
            created = f"/bin/sh -c #(nop)  {_canonical(expanded)}"
        state.image = self._cached_config(state, ins, new_config, created, author)

    # ------------------------------------------------------------------- RUN
    def _run(self, ins: p.Run, state: _StageState) -> None:
        from ..container import Container

        if state.image is None:
            raise ins.error("RUN needs a base image with a shell (this stage is FROM scratch)")
        ins = ins.expand(self._lookup(state), self.df.escape)
        config = state.config
        shell = list(config.shell or p.DEFAULT_SHELL)
        argv = ins.argv(shell)
        if not argv:
            raise ins.error("RUN has no command")
        args = self._visible_args(state)
        declared = {k: v for k, v in args.items() if k not in p.PREDEFINED_ARGS or k in state.args}
        prefix = f"|{len(declared)} " + " ".join(f"{k}={v}" for k, v in sorted(declared.items())) + " " \
            if declared else ""
        created_by = prefix + " ".join(argv) if ins.shell_form or ins.heredocs else \
            prefix + json.dumps(list(argv))
        volumes, tmpfs = self._run_mounts(ins)
        network = (ins.network or "default").lower()
        if network not in ("default", "none", "host"):
            raise ins.error(f"RUN --network={ins.network} is not supported (none, host, default)")
        if ins.security and ins.security != "sandbox":
            raise ins.error(f"RUN --security={ins.security} is not supported")
        key = BuildCache.key(parent=state.image.id, step="RUN " + created_by,
                             mounts=list(ins.mounts), network=network)
        hit = None if self.nocache else self.cache.get(key)
        if hit is not None:
            self.log(" ---> Using cache")
            state.image = hit
            return
        env = {k: v for k, v in args.items() if _env_lookup(config.env)(k) is None}
        container = Container.create(
            state.image.id, argv, entrypoint=[], env=env, root=self.root,
            network="host" if network == "host" else self.network,
            volumes=volumes or None, tmpfs=tmpfs or None,
            labels={"contain.build": "1"})
        self.log(f" ---> Running in {container.short_id}")
        try:
            tail: List[str] = []
            container.start()
            for raw in container.logs(follow=True, stream=True):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                tail.append(line)
                del tail[:-20]
                self.log(line)
            code = container.wait()
            if code != 0:
                shown = " ".join(argv) if ins.shell_form else json.dumps(list(argv))
                raise BuildError(f"The command '{shown}' returned a non-zero code: {code}",
                                 step=ins.original.split("\n")[0], exit_code=code, log=tail)
            upper = container._path("upper")
            self._drop_runtime_files(upper, state.image)
            record = commit_directory(self.store, state.image, upper, config,
                                      created_by=created_by)
        finally:
            container.remove(force=True)
            self.log(f"Removing intermediate container {container.short_id}")
        self.cache.put(key, record)
        state.image = record

    def _drop_runtime_files(self, upper: str, image: ImageRecord) -> None:
        """Mount points the runtime made in the writable layer (not in the image) are
        not the command's doing: leave them out of the layer, as Docker's init layer does."""
        fs = LayeredFS(self.store.lowerdirs(image.id))
        for rel in ("proc", "sys", "dev", "etc/hosts", "etc/hostname", "etc/resolv.conf",
                    "dev/shm", "dev/pts", "dev/mqueue", "sys/fs/cgroup"):
            host = os.path.join(upper, rel)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                continue
            if fs.entry("/" + rel) is not None:
                continue
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    os.rmdir(host)  # only when the runtime left it empty
            elif st.st_size == 0 and stat.S_ISREG(st.st_mode):
                os.unlink(host)

    def _run_mounts(self, ins: p.Run) -> Tuple[Dict[str, Dict[str, str]], Dict[str, str]]:
        volumes: Dict[str, Dict[str, str]] = {}
        tmpfs: Dict[str, str] = {}
        for spec in ins.mounts:
            opts: Dict[str, str] = {}
            for part in spec.split(","):
                k, eq, v = part.partition("=")
                opts[k.strip().lower()] = v.strip() if eq else "true"
            kind = opts.get("type", "bind")
            target = opts.get("target") or opts.get("dst") or opts.get("destination")
            if not target:
                raise ins.error(f"--mount={spec}: a target is required")
            if kind == "tmpfs":
                tmpfs[target] = f"size={opts['size']}" if "size" in opts else ""
            elif kind == "cache":
                cache_id = opts.get("id") or target
                host = os.path.join(self.root.path, "build-cache", "mounts",
                                    hashlib.sha256(cache_id.encode()).hexdigest()[:32])
                os.makedirs(host, exist_ok=True)
                ro = opts.get("readonly", opts.get("ro", "false")) in ("true", "1", "")
                volumes[host] = {"bind": target, "mode": "ro" if ro else "rw"}
            elif kind == "bind":
                if "from" in opts:
                    raise ins.error(f"--mount={spec}: bind mounts from other stages or images are not supported yet")
                if self.context is None:
                    raise ins.error(f"--mount={spec}: no build context to bind from")
                match = self.context.resolve(opts.get("source", opts.get("src", ".")), ins)[0]
                rw = opts.get("rw", opts.get("readwrite", "false")) in ("true", "1", "")
                # Writes to a bind from the context must not reach the context: only ro here.
                if rw:
                    raise ins.error(f"--mount={spec}: read-write bind mounts of the context are not supported")
                volumes[match.path] = {"bind": target, "mode": "ro"}
            elif kind in ("secret", "ssh"):
                raise ins.error(f"--mount=type={kind} is not supported yet")
            else:
                raise ins.error(f"--mount: unknown mount type {kind!r}")
        return volumes, tmpfs

    # --------------------------------------------------------------- WORKDIR
    def _workdir(self, ins: p.Workdir, state: _StageState) -> None:
        lookup = self._lookup(state)
        new_config = apply_instruction(state.config, ins, lookup=lookup, escape=self.df.escape)
        path = new_config.working_dir
        created_by = f"/bin/sh -c #(nop) WORKDIR {path}"
        exists = False
        fs: Optional[LayeredFS] = None
        if state.image is not None:
            fs = LayeredFS(self.store.lowerdirs(state.image.id))
            real = fs.resolve(path)
            e = fs.entry(real)
            exists = e is not None and stat.S_ISDIR(e[1].st_mode)
        if exists:
            state.image = self._cached_config(state, ins, new_config, created_by)
            return
        key = BuildCache.key(parent=state.image.id if state.image else "scratch",
                             step=created_by, config=new_config.to_dict(), mkdir=True)
        hit = None if self.nocache else self.cache.get(key)
        if hit is not None:
            self.log(" ---> Using cache")
            state.image = hit
            return
        with self._staging() as staging:
            uid, gid = (0, 0)
            if new_config.user and state.image is not None:
                # Docker makes the directory owned by the current USER.
                uid, gid = self._owner(new_config.user, state, chown=False)
            self._make_dest_dir(staging, fs, path, uid, gid, 0o755)
            record = commit_directory(self.store, state.image, staging.path, new_config,
                                      created_by=created_by, owners=staging.owners)
        self.cache.put(key, record)
        state.image = record

    # --------------------------------------------------------------- ADD/COPY
    @contextlib.contextmanager
    def _staging(self) -> Iterator["_Staging"]:
        path = tempfile.mkdtemp(dir=self.build_tmp, prefix="step-")
        os.chmod(path, 0o755)
        try:
            yield _Staging(path)
        finally:
            shutil.rmtree(path, ignore_errors=True)  # the builder's own files only

    def _owner(self, spec: str, state: _StageState, *, chown: bool = True) -> Tuple[int, int]:
        from ..linux.users import resolve_user

        user, sep, group = spec.partition(":")
        layers = self.store.lowerdirs(state.image.id) if state.image is not None else []
        try:
            if user.isdigit() and (not sep or group.isdigit()):
                return int(user), int(group) if sep else int(user)
            who = resolve_user(spec, layers)
        except ContainError as exc:
            raise InvalidArgument(f"unable to find user/group {spec!r} in the image: {exc}") from None
        if chown and not sep:
            return who.uid, who.gid if not user.isdigit() else who.uid
        return who.uid, who.gid

    def _make_dest_dir(self, staging: "_Staging", fs: Optional[LayeredFS], real_dir: str,
                       uid: int, gid: int, mode: int) -> str:
        """Create ``real_dir`` (no symlinks in it) in the staging dir; parents that exist
        in the image keep the image's metadata (as overlay copy-up does)."""
        parts = [x for x in real_dir.split("/") if x]
        cur = staging.path
        image_path = ""
        for i, part in enumerate(parts):
            cur = os.path.join(cur, part)
            image_path += "/" + part
            e = fs.entry(image_path) if fs is not None else None
            if os.path.isdir(cur) and not os.path.islink(cur):
                continue
            if e is not None and stat.S_ISDIR(e[1].st_mode):
                st = e[1]
                os.mkdir(cur)
                staging.own(cur, *self.store.image_owner(st))
                os.chmod(cur, stat.S_IMODE(st.st_mode))
                os.utime(cur, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            elif e is not None:
                raise InvalidArgument(f"cannot create directory {image_path}: a file of the image is in the way")
            else:
                os.mkdir(cur)
                last = i == len(parts) - 1
                staging.own(cur, uid if last else 0, gid if last else 0)
                os.chmod(cur, mode if last else 0o755)
        return cur

    def _copy(self, ins: p._CopyInstruction, state: _StageState) -> None:
        escape = self.df.escape
        ins = ins.expand(self._lookup(state), escape)
        kw = ins.keyword
        if ins.link:
            pass  # --link only changes how BuildKit stores the layer; the result is the same
        if ins.parents:
            raise ins.error(f"{kw} --parents is not supported yet")
        if ins.exclude:
            raise ins.error(f"{kw} --exclude is not supported yet")
        if isinstance(ins, p.Add) and ins.checksum:
            raise ins.error("ADD --checksum applies to remote URLs, which are not supported offline")
        chmod: Optional[int] = None
        if ins.chmod:
            try:
                chmod = int(ins.chmod, 8)
                if not 0 <= chmod <= 0o7777:
                    raise ValueError
            except ValueError:
                raise ins.error(f"invalid --chmod value {ins.chmod!r} (an octal mode is expected)") from None
        uid, gid = (0, 0)
        if ins.chown:
            uid, gid = self._owner(ins.chown, state)
        config = state.config
        dest = ins.dest
        if not dest.startswith("/"):
            base = config.working_dir or "/"
            dest = posixpath.join(base, dest) + ("/" if dest.endswith("/") or dest in (".", "./") else "")
        dest_is_dir_syntax = dest.endswith("/") or dest.endswith("/.")

        # --- the sources
        # (top, entries, copy into a directory, archive to extract)
        items: List[Tuple[str, List[Tuple[str, Entry, Optional[str]]], bool, Optional[str]]] = []
        source_key: Dict[str, Any] = {}
        from_fs: Optional[LayeredFS] = None
        if isinstance(ins, p.Copy) and ins.from_:
            src_image = self._from_image(ins, ins.from_)
            maps = self.store.id_maps
            scanner = None
            if maps is not None:
                from ..storage import userns

                def scanner(dirs: Sequence[str]) -> Any:
                    return userns.scan(maps, dirs)
            from_fs = LayeredFS(self.store.lowerdirs(src_image.id), scanner)
            source_key["from"] = src_image.id
        n_matches = 0
        for source in ins.sources:
            heredoc = ins.heredoc(source)
            if heredoc is not None:
                items.append(("heredoc", [(heredoc.name, _heredoc_entry(heredoc), heredoc.content)],
                              False, None))
                n_matches += 1
                continue
            if source.startswith(("http://", "https://", "git@")) or "://" in source:
                if kw == "ADD":
                    raise ins.error("remote URLs are not supported offline", source)
                raise ins.error("COPY does not take URLs (use ADD)", source)
            if from_fs is not None:
                matches = self._from_matches(ins, from_fs, source)
            else:
                if self.context is None:
                    raise ins.error(f"{kw} needs a build context", source)
                matches = self.context.resolve(source, ins)
            n_matches += len(matches)
            for m in matches:
                archive = (kw == "ADD" and not m.is_dir and from_fs is None and _is_archive(m.path))
                if from_fs is not None:
                    entries = self._from_walk(from_fs, m)
                else:
                    entries = [(e.rel, e, None) for e in self.context.walk(m)]  # type: ignore[union-attr]
                items.append((m.rel, entries, m.is_dir or archive, m.path if archive else None))
        if n_matches > 1 and not dest_is_dir_syntax:
            raise ins.error(f"When using {kw} with more than one source file, the destination "
                            "must be a directory and end with a /", ins.dest)

        # --- the cache key: parent, instruction text, content
        if from_fs is None:
            pairs: List[Tuple[str, Entry]] = []
            for top, entries, _, _ in items:
                for rel, e, content in entries:
                    if content is not None:
                        source_key.setdefault("heredocs", []).append(hashlib.sha256(content.encode()).hexdigest())
                    else:
                        pairs.append((f"{top}/{rel}", e))
            if self.context is not None:
                source_key["content"] = self.context.content_hash(
                    [(d, e) for d, e in pairs if e.path], uid=uid, gid=gid, chmod=chmod)
        else:
            source_key["paths"] = [m for m, _, _, _ in items]
        text = _canonical(ins)
        parent_id = state.image.id if state.image is not None else "scratch"
        key = BuildCache.key(parent=parent_id, step=text, sources=source_key, uid=uid, gid=gid,
                             chmod=chmod, workdir=config.working_dir)
        hit = None if self.nocache else self.cache.get(key)
        if hit is not None:
            self.log(" ---> Using cache")
            state.image = hit
            return

        # --- the destination, resolved through the image
        fs = LayeredFS(self.store.lowerdirs(state.image.id)) if state.image is not None else None
        real_dest = fs.resolve(dest) if fs is not None else posixpath.normpath(dest)
        dest_entry = fs.entry(real_dest) if fs is not None else None
        dest_exists_dir = dest_entry is not None and stat.S_ISDIR(dest_entry[1].st_mode)
        with self._staging() as staging:
            unreadable: List[Tuple[Entry, str, Tuple[int, int]]] = []
            for top, entries, is_dir, archive in items:
                into_dir = dest_is_dir_syntax or dest_exists_dir or is_dir
                if into_dir:
                    dir_host = self._make_dest_dir(staging, fs, real_dest, uid, gid, 0o755)
                    if archive is not None:
                        _extract(archive, dir_host, ins, staging)
                        continue
                else:
                    parent = posixpath.dirname(real_dest.rstrip("/")) or "/"
                    parent = fs.resolve(parent) if fs is not None else parent
                    dir_host = self._make_dest_dir(staging, fs, parent, 0, 0, 0o755)
                for rel, e, content in entries:
                    if into_dir:
                        target = os.path.join(dir_host, rel)
                    else:
                        target = os.path.join(dir_host, posixpath.basename(real_dest.rstrip("/")))
                    if content is not None:
                        _write_file(target, content.encode(), 0o644 if chmod is None else chmod)
                        staging.own(target, uid, gid)
                        continue
                    if from_fs is not None and not ins.chown:
                        owner = self.store.image_owner(e.st)  # as in the source image
                    else:
                        owner = (uid, gid)
                    try:
                        copied = _copy_entry(e, target, chmod,
                                             from_fs.readlink if from_fs is not None else os.readlink)
                    except PermissionError:
                        # A file of another stage that only a subordinate id
                        # may read (an ordinary user's build): read as its
                        # owner, all such files of this source at once.
                        if from_fs is None or self.store.id_maps is None or not stat.S_ISREG(e.st.st_mode):
                            raise
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(target)  # what the refused open may have left
                        unreadable.append((e, target, owner))
                        continue
                    if copied:
                        staging.own(target, *owner)
                if unreadable:
                    from ..storage import userns

                    userns.copy(self.store.id_maps, [(e.path, target) for e, target, _ in unreadable])
                    for e, target, owner in unreadable:
                        os.chmod(target, chmod if chmod is not None else stat.S_IMODE(e.st.st_mode))
                        os.utime(target, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))
                        staging.own(target, *owner)
                    unreadable.clear()
            created_by = f"/bin/sh -c #(nop) {_canonical(ins)}"
            record = commit_directory(self.store, state.image, staging.path, config,
                                      created_by=created_by, empty_layer=False,
                                      owners=staging.owners)
        self.cache.put(key, record)
        state.image = record

    def _from_image(self, ins: p.Instruction, name: str) -> ImageRecord:
        key = name.lower()
        if key in self.stage_images:
            return self.stage_images[key]
        for st in self.df.stages:
            if st.name == key:
                raise ins.error(f"stage {name!r} is not built before this step (it comes later)")
        try:
            return self.store.resolve(name)
        except (ImageNotFound, InvalidArgument):
            raise ins.error(f"--from={name}: no such stage, and the image is not in the local store") from None

    def _from_matches(self, ins: p.Instruction, fs: LayeredFS, source: str) -> List[Match]:
        path = posixpath.normpath("/" + source)
        if has_wildcard(path):
            from .context import _pattern_regex
            import re

            parent, pattern = posixpath.split(path)
            if has_wildcard(parent):
                raise ins.error("wildcards are only supported in the last path component with --from", source)
            real_parent = fs.resolve(parent)
            regex = re.compile(_pattern_regex(pattern, double_star=False), re.S)
            out = []
            for name, (host, st) in sorted(fs.listdir(real_parent).items()):
                if regex.match(name):
                    real = fs.resolve(posixpath.join(real_parent, name))
                    e = fs.entry(real)
                    if e is not None:
                        out.append(Match(real, e[0], stat.S_ISDIR(e[1].st_mode)))
            if not out:
                raise ins.error("no source files were specified", source)
            return out
        real = fs.resolve(path)
        e = fs.entry(real)
        if e is None:
            raise ins.error(f"{source}: not found in the source image", source)
        return [Match(real, e[0], stat.S_ISDIR(e[1].st_mode))]

    def _from_walk(self, fs: LayeredFS, m: Match) -> List[Tuple[str, Entry, Optional[str]]]:
        if not m.is_dir:
            st = fs.lstat(m.path)
            return [(posixpath.basename(m.rel), Entry(posixpath.basename(m.rel), m.path, st), None)]
        return [(rel, Entry(rel, host, st), None) for rel, host, st in fs.walk(m.rel)]


def _canonical(ins: p.Instruction) -> str:
    """An instruction's text, expanded, on one line (for history and cache keys)."""
    if isinstance(ins, p._PairsInstruction):
        return f"{ins.keyword} " + " ".join(f"{k}={json.dumps(v) if (' ' in v or not v) else v}"
                                            for k, v in ins.pairs)
    if isinstance(ins, p._CommandInstruction):
        return f"{ins.keyword} " + (ins.args[0] if ins.shell_form and ins.args else json.dumps(list(ins.args)))
    if isinstance(ins, p._CopyInstruction):
        flags = []
        if getattr(ins, "from_", None):
            flags.append(f"--from={ins.from_}")  # type: ignore[attr-defined]
        if ins.chown:
            flags.append(f"--chown={ins.chown}")
        if ins.chmod:
            flags.append(f"--chmod={ins.chmod}")
        body = " ".join([*flags, *ins.sources, ins.dest])
        docs = "".join(f"\n{h.name}:{hashlib.sha256(h.content.encode()).hexdigest()}" for h in ins.heredocs)
        return f"{ins.keyword} {body}{docs}"
    if isinstance(ins, p.Expose):
        return "EXPOSE " + " ".join(ins.port_specs())
    if isinstance(ins, p.Volume):
        return "VOLUME " + json.dumps(list(ins.paths))
    if isinstance(ins, p.User):
        return f"USER {ins.user}"
    if isinstance(ins, p.Workdir):
        return f"WORKDIR {ins.path}"
    if isinstance(ins, p.Stopsignal):
        return f"STOPSIGNAL {ins.signal}"
    if isinstance(ins, p.Healthcheck):
        return "HEALTHCHECK " + json.dumps(ins.to_config(), sort_keys=True)
    if isinstance(ins, p.Shell):
        return "SHELL " + json.dumps(list(ins.shell))
    if isinstance(ins, p.Maintainer):
        return f"MAINTAINER {ins.name}"
    return " ".join(ins.original.split())


def _heredoc_entry(h: p.Heredoc) -> Entry:
    st = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, len(h.content.encode()),
                         0, 0, 0))
    return Entry(h.name, "", st)


def _is_archive(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    if head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")):
        return tarfile.is_tarfile(path)
    return len(head) == 512 and head[257:262] == b"ustar"


class _Staging:
    """A step's new files, laid out like an overlay upper directory, with the owners
    they get in the layer (by path relative to the directory)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.owners: Dict[str, Tuple[int, int]] = {}

    def own(self, host_path: str, uid: int, gid: int) -> None:
        self.owners[os.path.relpath(host_path, self.path)] = (uid, gid)


def _extract(path: str, dest_dir: str, ins: p.Instruction, staging: _Staging) -> None:
    """ADD's local archive extraction, refusing members that leave ``dest_dir``; the
    members keep the archive's owners."""

    def keep_modes(member: tarfile.TarInfo, where: str) -> tarfile.TarInfo:
        checked = tarfile.tar_filter(member, where)
        if checked is None:
            return checked  # type: ignore[return-value]
        staging.own(os.path.join(where, checked.name), member.uid, member.gid)
        return checked.replace(mode=member.mode, uid=member.uid, gid=member.gid, deep=False)

    try:
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(dest_dir, numeric_owner=True, filter=keep_modes)
    except (tarfile.TarError, OSError) as exc:
        raise ins.error(f"cannot extract {os.path.basename(path)}: {exc}") from None


def _write_file(target: str, data: bytes, mode: int) -> None:
    if os.path.lexists(target) and not os.path.isdir(target):
        os.unlink(target)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _copy_entry(e: Entry, target: str, chmod: Optional[int],
                readlink: Callable[[str], str] = os.readlink) -> bool:
    """Copy one entry (its owner is declared by the caller); False if it was skipped."""
    mode = e.st.st_mode
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
    if stat.S_ISDIR(mode):
        if not os.path.isdir(target) or os.path.islink(target):
            if os.path.lexists(target):
                os.unlink(target)
            os.mkdir(target)
        os.chmod(target, chmod if chmod is not None else stat.S_IMODE(mode))
        os.utime(target, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))
        return True
    if os.path.lexists(target):
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    if stat.S_ISLNK(mode):
        os.symlink(readlink(e.path), target)
        os.utime(target, ns=(e.st.st_atime_ns, e.st.st_mtime_ns), follow_symlinks=False)
        return True
    if not stat.S_ISREG(mode):
        return False  # sockets, fifos, devices in a context are not copied
    with open(e.path, "rb") as src:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(target, chmod if chmod is not None else stat.S_IMODE(mode))
    os.utime(target, ns=(e.st.st_atime_ns, e.st.st_mtime_ns))
    return True


# ------------------------------------------------------------------------ public


def build(dockerfile: p.Dockerfile, context: Optional[BuildContext] = None, *,
          root=None, tags: Sequence[str] = (), buildargs: Optional[Mapping[str, str]] = None,
          target: Optional[str] = None, nocache: bool = False, quiet: bool = False,
          log: Optional[Callable[[str], None]] = None, pull: bool = False,
          labels: Optional[Mapping[str, str]] = None, network: str = "none") -> ImageRecord:
    """Run a parsed Dockerfile; the final image's record (tagged with ``tags``)."""
    from ..oci.reference import Reference

    r = get_root(root)
    for t in tags:
        Reference.parse(t)  # fail before building
    if pull:
        raise InvalidArgument("pull=True: pulling during builds is not supported yet")
    emit = log if log is not None else (lambda line: print(line, flush=True))
    df = dockerfile
    if labels:
        # As `docker build --label`: a LABEL step at the end of the target stage.
        text = "LABEL " + " ".join(f"{k}={_quote(v)}" for k, v in labels.items())
        extra = p.parse_instruction(text, filename="--label")
        target_stage = df.stage(target) if target is not None else df.stages[-1]
        target_stage.instructions.append(extra)
    engine = _Engine(df, context, root=r, buildargs=buildargs or {}, target=target,
                     nocache=nocache, quiet=quiet, log=emit, pull=pull, labels=None,
                     network=network)
    record = engine.run()
    for t in tags:
        record = r.store.tag(record.id, t)
    if quiet:
        emit(record.id)
    else:
        emit(f"Successfully built {_short(record.id)}")
        for t in tags:
            emit(f"Successfully tagged {t if ':' in t.rsplit('/', 1)[-1] else t + ':latest'}")
    return record


def _quote(value: str) -> str:
    if "\n" in value:
        raise InvalidArgument("values may not contain newlines")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'
