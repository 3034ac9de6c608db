"""Chapter 2's measurements on trained nets: the data (MNIST and its rotations, Fashion-MNIST as out-of-distribution),
each seed's quality, MC sweep and out-of-distribution scores, the rotated digits and the regression gap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from dropnotes import data, metrics, train
from dropnotes.experiments.ensembles.config import DROPOUT_NET, N_BOOT, ROTATION_ANGLES, ROTATION_SAMPLES, EnsemblesConfig
from dropnotes.layers import Dropout
from dropnotes.mc import classifier_summary, mc_predict, regression_summary
from dropnotes.runtime import seed_everything, stream, stream_seed
from dropnotes.stacked import StackedMLP
from dropnotes.stats import paired_bootstrap_auroc

# --------------------------------------------------------------------------- data


def rotate(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (N, C, H, W) float images anticlockwise about their centre (bilinear, zero fill)."""
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
                         dtype=images.dtype, device=images.device).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, align_corners=False)


def _prepare(cfg: EnsemblesConfig, device: torch.device) -> dict[str, torch.Tensor]:
    mnist, fashion = data.load_images(cfg.dataset), data.load_images(cfg.ood_dataset)
    x, y = data.subset(mnist.x_train, mnist.y_train, cfg.train_size + cfg.val_size, stream(cfg.seed, "subset"))
    f = lambda t: train.images_to_float(t).to(device)  # noqa: E731
    x_test = f(mnist.x_test)
    n = cfg.train_size
    return {"x_train": f(x[:n]), "y_train": y[:n].to(device), "x_val": f(x[n:]), "y_val": y[n:].to(device),
            "x_test": x_test, "y_test": mnist.y_test.to(device),
            "ood_fashion": f(fashion.x_test[: cfg.ood_size]), "ood_inverted": 1.0 - x_test[: cfg.ood_size]}


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def _logits_eval(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = net.training
    net.eval()
    out = net(x)
    net.train(was)
    return out


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


def _scores(probs_samples: torch.Tensor) -> dict[str, torch.Tensor]:
    """OOD scores (higher = more likely out of distribution) from (S, N, K) probabilities."""
    mean = probs_samples.mean(0)
    s = classifier_summary(torch.log(probs_samples.clamp_min(1e-12)))
    return {"max-softmax": 1 - mean.max(-1).values, "entropy": s.entropy, "mutual information": s.mutual_information}


def _example_nll(probs: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-example NLL (nats) of the true class; (K, N, C) probabilities are averaged over K *losses*."""
    nll = -torch.log(probs.gather(-1, y.expand(*probs.shape[:-1]).unsqueeze(-1)).squeeze(-1).clamp_min(1e-12))
    return (nll.mean(0) if nll.dim() == 2 else nll).double().cpu().numpy()


@torch.no_grad()
def evaluate_seed(cfg: EnsemblesConfig, d: dict, ens: StackedMLP, net: nn.Module, seed: int) -> dict:
    """Every measurement of one seed, on the same test examples for every model (so comparisons pair)."""
    x, y = d["x_test"], d["y_test"]
    torch.manual_seed(stream_seed(seed, "mc-masks"))  # the evaluation's masks: their own stream
    member_logits, ws_logits = ens(x), _logits_eval(net, x)
    # Temperature scaling (Guo et al. 2017), one T per net, fitted on the validation split.
    t_members = [metrics.fit_temperature(z, d["y_val"]) for z in ens(d["x_val"])]
    t_ws = metrics.fit_temperature(_logits_eval(net, d["x_val"]), d["y_val"])
    members = member_logits.softmax(-1)
    scaled = torch.stack([(z / t).softmax(-1) for z, t in zip(member_logits, t_members)])
    ws, ws_t = ws_logits.softmax(-1), (ws_logits / t_ws).softmax(-1)
    # The k-sweep's first repeat draws max(k) passes over the first mc_test_size images; when those are the whole
    # test set, the MC row reuses its first mc_samples passes instead of drawing them again.
    n = cfg.mc_test_size
    first = mc_predict(net, x[:n], max(cfg.mc_ks)).softmax(-1)
    reuse = n >= len(x) and cfg.mc_samples <= max(cfg.mc_ks)
    mc = (first[:cfg.mc_samples] if reuse else mc_predict(net, x, cfg.mc_samples).softmax(-1)).mean(0)
    rows = [("single net", i, members[i], 1.0) for i in range(cfg.members)]
    rows += [("single net + temperature", i, scaled[i], t_members[i]) for i in range(cfg.members)]
    rows += [("ensemble", -1, members.mean(0), 1.0), ("dropout, weight scaling", -1, ws, 1.0),
             ("dropout, weight scaling + temperature", -1, ws_t, t_ws), (f"dropout, MC ({cfg.mc_samples})", -1, mc, 1.0)]
    quality = pd.DataFrame([{"seed": seed, "model": name, "member": i, "error": metrics.error_rate(p, y),
                             "nll": metrics.nll(p, y), "ece": metrics.expected_calibration_error(p, y),
                             "brier": metrics.brier(p, y), "temperature": t} for name, i, p, t in rows])
    reliab = {name: metrics.reliability(p, y) for name, i, p, _ in rows if i <= 0 and "temperature" not in name}
    # Each trained model's mistakes on every test image (the dropout net's deterministic, weight-scaled prediction).
    test_wrong = {**{f"member {i}": (members[i].argmax(-1) != y).cpu().numpy() for i in range(cfg.members)},
                  DROPOUT_NET: (ws.argmax(-1) != y).cpu().numpy()}
    calibration = {"single net + temperature": _example_nll(scaled, y), "dropout, MC": _example_nll(mc, y)}

    # Monte-Carlo averaging versus weight scaling (Srivastava et al. 2014, Fig. 11), per test example.
    xs, ys = x[:n], y[:n]
    ws_wrong = (ws[:n].argmax(-1) != ys).float()
    wrong = {"weight scaling": ws_wrong.double().cpu().numpy()}
    sweep = []
    for r in range(cfg.mc_repeats):
        cum = (first if r == 0 else mc_predict(net, xs, max(cfg.mc_ks)).softmax(-1)).cumsum(0)
        for k in cfg.mc_ks:
            w = (cum[k - 1].argmax(-1) != ys).float()
            wrong[k] = wrong.get(k, 0.0) + w.double().cpu().numpy() / cfg.mc_repeats  # mean over repeats
            diff = w - ws_wrong
            sweep.append({"seed": seed, "repeat": r, "k": k, "error": float(w.mean()),
                          "ws_error": float(ws_wrong.mean()), "paired_se": float(diff.std() / math.sqrt(len(diff)))})

    # Out-of-distribution detection: every score on the same in- and out-of-distribution images.
    m = cfg.ood_size
    sources = {"in": x[:m], "fashion-mnist": d["ood_fashion"], "inverted mnist": d["ood_inverted"]}
    methods = {}
    for name, xx in sources.items():
        p_members = ens(xx).softmax(-1)
        methods[name] = {"single net": _scores(p_members[:1]), "ensemble": _scores(p_members),
                         "dropout, weight scaling": _scores(_logits_eval(net, xx).softmax(-1)[None]),
                         "dropout, MC": _scores(mc_predict(net, xx, cfg.mc_samples).softmax(-1))}
    ood, ood_pairs = [], []
    for shift in ("fashion-mnist", "inverted mnist"):
        for method, sc in methods["in"].items():
            for score in sc:
                if score == "mutual information" and method in ("single net", "dropout, weight scaling"):
                    continue  # a single deterministic prediction has no disagreement to measure
                ood.append({"seed": seed, "shift": shift, "method": method, "score": score,
                            "auroc": metrics.auroc(sc[score], methods[shift][method][score])})
        mc_in, mc_out = methods["in"]["dropout, MC"]["entropy"], methods[shift]["dropout, MC"]["entropy"]
        det_in, det_out = (methods[k]["dropout, weight scaling"]["entropy"] for k in ("in", shift))
        diff, se = paired_bootstrap_auroc(mc_in.cpu(), mc_out.cpu(), det_in.cpu(), det_out.cpu(), N_BOOT,
                                          seed=stream_seed(seed, f"bootstrap-{shift}"))
        ood_pairs.append({"seed": seed, "shift": shift, "auroc_mc": metrics.auroc(mc_in, mc_out),
                          "auroc_deterministic": metrics.auroc(det_in, det_out), "diff": diff, "se": se})
    return {"quality": quality, "sweep": pd.DataFrame(sweep), "ood": pd.DataFrame(ood), "reliability": reliab,
            "wrong": wrong, "calibration": calibration, "ood_pairs": pd.DataFrame(ood_pairs), "test_wrong": test_wrong,
            "rotation_pairs": rotation_test(cfg, d, net, seed)}


@torch.no_grad()
def rotation_test(cfg: EnsemblesConfig, d: dict, net: nn.Module, seed: int, digit: int = 1) -> dict:
    """The rotated-digit experiment as a paired test: ``cfg.rotation_digits`` test digits rotated through
    0-180 degrees. Per digit, the *rise* of the predictive entropy (its mean over 30-150 degrees minus its
    value at 0), for MC dropout (``ROTATION_SAMPLES`` passes) and for the same net's deterministic
    (weight-scaled) softmax. Returns the mean rises and the mean paired difference, with their SEs over digits."""
    imgs = d["x_test"][d["y_test"] == digit][: cfg.rotation_digits]
    torch.manual_seed(stream_seed(seed, "rotation-masks"))
    h_mc, h_det = [], []
    for a in ROTATION_ANGLES:
        xr = rotate(imgs, a)
        h_mc.append(_entropy(mc_predict(net, xr, ROTATION_SAMPLES).softmax(-1).mean(0)))
        h_det.append(_entropy(_logits_eval(net, xr).softmax(-1)))
    mid = torch.tensor([30 <= a <= 150 for a in ROTATION_ANGLES])
    rise = lambda h: (torch.stack(h)[mid].mean(0) - h[0]).double().cpu().numpy()  # noqa: E731
    r_mc, r_det = rise(h_mc), rise(h_det)
    se = lambda v: float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
    return {"seed": seed, "digits": len(r_mc), "rise_mc": float(r_mc.mean()), "rise_mc_se": se(r_mc),
            "rise_deterministic": float(r_det.mean()), "diff": float((r_mc - r_det).mean()), "diff_se": se(r_mc - r_det)}


@torch.no_grad()
def rotated_digit(cfg: EnsemblesConfig, d: dict, net: nn.Module, ens: StackedMLP, samples: int = ROTATION_SAMPLES,
                  angles: tuple[int, ...] = ROTATION_ANGLES, digit: int = 1) -> pd.DataFrame:
    """A test digit rotated through 0-180 degrees: MC softmax inputs/outputs and uncertainty per angle (the
    figure; the verdict uses :func:`rotation_test` over many digits)."""
    img = d["x_test"][(d["y_test"] == digit).nonzero()[0, 0]][None]
    rows = []
    for a in angles:
        xr = rotate(img, a)
        logits = mc_predict(net, xr, samples)[:, 0]  # (S, 10)
        s = classifier_summary(logits[:, None])
        ens_s = classifier_summary(torch.log(ens(xr).softmax(-1).clamp_min(1e-12)))
        probs = logits.softmax(-1)
        rows.append({"angle": a, "mc_prediction": int(s.mean.argmax()), "mc_entropy": float(s.entropy),
                     "mc_mutual_information": float(s.mutual_information),
                     "deterministic_entropy": float(_entropy(_logits_eval(net, xr).softmax(-1))),
                     "ensemble_entropy": float(ens_s.entropy),
                     **{f"p{c}": float(probs[:, c].mean()) for c in range(10)},
                     "logits": logits.cpu().numpy(), "probs": probs.cpu().numpy()})
    return pd.DataFrame(rows)


def regression_gap(seed: int, device: str, steps: int = 3000, p: float = 0.1, samples: int = 200) -> dict:
    """A 1-D regression with a gap in the inputs: MC-dropout predictive mean and std on a wide grid."""
    dev = torch.device(device)
    g = seed_everything(seed)
    x = torch.cat([torch.empty(40).uniform_(-1.0, -0.35, generator=g), torch.empty(40).uniform_(0.35, 1.0, generator=g)])
    y = torch.sin(3 * x) + 0.1 * torch.randn(80, generator=g)
    x, y = x[:, None].to(dev), y[:, None].to(dev)
    net = nn.Sequential(nn.Linear(1, 128), nn.ReLU(), Dropout(p), nn.Linear(128, 128), nn.ReLU(), Dropout(p),
                        nn.Linear(128, 1)).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        loss = F.mse_loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    grid = torch.linspace(-2.0, 2.0, 401, device=dev)[:, None]
    mean, std = regression_summary(mc_predict(net, grid, samples))
    gx, sd = grid.squeeze(1).cpu(), std.squeeze(1).cpu()
    regions = {"data": ((gx.abs() >= 0.35) & (gx.abs() <= 1.0)), "gap": gx.abs() < 0.2, "outside": gx.abs() > 1.5}
    return {"x": x.squeeze(1).cpu().numpy(), "y": y.squeeze(1).cpu().numpy(), "grid": gx.numpy(),
            "mean": mean.squeeze(1).cpu().numpy(), "std": sd.numpy(),
            "std_by_region": {k: float(sd[m].mean()) for k, m in regions.items()}}
