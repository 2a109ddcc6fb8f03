"""The discrete cosine transform along time (orthonormal DCT-II, torch-dct), as the GCN sees motion.

A trajectory of T frames keeps its first `n_coef` coefficients. Sequences shorter than `n_coef`
frames are padded to `n_coef` frames first by repeating their last frame, so they are encoded
and decoded at `n_coef` frames and cropped back to their own length.

Both directions are one matrix product with a basis per (length, n_coef): torch-dct's transform
of the identity, computed once in float64 and cached, so that a batch of sequences of one length
is encoded or decoded in a single product.
"""

from __future__ import annotations

from functools import cache

import torch
import torch_dct


def pad_to(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Repeat the last frame of x (B, T, F) until it has at least `frames` frames."""
    short = frames - x.shape[1]
    if short <= 0:
        return x
    return torch.cat([x, x[:, -1:].expand(-1, short, -1)], dim=1)


@cache
def _dct_basis64(length: int, n_coef: int) -> torch.Tensor:
    """(n_coef, length) float64: row k is coefficient k of each unit impulse, padding included."""
    eye = pad_to(torch.eye(length, dtype=torch.float64)[None], n_coef)
    return torch_dct.dct(eye.transpose(1, 2), norm="ortho")[0, :, :n_coef].T.contiguous()


@cache
def _idct_basis64(length: int, n_coef: int) -> torch.Tensor:
    """(length, n_coef) float64: column k is coefficient k alone, decoded at `length` frames."""
    frames = max(length, n_coef)
    eye = torch.nn.functional.pad(torch.eye(n_coef, dtype=torch.float64), (0, frames - n_coef))
    return torch_dct.idct(eye, norm="ortho").T[:length].contiguous()


def _like(basis: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return basis.to(dtype=x.dtype, device=x.device)


def dct_encode(x: torch.Tensor, n_coef: int) -> torch.Tensor:
    """First n_coef DCT coefficients of every feature of x (B, T, F) -> (B, F, n_coef)."""
    return (_like(_dct_basis64(x.shape[1], n_coef), x) @ x).transpose(1, 2)


def dct_decode(coefs: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse DCT of coefs (B, F, n_coef) at `length` frames -> (B, length, F).

    The coefficients are zero-padded to the length; a length below n_coef is decoded at n_coef
    frames and cropped, the inverse of the padding in dct_encode.
    """
    return _like(_idct_basis64(length, coefs.shape[-1]), coefs) @ coefs.transpose(1, 2)


def idct_basis(length: int, n_coef: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The matrix (length, n_coef) with dct_decode(c, length)[b] == basis @ c[b].T, for batching
    decodes of different lengths as one matrix product (a fresh tensor: the cache stays intact)."""
    return _idct_basis64(length, n_coef).to(dtype, copy=True)
