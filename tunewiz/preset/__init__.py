"""Presets: the typed schema (``schema``), YAML files with ``--set`` overrides (``files``) and the
explanations of validation errors (``explain``)."""
