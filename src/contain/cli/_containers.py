"""Container commands: run, create, start, ps, logs, exec, stop, rm, ..."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
from typing import Any, Optional

import contain

from . import _format, _stdio
from ._common import CLIError, Context, accepts, api, format_rows, kv_dict, read_kv_file, split_ref

# ------------------------------------------------------------------- parsing flags


def add_create_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    a("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    a("--name", help="Assign a name to the container")
    a("-e", "--env", action="append", default=[], metavar="LIST", help="Set environment variables")
    a("--env-file", action="append", default=[], metavar="FILE", help="Read in a file of environment variables")
    a("-l", "--label", action="append", default=[], metavar="LIST", help="Set meta data on a container")
    a("--label-file", action="append", default=[], metavar="FILE", help="Read in a line delimited file of labels")
    a("-p", "--publish", action="append", default=[], metavar="LIST", help="Publish a container's port(s) to the host")
    a("-P", "--publish-all", action="store_true", help="Publish all exposed ports to random ports")
    a("--expose", action="append", default=[], metavar="LIST", help="Expose a port or a range of ports")
    a("-v", "--volume", action="append", default=[], metavar="LIST", help="Bind mount a volume")
    a("--mount", action="append", default=[], metavar="MOUNT", help="Attach a filesystem mount to the container")
    a("--tmpfs", action="append", default=[], metavar="LIST", help="Mount a tmpfs directory")
    a("-w", "--workdir", help="Working directory inside the container")
    a("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])")
    a("-h", "--hostname", help="Container host name")
    a("--entrypoint", help="Overwrite the default ENTRYPOINT of the image")
    a("--network", "--net", help="Connect a container to a network")
    a("--network-alias", action="append", default=[], metavar="LIST", help="Add network-scoped alias for the container")
    a("-m", "--memory", help="Memory limit")
    a("--memory-swap", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    a("--memory-reservation", help="Memory soft limit")
    a("--cpus", help="Number of CPUs")
    a("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)")
    a("--cpuset-cpus", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--pids-limit", type=int, help="Tune container pids limit (set -1 for unlimited)")
    a("--shm-size", help="Size of /dev/shm")
    a("--read-only", action="store_true", help="Mount the container's root filesystem as read only")
    a("--restart", default=None, help="Restart policy to apply when a container exits")
    a("--rm", action="store_true", help="Automatically remove the container when it exits")
    a("--init", action="store_true", help="Run an init inside the container that forwards signals and reaps processes")
    a("--cap-add", action="append", default=[], metavar="LIST", help="Add Linux capabilities")
    a("--cap-drop", action="append", default=[], metavar="LIST", help="Drop Linux capabilities")
    a("--privileged", action="store_true", help="Give extended privileges to this container")
    a("--stop-signal", help="Signal to stop the container")
    a("--stop-timeout", type=int, help="Timeout (in seconds) to stop a container")
    a("--log-opt", action="append", default=[], metavar="LIST", help="Log driver options")
    a("--log-driver", help="Logging driver for the container")
    a("--oom-score-adj", type=int, help="Tune host's OOM preferences (-1000 to 1000)")
    a("--platform", help="Set platform if server is multi-platform capable")
    a("--pull", choices=("always", "missing", "never"), default="missing", help='Pull image before running')
    a("-q", "--quiet", action="store_true", help="Suppress the pull output")
    a("image", metavar="IMAGE")
    a("cmd_args", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")


def _ports(specs: list[str]) -> dict:
    """-p forms to docker-py's ports= mapping."""
    ports: dict = {}
    for spec in specs:
        proto = "tcp"
        body = spec
        if "/" in body:
            body, proto = body.rsplit("/", 1)
        parts = body.rsplit(":", 2) if body.count(":") <= 2 else None
        if body.startswith("["):  # [::1]:8080:80
            m = re.fullmatch(r"\[([^\]]+)\]:(\d*):(\d+(?:-\d+)?)", body)
            if not m:
                raise CLIError(f"invalid publish opts format (should be name=value but got '{spec}')", 125)
            parts = [m.group(1), m.group(2), m.group(3)]
        if not parts:
            raise CLIError(f"Invalid ip address: {spec}", 125)
        if len(parts) == 1:
            ip, host, cport = "", "", parts[0]
        elif len(parts) == 2:
            ip, (host, cport) = "", parts
        else:
            ip, host, cport = parts
        if not re.fullmatch(r"\d+(-\d+)?", cport) or (host and not re.fullmatch(r"\d+(-\d+)?", host)):
            raise CLIError(f"invalid containerPort: {cport}" if not re.fullmatch(r"\d+(-\d+)?", cport)
                           else f"invalid hostPort: {host}", 125)
        if proto not in ("tcp", "udp", "sctp"):
            raise CLIError(f"invalid proto: {proto}", 125)
        key = f"{cport}/{proto}"
        value: Any = int(host) if host and "-" not in host else (host or None)
        if ip:
            value = (ip, value) if value is not None else (ip,)
        if key in ports:
            prev = ports[key]
            ports[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            ports[key] = value
    return ports


def _mounts(specs: list[str]) -> tuple[list[str], list[str]]:
    """--mount type=bind,source=...,target=...[,readonly] to -v and --tmpfs forms."""
    volumes, tmpfs = [], []
    for spec in specs:
        fields: dict = {}
        flags = set()
        for item in spec.split(","):
            k, sep, v = item.partition("=")
            if sep:
                fields[k.strip().lower()] = v
            else:
                flags.add(k.strip().lower())
        kind = fields.get("type", "volume")
        target = fields.get("target") or fields.get("destination") or fields.get("dst")
        source = fields.get("source") or fields.get("src") or ""
        if not target:
            raise CLIError(f"invalid argument \"{spec}\" for \"--mount\" flag: target is required", 125)
        ro = "readonly" in flags or "ro" in flags or fields.get("readonly") in ("1", "true") or fields.get("ro") in ("1", "true")
        if kind == "bind":
            if not os.path.exists(source):
                raise CLIError(f"invalid mount config for type \"bind\": bind source path does not exist: {source}", 125)
            volumes.append(f"{source}:{target}:{'ro' if ro else 'rw'}")
        elif kind == "volume":
            if not source:
                raise CLIError("anonymous volumes are not supported by contain yet", 125)
            volumes.append(f"{source}:{target}:{'ro' if ro else 'rw'}")
        elif kind == "tmpfs":
            opts = []
            if "tmpfs-size" in fields:
                opts.append(f"size={fields['tmpfs-size']}")
            if "tmpfs-mode" in fields:
                opts.append(f"mode={fields['tmpfs-mode']}")
            tmpfs.append(target + (":" + ",".join(opts) if opts else ""))
        else:
            raise CLIError(f"invalid argument \"{spec}\" for \"--mount\" flag: mount type {kind!r} is not supported", 125)
    return volumes, tmpfs


def create_options(args: argparse.Namespace, *, detached: bool) -> dict:
    create = contain.Container.create
    env = []
    for f in args.env_file:
        env += read_kv_file(f)
    env += args.env
    labels = {}
    for f in args.label_file:
        labels.update(kv_dict(read_kv_file(f)))
    labels.update(kv_dict(args.label))
    opts: dict = {"tty": args.tty, "stdin_open": args.interactive}
    if env:
        opts["environment"] = env
    if labels:
        opts["labels"] = labels
    for flag, key in (("name", "name"), ("workdir", "working_dir"), ("user", "user"),
                      ("hostname", "hostname"), ("memory", "mem_limit"),
                      ("memory_swap", "memswap_limit"), ("memory_reservation", "mem_reservation"),
                      ("cpu_shares", "cpu_shares"), ("cpuset_cpus", "cpuset_cpus"),
                      ("pids_limit", "pids_limit"), ("shm_size", "shm_size"),
                      ("stop_signal", "stop_signal"), ("oom_score_adj", "oom_score_adj"),
                      ("restart", "restart_policy")):
        value = getattr(args, flag)
        if value is not None:
            opts[key] = value
    if args.cpus is not None:
        try:
            opts["cpus"] = float(args.cpus)
        except ValueError:
            raise CLIError(f'invalid argument "{args.cpus}" for "--cpus" flag', 125) from None
    if args.entrypoint is not None:
        opts["entrypoint"] = [args.entrypoint] if args.entrypoint else []
    volumes, tmpfs = _mounts(args.mount)
    volumes = list(args.volume) + volumes
    tmpfs = list(args.tmpfs) + tmpfs
    if volumes:
        opts["volumes"] = volumes
    if tmpfs:
        opts["tmpfs"] = tmpfs
    if args.read_only:
        opts["read_only"] = True
    if args.privileged:
        opts["privileged"] = True
    if args.cap_add:
        opts["cap_add"] = args.cap_add
    if args.cap_drop:
        opts["cap_drop"] = args.cap_drop
    if args.network is not None:
        opts["network"] = args.network
    if args.network_alias:
        if not accepts(create, "network_aliases"):
            raise CLIError("--network-alias is not supported by this version of contain", 125)
        opts["network_aliases"] = args.network_alias
    if args.log_opt:
        opts["log_config"] = {"Type": args.log_driver or "contain", "Config": kv_dict(args.log_opt)}
    if args.rm and detached:
        opts["auto_remove"] = True
    if args.publish or args.publish_all or args.expose:
        if args.publish and not accepts(create, "ports"):
            raise CLIError("publishing ports (-p) is not supported by this version of contain", 125)
        if args.publish:
            opts["ports"] = _ports(args.publish)
        if args.publish_all:
            if not accepts(create, "publish_all_ports"):
                raise CLIError("-P is not supported by this version of contain", 125)
            opts["publish_all_ports"] = True
        if args.expose:
            for e in args.expose:
                key = e if "/" in e else f"{e}/tcp"
                opts.setdefault("ports", {}).setdefault(key, None)
    if args.init:
        if not accepts(create, "init"):
            raise CLIError("--init is not supported by contain yet", 125)
        opts["init"] = True
    if args.stop_timeout is not None and accepts(create, "stop_timeout"):
        opts["stop_timeout"] = args.stop_timeout
    if args.platform and accepts(create, "platform"):
        opts["platform"] = args.platform
    return opts


def ensure_image(ctx: Context, ref: str, *, pull: str = "missing", platform=None, quiet=False):
    from ._images import do_pull

    if pull == "always":
        return do_pull(ctx, ref, platform=platform, quiet=quiet, to_stderr=True)
    try:
        return ctx.image(ref)
    except contain.ImageNotFound:
        if pull == "never" or not hasattr(contain.Image, "pull"):
            raise CLIError(f"Error: No such image: {ref}", 125) from None
        ctx.error(f"Unable to find image '{_full_ref(ref)}' locally")
        try:
            return do_pull(ctx, ref, platform=platform, quiet=quiet, to_stderr=True)
        except CLIError as exc:
            raise CLIError(str(exc), 125) from None
        except contain.ContainError as exc:
            raise CLIError(f"Error: {exc}", 125) from None


def _full_ref(ref: str) -> str:
    repo, tag = split_ref(ref)
    return ref if ("@" in ref or ref.endswith(":" + tag)) else f"{repo}:{tag}"


def _create(ctx: Context, args: argparse.Namespace, *, detached: bool) -> "contain.Container":
    opts = create_options(args, detached=detached)
    img = ensure_image(ctx, args.image, pull=args.pull, platform=args.platform, quiet=args.quiet)
    command = list(args.cmd_args) or None
    try:
        return contain.Container.create(args.image if img is None else img, command, root=ctx.root, **opts)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {_msg(exc)}", 125) from None


def _msg(exc: BaseException) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:]


def _exec_failure(ctx: Context, c: "contain.Container", code: int) -> None:
    """Docker says why the command could not run (126/127)."""
    if code in (126, 127):
        with contextlib.suppress(contain.ContainError):
            err = c.attrs["State"].get("Error")
            if err:
                ctx.error(f"Error: {err}")


def cmd_create(ctx: Context, args) -> int:
    c = _create(ctx, args, detached=True)
    ctx.print(c.id)
    return 0


def cmd_run(ctx: Context, args) -> int:
    detach = args.detach
    interactive_tty = args.interactive and args.tty and not detach
    if interactive_tty and not os.isatty(0):
        raise CLIError("the input device is not a TTY", 1)
    if args.rm and args.restart and args.restart != "no":
        raise CLIError("Error: Conflicting options: --restart and --rm", 125)
    c = _create(ctx, args, detached=detach)
    try:
        try:
            c.start()
        except contain.ContainError as exc:
            raise CLIError(f"Error: {_msg(exc)}", 125) from None
        if detach:
            ctx.print(c.id)
            return 0
        if interactive_tty:
            code = c.attach_terminal(detach_keys=args.detach_keys or "ctrl-p,ctrl-q")
            if code is None:  # detached: the container keeps running
                c = None
                return 0
            with contextlib.suppress(contain.ContainError, TimeoutError):
                code = c.wait(timeout=10)
        else:
            code = _stdio.attach_output(c, stdin=args.interactive)
        return code
    finally:
        if c is not None and args.rm and not detach:
            with contextlib.suppress(contain.ContainError):
                c.remove(force=True, v=True)


def cmd_start(ctx: Context, args) -> int:
    failed = False
    if (args.attach or args.interactive) and len(args.containers) > 1:
        raise CLIError("you cannot start and attach multiple containers at once", 1)
    for name in args.containers:
        try:
            c = ctx.container(name)
            if args.attach or args.interactive:
                tty = c.attrs["Config"].get("Tty")
                if args.interactive and tty and os.isatty(0):
                    c.start()
                    code = c.attach_terminal(detach_keys=args.detach_keys or "ctrl-p,ctrl-q")
                    return 0 if code is None else code
                since = time.time()
                c.start()
                code = _stdio.attach_output(c, stdin=args.interactive, since=since - 0.001)
                return code
            c.start()
            ctx.print(name)
        except contain.ContainError as exc:
            ctx.error(f"Error: {_msg(exc)}")
            failed = True
    if failed:
        ctx.error("Error: failed to start containers: " + ", ".join(args.containers))
    return 1 if failed else 0


def _each(ctx: Context, names, action, *, echo: bool = True) -> int:
    failed = False
    for name in names:
        try:
            c = ctx.container(name)
            action(c)
            if echo:
                ctx.print(name)
        except (contain.ContainError, TimeoutError) as exc:
            ctx.error(f"Error: {_msg(exc)}")
            failed = True
    return 1 if failed else 0


def cmd_stop(ctx, args) -> int:
    return _each(ctx, args.containers, lambda c: c.stop(timeout=args.time if args.time is not None else 10))


def cmd_restart(ctx, args) -> int:
    return _each(ctx, args.containers, lambda c: c.restart(timeout=args.time if args.time is not None else 10))


def cmd_kill(ctx, args) -> int:
    def kill(c):
        try:
            c.kill(args.signal)
        except contain.Conflict:
            raise contain.Conflict(f"Cannot kill container: {c.name}: Container {c.id} is not running") from None
    return _each(ctx, args.containers, kill)


def cmd_rm(ctx, args) -> int:
    return _each(ctx, args.containers, lambda c: c.remove(force=args.force, v=args.volumes))


def cmd_pause(ctx, args) -> int:
    return _each(ctx, args.containers, lambda c: c.pause())


def cmd_unpause(ctx, args) -> int:
    return _each(ctx, args.containers, lambda c: c.unpause())


def cmd_wait(ctx, args) -> int:
    return _each(ctx, args.containers, lambda c: ctx.print(str(c.wait())), echo=False)


def cmd_rename(ctx, args) -> int:
    try:
        ctx.container(args.container).rename(args.new_name)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {_msg(exc)}", 1) from None
    return 0


# ------------------------------------------------------------------------- ps

def status_text(state: dict) -> str:
    now = time.time()
    st = state.get("Status")
    if st in ("running", "paused"):
        started = _format.parse_time(state.get("StartedAt")) or now
        text = "Up " + _format.human_duration(now - started)
        if st == "paused" or state.get("Paused"):
            return text + " (Paused)"
        health = (state.get("Health") or {}).get("Status")
        if health == "starting":
            return text + " (health: starting)"
        return f"{text} ({health})" if health in ("healthy", "unhealthy") else text
    if st == "restarting":
        fin = _format.parse_time(state.get("FinishedAt")) or now
        return f"Restarting ({state.get('ExitCode', 0)}) {_format.human_duration(now - fin)} ago"
    if st == "exited":
        fin = _format.parse_time(state.get("FinishedAt"))
        if fin is None:
            return f"Exited ({state.get('ExitCode', 0)})"
        return f"Exited ({state.get('ExitCode', 0)}) {_format.human_duration(now - fin)} ago"
    if st == "removing":
        return "Removal In Progress"
    if st == "dead":
        return "Dead"
    return "Created"


def _command(attrs: dict) -> str:
    import shlex

    parts = [attrs.get("Path") or ""] + list(attrs.get("Args") or [])
    return " ".join(p if (p and not re.search(r"\s", p)) else shlex.quote(p) for p in parts).strip()


def container_row(attrs: dict, trunc: bool) -> dict:
    cid = attrs["Id"]
    image = attrs.get("Config", {}).get("Image") or attrs.get("Image", "")
    if image.startswith("sha256:"):
        image = _format.short_id(image) if trunc else image
    command = _command(attrs)
    if trunc:
        command = _format.ellipsis(command, 20)
    labels = attrs.get("Config", {}).get("Labels") or {}
    nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    mounts = [m.get("Name") or m.get("Source", "") for m in attrs.get("Mounts") or []]
    return {
        "ID": cid[:12] if trunc else cid,
        "Image": image,
        "Command": _format.go_quote(command),
        "CreatedAt": _format.local_time(attrs.get("Created")),
        "RunningFor": _format.ago(attrs.get("Created")),
        "Ports": _format.format_ports((attrs.get("NetworkSettings") or {}).get("Ports")),
        "State": attrs["State"].get("Status", ""),
        "Status": status_text(attrs["State"]),
        "Size": "",
        "Names": attrs.get("Name", "").lstrip("/"),
        "Labels": ",".join(f"{k}={v}" for k, v in labels.items()),
        "Mounts": ",".join(_format.ellipsis(m, 15) if trunc else m for m in mounts),
        "Networks": ",".join(sorted(nets)) or (attrs.get("HostConfig") or {}).get("NetworkMode", ""),
        "LocalVolumes": "0",
        "Label": lambda key: labels.get(key, ""),
    }


PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
              "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
              "Size": "SIZE", "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS",
              "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES"}

PS_TABLE = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def _matches(ctx: Context, attrs: dict, filters: list[str]) -> bool:
    grouped: dict[str, list[str]] = {}
    for f in filters:
        key, sep, value = f.partition("=")
        if not sep:
            raise CLIError(f"Error: bad format of filter (expected name=value): {f}", 1)
        grouped.setdefault(key.lower(), []).append(value)
    for key, values in grouped.items():
        if key == "status":
            for v in values:
                if v not in ("created", "restarting", "running", "removing", "paused", "exited", "dead"):
                    raise CLIError(f"Error: invalid filter 'status={v}'", 1)
            if attrs["State"].get("Status") not in values:
                return False
        elif key == "name":
            name = attrs.get("Name", "").lstrip("/")
            if not any(re.search(v.lstrip("/"), name) for v in values):
                return False
        elif key == "id":
            if not any(attrs["Id"].startswith(v) for v in values):
                return False
        elif key == "label":
            labels = attrs.get("Config", {}).get("Labels") or {}
            for v in values:
                k, sep, val = v.partition("=")
                if k not in labels or (sep and labels[k] != val):
                    return False
        elif key == "ancestor":
            ok = False
            for v in values:
                if attrs.get("Config", {}).get("Image") == v:
                    ok = True
                    break
                with contextlib.suppress(contain.ContainError):
                    if ctx.image(v).id == attrs.get("Image"):
                        ok = True
                        break
            if not ok:
                return False
        elif key == "exited":
            st = attrs["State"]
            if st.get("Status") != "exited" or str(st.get("ExitCode")) not in values:
                return False
        elif key == "network":
            nets = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
            if not any(v in nets or v == attrs.get("HostConfig", {}).get("NetworkMode") for v in values):
                return False
        else:
            raise CLIError(f"Error: invalid filter '{key}'", 1)
    return True


def cmd_ps(ctx: Context, args) -> int:
    show_all = args.all or args.latest or args.last is not None
    rows = []
    containers = contain.Container.list(all=True if (show_all or args.filter) else False, root=ctx.root)
    records = []
    for c in containers:
        try:
            a = c.attrs
        except contain.ContainerNotFound:
            continue
        records.append(a)
    records.sort(key=lambda a: a.get("Created", ""), reverse=True)
    if not show_all and args.filter and not any(f.startswith("status=") for f in args.filter):
        records = [a for a in records if a["State"].get("Running")]
    records = [a for a in records if _matches(ctx, a, args.filter)]
    if args.latest:
        records = records[:1]
    elif args.last is not None and args.last >= 0:
        records = records[:args.last]
    trunc = not args.no_trunc
    rows = [container_row(a, trunc) for a in records]
    if args.quiet:
        for r in rows:
            ctx.print(r["ID"])
        return 0
    fmt = args.format or PS_TABLE
    if fmt == "json":
        fmt = "{{json .}}"
    elif fmt == "table":
        fmt = PS_TABLE
    format_rows(ctx, fmt, rows, PS_HEADERS)
    return 0


# ----------------------------------------------------------------------- logs

def _since(value: Optional[str]):
    if value is None:
        return None
    m = re.fullmatch(r"((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)", value)
    if m:
        total = 0.0
        for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value):
            total += float(num) * {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}[unit]
        return time.time() - total
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    t = _format.parse_time(value if ("T" in value) else value + "T00:00:00Z")
    if t is None:
        raise CLIError(f'invalid value for "since": failed to parse value as time or duration: "{value}"', 1)
    return t


def cmd_logs(ctx: Context, args) -> int:
    try:
        c = ctx.container(args.container)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {_msg(exc)}", 1) from None
    opts: dict = {"timestamps": args.timestamps}
    if args.tail not in (None, "all"):
        try:
            opts["tail"] = int(args.tail)
        except ValueError:
            raise CLIError(f'invalid value for "tail": "{args.tail}"', 1) from None
    since = _since(args.since)
    until = _since(args.until)
    if since is not None:
        opts["since"] = since
    if until is not None:
        opts["until"] = until
    if args.follow:
        import threading

        threads = []
        for fd, which in ((1, "stdout"), (2, "stderr")):
            def pump(fd=fd, which=which):
                with contextlib.suppress(contain.ContainerNotFound):
                    for chunk in c.logs(stdout=which == "stdout", stderr=which == "stderr", follow=True, **opts):
                        _stdio._write(fd, chunk)
            t = threading.Thread(target=pump, daemon=True)
            t.start()
            threads.append(t)
        for t in threads:
            while t.is_alive():
                t.join(0.2)
        return 0
    # Interleaved as written: the timestamps order the two streams.
    out = c.logs(stdout=True, stderr=False, **opts)
    err = c.logs(stdout=False, stderr=True, **opts)
    if out:
        _stdio._write(1, out)
    if err:
        _stdio._write(2, err)
    return 0


# ----------------------------------------------------------------------- exec

def cmd_exec(ctx: Context, args) -> int:
    try:
        c = ctx.container(args.container)
    except contain.ContainError as exc:
        raise CLIError(f"Error: {_msg(exc)}", 1) from None
    if not args.cmd_args:
        raise CLIError('"contain exec" requires at least 2 arguments.', 1)
    if args.interactive and args.tty and not args.detach and not os.isatty(0):
        raise CLIError("the input device is not a TTY", 1)
    env = []
    for f in args.env_file:
        env += read_kv_file(f)
    env += args.env
    opts: dict = {"tty": args.tty, "stdin": args.interactive and not args.detach,
                  "privileged": args.privileged}
    if env:
        opts["environment"] = env
    if args.workdir:
        opts["workdir"] = args.workdir
    if args.user:
        opts["user"] = args.user
    if args.detach:
        opts.update(stdout=False, stderr=False)
    try:
        proc = c.exec(list(args.cmd_args), **opts)
    except contain.Conflict as exc:
        raise CLIError(f"Error: {_msg(exc)}", 1) from None
    except contain.ContainError as exc:
        raise CLIError(f"Error: {_msg(exc)}", 126) from None
    if args.detach:
        # Leave the process running; skip the handle's wait at exit.
        sys.stdout.flush()
        os._exit(0)
    if args.tty:
        return _stdio.exec_terminal(proc, args.interactive)
    return _stdio.exec_pipes(proc, args.interactive)


def cmd_attach(ctx: Context, args) -> int:
    try:
        c = ctx.container(args.container)
        state = c.attrs
    except contain.ContainError as exc:
        raise CLIError(f"Error: {_msg(exc)}", 1) from None
    if not state["State"].get("Running"):
        raise CLIError("You cannot attach to a stopped container, start it first", 1)
    cfg = state["Config"]
    if cfg.get("Tty") and os.isatty(0) and not args.no_stdin:
        try:
            code = c.attach_terminal(detach_keys=args.detach_keys or "ctrl-p,ctrl-q")
        except contain.ContainError as exc:
            raise CLIError(f"Error: {_msg(exc)}", 1) from None
        return 0 if code is None else code
    att = c.attach()
    stdin = cfg.get("OpenStdin") and not args.no_stdin
    if stdin:
        import threading

        def writer():
            with contextlib.suppress(OSError, ValueError):
                while True:
                    data = os.read(0, 65536)
                    if not data:
                        break
                    att.send(data)
                att.close_stdin()
        threading.Thread(target=writer, daemon=True).start()
    with _stdio.SignalProxy(c) if args.sig_proxy else contextlib.nullcontext():
        for stream, data in att:
            _stdio._write(2 if stream == 2 else 1, data)
    code = att.exit_code
    if code is None:
        with contextlib.suppress(contain.ContainError, TimeoutError):
            code = c.wait(timeout=10)
    return code or 0


# -------------------------------------------------------------- commit, cp...

def cmd_commit(ctx: Context, args) -> int:
    c = ctx.container(args.container)
    commit = api(c, "commit", "commit")
    repo = tag = None
    if args.repository:
        repo, tag = split_ref(args.repository)
    opts: dict = {}
    if repo:
        opts["repository"] = repo
        opts["tag"] = tag
    if args.message:
        opts["message"] = args.message
    if args.author:
        opts["author"] = args.author
    if args.change:
        opts["changes"] = args.change
    if accepts(commit, "pause"):
        opts["pause"] = args.pause
    img = commit(**opts)
    ctx.print(img.id if isinstance(img.id, str) and img.id.startswith("sha256:") else f"sha256:{img.id}")
    return 0


def _split_cp(arg: str):
    if ":" in arg and not arg.startswith("/") and not arg.startswith("."):
        name, _, path = arg.partition(":")
        return name, path
    return None, arg


def _chunks(data) -> bytes:
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if hasattr(data, "read"):
        return data.read()
    return b"".join(data)


def cmd_cp(ctx: Context, args) -> int:
    src_c, src = _split_cp(args.src)
    dst_c, dst = _split_cp(args.dest)
    if (src_c is None) == (dst_c is None):
        raise CLIError("Error: copying between containers or between host paths is not supported; "
                       "one side must be CONTAINER:PATH", 1)
    if src_c is not None:
        c = ctx.container(src_c)
        get_archive = api(c, "get_archive", "cp from a container")
        result = get_archive(src)
        bits = result[0] if isinstance(result, tuple) else result
        data = _chunks(bits)
        if dst == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            return 0
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = tar.getmembers()
            if not members:
                return 0
            top = members[0].name.split("/")[0]
            if os.path.isdir(dst) and not (src.endswith("/.")):
                _extract(tar, dst)
            else:
                tmp = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(dst)) or ".")
                try:
                    _extract(tar, tmp)
                    if src.endswith("/."):
                        os.makedirs(dst, exist_ok=True)
                        for name in os.listdir(os.path.join(tmp, top)):
                            shutil.move(os.path.join(tmp, top, name), os.path.join(dst, name))
                    else:
                        if os.path.isdir(dst):
                            dst = os.path.join(dst, top)
                        os.replace(os.path.join(tmp, top), dst)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        return 0
    c = ctx.container(dst_c)
    put_archive = api(c, "put_archive", "cp into a container")
    if src == "-":
        data = sys.stdin.buffer.read()
        put_archive(dst, data)
        return 0
    if not os.path.exists(src):
        raise CLIError(f"lstat {os.path.abspath(src)}: no such file or directory", 1)
    # Into an existing directory under the source's name, else under the name given.
    target_dir, name = dst, os.path.basename(os.path.normpath(src))
    is_dir = _container_is_dir(c, dst)
    if not is_dir and not dst.endswith("/"):
        target_dir, name = os.path.dirname(dst.rstrip("/")) or "/", os.path.basename(dst.rstrip("/"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(src, arcname=name)
    put_archive(target_dir, buf.getvalue())
    return 0


def _container_is_dir(c, path: str) -> bool:
    import stat as _stat

    with contextlib.suppress(Exception):
        result = c.get_archive(path)
        if isinstance(result, tuple) and isinstance(result[1], dict):
            mode = result[1].get("mode", 0)
            return bool(mode & (1 << 31)) or _stat.S_ISDIR(mode)
        data = _chunks(result[0] if isinstance(result, tuple) else result)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            first = tar.next()
            return bool(first and first.isdir())
    return False


def _extract(tar: tarfile.TarFile, dest: str) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="tar")
    else:
        tar.extractall(dest)


def cmd_diff(ctx: Context, args) -> int:
    c = ctx.container(args.container)
    changes = api(c, "diff", "diff")()
    kinds = {0: "C", 1: "A", 2: "D"}
    for ch in changes:
        kind = ch.get("Kind")
        ctx.print(f"{kinds.get(kind, kind)} {ch.get('Path')}")
    return 0


def cmd_top(ctx: Context, args) -> int:
    c = ctx.container(args.container)
    top = api(c, "top", "top")
    result = top(ps_args=" ".join(args.ps_args)) if args.ps_args and accepts(top, "ps_args") else top()
    from ._format import Table

    t = Table(result.get("Titles") or [])
    for row in result.get("Processes") or []:
        t.add(row)
    ctx.out.write(t.render())
    return 0


def _stats_row(c, s: dict) -> dict:
    cpu = s.get("cpu_stats") or {}
    pre = s.get("precpu_stats") or {}
    cpu_delta = (cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0))
    sys_delta = (cpu.get("system_cpu_usage", 0) or 0) - (pre.get("system_cpu_usage", 0) or 0)
    ncpu = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    cpu_pct = (cpu_delta / sys_delta * ncpu * 100.0) if sys_delta > 0 and cpu_delta > 0 else 0.0
    mem = s.get("memory_stats") or {}
    usage = mem.get("usage", 0) or 0
    cache = (mem.get("stats") or {}).get("inactive_file") or (mem.get("stats") or {}).get("total_inactive_file") or 0
    usage = max(usage - cache, 0)
    limit = mem.get("limit", 0) or 0
    if not limit or limit >= 1 << 60:  # no limit: the host's memory, as Docker shows it
        with contextlib.suppress(OSError, ValueError):
            with open("/proc/meminfo") as f:
                limit = int(f.readline().split()[1]) * 1024
    mem_pct = usage / limit * 100.0 if limit else 0.0
    rx = sum(n.get("rx_bytes", 0) for n in (s.get("networks") or {}).values())
    tx = sum(n.get("tx_bytes", 0) for n in (s.get("networks") or {}).values())
    blk_r = blk_w = 0
    for e in (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        if (e.get("op") or "").lower() == "read":
            blk_r += e.get("value", 0)
        elif (e.get("op") or "").lower() == "write":
            blk_w += e.get("value", 0)
    pids = (s.get("pids_stats") or {}).get("current", 0)
    return {
        "Container": c.short_id, "ID": c.short_id, "Name": c.name,
        "CPUPerc": f"{cpu_pct:.2f}%",
        "MemUsage": f"{_format.bytes_size(usage)} / {_format.bytes_size(limit)}",
        "MemPerc": f"{mem_pct:.2f}%",
        "NetIO": f"{_format.human_size(rx)} / {_format.human_size(tx)}",
        "BlockIO": f"{_format.human_size(blk_r)} / {_format.human_size(blk_w)}",
        "PIDs": str(pids),
    }


STATS_HEADERS = {"Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %",
                 "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
                 "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}
STATS_TABLE = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"


def cmd_stats(ctx: Context, args) -> int:
    if args.containers:
        containers = [ctx.container(n) for n in args.containers]
    else:
        containers = contain.Container.list(all=args.all, root=ctx.root)
    fmt = args.format or STATS_TABLE
    while True:
        rows = []
        for c in containers:
            stats = api(c, "stats", "stats")
            try:
                s = stats(stream=False)
            except contain.Conflict:
                s = {}
            rows.append(_stats_row(c, s))
        if not args.no_stream and os.isatty(1):
            ctx.out.write("\x1b[2J\x1b[H")
        format_rows(ctx, fmt, rows, STATS_HEADERS)
        if args.no_stream:
            return 0
        time.sleep(1)


def cmd_port(ctx: Context, args) -> int:
    c = ctx.container(args.container)
    ports = (c.attrs.get("NetworkSettings") or {}).get("Ports") or {}
    want = None
    if args.private_port:
        want = args.private_port if "/" in args.private_port else args.private_port + "/tcp"
        if want not in ports or not ports[want]:
            raise CLIError(f"Error: No public port '{want}' published for {args.container}", 1)
    for private in sorted(ports, key=lambda p: _format._port_key(p)):
        if want and private != want:
            continue
        for b in ports[private] or []:
            ip = b.get("HostIp") or "0.0.0.0"
            host = f"[{ip}]" if ":" in ip else ip
            line = f"{host}:{b.get('HostPort')}"
            ctx.print(line if want else f"{private} -> {line}")
    return 0


def cmd_export(ctx: Context, args) -> int:
    c = ctx.container(args.container)
    export = api(c, "export", "export")
    if not args.output and os.isatty(1):
        raise CLIError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    data = export()
    out = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        if isinstance(data, (bytes, bytearray)):
            out.write(data)
        elif hasattr(data, "read"):
            shutil.copyfileobj(data, out)
        else:
            for chunk in data:
                out.write(chunk)
    finally:
        if args.output:
            out.close()
        else:
            out.flush()
    return 0


def container_inspect(c) -> dict:
    return {k: v for k, v in c.attrs.items() if not k.startswith("_")}
