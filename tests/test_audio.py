"""audio.py: windows, padding, resampling and block streaming."""
import numpy as np
import soundfile as sf

from audiorep.audio import chunk, pad_or_crop, read, read_blocks, resample, window_starts


def test_windows_cover_the_audio_and_the_last_one_ends_at_its_end():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(9, 4, 5) == [0, 5]
    assert window_starts(3, 4, 3) == [0]
    x = np.arange(10.0)
    assert chunk(x, 4, 3)[-1].tolist() == [6.0, 7.0, 8.0, 9.0]
    assert chunk(x[:3], 4, 3).tolist() == [[0.0, 1.0, 2.0, 0.0]]
    assert pad_or_crop(x, 4, offset=2).tolist() == [2.0, 3.0, 4.0, 5.0]


def test_blocks_stream_the_same_audio_as_read(tmp_path):
    x = (0.3 * np.sin(np.arange(44100 * 5) / 9)).astype(np.float32)
    sf.write(tmp_path / "a.wav", x, 44100, subtype="FLOAT")
    whole, _ = read(tmp_path / "a.wav", 16000)
    blocks = np.concatenate(list(read_blocks(tmp_path / "a.wav", 16000, block_s=1.0)))
    assert abs(len(blocks) - len(whole)) <= 1 and len(whole) == len(resample(x, 44100, 16000))
    n = min(len(blocks), len(whole))
    assert np.abs(blocks[100:n - 100] - whole[100:n - 100]).max() < 1e-3
