"""hear21passt's HEAR modules by name: `import hear21passt.base2level as m` becomes
`import audiorep.hear.passt.base2level as m`, with the same calls:

    model = m.load_model()                      # released weights, released behaviour
    model = m.load_model(mode="embed_only")     # hear21passt's modes: all, embed_only, logits
    model = m.load_model("passt.pt")            # a checkpoint (official or hear21passt-wrapped)
    model = m.load_model(paper=True)            # the paper's fields (640 ms) instead of the released 800 ms
    emb, ts = m.get_timestamp_embeddings(audio, model)

MODULES is the table (docs/hear21passt.md, module by module): the preset holding the
released weights and geometry, the receptive fields of the timestamp embeddings (the
released 2-level modules take 5 x 160 = 800 ms as second field, base2levelmel 4 x 160 = 640
ms; the paper says 640 ms), and the window of the mel level of the `*mel` modules (6
frames). Timestamps, scene windows and output order are hear21passt's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ... import config
from ...models import load
from .. import HearModel, default_device, get_scene_embeddings, get_timestamp_embeddings, mode_overrides

PAPER_FIELDS_MS = (160.0, 640.0)  # "2RF" of the paper (section 4)


@dataclass(frozen=True)
class Released:
    preset: str                                # weights and geometry (presets.py)
    fields_ms: tuple[float, ...] = (160.0,)    # receptive fields of the timestamp embeddings, concatenated
    mel_window: int = 0                        # samples of the mel level's window (6 frames), 0 = none

    def paper_fields(self) -> tuple[float, ...]:
        return PAPER_FIELDS_MS if len(self.fields_ms) == 2 else self.fields_ms


MODULES: dict[str, Released] = {
    "base": Released("passt-s"),
    "base2level": Released("passt-s", (160.0, 800.0)),
    "base2levelmel": Released("passt-s", (160.0, 640.0), mel_window=1920),
    "base20sec": Released("passt-s-20s"),
    "base30sec": Released("passt-s-30s"),
    "hop100base": Released("passt-s-hop3"),
    "hop100base2lvl": Released("passt-s-hop3", (160.0, 800.0)),
    "hop100base2lvlmel": Released("passt-s-hop3", (160.0, 800.0), mel_window=600),
    "hop160base": Released("passt-s-hop5"),
    "hop160base2lvl": Released("passt-s-hop5", (160.0, 800.0)),
    "hop160base2lvlmel": Released("passt-s-hop5", (160.0, 800.0), mel_window=960),
    "openmic2008": Released("passt-s-openmic"),
}


def load_released(name: str, model_path: str = "", mode: str = "all", scene_hop: float | None = None,
                  paper: bool = False, random_init: bool = False, overrides: list[str] | None = None,
                  device=None) -> HearModel:
    """hear21passt's module `name`. model_path: '' = the released weights, a checkpoint file or
    URL (official or hear21passt-wrapped), or a saved audiorep encoder folder of the same
    geometry; mode: all | embed_only | logits; scene_hop: ms between the windows of long scenes
    (base30sec's argument; default the released one); paper: the paper's receptive fields."""
    spec = MODULES[name]
    fields = spec.paper_fields() if paper else spec.fields_ms
    settings = mode_overrides(mode) + [f"embed.rf_ms={','.join(str(f) for f in fields)}"]
    if scene_hop is not None:
        settings.append(f"embed.scene_hop_s={scene_hop / 1000}")
    settings += list(overrides or [])
    folder = bool(model_path) and Path(model_path).is_dir()
    encoder = load(model_path if folder else spec.preset, weights=None if folder else model_path or None,
                   random_init=random_init, overrides=None if folder else settings)
    if folder:  # a saved encoder keeps its weights and geometry; the module's settings still apply
        encoder = with_settings(encoder, settings)
    return HearModel(encoder.to(device or default_device()), frame_window=spec.mel_window)


def with_settings(encoder, settings: list[str]):
    """The freshly loaded encoder with the module's embedding settings in its config (weights untouched)."""
    encoder.config = config.override(encoder.config, settings)
    return encoder


def module_api(name: str):
    """(load_model, get_scene_embeddings, get_timestamp_embeddings) of hear21passt's module `name`."""
    if name not in MODULES:
        raise KeyError(f"unknown hear21passt module {name!r}; modules: {', '.join(MODULES)}")

    def load_model(model_path: str = "", mode: str = "all", **kwargs) -> HearModel:
        return load_released(name, model_path, mode, **kwargs)

    load_model.__doc__ = load_released.__doc__
    return load_model, get_scene_embeddings, get_timestamp_embeddings
