"""Makes ``import inventory_service`` (and its sibling modules) work in this folder's tests.

The project runs pytest with ``--import-mode=importlib``, which does not put test folders
on ``sys.path``; modules next to their tests need this (or an installed package).
"""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
