"""EnCodecMAE targets as the release computes them: each crop tokenized alone in the step
(target_context "crop"), the release's gamma_q constants, a frozen self-training teacher,
and the run-health logs (embedding spread and rank, code perplexity, per-codebook losses)."""
import dataclasses

import numpy as np
import pytest
import torch
from test_encodecmae import KMEANS, tiny_encoder, tone_corpus

from audiorep.data import ClipDataset, DataConfig, folder_clips
from audiorep.frontends.codec import nearest
from audiorep.monitor import perplexity
from audiorep.objectives.codec_mae import CodecMAE, CodecMAEConfig
from audiorep.objectives.codec_targets import RELEASED_GAMMA, crop_targets, gamma_source

CROP = dataclasses.replace(KMEANS, target_context="crop")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tone_corpus(tmp_path_factory.mktemp("corpus"))
    return ClipDataset(folder_clips(folder), 24000, 24000, DataConfig(roll=False, workers=0))


def batch_of(data, seed=5):
    return torch.utils.data.default_collate([data[(i, seed + i)] for i in range(4)])


def test_crop_context_tokenizes_each_crop_alone_and_comes_back_on_resume(corpus, tmp_path, one_thread):
    assert CodecMAEConfig().target_context == "crop"  # the release's: codes of the crop, not of the clip
    objective = CodecMAE(tiny_encoder(), CROP)
    objective.prepare(corpus, "cpu", tmp_path)
    assert not (tmp_path / "targets" / "codes.npy").exists()  # nothing cached per clip
    batch = batch_of(corpus)
    assert len(set(batch["start"].tolist())) > 1  # crops from different places in their clips
    T = objective.encoder.frontend.num_frames(batch["wave"].shape[-1])
    codes, valid = objective.targets(batch, T)
    assert codes.shape == (4, T, 1) and valid.all()
    centroids = objective.tokenizer.centroids
    for b in range(4):  # fbank k-means targets: the nearest centroid of the crop's own frames
        frames = objective.encoder.frontend(batch["wave"][b:b + 1])[0].T  # [T, 256]
        assert torch.equal(codes[b, :, 0], nearest(frames, centroids))
    loss, logs = objective(batch)
    loss.backward()  # the targets left inference mode: cross-entropy can save them for backward
    resumed = CodecMAE(tiny_encoder(), CROP)
    resumed.load_state_dict(objective.state_dict())  # a resumed run: the tokenizer is rebuilt from the folder
    again, _ = resumed.targets(batch, T)
    assert resumed.tokenizer is not objective.tokenizer and torch.equal(again, codes)
    with pytest.raises(ValueError, match="target_context='window'"):
        CodecMAE(tiny_encoder(), dataclasses.replace(CROP, target_context="window"))


def test_released_gamma_constants_are_the_default_for_released_encodec_targets(corpus, tmp_path, monkeypatch):
    assert gamma_source(CodecMAEConfig()) == "released"  # targets=encodec: the release's weights
    assert gamma_source(CodecMAEConfig(targets="encodec_random")) == "estimated"
    assert gamma_source(CodecMAEConfig(targets="encodec_random", gamma="released")) == "released"
    assert abs(sum(RELEASED_GAMMA) - 1) < 1e-6 and RELEASED_GAMMA[0] == 0.22407463 and RELEASED_GAMMA[-1] == 0.06589669
    with pytest.raises(ValueError, match="8 EnCodec codebooks"):
        CodecMAE(tiny_encoder(), dataclasses.replace(KMEANS, gamma="released"))
    with pytest.raises(ValueError, match="gamma='fixed'"):
        CodecMAE(tiny_encoder(), dataclasses.replace(KMEANS, gamma="fixed"))

    class Tokenizer:  # EnCodec's shape (8 x 1024) without its network: gamma must not be estimated
        hop, centre, codebooks, codebook_size = 320, 160.0, 8, 1024

        def fit(self, waves, generator):
            pass

        def state(self):
            return {"x": torch.zeros(1)}

        def errors(self, wave):
            raise AssertionError("gamma_q estimated although the release's constants were asked for")
    monkeypatch.setattr("audiorep.objectives.codec_targets.build_tokenizer", lambda *args: Tokenizer())
    cfg = CodecMAEConfig(targets="encodec_random", gamma="released", kmeans_clips=2, gamma_clips=2,
                         decoder_heads=4, decoder_ff_dim=128)
    objective = CodecMAE(tiny_encoder(), cfg)
    objective.prepare(corpus, "cpu", tmp_path)
    assert objective.gamma.tolist() == pytest.approx(RELEASED_GAMMA)


def test_self_training_teacher_is_frozen_while_the_encoder_trains(corpus, tmp_path, one_thread):
    torch.manual_seed(0)
    st = CodecMAE(tiny_encoder(), dataclasses.replace(CROP, targets="teacher_kmeans", kmeans_k=4))
    st.prepare(corpus, "cpu", tmp_path)
    assert (tmp_path / "targets" / "teacher" / "model.safetensors").exists()  # the encoder as it was at step 0
    batch = batch_of(corpus)
    T = st.encoder.frontend.num_frames(batch["wave"].shape[-1])
    before, _ = st.targets(batch, T)
    assert len(before.unique()) > 1
    alone = torch.stack([st.tokenizer.encode(w)[0] for w in batch["wave"]])  # [B, T]: the teacher on one crop
    assert (alone == before[..., 0]).float().mean() > 0.99  # batched = crop by crop (up to float rounding)
    with torch.no_grad():
        for p in st.encoder.parameters():
            p.add_(torch.randn_like(p))  # training moves the encoder ...
    after, _ = st.targets(batch, T)
    assert torch.equal(before, after)  # ... not the teacher that makes its targets


def test_logs_tell_spread_rank_code_use_and_each_codebook(corpus, tmp_path, one_thread):
    torch.manual_seed(0)
    objective = CodecMAE(tiny_encoder(), KMEANS)
    objective.prepare(corpus, "cpu", tmp_path)
    batch = batch_of(corpus)
    _, logs = objective(batch)
    assert {"masked_loss", "unmasked_loss", "masked_loss_q0", "masked_acc", "emb_std", "emb_rank",
            "code_perplexity"} <= set(logs)
    assert logs["emb_std"] > 0 and 1 <= logs["emb_rank"] <= 64
    T = objective.encoder.frontend.num_frames(batch["wave"].shape[-1])
    codes, _ = objective.targets(batch, T)
    assert 1 <= logs["code_perplexity"] <= perplexity(codes, 8) * 1.5  # codes of the masked frames only
    collapsed = CodecMAE(tiny_encoder(), KMEANS)
    collapsed.load_state_dict(objective.state_dict())
    with torch.no_grad():
        collapsed.encoder.backbone.norm.weight.zero_()  # every frame's output: the same biases
        for block in collapsed.encoder.backbone.blocks:
            block.norm1.weight.zero_()
            block.norm2.weight.zero_()
    _, flat = collapsed(batch)
    assert flat["emb_std"] < 0.1 * logs["emb_std"]
    assert np.isfinite(flat["emb_rank"])


def test_recipes_draw_each_file_by_its_duration_as_released():
    """The release's compensate_lengths(chunk_length=4): a file is drawn max(1, duration // 4 s) times per epoch."""
    from audiorep.config import override
    from audiorep.objectives import RECIPES
    from audiorep.train import TrainConfig
    for name in ("encodecmae", "encodecmae-st"):
        data = override(TrainConfig(), list(RECIPES[name].defaults)).data
        assert data.repeat_s == data.crop_s == 4 and not data.roll


def test_targets_by_time_or_by_index_as_released():
    """Input frames every 318 samples, codes every 320: by time, frame t takes the code nearest
    its centre; target_frames="index" takes code t (the release), 2 samples further off per frame."""
    class Counting:  # code j of every crop = j
        hop, centre = 320, 160.0

        def encode_batch(self, waves):
            return torch.arange(-(-waves.shape[1] // 320)).expand(len(waves), 1, -1)  # [B, 1, T']
    waves = torch.zeros(2, 96000)
    by_time, valid = crop_targets(Counting(), waves, 300, 318, 318.0)
    by_index, _ = crop_targets(Counting(), waves, 300, 318, 318.0, by_index=True)
    assert valid.all() and by_index[0, :, 0].tolist() == list(range(300))
    assert by_time[0, 0, 0] == 0 and by_time[0, 299, 0] == 298  # frame 299 is centred at sample 95,400: code 298
    with pytest.raises(ValueError, match="target_frames='index'"):
        CodecMAE(tiny_encoder(), dataclasses.replace(KMEANS, target_frames="index"))  # the clip cache: by time only
