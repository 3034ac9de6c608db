"""Run by tests/test_distributed.py, under torchrun or plain python: train a small MLP with
dropnotes.train.fit_classifier and save the final parameters (rank 0)."""

import sys

import torch

from dropnotes import runtime, train
from dropnotes.models import MLP

rank, world = runtime.init_distributed()
gen = runtime.seed_everything(0)
x = torch.randn(256, 10, generator=gen)
y = (x[:, 0] > 0).long()
model = MLP(10, (32,), 2)  # no dropout: ranks would draw different masks
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
seen = [0]  # training examples this rank's model sees
model.register_forward_pre_hook(lambda m, args: seen.__setitem__(0, seen[0] + args[0].shape[0]) if m.training else None)
hist = train.fit_classifier(model, x, y, x, y, epochs=3, batch_size=32, optimizer=opt, eval_every=3,
                            generator=gen, max_norm=2.0)
if rank == 0:
    torch.save({"state": model.state_dict(), "world": world, "seen": seen[0], "loss": hist.train_loss_running.tolist()},
               sys.argv[1])
