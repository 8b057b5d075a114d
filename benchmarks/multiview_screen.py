"""Fast screening of multi-view (LeJEPA-style) settings on Fashion-MNIST, on a validation split carved from train.

The loop of ``model.objective=multiview`` reduced to what a screening run needs (hjepa's ViT encoder and batched
crops, SIGReg or VICReg on an MLP projector, LeJEPA's (1 - lambda) prediction + lambda regulariser with the centre of
the global views as the target; one level, no predictor), so a setting can be tried in a few minutes. Validation:
the train split's images are permuted with a fixed seed; the first 10,000 are the validation split (queries: the
first ``--val`` of them), the bank ``--bank`` images spread over the other 50,000. The test split is never read.
k-NN is DINO's (k=20, T=0.07) on the level-0 pooled feature (the level norm of each token, then the mean), the
feature hjepa exports. Settings chosen here were then confirmed with ``hjepa-train`` and ``benchmarks/learning.py``.

    python benchmarks/multiview_screen.py --name p16 --patch 16 --steps 600
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from hjepa.config import ModelConfig
from hjepa.data import EvalTransform, PretrainAugment, build_dataset
from hjepa.inference.features.knn import knn_evaluate
from hjepa.losses.sigreg import SIGRegLoss
from hjepa.models.pos_embed import sincos_2d
from hjepa.models.vit import ViTEncoder

RESULTS = Path(__file__).parent / "results" / "multiview_screen"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="screen")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--minutes", type=float, default=0, help="stop early after this many minutes (0: never)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--img", type=int, default=32)
    p.add_argument("--globals", type=int, default=2)
    p.add_argument("--locals", type=int, default=0)
    p.add_argument("--local_img", type=int, default=16)
    p.add_argument("--gscale", type=float, nargs=2, default=[0.3, 1.0])
    p.add_argument("--lscale", type=float, nargs=2, default=[0.05, 0.3])
    p.add_argument("--lam", type=float, default=0.05)
    p.add_argument("--reg", default="sigreg", choices=["sigreg", "vicreg"])
    p.add_argument("--loss", default="lejepa", choices=["lejepa", "infonce", "supervised"],
                   help="lejepa: (1-lam) prediction + lam regulariser; infonce: SimCLR's NT-Xent over the global views;"
                        " supervised: cross-entropy of a linear head on the pooled feature (a ceiling for the "
                        "architecture, uses the labels)")
    p.add_argument("--tau", type=float, default=0.2, help="InfoNCE temperature")
    p.add_argument("--pixel_nn_pool", type=int, default=0,
                   help="neighbour views: the second global view is cut from the image's nearest neighbour in raw "
                        "pixels (cosine, each image centred) among this many random train images (0: off)")
    p.add_argument("--pixel_nn_prob", type=float, default=0.5,
                   help="share of the batch whose second view is a neighbour")
    p.add_argument("--nn_queue", type=int, default=0,
                   help="with --loss infonce: NNCLR, each view's positive is the nearest neighbour of the other view "
                        "in a queue of this many past embeddings (0: SimCLR's own other view)")
    p.add_argument("--proj", type=int, default=128, help="projector output width (0: no projector)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--eval_every", type=int, default=300)
    p.add_argument("--feat", default="ln_mean", choices=["ln_mean", "mean"])
    p.add_argument("--keep", type=float, default=1.0,
                   help="each global view keeps this fraction of its tokens, drawn at random (masked views, as MSN)")
    p.add_argument("--ema", type=float, default=0.0, help="evaluate an EMA copy of the encoder with this momentum")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bank", type=int, default=10000)
    p.add_argument("--val", type=int, default=2000)
    return p.parse_args()


def main() -> None:  # noqa: C901 - one flat loop, read top to bottom
    a = parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    dataset = build_dataset("fashion-mnist", "train")
    images, labels = dataset.tensors()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1234))
    val_idx, train_idx = order[:10000], order[10000:]
    train_images = images[train_idx]
    bank_sel = train_idx[torch.linspace(0, len(train_idx) - 1, a.bank).long()]
    val_sel = val_idx[: a.val]

    cfg = ModelConfig(encoder="custom", embed_dim=a.dim, depth=a.depth, num_heads=a.heads, img_size=a.img,
                      patch_size=a.patch, num_levels=1)
    encoder = ViTEncoder(cfg)
    full_grid = encoder.grid
    local_pos = sincos_2d(a.dim, (a.local_img // a.patch,) * 2, span=full_grid)[None]
    ema_encoder = copy.deepcopy(encoder) if a.ema else None

    def encode(x: torch.Tensor, pos: torch.Tensor | None = None, which: nn.Module | None = None,
               keep: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        which = which or encoder
        tokens = which.vit.patch_embed(x) + (which.pos_embed if pos is None else pos)
        if keep < 1.0:
            count = max(1, round(keep * tokens.shape[1]))
            kept = torch.rand(tokens.shape[:2], generator=generator).argsort(1)[:, :count]
            tokens = torch.gather(tokens, 1, kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return which.vit.norm(which.vit.blocks(tokens))

    def pooled(tokens: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(tokens, tokens.shape[-1:]).mean(1) if a.feat == "ln_mean" else tokens.mean(1)

    if a.proj:
        projector: nn.Module = nn.Sequential(
            nn.Linear(a.dim, a.hidden), nn.BatchNorm1d(a.hidden), nn.GELU(),
            nn.Linear(a.hidden, a.hidden), nn.BatchNorm1d(a.hidden), nn.GELU(), nn.Linear(a.hidden, a.proj))
    else:
        projector = nn.Identity()
    classifier = nn.Linear(a.dim, 10)
    params = list(encoder.parameters()) + list(projector.parameters()) + list(classifier.parameters())
    train_labels = labels[train_idx]
    optimizer = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.wd, fused=True)
    sigreg = SIGRegLoss(num_slices=256)
    global_view = PretrainAugment(a.img, crop_scale=tuple(a.gscale), mean=dataset.mean, std=dataset.std)
    local_view = PretrainAugment(a.local_img, crop_scale=tuple(a.lscale), mean=dataset.mean, std=dataset.std)
    evaluate = EvalTransform(a.img, mean=dataset.mean, std=dataset.std)

    def vicreg(z: torch.Tensor) -> torch.Tensor:
        z = z - z.mean(0)
        variance = F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()
        cov = (z.T @ z) / (len(z) - 1)
        return 25 * variance + (cov - torch.diag(torch.diag(cov))).square().sum() / z.shape[1]

    @torch.no_grad()
    def knn() -> dict[str, float]:
        """k-NN on the validation split of the exported feature (and of the projector's output, a diagnostic)."""
        encoder.eval()
        projector.eval()

        def features(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            token_batches = [encode(evaluate(images[idx[i:i + 500]]), which=ema_encoder)
                             for i in range(0, len(idx), 500)]
            pooled_batches = [pooled(t) for t in token_batches]
            token_maps = torch.cat([F.layer_norm(t, t.shape[-1:]).flatten(1) for t in token_batches])
            return torch.cat(pooled_batches), torch.cat([projector(p) for p in pooled_batches]), token_maps

        (bank, bank_z, bank_t), (val, val_z, val_t) = features(bank_sel), features(val_sel)
        encoder.train()
        projector.train()

        def top1(b: torch.Tensor, q: torch.Tensor) -> float:
            return knn_evaluate(b, labels[bank_sel], q, labels[val_sel], ks=[20], temperature=0.07,
                                num_classes=10)[20]["top1"]

        mean = bank.mean(0)  # a diagnostic only: DINO's protocol does not centre
        centred = val - val.mean(0)
        eigenvalues = torch.linalg.eigvalsh(centred.T @ centred / len(centred)).clamp_min(0)
        return {"knn_val": top1(bank, val), "knn_val_centred": top1(bank - mean, val - mean),
                "knn_val_projector": top1(bank_z, val_z), "knn_val_token_map": top1(bank_t, val_t),
                "participation_ratio": float(eigenvalues.sum() ** 2 / eigenvalues.square().sum())}

    queue = F.normalize(torch.randn(a.nn_queue, a.proj or a.dim), dim=1) if a.nn_queue else None
    queue_ptr = 0

    def nnclr(z: torch.Tensor) -> torch.Tensor:
        """NNCLR (Dwibedi et al. 2021): the positive of view 1 is view 0's nearest neighbour in the queue."""
        nonlocal queue_ptr
        z0, z1 = F.normalize(z[0], dim=1), F.normalize(z[1], dim=1)
        support = queue[(z0.detach() @ queue.T).argmax(1)]
        support1 = queue[(z1.detach() @ queue.T).argmax(1)]
        target = torch.arange(len(z0))
        loss = F.cross_entropy(support @ z1.T / a.tau, target) + F.cross_entropy(support1 @ z0.T / a.tau, target)
        loss = loss / 2
        with torch.no_grad():
            index = (queue_ptr + torch.arange(len(z0))) % len(queue)
            queue[index] = z0.detach()
            queue_ptr = int(index[-1] + 1) % len(queue)
        return loss

    def infonce(z: torch.Tensor) -> torch.Tensor:
        """NT-Xent (SimCLR) over views [V, B, D]: each view's positive is the same image's other views."""
        views, batch = z.shape[:2]
        flat = F.normalize(z.reshape(views * batch, -1), dim=1)
        logits = flat @ flat.T / a.tau
        logits = logits.masked_fill(torch.eye(len(flat), dtype=torch.bool), float("-inf"))
        image = torch.arange(views * batch) % batch
        positive = (image[:, None] == image[None, :]) & ~torch.eye(len(flat), dtype=torch.bool)
        log_prob = logits.log_softmax(1)
        return -(log_prob.masked_fill(~positive, 0).sum(1) / positive.sum(1)).mean()

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / a.warmup)
        return a.lr * warm * (0.5 * (1 + math.cos(math.pi * min(1.0, step / a.steps))) * 0.99 + 0.01)

    def pixel_vectors(batch: torch.Tensor) -> torch.Tensor:
        flat = batch.float().flatten(1)
        return F.normalize(flat - flat.mean(1, keepdim=True), dim=1)

    pixel_table = pixel_vectors(train_images) if a.pixel_nn_pool else None
    history, started, seen = [], time.time(), 0
    generator = torch.Generator().manual_seed(a.seed)
    for step in range(a.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        picked = torch.randint(0, len(train_images), (a.batch,), generator=generator)
        x = train_images[picked]
        if a.pixel_nn_pool:
            x_second = x.clone()
            with torch.no_grad():
                pool = torch.randint(0, len(train_images), (a.pixel_nn_pool,), generator=generator)
                flat = pixel_vectors(x)
                scores = flat @ pixel_table[pool].T
                scores[pool[None, :] == picked[:, None]] = -2  # never the image itself
                neighbour = train_images[pool[scores.argmax(1)]]
                swap = torch.rand(a.batch, generator=generator) < a.pixel_nn_prob
                x_second[swap] = neighbour[swap]
            globals_ = [global_view(x, generator), global_view(x_second, generator)]
            globals_ += [global_view(x, generator) for _ in range(a.globals - 2)]
        else:
            globals_ = [global_view(x, generator) for _ in range(a.globals)]
        locals_ = [local_view(x, generator) for _ in range(a.locals)]
        z_global = projector(pooled(encode(torch.cat(globals_), keep=a.keep, generator=generator)))
        z_global = z_global.view(a.globals, a.batch, -1)
        z = z_global
        if a.locals:
            z_local = projector(pooled(encode(torch.cat(locals_), local_pos))).view(a.locals, a.batch, -1)
            z = torch.cat([z_global, z_local])
        prediction = (z - z_global.mean(0)).square().mean()
        if a.loss == "supervised":
            logits = classifier(pooled(encode(torch.cat(globals_))))
            regularizer = F.cross_entropy(logits, train_labels[picked].repeat(a.globals))
        elif a.loss == "infonce":
            regularizer = nnclr(z) if queue is not None else infonce(z)
        elif a.reg == "sigreg":
            regularizer = torch.stack([sigreg(view, step=step)["loss"] for view in z]).mean()
        else:
            regularizer = torch.stack([vicreg(view) for view in z]).mean()
        loss = regularizer if a.loss in ("infonce", "supervised") else (1 - a.lam) * prediction + a.lam * regularizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        if ema_encoder is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(ema_encoder.parameters()), list(encoder.parameters()), 1 - a.ema)
        seen += a.batch
        if (step + 1) % 20 == 0:
            print(f"step {step + 1} loss {loss.item():.4f} pred {prediction.item():.4f} reg {regularizer.item():.4f} "
                  f"{seen / (time.time() - started):.0f} img/s", flush=True)
        last = step + 1 == a.steps or (a.minutes and time.time() - started > a.minutes * 60)
        if (step + 1) % a.eval_every == 0 or last:
            row = {"step": step + 1, **knn(), "minutes": (time.time() - started) / 60}
            history.append(row)
            print(f"EVAL step {step + 1} knn_val {row['knn_val']:.2f} centred {row['knn_val_centred']:.2f} "
                  f"projector {row['knn_val_projector']:.2f} tokens {row['knn_val_token_map']:.2f} "
                  f"pr {row['participation_ratio']:.1f} "
                  f"at {row['minutes']:.1f} min", flush=True)
        if last:
            break
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{a.name}.json").write_text(json.dumps({"args": vars(a), "history": history}, indent=1))


if __name__ == "__main__":
    main()
