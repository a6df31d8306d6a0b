"""Packing the descriptor and statistics words (NormConfig.channel_fields / stats_fields) to integers."""
from __future__ import annotations


def pack(fields, values: dict) -> int:
    """Pack named integers into one vector, first field at the LSB (amaranth StructLayout order)."""
    word, offset = 0, 0
    for name, width, _signed in fields:
        word |= (int(values.get(name, 0)) & ((1 << width) - 1)) << offset
        offset += width
    return word


def unpack(fields, word: int) -> dict:
    """The inverse of pack, sign-extending the signed fields."""
    out, offset = {}, 0
    for name, width, signed in fields:
        v = (word >> offset) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        out[name] = v
        offset += width
    return out


def width(fields) -> int:
    return sum(w for _, w, _ in fields)


def to_words(value: int, nbits: int) -> list[int]:
    """An unsigned integer as 32-bit words, least significant first (Verilator's port layout)."""
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(max(1, -(-nbits // 32)))]


def from_words(words) -> int:
    return sum(int(w) << (32 * i) for i, w in enumerate(words))
