from .vit import BackboneOutput, ViT, ViTConfig

__all__ = ["BackboneOutput", "ViT", "ViTConfig"]
