"""The mirror's field and value encoding (`monitor.mirror_codec`): exact inverses, whatever the key."""

from __future__ import annotations

import uuid

import orjson
from hypothesis import given
from hypothesis import strategies as st

from monitor.mirror_codec import FRAME, TYPED_FRAME, decode_value, encode_value, pack_key, unpack_key, unpack_keys

uuids = st.uuids().map(str)
pieces = st.one_of(uuids, st.text(max_size=12), st.sampled_from(["|has|", "-", "intune-host-agent:", "\xff", "\x01"]))
keys = st.lists(pieces, max_size=6).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | uuids,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(keys)
def test_a_packed_key_unpacks_to_itself(key: str) -> None:
    assert unpack_key(pack_key(key)) == key


@given(st.lists(keys, max_size=4))
def test_packed_keys_unpack_to_themselves_in_bulk(batch: list[str]) -> None:
    assert unpack_keys([pack_key(key) for key in batch]) == batch


@given(keys, st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.none() | st.text(max_size=20))
def test_a_value_decodes_to_the_bytes_encoded(key: str, obj: dict[str, object], entity_type: str | None) -> None:
    raw = orjson.dumps({**obj, "_key": key, "ends": [key, *key.split("|")]}, option=orjson.OPT_SORT_KEYS)
    assert decode_value(key, encode_value(key, raw, entity_type)) == raw


def test_uuids_shrink_and_entities_carry_their_type() -> None:
    group, member = str(uuid.uuid4()), str(uuid.uuid4())
    key = f"{group}|has|{member}"
    raw = orjson.dumps({"_fromEntityKey": group, "_key": key, "_toEntityKey": member, "_type": "has"})

    assert len(pack_key(key)) == 2 * 17 + len("|has|")
    assert encode_value(key, raw)[0] == FRAME
    assert encode_value(member, raw, "azure_user").startswith(bytes((TYPED_FRAME,)) + b"azure_user\x00")
    assert decode_value(key, raw) == raw  # canonical JSON written before the encoding reads as it is
