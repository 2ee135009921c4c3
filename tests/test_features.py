"""The feature registry (ownership/features.py): the vocabularies are its names, each white-box
feature is computed and stored as its entry says, and every preset names registered features."""
import numpy as np
import torch

from network import get_model
from ownership import gradients as G, paths
from ownership.constants import BLACK_BOX_FEATURES, WHITE_BOX
from ownership.data import ImageSet
from ownership.features import FEATURES, names
from ownership.presets import PRESETS


def test_vocabularies_are_the_registry_names_paper_first():
    assert WHITE_BOX == names("white-box") and WHITE_BOX[0] == "weight-signs"
    assert BLACK_BOX_FEATURES == names("black-box") and BLACK_BOX_FEATURES[0] == "prediction-shift"
    assert set(WHITE_BOX) | set(BLACK_BOX_FEATURES) == set(FEATURES)
    files = [FEATURES[f].file for f in WHITE_BOX]
    assert None not in files and len(set(files)) == len(files)  # no two white-box features share a file
    assert all(FEATURES[f].file is None and FEATURES[f].dtype is None for f in BLACK_BOX_FEATURES)
    assert all(f.source and f.computes for f in FEATURES.values())


def test_presets_name_registered_features():
    for name, p in PRESETS.items():
        assert FEATURES[p["white_box"]["feature"]].access == "white-box", name
        assert FEATURES[p["black_box_feature"]].access == "black-box", name


def test_white_box_features_are_stored_as_registered(tmp_path):
    torch.manual_seed(0)
    model = get_model("wrn10-1", 10, 1)
    g = torch.Generator().manual_seed(1)
    images = ImageSet(torch.randint(0, 256, (4, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (4,), generator=g), [str(i) for i in range(10)])
    originals = torch.randint(0, 256, (4, 1, 28, 28), generator=g, dtype=torch.uint8)
    for f in WHITE_BOX:
        out = G.white_box_features(model, images, "fmnist", "cpu", f, batch_size=2, augment=False,
                                   originals=originals if FEATURES[f].originals else None, progress=False)
        assert out.dtype == np.dtype(FEATURES[f].dtype) and out.shape == (4, G.white_box_dim(model, f, "fmnist")), f
        path = paths.gradient_set(str(tmp_path), "model/victim/vict-wrn10-1.pt", "data/fmnist_seurat_10%", feature=f)
        assert path.endswith("/vict-wrn10-1.pt/fmnist_seurat_10%/" + FEATURES[f].file), path
