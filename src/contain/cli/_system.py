"""version, info, inspect, network, volume, system and completion."""

from __future__ import annotations

import contextlib
import os
import platform
import sys

import contain

from . import _format
from ._common import CLIError, Context, api, format_rows, kv_dict, parse_template, render
from ._containers import container_inspect
from ._images import image_inspect


def cmd_version(ctx: Context, args) -> int:
    info = {
        "Client": {"Version": contain.__version__, "ApiVersion": "1.43", "GoVersion": "",
                   "PythonVersion": platform.python_version(), "Os": "linux",
                   "Arch": platform.machine(), "Context": "default"},
        "Server": None,
    }
    if args.format:
        ctx.out.write(render(parse_template(args.format), info) + "\n")
        return 0
    c = info["Client"]
    ctx.print("Client: contain")
    ctx.print(f" Version:           {c['Version']}")
    ctx.print(f" Python version:    {c['PythonVersion']}")
    ctx.print(f" OS/Arch:           linux/{c['Arch']}")
    ctx.print(" Daemon:            none (containers run from this command)")
    return 0


def cmd_info(ctx: Context, args) -> int:
    from ._root_path import root_path

    data = contain.info(root=root_path(ctx.root))
    if args.format:
        ctx.out.write(render(parse_template(args.format), data) + "\n")
        return 0
    p = ctx.print
    p("Client: contain")
    p(f" Version:    {contain.__version__}")
    p(" Context:    default")
    p("")
    p("Server: none (contain has no daemon; this is the state in its root)")
    p(f" Containers: {data['Containers']}")
    p(f"  Running: {data['ContainersRunning']}")
    p(f"  Paused: {data['ContainersPaused']}")
    p(f"  Stopped: {data['ContainersStopped']}")
    p(f" Images: {data['Images']}")
    p(f" Storage Driver: {data['Driver']}")
    for key, value in data["DriverStatus"]:
        p(f"  {key}: {value}")
    p(" Logging Driver: contain")
    p(f" Cgroup Driver: {data['CgroupDriver']}")
    p(f" Cgroup Version: {data['CgroupVersion']}")
    p(" Security Options:")
    for option in data["SecurityOptions"]:
        p(f"  {option.split(',')[0].split('=', 1)[1]}")
    p(f" Kernel Version: {data['KernelVersion']}")
    p(f" Operating System: {data['OperatingSystem']}")
    p(" OSType: linux")
    p(f" Architecture: {data['Architecture']}")
    p(f" CPUs: {data['NCPU']}")
    p(f" Total Memory: {_format.bytes_size(data['MemTotal'])}")
    p(f" Name: {data['Name']}")
    p(f" Contain Root Dir: {data['DockerRootDir']}")
    return 0


# ---------------------------------------------------------------------- inspect

def _find(ctx: Context, name: str, kind: str | None):
    kinds = [kind] if kind else ["container", "image", "network", "volume"]
    for k in kinds:
        try:
            if k == "container":
                return container_inspect(ctx.container(name))
            if k == "image":
                return image_inspect(ctx.image(name))
            if k == "network" and hasattr(contain, "Network"):
                return _net_inspect(contain.Network.get(name, root=ctx.root))
            if k == "volume" and hasattr(contain, "Volume"):
                return _attrs(contain.Volume.get(name, root=ctx.root))
        except (contain.NotFound, contain.InvalidArgument):
            continue
    return None


def _attrs(obj) -> dict:
    for name in ("attrs", "inspect"):
        value = getattr(obj, name, None)
        if callable(value):
            value = value()
        if isinstance(value, dict):
            return value
    return {"Name": getattr(obj, "name", "")}


def _net_inspect(net) -> dict:
    return _attrs(net)


def cmd_inspect(ctx: Context, args, kind: str | None = None) -> int:
    kind = kind or args.type
    tmpl = parse_template(args.format) if args.format else None
    found = []
    failed = False
    for name in args.names:
        obj = _find(ctx, name, kind)
        if obj is None:
            what = {"container": "container", "image": "image", "network": "network", "volume": "volume"}.get(kind or "", "object")
            ctx.error(f"Error: No such {what}: {name}")
            failed = True
            continue
        if tmpl is not None:
            ctx.out.write(render(tmpl, obj) + "\n")
        else:
            found.append(obj)
    if tmpl is None:
        ctx.out.write(_format.go_json(found, indent=4) + "\n")
    ctx.out.flush()
    return 1 if failed else 0


# ---------------------------------------------------------------------- network

def cmd_network(ctx: Context, args) -> int:
    Network = contain.Network
    sub = args.network_command
    if sub == "create":
        opts: dict = {}
        if args.subnet:
            opts["subnet"] = args.subnet
        if args.gateway:
            opts["gateway"] = args.gateway
        if args.label:
            opts["labels"] = kv_dict(args.label)
        if args.driver and args.driver != "bridge":
            raise CLIError(f"Error: network driver {args.driver!r} is not supported (only bridge)", 1)
        try:
            net = Network.create(args.name, root=ctx.root, **opts)
        except contain.ContainError as exc:
            raise CLIError(f"Error: {exc}", 1) from None
        ctx.print(getattr(net, "id", args.name))
        return 0
    if sub in ("ls", "list"):
        nets = Network.list(root=ctx.root)
        rows = []
        for n in nets:
            a = _attrs(n)
            nid = a.get("Id") or getattr(n, "id", "")
            rows.append({"ID": nid[:12] if not args.no_trunc else nid, "Name": a.get("Name", getattr(n, "name", "")),
                         "Driver": a.get("Driver", "bridge"), "Scope": a.get("Scope", "local"),
                         "IPv6": str(a.get("EnableIPv6", False)).lower(), "Internal": str(a.get("Internal", False)).lower(),
                         "CreatedAt": a.get("Created", ""), "Labels": ",".join(f"{k}={v}" for k, v in (a.get("Labels") or {}).items())})
        if args.quiet:
            for r in rows:
                ctx.print(r["ID"])
            return 0
        fmt = args.format or "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
        format_rows(ctx, fmt, rows, {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                                     "IPv6": "IPV6", "Internal": "INTERNAL", "CreatedAt": "CREATED AT", "Labels": "LABELS"})
        return 0
    if sub in ("rm", "remove"):
        failed = False
        for name in args.networks:
            try:
                Network.get(name, root=ctx.root).remove()
                ctx.print(name)
            except contain.ContainError as exc:
                ctx.error(f"Error: {exc}")
                failed = True
        return 1 if failed else 0
    if sub == "inspect":
        return cmd_inspect(ctx, args, kind="network")
    if sub in ("connect", "disconnect"):
        try:
            net = Network.get(args.network, root=ctx.root)
            c = ctx.container(args.container)
            if sub == "connect":
                opts = {"aliases": args.alias} if args.alias else {}
                net.connect(c, **opts)
            else:
                net.disconnect(c)
        except contain.ContainError as exc:
            raise CLIError(f"Error: {exc}", 1) from None
        return 0
    if sub == "prune":
        removed = api(Network, "prune", "network prune")(root=ctx.root)
        names = removed.get("NetworksDeleted", []) if isinstance(removed, dict) else (removed or [])
        if names:
            ctx.print("Deleted Networks:")
            for n in names:
                ctx.print(getattr(n, "name", n))
        return 0
    raise CLIError("Usage:  contain network COMMAND", 1)


# ----------------------------------------------------------------------- volume

def cmd_volume(ctx: Context, args) -> int:
    Volume = contain.Volume
    sub = args.volume_command
    if sub == "create":
        opts: dict = {}
        if args.label:
            opts["labels"] = kv_dict(args.label)
        name = args.name
        try:
            vol = Volume.create(name, root=ctx.root, **opts) if name else Volume.create(root=ctx.root, **opts)
        except contain.ContainError as exc:
            raise CLIError(f"Error: {exc}", 1) from None
        ctx.print(getattr(vol, "name", name))
        return 0
    if sub in ("ls", "list"):
        rows = []
        for v in Volume.list(root=ctx.root):
            a = _attrs(v)
            rows.append({"Driver": a.get("Driver", "local"), "Name": a.get("Name", getattr(v, "name", "")),
                         "Mountpoint": a.get("Mountpoint", ""), "Scope": a.get("Scope", "local"),
                         "Labels": ",".join(f"{k}={v}" for k, v in (a.get("Labels") or {}).items())})
        if args.quiet:
            for r in rows:
                ctx.print(r["Name"])
            return 0
        fmt = args.format or "table {{.Driver}}\t{{.Name}}"
        format_rows(ctx, fmt, rows, {"Driver": "DRIVER", "Name": "VOLUME NAME", "Mountpoint": "MOUNTPOINT",
                                     "Scope": "SCOPE", "Labels": "LABELS"})
        return 0
    if sub in ("rm", "remove"):
        failed = False
        for name in args.volumes:
            try:
                v = Volume.get(name, root=ctx.root)
                v.remove(force=args.force) if args.force else v.remove()
                ctx.print(name)
            except contain.ContainError as exc:
                ctx.error(f"Error: {exc}")
                failed = True
        return 1 if failed else 0
    if sub == "inspect":
        return cmd_inspect(ctx, args, kind="volume")
    if sub == "prune":
        removed = api(Volume, "prune", "volume prune")(root=ctx.root)
        names = removed.get("VolumesDeleted", []) if isinstance(removed, dict) else (removed or [])
        ctx.print("Deleted Volumes:")
        for n in names:
            ctx.print(getattr(n, "name", n))
        space = removed.get("SpaceReclaimed", 0) if isinstance(removed, dict) else 0
        ctx.print("")
        ctx.print(f"Total reclaimed space: {_format.human_size(space)}")
        return 0
    raise CLIError("Usage:  contain volume COMMAND", 1)


# ----------------------------------------------------------------------- system

def _dir_size(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def cmd_system(ctx: Context, args) -> int:
    sub = args.system_command
    if sub == "df":
        images = contain.Image.list(root=ctx.root)
        containers = contain.Container.list(all=True, root=ctx.root)
        used_images = set()
        running = 0
        for c in containers:
            with contextlib.suppress(contain.ContainError):
                a = c.attrs
                used_images.add(a.get("Image"))
                running += bool(a["State"].get("Running"))
        img_size = sum(i.size for i in images)
        unused = sum(i.size for i in images if i.id not in used_images)
        vols = []
        if hasattr(contain, "Volume"):
            with contextlib.suppress(contain.ContainError):
                vols = contain.Volume.list(root=ctx.root)
        from ._root_path import root_path

        cdir = os.path.join(root_path(ctx.root), "containers")
        csize = 0
        for c in containers:
            csize += _dir_size(os.path.join(cdir, c.id, "upper"))
        rows = [
            {"Type": "Images", "TotalCount": str(len(images)), "Active": str(len(used_images & {i.id for i in images})),
             "Size": _format.human_size(img_size),
             "Reclaimable": f"{_format.human_size(unused)} ({(unused * 100 // img_size) if img_size else 0}%)"},
            {"Type": "Containers", "TotalCount": str(len(containers)), "Active": str(running),
             "Size": _format.human_size(csize), "Reclaimable": f"{_format.human_size(0)} (0%)"},
            {"Type": "Local Volumes", "TotalCount": str(len(vols)), "Active": "0",
             "Size": "0B", "Reclaimable": "0B"},
        ]
        fmt = args.format or "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
        format_rows(ctx, fmt, rows, {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE",
                                     "Size": "SIZE", "Reclaimable": "RECLAIMABLE"})
        return 0
    if sub == "prune":
        if not args.force:
            if not sys.stdin.isatty():
                raise CLIError("Error: refusing to prune without confirmation; use -f", 1)
            ctx.out.write("WARNING! This will remove:\n  - all stopped containers\n"
                          "  - all networks not used by at least one container\n"
                          + ("  - all images without at least one container associated to them\n" if args.all
                             else "  - all dangling images\n")
                          + "\nAre you sure you want to continue? [y/N] ")
            ctx.out.flush()
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                return 0
        deleted = []
        for c in contain.Container.list(all=True, root=ctx.root):
            with contextlib.suppress(contain.ContainError):
                if c.status in ("exited", "created"):
                    c.remove()
                    deleted.append(c.id)
        if deleted:
            ctx.print("Deleted Containers:")
            for d in deleted:
                ctx.print(d)
            ctx.print("")
        if hasattr(contain, "Network") and hasattr(contain.Network, "prune"):
            with contextlib.suppress(contain.ContainError):
                removed = contain.Network.prune(root=ctx.root)
                names = removed.get("NetworksDeleted", []) if isinstance(removed, dict) else (removed or [])
                if names:
                    ctx.print("Deleted Networks:")
                    for n in names:
                        ctx.print(getattr(n, "name", n))
                    ctx.print("")
        used = set()
        for c in contain.Container.list(all=True, root=ctx.root):
            with contextlib.suppress(contain.ContainError):
                used.add(c.attrs.get("Image"))
        lines = []
        reclaimed = 0
        for img in contain.Image.list(root=ctx.root):
            if img.id in used or (img.tags and not args.all):
                continue
            with contextlib.suppress(contain.ContainError):
                size = img.size
                for entry in img.remove(force=False):
                    lines += [f"{k}: {v}" for k, v in entry.items()]
                reclaimed += size
        if lines:
            ctx.print("Deleted Images:")
            for ln in lines:
                ctx.print(ln)
            ctx.print("")
        ctx.print(f"Total reclaimed space: {_format.human_size(reclaimed)}")
        return 0
    if sub == "info":
        return cmd_info(ctx, args)
    raise CLIError("Usage:  contain system COMMAND", 1)


def cmd_completion(ctx: Context, args) -> int:
    name = {"bash": "contain.bash", "zsh": "contain.zsh"}[args.shell]
    path = os.path.join(os.path.dirname(__file__), "completion", name)
    with open(path) as f:
        ctx.out.write(f.read())
    return 0
