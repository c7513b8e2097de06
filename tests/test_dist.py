"""dist.py: rank and share from torchrun's environment, alone(), clear errors."""
import pytest
import torch

from audiorep import dist


def test_single_process_is_rank0_of_1(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    w = dist.world("cpu")
    assert (w.rank, w.size, w.main, w.device) == (0, 1, True, torch.device("cpu"))


def test_share_covers_every_item_once():
    items = list(range(11))
    shares = [dist.share(items, dist.World(r, 3, r, torch.device("cpu"))) for r in range(3)]
    assert sorted(sum(shares, [])) == items
    assert shares[1] == [1, 4, 7, 10]


def test_alone_hides_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with dist.alone():
        w = dist.world("cpu")
    assert (w.rank, w.size) == (0, 1)
    assert w.local_rank == 1  # a crossval rank training alone keeps its own device (cuda:LOCAL_RANK)


@pytest.mark.parametrize("env, message", [({"WORLD_SIZE": "2", "RANK": "5"}, "0 <= RANK < WORLD_SIZE"),
                                          ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'")])
def test_bad_environment_is_named(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=message):
        dist.world("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only case")
def test_cuda_without_a_device_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="sees no CUDA device"):
        dist.world("cuda")
