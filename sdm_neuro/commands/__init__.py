"""One module per CLI subcommand; each defines a click command named ``command``.

Modules here must stay cheap to import: torch, lava and slayer are imported inside the
command functions, never at module level.
"""

# (module, command name) in the order ``sdm-neuro --help`` lists them.
COMMANDS = [
    "train",
    "finetune",
    "convert",
    "tsm-plot",
    "sample",
    "evaluate",
    "ablate",
    "info",
    "export",
    "simulate",
    "energy-report",
]
