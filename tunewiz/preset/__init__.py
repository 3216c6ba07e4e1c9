"""Presets: the typed schema (``schema``) and YAML files with ``--set`` overrides (``files``)."""
