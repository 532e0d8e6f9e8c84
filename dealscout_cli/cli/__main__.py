"""`python -m dealscout_cli.cli ARGS`: the same as the `dealscout` script."""

from dealscout_cli.cli import main

main()
