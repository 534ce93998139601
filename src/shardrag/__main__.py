"""``python -m shardrag``: the command line."""

from shardrag.cli import main

main()
