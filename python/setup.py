"""Installs the moesim Python package with libmoesim.so inside it.

The library is the one `make` builds in the repository around this folder (build/libmoesim.so),
or the file $MOESIM_LIB names; when neither exists, `make build/libmoesim.so` is run first.
Offline with Debian's pip: pip install --no-build-isolation --no-index ./python (`make python`).
"""
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def find_library():
    lib = os.environ.get("MOESIM_LIB") or os.path.join(REPO, "build", "libmoesim.so")
    if not os.path.exists(lib) and os.path.exists(os.path.join(REPO, "Makefile")):
        subprocess.check_call(["make", "-C", REPO, "build/libmoesim.so"])
    if not os.path.exists(lib):
        raise SystemExit("moesim: %s not found: run `make` in the moesim repository first" % lib)
    return lib


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        dest = os.path.join(self.build_lib, "moesim")
        os.makedirs(dest, exist_ok=True)
        shutil.copy2(find_library(), os.path.join(dest, "libmoesim.so"))


setup(
    name="moesim",
    version="0.1.0",
    description="moesim's Mixture-of-Experts routers and layer on NumPy arrays and torch tensors",
    packages=["moesim"],
    python_requires=">=3.9",
    install_requires=["numpy"],
    cmdclass={"build_py": BuildWithLibrary},
    zip_safe=False,
)
