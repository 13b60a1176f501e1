"""The `contain` command driven as a user drives it: a subprocess per command,
`-it` through a real pty."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

import contain

HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def cli(croot, busybox):
    """Run `contain --root croot ARGS...`; every container is removed afterwards."""

    def _cli(*args, input=None, timeout=60, check=None):
        proc = subprocess.run([sys.executable, "-m", "contain", "--root", croot, *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check is not None:
            assert proc.returncode == check, (args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    yield _cli
    for c in contain.Container.list(all=True, root=croot):
        c.remove(force=True)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


# ------------------------------------------------------------------ basics

def test_version_and_help(cli):
    out = cli("version", check=0).stdout
    assert contain.__version__ in out
    assert cli("--version", check=0).stdout.strip() == f"contain version {contain.__version__}"
    assert "run" in cli("--help", check=0).stdout
    bad = cli("run", "--no-such-flag", "busybox:test")
    assert bad.returncode == 125 and "unrecognized arguments" in bad.stderr


def test_module_entry_point_without_root_flag_uses_env(croot, busybox):
    env = dict(os.environ, CONTAIN_ROOT=croot)
    proc = subprocess.run([sys.executable, "-m", "contain", "images", "-q"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert busybox.short_id in proc.stdout.split()


def test_info_counts_containers(cli):
    out = cli("info", check=0).stdout
    assert re.search(r"^ Containers: \d+$", out, re.M)
    assert re.search(r"^ Images: [1-9]\d*$", out, re.M)
    assert "Cgroup Version" in out
    assert cli("info", "--format", "{{.Images}}", check=0).stdout.strip().isdigit()


# ------------------------------------------------------------------ images

def test_images_table_layout(cli, busybox):
    out = cli("images", check=0).stdout
    lines = out.splitlines()
    header = lines[0]
    assert re.match(r"^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE$", header)
    # Columns line up like Go's tabwriter: each starts where its header does.
    row = next(line for line in lines[1:] if line.startswith("busybox "))
    for title, value in (("TAG", "test"), ("IMAGE ID", busybox.short_id)):
        assert row[header.index(title):].startswith(value)
    assert re.search(r"\d+(\.\d+)?(B|kB|MB)$", row), row
    assert "ago" in row


def test_images_quiet_and_format(cli, busybox):
    assert busybox.short_id in cli("images", "-q", check=0).stdout.split()
    out = cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", check=0).stdout
    assert f"busybox:test {busybox.short_id}" in out.splitlines()
    rows = [json.loads(line) for line in _lines(cli("images", "--format", "{{json .}}", check=0).stdout)]
    assert any(r["Repository"] == "busybox" and r["Tag"] == "test" for r in rows)
    table = cli("images", "--format", "table {{.Repository}}\t{{.Tag}}", check=0).stdout.splitlines()
    assert re.match(r"^REPOSITORY +TAG$", table[0])
    full = cli("images", "--no-trunc", "-q", check=0).stdout.split()
    assert busybox.id in full


def test_tag_rmi_and_history(cli, busybox):
    cli("tag", "busybox:test", "cli-tagged:v1", check=0)
    assert "cli-tagged:v1" in cli("images", "--format", "{{.Repository}}:{{.Tag}}", check=0).stdout
    assert cli("inspect", "-f", "{{.Id}}", "cli-tagged:v1", check=0).stdout.strip() == busybox.id
    hist = cli("history", "busybox:test", check=0).stdout.splitlines()
    assert re.match(r"^IMAGE +CREATED +CREATED BY +SIZE +COMMENT$", hist[0])
    missing = cli("rmi", "no-such-image:nope")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: ")
    # Removing one of two tags must only untag (Docker's rmi), never delete the image.
    out = cli("rmi", "cli-tagged:v1")
    assert busybox.id in cli("images", "-q", "--no-trunc", check=0).stdout.split()
    assert "busybox:test" in cli("images", "--format", "{{.Repository}}:{{.Tag}}", check=0).stdout
    if out.returncode == 0:
        assert out.stdout == "Untagged: cli-tagged:v1\n"
        assert "cli-tagged" not in cli("images", check=0).stdout
    else:  # the library cannot untag yet: refused, nothing lost
        assert out.returncode == 1 and "not available" in out.stderr


# ---------------------------------------------------------------- run + codes

def test_run_prints_output_and_returns_exit_codes(cli):
    out = cli("run", "--rm", "busybox:test", "sh", "-c", "echo out; echo err >&2", check=0)
    assert out.stdout == "out\n" and out.stderr == "err\n"
    assert cli("run", "--rm", "busybox:test", "false").returncode == 1
    assert cli("run", "--rm", "busybox:test", "sh", "-c", "exit 42").returncode == 42
    assert cli("run", "--rm", "busybox:test", "no-such-command").returncode == 127
    assert cli("run", "--rm", "busybox:test", "/etc/passwd").returncode == 126
    missing = cli("run", "--rm", "--pull", "never", "no-such-image:1", "true")
    assert missing.returncode == 125 and "No such image" in missing.stderr
    assert cli("run", "--rm", "--init", "busybox:test", "true").returncode in (0, 125)
    assert cli("run", "--cpus", "many", "busybox:test", "true").returncode == 125


def test_run_killed_container_exits_137(cli):
    cid = cli("run", "-d", "busybox:test", "sleep", "60", check=0).stdout.strip()
    cli("kill", cid, check=0)
    assert cli("wait", cid, check=0).stdout.strip() == "137"
    assert re.match(r"Exited \(137\) ", cli("ps", "-a", "--format", "{{.Status}}", "--filter", f"id={cid}", check=0).stdout)


def test_run_options_reach_the_container(cli, tmp_path):
    (tmp_path / "env").write_text("# comment\nFROM_FILE=yes\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("from the host\n")
    out = cli("run", "--rm", "-e", "A=1", "--env-file", str(tmp_path / "env"), "-w", "/tmp",
              "-u", "1234:5678", "-h", "cli-host", "-v", f"{tmp_path / 'data'}:/data:ro",
              "--tmpfs", "/scratch", "busybox:test", "sh", "-c",
              'echo $A $FROM_FILE; pwd; id -u; id -g; hostname; cat /data/hello.txt; '
              'touch /data/x 2>/dev/null || echo ro; touch /scratch/ok && echo tmpfs', check=0).stdout
    assert out.splitlines() == ["1 yes", "/tmp", "1234", "5678", "cli-host", "from the host", "ro", "tmpfs"]
    ro = cli("run", "--rm", "--read-only", "busybox:test", "sh", "-c", "touch /x 2>/dev/null || echo refused", check=0)
    assert ro.stdout.strip() == "refused"
    ep = cli("run", "--rm", "--entrypoint", "echo", "busybox:test", "via", "entrypoint", check=0)
    assert ep.stdout.strip() == "via entrypoint"
    mem = cli("run", "--rm", "--memory", "64m", "--pids-limit", "50", "busybox:test", "true")
    assert mem.returncode == 0, mem.stderr


def test_run_rm_leaves_nothing(cli, croot):
    before = {c.id for c in contain.Container.list(all=True, root=croot)}
    cli("run", "--rm", "--name", "cli-rm", "busybox:test", "echo", "bye", check=0)
    after = {c.id for c in contain.Container.list(all=True, root=croot)}
    assert after == before
    assert cli("ps", "-a", "-q", "--filter", "name=cli-rm", check=0).stdout == ""
    # and the name is free again
    cli("run", "--rm", "--name", "cli-rm", "busybox:test", "true", check=0)
    cid = cli("run", "-d", "--rm", "busybox:test", "true", check=0).stdout.strip()
    deadline = time.time() + 10
    while time.time() < deadline and cid in cli("ps", "-a", "-q", "--no-trunc").stdout:
        time.sleep(0.1)
    assert cid not in cli("ps", "-a", "-q", "--no-trunc").stdout


def test_run_interactive_streams_stdin(cli):
    out = cli("run", "-i", "--rm", "busybox:test", "sh", "-c", "echo start; cat; echo end",
              input="line one\nline two\n", check=0)
    assert out.stdout == "start\nline one\nline two\nend\n"
    wc = cli("run", "-i", "--rm", "busybox:test", "wc", "-l", input="a\nb\nc\n", check=0)
    assert wc.stdout.strip() == "3"


def test_run_it_needs_a_terminal(cli):
    proc = cli("run", "-it", "--rm", "busybox:test", "sh", input="")
    assert proc.returncode == 1 and "not a TTY" in proc.stderr


# -------------------------------------------------------------- pty: run -it

def _pty_spawn(croot, *args):
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs at once
        os.execv(sys.executable, [sys.executable, "-m", "contain", "--root", croot, *args])
    _set_size(fd, 24, 80)
    return pid, fd


def _set_size(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd, token: bytes, timeout: float = 10.0) -> bytes:
    buf = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        buf += data
        if token in buf:
            return buf
    return buf


def _wait_attached(croot, name: str) -> None:
    """Until the command has attached: typing earlier is lost when it puts the
    terminal into raw mode (which flushes pending input, as docker's does)."""
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if contain.Container.get(name, root=croot).status == "running":
                break
        except contain.NotFound:
            pass
        time.sleep(0.05)
    time.sleep(0.5)


def _wait_exit(pid: int, timeout: float = 15.0) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the contain command did not exit")


def test_run_it_through_a_pty_then_detach(cli, croot):
    pid, fd = _pty_spawn(croot, "run", "-it", "--name", "cli-tty", "busybox:test", "sh")
    try:
        _wait_attached(croot, "cli-tty")
        os.write(fd, b"echo tty-$((6*7)); tty\r")
        out = _read_until(fd, b"/dev/pts/")
        assert b"tty-42" in out, out
        os.write(fd, b"stty size\r")
        assert b"24 80" in _read_until(fd, b"24 80", 5)
        _set_size(fd, 30, 100)  # the window size follows the terminal's
        time.sleep(0.3)
        os.write(fd, b"stty size\r")
        assert b"30 100" in _read_until(fd, b"30 100", 5)
        os.write(fd, b"\x10\x11")  # Ctrl-P Ctrl-Q
        assert _wait_exit(pid) == 0
    finally:
        os.close(fd)
    status = cli("inspect", "-f", "{{.State.Status}}", "cli-tty", check=0).stdout.strip()
    assert status == "running"
    assert cli("ps", "--format", "{{.Names}}", check=0).stdout.split() == ["cli-tty"]
    # exec into it, then attach from a new terminal and leave with exit
    assert cli("exec", "cli-tty", "echo", "still-here", check=0).stdout == "still-here\n"
    pid, fd = _pty_spawn(croot, "attach", "cli-tty")
    try:
        time.sleep(1)
        os.write(fd, b"exit 7\r")
        assert _wait_exit(pid) == 7
    finally:
        os.close(fd)
    assert cli("inspect", "-f", "{{.State.ExitCode}}", "cli-tty", check=0).stdout.strip() == "7"


def test_run_it_shows_the_prompt(croot, cli):
    """The shell's prompt has no newline; a terminal must still see it."""
    pid, fd = _pty_spawn(croot, "run", "-it", "--rm", "--name", "cli-prompt", "busybox:test", "sh")
    try:
        _wait_attached(croot, "cli-prompt")
        os.write(fd, b"echo ready\r")
        # The command's echo, its output, then the prompt: all may come in one read.
        seen = _read_until(fd, b"ready\r\n/ # ", 10)
        assert b"ready" in seen
        os.write(fd, b"exit 3\r")
        assert _wait_exit(pid) == 3
        assert b"# " in seen, f"no prompt after a command: {seen!r}"
    finally:
        os.close(fd)


def test_exec_it_through_a_pty(cli, croot):
    cli("run", "-d", "--name", "cli-exec-tty", "busybox:test", "sleep", "60", check=0)
    pid, fd = _pty_spawn(croot, "exec", "-it", "cli-exec-tty", "sh", "-c", "tty; read x; echo got-$x; exit 5")
    try:
        assert b"/dev/pts" in _read_until(fd, b"/dev/pts")
        os.write(fd, b"abc\r")
        assert b"got-abc" in _read_until(fd, b"got-abc")
        assert _wait_exit(pid) == 5
    finally:
        os.close(fd)


# -------------------------------------------------------------- detached life

def test_run_d_logs_ps_stop_start_restart_rm(cli):
    cid = cli("run", "-d", "--name", "cli-life", "-l", "tier=web", "busybox:test", "sh", "-c",
              "echo started; while true; do echo tick; sleep 0.2; done", check=0).stdout.strip()
    assert HEX64.match(cid)
    deadline = time.time() + 10
    while "started" not in cli("logs", "cli-life").stdout and time.time() < deadline:
        time.sleep(0.1)
    assert cli("logs", "--tail", "1", "cli-life", check=0).stdout in ("tick\n", "started\n")
    stamped = cli("logs", "-t", "cli-life", check=0).stdout.splitlines()[0]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z started$", stamped)
    assert cli("logs", "--since", "1h", "cli-life", check=0).stdout.startswith("started\n")

    table = cli("ps", check=0).stdout.splitlines()
    header = table[0]
    assert re.match(r"^CONTAINER ID +IMAGE +COMMAND +CREATED +STATUS +PORTS +NAMES$", header)
    row = next(line for line in table if line.endswith("cli-life"))
    assert row.startswith(cid[:12] + " ")
    assert row[header.index("IMAGE"):].startswith("busybox:test")
    assert row[header.index("COMMAND"):].startswith('"sh -c \'echo started…"')
    assert re.match(r"Up (Less than a second|\d+ seconds?)", row[header.index("STATUS"):])
    assert re.match(r"(Less than a second|\d+ seconds?) ago", row[header.index("CREATED"):])

    assert cli("ps", "-q", check=0).stdout.split() == [cid[:12]]
    assert cli("ps", "-q", "--no-trunc", check=0).stdout.split() == [cid]
    assert cli("ps", "--filter", "label=tier=web", "--format", "{{.Names}} {{.Label \"tier\"}}", check=0).stdout == "cli-life web\n"
    assert cli("ps", "--filter", "label=tier=db", "-q", check=0).stdout == ""
    assert cli("ps", "--filter", "status=running", "-q", check=0).stdout.split() == [cid[:12]]
    assert cli("ps", "--filter", "ancestor=busybox:test", "-q", check=0).stdout.split() == [cid[:12]]
    assert cli("ps", "--filter", "name=life", "-q", check=0).stdout.split() == [cid[:12]]

    rm = cli("rm", "cli-life")
    assert rm.returncode == 1 and rm.stderr.startswith("Error: ")
    assert cli("stop", "-t", "1", "cli-life", check=0).stdout == "cli-life\n"
    assert cli("ps", "-q", check=0).stdout == ""
    assert re.match(r"Exited \(\d+\) ", cli("ps", "-a", "--format", "{{.Status}}", check=0).stdout)
    assert cli("ps", "-l", "-q", check=0).stdout.split() == [cid[:12]]
    assert len(cli("ps", "-n", "1", "-q", check=0).stdout.split()) == 1
    cli("start", "cli-life", check=0)
    assert cli("inspect", "-f", "{{.State.Running}}", "cli-life", check=0).stdout == "true\n"
    cli("restart", "-t", "1", "cli-life", check=0)
    cli("pause", "cli-life", check=0)
    assert cli("inspect", "-f", "{{.State.Status}}", "cli-life", check=0).stdout == "paused\n"
    assert "(Paused)" in cli("ps", "--format", "{{.Status}}", check=0).stdout
    cli("unpause", "cli-life", check=0)
    cli("rename", "cli-life", "cli-life2", check=0)
    assert cli("rm", "-f", "cli-life2", check=0).stdout == "cli-life2\n"
    assert cli("ps", "-a", "-q", "--filter", f"id={cid}", check=0).stdout == ""


def test_logs_follow_ends_when_the_container_exits(cli):
    cli("run", "-d", "--name", "cli-follow", "busybox:test", "sh", "-c",
        "for i in 1 2 3; do echo line $i; sleep 0.2; done; echo oops >&2", check=0)
    started = time.time()
    out = cli("logs", "-f", "cli-follow", timeout=20, check=0)
    assert out.stdout == "line 1\nline 2\nline 3\n" and out.stderr == "oops\n"
    assert time.time() - started < 15


def test_start_attach_returns_the_exit_code(cli):
    cli("create", "--name", "cli-created", "busybox:test", "sh", "-c", "echo hi; exit 9", check=0)
    assert cli("ps", "-a", "--format", "{{.Status}}", "--filter", "name=cli-created", check=0).stdout == "Created\n"
    out = cli("start", "-a", "cli-created")
    assert out.returncode == 9 and out.stdout == "hi\n"


def test_exec_codes_env_workdir_user_and_stdin(cli):
    cli("run", "-d", "--name", "cli-exec", "busybox:test", "sleep", "60", check=0)
    assert cli("exec", "cli-exec", "sh", "-c", "exit 3").returncode == 3
    assert cli("exec", "cli-exec", "no-such-command").returncode == 127
    out = cli("exec", "-e", "X=1", "-w", "/etc", "-u", "99", "cli-exec", "sh", "-c", "echo $X $(pwd) $(id -u)", check=0)
    assert out.stdout == "1 /etc 99\n"
    assert cli("exec", "-i", "cli-exec", "cat", input="piped\n", check=0).stdout == "piped\n"
    cli("exec", "-d", "cli-exec", "sh", "-c", "echo detached > /tmp/d", check=0)
    deadline = time.time() + 5
    while time.time() < deadline:
        if cli("exec", "cli-exec", "cat", "/tmp/d").stdout == "detached\n":
            break
        time.sleep(0.1)
    assert cli("exec", "cli-exec", "cat", "/tmp/d").stdout == "detached\n"


def test_errors_are_worded_and_coded(cli):
    out = cli("stop", "no-such-container")
    assert out.returncode == 1 and out.stderr.strip() == "Error: No such container: no-such-container"
    out = cli("logs", "no-such-container")
    assert out.returncode == 1 and "No such container" in out.stderr
    out = cli("inspect", "no-such-thing")
    assert out.returncode == 1 and "Error: No such object: no-such-thing" in out.stderr
    assert json.loads(out.stdout) == []
    cid = cli("create", "busybox:test", "true", check=0).stdout.strip()
    out = cli("kill", cid)
    assert out.returncode == 1 and "is not running" in out.stderr


# ------------------------------------------------------------------ inspect

def test_inspect_templates(cli, busybox):
    cid = cli("run", "-d", "--name", "cli-insp", "-l", "k=v", "-e", "E=1", "busybox:test", "sleep", "60", check=0).stdout.strip()
    f = lambda t, *names: cli("inspect", "-f", t, *(names or ("cli-insp",)), check=0).stdout
    assert f("{{.Id}}") == cid + "\n"
    assert f("{{.State.Status}}") == "running\n"
    assert f("{{.Name}}") == "/cli-insp\n"
    assert f("{{.NetworkSettings.IPAddress}}") in ("\n",) or re.match(r"^\d+\.\d+\.\d+\.\d+\n$", f("{{.NetworkSettings.IPAddress}}"))
    cfg = json.loads(f("{{json .Config}}"))
    assert cfg["Labels"]["k"] == "v" and "E=1" in cfg["Env"]
    assert f('{{index .Config.Labels "k"}}') == "v\n"
    assert "E=1;" in f("{{range .Config.Env}}{{.}};{{end}}")
    assert f('{{if .State.Running}}up{{else}}down{{end}}') == "up\n"
    assert f("{{.State.Pid | printf \"%d\"}}").strip().isdigit()
    assert f("{{.Id}}", "cli-insp", "busybox:test").splitlines() == [cid, busybox.id]
    full = json.loads(cli("inspect", "cli-insp", check=0).stdout)
    assert full[0]["Id"] == cid and not any(k.startswith("_") for k in full[0])
    img = json.loads(cli("inspect", "--type", "image", "busybox:test", check=0).stdout)[0]
    assert img["Id"] == busybox.id and "busybox:test" in img["RepoTags"]
    bad = cli("inspect", "-f", "{{.Id", "cli-insp")
    assert bad.returncode == 64 and "template parsing error" in bad.stderr
    bad = cli("inspect", "-f", '{{template "x"}}', "cli-insp")
    assert bad.returncode == 64 and "not supported" in bad.stderr
    assert cli("inspect", "-f", "{{.NoSuchField}}", "cli-insp", check=0).stdout == "<no value>\n"


# ------------------------------------------------------------- completion

@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts(cli, shell):
    out = cli("completion", shell, check=0).stdout
    for command in ("run", "ps", "images", "network", "volume", "system"):
        assert command in out
    if shell == "bash":
        subprocess.run(["bash", "-n"], input=out, text=True, check=True)


def test_bash_completion_completes_names(cli, croot, tmp_path):
    cli("create", "--name", "cli-complete-me", "busybox:test", "true", check=0)
    script = cli("completion", "bash", check=0).stdout
    (tmp_path / "c.bash").write_text(script)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "contain").write_text(f"#!/bin/sh\nexec {sys.executable} -m contain \"$@\"\n")
    (shim / "contain").chmod(0o755)
    probe = (f'source {tmp_path / "c.bash"}; COMP_WORDS=(contain --root {croot} rm cli-comp); COMP_CWORD=4; '
             '_contain; echo "${COMPREPLY[@]}"; COMP_WORDS=(contain ru); COMP_CWORD=1; _contain; echo "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}")).stdout.splitlines()
    assert out == ["cli-complete-me", "run"]


# ----------------------------------------------------- APIs being added now

def _needs(obj, name):
    if not hasattr(obj, name):
        pytest.skip(f"contain has no {name} yet")


def test_commit_diff_cp(cli, tmp_path):
    _needs(contain.Container, "commit")
    cli("run", "--name", "cli-commit", "busybox:test", "sh", "-c", "echo made > /made.txt", check=0)
    if hasattr(contain.Container, "diff"):
        assert "A /made.txt" in cli("diff", "cli-commit", check=0).stdout.splitlines()
    image_id = cli("commit", "-m", "msg", "-a", "me", "-c", 'CMD ["cat", "/made.txt"]', "cli-commit", "cli-committed:1", check=0).stdout.strip()
    assert image_id.startswith("sha256:")
    assert cli("run", "--rm", "cli-committed:1", check=0).stdout == "made\n"
    if hasattr(contain.Container, "get_archive"):
        cli("cp", "cli-commit:/made.txt", str(tmp_path / "out.txt"), check=0)
        assert (tmp_path / "out.txt").read_text() == "made\n"
        (tmp_path / "in.txt").write_text("into\n")
        cli("cp", str(tmp_path / "in.txt"), "cli-commit:/tmp/", check=0)
        cli("start", "cli-commit", check=0)
    cli("rm", "-f", "cli-commit", check=0)
    cli("rmi", "cli-committed:1", check=0)


def test_save_and_load(cli, tmp_path, busybox):
    _needs(contain.Image, "load")
    import tarfile

    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "hello.txt").write_text("saved\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(rootfs / "hello.txt", arcname="hello.txt")
    image_id = cli("import", str(tmp_path / "rootfs.tar"), "cli-save:1", check=0).stdout.strip()
    assert image_id.startswith("sha256:")
    archive = tmp_path / "img.tar"
    cli("save", "-o", str(archive), "cli-save:1", check=0)
    assert archive.stat().st_size > 0
    cli("rmi", "cli-save:1", check=0)
    out = cli("load", "-i", str(archive), check=0).stdout
    assert "Loaded image: cli-save:1" in out
    cli("rmi", "cli-save:1", check=0)


def test_top_stats(cli):
    _needs(contain.Container, "top")
    cli("run", "-d", "--name", "cli-top", "busybox:test", "sleep", "60", check=0)
    top = cli("top", "cli-top", check=0).stdout
    assert "sleep" in top
    if hasattr(contain.Container, "stats"):
        stats = cli("stats", "--no-stream", "cli-top", check=0).stdout.splitlines()
        assert stats[0].startswith("CONTAINER ID")
        assert "cli-top" in stats[1]


def test_published_port_shows_in_ps_and_port(cli):
    if not contain.Container.create.__code__.co_varnames.__contains__("ports"):
        pytest.skip("no published ports yet")
    cli("run", "-d", "--name", "cli-port", "-p", "127.0.0.1::80", "busybox:test", "sleep", "60", check=0)
    ports = cli("ps", "--format", "{{.Ports}}", "--filter", "name=cli-port", check=0).stdout.strip()
    assert re.fullmatch(r"127\.0\.0\.1:\d+->80/tcp", ports), ports
    port = cli("port", "cli-port", check=0).stdout.strip()
    assert re.fullmatch(r"80/tcp -> 127\.0\.0\.1:\d+", port), port
    assert cli("port", "cli-port", "80").stdout.strip() == port.split(" -> ")[1]
    assert cli("port", "cli-port", "81").returncode == 1


def test_network_commands(cli, croot):
    _needs(contain, "Network")
    name = "cli-net"
    try:
        nid = cli("network", "create", name, check=0).stdout.strip()
        assert nid
        ls = cli("network", "ls", check=0).stdout.splitlines()
        assert re.match(r"^NETWORK ID +NAME +DRIVER +SCOPE$", ls[0])
        assert any(line.split()[1] == name for line in ls[1:])
        assert cli("network", "inspect", "-f", "{{.Name}}", name, check=0).stdout == f"{name}\n"
        cli("run", "-d", "--name", "cli-net-c", "--network", name, "busybox:test", "sleep", "60", check=0)
        assert name in cli("inspect", "-f", "{{json .NetworkSettings.Networks}}", "cli-net-c", check=0).stdout
        cli("rm", "-f", "cli-net-c", check=0)
    finally:
        cli("network", "rm", name)
    assert name not in cli("network", "ls", "--format", "{{.Name}}", check=0).stdout.split()


def test_volume_commands(cli):
    assert cli("volume", "create", "cli-vol", check=0).stdout.strip() == "cli-vol"
    assert "cli-vol" in cli("volume", "ls", check=0).stdout
    assert '"Name": "cli-vol"' in cli("volume", "inspect", "cli-vol", check=0).stdout
    cli("run", "--rm", "-v", "cli-vol:/data", "busybox:test", "sh", "-c", "echo kept > /data/f", check=0)
    assert cli("run", "--rm", "-v", "cli-vol:/data", "busybox:test", "cat", "/data/f", check=0).stdout == "kept\n"
    cli("run", "-d", "--name", "cli-vol-user", "-v", "cli-vol:/data", "busybox:test", "sleep", "60", check=0)
    refused = cli("volume", "rm", "cli-vol")
    assert refused.returncode != 0 and "in use" in refused.stderr
    cli("rm", "-f", "cli-vol-user", check=0)
    cli("volume", "rm", "cli-vol", check=0)
    assert "cli-vol" not in cli("volume", "ls", check=0).stdout


def test_run_init(cli):
    out = cli("run", "--rm", "--init", "--network", "none", "busybox:test", "sh", "-c",
              "tr '\\0' ' ' < /proc/1/cmdline", check=0).stdout
    assert out.startswith("/sbin/docker-init -- sh -c")
