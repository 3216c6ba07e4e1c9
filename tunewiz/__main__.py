"""`python -m tunewiz`: the same entry point as the `tunewiz` command."""

from tunewiz.cli import main

main()
