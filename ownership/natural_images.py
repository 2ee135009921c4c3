"""Surrogate natural images: the query thieves' data as the threat model has it.

Dataset Inference [DI] (Maini et al., ICLR 2021, Sec. 6 and their code), whose threat models the paper
follows, has its label-query and logit-query thieves ask the victim with 500K TinyImages, natural images
from outside the task; Knockoff Nets (Orekondy et al., CVPR 2019) likewise query with surrogate natural
images. Neither set can be downloaded here, so the queries are made offline from the sample photographs
that scikit-image ships inside its wheel (skimage/data/*.png, *.jpg: no download, no pooch): random
crops of random size, randomly flipped, rescaled to the task's image size, in grayscale for a
one-channel task. The photographs are natural scenes, faces, animals, objects, textures and astronomy
(SAMPLE_PHOTOGRAPHS); none shows a Fashion-MNIST class, so the victim labels them from its own decision
function, as a thief's surrogate data would be labelled.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError

# scikit-image's bundled sample photographs (skimage.data functions that read a file of the wheel; none
# downloads): natural photographs, not drawings or binary masks
SAMPLE_PHOTOGRAPHS = ("astronaut", "brick", "camera", "cat", "cell", "coffee", "coins", "grass", "gravel",
                      "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text")
MIN_CROP = 16  # smallest crop side in pixels of the photograph (the largest: its shorter side)


def _photographs(channels):
    """The sample photographs as float32 arrays in [0, 1], (C, H, W), C = channels (1: luminance, ITU-R
    601 weights as skimage.color.rgb2gray; 3: RGB, a grayscale photograph repeated). Raises UserError
    when scikit-image is missing."""
    try:
        from skimage import data as skdata
    except ImportError:
        raise UserError("the natural-image queries need scikit-image's sample photographs; install it with "
                        "'pip install -r requirements.txt' (or use the attacker's part: --query-data attacker)")
    out = []
    for name in SAMPLE_PHOTOGRAPHS:
        raw = np.asarray(getattr(skdata, name)())
        a = raw.astype(np.float32) / (255.0 if raw.dtype == np.uint8 else 1.0)
        a = a[..., :3] if a.ndim == 3 else a[..., None]  # drop an alpha channel; grayscale gets one channel
        if channels == 1 and a.shape[2] == 3:
            a = a @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)[:, None]  # skimage.color.rgb2gray
        elif channels == 3 and a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        out.append(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))))
    return out


def natural_images(n, size, channels, seed):
    """n surrogate query images, uint8 (n, channels, size, size), the same for the same seed.

    Each image: a photograph of SAMPLE_PHOTOGRAPHS chosen uniformly, a square crop whose side is drawn
    log-uniformly between MIN_CROP and the photograph's shorter side, at a uniform position, flipped
    horizontally with probability 1/2, rescaled to size x size with antialiasing (area-like averaging, so a
    large crop does not alias). Raises UserError for n < 1."""
    if n < 1:
        raise UserError(f"{n} natural-image queries: give at least one")
    photos = _photographs(channels)
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(len(photos), (n,), generator=g)
    u = torch.rand(n, 4, generator=g)  # crop size, row, column, flip
    out = torch.empty(n, channels, size, size, dtype=torch.uint8)
    for i in range(n):
        p = photos[which[i]]
        short = min(p.shape[1:])
        side = int(round(math.exp(math.log(MIN_CROP) + u[i, 0].item() * (math.log(short) - math.log(MIN_CROP)))))
        r = int(u[i, 1].item() * (p.shape[1] - side + 1))
        c = int(u[i, 2].item() * (p.shape[2] - side + 1))
        crop = p[:, r:r + side, c:c + side]
        if u[i, 3] < 0.5:
            crop = crop.flip(2)
        small = F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[i] = small[0].mul(255).round().clamp(0, 255).to(torch.uint8)
    return out
