"""dropnotes: dropout variants, data, training and results for a book of reproducible dropout research.

Layers, from the bottom up: ``runtime`` (profiles, devices, seeds, argument checks) and ``data`` →
``functional`` → ``layers`` → ``models`` → ``mc``, ``train``, ``ensemble``, ``metrics``, ``stats`` →
``results`` → ``experiments`` (one module per chapter) → ``cli``. A lower layer never imports a
higher one.
"""

__version__ = "0.1.0"
