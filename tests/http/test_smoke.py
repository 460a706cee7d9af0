from tests.helpers import Api


def test_activate_round_trip(api: Api) -> None:
    loyalty_id = api.program()
    api.codes(loyalty_id, "SPRING-1")
    db_id = api.database()
    api.profile(db_id, "ann@example.org")
    assert api.ok("promocodes/attach", loyalty_id=loyalty_id, db_id=db_id, email="ann@example.org") == {
        "code": "SPRING-1"
    }
    assert api.ok("promocodes/activate", loyalty_id=loyalty_id, code="SPRING-1") is None
    second = api.call("promocodes/activate", loyalty_id=loyalty_id, code="SPRING-1")
    assert (second["error"], second["error_text"]) == (409, "Promo code already activated")
