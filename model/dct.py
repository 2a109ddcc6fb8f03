"""The discrete cosine transform along time (orthonormal DCT-II, torch-dct), as the GCN sees motion.

A trajectory of T frames keeps its first `n_coef` coefficients. Sequences shorter than `n_coef`
frames are padded to `n_coef` frames first by repeating their last frame, so they are encoded
and decoded at `n_coef` frames and cropped back to their own length.
"""

from __future__ import annotations

import torch
import torch_dct


def pad_to(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat the last frame of x (B, T, F) until it has at least `frames` frames."""
    short = frames - x.shape[1]
    if short <= 0:
        return x
    return torch.cat([x, x[:, -1:].expand(-1, short, -1)], dim=1)


def dct_encode(x: torch.Tensor, n_coef: int) -> torch.Tensor:
    """First n_coef DCT coefficients of every feature of x (B, T, F) -> (B, F, n_coef)."""
    x = pad_to(x, n_coef)
    return torch_dct.dct(x.transpose(1, 2), norm="ortho")[..., :n_coef]


def dct_decode(coefs: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse DCT of coefs (B, F, n_coef) at `length` frames -> (B, length, F).

    The coefficients are zero-padded to the length; a length below n_coef is decoded at n_coef
    frames and cropped, the inverse of the padding in dct_encode.
    """
    n_coef = coefs.shape[-1]
    frames = max(length, n_coef)
    full = torch.nn.functional.pad(coefs, (0, frames - n_coef))
    return torch_dct.idct(full, norm="ortho").transpose(1, 2)[:, :length]


def idct_basis(length: int, n_coef: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The matrix (length, n_coef) with dct_decode(c, length)[b] == basis @ c[b].T, for batching
    decodes of different lengths as one matrix product."""
    eye = torch.eye(n_coef, dtype=dtype).unsqueeze(0)
    return dct_decode(eye, length)[0]
