"""The shipped golden-path catalog: one workflow YAML per file (see docs/golden-paths.md).

The engine loads every ``*.yaml`` here at start (``INNOMINATUS_GOLDEN_PATHS_DIR`` names
another directory); this file only makes the directory part of the installed package.
"""
