"""Hub key announcements signed by the hub (``omega.federation.keysign``), and the hub
that makes, keeps and uses its signer (state machine and ``HubService``).

A TV adopts a report key only if the hub signed it and it is newer than its own: a
shard's substituted key, a replayed older announcement, a missing, short or garbage
signature are each refused with their own type.
"""

from __future__ import annotations

import numpy as np
import pytest

from omega.federation import hub
from omega.federation.hubservice import HubService
from omega.federation.keysign import (
    DOMAIN,
    SIGNATURE_BYTES,
    AnnouncementError,
    ForgedAnnouncement,
    HubSigner,
    MalformedAnnouncement,
    StaleAnnouncement,
    UnsignedAnnouncement,
    UnverifiableAnnouncement,
    accept_announcement,
    announcement_bytes,
    parse_verify_key,
    verify_announcement,
)
from omega.federation.report import HubKey
from omega.federation.settings import HubSettings
from omega.protocol import GlobalUpdate, PullResp, decode, encode
from tests.unit.test_federation_inprocess import MemStore, noiseless

SIGNER = HubSigner.generate()
VK = SIGNER.verify_key
K1 = HubKey.generate(1)
K2 = HubKey.generate(2)


def announce(key: HubKey, signer: HubSigner = SIGNER) -> tuple[int, bytes, bytes]:
    return key.key_id, key.public, signer.sign(key.key_id, key.public)


# -- sign and verify ---------------------------------------------------------------------


def test_a_signed_announcement_verifies_and_names_exactly_its_key() -> None:
    kid, pub, sig = announce(K2)
    assert len(sig) == SIGNATURE_BYTES
    verify_announcement(VK, kid, pub, sig)
    assert announcement_bytes(kid, pub) == DOMAIN + kid.to_bytes(4, "big") + pub
    # The same signature for another id or another public key is worthless.
    with pytest.raises(ForgedAnnouncement):
        verify_announcement(VK, kid + 1, pub, sig)
    with pytest.raises(ForgedAnnouncement):
        verify_announcement(VK, kid, K1.public, sig)


def test_a_key_a_shard_substitutes_is_refused() -> None:
    shard = HubKey.generate(2)  # the shard's own key pair, under the next id
    # Unsigned, signed by the shard's own signer, or carrying the hub's signature of
    # the real key: none verifies with the hub's verify key.
    for sig in (HubSigner.generate().sign(2, shard.public), SIGNER.sign(2, K2.public)):
        with pytest.raises(ForgedAnnouncement):
            accept_announcement(K1, 2, shard.public, sig, VK)
    with pytest.raises(UnsignedAnnouncement):
        accept_announcement(K1, 2, shard.public, b"", VK)


def test_a_replayed_older_announcement_cannot_roll_the_key_back() -> None:
    assert accept_announcement(K1, *announce(K2), VK) == K2.public_only()
    # The hub really signed key 1 once; replayed now, it is refused: the TV keeps key 2.
    with pytest.raises(StaleAnnouncement):
        accept_announcement(K2, *announce(K1), VK)
    # Same id, another key, signed: the hub never signs two keys under one id.
    other = HubKey.generate(2)
    with pytest.raises(StaleAnnouncement):
        accept_announcement(K2, *announce(other), VK)


def test_nothing_to_adopt_for_no_announcement_or_the_current_key() -> None:
    assert accept_announcement(K1, 0, b"", b"", VK) is None
    # The current key again needs no signature check (the TV already trusts it).
    assert accept_announcement(K1, K1.key_id, K1.public, b"", None) is None
    # A TV provisioned with only the verify key takes the hub's first signed key.
    assert accept_announcement(None, *announce(K1), VK) == K1.public_only()


def test_without_a_verify_key_every_rotation_is_refused() -> None:
    with pytest.raises(UnverifiableAnnouncement, match="hub_verify_key"):
        accept_announcement(K1, *announce(K2), None)
    # An older key is no rotation: stale (no alarm), and not adopted either.
    with pytest.raises(StaleAnnouncement):
        accept_announcement(K2, *announce(K1), None)


@pytest.mark.parametrize("sig,error", [
    (b"\x00" * 63, MalformedAnnouncement),
    (b"\x00" * 65, MalformedAnnouncement),
    (b"\x00" * 64, ForgedAnnouncement),
    (bytes(range(64)), ForgedAnnouncement),
    (b"", UnsignedAnnouncement),
])
def test_wrong_length_or_garbage_signatures_are_typed_errors(sig: bytes, error: type) -> None:
    with pytest.raises(error):
        accept_announcement(K1, K2.key_id, K2.public, sig, VK)
    assert issubclass(error, AnnouncementError)


@pytest.mark.parametrize("key_id,public", [(0, K2.public), (2**32, K2.public), (2, b"k" * 31),
                                           (True, K2.public)])
def test_a_malformed_key_is_a_typed_error(key_id: int, public: bytes) -> None:
    with pytest.raises(MalformedAnnouncement):
        verify_announcement(VK, key_id, public, b"s" * 64)


def test_verify_keys_are_checked_and_the_seed_never_printed() -> None:
    assert parse_verify_key(VK.hex()) == VK == parse_verify_key(VK)
    for bad in ("zz" * 32, VK.hex()[:-2], b"x" * 31):
        with pytest.raises(MalformedAnnouncement):
            parse_verify_key(bad)
    with pytest.raises(MalformedAnnouncement):
        verify_announcement(b"short", *announce(K2))
    assert SIGNER.seed.hex() not in repr(SIGNER)
    with pytest.raises(ValueError):
        HubSigner(b"short")


def test_the_domain_tag_keeps_the_signer_from_vouching_for_anything_else() -> None:
    from nacl.signing import SigningKey

    # A signature over the bare (id, key) bytes, as some other protocol might ask the
    # same key for, does not verify as an announcement.
    bare = SigningKey(SIGNER.seed).sign((2).to_bytes(4, "big") + K2.public).signature
    with pytest.raises(ForgedAnnouncement):
        verify_announcement(VK, 2, K2.public, bytes(bare))


def test_the_signature_travels_in_the_trailing_wire_fields() -> None:
    kid, pub, sig = announce(K2)
    gu = decode(encode(GlobalUpdate(3, hub_key_id=kid, hub_public_key=pub, hub_key_sig=sig)))
    pr = decode(encode(PullResp(3, hub_key_id=kid, hub_public_key=pub, hub_key_sig=sig)))
    assert isinstance(gu, GlobalUpdate) and isinstance(pr, PullResp)
    assert gu.hub_key_sig == pr.hub_key_sig == sig
    assert PullResp(3).hub_key_sig == b""  # default: unsigned (and refused by a TV)


# -- the hub: its signer in the replicated state -----------------------------------------


def _hub() -> tuple[HubService, MemStore]:
    store = MemStore()
    return HubService(HubSettings(), noiseless(), store, rng=np.random.default_rng(1)), store


def test_the_first_key_pair_creates_the_signer_and_every_part_carries_a_valid_signature(
        ) -> None:
    svc, store = _hub()
    assert svc.ensure_key() == 1
    st = svc.status()
    vk = bytes.fromhex(st["verify_key"])
    parts = svc.release_parts()
    assert parts and all(p.hub_key_id == 1 for p in parts)
    for p in parts:
        verify_announcement(vk, p.hub_key_id, p.hub_public_key, p.hub_key_sig)
    # The operator's provisioning line names the current key and the verify key.
    assert st["provision"] == (f"--hub-key-id 1 --hub-public-key {parts[0].hub_public_key.hex()}"
                               f" --hub-verify-key {vk.hex()}")
    assert st["keys"][0]["signed"] is True
    # A rotation is signed by the same long-term signer: a TV provisioned once follows it.
    out = svc.rotate_key()
    assert out["key_id"] == 2 and out["verify_key"] == vk.hex()
    p = svc.release_parts()[0]
    assert accept_announcement(HubKey(1, parts[0].hub_public_key), p.hub_key_id,
                               p.hub_public_key, p.hub_key_sig, vk) is not None
    with store.read() as kv:
        seed = hub.signer_seed(kv)
    assert seed is not None and HubSigner(seed).verify_key == vk


def test_a_hub_whose_keys_predate_its_signer_gets_one_and_re_announces_signed() -> None:
    svc, store = _hub()
    # Key 1 as an older version made it: a five-field RotateKey, no signer, no signature.
    old = hub.pack([hub.RotateKey.TAG, hub.COMMAND_VERSION, 1, K1.public, K1.private, 1000,
                    60_000])
    assert store.apply(store.kv, old, 1) == ("rotated", 1)
    svc.release(announce=True)
    assert svc.release_parts()[0].hub_key_sig == b""
    before = svc.status()["counters"]["version"]
    assert svc.ensure_key() == 1
    st = svc.status()
    assert st["counters"]["version"] == before + 1  # a release re-announces key 1
    p = svc.release_parts()[0]
    verify_announcement(bytes.fromhex(st["verify_key"]), 1, K1.public, p.hub_key_sig)
    # A second signer can never replace the first.
    again = hub.SignKeys(5, HubSigner.generate().seed, ((1, b"x" * 64),))
    assert store.apply(store.kv, hub.encode_command(again), 9) == ("exists", 0)
    assert svc.status()["verify_key"] == st["verify_key"]


def test_a_rotation_signed_by_another_signer_is_refused_by_the_state_machine() -> None:
    svc, store = _hub()
    svc.ensure_key()
    rogue = HubSigner.generate()
    k = HubKey.generate(2)
    assert k.private is not None
    cmd = hub.RotateKey(2, k.public, k.private, 5, 60_000, rogue.sign(2, k.public), rogue.seed)
    assert store.apply(store.kv, hub.encode_command(cmd), 9) == ("signer_mismatch", 2)
    assert svc.status()["current_key"] == 1
    assert hub.decode_command(hub.encode_command(cmd)) == cmd
