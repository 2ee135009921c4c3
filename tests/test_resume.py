"""Training resumes after an interruption with the same result as an uninterrupted run."""
import os

import torch

from conftest import fake_styled
from network import get_model
from ownership import checkpoints
from ownership.data import role_data
from ownership.presets import get_preset
from ownership.training import train


class Stop(Exception):
    pass


def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    dd = str(tmp_path / "data")
    fake_styled(dd)
    images = role_data(get_preset("smoke"), dd, 0, "victim-clean").subset(range(256))
    kw = dict(epochs=3, lr=0.05, batch=64, seed=3)

    torch.manual_seed(0)
    whole = train(get_model("wrn10-1", 10, 1), images, "fmnist", **kw)

    state = str(tmp_path / "m.pt.state")
    torch.manual_seed(0)
    model = get_model("wrn10-1", 10, 1)
    real_save = checkpoints.save_checkpoint
    calls = []

    def save_then_die(path, obj):  # die right after the first epoch's state is written
        real_save(path, obj)
        calls.append(path)
        raise Stop

    import ownership.training as tr
    monkeypatch.setattr(tr, "save_checkpoint", save_then_die)
    try:
        train(model, images, "fmnist", state_path=state, **kw)
    except Stop:
        pass
    monkeypatch.setattr(tr, "save_checkpoint", real_save)
    assert calls == [state] and os.path.exists(state)

    torch.manual_seed(123)  # a fresh process: a different init, overwritten by the state
    resumed = train(get_model("wrn10-1", 10, 1), images, "fmnist", state_path=state, **kw)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
