"""dropnotes: dropout variants, data, training and results for a book of reproducible dropout research.

Floors, from the bottom up (``tests/test_layers.py`` checks every import against them): ``runtime``, ``amp``,
``metrics``, ``verdict`` → ``functional``, ``data`` → ``layers``, ``bench`` → ``models``, ``mc``, ``train`` →
``stacked`` (the batched engine) → ``ensemble``, ``results``, ``stats``, ``costmodel`` (a step's counted cost) →
``experiments`` (one module per chapter, and their registry), ``notebooks`` → ``scorecard``, ``sweep``,
``estimate`` → ``page``, ``book`` → ``cli``. A module imports only from floors below its own, at module level
(one documented exception: ``experiments._base`` reads the registry at first use, since every chapter imports it).
"""

__version__ = "0.1.0"
