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

#: The commands that train with every process torchrun starts (docs/distributed.md); any other command
#: started by torchrun runs on rank 0 alone, as N processes would do the same work and write the same files.
DISTRIBUTED = ("pretrain", "finetune", "train")
#: What to use instead of torchrun, for the one-process commands that have a way to use several devices.
SEVERAL_DEVICES = {"segment": "for a folder on several GPUs, start it without torchrun and give --devices"}
