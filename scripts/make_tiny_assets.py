"""Generate tunewiz's shipped tiny model and sample datasets (`tunewiz/assets/`), deterministically.

python scripts/make_tiny_assets.py            # everything, pretraining included (~10 min on 2 cores)
python scripts/make_tiny_assets.py --no-pretrain   # data, tokenizer, configs, random-init weights
python scripts/make_tiny_assets.py --weights-only  # only (re)pretrain the weights
python scripts/make_tiny_assets.py --check    # regenerate all but the weights in a temp dir and
                                              # compare with the committed files byte for byte
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tiny_assets.build import PRETRAIN_NOTE, build_static, build_weights

ASSETS = Path(__file__).resolve().parents[1] / "tunewiz" / "assets"
GENERATED_DIRS = ("datasets", "tiny")


def check(assets: Path, seed: int) -> list[str]:
    """Regenerate everything but the weights into a temp dir; return the differences from `assets`.

    Args:
        assets: The committed assets directory.
        seed: World seed.
    """
    with tempfile.TemporaryDirectory(prefix="tunewiz-assets-check-") as tmp:
        fresh = Path(tmp)
        # The weights are not rebuilt here, so the model card keeps saying what the committed weights are.
        card = assets / "tiny" / "README.md"
        pretrained = not card.is_file() or PRETRAIN_NOTE in card.read_text(encoding="utf-8")
        built = {p.relative_to(fresh) for p in build_static(fresh, seed, pretrained=pretrained)}
        # Only the generator's folders: other files under tunewiz/assets (eval tasks, ...) are not ours.
        committed = {
            p.relative_to(assets)
            for folder in GENERATED_DIRS
            for p in (assets / folder).rglob("*")
            if p.is_file() and p.suffix != ".safetensors"
        }
        problems = [f"missing from {assets}: {p}" for p in sorted(built - committed)]
        problems += [f"not produced by the generator: {p}" for p in sorted(committed - built)]
        problems += [
            f"differs from a fresh build: {p}"
            for p in sorted(built & committed)
            if (fresh / p).read_bytes() != (assets / p).read_bytes()
        ]
    return problems


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and build or check the assets.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ASSETS, help="assets directory (default: tunewiz/assets)")
    parser.add_argument("--seed", type=int, default=0, help="world and initialisation seed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare a fresh build with the committed files")
    mode.add_argument(
        "--no-pretrain", action="store_true", help="ship the random initialisation as the weights"
    )
    mode.add_argument(
        "--weights-only", action="store_true", help="keep the data and tokenizer; only pretrain"
    )
    parser.add_argument(
        "--pretrain-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra `--set` override for the pretraining run (repeatable), e.g. train.max_steps=2",
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out, args.seed)
        for line in problems:
            print(line, file=sys.stderr)
        print("assets match a fresh build" if not problems else f"{len(problems)} difference(s)")
        return 1 if problems else 0
    if not args.weights_only:
        for path in build_static(args.out, args.seed, pretrained=not args.no_pretrain):
            print(f"wrote {path}")
    build_weights(args.out, args.seed, run_pretraining=not args.no_pretrain, overrides=args.pretrain_set)
    print(f"wrote {args.out / 'tiny' / 'model.safetensors'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
