"""EnCodecMAE through the training loop: stage 1 on fbank k-means targets, killed and resumed
(the target cache and gamma_q come back with the checkpoint), then stage 2 started from it
(self-training: k-means of the stage-1 encoder's activations, a new 1 x k head)."""
from dataclasses import replace

import numpy as np
import torch
from test_encodecmae import KMEANS, tiny_encoder, tone_corpus

from audiorep.data import ClipDataset, DataConfig, folder_clips
from audiorep.encoder import Encoder
from audiorep.objectives.codec_mae import CodecMAE
from audiorep.train import TrainConfig, train

TRAIN = TrainConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=0, schedule="constant", checkpoint_every=2,
                    log_every=1, device="cpu", data=DataConfig(roll=False, workers=0))


def stage1(data, out, stop_after=None):
    torch.manual_seed(0)
    return train(CodecMAE(tiny_encoder(), KMEANS), data, TRAIN, out, stop_after=stop_after)


def test_stage1_resumes_with_its_targets_then_self_training_starts_from_it(tmp_path, one_thread):
    data = ClipDataset(folder_clips(tone_corpus(tmp_path / "corpus")), 24000, 24000, TRAIN.data)
    whole = stage1(data, tmp_path / "whole")
    stage1(data, tmp_path / "run", stop_after=2)
    resumed = stage1(data, tmp_path / "run")  # a fresh process would do the same: no prepare on resume
    assert resumed.cache.folder == tmp_path / "run" / "targets"
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        if name != "_extra_state":
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # bitwise: same batches, same targets

    st = CodecMAE(tiny_encoder(), replace(KMEANS, targets="teacher_kmeans", kmeans_k=4))  # a head of another size
    fresh = st.init_from(tmp_path / "run")
    assert fresh == ["gamma", "head.bias", "head.weight"]  # all but the head (and gamma) came from stage 1
    saved = Encoder.load(tmp_path / "run" / "encoder").state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in st.encoder.state_dict().items())
    st.prepare(data, "cpu", tmp_path / "st")  # the teacher: this encoder as init_from loaded it
    assert st.cache.meta["targets"] == "teacher_kmeans" and st.cache.meta["codebooks"] == 1
    assert len(np.unique(np.concatenate([st.cache.codes(i) for i in range(len(data))]))) > 1
    batch = torch.utils.data.default_collate([data[(i, 3)] for i in range(4)])
    loss, logs = st(batch)
    assert torch.isfinite(loss)
