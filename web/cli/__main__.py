"""python -m web.cli …: the `relay` command, where its script is not on the PATH."""

from web.cli import main

main()
