"""Backbones: features [B, C, T] -> tokens. The contract and the table of kinds: base.py."""
from .base import BACKBONES, BackboneOutput, build_backbone, register_backbone
from .vit import ViT, ViTConfig

register_backbone(ViTConfig, ViT)

__all__ = ["BACKBONES", "BackboneOutput", "ViT", "ViTConfig", "build_backbone", "register_backbone"]
