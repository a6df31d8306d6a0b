"""Which values form one normalization group: a tensor to (groups, values) and back.

The datapath normalizes one "channel" (a stream of `count` values with its own statistics); which
values make a channel is this host-side choice. Both the float modules (group_nn.py) and the
hardware hook use it, so the values of a group reach the float reference and the datapath in the
same order (range's chunks depend on it).

    batch        BN:  per channel over (N, *S)                      -> C groups of N*prod(S)
    layer        LN:  per sample over the trailing normalized shape  -> prod(leading) groups of prod(shape)
    instance     IN:  per sample and channel over S                  -> N*C groups of prod(S)
    group        GN:  per sample over C/G channels and S             -> N*G groups of (C/G)*prod(S)
    batch_group  BGN: per group of C/G channels over N and S         -> G groups of N*(C/G)*prod(S)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GROUPINGS = ("batch", "layer", "instance", "group", "batch_group")
PER_SAMPLE = ("layer", "instance", "group")     # statistics of one sample only: the same in train() and eval()


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_groups(num_groups: int, num_channels: int) -> None:
    """A ValueError naming num_groups if it does not divide num_channels."""
    if num_channels % num_groups:
        allowed = ", ".join(map(str, divisors(num_channels)))
        raise ValueError(f"num_groups={num_groups} does not divide num_channels={num_channels}: allowed a divisor of "
                         f"{num_channels} ({allowed})")


@dataclass(frozen=True)
class Grouping:
    """A grouping: its name, G (group, batch_group) or the normalized rank (layer)."""

    name: str
    groups: int = 1               # G: channel groups (group, batch_group)
    normalized_ndim: int = 0      # layer: how many trailing dimensions are normalized together

    def __post_init__(self):
        if self.name not in GROUPINGS:
            raise ValueError(f"grouping={self.name!r} is not supported: allowed {', '.join(GROUPINGS)}")

    @property
    def per_sample(self) -> bool:
        return self.name in PER_SAMPLE

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(groups, values) view of x: row g holds group g's values (differentiable)."""
        if self.name == "layer":
            d = self.normalized_ndim
            return x.reshape(-1, math.prod(x.shape[x.dim() - d:]))
        n, c = x.shape[0], x.shape[1]
        if self.name == "batch":
            return x.transpose(0, 1).reshape(c, -1)
        if self.name == "instance":
            return x.reshape(n * c, -1)
        if self.name == "group":
            return x.reshape(n * self.groups, -1)
        return x.reshape(n, self.groups, -1).transpose(0, 1).reshape(self.groups, -1)     # batch_group

    def merge(self, y: torch.Tensor, shape) -> torch.Tensor:
        """The inverse of split: (groups, values) back to a tensor of `shape`."""
        shape = tuple(shape)
        if self.name == "batch":
            return y.reshape(shape[1], shape[0], *shape[2:]).transpose(0, 1)
        if self.name == "batch_group":
            return y.reshape(self.groups, shape[0], -1).transpose(0, 1).reshape(shape)
        return y.reshape(shape)
