"""Training and the zero-shot attack resume after an interruption with the same result as an
uninterrupted run."""
import os

import pytest
import torch

from conftest import fake_styled
from network import get_model
from network.wide_resnet import WideResNet
from ownership import checkpoints
from ownership.data import role_data
from ownership.presets import get_preset
from ownership.training import train


class Stop(Exception):
    pass


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is as fast, and does not stall when another job holds one of two cores
    (see tests/test_gradients.py)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def net(dropout):
    """wrn10-1, with dropout (as WRN-28-10 has) drawing from the global random state, or without."""
    return WideResNet(10, 1, 10, 1, dropout=0.3) if dropout else get_model("wrn10-1", 10, 1)


@pytest.mark.parametrize("dropout", [False, True])
def test_resume_matches_uninterrupted_run(tmp_path, monkeypatch, dropout):
    dd = str(tmp_path / "data")
    fake_styled(dd)
    images = role_data(get_preset("smoke"), dd, 0, "victim-clean").subset(range(256))
    kw = dict(epochs=3, lr=0.05, batch=64, seed=3)

    torch.manual_seed(0)
    whole = train(net(dropout), images, "fmnist", **kw)
    after_whole = torch.rand(3)  # the global random state after the run

    state = str(tmp_path / "m.pt.state")
    torch.manual_seed(0)
    model = net(dropout)
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
    resumed = train(net(dropout), images, "fmnist", state_path=state, **kw)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert torch.equal(torch.rand(3), after_whole)


def test_zero_shot_resume_matches_uninterrupted_run(tmp_path, monkeypatch):
    """DFAD with a dropout student, interrupted right after its second saved state (iteration 4 of 7)."""
    import ownership.attacks as at
    cfg = dict(iterations=7, batch=8, student_steps=2, lr_g=1e-3, lr_s=0.05, z_dim=16, gen_width=4)
    info = dict(channels=1, size=28)
    torch.manual_seed(0)
    victim = get_model("wrn10-1", 10, 1)

    def run(state=None, init=0):
        torch.manual_seed(init)
        return at.zero_shot(victim, net(True), info, cfg, "cpu", seed=5, state_path=state, save_every=2)

    whole = run()
    state = str(tmp_path / "atta-df.pt.state")
    real_save, calls = checkpoints.save_checkpoint, []

    def save_then_die(path, obj):
        real_save(path, obj)
        calls.append(obj["iteration"])
        if len(calls) == 2:
            raise Stop

    monkeypatch.setattr(at, "save_checkpoint", save_then_die)
    with pytest.raises(Stop):
        run(state)
    monkeypatch.setattr(at, "save_checkpoint", real_save)
    assert calls == [2, 4]
    resumed = run(state, init=123)  # another init and global random state, both overwritten by the state
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_steal_zero_shot_resume(tmp_path, monkeypatch):
    """steal.py --mode zero-shot --resume continues from the state an interrupted run left."""
    import ownership.attacks as at
    import steal
    dd, md = str(tmp_path / "data"), str(tmp_path / "model")
    fake_styled(dd)
    torch.manual_seed(0)
    victim = os.path.join(md, "victim.pt")
    checkpoints.save_checkpoint(victim, checkpoints.model_record(get_model("wrn10-1", 10, 1), "wrn10-1", 10, 1,
                                                                 "fmnist"))

    scale = "0.6"  # smoke's 10 iterations x 0.6^2 -> 4, so --save-every 1 saves before the end
    assert get_preset("smoke", float(scale))["attacks"]["zero-shot"]["iterations"] >= 2

    def steal_to(out, *extra):
        argv = ["--mode", "zero-shot", "--preset", "smoke", "--scale", scale, "--victim", victim, "--data-dir", dd,
                "--model-dir", md, "--out", out, "--save-every", "1", *extra]
        steal.main(steal.get_parser().parse_args(argv))
        return torch.load(out, weights_only=True)["state_dict"]

    whole = steal_to(str(tmp_path / "whole.pt"))
    out = str(tmp_path / "resumed.pt")
    real_save = checkpoints.save_checkpoint

    def save_then_die(path, obj):
        real_save(path, obj)
        raise Stop

    monkeypatch.setattr(at, "save_checkpoint", save_then_die)
    with pytest.raises(Stop):
        steal_to(out, "--resume")
    monkeypatch.setattr(at, "save_checkpoint", real_save)
    assert os.path.exists(out + ".state") and not os.path.exists(out)
    resumed = steal_to(out, "--resume")
    assert not os.path.exists(out + ".state")  # removed once the checkpoint is written
    for k in whole:
        assert torch.equal(whole[k], resumed[k]), k
