"""The tests' judge of a changed stream (testkit/corruption.py): known answers, and the
simulator's run where two bit flips cancelled out in the DSS checksum."""

from __future__ import annotations

from testkit.corruption import checksum_cannot_see, checksum_delta, wrong_bytes


def test_one_flipped_bit_is_always_seen():
    for off in (0, 1, 2, 3, 1000):
        for bit in range(8):
            assert not checksum_cannot_see([(off, 0, 1 << bit)])
            assert not checksum_cannot_see([(off, 0xFF, 0xFF ^ (1 << bit))])


def test_a_set_and_a_cleared_bit_of_the_same_weight_cancel():
    # the simulator's seed 110: bit 3 set at an even offset, cleared at another even offset
    assert checksum_cannot_see([(994744, 197, 205), (996438, 59, 51)])
    # same bit, one even and one odd offset: different weights, seen
    assert not checksum_cannot_see([(994744, 197, 205), (996439, 59, 51)])
    # both set: never cancels
    assert not checksum_cannot_see([(10, 0, 8), (20, 0, 8)])


def test_the_carry_of_the_ones_complement_sum():
    # +0x80 at the high byte of one word and +0x80 at the high byte of another add 0x10000,
    # which ones' complement folds to 1: not 0
    assert checksum_delta([(0, 0, 0x80), (2, 0, 0x80)]) == 1
    # a high-byte bit 7 carried out comes back as the low-byte bit 0 of the same sum
    assert checksum_cannot_see([(0, 0, 0x80), (2, 0, 0x80), (5, 1, 0)])


def test_wrong_bytes_lists_each_difference():
    assert wrong_bytes(b"abcd", b"abXd") == [(2, ord("c"), ord("X"))]
    assert wrong_bytes(b"ab", b"ab") == []


def test_the_servers_pattern_check_names_the_changed_bytes():
    """``server --check-pattern``: what the live corruption tests read instead of a sha256,
    across the pattern's block boundary and reads of any size."""
    from mptcp_impl.cli import BLOCK, PatternCheck, pattern_block

    stream = bytearray(pattern_block(7) * 2)[: BLOCK + 5000]
    stream[3] ^= 0x10
    stream[BLOCK + 1] ^= 0x01
    check = PatternCheck(7)
    for a in range(0, len(stream), 70_001):
        check.update(bytes(stream[a : a + 70_001]))
    want = pattern_block(7)
    assert check.wrong == [(3, want[3], want[3] ^ 0x10), (BLOCK + 1, want[1], want[1] ^ 0x01)]
    assert check.wrong_count == 2 and check.at == len(stream)
    assert not checksum_cannot_see(check.wrong)


def test_the_live_pair_passes_its_mappings_own_checksum():
    """tests/mptcp_interop/test_corruption.py::test_fixed_checksums_caught_by_dss_checksums,
    live with two CPU hogs: the server delivered bytes 195302 and 196884 changed (bit 6 of a
    high byte set in one, cleared in the other), both inside one lte mapping (stream offset
    186576, 14480 bytes) whose DSS checksum passed. The stack's own check on the client's
    pattern: either change alone fails it, the two together pass. The DSS checksum's blind
    spot, not a way around the check (each of the 7 changed streams seen in 115 such runs
    was one such pair)."""
    from mptcp_impl.cli import pattern_block
    from mptcp_impl.mptcp import crypto

    start, length = 186576, 14480
    dsn, ssn = (0x1234_5678_9ABC_DEF0 + 1 + start) & (1 << 64) - 1, 1 + 4 * length
    mapping = pattern_block(0)[start : start + length]
    csum = crypto.dss_checksum(dsn, ssn, length, mapping)
    pair = [(195302, 32, 96), (196884, 107, 43)]
    assert [mapping[off - start] for off, _, _ in pair] == [sent for _, sent, _ in pair]

    def changed(changes):
        b = bytearray(mapping)
        for off, _, got in changes:
            b[off - start] = got
        return bytes(b)

    assert crypto.dss_checksum_ok(dsn, ssn, length, mapping, csum)
    for one in pair:
        assert not crypto.dss_checksum_ok(dsn, ssn, length, changed([one]), csum)
    assert crypto.dss_checksum_ok(dsn, ssn, length, changed(pair), csum)
    assert checksum_cannot_see(pair)
