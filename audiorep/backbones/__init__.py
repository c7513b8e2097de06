"""Backbones: features [B, C, T] -> tokens. The contract and the table of kinds: base.py."""
from .base import BACKBONES, BackboneOutput, build_backbone, register_backbone
from .conv import ConvConfig, ConvTransformer
from .frame import Frame, FrameConfig
from .vit import ViT, ViTConfig

register_backbone(ViTConfig, ViT)
register_backbone(ConvConfig, ConvTransformer)
register_backbone(FrameConfig, Frame)

__all__ = ["BACKBONES", "BackboneOutput", "ConvConfig", "ConvTransformer", "Frame", "FrameConfig", "ViT", "ViTConfig",
           "build_backbone", "register_backbone"]
