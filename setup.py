# The cffi extension and the monitor program are declared here because
# setuptools reads cffi_modules and command classes only from setup();
# everything else lives in pyproject.toml.
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_ext import build_ext

MONITOR_SOURCE = "src/contain/_native/monitor.c"


class BuildWithMonitor(build_ext):
    """Also build contain-monitor, the small parent of detached containers,
    next to the extension (in the wheel, or in place for editable installs)."""

    def run(self):
        super().run()
        target_dir = os.path.dirname(self.get_ext_fullpath("contain._native._contain_native"))
        os.makedirs(target_dir, exist_ok=True)
        # musl where it is installed (Debian's musl-tools): every start execs
        # the monitor, and glibc's start-up alone asks the CPU about its
        # caches dozens of times, which in a VM traps to the hypervisor each
        # time (0.55 ms of CPU per start measured, against 0.03 ms for musl).
        musl = shutil.which("musl-gcc")
        if musl:
            target = os.path.join(target_dir, "contain-monitor")
            done = subprocess.run([musl, "-O2", "-Wall", "-static", "-o", target, MONITOR_SOURCE])
            if done.returncode == 0:
                return
        objects = self.compiler.compile([MONITOR_SOURCE], output_dir=self.build_temp,
                                        extra_postargs=["-O2", "-Wall"])
        try:
            # Static: no dynamic loader at each start, and less shared memory.
            self.compiler.link_executable(objects, "contain-monitor", output_dir=target_dir,
                                          extra_postargs=["-static"])
        except Exception:  # no static libc installed: a dynamic one serves
            self.compiler.link_executable(objects, "contain-monitor", output_dir=target_dir)

    def get_outputs(self):
        target_dir = os.path.dirname(self.get_ext_fullpath("contain._native._contain_native"))
        return super().get_outputs() + [os.path.join(target_dir, "contain-monitor")]


setup(
    cffi_modules=["src/contain/_native/_build.py:ffibuilder"],
    cmdclass={"build_ext": BuildWithMonitor},
)
