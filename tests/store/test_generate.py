"""``Store.generate_codes`` (docs/api.md#generate) on SQLite and PostgreSQL: exactly the count or nothing, collisions
redrawn, the key-space guard counting only the codes a template can make (through each database's own matcher),
the program's limit for the whole request, and the id range of the new codes. The races are in
``test_concurrency.py``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from promocodes.domain.templates import Template
from promocodes.errors import Conflict, NotFound
from promocodes.models import Generation, Outcome
from promocodes.store import Store
from tests.helpers import ACTOR, Draw, drawing, scripted

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
UNBOUNDED = 10**12  # a key-space bound that never refuses: the store tests choose their own


async def make_program(store: Store, *codes: str, case_sensitive: bool = True, **settings: Any) -> int:
    """A program holding ``codes`` (imported under the program's case sensitivity)."""
    account_id = await store.ensure_account("acme", NOW)
    program = await store.create_program(account_id, {"name": "Gen", "case_sensitive": case_sensitive, **settings}, NOW)
    if codes:
        rows = [(code, code if case_sensitive else code.casefold()) for code in codes]
        assert len((await store.import_codes(program.id, rows, NOW, actor=ACTOR)).inserted) == len(codes)
    return program.id


async def generate(
    store: Store,
    program_id: int,
    count: int,
    draw: Draw,
    template: str = "SALE-######",
    most_matching: int = UNBOUNDED,
    case_sensitive: bool = True,
    return_codes: bool = True,
) -> Generation:
    pattern = Template(template).key_pattern(case_sensitive)
    return await store.generate_codes(
        program_id, range(count), draw, pattern, most_matching, NOW, case_sensitive, return_codes, actor=ACTOR
    )


async def held(store: Store, program_id: int) -> list[str]:
    return [item.code async for item in store.export_codes(program_id)]


async def test_generation_makes_exactly_the_count_in_creation_order(store: Store) -> None:
    program_id = await make_program(store, "OLD-1")
    made = await generate(store, program_id, 120, drawing("SALE-######"))
    assert made.outcome is Outcome.DONE
    assert len(made.codes) == len(set(made.codes)) == 120
    assert all(re.fullmatch("SALE-[0-9]{6}", code) for code in made.codes)
    assert await held(store, program_id) == ["OLD-1", *made.codes]  # the answer is in creation order
    assert (await store.program_stats(program_id, NOW)).total == 121


async def test_generation_of_more_than_one_batch(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Store, "GENERATION_BATCH", 7)
    program_id = await make_program(store)
    made = await generate(store, program_id, 30, drawing("??????"))
    assert len(set(made.codes)) == 30
    assert await held(store, program_id) == made.codes


async def test_the_id_range_holds_exactly_the_new_codes(store: Store) -> None:
    program_id = await make_program(store, "OLD-1", "OLD-2")
    made = await generate(store, program_id, 5, drawing("NEW-####"), return_codes=False)
    assert made.codes == []  # not asked for
    await store.import_codes(program_id, [("LATER", "LATER")], NOW, actor=ACTOR)
    page = await store.export_page(program_id, made.after_id, 100)
    in_range = [item.code for item in page if item.id <= made.last_id]
    assert len(in_range) == 5 and all(code.startswith("NEW-") for code in in_range)
    assert [item.code for item in page if item.id > made.last_id] == ["LATER"]


async def test_collisions_with_held_codes_and_within_a_batch_are_drawn_again(store: Store) -> None:
    program_id = await make_program(store, "A", "B")
    draw, asked = scripted([["A", "B", "C"], ["C", "C"], ["D", "A"], ["E"]])
    made = await generate(store, program_id, 3, draw, template="@")
    assert made.codes == ["C", "D", "E"]
    assert asked == [3, 2, 2, 1]  # each round draws exactly the shortfall
    assert await held(store, program_id) == ["A", "B", "C", "D", "E"]


async def test_a_nearly_full_small_template_still_gets_exactly_the_count(store: Store) -> None:
    """Half of the 100 codes of `##` held: real random draws collide often, and are redrawn until 10 are new."""
    taken = [f"{number:02d}" for number in range(0, 100, 2)]
    program_id = await make_program(store, *taken)
    made = await generate(store, program_id, 10, drawing("##"), template="##")
    assert len(set(made.codes)) == 10 and not set(made.codes) & set(taken)
    assert sorted(await held(store, program_id)) == sorted([*taken, *made.codes])


async def test_an_exhausted_template_rolls_back_what_it_had_inserted(store: Store) -> None:
    """Five of the ten codes of `#` are free and six are asked for: the five go in, the sixth cannot be drawn, and
    the whole generation is undone."""
    program_id = await make_program(store, "0", "1", "2", "3", "4")
    with pytest.raises(Conflict, match="Could not draw"):
        await generate(store, program_id, 6, drawing("#"), template="#")
    assert await held(store, program_id) == ["0", "1", "2", "3", "4"]
    assert (await store.program_stats(program_id, NOW)).total == 5
    # The count is still right. (Drawn at random, the last free digit would take ~10 rounds of one draw each, and
    # the rounds are few on purpose: scripted, the test cannot fail by chance.)
    draw, _ = scripted([["9", "5", "6", "7", "8"]])
    made = await generate(store, program_id, 5, draw, template="#")
    assert made.codes == ["9", "5", "6", "7", "8"]


async def test_a_case_insensitive_program_compares_generated_codes_by_their_fold(store: Store) -> None:
    program_id = await make_program(store, "ab", case_sensitive=False)
    draw, asked = scripted([["AB", "Cd"], ["cD"], ["EF"]])

    def keyed(count: int) -> tuple[list[str], list[str]]:
        codes, _ = draw(count)
        return codes, [code.casefold() for code in codes]

    made = await generate(store, program_id, 2, keyed, template="??", case_sensitive=False)
    assert made.codes == ["Cd", "EF"]  # `AB` and `cD` were taken under another case
    assert asked == [2, 1, 1]
    assert await store.code_state(program_id, "cd") is not None


async def test_the_guard_counts_only_the_held_codes_the_template_can_make(store: Store) -> None:
    program_id = await make_program(store, "SALE-1", "SALE-2", "SALE-3", "SALE-12", "sale-4", "OTHER", "SALE-A")
    refused = await generate(store, program_id, 3, drawing("SALE-#"), template="SALE-#", most_matching=5)
    assert (refused.outcome, refused.wanted, refused.allowed) == (Outcome.KEY_SPACE_FULL, 6, 5)
    assert refused.codes == []
    assert len(await held(store, program_id)) == 7  # nothing written
    made = await generate(store, program_id, 2, drawing("SALE-#"), template="SALE-#", most_matching=5)
    assert made.outcome is Outcome.DONE and len(made.codes) == 2
    again = await generate(store, program_id, 1, drawing("SALE-#"), template="SALE-#", most_matching=5)
    assert (again.outcome, again.wanted, again.allowed) == (Outcome.KEY_SPACE_FULL, 6, 5)


async def test_the_guard_reads_every_literal_literally(store: Store) -> None:
    """The template's literals hold what SQL LIKE, SQLite GLOB and regular expressions treat as special: each
    database must count only the codes that really match it."""
    template = r"a*b\?[#]%_.#"
    matching = ["a*b?[1]%_.2", "a*b?[9]%_.0"]
    others = ["axb?[1]%_.2", "a*bb[1]%_.2", "a*b?[1]%x.2", "a*b?[1]%_x2", "a*b?1]%_.2", "a*b?[1]%_.22", "A*B?[1]%_.2"]
    program_id = await make_program(store, *matching, *others)
    refused = await generate(store, program_id, 1, drawing(template), template=template, most_matching=2)
    assert (refused.outcome, refused.wanted) == (Outcome.KEY_SPACE_FULL, 3)


@pytest.mark.parametrize("case_sensitive", [True, False])
async def test_the_guard_matches_keys_as_the_program_compares_them(store: Store, case_sensitive: bool) -> None:
    """A case-insensitive program keys `sale-a1` and `SALE-B2` by their folds, and both can collide with a code
    of `SALE-@#`; a case-sensitive one holds `sale-a1`, which the template cannot make."""
    program_id = await make_program(store, "sale-a1", "SALE-B2", "Straße-3", case_sensitive=case_sensitive)
    refused = await generate(
        store,
        program_id,
        1,
        drawing("SALE-@#", case_sensitive),
        template="SALE-@#",
        most_matching=1,
        case_sensitive=case_sensitive,
    )
    assert (refused.outcome, refused.wanted) == (Outcome.KEY_SPACE_FULL, 2 if case_sensitive else 3)
    folded = await generate(
        store,
        program_id,
        1,
        drawing("STRASSE-#", case_sensitive),
        template="STRASSE-#",
        most_matching=1,
        case_sensitive=case_sensitive,
    )
    # `Straße-3` folds to `strasse-3`: a code of the template in a case-insensitive program only.
    assert folded.outcome is (Outcome.DONE if case_sensitive else Outcome.KEY_SPACE_FULL)


async def test_the_limit_is_checked_for_the_whole_request(store: Store) -> None:
    program_id = await make_program(store, "A", "B", codes_limit=10)
    refused = await generate(store, program_id, 9, drawing("SALE-######"))
    assert (refused.outcome, refused.wanted, refused.allowed) == (Outcome.LIMIT_REACHED, 11, 10)
    assert await held(store, program_id) == ["A", "B"]  # nothing generated, not even the 8 there was room for
    made = await generate(store, program_id, 8, drawing("SALE-######"))
    assert made.outcome is Outcome.DONE and len(made.codes) == 8
    assert (await generate(store, program_id, 1, drawing("SALE-######"))).outcome is Outcome.LIMIT_REACHED


async def test_generation_into_a_deleted_program_is_not_found(store: Store) -> None:
    program_id = await make_program(store)
    account_id = await store.ensure_account("acme", NOW)
    assert await store.delete_program(account_id, program_id, False) is True
    with pytest.raises(NotFound):
        await generate(store, program_id, 1, drawing("SALE-######"))


async def test_generation_under_a_case_sensitivity_that_changed_is_refused(store: Store) -> None:
    program_id = await make_program(store, case_sensitive=False)
    with pytest.raises(Conflict, match="case sensitivity"):
        await generate(store, program_id, 3, drawing("SALE-######"), case_sensitive=True)
    assert await held(store, program_id) == []
