"""The `pg2qdrant` program: the command group with every command registered.

One module per command, none importing another: :mod:`.migrate` (``migrate``, its alias ``pg``, and
``inspect``, which take the same flags), :mod:`.sync`, :mod:`.verify`, :mod:`.state`, :mod:`.alias`, :mod:`.demo`.
They share :mod:`.common` (the group, the flags of the source, target and copy, error handling),
:mod:`.flow_options` (verify's and sync's flags, which ``migrate --verify`` / ``--then-sync`` take
too) and :mod:`.config_file` (``--config``: a migration file's entries). Importing a command's
module registers it on the group.
"""

from __future__ import annotations

from pg2qdrant.cli import alias, demo, migrate, state, sync, verify  # noqa: F401  (importing registers the commands)
from pg2qdrant.cli.common import main

#: The `pg2qdrant` program (the entry point, ``python -m pg2qdrant`` and the tests run it).
program = main
