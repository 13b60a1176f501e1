"""Real builds on the busybox image: RUN, ENV, WORKDIR, USER, COPY/ADD, multi-stage,
build args, the layer cache, targets, tags, failures, commit and whiteouts."""

from __future__ import annotations

import io
import os
import tarfile

import pytest

from contain import Container, Image
from contain._commit import commit
from contain.builder import BuildError, Builder
from contain.dockerfile import DockerfileError


def write(ctx, files):
    for name, content in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return ctx


@pytest.fixture
def build(croot, busybox, tmp_path):
    """Build a Dockerfile text in a fresh context; returns (image, output lines)."""

    def _build(dockerfile, files=None, ctx=None, **options):
        ctx = ctx or tmp_path / "ctx"
        ctx.mkdir(exist_ok=True)
        write(ctx, {"Dockerfile": dockerfile, **(files or {})})
        lines = []
        image = Builder.from_dockerfile(str(ctx), root=croot, log=lines.append, **options)
        return image, lines

    return _build


def output(run, image, command):
    c = run(command, image=image)
    assert c.wait(timeout=30) == 0, c.logs()
    return c.logs().decode()


def test_run_env_workdir_user(build, run):
    image, lines = build(
        "FROM busybox:test\n"
        "ENV GREETING=hello\n"
        "RUN echo \"$GREETING world\" > /greeting && mkdir -p /data && chown 1000:1000 /data\n"
        "WORKDIR /app/sub\n"
        "RUN pwd > where\n"
        "USER user\n"
        "RUN id -u > /data/uid\n"
        "CMD [\"cat\", \"/greeting\"]\n")
    assert any(line.startswith("Step 3/8 : RUN echo") for line in lines)
    assert any(line.startswith(" ---> Running in ") for line in lines)
    assert lines[-1].startswith("Successfully built ")
    assert image.config.cmd == ["cat", "/greeting"]
    assert image.config.working_dir == "/app/sub" and image.config.user == "user"
    assert "GREETING=hello" in image.config.env
    assert output(run, image, None) == "hello world\n"
    assert output(run, image, ["cat", "/app/sub/where", "/data/uid"]) == "/app/sub\n1000\n"
    # Config-only steps add no layer; every RUN that wrote files added one.
    assert len(image.layers) == 1 + 4  # base, RUN, WORKDIR (created), RUN, RUN
    assert [h["empty_layer"] for h in image.history()][-1] is True


def test_copy_with_dockerignore_chown_chmod_and_symlinked_dest(build, run):
    image, _ = build(
        "FROM busybox:test\n"
        "RUN mkdir /real && ln -s /real /linked && ln -s ../../real /bin/rel\n"
        "COPY --chown=1000:50 --chmod=640 src/ /linked/\n"
        "COPY top.txt /bin/rel/renamed.txt\n"
        "COPY src/*.txt /globbed/\n",
        files={"src/a.txt": "A", "src/b.txt": "B", "src/skip.log": "no", "src/deep/c.txt": "C",
               "top.txt": "T", ".dockerignore": "**/*.log\nsrc/deep\n!src/deep/c.txt\n"})
    out = output(run, image, ["sh", "-c",
                              "cd /real && find . | sort && stat -c '%u:%g %a' a.txt && "
                              "cat /real/renamed.txt && echo && ls /globbed && test -L /linked"])
    listing, rest = out.split("1000:50", 1)
    assert sorted(listing.split()) == [".", "./a.txt", "./b.txt", "./deep", "./deep/c.txt",
                                       "./renamed.txt"]
    assert rest.split() == ["640", "T", "a.txt", "b.txt"]
    assert not os.path.exists("/real/renamed.txt")  # the image's symlinks never touch the host


def test_copy_escaping_the_context_is_refused(build, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "link").symlink_to(outside)
    for src in ("../outside.txt", "link"):
        with pytest.raises((BuildError, DockerfileError), match="outside|escapes"):
            build(f"FROM busybox:test\nCOPY {src} /x\n", ctx=ctx)


def test_add_extracts_local_archives(build, run, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name, mode in (("files.tar.gz", "w:gz"), ("files.tar.bz2", "w:bz2"), ("files.tar.xz", "w:xz")):
        with tarfile.open(ctx / name, mode) as tar:
            data = name.encode()
            info = tarfile.TarInfo(f"pkg/{name}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    image, _ = build("FROM busybox:test\nADD files.tar.gz files.tar.bz2 /opt/\nADD files.tar.xz /x/\n"
                     "COPY files.tar.gz /copied/\n", ctx=ctx)
    out = output(run, image, ["sh", "-c", "cat /opt/pkg/*.txt; echo; ls /x/pkg /copied"])
    assert "files.tar.gzfiles.tar.bz2" in out.replace("\n", "") or "files.tar.bz2files.tar.gz" in out
    assert "/x/pkg:\nfiles.tar.xz.txt" in out and "/copied:\nfiles.tar.gz\n" in out
    with pytest.raises(BuildError, match="remote URLs are not supported offline"):
        build("FROM busybox:test\nADD https://example.com/x /x\n", ctx=ctx)


def test_multi_stage_copy_from_target_and_args(build, run):
    dockerfile = (
        "ARG BASE=busybox:test\n"
        "FROM ${BASE} AS builder\n"
        "ARG VERSION=1.0\n"
        "RUN mkdir /out && echo \"built $VERSION\" > /out/artifact && rm /bin/vi\n"
        "FROM builder AS tester\n"
        "RUN test ! -e /bin/vi && echo tested > /out/tested\n"
        "FROM busybox:test\n"
        "COPY --from=builder /out/artifact /artifact\n"
        "COPY --from=0 /out /all/\n"
        "CMD [\"cat\", \"/artifact\"]\n")
    image, lines = build(dockerfile, buildargs={"VERSION": "2.5"})
    assert output(run, image, None) == "built 2.5\n"
    assert output(run, image, ["ls", "/all"]).split() == ["artifact"]
    target, _ = build(dockerfile, target="tester", buildargs={"VERSION": "2.5"})
    assert output(run, target, ["cat", "/out/tested"]) == "tested\n"


def test_cache_rebuild_and_invalidation(build):
    dockerfile = ("FROM busybox:test\nRUN echo one > /one\nCOPY a.txt /a.txt\n"
                  "RUN cat /a.txt > /copy\nENV X=1\n")
    first, lines1 = build(dockerfile, files={"a.txt": "v1"})
    second, lines2 = build(dockerfile, files={"a.txt": "v1"})
    assert second.id == first.id
    assert sum(line == " ---> Using cache" for line in lines2) == 4
    assert not any("Running in" in line for line in lines2)
    third, lines3 = build(dockerfile, files={"a.txt": "v2"})
    assert third.id != first.id
    steps = [line for line in lines3 if line.startswith("Step ") or line == " ---> Using cache"]
    # RUN echo is cached; COPY and everything after it run again.
    assert steps[1:3] == ["Step 2/5 : RUN echo one > /one", " ---> Using cache"]
    assert " ---> Using cache" not in steps[3:]
    nocache, lines4 = build(dockerfile, files={"a.txt": "v2"}, nocache=True)
    assert " ---> Using cache" not in lines4 and nocache.id != third.id


def test_several_tags_and_quiet(build, croot):
    image, lines = build("FROM busybox:test\nLABEL a=b\n", tag=["multi:one", "multi:two"])
    assert sorted(image.tags) == ["multi:one", "multi:two"]
    assert "Successfully tagged multi:one" in lines and "Successfully tagged multi:two" in lines
    assert Image.get("multi:two", root=croot).id == image.id
    quiet_lines = []
    Builder("busybox:test", root=croot).label(q="1").build(quiet=True, log=quiet_lines.append)
    assert len(quiet_lines) == 1 and quiet_lines[0].startswith("sha256:")


def test_failing_run_names_step_and_exit_code(build, croot):
    with pytest.raises(BuildError) as info:
        build("FROM busybox:test\nRUN echo about to fail && exit 3\n")
    err = info.value
    assert err.exit_code == 3 and "RUN echo about to fail && exit 3" in str(err)
    assert "returned a non-zero code: 3" in str(err) and "about to fail" in err.log
    # The intermediate container is gone.
    assert not [c for c in Container.list(all=True, root=croot) if c.labels.get("contain.build")]


def test_deletions_are_carried_as_whiteouts(build, run):
    image, _ = build("FROM busybox:test\nRUN rm /bin/vi && rm -r /home/user && mkdir /home/new\n")
    out = output(run, image, ["sh", "-c", "ls /bin/vi /home/user 2>&1; ls /home"])
    assert "No such file" in out and out.strip().endswith("new")


def test_python_builder_api(croot, busybox, tmp_path, run):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "hello.txt").write_text("hi from context\n")
    b = (Builder("busybox:test", context=tmp_path, root=croot)
         .run("echo hi > /x")
         .copy("src", "/dst")
         .env(A="b c", B="$literal")
         .workdir("/w")
         .label(k="v")
         .expose(80, "53/udp")
         .user("user")
         .entrypoint(["sh", "-c"])
         .cmd(["cat /x /dst/hello.txt; echo $A $B"]))
    assert b.dockerfile().startswith("FROM busybox:test\nRUN echo hi > /x\nCOPY src /dst\n")
    image = b.build(tag="pyapi:1", log=lambda line: None)
    assert image.tags == ["pyapi:1"] and image.labels == {"k": "v"}
    assert set(image.config.exposed_ports) == {"80/tcp", "53/udp"}
    assert output(run, image, None) == "hi\nhi from context\nb c $literal\n"


def test_commit_container_with_changes(croot, busybox, run):
    c = run(["sh", "-c", "echo committed > /c.txt && rm /bin/vi"])
    assert c.wait(timeout=30) == 0
    record = commit(croot, c.id, repository="committed", tag="v1", message="msg", author="me",
                    changes=["CMD [\"cat\", \"/c.txt\"]", "ENV A=b", "EXPOSE 8080", "WORKDIR /tmp",
                             "LABEL x=y", "USER user"])
    image = Image(record, c._root)
    assert image.tags == ["committed:v1"]
    cfg = image.config
    assert cfg.cmd == ["cat", "/c.txt"] and "A=b" in cfg.env and "8080/tcp" in cfg.exposed_ports
    assert (cfg.working_dir, cfg.user, cfg.labels["x"]) == ("/tmp", "user", "y")
    last = image.history()[-1]
    assert (last["comment"], last["author"]) == ("msg", "me")
    assert output(run, image, None) == "committed\n"
    assert "No such file" in output(run, image, ["sh", "-c", "ls /bin/vi 2>&1; true"])
    with pytest.raises(DockerfileError, match="not a valid change"):
        commit(croot, c.id, changes=["RUN echo no"])
    # An unchanged container adds no layer, only a history entry.
    idle = run(["true"])
    idle.wait(timeout=30)
    empty = commit(croot, idle.id)
    assert len(empty.layers) == len(busybox.layers) and empty.config.history[-1].empty_layer


def test_onbuild_triggers_and_heredocs(build, run, croot):
    parent, _ = build("FROM busybox:test\nONBUILD RUN echo triggered > /trigger\n", tag="onbuild:base")
    assert parent.config.on_build == ["RUN echo triggered > /trigger"]
    child, lines = build("FROM onbuild:base\nCOPY <<EOF /doc.txt\nhello $HOSTNAME_X\nEOF\n"
                         "RUN <<EOF\necho from heredoc > /h\nEOF\n", buildargs={})
    assert any("build trigger" in line for line in lines)
    assert not child.config.on_build
    assert output(run, child, ["cat", "/trigger", "/doc.txt", "/h"]) == "triggered\nhello \nfrom heredoc\n"
