"""Each chapter's cost-model groups, one module per chapter (the chapter contract's ``groups`` and its optional
``timed_steps``, ``compare_steps``, ``sequential_groups`` and ``calibration_points``; see
:mod:`dropnotes.experiments.contract`). They import their chapter, never the reverse: a chapter's code digest
(:func:`dropnotes.experiments.store.chapter_code`), which decides whether its stored seed blocks are kept, covers what
its runs execute and not how the estimator counts them."""
