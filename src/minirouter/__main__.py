"""`python -m minirouter` is the `minirouter` command."""

from minirouter.cli import main

main()
