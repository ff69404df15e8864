"""The drill's accounting: what a client was owed, got and told (no sockets)."""

from __future__ import annotations

from sanic_feeds.drill.ledger import ClientTally, EpochBook, OffsetLedger, RawLedger
from sanic_feeds.events import StreamPosition


def at(offset: int, epoch: str = "e1") -> StreamPosition:
    return StreamPosition(offset, epoch)


def book_of(**last: int) -> EpochBook:
    book = EpochBook()
    for epoch, offset in last.items():
        book.note(at(offset, epoch))
    return book


def fed(*offsets: int, epoch: str = "e1", start: int = 0) -> OffsetLedger:
    ledger = OffsetLedger()
    ledger.subscribed(at(start, epoch), recovered=False)
    for offset in offsets:
        ledger.message(at(offset, epoch), None, 0.0)
    return ledger


def test_every_offset_once_in_order_is_clean() -> None:
    tally = fed(1, 2, 3, 4, 5).tally(book_of(e1=5))
    assert tally == ClientTally(delivered=5)
    assert not tally.broken


def test_a_gap_nobody_explained_is_lost() -> None:
    tally = fed(1, 2, 4, 5).tally(book_of(e1=5))
    assert (tally.lost, tally.out_of_order, tally.duplicates) == (1, 0, 0)
    assert tally.broken


def test_the_tail_the_client_never_got_is_lost() -> None:
    assert fed(1, 2, 3).tally(book_of(e1=6)).lost == 3


def test_what_came_before_the_first_subscription_is_not_owed() -> None:
    assert fed(11, 12, start=10).tally(book_of(e1=12)) == ClientTally(delivered=2)


def test_a_late_offset_is_out_of_order_and_a_repeated_one_a_duplicate() -> None:
    tally = fed(1, 3, 2, 3, 4).tally(book_of(e1=4))
    assert (tally.lost, tally.out_of_order, tally.duplicates, tally.delivered) == (0, 1, 1, 5)


def test_recovered_true_keeps_everything_owed() -> None:
    ledger = fed(1, 2)
    ledger.subscribed(at(5), recovered=True)
    for offset in (3, 4, 5):
        ledger.message(at(offset), None, 0.0)
    assert ledger.tally(book_of(e1=5)) == ClientTally(delivered=5)

    broken = fed(1, 2)
    broken.subscribed(at(5), recovered=True)  # and then nothing of 3 to 5 came
    broken.message(at(6), None, 0.0)
    assert broken.tally(book_of(e1=6)).lost == 3


def test_recovered_false_in_the_same_epoch_excuses_the_gap_up_to_the_new_start() -> None:
    ledger = fed(1, 2)
    ledger.subscribed(at(6), recovered=False)
    for offset in (7, 8):
        ledger.message(at(offset), None, 0.0)
    tally = ledger.tally(book_of(e1=8))
    assert (tally.lost, tally.excused, tally.excused_new_epoch, tally.recovered_false) == (
        0,
        4,
        0,
        1,
    )
    assert ledger.position == at(8)


def test_a_gap_before_recovered_false_is_still_lost() -> None:
    ledger = fed(1, 3)  # 2 never came, and nothing said so
    ledger.subscribed(at(5), recovered=False)
    tally = ledger.tally(book_of(e1=5))
    assert (tally.lost, tally.excused) == (1, 2)


def test_recovered_false_in_a_new_epoch_excuses_the_old_tail_and_counts_the_new_start() -> None:
    ledger = fed(1, 2, 3)
    ledger.subscribed(at(4, "e2"), recovered=False)  # from now: 1 to 4 of e2 skipped
    for offset in (5, 6):
        ledger.message(at(offset, "e2"), None, 0.0)
    tally = ledger.tally(book_of(e1=10, e2=6))
    assert tally.lost == 0
    assert tally.excused == 7 + 4
    assert tally.excused_new_epoch == 4
    assert tally.unannounced_epochs == 0


def test_a_new_epoch_from_its_first_offset_loses_nothing_of_it() -> None:
    ledger = fed(1, 2, 3)
    ledger.subscribed(at(0, "e2"), recovered=False)
    for offset in (1, 2, 3):
        ledger.message(at(offset, "e2"), None, 0.0)
    tally = ledger.tally(book_of(e1=5, e2=3))
    assert (tally.lost, tally.excused, tally.excused_new_epoch) == (0, 2, 0)


def test_an_epoch_change_nobody_announced_owes_both_epochs() -> None:
    ledger = fed(1, 2)
    ledger.message(at(3, "e2"), None, 0.0)
    tally = ledger.tally(book_of(e1=4, e2=3))
    assert tally.unannounced_epochs == 1
    assert tally.lost == 2 + 2  # 3 and 4 of e1, 1 and 2 of e2


def test_a_restart_behind_the_client_shows_as_duplicates() -> None:
    ledger = fed(1, 2, 3, 4, 5)
    ledger.subscribed(at(3), recovered=False)  # an instance behind the client
    for offset in (4, 5, 6):
        ledger.message(at(offset), None, 0.0)
    tally = ledger.tally(book_of(e1=6))
    assert (tally.lost, tally.duplicates, tally.excused) == (0, 2, 0)
    assert ledger.position == at(6)


def test_a_message_before_any_subscription_is_a_protocol_error() -> None:
    ledger = OffsetLedger()
    ledger.message(at(1), None, 0.0)
    assert ledger.tally(book_of(e1=1)).protocol_errors == 1


def test_delays_split_at_the_fault() -> None:
    ledger = OffsetLedger()
    ledger.subscribed(at(0), recovered=False)
    ledger.message(at(1), 10.0, 10.5)
    ledger.fault_at = 11.0
    ledger.message(at(2), 10.9, 11.2)
    ledger.message(at(3), 11.0, 13.0)
    ledger.message(at(4), None, 14.0)  # no send time: no delay
    tally = ledger.tally(book_of(e1=4))
    assert tally.max_delay_before_s == 0.5
    assert tally.max_delay_after_s == 2.0


def test_tallies_add_up() -> None:
    one = ClientTally(delivered=3, lost=1, max_delay_after_s=2.0)
    two = ClientTally(delivered=4, duplicates=2, max_delay_after_s=1.0)
    total = ClientTally.total([one, two])
    assert (total.clients, total.delivered, total.lost, total.duplicates) == (2, 7, 1, 2)
    assert total.max_delay_after_s == 2.0
    assert ClientTally.total([]) == ClientTally(clients=0)
    assert not ClientTally(delivered=1, recovered_false=3, excused=9).broken


def test_the_epoch_book_counts_offsets_over_epochs() -> None:
    book = book_of(e1=7)
    book.note(at(3, "e1"))
    book.note(at(2, "e2"))
    assert (book.last("e1"), book.last("e2"), book.last("none")) == (7, 2, 0)
    assert (book.epochs, book.offsets) == (2, 9)


def test_a_raw_client_counts_what_it_missed_by_sequence_number() -> None:
    ledger = RawLedger()
    ledger.fault_at = 5.0
    for seq in (0, 1, 2, 3, 4, 4, 7):
        ledger.message(seq, float(seq), float(seq) + 0.5)
    tally = ledger.tally(dict.fromkeys(range(10)))
    assert (tally.delivered, tally.missed, tally.repeated) == (7, 4, 1)
    assert tally.max_delay_after_s == 0.5


def test_it_says_how_far_behind_and_when_a_client_was_given_up() -> None:
    ledger = fed(1, 2)
    ledger.fault_at = 100.0
    ledger.subscribed(at(130), recovered=False, received_at=101.5)
    ledger.subscribed(at(5, "e2"), recovered=False, received_at=103.0)  # no jump to count
    tally = ledger.tally(book_of(e1=130, e2=5))
    assert tally.max_skipped == 128
    assert (tally.recovered_false_from_s, tally.recovered_false_until_s) == (1.5, 3.0)
    other = ClientTally(max_skipped=3, recovered_false_from_s=0.5)
    total = tally.add(other)
    assert (total.max_skipped, total.recovered_false_from_s) == (128, 0.5)
    assert total.recovered_false_until_s == 3.0
    assert fed(1).tally(book_of(e1=1)).recovered_false_from_s is None
