"""How a mirrored object is stored in its scope hash: a short field name and a compressed value.

A large tenant mirrors millions of objects, and Redis spends on each hash entry the bytes of its
field and value plus a fixed overhead. Stored as canonical JSON under its `_key`, an object cost
600 to 700 bytes. Two things make it cost about a quarter of that (docs/redis.md, "Memory"):

- **Field: the `_key` with its UUIDs packed.** Keys are mostly Graph ids (lower-case UUIDs, 36
  characters each): `<group>|has|<user>` is 77 characters. Each UUID becomes the byte 0xFF and its
  16 raw bytes (UTF-8 text never holds 0xFF, so the packing is exact and unambiguous); every
  other character stays as it is. `pack_key` / `unpack_key` are exact inverses.
- **Value: the canonical JSON, compressed with zstd and a shared dictionary.** One object is too
  small for a compressor to find repetitions in it, but every object of a `_type` repeats the same
  property names and many of the same values; the dictionary (`monitor/mirror.zdict`, trained on
  simulated tenants by `scripts/mirror_dictionary.py`) holds them. The UUIDs of the object's own key
  appear again in its JSON (`_key`, `_fromEntityKey`, `groupId`, ...); before compression each is
  replaced by the byte 0x01 and its position in the key (canonical JSON escapes control
  characters, so 0x01 appears nowhere else), and put back after decompression.

The first byte of a value says its format:

- `{`: canonical JSON, as written before this encoding existed (still read; see `TenantStore.upgrade`).
- 0x01: a zstd frame, with dictionary 1.
- 0x02: an entity: its `_type`, a 0x00 byte, then the zstd frame as in 0x01. The `_type` is in the
  clear so that a script inside Redis can read it (`monitor.sources.intune_mirror.RECORD_TYPES`).

A new dictionary would take new format bytes; the ones above must keep decoding as they do.
Decoding gives back exactly the bytes that were encoded (the canonical JSON), so stored objects
still compare as bytes.
"""

from __future__ import annotations

import re
from binascii import unhexlify
from functools import lru_cache
from importlib import resources

import zstandard

LEGACY_JSON = ord("{")
FRAME = 0x01
TYPED_FRAME = 0x02
PACKED_UUID = b"\xff"
# The UUIDs of a key that are replaced in its value: at most 9, one digit each after 0x01.
_MAX_TOKENS = 9
_TOKENS = tuple(bytes((1, ord("0") + n)) for n in range(_MAX_TOKENS))
_UUID_BYTES = re.compile(rb"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_PACKED = re.compile(rb"\xff(.{16})", re.DOTALL)
LEVEL = 3

_dictionary = zstandard.ZstdCompressionDict(resources.files("monitor").joinpath("mirror.zdict").read_bytes())
_dictionary.precompute_compress(level=LEVEL)
# Content size in the frame (a byte or two) lets decompress size its output; no checksum, no dict id
# (the format byte says which dictionary).
_compressor = zstandard.ZstdCompressor(
    level=LEVEL, dict_data=_dictionary, write_checksum=False, write_content_size=True, write_dict_id=False
)
_decompressor = zstandard.ZstdDecompressor(dict_data=_dictionary)


@lru_cache(maxsize=1 << 14)
def packed_key(key: str) -> tuple[bytes, tuple[bytes, ...]]:
    """The hash field of the object `key` (its UUIDs as 0xFF and 16 raw bytes), and the UUIDs its value
    is tokenized with (`encode_value`): one pass over the key for both. Cached: a sweep asks for the
    field of an object it mapped twice, for its seen ref and for its commit."""
    parts: list[bytes] = _UUID_BYTES.split(key.encode())
    if len(parts) == 1:
        return parts[0], ()
    found = parts[1::2]
    uuids = tuple(dict.fromkeys(found))[:_MAX_TOKENS]
    parts[1::2] = [PACKED_UUID + unhexlify(u.replace(b"-", b"")) for u in found]
    return b"".join(parts), uuids


def pack_key(key: str) -> bytes:
    """The hash field of the object `key`: its UUIDs as 0xFF and 16 raw bytes."""
    return packed_key(key)[0]


def unpack_key(field: bytes | str) -> str:
    """The `_key` stored in hash field `field` (fields written before packing are the key itself)."""
    return field if isinstance(field, str) else _unpacked(field)[0]


def unpack_keys(fields: list[bytes]) -> list[str]:
    """`unpack_key` of every field, uncached: a scan of a whole scope reads each key once."""
    return [_unpack_text(field) for field in fields]


def _unpack_text(field: bytes) -> str:
    """The key in `field`. Left to right: a 0xFF and the 16 bytes after it are one UUID, so a 0xFF
    among a UUID's raw bytes is consumed with it (fields written before packing are their own key)."""
    at = field.find(PACKED_UUID)
    if at < 0:
        return field.decode()
    parts: list[str] = []
    start = 0
    while 0 <= at <= len(field) - 17:
        parts.append(field[start:at].decode())
        h = field[at + 1 : at + 17].hex()
        parts.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
        start = at + 17
        at = field.find(PACKED_UUID, start)
    parts.append(field[start:].decode())
    return "".join(parts)


@lru_cache(maxsize=1 << 12)
def _unpacked(field: bytes) -> tuple[str, tuple[bytes, ...]]:
    """The key in `field`, and its UUIDs as text (`_key_uuids`). The split runs left to right, so a
    0xFF among a UUID's raw bytes is consumed with it. Cached: a scope the publisher uploads again
    after each change is read again, and this costs a few microseconds a key."""
    parts = _PACKED.split(field)
    if len(parts) == 1:
        return field.decode(), ()
    for n in range(1, len(parts), 2):
        h = parts[n].hex()
        parts[n] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}".encode()
    return b"".join(parts).decode(), tuple(dict.fromkeys(parts[1::2]))[:_MAX_TOKENS]


def decode_entry(field: bytes | str, value: bytes | str) -> tuple[str, bytes]:
    """(`_key`, canonical JSON) of a stored entry, either format."""
    if isinstance(field, str):
        return field, decode_value(field, value)
    key, uuids = _unpacked(field)
    return key, _decoded(key, value, uuids)


def _key_uuids(key: str) -> tuple[bytes, ...]:
    return packed_key(key)[1]


def tokenized(key: str, raw: bytes, uuids: tuple[bytes, ...] | None = None) -> bytes:
    """`raw` with the UUIDs of `key` (`uuids`, when known) replaced by their tokens (what is compressed)."""
    for token, uuid in zip(_TOKENS, _key_uuids(key) if uuids is None else uuids, strict=False):
        raw = raw.replace(uuid, token)
    return raw


def encode_value(key: str, raw: bytes, entity_type: str | None = None, uuids: tuple[bytes, ...] | None = None) -> bytes:
    """The stored value of the object `key` whose canonical JSON is `raw`; `entity_type` for an entity;
    `uuids` as `packed_key` gave them, when at hand."""
    frame = _compressor.compress(tokenized(key, raw, uuids))
    if entity_type is None or "\x00" in entity_type:
        return bytes((FRAME,)) + frame
    return bytes((TYPED_FRAME,)) + entity_type.encode() + b"\x00" + frame


def decode_value(key: str, value: bytes | str, uuids: tuple[bytes, ...] | None = None) -> bytes:
    """The canonical JSON of the object `key` from its stored value (any format above); `uuids` as
    `packed_key` gave them, when at hand."""
    return _decoded(key, value, uuids)


def _decoded(key: str, value: bytes | str, uuids: tuple[bytes, ...] | None) -> bytes:
    if isinstance(value, str):  # a client that decodes answers: only canonical JSON survives that
        return value.encode()
    marker = value[0]
    if marker == LEGACY_JSON:
        return value
    if marker == FRAME:
        body: bytes = _decompressor.decompress(value[1:])
    elif marker == TYPED_FRAME:
        body = _decompressor.decompress(value[value.index(b"\x00", 1) + 1 :])
    else:
        raise ValueError(f"mirror value of {key!r} in an unknown format ({marker:#04x})")
    if b"\x01" in body:
        for token, uuid in zip(_TOKENS, _key_uuids(key) if uuids is None else uuids, strict=False):
            body = body.replace(token, uuid)
    return body


def is_current(field: bytes, value: bytes, key: str) -> bool:
    """Whether an entry is stored as this module writes it (packed field, compressed value)."""
    return value[:1] != b"{" and field == pack_key(key)
