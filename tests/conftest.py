import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def repo():
    return REPO


def fake_styled(data_dir, preset_name="smoke", seed=0):
    """A quick stand-in for embed_features.py: inverted copies (a crude external feature) of the images
    that embed_features would choose, in the same layout, so stage tests need no style transfer."""
    import json

    import torch

    from ownership import data, paths, presets
    p = presets.get_preset(preset_name)
    ds = data.load_dataset(p["dataset"], data_dir)
    victim = data.split_indices(len(ds["train"]), p["split"], seed)["victim"]
    pick = torch.randperm(len(victim), generator=torch.Generator().manual_seed(seed))[:round(p["gamma"] * len(victim))]
    tr, te = ds["train"].subset(victim[pick].sort().values), ds["test"].subset(range(p["styled_test"]))
    root = paths.styled_dir(data_dir, p["dataset"], p["gamma"])
    for split, s in (("train", tr), ("test", te)):
        data.write_folder(os.path.join(root, split), data.ImageSet(255 - s.x, s.y, s.classes, s.idx))
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"train_indices": tr.idx.tolist(), "test_indices": te.idx.tolist(), "fake": True}, f)
    return root
