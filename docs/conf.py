"""Sphinx configuration for aiodiskqueue's documentation.

Build it with ``sphinx-build docs docs/_build/html`` after ``pip install -e ".[docs]"``.
"""

import sys
from pathlib import Path

# Document the package of this checkout, whichever aiodiskqueue happens to be installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiodiskqueue

project = "aiodiskqueue"
author = "the aiodiskqueue authors"
copyright = "2026, the aiodiskqueue authors"
release = aiodiskqueue.__version__
version = ".".join(release.split(".")[:2])

extensions = ["sphinx.ext.autodoc", "myst_parser"]
exclude_patterns = ["_build"]

# The docstrings write names in single backquotes: make those cross-references.
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"aiodiskqueue {release}"
