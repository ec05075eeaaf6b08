"""One module per ``lwi`` sub-command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; the
command-line front end (:mod:`lwi.cli`) only lists them here, so commands stay independent.
"""

COMMANDS = [
    "pretrain",
    "finetune",
    "train",
    "plan",
    "segment",
    "evaluate",
    "experiment",
    "preview",
    "info",
    "export",
    "demo",
]
