"""Image commands: images, pull, push, search, login, tag, rmi, save, load, build, ..."""

from __future__ import annotations

import getpass
import os
import shutil
import sys
import tempfile
from typing import Optional

import contain

from . import _format
from ._common import CLIError, Context, accepts, api, format_rows, split_ref

# --------------------------------------------------------------------- progress


class _LineProgress:
    """Progress as lines (not a terminal): each state change once, no byte counts."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def __call__(self, event) -> None:
        if event.action == "Downloading" or event.action == "Pushing":
            return
        text = f"{event.id}: {event.action}" if event.id else event.action
        self.stream.write(text + "\n")
        self.stream.flush()


def _progress(stream, quiet: bool):
    if quiet:
        return lambda event: None
    if stream.isatty():
        renderer = getattr(contain, "ProgressRenderer", None)
        if renderer is not None:
            return renderer(stream)
    return _LineProgress(stream)


def _canonical(ref: str) -> str:
    """docker.io/library/busybox:latest for busybox."""
    name, tag = split_ref(ref)
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    return f"{name}@{ref.split('@', 1)[1]}" if "@" in ref else f"{name}:{tag}"


def do_pull(ctx: Context, ref: str, *, platform=None, quiet=False, to_stderr=False):
    pull = api(contain.Image, "pull", "pull")
    stream = ctx.err if to_stderr else ctx.out
    if "@" not in ref and split_ref(ref)[1] == "latest" and not ref.endswith(":latest") and not quiet:
        stream.write("Using default tag: latest\n")
    opts: dict = {"root": ctx.root, "progress": _progress(stream, quiet)}
    if platform:
        opts["platform"] = platform
    try:
        img = pull(ref, **opts)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    return img


def cmd_pull(ctx: Context, args) -> int:
    do_pull(ctx, args.name, platform=args.platform, quiet=args.quiet)
    ctx.print(_canonical(args.name))
    return 0


def cmd_push(ctx: Context, args) -> int:
    img = ctx.image(args.name)
    push = api(img, "push", "push")
    opts: dict = {"progress": _progress(ctx.out, args.quiet)}
    if args.compression:
        opts["compression"] = args.compression
    if not args.quiet:
        ctx.print(f"The push refers to repository [{split_ref(args.name)[0]}]")
    try:
        push(args.name, **opts)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    return 0


def cmd_search(ctx: Context, args) -> int:
    search = api(contain.Image, "search", "search")
    opts: dict = {"limit": args.limit}
    try:
        results = search(args.term, **opts)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    rows = []
    for r in results:
        stars = r.get("star_count", 0) or 0
        official = r.get("is_official")
        if args.filter:
            keep = True
            for f in args.filter:
                k, _, v = f.partition("=")
                if k == "stars" and stars < int(v or 0):
                    keep = False
                elif k == "is-official" and bool(official) != (v == "true"):
                    keep = False
            if not keep:
                continue
        desc = (r.get("description") or "").replace("\n", " ")
        rows.append({"Name": r.get("name", ""),
                     "Description": desc if args.no_trunc else _format.ellipsis(desc, 45),
                     "StarCount": str(stars), "IsOfficial": "[OK]" if official else "",
                     "IsAutomated": "[OK]" if r.get("is_automated") else ""})
    fmt = args.format or "table {{.Name}}\t{{.Description}}\t{{.StarCount}}\t{{.IsOfficial}}"
    format_rows(ctx, fmt, rows, {"Name": "NAME", "Description": "DESCRIPTION", "StarCount": "STARS",
                                 "IsOfficial": "OFFICIAL", "IsAutomated": "AUTOMATED"})
    return 0


def cmd_login(ctx: Context, args) -> int:
    login = api(contain, "login", "login")
    registry = args.server or "docker.io"
    username = args.username
    password = args.password
    if args.password_stdin:
        if args.password:
            raise CLIError("--password and --password-stdin are mutually exclusive", 1)
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        if not sys.stdin.isatty():
            raise CLIError("Error: Cannot perform an interactive login from a non TTY device", 1)
        username = input("Username: ")
    if password is None:
        if not sys.stdin.isatty():
            raise CLIError("Error: Cannot perform an interactive login from a non TTY device", 1)
        password = getpass.getpass("Password: ")
    elif args.password:
        ctx.error("WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
    try:
        result = login(registry, username, password)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    status = result.get("Status", "Login Succeeded") if isinstance(result, dict) else "Login Succeeded"
    ctx.print(status)
    return 0


def cmd_logout(ctx: Context, args) -> int:
    logout = api(contain, "logout", "logout")
    registry = args.server or "docker.io"
    had = logout(registry)
    if had is False:
        ctx.print(f"Not logged in to {registry}")
    else:
        ctx.print(f"Removing login credentials for {registry}")
    return 0


# ----------------------------------------------------------------------- images

IMAGE_HEADERS = {"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "Digest": "DIGEST",
                 "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "Size": "SIZE",
                 "Containers": "CONTAINERS", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE",
                 "VirtualSize": "VIRTUAL SIZE"}


def image_rows(ctx: Context, trunc: bool, *, reference: Optional[str] = None, filters=()) -> list[dict]:
    images = contain.Image.list(root=ctx.root)
    images.sort(key=lambda i: i.created or "", reverse=True)
    dangling = None
    refs = [reference] if reference else []
    labels = []
    for f in filters:
        k, _, v = f.partition("=")
        if k == "dangling":
            dangling = v.lower() in ("1", "true")
        elif k == "reference":
            refs.append(v)
        elif k == "label":
            labels.append(v)
        else:
            raise CLIError(f"Error: invalid filter '{k}'", 1)
    rows = []
    import fnmatch

    for img in images:
        tags = img.tags
        if dangling is True and tags:
            continue
        if dangling is False and not tags:
            continue
        ok = True
        for lab in labels:
            k, sep, v = lab.partition("=")
            if k not in img.labels or (sep and img.labels[k] != v):
                ok = False
        if not ok:
            continue
        digest = img.digest or "<none>"
        for t in (tags or [None]):
            repo, tag = split_ref(t) if t else ("<none>", "<none>")
            if refs and not any(fnmatch.fnmatch(repo, r) or fnmatch.fnmatch(f"{repo}:{tag}", r) for r in refs):
                continue
            rows.append({
                "Repository": repo, "Tag": tag,
                "ID": img.short_id if trunc else img.id,
                "Digest": digest,
                "CreatedSince": _format.ago(img.created),
                "CreatedAt": _format.local_time(img.created),
                "Size": _format.human_size(img.size),
                "VirtualSize": _format.human_size(img.size),
                "SharedSize": "N/A", "UniqueSize": "N/A", "Containers": "N/A",
            })
    return rows


def cmd_images(ctx: Context, args) -> int:
    rows = image_rows(ctx, not args.no_trunc, reference=args.reference, filters=args.filter)
    if args.quiet:
        seen = set()
        for r in rows:
            if r["ID"] not in seen:
                seen.add(r["ID"])
                ctx.print(r["ID"])
        return 0
    if args.format:
        fmt = "{{json .}}" if args.format == "json" else args.format
    elif args.digests:
        fmt = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    else:
        fmt = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    format_rows(ctx, fmt, rows, IMAGE_HEADERS)
    return 0


def cmd_tag(ctx: Context, args) -> int:
    try:
        ctx.image(args.source).tag(args.target)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    return 0


def cmd_rmi(ctx: Context, args) -> int:
    failed = False
    for ref in args.images:
        try:
            img = ctx.image(ref)
            untag = getattr(img, "untag", None)
            by_tag = not img.id.split(":", 1)[-1].startswith(ref.split(":", 1)[-1]) and len(img.tags) > 1
            if by_tag and untag is not None:
                entries = untag(ref)
            elif by_tag and not accepts(img.remove, "ref"):
                # Image.remove() works on the id and would drop every tag.
                raise contain.Conflict(
                    f"removing only the tag {ref} of an image with several tags is not available "
                    f"in this version of contain; remove by image id ({img.short_id}) with -f to delete it")
            else:
                entries = img.remove(force=args.force, ref=ref) if by_tag else img.remove(force=args.force)
            for entry in entries:
                for k, v in entry.items():
                    ctx.print(f"{k}: {v}")
        except contain.ContainError as exc:
            ctx.error(f"Error: {str(exc)[:1].upper() + str(exc)[1:]}")
            failed = True
    return 1 if failed else 0


def cmd_save(ctx: Context, args) -> int:
    if not args.output and sys.stdout.isatty():
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    images = [ctx.image(r) for r in args.images]  # every name must exist first
    fmt = {"format": args.format} if args.format else {}
    path = args.output
    tmpdir = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="contain-save-")
        path = os.path.join(tmpdir, "image.tar")
    try:
        save_all = getattr(contain.Image, "save_all", None)
        if save_all is not None:
            save_all(list(args.images), path, root=ctx.root, **fmt)
        elif len(images) == 1:
            api(images[0], "save", "save")(path, **fmt)
        else:
            raise CLIError("Error: saving several images at once is not available in this version of contain", 1)
        if tmpdir is not None:
            with open(path, "rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.flush()
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


def _stdin_to_file() -> tuple[str, str]:
    if sys.stdin.isatty():
        raise CLIError("requested load from stdin, but stdin is empty", 1)
    tmpdir = tempfile.mkdtemp(prefix="contain-load-")
    path = os.path.join(tmpdir, "input.tar")
    with open(path, "wb") as f:
        shutil.copyfileobj(sys.stdin.buffer, f)
    return tmpdir, path


def cmd_load(ctx: Context, args) -> int:
    load = api(contain.Image, "load", "load")
    tmpdir = None
    path = args.input
    if path is None:
        tmpdir, path = _stdin_to_file()
    try:
        images = load(path, root=ctx.root)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    if not args.quiet or True:
        for img in images:
            if img.tags:
                for t in img.tags:
                    ctx.print(f"Loaded image: {t}")
            else:
                ctx.print(f"Loaded image ID: {img.id}")
    return 0


def parse_changes(changes: list[str]) -> dict:
    """-c/--change Dockerfile instructions to image config fields."""
    import json
    import shlex

    config: dict = {}
    for change in changes:
        word, _, rest = change.strip().partition(" ")
        word = word.upper()
        rest = rest.strip()

        def as_list(text: str) -> list[str]:
            if text.startswith("["):
                return json.loads(text)
            return ["/bin/sh", "-c", text]
        if word == "CMD":
            config["Cmd"] = as_list(rest)
        elif word == "ENTRYPOINT":
            config["Entrypoint"] = as_list(rest)
        elif word == "ENV":
            env = config.setdefault("Env", [])
            if "=" in rest.split(" ", 1)[0]:
                env += [p for p in shlex.split(rest)]
            else:
                k, _, v = rest.partition(" ")
                env.append(f"{k}={v.strip()}")
        elif word == "WORKDIR":
            config["WorkingDir"] = rest
        elif word == "USER":
            config["User"] = rest
        elif word == "LABEL":
            labels = config.setdefault("Labels", {})
            for p in shlex.split(rest):
                k, _, v = p.partition("=")
                labels[k] = v
        elif word == "EXPOSE":
            ports = config.setdefault("ExposedPorts", {})
            for p in rest.split():
                ports[p if "/" in p else p + "/tcp"] = {}
        elif word == "VOLUME":
            vols = config.setdefault("Volumes", {})
            for p in (json.loads(rest) if rest.startswith("[") else rest.split()):
                vols[p] = {}
        elif word == "STOPSIGNAL":
            config["StopSignal"] = rest
        else:
            raise CLIError(f"Error: {word} is not a valid change command", 1)
    return config


def cmd_import(ctx: Context, args) -> int:
    tmpdir = None
    path = args.file
    try:
        if path == "-":
            tmpdir, path = _stdin_to_file()
        elif path.startswith(("http://", "https://")):
            raise CLIError("Error: importing from a URL is not supported by contain", 1)
        config = parse_changes(args.change) if args.change else None
        img = contain.Image.from_tarball(path, tag=args.reference, config=config, root=ctx.root)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    ctx.print(img.id)
    return 0


def cmd_history(ctx: Context, args) -> int:
    img = ctx.image(args.image)
    history = img.history()
    layers = list(img.layers)
    rows = []
    li = 0
    for h in history:
        size = 0
        if not h.get("empty_layer"):
            if li < len(layers):
                size = getattr(layers[li], "size", 0) or 0
            li += 1
        rows.append((h, size))
    rows.reverse()
    out = []
    trunc = not args.no_trunc
    for i, (h, size) in enumerate(rows):
        created_by = (h.get("created_by") or "").replace("\n", " ").replace("\t", " ")
        out.append({
            "ID": (img.short_id if trunc else img.id) if i == 0 else "<missing>",
            "CreatedSince": _format.ago(h.get("created")),
            "CreatedAt": _format.local_time(h.get("created")),
            "CreatedBy": _format.ellipsis(created_by, 45) if trunc else created_by,
            "Size": _format.human_size(size) if args.human else str(size),
            "Comment": h.get("comment") or "",
        })
    if args.quiet:
        for r in out:
            ctx.print(r["ID"])
        return 0
    fmt = args.format or "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    format_rows(ctx, fmt, out, {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                                "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"})
    return 0


def image_inspect(img) -> dict:
    attrs = getattr(img, "attrs", None)
    if isinstance(attrs, dict):
        return attrs
    cfg = img.image_config
    return {
        "Id": img.id,
        "RepoTags": img.tags,
        "RepoDigests": [f"{split_ref(t)[0]}@{img.digest}" for t in img.tags[:1]] if img.digest else [],
        "Parent": "",
        "Comment": "",
        "Created": img.created or "",
        "Author": cfg.author or "",
        "Config": cfg.config.to_dict(),
        "Architecture": cfg.architecture,
        "Os": cfg.os,
        "Size": img.size,
        "RootFS": {"Type": "layers", "Layers": list(cfg.rootfs.diff_ids)},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }


# ------------------------------------------------------------------------ build

def cmd_build(ctx: Context, args) -> int:
    builder = getattr(contain, "Builder", None)
    if builder is None or not hasattr(builder, "from_dockerfile"):
        raise CLIError("Error: build is not available in this version of contain", 1)
    fn = builder.from_dockerfile
    opts: dict = {}
    if args.file:
        # Docker reads -f relative to the current directory, contain's API relative to the context.
        opts["dockerfile"] = os.path.abspath(args.file) if os.path.exists(args.file) else args.file
    if args.tag:
        opts["tag"] = args.tag if len(args.tag) > 1 else args.tag[0]
    if args.build_arg:
        bargs = {}
        for b in args.build_arg:
            k, sep, v = b.partition("=")
            if not sep:
                if k not in os.environ:
                    continue
                v = os.environ[k]
            bargs[k] = v
        opts["buildargs"] = bargs
    if args.target:
        opts["target"] = args.target
    if args.no_cache:
        opts["nocache"] = True
    if args.quiet:
        opts["quiet"] = True
    if args.label and accepts(fn, "labels"):
        opts["labels"] = dict(x.partition("=")[::2] for x in args.label)
    if args.platform and accepts(fn, "platform"):
        opts["platform"] = args.platform
    if accepts(fn, "root"):
        opts["root"] = ctx.root
    said = {"built": False}
    if not args.quiet and accepts(fn, "log"):
        def log(line):
            if isinstance(line, bytes):
                line = line.decode(errors="replace")
            if line.startswith("Successfully built"):
                said["built"] = True
            ctx.out.write(line if line.endswith("\n") else line + "\n")
            ctx.out.flush()
        opts["log"] = log
    try:
        result = fn(args.path, **opts)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {exc}", 1) from None
    img = result[0] if isinstance(result, tuple) else result
    if not hasattr(img, "id") and hasattr(result, "image"):
        img = result.image
    if args.quiet:
        ctx.print(img.id)
    elif not said["built"]:
        ctx.print(f"Successfully built {img.short_id}")
        for t in args.tag or []:
            ctx.print(f"Successfully tagged {t if ':' in t.rsplit('/', 1)[-1] else t + ':latest'}")
    return 0
