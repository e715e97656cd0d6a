"""`python -m daycare_cli`: the same as the `daycare` command."""

from daycare_cli.cli.entry import main

main()
