"""The training faces as the app frames them, for `python -m train --app-framing P`.

A data set's face crops are framed by whoever made the data set; the app frames a photo's face itself: its
detector finds the face, `Preprocess.square` places the square on the eyes (emotion/framing.py), `cut`
fills what leaves the picture by repeating the edge, and `Preprocess.pixels` resizes it. `app_framed` sends
every training picture down that same path, so a share of each batch can show the model the face exactly as
the app will show it a photo's. Where the detector finds no face, the picture stays as the data set framed it.
The result is kept in the run folder (`app_framed.pt`), so a resumed run does not detect again; it is made again
when the pictures, the framing (`emotion.framing`) or the detector's rule (`emotion.faces.rule`) differ from those
it was made with.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from emotion import framing
from emotion.model import Preprocess
from train import distributed

CACHE_FILE = "app_framed.pt"


def as_rgb(picture: torch.Tensor) -> np.ndarray:
    """A training picture (C x H x W uint8, C = 1 or 3) as the H x W x 3 RGB array the app's detector reads."""
    return np.ascontiguousarray(picture.permute(1, 2, 0).expand(-1, -1, 3).numpy())


def app_frame(picture: torch.Tensor, prep: Preprocess) -> np.ndarray | None:
    """One training picture (C x H x W uint8, C = 1 or 3) as the app frames its largest face, in the same
    layout at `prep.size`; None when the detector finds no face."""
    from emotion.faces import cut, detect_faces  # the detector (yuface) only where this is asked for

    rgb = as_rgb(picture)
    found = detect_faces(rgb)
    if not found:
        return None
    pixels = prep.pixels(cut(rgb, prep.square(found[0], rgb.shape)))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def app_framed(images: torch.Tensor, prep: Preprocess, world: distributed.World | None = None,
               progress: bool = True, cache: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(framed, found): every picture of `images` (N x C x H x W uint8, at prep.size) as `app_frame` gives it,
    the picture itself where no face was found, and which were found. Under torchrun each process frames its
    block of the pictures and all get every one. `cache`: a file that keeps the result for these pictures, this
    framing and this detector rule (read when it matches, written by the first process otherwise)."""
    from emotion.faces import rule  # without the detector itself (yuface): see emotion/faces.py

    world = world or distributed.World()
    key = {"n": len(images), "shape": list(images.shape[1:]), "size": prep.size, "grayscale": prep.grayscale,
           "native_size": prep.native_size, "eye_distance": prep.eye_distance, "eye_line": prep.eye_line,
           "face_margin": prep.face_margin, "close_up_cover": framing.CLOSE_UP_COVER, "detector": rule()}
    if cache is not None and cache.exists():
        kept = torch.load(cache, weights_only=True)
        if kept.get("key") == key:
            return kept["framed"], kept["found"]
    mine = world.share(len(images))
    done = [app_frame(images[i], prep)
            for i in tqdm(mine, desc="app framing", disable=not progress or not world.main)]
    done = [a for part in world.all_gather(done) for a in part]
    found = torch.tensor([a is not None for a in done], dtype=torch.bool)
    framed = images.clone()
    for i, a in enumerate(done):
        if a is not None:
            framed[i] = torch.from_numpy(a)
    if cache is not None and world.main:
        torch.save({"key": key, "framed": framed, "found": found}, cache)
    return framed, found


def show_framed(batch: torch.Tensor, framed: torch.Tensor, share: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The batch with a share of its rows, drawn by `generator`, replaced by the same rows of `framed`."""
    pick = torch.rand(len(batch), device=batch.device, generator=generator) < share
    return torch.where(pick.view(-1, *[1] * (batch.dim() - 1)), framed, batch)
