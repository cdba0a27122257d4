"""Builds from ``pyproject.toml``; only moves setuptools' scratch folders (``build/``, ``*.egg-info``) out of the
clone into a temporary folder removed afterwards, so ``pip install .`` leaves the clone as it was."""

import atexit
import shutil
import tempfile

from setuptools import setup

scratch = tempfile.mkdtemp(prefix="reidkit-build-")
atexit.register(shutil.rmtree, scratch, True)
setup(options={"build": {"build_base": f"{scratch}/build"}, "egg_info": {"egg_base": scratch}})
