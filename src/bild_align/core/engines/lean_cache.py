"""The attention state every lean decoder step keeps for one call: a static self-attention
cache, and for encoder-decoder models the source's keys and values, projected once.

    cache = StaticCache(layers=6, rows=8, heads=8, capacity=80, head_dim=64, like=embed)
    place = cache.place(starts, width, rows, count)   # where this step's tokens go (or refuse)
    attended = cache.attend(layer, place, query, key, value, mask=mask)
    source = SourceAttention(encoded, [(k, v) per layer], heads, mask)
    attended = source.attend(layer, query, rows)

A row's tokens always occupy positions 0 .. length-1 of its cache, so a rollback is only a
smaller start for the next write: nothing is copied or cropped, and whatever lies beyond a
query's own position (a rolled-back draft, the padding of a shorter row) is masked out as the
future by the step's mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from bild_align.core.engines.lean_ops import query_positions, split_heads

CACHE_FULL = "the static cache holds {capacity} tokens; {extent} needed"


@dataclass(frozen=True)
class Placement:
    """Where one step writes: `starts` (an int for every row, or per row), the batch rows it
    feeds (None: all), (row, position) index pairs (None: one slice), and how many cache
    positions the step reaches."""

    starts: torch.Tensor | int
    rows: torch.Tensor | None
    slots: tuple[torch.Tensor, torch.Tensor] | None
    extent: int


class StaticCache:
    """Every layer's keys and values, (rows, heads, capacity, head_dim) each, allocated once."""

    def __init__(
        self,
        layers: int,
        rows: int,
        heads: int,
        capacity: int,
        head_dim: int,
        like: torch.Tensor,
        refusal: str = CACHE_FULL,
    ) -> None:
        shape = (rows, heads, capacity, head_dim)
        self.keys = [like.new_zeros(shape) for _ in range(layers)]
        self.values = [like.new_zeros(shape) for _ in range(layers)]
        self.capacity, self.refusal = capacity, refusal

    def place(
        self, starts: torch.Tensor | int, width: int, rows: torch.Tensor | None, count: int
    ) -> Placement:
        """A step of `width` tokens for `count` rows from `starts`; a step past the cache's
        capacity is refused with `refusal` (formatted with capacity and extent)."""
        extent = (starts if isinstance(starts, int) else int(starts.max())) + width
        if extent > self.capacity:
            raise ValueError(self.refusal.format(capacity=self.capacity, extent=extent))
        device = self.keys[0].device
        if rows is None and isinstance(starts, int):
            return Placement(starts, rows, None, extent)
        row_index = (torch.arange(count, device=device) if rows is None else rows)[:, None]
        positions = query_positions(starts, width, device).expand(count, width)
        return Placement(starts, rows, (row_index, positions), extent)

    def attend(
        self,
        layer: int,
        place: Placement,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        scale: float | None = None,
        first: int = 0,
        enable_gqa: bool = False,
    ) -> torch.Tensor:
        """Store the step's keys and values (count, width, heads, dim) at their positions, then
        attend `query` (count, heads, width, dim) over the cached positions first .. extent-1."""
        for cache, new in ((self.keys[layer], key), (self.values[layer], value)):
            if place.slots is None:
                cache[:, :, place.starts : place.starts + new.shape[1]] = new.transpose(1, 2)
            else:
                cache[place.slots[0], :, place.slots[1]] = new
        # one indexing: selecting rows first would copy every row's whole capacity
        seen = slice(first, place.extent)
        if place.rows is None:
            keys, values = self.keys[layer][:, :, seen], self.values[layer][:, :, seen]
        else:
            keys, values = (
                self.keys[layer][place.rows, :, seen],
                self.values[layer][place.rows, :, seen],
            )
        return F.scaled_dot_product_attention(
            query, keys, values, attn_mask=mask, scale=scale, enable_gqa=enable_gqa
        )


class SourceAttention:
    """An encoder-decoder call's cross-attention: each layer's keys and values of the encoder
    output, projected once, and the source's padding mask (boolean, or an additive bias)."""

    def __init__(
        self,
        encoded: torch.Tensor,
        projections: list[tuple[tuple, tuple]],
        heads: int,
        mask: torch.Tensor | None,
        scale: float | None = None,
    ) -> None:
        self.keys = [split_heads(F.linear(encoded, *k), heads) for k, _ in projections]
        self.values = [split_heads(F.linear(encoded, *v), heads) for _, v in projections]
        self.mask, self.scale = mask, scale

    def attend(self, layer: int, query: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """`query` (count, heads, width, dim) over the source of the given rows (None: all)."""
        keys, values, mask = self.keys[layer], self.values[layer], self.mask
        if rows is not None:
            keys, values = keys[rows], values[rows]
            mask = None if mask is None else mask[rows]
        return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask, scale=self.scale)
