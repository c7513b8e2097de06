"""habla-liaa/encodecmae checkpoints -> audiorep names.

The HF-hub files (lpepino/encodecmae-v2/<model>.pt) are one dict {imports, config (gin
text), state_dict}; `torch.load(weights_only=True)` reads it and the converter uses only
`state_dict`, so nothing in the file is executed. Only the mel-input models (mel256-*)
map onto the frame backbone: the EnCodec-input ones need an EnCodec encoder frontend.

Released layout -> ours:
  wav_encoder.post_net                  backbone.proj
  masker.positional_encoder.scale       backbone.pos_scale
  visible_encoder.encoder_layers.{i}    backbone.blocks.{i}: wq, wk, wv -> attn.qkv (stacked), wo -> attn.proj
  ....encoder_layers.{i}.ff_layer       backbone.ff: one module shared by every layer (the
                                        checkpoint repeats it per layer; all copies must agree)
  visible_encoder.final_norm            backbone.norm
The objective's parts (`objective_state`): visible_encoder.post_net -> post_net, decoder.*
-> decoder.* (decoder.positional_encoder.scale -> decoder.pos_scale), head.layer -> head.
The frozen EnCodec tokenizer (target_encoder.*) is left out: it is not part of the encoder.
"""
from __future__ import annotations

import re

import torch

FORMAT = "encodecmae"


def matches(sd: dict) -> bool:
    return "masker.positional_encoder.scale" in sd and "visible_encoder.final_norm.weight" in sd


def stack(sd: dict, src: str, dst: str) -> dict:
    """A released ResiDual TransformerEncoder under `src` -> our ResiDualStack under `dst`."""
    layers = sorted({int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(src)}encoder_layers\.(\d+)\.", k))})
    if not layers:
        raise ValueError(f"encodecmae checkpoint: no {src}encoder_layers.* parameters")
    out = {f"{dst}norm.{p}": sd[f"{src}final_norm.{p}"] for p in ("weight", "bias")}
    for i in layers:
        layer = f"{src}encoder_layers.{i}."
        out[f"{dst}blocks.{i}.attn.qkv.weight"] = torch.cat([sd[f"{layer}att_layer.w{x}.weight"] for x in "qkv"])
        out[f"{dst}blocks.{i}.attn.proj.weight"] = sd[f"{layer}att_layer.wo.weight"]
        for norm in ("norm1", "norm2"):
            for p in ("weight", "bias"):
                out[f"{dst}blocks.{i}.{norm}.{p}"] = sd[f"{layer}{norm}.{p}"]
        for ours, theirs in (("fc1", "0"), ("fc2", "2")):
            for p in ("weight", "bias"):
                value = sd[f"{layer}ff_layer.{theirs}.{p}"]
                key = f"{dst}ff.{ours}.{p}"
                if key in out and not torch.equal(out[key], value):
                    raise ValueError(f"encodecmae checkpoint: {layer}ff_layer.{theirs}.{p} differs from layer 0's; "
                                     "the released model shares one feed-forward across layers")
                out[key] = value
    return out


def to_audiorep(sd: dict, encoder) -> dict:
    if "wav_encoder.post_net.weight" not in sd or any(k.startswith("wav_encoder.encoder.") for k in sd):
        raise ValueError("encodecmae checkpoint: not a mel-input model (wav_encoder.encoder has weights or "
                         "wav_encoder.post_net is missing); only the mel256-* models map onto the frame backbone")
    out = stack(sd, "visible_encoder.", "backbone.")
    out["backbone.proj.weight"] = sd["wav_encoder.post_net.weight"]
    out["backbone.proj.bias"] = sd["wav_encoder.post_net.bias"]
    out["backbone.pos_scale"] = sd["masker.positional_encoder.scale"]
    return out


def objective_state(sd: dict, objective) -> dict:
    """The released decoder projection, decoder and head -> CodecMAE's `post_net`, `decoder`, `head`."""
    if "decoder.final_norm.weight" not in sd:
        raise ValueError("encodecmae checkpoint: no decoder (decoder.*) to load")
    out = stack(sd, "decoder.", "decoder.")
    out["decoder.pos_scale"] = sd["decoder.positional_encoder.scale"]
    for p in ("weight", "bias"):
        out[f"post_net.{p}"] = sd[f"visible_encoder.post_net.{p}"]
        out[f"head.{p}"] = sd[f"head.layer.{p}"]
    return out
