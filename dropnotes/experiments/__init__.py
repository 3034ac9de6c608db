"""The chapters of the book: one module (or package) per chapter (its configuration, runs and verdicts) and one
cost module per chapter under :mod:`dropnotes.experiments.costs` (its model groups), the contract of
:mod:`dropnotes.experiments.contract`; and :data:`REGISTRY`, the one list of them in the book's order. The CLI,
the page, the scorecard, the seed blocks and the estimator loop over it; nothing else names a chapter."""

from dropnotes.experiments import cost, droppath, ensembles, interactions, llm, mechanics, variational
from dropnotes.experiments.contract import Chapter, Registry
from dropnotes.experiments.costs import cost as cost_costs
from dropnotes.experiments.costs import droppath as droppath_costs
from dropnotes.experiments.costs import ensembles as ensembles_costs
from dropnotes.experiments.costs import interactions as interactions_costs
from dropnotes.experiments.costs import llm as llm_costs
from dropnotes.experiments.costs import mechanics as mechanics_costs
from dropnotes.experiments.costs import variational as variational_costs

REGISTRY = Registry([
    Chapter("mechanics", "Dropout, mechanically", "chapters/01_mechanics.ipynb", mechanics,
            mechanics_costs),
    Chapter("ensembles", "Dropout as an ensemble", "chapters/02_ensembles.ipynb", ensembles,
            ensembles_costs),
    Chapter("variational", "Variational dropout", "chapters/03_variational.ipynb", variational,
            variational_costs),
    Chapter("droppath", "DropPath in Vision Transformers", "chapters/04_droppath_vit.ipynb", droppath,
            droppath_costs),
    Chapter("llm", "Dropout in LLM pretraining versus fine-tuning", "chapters/05_llm_pretrain_finetune.ipynb", llm,
            llm_costs),
    Chapter("interactions", "Dropout's interactions", "chapters/06_interactions.ipynb", interactions,
            interactions_costs),
    Chapter("cost", "The cost of dropout", "chapters/07_cost.ipynb", cost,
            cost_costs),
])

__all__ = ["REGISTRY", "Chapter", "Registry"]
