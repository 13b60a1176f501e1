"""Real containers from a busybox image: isolation, limits, exit codes, cleanup."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time

import pytest

import contain
from contain import Conflict, Container, ContainerNotFound, RuntimeFailure

from conftest import host_leaks


def output(c: Container) -> str:
    assert c.wait(timeout=30) is not None
    return c.logs().decode()


def test_command_is_pid_1(run):
    c = run(["sh", "-c", "echo $$; ps -o pid,args"])
    assert c.wait(timeout=30) == 0
    lines = c.logs().decode().splitlines()
    assert lines[0] == "1"
    pids = [ln.split()[0] for ln in lines[2:]]
    # Only the container's own processes are visible in its /proc.
    assert pids == ["1", "2"] or pids == ["1"], lines


def test_proc_shows_only_container_processes(run):
    c = run(["sh", "-c", "ls /proc | grep -c '^[0-9]*$'"])
    c.wait(timeout=30)
    # sh itself and ls/grep: a handful, never the host's hundreds.
    assert int(c.logs().decode().strip()) <= 4


def test_hostname_is_isolated(run):
    host = os.uname().nodename
    c = run(["hostname"])
    assert output(c).strip() == c.id[:12] != host
    c2 = run(["hostname"], hostname="box1")
    assert output(c2).strip() == "box1"
    assert os.uname().nodename == host


def test_only_loopback_in_network_namespace(run):
    c = run(["sh", "-c", "ls /sys/class/net; cat /sys/class/net/lo/operstate; ip -o link"],
            network="none")
    out = output(c)
    assert out.split()[0] == "lo"
    assert "UP" in out or "unknown" in out
    assert "eth" not in out and "veth" not in out


def test_exit_codes(run):
    assert run(["true"]).wait(timeout=30) == 0
    assert run(["false"]).wait(timeout=30) == 1
    assert run(["sh", "-c", "exit 42"]).wait(timeout=30) == 42
    c = run(["nosuchcommand"])
    assert c.wait(timeout=30) == 127
    assert b"executable file not found" in c.logs()
    assert run(["/etc/passwd"]).wait(timeout=30) == 126
    c = run(["sleep", "60"])
    c.kill()
    assert c.wait(timeout=30) == 137


def test_stop_sends_sigterm_then_sigkill(run):
    # pid 1 ignores SIGTERM unless it handles it: stop must escalate.
    c = run(["sleep", "60"])
    t0 = time.monotonic()
    c.stop(timeout=1)
    assert c.exit_code == 137
    assert 0.9 < time.monotonic() - t0 < 10
    # A process that handles SIGTERM exits with its own code.
    c2 = run(["sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done"])
    time.sleep(0.3)
    c2.stop(timeout=10)
    assert c2.exit_code == 7


def test_kill_with_signal(run):
    # As pid 1, the command only sees signals it handles (as under Docker).
    c = run(["sh", "-c", "trap 'exit 5' USR1; while true; do sleep 0.1; done"])
    time.sleep(0.3)
    c.kill("SIGUSR1")
    assert c.wait(timeout=30) == 5
    c2 = run(["sleep", "60"])
    c2.kill("TERM")  # ignored by an init without a handler
    with pytest.raises(TimeoutError):
        c2.wait(timeout=0.3)
    c2.kill(9)
    assert c2.wait(timeout=30) == 137


def test_status_text_and_inspect(run):
    c = run(["sleep", "60"])
    assert c.status == "running"
    assert c.status_text().startswith("Up ")
    info = c.inspect()
    assert info["Id"] == c.id and info["State"]["Running"] is True and info["State"]["Pid"] > 0
    c.kill()
    c.wait(timeout=30)
    assert c.status == "exited"
    assert c.status_text().startswith("Exited (137) ")


def test_logs_streams_and_options(run):
    c = run(["sh", "-c", "echo out1; echo err1 >&2; echo out2"])
    c.wait(timeout=30)
    assert c.logs(stderr=False) == b"out1\nout2\n"
    assert c.logs(stdout=False) == b"err1\n"
    assert c.logs(tail=1, stderr=False) == b"out2\n"
    stamped = c.logs(timestamps=True, stdout=True, stderr=False).decode().splitlines()
    assert stamped[0].endswith(" out1") and stamped[0][:4].isdigit() and "T" in stamped[0]
    # Order across the two streams is not kept (two pipes), as under Docker.
    assert sorted(c.logs(stream=True)) == [b"err1\n", b"out1\n", b"out2\n"]


def test_follow_ends_when_container_exits(run):
    c = run(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"])
    got = list(c.logs(follow=True))
    assert got == [b"1\n", b"2\n", b"3\n"]


def test_environment_workdir_user(run):
    c = run(["sh", "-c", "echo $FOO $BAR; pwd; id -u; id -g; id -G"],
            environment={"FOO": "foo"}, env=None, working_dir="/tmp/made", user="user")
    lines = output(c).splitlines()
    assert lines[0] == "foo"
    assert lines[1] == "/tmp/made"
    assert lines[2:4] == ["1000", "1000"]
    assert "50" in lines[4].split()  # supplementary group from /etc/group
    c2 = run(["sh", "-c", "id -u; id -g"], user="65534:50")
    assert output(c2).split() == ["65534", "50"]
    c3 = run(["sh", "-c", 'echo "$HOME"'], user="user", env=["BAR=1"])
    assert output(c3).strip() == "/home/user"


def test_unknown_user_is_a_clear_error(croot, busybox):
    with pytest.raises(contain.InvalidArgument, match="unable to find user ghost"):
        Container.run(busybox, ["true"], user="ghost", root=croot).remove(force=True)
    assert not [c for c in Container.list(all=True, root=croot) if c.status == "created"]


def test_a_user_added_to_the_layer_before_start_is_found(croot, busybox):
    import io
    import tarfile

    run_as = lambda: Container.create(busybox, ["sh", "-c", "id -u; id -G"], user="newbie", root=croot)
    c = run_as()
    try:
        with pytest.raises(contain.InvalidArgument, match="unable to find user newbie"):
            c.start()  # the image's passwd (read once per process and image) has no newbie
    finally:
        c.remove(force=True)
    c = run_as()
    try:
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnewbie:x:4242:4242::/home/newbie:/bin/sh\n"
        group = b"root:x:0:\nclub:x:77:newbie\n"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            for name, data in (("etc/passwd", passwd), ("etc/group", group)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
        c.put_archive("/", buf.getvalue())
        c.start()
        assert c.wait(timeout=30) == 0
        assert c.logs().split() == [b"4242", b"4242", b"77"]
    finally:
        c.remove(force=True)


def test_writes_do_not_touch_the_image(run, busybox, croot):
    c = run(["sh", "-c", "echo changed > /etc/motd; rm /bin/vi; echo x > /newfile"])
    assert c.wait(timeout=30) == 0
    lowers = contain._root.get_root(croot).store.lowerdirs(busybox.id)
    assert all(not os.path.exists(os.path.join(d, "newfile")) for d in lowers)
    assert any(os.path.lexists(os.path.join(d, "bin/vi")) for d in lowers)
    c2 = run(["sh", "-c", "ls /newfile /etc/motd 2>&1; ls /bin/vi"])
    assert c2.wait(timeout=30) == 0
    assert "No such file" in c2.logs().decode()


def test_restart_keeps_writable_layer_and_appends_logs(run):
    c = run(["sh", "-c", "echo run >> /count; wc -l < /count"])
    assert c.wait(timeout=30) == 0
    c.start()
    assert c.wait(timeout=30) == 0
    assert c.logs().split() == [b"1", b"2"]


def test_bind_mounts_ro_and_rw(run, tmp_path):
    rw = tmp_path / "rw"
    ro = tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "data").write_text("hello")
    c = run(["sh", "-c", "echo written > /rw/new; cat /ro/data; echo; touch /ro/x && echo BAD"],
            volumes={str(rw): {"bind": "/rw", "mode": "rw"}, str(ro): {"bind": "/ro", "mode": "ro"}})
    c.wait(timeout=30)
    out = c.logs().decode()
    assert (rw / "new").read_text() == "written\n"
    assert "hello" in out and "BAD" not in out
    assert "Read-only file system" in out
    assert not (ro / "x").exists()
    c2 = run(["cat", "/v/data"], volumes=[f"{ro}:/v:ro"])
    assert output(c2) == "hello"


def test_read_only_root_and_tmpfs(run):
    c = run(["sh", "-c", "touch /x 2>&1; echo ok > /scratch/f && cat /scratch/f; mount | grep scratch"],
            read_only=True, tmpfs={"/scratch": "size=1m"})
    out = output(c)
    assert "Read-only file system" in out
    assert "ok" in out and "tmpfs on /scratch" in out


def test_failure_names_the_step(croot, busybox):
    with pytest.raises(RuntimeFailure) as info:
        Container.run(busybox, ["true"], read_only=True, working_dir="/does/not/exist", root=croot,
                      name="fails-at-chdir")
    assert info.value.step == "chdir to working directory"
    assert info.value.errno == errno.ENOENT
    assert "/does/not/exist" in str(info.value)
    with pytest.raises(ContainerNotFound):
        Container.get("fails-at-chdir", root=croot)
    with pytest.raises(RuntimeFailure) as info:
        Container.run(busybox, ["true"], tmpfs={"/t": "bogusoption=1"}, root=croot)
    assert info.value.step == "set mount option"


def test_memory_hog_is_oom_killed(run):
    c = run(["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"], mem_limit="16m")
    assert c.wait(timeout=60) == 137
    assert c.inspect()["State"]["OOMKilled"] is True


def test_fork_bomb_stops_at_pids_limit(run, croot):
    c = run(["sh", "-c", "(for i in $(seq 1 40); do sleep 30 & done) 2>/dev/null; sleep 30"],
            pids_limit=10)
    cg = contain._root.get_root(croot).cgroups.open(c.id)
    deadline = time.monotonic() + 10
    events = {}
    while time.monotonic() < deadline:
        pids_dir = cg.paths.get("pids") or cg.paths.get("unified")
        with open(os.path.join(pids_dir, "pids.events")) as f:
            events = dict(line.split() for line in f)
        if int(events.get("max", 0)) > 0:
            break
        time.sleep(0.05)
    # The kernel refused forks at the limit, and never let more than 10 live.
    assert int(events["max"]) > 0
    assert 5 <= len(cg.pids()) <= 10
    assert c.status == "running"


def test_cpu_quota_throttles(run, croot):
    c = run(["sh", "-c", "while true; do :; done"], cpus=0.2)
    time.sleep(1.0)
    cg = contain._root.get_root(croot).cgroups.open(c.id)
    cpu_dir = cg.paths.get("cpu") or cg.paths.get("unified")
    with open(os.path.join(cpu_dir, "cpu.stat")) as f:
        stat = dict(line.split() for line in f)
    assert int(stat["nr_throttled"]) > 0
    usage = cg.stats().cpu_usage_ns
    # At most 20% of one CPU over about a second (some slack for the period).
    assert usage is not None and usage < 0.45e9
    c.kill()


def test_exec_joins_the_container(run):
    c = run(["sleep", "60"], hostname="inside")
    r = c.exec_run(["sh", "-c", "hostname; echo $$; ls /proc/self/fd; readlink /proc/self/exe"])
    assert r.exit_code == 0
    lines = r.output.decode().split()
    assert lines[0] == "inside"
    assert int(lines[1]) > 1  # in the container's pid namespace, beside its pid 1
    # Only stdio (and ls's own directory fd) : no descriptor of the Python process.
    fds = [x for x in lines[2:-1]]
    assert set(fds) <= {"0", "1", "2", "3"}
    assert lines[-1] == "/bin/busybox"
    assert c.exec_run(["sh", "-c", "exit 3"]).exit_code == 3
    assert c.exec_run(["nosuch"]).exit_code == 127
    r = c.exec_run(["cat"], input=b"piped")
    assert r.output == b"piped"
    out, err = c.exec_run(["sh", "-c", "echo o; echo e >&2"], demux=True).output
    assert (out, err) == (b"o\n", b"e\n")
    assert c.exec_run(["id", "-u"], user="user").output == b"1000\n"


def test_container_init_has_no_host_fds(run):
    c = run(["sh", "-c", "ls /proc/1/fd; true"])
    assert sorted(output(c).split()) == ["0", "1", "2"]


def test_capabilities_are_dockers_defaults(run):
    c = run(["sh", "-c", "grep -E '^Cap(Eff|Bnd)' /proc/self/status; grep NoNewPrivs /proc/self/status"])
    out = output(c)
    assert "CapEff:\t00000000a80425fb" in out
    assert "CapBnd:\t00000000a80425fb" in out
    assert "NoNewPrivs:\t1" in out


def test_get_by_name_prefix_and_list(run, croot):
    c = run(["sleep", "60"], name="findme")
    assert Container.get("findme", root=croot) == c
    assert Container.get(c.id[:10], root=croot) == c
    assert c in Container.list(root=croot)
    with pytest.raises(Conflict):
        run(["true"], name="findme")
    c.kill()
    c.wait(timeout=30)
    assert c not in Container.list(root=croot)
    assert c in Container.list(all=True, root=croot)


def test_remove_refuses_running_and_leaves_nothing(croot, busybox):
    c = Container.run(busybox, ["sleep", "60"], root=croot, mem_limit="64m")
    with pytest.raises(Conflict):
        c.remove()
    c.remove(force=True)
    assert host_leaks(c.id) == []
    assert not os.path.exists(os.path.join(croot, "containers", c.id))
    with pytest.raises(ContainerNotFound):
        Container.get(c.id, root=croot)


def test_context_manager_removes(croot, busybox):
    with Container.run(busybox, ["sleep", "60"], root=croot) as c:
        assert c.status == "running"
    assert host_leaks(c.id) == []
    with pytest.raises(ContainerNotFound):
        Container.get(c.id, root=croot)


def test_auto_remove(croot, busybox):
    c = Container.run(busybox, ["true"], root=croot, auto_remove=True)
    assert c.wait(timeout=30) == 0
    with pytest.raises(ContainerNotFound):
        Container.get(c.id, root=croot)
    assert host_leaks(c.id) == []


def test_monitor_killed_is_noticed(run):
    c = run(["sleep", "60"])
    monitor = c.inspect()["_contain"]["monitor_pid"]
    os.kill(monitor, 9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and c.status == "running":
        time.sleep(0.05)
    assert c.status == "exited"
    assert "monitor" in c.inspect()["State"]["Error"]


def test_another_process_sees_and_stops_container(run, croot):
    import subprocess
    import sys

    c = run(["sleep", "60"], name="crossproc")
    code = (
        "import contain; c = contain.Container.get('crossproc', root=%r); "
        "print(c.status); c.stop(timeout=0.5); print(c.exit_code)" % croot
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["running", "137"], out.stderr
    assert c.status == "exited"


def test_old_root_is_gone_before_the_command_runs(run):
    # pivot_root leaves the host's root stacked on the container's until it
    # is detached: the command's first look at its mount table finds one
    # root, the overlay, and nothing of the host's root above or below it.
    host_root = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/":
                host_root = fields[2]  # major:minor of the host's root
    c = run(["cat", "/proc/self/mountinfo"])
    assert c.wait(timeout=30) == 0
    lines = c.logs().decode().splitlines()
    roots = [line for line in lines if line.split()[4] == "/"]
    assert len(roots) == 1, lines
    assert roots[0].split(" - ")[1].split()[0] == "overlay", roots
    # The host's root device appears only as the source of single files
    # bound in (hosts, resolv.conf, hostname), never as a directory tree.
    for line in lines:
        fields = line.split()
        if fields[2] == host_root:
            assert fields[4] in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"), line


def test_container_is_in_its_cgroups_from_its_first_instruction(run, croot):
    # The child joins its cgroups itself (the ones made during the start
    # once they exist, while it mounts); the command must never run
    # outside them.  Its cgroup namespace is
    # rooted at its own cgroup, so it sees "/" in every hierarchy.
    c = run(["sh", "-c", "cat /proc/self/cgroup; sleep 30"])
    deadline = time.monotonic() + 10
    while b"\n" not in c.logs() and time.monotonic() < deadline:
        time.sleep(0.02)
    inside = [ln.split(":", 2) for ln in c.logs().decode().splitlines()]
    with open(f"/proc/{c.pid}/cgroup") as f:
        host_view = {ln.split(":", 2)[1]: ln.split(":", 2)[2] for ln in f.read().splitlines()}
    cg = contain._root.get_root(croot).cgroups.open(c.id)
    assert cg.paths
    for key in cg.paths:
        controllers = "" if key == "unified" else key
        where = [path for names, path in host_view.items()
                 if names == controllers or controllers in names.split(",")]
        assert where and where[0].endswith("/" + c.id), (key, host_view)
    assert len(inside) == len(host_view)
    assert all(path == "/" for _, _, path in inside), inside


def test_cgroup_placement_failure_names_the_step(croot, busybox, tmp_path):
    # A v1 cpuset cgroup with no CPUs refuses tasks (ENOSPC): the start
    # fails naming the step, and no process of it is left.
    cpuset = "/sys/fs/cgroup/cpuset"
    if not os.path.exists(os.path.join(cpuset, "cpuset.cpus")):
        pytest.skip("no v1 cpuset hierarchy on this host")
    from contain.linux import defaults, runtime
    from contain.linux.spec import Linux, Namespace, Process, Root, Spec

    d = os.path.join(cpuset, f"contain-test-{os.getpid()}")
    os.mkdir(d)
    try:
        spec = Spec(process=Process(args=["/bin/true"], env=["PATH=/bin"], cwd="/",
                                    capabilities=defaults.capabilities_for(0, defaults.DEFAULT_CAPABILITIES)),
                    root=Root(contain._root.get_root(croot).image_layers(busybox.id)[0], readonly=True),
                    hostname="t", mounts=defaults.default_mounts(),
                    linux=Linux(namespaces=[Namespace(x) for x in ("mount", "pid", "uts", "ipc", "network")]))
        with pytest.raises(RuntimeFailure) as info:
            runtime.spawn(spec, cgroup_procs=[os.path.join(d, "cgroup.procs")])
        assert info.value.step == "join cgroup"
        assert info.value.errno == errno.ENOSPC
        with open(os.path.join(d, "cgroup.procs")) as f:
            assert f.read() == ""
    finally:
        os.rmdir(d)


def _rmdir_settled(d: str) -> None:
    deadline = time.monotonic() + 5
    while os.path.isdir(d):
        try:
            os.rmdir(d)
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _plan_spec(croot, busybox, args):
    from contain.linux import defaults
    from contain.linux.spec import Linux, Namespace, Process, Root, Spec

    return Spec(process=Process(args=args, env=["PATH=/bin"], cwd="/",
                                capabilities=defaults.capabilities_for(0, defaults.DEFAULT_CAPABILITIES)),
                root=Root(contain._root.get_root(croot).image_layers(busybox.id)[0], readonly=True),
                hostname="t", mounts=defaults.default_mounts(),
                linux=Linux(namespaces=[Namespace(x) for x in ("mount", "pid", "uts", "ipc", "network")]))


def _v1_plan_dirs(tag: str):
    bases = {k: f"/sys/fs/cgroup/{k}" for k in ("devices", "pids")}
    if not os.path.exists(bases["devices"] + "/devices.allow") or not os.path.isdir(bases["pids"]):
        pytest.skip("no v1 devices and pids hierarchies on this host")
    parent = f"contain-test-{os.getpid()}-{tag}"
    return {k: (f"{b}/{parent}", f"{b}/{parent}/c") for k, b in bases.items()}


@pytest.mark.parametrize("monitored", [False, True])
def test_spawn_makes_v1_cgroups_while_the_child_builds_its_root(croot, busybox, tmp_path, monitored):
    # cgroup_plan: the directories are made natively during the start (by
    # the caller's thread while the monitor-to-be clones the container, or
    # by the caller before it releases an unmonitored child), the device
    # rules written, and the child joins them before its command runs.  A missing
    # parent is made on the way; an empty leftover of the same name is
    # replaced.
    import select

    from contain.linux import devices, runtime

    dirs = _v1_plan_dirs(f"plan{int(monitored)}")
    (dev_parent, dev), (pids_parent, pids) = dirs["devices"], dirs["pids"]
    os.mkdir(pids_parent)
    os.mkdir(pids)  # the leftover; the devices parent is missing
    plan = runtime.CgroupPlan(mkdirs=[dev, pids], writes=devices.v1_writes(dev, devices.default_rules()),
                              joins=[dev + "/tasks", pids + "/tasks"])
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        spec = _plan_spec(croot, busybox, ["cat", "/proc/self/cgroup"])
        monitor = runtime.Monitor([str(tmp_path), "0"], []) if monitored else None
        child = runtime.spawn(spec, stdio=(None, out_w, None), cgroup_plan=plan, monitor=monitor)
        os.close(out_w)
        out_w = -1
        data = os.read(out_r, 4096).decode()
        if monitored:
            assert select.select([child.monitor_pidfd], [], [], 10)[0]
            os.close(child.monitor_pidfd)
        else:
            assert os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED).si_status == 0
            os.close(child.pidfd)
        name = dev[len("/sys/fs/cgroup/devices"):]
        assert f":devices:{name}\n" in data and f":pids:{name}\n" in data, data
        with open(dev + "/devices.list") as f:
            listed = f.read().splitlines()
        assert "c 1:3 rwm" in listed and "a *:* rwm" not in listed
    finally:
        os.close(out_r)
        if out_w >= 0:
            os.close(out_w)
        for d in (dev, pids, dev_parent, pids_parent):
            _rmdir_settled(d)


@pytest.mark.parametrize("monitored", [False, True])
@pytest.mark.parametrize("case", ["busy leftover", "refused rule", "refused join"])
def test_spawn_cgroup_plan_failure_names_the_step(croot, busybox, tmp_path, monitored, case):
    # A leftover still in use is not taken over, a rule the kernel refuses
    # fails the start, and so does a cgroup that refuses the child (a v1
    # cpuset one with no CPUs, ENOSPC): each names the step, and the child
    # never runs its command nor stays in the cgroup.
    from contain.linux import runtime

    dirs = _v1_plan_dirs(f"fail{int(monitored)}{case[-4:]}")
    (dev_parent, dev), (pids_parent, pids) = dirs["devices"], dirs["pids"]
    cpuset = f"/sys/fs/cgroup/cpuset/{os.path.basename(dev_parent)}/c"
    if case == "refused join":
        if not os.path.exists("/sys/fs/cgroup/cpuset/cpuset.cpus"):
            pytest.skip("no v1 cpuset hierarchy on this host")
        with open("/sys/fs/cgroup/cpuset/cgroup.clone_children") as f:
            if f.read().strip() == "1":
                pytest.skip("new cpuset cgroups inherit their parent's CPUs here (clone_children)")
    marker = tmp_path / "ran"
    for d in (dev_parent, pids_parent):
        os.mkdir(d)
    sleeper = None
    try:
        writes = [(dev + "/devices.allow", "c 1:3 rwm")]
        mkdirs, joins = [dev, pids], [dev + "/tasks", pids + "/tasks"]
        if case == "busy leftover":
            os.mkdir(pids)
            sleeper = subprocess.Popen(["sleep", "60"])
            with open(pids + "/cgroup.procs", "w") as f:
                f.write(str(sleeper.pid))
        elif case == "refused rule":
            writes.append((dev + "/devices.allow", "q nonsense"))
        else:
            mkdirs.append(cpuset)  # made with its parent, neither given CPUs
            joins.append(cpuset + "/tasks")
        plan = runtime.CgroupPlan(mkdirs=mkdirs, writes=writes, joins=joins)
        spec = _plan_spec(croot, busybox, ["sh", "-c", f"echo ran > /proc/1/root{marker}"])
        monitor = runtime.Monitor([str(tmp_path), "0"], []) if monitored else None
        with pytest.raises(RuntimeFailure) as info:
            runtime.spawn(spec, cgroup_plan=plan, monitor=monitor)
        if case == "busy leftover":
            assert (info.value.step, info.value.errno) == ("cgroup mkdir", errno.EEXIST)
            assert pids in str(info.value)
            with open(pids + "/cgroup.procs") as f:
                assert f.read().split() == [str(sleeper.pid)]
        elif case == "refused rule":
            assert (info.value.step, info.value.errno) == ("cgroup write", errno.EINVAL)
            assert "devices.allow: q nonsense" in str(info.value)
        else:
            assert (info.value.step, info.value.errno) == ("join cgroup", errno.ENOSPC)
            assert cpuset.lstrip("/") + "/tasks" in str(info.value)
        for d in (dev, cpuset) if case == "busy leftover" else (dev, pids, cpuset):
            if os.path.isdir(d):
                _wait_empty(d)
        assert not marker.exists()
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for d in (dev, pids, dev_parent, pids_parent, cpuset, os.path.dirname(cpuset)):
            if os.path.isdir(d):
                _rmdir_settled(d)


def _wait_empty(d: str) -> None:
    # The child that joined before the failure is killed: gone from the
    # cgroup once it has exited (bounded).
    deadline = time.monotonic() + 5
    while True:
        with open(d + "/cgroup.procs") as f:
            if f.read() == "":
                return
        assert time.monotonic() < deadline, f"a process stayed in {d}"
        time.sleep(0.01)


def test_start_replaces_an_empty_cgroup_left_by_an_earlier_start(run, croot, busybox):
    # A first start that died before it was recorded leaves its cgroup: the
    # next start of the container makes it anew, and removal takes it.
    c = Container.create(busybox, ["sh", "-c", "cat /proc/self/cgroup; sleep 30"], root=croot)
    try:
        manager = contain._root.get_root(croot).cgroups
        left = manager.paths(c.id)
        left.pop("cpuset", None)
        for d in left.values():
            os.makedirs(d)  # the shared parent too, when no container has made it yet
        with open(left["memory"] + "/memory.limit_in_bytes", "w") as f:
            f.write(str(64 << 20))  # what the new one must not inherit
        c.start()
        with open(left["memory"] + "/memory.limit_in_bytes") as f:
            assert int(f.read()) > 1 << 40
        with open(f"/proc/{c.pid}/cgroup") as f:
            assert f.read().count("/" + c.id + "\n") == len(set(left.values()))
    finally:
        c.remove(force=True)
    assert host_leaks(c.id) == []


def _cgroup2_mount() -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[2] == "cgroup2" and os.access(fields[1], os.W_OK):
                return fields[1]
    return ""


def test_exec_joins_the_v2_cgroup_then_its_namespace(croot, busybox):
    # join: the exec'd process starts life in the container's v2 directory
    # (CLONE_INTO_CGROUP, no move; a move where the kernel lacks it) and
    # enters its cgroup namespace after, where that directory is the root.
    mount = _cgroup2_mount()
    if not mount:
        pytest.skip("no writable cgroup2 hierarchy on this host")
    from contain.linux import defaults, runtime
    from contain.linux.spec import Linux, Namespace, Process, Root, Spec

    d = os.path.join(mount, f"contain-test-{os.getpid()}-exec")
    os.mkdir(d)
    kinds = ("mount", "pid", "uts", "ipc", "network", "cgroup")
    caps = defaults.capabilities_for(0, defaults.DEFAULT_CAPABILITIES)
    spec = Spec(process=Process(args=["sleep", "30"], env=["PATH=/bin"], cwd="/", capabilities=caps),
                root=Root(contain._root.get_root(croot).image_layers(busybox.id)[0], readonly=True),
                hostname="t", mounts=defaults.default_mounts(),
                linux=Linux(namespaces=[Namespace(x) for x in kinds]))
    box = runtime.spawn(spec, cgroup_dir=d)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        ex = runtime.join(box.pidfd, Process(args=["cat", "/proc/self/cgroup"], env=["PATH=/bin"],
                                             cwd="/", capabilities=caps),
                          namespaces=list(kinds), stdio=(None, out_w, None), cgroup_dir=d)
        os.close(out_w)
        out_w = -1
        data = os.read(out_r, 4096).decode()
        assert os.waitid(os.P_PIDFD, ex.pidfd, os.WEXITED).si_status == 0
        os.close(ex.pidfd)
        assert "0::/\n" in data, data
    finally:
        os.close(out_r)
        if out_w >= 0:
            os.close(out_w)
        os.kill(box.pid, signal.SIGKILL)
        os.waitid(os.P_PIDFD, box.pidfd, os.WEXITED)
        os.close(box.pidfd)
        _rmdir_settled(d)


@pytest.mark.parametrize("monitored", [False, True])
def test_born_in_its_v2_cgroup(croot, busybox, tmp_path, monitored):
    # clone3 with CLONE_INTO_CGROUP: the child starts life in the v2
    # directory (this hybrid host has a real, controller-less v2 tree).
    mount = _cgroup2_mount()
    if not mount:
        pytest.skip("no writable cgroup2 hierarchy on this host")
    import select

    from contain.linux import defaults, runtime
    from contain.linux.spec import Linux, Namespace, Process, Root, Spec

    d = os.path.join(mount, f"contain-test-{os.getpid()}-{int(monitored)}")
    os.mkdir(d)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        spec = Spec(process=Process(args=["cat", "/proc/self/cgroup"], env=["PATH=/bin"], cwd="/",
                                    capabilities=defaults.capabilities_for(0, defaults.DEFAULT_CAPABILITIES)),
                    root=Root(contain._root.get_root(croot).image_layers(busybox.id)[0], readonly=True),
                    hostname="t", mounts=defaults.default_mounts(),
                    linux=Linux(namespaces=[Namespace(x) for x in ("mount", "pid", "uts", "ipc", "network")]))
        if monitored:
            state = tmp_path / "mon"
            state.mkdir()
            child = runtime.spawn(spec, stdio=(None, out_w, None), cgroup_dir=d,
                                  monitor=runtime.Monitor([str(state), "0"], []))
            os.close(out_w)
            out_w = -1
            data = os.read(out_r, 4096).decode()
            assert select.select([child.monitor_pidfd], [], [], 10)[0]
            os.close(child.monitor_pidfd)
        else:
            child = runtime.spawn(spec, stdio=(None, out_w, None), cgroup_dir=d)
            os.close(out_w)
            out_w = -1
            data = os.read(out_r, 4096).decode()
            assert os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED).si_status == 0
            os.close(child.pidfd)
        rel = d[len(mount):]
        assert f"0::{rel}\n" in data, data
    finally:
        os.close(out_r)
        if out_w >= 0:
            os.close(out_w)
        deadline = time.monotonic() + 5
        while True:
            try:
                os.rmdir(d)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
