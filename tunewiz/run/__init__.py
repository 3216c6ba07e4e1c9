"""The run directory (``directory``) and its event log ``events.jsonl`` (``events``)."""
