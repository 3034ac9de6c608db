"""The stacked models: K independent models of one architecture trained as one, in one step.

One small MLP cannot keep a GPU busy: its step is a few dozen tiny kernels, each costing more to
launch than to run. Stacking K models along a leading axis keeps the number of kernels per step
(one ``baddbmm`` instead of K ``addmm``) and multiplies the useful work by K, so the arms × seeds
of a chapter cost about as much as one model (see ``shared/design-notes``; measured by
``dropnotes estimate``).

Each of the K models has its own

* initialisation (stacked from K ordinary :class:`~dropnotes.models.MLP` modules, or drawn here),
* data order (a (K, N) permutation drawn per epoch),
* noise: input and hidden drop rates, the noise's kind (Bernoulli or Gaussian units, DropConnect on the
  weights; pixel-wise or channel-wise in a CNN),
* learning rate, weight decay, max-norm and gradient-clipping threshold,
* early-stopping record (its best parameters and epoch on the validation data), and
* life: a model whose loss stops being finite is frozen at that step and reported; the others go on.

The maths is exactly K separate trainings: the loss is the sum of the K mean losses, so each model's
gradient is its own; SGD with momentum is applied per element with per-model rates; Bernoulli masks
use per-model keep probabilities. The masks of the K models come from one generator per group (one
kernel per layer), so model k's masks depend on which models share its group: the group is recorded
in the history (``group``) so a number can be reproduced.

Four architectures are stacked: :class:`StackedMLP` (batched matrix products), :class:`StackedCNN`
(chapter 6's batch-norm CNN as grouped convolutions: model k owns channel block k of every layer, so its
batch-norm statistics are its own), :class:`StackedLSTMLM` (chapter 3's language models, each with its
own dropout scheme, one batched LSTM cell per time step; trained by :func:`fit_stacked_lm`) and
:class:`StackedViT` (chapter 4's Vision Transformers, each with its own per-block drop-path rates; trained
by :func:`fit_stacked` with AdamW, a per-epoch schedule and augmentation).

No host synchronisation happens inside an epoch: losses, errors and the alive flags stay on the
device and are read at the evaluation points only.

The package, one concern a file (lower files never import higher ones):

* ``noise``: per-model values, generators and parameters; Bernoulli and Gaussian unit noise;
* ``optim``: per-model SGD, AdamW, clipping and max-norm;
* ``mlp``: :class:`StackedMLP`, :class:`StackedSparseMLP`;
* ``cnn``: :class:`StackedCNN`;
* ``fit``: the classifiers' step (:func:`make_step`), loop (:func:`fit_stacked`), evaluation and graph capture;
* ``lstm_lm``: :class:`StackedLSTMLM` and its loop (:func:`make_lm_step`, :func:`fit_stacked_lm`);
* ``transformer``: :class:`StackedViT`, :class:`StackedGPT`;
* ``windows``: the GPTs' loop on token windows (:func:`make_window_step`, :func:`fit_stacked_windows`).
"""

from __future__ import annotations

from dropnotes.stacked.noise import (  # noqa: F401
    _values, _per_model, _generators, _seeded, dropout_mult, _keep_mult, noise_constants, unit_noise, _weight,
)
from dropnotes.stacked.optim import (  # noqa: F401
    _flat, _per_model_shape, _clip_factor, _clipped_grads, _sgd_step, _adam_step, _max_norm_,
)
from dropnotes.stacked.mlp import StackedMLP, StackedSparseMLP, _SparseWeights, _autocast_dtype, _ConnectedLinear  # noqa: F401
from dropnotes.stacked.cnn import StackedCNN  # noqa: F401
from dropnotes.stacked.fit import (  # noqa: F401
    FitResult, _BestEpochs, _mark_dead, epoch_orders, _stacked_logits, evaluate_stacked, predict_stacked,
    _per_model_state, fit_stacked, make_step, _captured,
)
from dropnotes.stacked.lstm_lm import (  # noqa: F401
    LM_SCHEMES, StackedLSTMLM, _ScaledRowsCast, _LSTMLayer, lm_windows, _graphed, lm_window_losses_stacked,
    mc_window_losses, make_lm_step, fit_stacked_lm,
)
from dropnotes.stacked.transformer import (  # noqa: F401
    _linear, _norm_linear, _drop_path_mult, _BLOCK_TENSORS, _StackedTransformer, StackedViT, _runs, StackedGPT,
)
from dropnotes.stacked.windows import window_orders, make_window_step, fit_stacked_windows  # noqa: F401

__all__ = [
    'dropout_mult', 'noise_constants', 'unit_noise', 'StackedMLP', 'StackedSparseMLP', 'StackedCNN', 'FitResult',
    'epoch_orders', 'evaluate_stacked', 'predict_stacked', 'fit_stacked', 'make_step', 'LM_SCHEMES',
    'StackedLSTMLM', 'lm_windows', 'lm_window_losses_stacked', 'mc_window_losses', 'make_lm_step', 'fit_stacked_lm',
    'StackedViT', 'StackedGPT', 'window_orders', 'make_window_step', 'fit_stacked_windows',
]
