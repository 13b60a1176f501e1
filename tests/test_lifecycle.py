"""Docker-level lifecycle: detached containers outliving their caller, pause,
rename, attach, tty, restart policies, log rotation and large logs."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest
from conftest import host_leaks

from contain import Conflict, Container, InvalidArgument
from contain._root import wait_for_discards


def test_detached_container_outlives_its_caller(croot, busybox):
    code = (
        "import contain; c = contain.Container.run(%r, ['sh', '-c', 'echo started; sleep 60'],"
        " root=%r, name='outlives'); print(c.id)" % (busybox.id, croot)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    c = Container.get("outlives", root=croot)
    try:
        assert c.id == cid and c.status == "running"
        deadline = time.monotonic() + 5
        while b"started" not in c.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.logs() == b"started\n"
        assert c.exec_run(["echo", "hi"]).output == b"hi\n"
        code, out = c.exec_run(["sh", "-c", "echo no; exit 3"])  # a pair, as docker-py's namedtuple
        assert (code, out) == (3, b"no\n")
        c.stop(timeout=0.5)
        assert c.exit_code == 137
    finally:
        c.remove(force=True)


def test_pause_and_unpause(run):
    c = run(["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tick; sleep 0.05; done"])
    time.sleep(0.3)
    c.pause()
    assert c.status == "paused" and c.status_text().endswith("(Paused)")
    with pytest.raises(Conflict):
        c.pause()
    time.sleep(0.2)
    upper = os.path.join(c._dir, "upper", "tick")
    before = open(upper).read()
    time.sleep(0.3)
    assert open(upper).read() == before  # frozen: no tick written
    c.unpause()
    assert c.status == "running"
    time.sleep(0.3)
    assert open(upper).read() != before


def test_kill_while_paused(run):
    c = run(["sleep", "60"])
    c.pause()
    c.kill()
    assert c.wait(timeout=30) == 137


def test_rename(run, croot):
    c = run(["sleep", "60"], name="before-rename")
    c.rename("after-rename")
    assert c.name == "after-rename"
    assert Container.get("after-rename", root=croot) == c
    with pytest.raises(Exception):
        Container.get("before-rename", root=croot)
    other = run(["sleep", "60"], name="taken-name")
    with pytest.raises(Conflict):
        c.rename("taken-name")
    with pytest.raises(InvalidArgument):
        c.rename("bad/name")
    assert other.name == "taken-name"


def test_attach_stdin_stream(run):
    c = run(["sh", "-c", "read line; echo got:$line; cat"], stdin_open=True)
    with c.attach() as att:
        att.send(b"hello\nmore data\n")
        att.close_stdin()
        out = b"".join(data for stream, data in att)
        assert att.exit_code == 0
    assert out == b"got:hello\nmore data\n"
    assert c.wait(timeout=10) == 0
    assert c.logs() == b"got:hello\nmore data\n"


def test_the_attach_socket_is_made_on_request(run):
    import signal as _signal

    c = run(["sh", "-c", "read line; echo got:$line"], stdin_open=True)
    sock = os.path.join(c._dir, "attach.sock")
    assert not os.path.exists(sock)  # nobody asked yet
    monitor = c.attrs["_contain"]["monitor_pid"]
    os.kill(monitor, _signal.SIGUSR1)  # a stray request costs only the socket
    deadline = time.monotonic() + 5
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert os.path.exists(sock) and c.status == "running"
    with c.attach() as att:
        att.send(b"hi\n")
        out = b"".join(data for stream, data in att)
    assert out == b"got:hi\n" and c.wait(timeout=10) == 0
    assert not os.path.exists(sock)  # the monitor took it away


def test_the_container_starts_with_no_signal_blocked(run):
    import signal as _signal

    old = _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGUSR2, _signal.SIGTERM})
    try:
        c = run(["sh", "-c", "grep SigBlk /proc/self/status"])
        sleeper = run(["sleep", "30"])
        executed = sleeper.exec_run(["sh", "-c", "grep SigBlk /proc/self/status"]).output
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old)
    assert c.wait(timeout=30) == 0
    assert c.logs().split() == [b"SigBlk:", b"0000000000000000"]
    assert executed.split() == [b"SigBlk:", b"0000000000000000"]


def test_tty_container(run):
    c = run(["sh", "-c", "tty; stty size"], tty=True)
    assert c.wait(timeout=30) == 0
    out = c.logs().decode().replace("\r", "").split("\n")
    assert out[0].startswith("/dev/pts/")
    c2 = run(["sh"], tty=True, stdin_open=True)
    with c2.attach() as att:
        att.resize(33, 101)
        att.send(b"stty size; exit 4\n")
        out = b"".join(data for _, data in att)
    assert b"33 101" in out
    assert c2.wait(timeout=10) == 4


def test_exec_with_tty(run):
    c = run(["sleep", "60"])
    r = c.exec_run(["sh", "-c", "tty"], tty=True)
    assert r.exit_code == 0 and r.output.strip().startswith(b"/dev/pts/")


def test_restart_policy_on_failure(run):
    c = run(["sh", "-c", "echo run; exit 3"], restart_policy={"Name": "on-failure", "MaximumRetryCount": 2})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = c.inspect()
        if info["RestartCount"] == 2 and not info["State"]["Running"] and not c._monitor_running():
            break
        time.sleep(0.05)
    assert c.inspect()["RestartCount"] == 2
    assert c.logs() == b"run\nrun\nrun\n"
    assert c.exit_code == 3


def test_restart_policy_always_and_stop(run):
    c = run(["sh", "-c", "echo up; sleep 0.2"], restart_policy="always")
    deadline = time.monotonic() + 20
    while c.inspect()["RestartCount"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.inspect()["RestartCount"] >= 2
    c.stop(timeout=1)
    time.sleep(1.0)
    assert c.status == "exited"  # a stopped container is not brought back
    with pytest.raises(InvalidArgument):
        run(["true"], restart_policy="sometimes")


def test_log_rotation_compresses_old_files(run):
    c = run(["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done"],
            log_config={"max-size": "16k", "max-file": "3"})
    assert c.wait(timeout=60) == 0
    lines = c.logs().decode().split()
    names = sorted(os.listdir(c._dir))
    assert "container.log.1.zst" in names and "container.log.2.zst" in names
    assert not any(n.startswith("container.log.3") for n in names)
    # Only what fits in three files is kept, in order, ending with the last line.
    assert lines[-1] == "line-2999"
    numbers = [int(x.split("-")[1]) for x in lines]
    assert numbers == list(range(numbers[0], 3000))
    assert os.path.getsize(os.path.join(c._dir, "container.log")) <= 16 * 1024


def test_large_output_without_loss(run):
    size = 100 * 1000 * 1000
    c = run(["sh", "-c", f"yes 012345678901234567890123456789012345678 | head -c {size}"])
    assert c.wait(timeout=300) == 0
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = 0
    count = 0
    for line in c.logs(stream=True):
        total += len(line)
        count += 1
    assert total == size and count == size // 40
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mib < 64, f"reading the logs grew the process by {grown_mib:.0f} MiB"


def test_wait_conditions(run, croot, busybox):
    c = Container.create(busybox, ["sh", "-c", "sleep 0.2; exit 9"], root=croot)
    try:
        with pytest.raises(TimeoutError):
            c.wait(timeout=0.2, condition="next-exit")
        c.start()
        assert c.wait(timeout=30, condition="next-exit") == 9
    finally:
        c.remove(force=True)
    c2 = run(["true"], auto_remove=True)
    assert c2.wait(timeout=30, condition="removed") == 0


def test_diff_top_stats(run):
    c = run(["sh", "-c", "echo x > /new; rm /bin/vi; sleep 30"])
    deadline = time.monotonic() + 5
    while not os.path.exists(os.path.join(c._dir, "upper", "new")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)
    changes = {d["Path"]: d["Kind"] for d in c.diff()}
    assert changes["/new"] == 1 and changes["/bin/vi"] == 2 and changes["/bin"] == 0
    top = c.top()
    assert top["Titles"][1] == "PID" and any("sleep 30" in p[-1] for p in top["Processes"])
    s = c.stats()
    assert s["pids_stats"]["current"] >= 1 and s["memory_stats"]["usage"] > 0
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] > 0


def test_archive_copy_resolves_symlinks_inside(run, tmp_path):
    import io
    import tarfile

    c = run(["sh", "-c", "mkdir -p /d; ln -s /etc /d/evil; ln -s ../../../../../etc/passwd /d/up; sleep 30"])
    time.sleep(0.3)
    data, info = c.get_archive("/d/up")
    assert info["name"] == "up"
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert names == ["up"]  # the link itself, not the host's /etc/passwd
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("planted.txt")
        ti.size = 5
        t.addfile(ti, io.BytesIO(b"owned"))
    c.put_archive("/d/evil", buf.getvalue())
    # The container's /etc got it; the host's did not.
    assert not os.path.exists("/etc/planted.txt")
    assert c.exec_run(["cat", "/etc/planted.txt"]).output == b"owned"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as t:
        ti = tarfile.TarInfo("../../escape.txt")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(InvalidArgument):
        c.put_archive("/tmp", evil.getvalue())
    through_link = io.BytesIO()
    with tarfile.open(fileobj=through_link, mode="w") as t:
        ti = tarfile.TarInfo("evil/x.txt")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    with pytest.raises(InvalidArgument):
        c.put_archive("/d", through_link.getvalue())
    c.kill()
    c.wait(timeout=30)
    # Stopped: the layers are mounted for the moment, and unmounted after.
    data, info = c.get_archive("/etc/planted.txt")
    assert info["size"] == 5
    assert len(c.export()) > 1_000_000
    with open("/proc/self/mountinfo") as f:
        assert c.id not in f.read()


def test_twenty_containers_at_once(run):
    cs = [run(["sh", "-c", f"echo {i}; sleep 0.5"]) for i in range(20)]
    assert [c.wait(timeout=60) for c in cs] == [0] * 20
    assert [c.logs() for c in cs] == [f"{i}\n".encode() for i in range(20)]


def test_exec_leaves_no_fd_or_process(run):
    c = run(["sleep", "60"])
    # The background deleter holds directory fds while it works, and the
    # preparer's thread mounts the next root: let them finish.
    wait_for_discards(10)
    assert c._root.preparer is None or c._root.preparer.settle()
    before = set(os.listdir("/proc/self/fd"))
    for _ in range(5):
        assert c.exec_run(["true"]).exit_code == 0
    wait_for_discards(10)
    assert set(os.listdir("/proc/self/fd")) == before
    assert len(c.top()["Processes"]) == 1


def test_commit_carries_changes_and_deletions(run, croot):
    c = run(["sh", "-c", "echo data > /made; rm /bin/vi; mkdir -p /opq; touch /opq/a"])
    assert c.wait(timeout=30) == 0
    img = c.commit("committed/test", "v1", changes=['CMD ["cat", "/made"]', "ENV COMMITTED=1"],
                   message="from a test", author="tester")
    try:
        assert img.tags == ["committed/test:v1"]
        assert img.config.cmd == ["cat", "/made"] and "COMMITTED=1" in img.config.env
        assert len(img.layers) == 2
        c2 = run(None, image=img)
        assert c2.wait(timeout=30) == 0 and c2.logs() == b"data\n"
        c3 = run(["sh", "-c", "ls /bin/vi; echo $COMMITTED"], image=img)
        assert c3.wait(timeout=30) == 0
        assert b"No such file" in c3.logs(stdout=False)
        assert c3.logs(stderr=False) == b"1\n"
    finally:
        for other in Container.list(all=True, root=croot):
            if other.inspect()["Image"] == img.id:
                other.remove(force=True)
        img.remove(force=True)


def test_exec_detached_and_streamed(run):
    c = run(["sleep", "60"])
    r = c.exec_run(["sh", "-c", "sleep 0.3; echo late > /from-detached"], detach=True)
    assert r.exit_code is None and r.output is None
    deadline = time.monotonic() + 10
    while c.exec_run(["cat", "/from-detached"]).output != b"late\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.exec_run(["cat", "/from-detached"]).output == b"late\n"
    chunks = list(c.exec_run(["sh", "-c", "echo one; sleep 0.2; echo two"], stream=True).output)
    assert b"".join(chunks) == b"one\ntwo\n"


def test_exec_into_a_container_started_by_another_process(croot, busybox):
    code = ("import contain; c = contain.Container.run(%r, ['sleep', '60'], root=%r, name='exec-other');"
            " print(c.id)" % (busybox.id, croot))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    c = Container.get("exec-other", root=croot)
    try:
        r = c.exec_run(["sh", "-c", "echo $$; hostname"], environment={"X": "1"})
        assert r.exit_code == 0 and r.output.split()[1] == c.id[:12].encode()
    finally:
        c.remove(force=True)


def test_init_forwards_signals_and_reaps(run):
    c = run(["sleep", "60"], init=True)
    time.sleep(0.3)
    procs = c.exec_run(["ps", "-o", "pid,args"]).output.decode().splitlines()
    assert procs[1].split(None, 1) == ["1", "/sbin/docker-init -- sleep 60"]
    assert c.inspect()["HostConfig"]["Init"] is True
    t0 = time.monotonic()
    c.stop(timeout=10)
    # The TERM reached sleep (pid 1 alone would have ignored it): no 10 s wait, no SIGKILL.
    assert c.exit_code == 143 and time.monotonic() - t0 < 5
    z = run(["sh", "-c", "sleep 0.1 & exec sleep 1"], init=True)  # an orphan for tini to reap
    assert z.wait(timeout=30) == 0


def _spares(root: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(root, "containers")) if n.startswith(".spare-")]


def _python(code: str) -> str:
    """Run `code` in another Python process; its output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def fresh(tmp_path, busybox_rootfs):
    """A state root of the test's own with the busybox image; what the test
    left (containers, networks) goes with it."""
    from contain import Image, Network

    root = str(tmp_path / "root")
    yield root, Image.from_directory(busybox_rootfs, tag="recycle/busybox", root=root)
    for c in Container.list(all=True, root=root):
        c.remove(force=True)
    for net in Network.list(root=root):
        net.remove(force=True)
    wait_for_discards()


def test_a_removed_containers_directory_is_reused_and_holds_nothing_of_it(fresh, monkeypatch):
    monkeypatch.setenv("CONTAIN_PREPARED_ROOTS", "0")  # no thread taking the spare first
    root, image = fresh
    first = Container.run(image, ["sh", "-c", "echo first-output"], root=root)
    assert first.wait(timeout=30) == 0
    kept_upper = os.stat(os.path.join(first._dir, "upper")).st_ino
    first.remove()
    spares = _spares(root)
    assert len(spares) == 1, spares

    second = Container.create(image, ["sh", "-c", "ls /; cat /etc/hostname"], root=root)
    try:
        # The spare became this container's directory: same inodes, nothing
        # left of the first container (record, exit, logs).
        assert os.stat(os.path.join(second._dir, "upper")).st_ino == kept_upper
        assert not _spares(root)
        assert second.status == "created" and second.exit_code in (None, 0)
        assert second.logs() == b""
        assert not os.path.exists(os.path.join(second._dir, "exit"))
        second.start()
        assert second.wait(timeout=30) == 0
        out = second.logs().decode()
        assert "first-output" not in out and second.id[:12] in out
    finally:
        second.remove(force=True)


def test_a_directory_with_a_changed_layer_is_not_reused(fresh, monkeypatch):
    monkeypatch.setenv("CONTAIN_PREPARED_ROOTS", "0")
    root, image = fresh
    for cmd in (["sh", "-c", "echo secret > /left-behind"], ["chmod", "700", "/"],
                ["rm", "/bin/true"]):
        c = Container.run(image, cmd, root=root)
        assert c.wait(timeout=30) == 0, c.logs()
        c.remove()
        assert not _spares(root), cmd
    c = Container.run(image, ["sh", "-c", "ls -ld / /left-behind /bin/true 2>&1; true"], root=root)
    try:
        assert c.wait(timeout=30) == 0
        out = c.logs().decode()
        assert "left-behind: No such file" in out and "/bin/true" in out and "drwxr-xr-x" in out, out
    finally:
        c.remove(force=True)
    wait_for_discards()


def test_spares_are_bounded_and_found_by_another_process(fresh, monkeypatch):
    from contain._root import Root

    monkeypatch.setenv("CONTAIN_PREPARED_ROOTS", "0")
    root, image = fresh
    made = [Container.create(image, ["true"], root=root) for _ in range(Root.SPARES + 3)]
    for c in made:
        c.remove()
    spares = _spares(root)
    assert len(spares) == Root.SPARES
    out = _python("import contain; c = contain.Container.run(%r, ['true'], root=%r); "
                  "print(c.wait(timeout=30)); c.remove()" % (image.id, root))
    assert out.strip() == "0"
    wait_for_discards()
    assert len(_spares(root)) == Root.SPARES


def test_roots_mounted_ahead_are_used_and_refused_when_changed(fresh):
    root, image = fresh
    from contain._root import get_root

    prep = get_root(root).preparer
    for _ in range(4):  # from the second container on, the next root is mounted ahead
        c = Container.run(image, ["sh", "-c", "echo x > /written; cat /written"], root=root)
        assert c.wait(timeout=30) == 0 and c.logs() == b"x\n"
        c.remove()
    deadline = time.monotonic() + 10
    while not prep._ready and time.monotonic() < deadline:
        time.sleep(0.01)
    used = prep.used
    assert used >= 1, "no container started on a root mounted ahead"

    # Another process writes into a created container's layer (docker cp
    # before start): the root mounted ahead no longer fits and is not used.
    c = Container.create(image, ["sh", "-c", "cat /copied/in; echo y > /copied/more; ls /copied"], root=root)
    try:
        _python("import contain, io, tarfile; c = contain.Container.get(%r, root=%r); b = io.BytesIO(); "
                "t = tarfile.open(fileobj=b, mode='w'); i = tarfile.TarInfo('copied/in'); i.size = 6; "
                "t.addfile(i, io.BytesIO(b'hello\\n')); t.close(); c.put_archive('/', b.getvalue())"
                % (c.id, root))
        refused = prep.refused
        c.start()
        assert c.wait(timeout=30) == 0, c.logs()
        assert c.logs() == b"hello\nin\nmore\n"
        assert prep.refused == refused + 1 and prep.used == used
    finally:
        c.remove(force=True)
    wait_for_discards()


def test_roots_left_unchanged_are_kept_mounted_for_the_next(fresh, monkeypatch, tmp_path):
    """A container that wrote nothing hands its mounted root on; one that
    changed anything (a file written, one deleted) or that may remount its
    root (privileged) does not, and the next container sees none of it."""
    # Room for every root handed back, however slow the machine: with the
    # default 2, a start slower than KEPT_GRACE lets the thread fill up first.
    monkeypatch.setenv("CONTAIN_PREPARED_ROOTS", "8")
    root, image = fresh
    from contain._root import get_root

    prep = get_root(root).preparer

    def run(cmd, **kw):
        c = Container.run(image, cmd, root=root, **kw)
        assert c.wait(timeout=30) == 0, c.logs()
        out = c.logs()
        c.remove()
        return out

    for _ in range(6):
        run(["true"])
    if not prep._can_clone:
        pytest.skip("this kernel does not clone a detached mount (open_tree of an fsmount fd)")
    assert prep.reused >= 1
    # Written, then deleted: nothing is left in the layer, so it is handed on.
    reused = prep.reused
    run(["sh", "-c", "echo x > /gone; rm /gone"])
    assert prep.reused == reused + 1
    for cmd in (["sh", "-c", "echo secret > /left"], ["rm", "/etc/passwd"]):
        reused = prep.reused
        run(cmd)
        assert prep.reused == reused, cmd  # changed: not handed on
    out = run(["sh", "-c", "ls /left 2>&1; cat /etc/passwd | head -1"])
    assert b"No such file" in out and b"root:" in out, out
    # Kept while it runs; never for a container that may remount its root,
    # or that could pass a descriptor of it out through a bind mount.
    c = Container.run(image, ["sleep", "30"], root=root)
    try:
        p = Container.run(image, ["sleep", "30"], root=root, cap_add=["SYS_ADMIN"])
        b = Container.run(image, ["sleep", "30"], root=root, volumes={str(tmp_path): {"bind": "/v"}})
        try:
            assert c.id in prep._kept and p.id not in prep._kept and b.id not in prep._kept
        finally:
            p.remove(force=True)
            b.remove(force=True)
    finally:
        c.remove(force=True)
    # A restart mounts its root anew: the kept mount of the last run goes first.
    c = Container.run(image, ["sh", "-c", "echo run"], root=root)
    try:
        assert c.wait(timeout=30) == 0
        c.start()
        assert c.wait(timeout=30) == 0 and c.logs() == b"run\nrun\n"
    finally:
        c.remove()
    assert host_leaks(c.id) == []


def test_a_name_is_a_link_to_the_containers_id_file(fresh, monkeypatch):
    monkeypatch.setenv("CONTAIN_PREPARED_ROOTS", "0")
    root, image = fresh
    names = os.path.join(root, "names")
    c = Container.create(image, ["true"], root=root, name="alpha")
    assert os.stat(os.path.join(names, "alpha")).st_ino == os.stat(os.path.join(c._dir, "id")).st_ino
    assert open(os.path.join(names, "alpha")).read() == c.id
    with pytest.raises(Conflict, match="alpha"):
        Container.create(image, ["true"], root=root, name="alpha")
    assert [x.id for x in Container.list(all=True, root=root)] == [c.id]
    c.rename("beta")
    assert sorted(os.listdir(names)) == ["beta"] and Container.get("beta", root=root).id == c.id
    c.remove()
    assert os.listdir(names) == []
    spare = _spares(root)
    assert len(spare) == 1
    d = Container.create(image, ["true"], root=root, name="alpha")  # the spare, with a new id
    try:
        assert open(os.path.join(names, "alpha")).read() == d.id
        assert Container.get("alpha", root=root).id == d.id
    finally:
        d.remove()
