"""Dockerfile parsing: every instruction and form, escapes, heredocs, substitution, errors."""

from __future__ import annotations

import pytest

from contain.dockerfile import parser as p
from contain.dockerfile import DockerfileError, expand_word, parse, parse_instruction
from contain.dockerfile.context import BuildContext, ContextError, IgnorePattern
from contain.errors import InvalidArgument


def one(text: str):
    return parse_instruction(text)


def test_from_forms():
    df = parse("ARG TAG=1\nFROM --platform=linux/amd64 busybox:${TAG} AS Build\nFROM build\nFROM scratch\n")
    assert [s.name for s in df.stages] == ["build", None, None]
    fr = df.stages[0].from_
    assert fr.platform == "linux/amd64" and fr.image == "busybox:${TAG}"
    assert fr.expand({"TAG": "2"}.get).image == "busybox:2"
    assert df.global_args[0].args == (("TAG", "1"),)
    assert df.stage("build") is df.stages[0] and df.stage(1) is df.stages[1]


def test_run_shell_exec_and_flags():
    r = one("RUN echo hi")
    assert r.shell_form and r.argv(["/bin/sh", "-c"]) == ["/bin/sh", "-c", "echo hi"]
    r = one('RUN ["echo", "a b"]')
    assert not r.shell_form and r.argv(["/bin/sh", "-c"]) == ["echo", "a b"]
    r = one("RUN --mount=type=cache,target=/c --network=none --mount=type=tmpfs,target=/t make")
    assert r.mounts == ("type=cache,target=/c", "type=tmpfs,target=/t") and r.network == "none"
    assert r.args == ("make",)
    # Invalid JSON falls back to the shell form, as Docker does.
    assert one('CMD [ "a"').args == ('[ "a"',)


def test_cmd_entrypoint_shell():
    assert one('CMD ["sh", "-c", "x"]').args == ("sh", "-c", "x")
    assert one("ENTRYPOINT top -b").command == "top -b"
    s = one('SHELL ["/bin/bash", "-exc"]')
    assert s.shell == ("/bin/bash", "-exc")
    with pytest.raises(DockerfileError, match="JSON"):
        one("SHELL /bin/bash")


def test_env_label_forms():
    e = one('ENV A=1 B="two words" C=x\\ y')
    assert e.pairs == (("A", "1"), ("B", '"two words"'), ("C", "x\\ y"))
    assert e.expand(lambda k: None).pairs == (("A", "1"), ("B", "two words"), ("C", "x y"))
    legacy = one("ENV NAME some value here")
    assert legacy.pairs == (("NAME", "some value here"),)
    lab = one('LABEL "com.x"="v 1" b=2')
    assert lab.expand(lambda k: None).pairs == (("com.x", "v 1"), ("b", "2"))
    with pytest.raises(DockerfileError):
        one("ENV A=1 B")


def test_expose_volume_user_workdir_stopsignal_maintainer():
    ex = one("EXPOSE 80 53/udp 8000-8002")
    assert ex.port_specs() == ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]
    with pytest.raises(DockerfileError):
        one("EXPOSE 80/xyz").port_specs()
    assert one('VOLUME ["/a", "/b"]').paths == ("/a", "/b")
    assert one("VOLUME /a /b").paths == ("/a", "/b")
    assert one("USER app:staff").user == "app:staff"
    assert one("WORKDIR /w/$X").expand({"X": "y"}.get).path == "/w/y"
    assert one("STOPSIGNAL SIGKILL").signal == "SIGKILL"
    assert one("MAINTAINER Jane <j@x>").name == "Jane <j@x>"


def test_add_copy():
    c = one("COPY --from=build --chown=1:2 --chmod=644 --link a b /dst/")
    assert (c.from_, c.chown, c.chmod, c.link, c.sources, c.dest) == (
        "build", "1:2", "644", True, ("a", "b"), "/dst/")
    c = one('COPY ["a b", "/x/"]')
    assert c.sources == ("a b",) and c.dest == "/x/"
    a = one("ADD --chown=app files.tar.gz /opt/")
    assert isinstance(a, p.Add) and a.chown == "app"
    with pytest.raises(DockerfileError, match="at least two"):
        one("COPY onlyone")
    with pytest.raises(DockerfileError, match="unknown flag: frm"):
        one("COPY --frm=x a b")


def test_arg_onbuild_healthcheck():
    a = one("ARG A B=2 C=")
    assert a.args == (("A", None), ("B", "2"), ("C", ""))
    o = one("ONBUILD RUN echo hi")
    assert isinstance(o.trigger, p.Run) and o.expression == "RUN echo hi"
    with pytest.raises(DockerfileError, match="ONBUILD ONBUILD"):
        one("ONBUILD ONBUILD RUN x")
    with pytest.raises(DockerfileError):
        one("ONBUILD FROM x")
    h = one("HEALTHCHECK --interval=30s --timeout=1m30s --start-period=5s --retries=3 CMD curl -f x")
    assert h.to_config() == {"Test": ["CMD-SHELL", "curl -f x"], "Interval": 30_000_000_000,
                             "Timeout": 90_000_000_000, "StartPeriod": 5_000_000_000, "Retries": 3}
    assert one('HEALTHCHECK CMD ["true"]').test == ("CMD", "true")
    assert one("HEALTHCHECK NONE").test == ("NONE",)
    with pytest.raises(DockerfileError):
        one("HEALTHCHECK --interval=abc CMD true")


def test_directives_comments_continuations():
    df = parse("# syntax=docker/dockerfile:1\n# escape=`\n\nFROM busybox\n"
               "RUN echo a `\n  # a comment inside\n\n  && echo b\n# comment\nCOPY a\\b c\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    run = df.stages[0].instructions[0]
    assert run.args == ("echo a   && echo b",) and run.lineno == 5
    assert df.stages[0].instructions[1].sources == ("a\\b",)
    # A directive after the first instruction is a comment.
    df = parse("FROM x\n# escape=`\nRUN a \\\n b\n")
    assert df.escape == "\\" and df.stages[0].instructions[0].args == ("a  b",)
    with pytest.raises(DockerfileError, match="escape"):
        parse("# escape=x\nFROM a\n")


def test_heredocs():
    df = parse("FROM b\nRUN <<EOF\necho one\necho two\nEOF\n"
               "COPY <<a.txt <<-\"b.txt\" /dir/\nhello $X\na.txt\n\tbye $X\n\tb.txt\n"
               "RUN cat <<A > /f && cat <<'B' > /g\n$HOME\nA\n$HOME\nB\nRUN echo after\n")
    run, copy, run2, run3 = df.stages[0].instructions
    assert run.heredocs[0].content == "echo one\necho two\n"
    assert run.argv(["/bin/sh", "-c"]) == ["/bin/sh", "-c", "echo one\necho two\n"]
    a, b = copy.heredocs
    assert (a.name, a.expand, b.name, b.expand, b.content) == ("a.txt", True, "b.txt", False, "bye $X\n")
    expanded = copy.expand({"X": "x"}.get)
    assert expanded.heredocs[0].content == "hello x\n" and expanded.heredocs[1].content == "bye $X\n"
    script = run2.argv(["/bin/sh", "-c"])[2]
    assert script.startswith("cat <<A > /f && cat <<'B' > /g\n$HOME\nA\n$HOME\nB\n")
    assert run3.args == ("echo after",) and run3.lineno == 16
    with pytest.raises(DockerfileError, match="unterminated heredoc"):
        parse("FROM b\nRUN <<EOF\necho\n")


@pytest.mark.parametrize("word,expected", [
    ("$A", "a"), ("${A}", "a"), ("x${A}y", "xay"), ("$UNSET", ""),
    ("${A:-d}", "a"), ("${UNSET:-d}", "d"), ("${EMPTY:-d}", "d"), ("${EMPTY-d}", ""),
    ("${UNSET-d}", "d"), ("${A:+alt}", "alt"), ("${EMPTY:+alt}", ""), ("${EMPTY+alt}", "alt"),
    ("${UNSET+alt}", ""), ("\\$A", "$A"), ("'$A'", "$A"), ('"$A b"', "a b"),
    ('"q \\" \\$A"', 'q " $A'), ("${F%.txt}", "name.tar"), ("${F%%.*}", "name"),
    ("${F#*.}", "tar.txt"), ("${F##*.}", "txt"), ("${UNSET:-$A}", "a"), ("a\\ b", "a b"),
    ("$", "$"), ("$1", "$1"),
])
def test_substitution(word, expected):
    env = {"A": "a", "EMPTY": "", "F": "name.tar.txt"}
    assert expand_word(word, env) == expected


def test_substitution_errors_name_file_and_line():
    df = parse("FROM b\n\nWORKDIR ${X:?must be set}\n", filename="my.Dockerfile")
    wd = df.stages[0].instructions[0]
    with pytest.raises(DockerfileError) as info:
        wd.expand(lambda k: None)
    assert info.value.filename == "my.Dockerfile" and info.value.lineno == 3
    assert "my.Dockerfile:3" in str(info.value) and "must be set" in str(info.value)
    with pytest.raises(DockerfileError):
        expand_word_instr = one("USER ${A")
        expand_word_instr.expand(lambda k: None)


def test_errors_name_file_line_and_text():
    with pytest.raises(DockerfileError) as info:
        parse("FROM a\nRUN ok\nFROOM x\n", filename="Dockerfile.dev")
    err = info.value
    assert isinstance(err, InvalidArgument)
    assert (err.filename, err.lineno) == ("Dockerfile.dev", 3)
    assert "unknown instruction" in str(err) and "FROOM" in str(err)
    for bad in ("", "# only a comment\n", "RUN x\nFROM a\n", "FROM a b\n", "FROM a AS 1x\n",
                "FROM a AS x\nFROM b AS x\n", "FROM a\nRUN\n", "FROM a\nUSER\n",
                "FROM a\nADD --chown a b\n", "FROM a\nCOPY --link=maybe a b\n"):
        with pytest.raises(DockerfileError):
            parse(bad)


def test_dockerignore_patterns(tmp_path):
    for name in ("a.txt", "b.log", "dir/c.log", "dir/keep.log", "dir/sub/d.txt", "node_modules/x/y.js",
                 "deep/x/y/z.tmp"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(name)
    ctx = BuildContext(str(tmp_path), ignore=["# comment", "*.log", "/node_modules", "**/*.tmp",
                                               "dir/*.log", "!dir/keep.log", "./dir/sub"])
    assert ctx.is_excluded("b.log") and not ctx.is_excluded("a.txt")
    assert ctx.is_excluded("dir/c.log") and not ctx.is_excluded("dir/keep.log")
    assert ctx.is_excluded("node_modules/x/y.js")  # a parent directory matches
    assert ctx.is_excluded("deep/x/y/z.tmp") and ctx.is_excluded("dir/sub/d.txt")
    walked = sorted(e.rel for e in ctx.walk(ctx.resolve(".")[0]))
    assert "dir/keep.log" in walked and "dir/c.log" not in walked and "a.txt" in walked
    assert IgnorePattern.compile("!") is None


def test_context_refuses_escapes(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "ok").write_text("ok")
    (ctx_dir / "abs_link").symlink_to(outside / "secret")
    (ctx_dir / "rel_link").symlink_to("../outside/secret")
    (ctx_dir / "inner_link").symlink_to("ok")
    ctx = BuildContext(str(ctx_dir), ignore=[])
    for src in ("../outside/secret", "abs_link", "rel_link", "sub/../../outside"):
        with pytest.raises(ContextError, match="outside|escapes"):
            ctx.resolve(src)
    assert ctx.resolve("inner_link")[0].rel == "ok"
    assert ctx.resolve("/ok")[0].rel == "ok"  # a leading / is the context root, as Docker
    with pytest.raises(ContextError, match="not found"):
        ctx.resolve("missing")
    with pytest.raises(ContextError, match="no source files"):
        ctx.resolve("*.nothing")


def test_content_hash_changes_with_content_and_owner(tmp_path):
    (tmp_path / "f").write_text("1")
    ctx = BuildContext(str(tmp_path), ignore=[])
    entries = lambda: [(e.rel, e) for e in ctx.walk(ctx.resolve("f")[0])]  # noqa: E731
    h1 = ctx.content_hash(entries())
    assert ctx.content_hash(entries(), uid=5, gid=5) != h1
    (tmp_path / "f").write_text("2")
    assert ctx.content_hash(entries()) != h1


def test_fuzz_parser_raises_only_its_own_errors():
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st

    words = st.sampled_from(["FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "LABEL", "EXPOSE", "ONBUILD",
                             "HEALTHCHECK", "SHELL", "WORKDIR", "USER", "VOLUME", "CMD", "<<EOF",
                             "EOF", "\\", "`", "#", "=", "${", "}", "$", "\"", "'", "[", "]", "--from=",
                             "--mount=", ":-", "\n", " ", "a", "/x", "# escape=`"])
    text = st.lists(st.one_of(words, st.text(max_size=5)), max_size=30).map("".join)

    @settings(max_examples=400, deadline=None)
    @given(text, st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3))
    def check(source, env):
        try:
            df = parse(source)
        except DockerfileError:
            return
        for ins in df.instructions:
            try:
                ins.expand(env.get)
                if isinstance(ins, p.Expose):
                    ins.port_specs()
            except DockerfileError:
                pass

    check()
