"""Per-test overhead of the pytest plugin's contain_run fixture: a test's
set-up, call and teardown, less what the same container costs when run,
waited for and removed directly (median of N tests each way, one run).

    .venv/bin/python benchmarks/bench_fixture.py [-n 60]

testcontainers with Docker is the peer where a Docker engine runs; none runs
on the development VM, so it is skipped there with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

CONFTEST = '''
import json, os
_durations = {}

def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration

def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(_durations, f)
'''

TESTS = '''
import time, json, os
import contain

def test_direct(contain_root, contain_image):
    """The same container without the fixture, timed in the same process."""
    image = contain_image()
    times = []
    for _ in range({n}):
        t = time.perf_counter()
        c = contain.Container.run(image, ["true"], network="none", root=contain_root)
        c.wait()
        c.remove()
        times.append(time.perf_counter() - t)
    with open(os.environ["BENCH_DIRECT"], "w") as f:
        json.dump(times, f)

{tests}
'''

ONE = '''
def test_fixture_{i}(contain_run):
    contain_run(None, ["true"], network="none").wait()
'''


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=60)
    n = ap.parse_args().n
    work = tempfile.mkdtemp(prefix="contain-bench-fixture-")
    try:
        with open(os.path.join(work, "conftest.py"), "w") as f:
            f.write(CONFTEST)
        with open(os.path.join(work, "test_overhead.py"), "w") as f:
            f.write(textwrap.dedent(TESTS).format(n=n, tests="".join(ONE.format(i=i) for i in range(n))))
        env = dict(os.environ, BENCH_OUT=os.path.join(work, "durations.json"),
                   BENCH_DIRECT=os.path.join(work, "direct.json"))
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", work],
                             cwd=work, env=env, capture_output=True, text=True, timeout=1200)
        if out.returncode != 0:
            print(out.stdout[-3000:], out.stderr[-2000:])
            return 1
        durations = json.load(open(env["BENCH_OUT"]))
        direct = json.load(open(env["BENCH_DIRECT"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The first fixture test also makes the session's image: leave it out.
    per_test = [v for k, v in durations.items() if "test_fixture_" in k and not k.endswith("_0")]
    with_fixture = statistics.median(per_test) * 1000
    plain = statistics.median(direct) * 1000
    print(f"\npytest fixture overhead ({time.strftime('%Y-%m-%d')}, {os.uname().release})")
    print(f"  test with contain_run (set-up + call + teardown)  {with_fixture:7.2f} ms")
    print(f"  the same container run, waited, removed directly {plain:7.2f} ms")
    print(f"  overhead per test                                 {with_fixture - plain:7.2f} ms"
          f"   (goal: at most 10 ms)")
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        print("  testcontainers with Docker: skipped, no Docker engine runs here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
