"""The chapters of the book: one module per chapter (its configuration, runs, verdicts and cost-model groups,
the contract of :mod:`dropnotes.experiments.contract`), and :data:`REGISTRY`, the one list of them in the
book's order. The CLI, the page, the scorecard, the seed blocks and the estimator loop over it; nothing else
names a chapter."""

from dropnotes.experiments import cost, droppath, ensembles, interactions, llm, mechanics, variational
from dropnotes.experiments.contract import Chapter, Registry

REGISTRY = Registry([
    Chapter("mechanics", "Dropout, mechanically", "chapters/01_mechanics.ipynb", mechanics),
    Chapter("ensembles", "Dropout as an ensemble", "chapters/02_ensembles.ipynb", ensembles),
    Chapter("variational", "Variational dropout", "chapters/03_variational.ipynb", variational),
    Chapter("droppath", "DropPath in Vision Transformers", "chapters/04_droppath_vit.ipynb", droppath),
    Chapter("llm", "Dropout in LLM pretraining versus fine-tuning", "chapters/05_llm_pretrain_finetune.ipynb", llm),
    Chapter("interactions", "Dropout's interactions", "chapters/06_interactions.ipynb", interactions),
    Chapter("cost", "The cost of dropout", "chapters/07_cost.ipynb", cost),
])

__all__ = ["REGISTRY", "Chapter", "Registry"]
