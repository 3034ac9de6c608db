"""One module per chapter: its configurations, runs and verdicts. Notebooks call these."""

CHAPTERS = {
    "mechanics": "chapters/01_mechanics.ipynb",
    "ensembles": "chapters/02_ensembles.ipynb",
    "variational": "chapters/03_variational.ipynb",
    "droppath": "chapters/04_droppath_vit.ipynb",
    "llm": "chapters/05_llm_pretrain_finetune.ipynb",
    "interactions": "chapters/06_interactions.ipynb",
    "cost": "chapters/07_cost.ipynb",
}

TITLES = {
    "mechanics": "Dropout, mechanically",
    "ensembles": "Dropout as an ensemble",
    "variational": "Variational dropout",
    "droppath": "DropPath in Vision Transformers",
    "llm": "Dropout in LLM pretraining versus fine-tuning",
    "interactions": "Dropout's interactions",
    "cost": "The cost of dropout",
}
