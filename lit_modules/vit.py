"""An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale (arXiv 2010.11929).

Reference implementation: google-research/vision_transformer, as ported by timm's
``VisionTransformer`` (which we use as is: conv patch embedding with kernel = stride =
patch, class token, learned 1-D position embeddings, pre-LN blocks, final LayerNorm and,
with ``weight_init="jax"``, the zero-initialised head of the official code).
Reproduced: the architecture and the paper's data-scale comparison against a CNN (timm's
ResNet) of similar size, at toy scale (16x16 digits). Not reproduced: JFT/ImageNet-21k
pre-training and fine-tuning at resolution, which is where the paper's claim lives.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import timm.models.resnet as timm_resnet
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchmetrics

from lit_modules.optim import warmup_cosine_adamw
from timm.models.vision_transformer import VisionTransformer

Arch = Literal["vit", "resnet"]


def num_tokens(img_size: int, patch_size: int, class_token: bool = True) -> int:
    """Sequence length of a ViT: (H/P)(W/P) patches plus the class token."""
    if img_size % patch_size:
        raise ValueError(f"img_size {img_size} must be a multiple of patch_size {patch_size}")
    return (img_size // patch_size) ** 2 + int(class_token)


def build_vit(
    img_size: int, in_chans: int, num_classes: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float
) -> VisionTransformer:
    num_tokens(img_size, patch_size)  # validates divisibility
    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        class_token=True,
        global_pool="token",
        weight_init="jax",  # official init: zero head, lecun-normal patch embedding
    )


def build_resnet(in_chans: int, num_classes: int, width: int, layers: tuple[int, ...]) -> nn.Module:
    """timm's ResNet (BasicBlock) with a CIFAR-style stem: 3x3 stride-1 conv, no max-pool,
    as is usual for small images (a 7x7/2 stem + pool would leave 4x4 maps of a 16x16 input)."""
    channels = tuple(width * 2**i for i in range(len(layers)))
    net = timm_resnet.ResNet(
        block=timm_resnet.BasicBlock, layers=tuple(layers), num_classes=num_classes, in_chans=in_chans,
        stem_width=width, channels=channels,
    )
    stem_out = net.bn1.num_features  # timm's plain stem is 64 wide whatever stem_width says
    net.conv1 = nn.Conv2d(in_chans, stem_out, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


class ImageClassifier(L.LightningModule):
    """One classifier for both variants: only ``arch`` (and its size knobs) differs.

    Same optimizer (AdamW), schedule (linear warm-up, cosine decay), loss and budget.
    """

    def __init__(
        self,
        arch: Arch = "vit",
        img_size: int = 16,
        in_chans: int = 1,
        num_classes: int = 10,
        patch_size: int = 4,
        embed_dim: int = 128,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        resnet_width: int = 32,
        resnet_layers: tuple[int, ...] = (1, 1, 1, 1),
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 20,
        max_steps: int = 500,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if arch not in ("vit", "resnet"):
            raise ValueError(f"unknown arch {arch!r}; known: vit, resnet")
        self.save_hyperparameters()
        if arch == "vit":
            self.net = build_vit(img_size, in_chans, num_classes, patch_size, embed_dim, depth, num_heads, mlp_ratio)
        else:
            self.net = build_resnet(in_chans, num_classes, resnet_width, tuple(resnet_layers))
        acc = torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
        self.val_acc, self.test_acc = acc.clone(), acc.clone()
        self.test_count = torchmetrics.SumMetric()  # examples seen, summed over processes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val/top1", self.val_acc, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc(self(x), y)
        self.test_count.update(torch.tensor(float(len(y)), device=self.device))
        self.log("test/top1", self.test_acc)
        self.log("test/count", self.test_count)

    def configure_optimizers(self):
        hp = self.hparams
        return warmup_cosine_adamw(self.named_parameters(), hp.lr, hp.weight_decay, hp.warmup_steps, hp.max_steps,
                                   no_decay=lambda n, p: not (p.ndim > 1 and "pos_embed" not in n and "cls_token" not in n))
