"""The `contain` command: Docker's CLI workflow on contain's Python API."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import contain

from . import _containers as C
from . import _images as I
from . import _system as S
from ._common import CLIError, Context, StatusExit, message

# Commands that run a container exit 125 when contain itself fails.
_RUNTIME_COMMANDS = {"run", "create"}


class _Parser(argparse.ArgumentParser):
    """argparse with Docker's exit code (125) and wording for usage errors."""

    def error(self, msg: str):  # type: ignore[override]
        prog = self.prog
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{prog}: {msg}\nSee '{prog} --help'.\n")
        raise SystemExit(125)


def _sub(subs, name: str, help: str, func, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help, description=help, aliases=list(aliases), add_help=False)
    p.add_argument("--help", action="help", help="Print usage")
    p.set_defaults(func=func, command_name=name)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="contain", description="Run Linux containers without a daemon (Docker's commands).")
    parser.add_argument("--root", metavar="DIR", default=None,
                        help="State root (default: $CONTAIN_ROOT, /var/lib/contain for root)")
    parser.add_argument("-v", "--version", action="store_true", help="Print version information and quit")
    parser.add_argument("-D", "--debug", action="store_true", help="Show tracebacks of errors")
    subs = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=_Parser)

    # ------------------------------------------------------------- containers
    p = _sub(subs, "run", "Create and run a new container from an image", C.cmd_run)
    p.add_argument("-d", "--detach", action="store_true", help="Run container in background and print container ID")
    p.add_argument("--detach-keys", help="Override the key sequence for detaching a container")
    p.add_argument("--sig-proxy", default=True, type=lambda s: s.lower() != "false", help="Proxy received signals")
    C.add_create_flags(p)

    p = _sub(subs, "create", "Create a new container", C.cmd_create)
    C.add_create_flags(p)

    p = _sub(subs, "start", "Start one or more stopped containers", C.cmd_start)
    p.add_argument("-a", "--attach", action="store_true", help="Attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="Attach container's STDIN")
    p.add_argument("--detach-keys", help="Override the key sequence for detaching a container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    for name, helptext, func in (("stop", "Stop one or more running containers", C.cmd_stop),
                                 ("restart", "Restart one or more containers", C.cmd_restart)):
        p = _sub(subs, name, helptext, func)
        p.add_argument("-t", "--time", "--timeout", type=int, dest="time", help="Seconds to wait before killing the container")
        p.add_argument("-s", "--signal", help="Signal to send to the container")
        p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = _sub(subs, "kill", "Kill one or more running containers", C.cmd_kill)
    p.add_argument("-s", "--signal", default="KILL", help="Signal to send to the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = _sub(subs, "rm", "Remove one or more containers", C.cmd_rm)
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of a running container (uses SIGKILL)")
    p.add_argument("-v", "--volumes", action="store_true", help="Remove anonymous volumes associated with the container")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")

    for name, helptext, func in (("pause", "Pause all processes within one or more containers", C.cmd_pause),
                                 ("unpause", "Unpause all processes within one or more containers", C.cmd_unpause),
                                 ("wait", "Block until one or more containers stop, then print their exit codes", C.cmd_wait)):
        p = _sub(subs, name, helptext, func)
        p.add_argument("containers", nargs="+", metavar="CONTAINER")

    p = _sub(subs, "rename", "Rename a container", C.cmd_rename)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("new_name", metavar="NEW_NAME")

    p = _sub(subs, "ps", "List containers", C.cmd_ps)
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display container IDs")
    p.add_argument("-l", "--latest", action="store_true", help="Show the latest created container (includes all states)")
    p.add_argument("-n", "--last", type=int, help="Show n last created containers (includes all states)")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", help="Format output using a custom template")

    p = _sub(subs, "logs", "Fetch the logs of a container", C.cmd_logs)
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("-n", "--tail", default="all", help='Number of lines to show from the end of the logs')
    p.add_argument("--since", help="Show logs since timestamp or relative (e.g. 42m for 42 minutes)")
    p.add_argument("--until", help="Show logs before a timestamp or relative")
    p.add_argument("--details", action="store_true", help="Show extra details provided to logs")
    p.add_argument("container", metavar="CONTAINER")

    p = _sub(subs, "exec", "Execute a command in a running container", C.cmd_exec)
    p.add_argument("-d", "--detach", action="store_true", help="Detached mode: run command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], help="Set environment variables")
    p.add_argument("--env-file", action="append", default=[], help="Read in a file of environment variables")
    p.add_argument("-w", "--workdir", help="Working directory inside the container")
    p.add_argument("-u", "--user", help="Username or UID")
    p.add_argument("--privileged", action="store_true", help="Give extended privileges to the command")
    p.add_argument("--detach-keys", help="Override the key sequence for detaching a container")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("cmd_args", nargs=argparse.REMAINDER, metavar="COMMAND [ARG...]")

    p = _sub(subs, "attach", "Attach local standard input, output, and error streams to a running container", C.cmd_attach)
    p.add_argument("--no-stdin", action="store_true", help="Do not attach STDIN")
    p.add_argument("--detach-keys", help="Override the key sequence for detaching a container")
    p.add_argument("--sig-proxy", default=True, type=lambda s: s.lower() != "false", help="Proxy all received signals")
    p.add_argument("container", metavar="CONTAINER")

    p = _sub(subs, "commit", "Create a new image from a container's changes", C.cmd_commit)
    p.add_argument("-a", "--author", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", help="Commit message")
    p.add_argument("-p", "--pause", default=True, type=lambda s: s.lower() != "false", help="Pause container during commit")
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("repository", nargs="?", metavar="[REPOSITORY[:TAG]]")

    p = _sub(subs, "cp", "Copy files/folders between a container and the local filesystem", C.cmd_cp)
    p.add_argument("-a", "--archive", action="store_true", help="Archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="Always follow symbol link in SRC_PATH")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")

    p = _sub(subs, "diff", "Inspect changes to files or directories on a container's filesystem", C.cmd_diff)
    p.add_argument("container", metavar="CONTAINER")

    p = _sub(subs, "top", "Display the running processes of a container", C.cmd_top)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="[ps OPTIONS]")

    p = _sub(subs, "stats", "Display a live stream of container(s) resource usage statistics", C.cmd_stats)
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true", help="Disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("--format", help="Format output using a custom template")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")

    p = _sub(subs, "port", "List port mappings or a specific mapping for the container", C.cmd_port)
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private_port", nargs="?", metavar="PRIVATE_PORT[/PROTO]")

    p = _sub(subs, "export", "Export a container's filesystem as a tar archive", C.cmd_export)
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")
    p.add_argument("container", metavar="CONTAINER")

    # ---------------------------------------------------------------- images
    p = _sub(subs, "images", "List images", I.cmd_images)
    p.add_argument("-a", "--all", action="store_true", help="Show all images (default hides intermediate images)")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    p.add_argument("--digests", action="store_true", help="Show digests")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--format", help="Format output using a custom template")
    p.add_argument("reference", nargs="?", metavar="[REPOSITORY[:TAG]]")

    p = _sub(subs, "pull", "Download an image from a registry", I.cmd_pull)
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("-a", "--all-tags", action="store_true", help="Download all tagged images in the repository")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")

    p = _sub(subs, "push", "Upload an image to a registry", I.cmd_push)
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    p.add_argument("--compression", choices=("gzip", "zstd"), help="Layer compression (contain: gzip by default)")
    p.add_argument("name", metavar="NAME[:TAG]")

    p = _sub(subs, "search", "Search Docker Hub (or a registry) for images", I.cmd_search)
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--limit", type=int, default=25, help="Max number of search results")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("--format", help="Pretty-print search using a Go template")
    p.add_argument("term", metavar="TERM")

    p = _sub(subs, "login", "Log in to a registry", I.cmd_login)
    p.add_argument("-u", "--username", help="Username")
    p.add_argument("-p", "--password", help="Password")
    p.add_argument("--password-stdin", action="store_true", help="Take the password from stdin")
    p.add_argument("server", nargs="?", metavar="SERVER")

    p = _sub(subs, "logout", "Log out from a registry", I.cmd_logout)
    p.add_argument("server", nargs="?", metavar="SERVER")

    p = _sub(subs, "tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", I.cmd_tag)
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")

    p = _sub(subs, "rmi", "Remove one or more images", I.cmd_rmi)
    p.add_argument("-f", "--force", action="store_true", help="Force removal of the image")
    p.add_argument("--no-prune", action="store_true", help="Do not delete untagged parents")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = _sub(subs, "save", "Save one or more images to a tar archive (streamed to STDOUT by default)", I.cmd_save)
    p.add_argument("-o", "--output", help="Write to a file, instead of STDOUT")
    p.add_argument("--format", choices=("docker-archive", "oci-archive", "oci-dir"), help="Archive format (contain)")
    p.add_argument("images", nargs="+", metavar="IMAGE")

    p = _sub(subs, "load", "Load an image from a tar archive or STDIN", I.cmd_load)
    p.add_argument("-i", "--input", help="Read from tar archive file, instead of STDIN")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")

    p = _sub(subs, "import", "Import the contents from a tarball to create a filesystem image", I.cmd_import)
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", help="Set commit message for imported image")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("file", metavar="file|URL|-")
    p.add_argument("reference", nargs="?", metavar="[REPOSITORY[:TAG]]")

    p = _sub(subs, "history", "Show the history of an image", I.cmd_history)
    p.add_argument("-H", "--human", default=True, type=lambda s: s.lower() != "false", help="Print sizes and dates in human readable format")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    p.add_argument("--format", help="Format output using a custom template")
    p.add_argument("image", metavar="IMAGE")

    p = _sub(subs, "build", "Build an image from a Dockerfile", I.cmd_build)
    p.add_argument("-t", "--tag", action="append", default=[], help="Name and optionally a tag in the 'name:tag' format")
    p.add_argument("-f", "--file", help="Name of the Dockerfile (Default is 'PATH/Dockerfile')")
    p.add_argument("--build-arg", action="append", default=[], help="Set build-time variables")
    p.add_argument("--no-cache", action="store_true", help="Do not use cache when building the image")
    p.add_argument("--target", help="Set the target build stage to build")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress the build output and print image ID on success")
    p.add_argument("--label", action="append", default=[], help="Set metadata for an image")
    p.add_argument("--platform", help="Set platform if server is multi-platform capable")
    p.add_argument("path", metavar="PATH")

    # -------------------------------------------------------------- general
    p = _sub(subs, "inspect", "Return low-level information on contain objects", S.cmd_inspect)
    p.add_argument("-f", "--format", help="Format output using a custom template")
    p.add_argument("--type", choices=("container", "image", "network", "volume"), help="Return JSON for specified type")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes if the type is container")
    p.add_argument("names", nargs="+", metavar="NAME|ID")

    p = _sub(subs, "version", "Show the contain version information", S.cmd_version)
    p.add_argument("-f", "--format", help="Format output using a custom template")

    p = _sub(subs, "info", "Display system-wide information", S.cmd_info)
    p.add_argument("-f", "--format", help="Format output using a custom template")

    p = _sub(subs, "network", "Manage networks", S.cmd_network)
    nsubs = p.add_subparsers(dest="network_command", metavar="COMMAND", parser_class=_Parser)
    q = nsubs.add_parser("create", help="Create a network")
    q.add_argument("-d", "--driver", default="bridge", help="Driver to manage the Network")
    q.add_argument("--subnet", help="Subnet in CIDR format that represents a network segment")
    q.add_argument("--gateway", help="IPv4 or IPv6 Gateway for the master subnet")
    q.add_argument("--label", action="append", default=[], help="Set metadata on a network")
    q.add_argument("name", metavar="NETWORK")
    q = nsubs.add_parser("ls", aliases=["list"], help="List networks")
    q.add_argument("-q", "--quiet", action="store_true", help="Only display network IDs")
    q.add_argument("--no-trunc", action="store_true", help="Do not truncate the output")
    q.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values")
    q.add_argument("--format", help="Pretty-print networks using a Go template")
    q = nsubs.add_parser("rm", aliases=["remove"], help="Remove one or more networks")
    q.add_argument("networks", nargs="+", metavar="NETWORK")
    q = nsubs.add_parser("inspect", help="Display detailed information on one or more networks")
    q.add_argument("-f", "--format", help="Format output using a custom template")
    q.add_argument("names", nargs="+", metavar="NETWORK")
    q.set_defaults(type="network")
    q = nsubs.add_parser("connect", help="Connect a container to a network")
    q.add_argument("--alias", action="append", default=[], help="Add network-scoped alias for the container")
    q.add_argument("network", metavar="NETWORK")
    q.add_argument("container", metavar="CONTAINER")
    q = nsubs.add_parser("disconnect", help="Disconnect a container from a network")
    q.add_argument("-f", "--force", action="store_true", help="Force the container to disconnect from a network")
    q.add_argument("network", metavar="NETWORK")
    q.add_argument("container", metavar="CONTAINER")
    q = nsubs.add_parser("prune", help="Remove all unused networks")
    q.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")

    p = _sub(subs, "volume", "Manage volumes", S.cmd_volume)
    vsubs = p.add_subparsers(dest="volume_command", metavar="COMMAND", parser_class=_Parser)
    q = vsubs.add_parser("create", help="Create a volume")
    q.add_argument("-d", "--driver", default="local", help="Specify volume driver name")
    q.add_argument("--label", action="append", default=[], help="Set metadata for a volume")
    q.add_argument("name", nargs="?", metavar="VOLUME")
    q = vsubs.add_parser("ls", aliases=["list"], help="List volumes")
    q.add_argument("-q", "--quiet", action="store_true", help="Only display volume names")
    q.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values")
    q.add_argument("--format", help="Pretty-print volumes using a Go template")
    q = vsubs.add_parser("rm", aliases=["remove"], help="Remove one or more volumes")
    q.add_argument("-f", "--force", action="store_true", help="Force the removal of one or more volumes")
    q.add_argument("volumes", nargs="+", metavar="VOLUME")
    q = vsubs.add_parser("inspect", help="Display detailed information on one or more volumes")
    q.add_argument("-f", "--format", help="Format output using a custom template")
    q.add_argument("names", nargs="+", metavar="VOLUME")
    q.set_defaults(type="volume")
    q = vsubs.add_parser("prune", help="Remove unused local volumes")
    q.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")

    p = _sub(subs, "system", "Manage contain", S.cmd_system)
    ssubs = p.add_subparsers(dest="system_command", metavar="COMMAND", parser_class=_Parser)
    q = ssubs.add_parser("df", help="Show disk usage")
    q.add_argument("--format", help="Format output using a custom template")
    q.add_argument("-v", "--verbose", action="store_true", help="Show detailed information on space usage")
    q = ssubs.add_parser("prune", help="Remove unused data")
    q.add_argument("-a", "--all", action="store_true", help="Remove all unused images not just dangling ones")
    q.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    q.add_argument("--volumes", action="store_true", help="Prune volumes")
    q = ssubs.add_parser("info", help="Display system-wide information")
    q.add_argument("-f", "--format", help="Format output using a custom template")

    p = _sub(subs, "completion", "Print a shell completion script (bash or zsh)", S.cmd_completion)
    p.add_argument("shell", choices=("bash", "zsh"))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 125)
        return code
    if args.version:
        print(f"contain version {contain.__version__}")
        return 0
    if not args.command_name:
        parser.print_help()
        return 0
    for sub in ("network_command", "volume_command", "system_command"):
        if hasattr(args, sub) and getattr(args, sub) is None:
            parser.parse_args([args.command_name, "--help"])
    ctx = Context(args.root)
    runtime = args.command_name in _RUNTIME_COMMANDS
    try:
        code = args.func(ctx, args)
    except CLIError as exc:
        text = str(exc)
        if text:
            ctx.error(text if text.startswith(("Error", "template", "the input", "You cannot", "cowardly",
                                                "requested", "invalid", '"contain')) else f"Error: {text}")
        return exc.code
    except StatusExit as exc:
        return exc.code
    except contain.ContainError as exc:
        if args.debug:
            raise
        ctx.error(f"Error: {message(exc)}")
        return 125 if runtime else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    sys.stdout.flush()
    return int(code or 0)


def run() -> None:
    """Entry point with the process exit."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    sys.exit(code)


if __name__ == "__main__":
    run()
