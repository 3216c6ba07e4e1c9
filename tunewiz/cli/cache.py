"""`tunewiz prepare PRESET` and `tunewiz cache list|clear`: the prepared-data cache (tunewiz.data.prepared).

Only typer is imported at module level; numpy, the tokenizer and rich load inside the commands.
"""

from __future__ import annotations

import typer

from tunewiz.cli.options import NoTuiOpt

cache_app = typer.Typer(
    name="cache",
    help="See and free the prepared (tokenized) data that `tunewiz prepare` and `tunewiz train` keep.",
    epilog="Example: `tunewiz cache list`, then `tunewiz cache clear --older-than 30d`.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command(
        "prepare",
        epilog="Example: `tunewiz prepare presets/tiny-lora.yaml --set data.max_seq_len=1024`",
    )(prepare)
    app.add_typer(cache_app, name="cache")


def prepare(
    preset: str = typer.Argument(
        ..., help="Preset YAML file, or a shipped preset name (`tunewiz presets list`)."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a preset value, as for `tunewiz train`: `--set data.max_seq_len=1024`."
    ),
    no_tui: NoTuiOpt = False,
) -> None:
    """Tokenize (and pack) a preset's data ahead of training, on every core, into the prepared-data cache.

    `tunewiz train` with the same data settings, tokenizer and seed then only maps it. Data errors
    (file, row, field) show here, before any run exists.
    """
    from tunewiz.data.sources import check_data_paths
    from tunewiz.preset.files import load_preset
    from tunewiz.ui.data_phase import prepare_data
    from tunewiz.ui.live import choose_mode

    resolved, _ = load_preset(preset, list(set_))
    check_data_paths(resolved.data)  # a missing local file fails here, not after a Hub lookup of its name
    prepared = prepare_data(resolved, mode=choose_mode(no_tui))
    typer.echo(str(prepared.entry))


def _parse_age(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``."""
    from tunewiz.errors import TunewizError

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = text[:-1], text[-1:].lower()
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in units or value < 0:
        raise TunewizError(
            f"`--older-than {text}` is not an age", hint="write a number and a unit: `30d`, `12h`, `90m`"
        )
    return value * units[unit]


@cache_app.command("list", epilog="Example: `tunewiz cache list`")
def list_cache(
    cache_dir: str = typer.Option(
        None,
        "--cache-dir",
        help="The cache to list (default: $TUNEWIZ_CACHE, else ~/.cache/tunewiz/prepared).",
    ),
) -> None:
    """List prepared entries: key, size, what each was made from, when made and last used.

    Entries made from the same data say what sets them apart (the code version after a tunewiz update,
    seed, a setting, the tokenizer or the prompt format)."""
    import time
    from pathlib import Path

    from tunewiz.data.prepared import cache_root, differences, list_entries, unfinished
    from tunewiz.units import fmt_bytes, fmt_duration

    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    entries = list_entries(root)
    typer.echo(
        f"{root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
        f"{fmt_bytes(sum(e.bytes for e in entries))}"
    )
    partial = unfinished(root)
    if partial:
        gone = sum(abandoned for _, _, abandoned in partial)
        typer.echo(
            f"and {len(partial)} unfinished preparation{'s' if len(partial) != 1 else ''} "
            f"({fmt_bytes(sum(size for _, size, _ in partial))}; never used as an entry): {gone} of a "
            "process that is gone, which `tunewiz cache clear` removes"
            + ("; the others are running, or another host's" if gone < len(partial) else "")
        )

    def ago(t: float) -> str:
        return f"{fmt_duration(max(time.time() - t, 0))} ago"

    differ = differences(entries)
    for e in entries:
        made = e.made_from
        samples = made.get("samples", {})
        paths = made.get("paths")
        typer.echo(
            f"{e.key[:12]}  {fmt_bytes(e.bytes):>9}  {' + '.join(made.get('data', []))} · "
            + (f"from {' + '.join(paths)} · " if paths else "")
            + f"{made.get('rows', '?'):,} rows → {samples.get('train', '?'):,} train + "
            f"{samples.get('validation', '?'):,} val · max_seq_len {made.get('max_seq_len')} · "
            f"template {made.get('template')} · tokenizer {made.get('tokenizer')} · "
            f"made {ago(e.created)}, used {ago(e.last_used)}"
            + (
                f" · differs from the other entries of this data in: {', '.join(differ[e.key])}"
                if differ.get(e.key)
                else ""
            )
        )


@cache_app.command("clear", epilog="Example: `tunewiz cache clear --older-than 30d`")
def clear_cache(
    key: str = typer.Argument(None, help="An entry's key (or its first characters, as `cache list` shows)."),
    older_than: str = typer.Option(
        None, "--older-than", help="Only entries not used for this long: `30d`, `12h`, `90m`."
    ),
    cache_dir: str = typer.Option(
        None,
        "--cache-dir",
        help="The cache to clear (default: $TUNEWIZ_CACHE, else ~/.cache/tunewiz/prepared).",
    ),
) -> None:
    """Delete prepared entries: one KEY, those unused for `--older-than`, or all; and leftovers of
    killed preparations. A running training keeps reading the entry it mapped."""
    import time
    from pathlib import Path

    from tunewiz.data.prepared import cache_root, list_entries, remove_entry, remove_leftovers
    from tunewiz.errors import TunewizError
    from tunewiz.units import fmt_bytes

    root = Path(cache_dir).expanduser() if cache_dir else cache_root()
    entries = list_entries(root)
    if key is not None and not key.strip():
        raise TunewizError(
            "`tunewiz cache clear` got an empty key",
            hint="copy a key from `tunewiz cache list`, or give none to clear every entry",
        )
    if key is not None:
        entries = [e for e in entries if e.key.startswith(key)]
        if len(entries) != 1:
            raise TunewizError(
                f"{'no' if not entries else len(entries)} prepared entr{'y' if not entries else 'ies'} "
                f"in {root} start{'s' if not entries else ''} with `{key}`",
                hint="copy a key from `tunewiz cache list`",
            )
    if older_than is not None:
        age = _parse_age(older_than)
        entries = [e for e in entries if time.time() - e.last_used >= age]
    freed = 0
    for e in entries:
        freed += remove_entry(root, e.key)
    freed += remove_leftovers(root)
    typer.echo(
        f"removed {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} from {root}, "
        f"freed {fmt_bytes(freed)}"
    )
