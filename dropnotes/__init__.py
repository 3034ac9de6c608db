"""dropnotes: dropout variants, data, training and results for a book of reproducible dropout research.

Floors, from the bottom up (``tests/test_layers.py`` checks every import against them): ``runtime``, ``amp``,
``metrics``, ``verdict`` → ``functional``, ``data`` → ``layers``, ``bench`` → ``models``, ``mc``, ``train`` →
``stacked`` (the batched engine) → ``ensemble``, ``results``, ``stats`` → ``experiments`` (one module per
chapter), ``notebooks`` → ``scorecard``, ``sweep``, ``estimate`` → ``page``, ``book`` → ``cli``. A module
imports only from floors below its own, at module level.
"""

__version__ = "0.1.0"
