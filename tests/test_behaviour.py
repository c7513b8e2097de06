"""Behaviour on real audio from the suite builder: embeddings line up with what is heard."""
import numpy as np
import pytest

import audiorep
from audiorep.audio import read
from audiorep.embed import EmbedConfig
from audiorep.tasks import suite
from audiorep.tasks.format import load_task


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    suite.build_suite(out, 0, "tiny", tasks=["scene_events"])
    return out


def auc(pos, neg):
    """P(a random positive scores above a random negative)."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def test_timestamps_in_ms_line_up_with_labelled_events(tasks):
    """Level L (mel energy) at each timestamp is higher inside the labelled events than in
    the gaps: timestamps, receptive fields and the task's ms labels agree."""
    enc = audiorep.load("passt-tiny")
    cfg = EmbedConfig(levels=("L",), rf_ms=(160.0,), hop_ms=50.0)
    task = load_task(tasks / "scene_events")
    inside, outside = [], []
    for split in task.split_names:
        for name, events in task.splits[split].items():
            wave, sr = read(task.audio_path(split, name))
            emb, ts = audiorep.timestamp_embeddings(enc, wave, sr, cfg)
            energy, ts = emb[0].mean(1).numpy(), ts[0].numpy()
            hit = np.zeros(len(ts), bool)
            near = np.zeros(len(ts), bool)
            for e in events:
                hit |= (ts >= e["start"] + 100) & (ts <= e["end"] - 100)
                near |= (ts >= e["start"] - 300) & (ts <= e["end"] + 300)
            inside += list(energy[hit])
            outside += list(energy[~near])
    assert len(inside) > 50 and len(outside) > 50
    assert auc(inside, outside) > 0.9
