import datetime as dt

import pytest

from services.inventory import domain
from services.inventory.domain import (
    CREDIT_CODE_ALPHABET,
    InvalidUnit,
    InvalidValue,
    blocking_reasons,
    calibration_due_on,
    certificate_expires_on,
    check_passed,
    credit_code_check_char,
    credit_code_problem,
    equipment_state,
    instrument_due_on,
    is_usable,
    normalise_credit_code,
    normalise_unit,
    unit_problem,
    verification_next_due_on,
)

TODAY = dt.date(2025, 6, 15)
YESTERDAY = TODAY - dt.timedelta(days=1)
TOMORROW = TODAY + dt.timedelta(days=1)

# Verified by hand with the GB 32100-2015 rule:
# 9 1 3 7 0 3 0 0 M A 3 C 1 Y 7 H 7 have values 9 1 3 7 0 3 0 0 21 10 3 12 1 30 7 17 7; times the weights
# 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28 that is 9+3+27+189+0+78+0+0+420+290+75+156+8+720+70+510+196
# = 2751; 2751 mod 31 = 23; 31 - 23 = 8, so the check character is "8".
HAND_CHECKED_CODE = "91370300MA3C1Y7H78"


# --- credit codes ---------------------------------------------------------------------------------


def test_a_hand_checked_credit_code_is_valid():
    assert credit_code_check_char(HAND_CHECKED_CODE[:17]) == "8"
    assert credit_code_problem(HAND_CHECKED_CODE) is None


def test_the_code_ending_in_f_fails_its_check_digit_and_names_the_expected_one():
    # 91370300MA3C1Y7H7F was offered as a real code; by the algorithm its check character must be 8.
    problem = credit_code_problem("91370300MA3C1Y7H7F")
    assert problem is not None
    assert "'F'" in problem and "'8'" in problem


def test_a_weighted_sum_divisible_by_31_gives_check_character_zero():
    # All zeros: sum 0, 31 - 0 = 31, and 31 counts as 0.
    assert credit_code_check_char("0" * 17) == "0"
    assert credit_code_problem("0" * 18) is None


@pytest.mark.parametrize(
    "first17",
    ["91370300MA3C1Y7H7", "12370300004993372", "52370303MJE000000", "Y1370300LNPQRTUWX", "93370321ABCDEFGHJ"],
)
def test_a_code_completed_with_its_computed_check_character_is_valid_and_every_other_ending_is_not(first17):
    check = credit_code_check_char(first17)
    assert credit_code_problem(first17 + check) is None
    wrong_endings = [char for char in CREDIT_CODE_ALPHABET if char != check]
    assert len(wrong_endings) == 30
    for wrong in wrong_endings:
        assert "check character" in credit_code_problem(first17 + wrong)


def test_changing_one_character_of_a_valid_code_breaks_the_check():
    tampered = HAND_CHECKED_CODE[:10] + "4" + HAND_CHECKED_CODE[11:]  # 3 -> 4 at position 11
    assert credit_code_problem(tampered) is not None


@pytest.mark.parametrize("letter", ["I", "O", "Z", "S", "V"])
def test_letters_that_gb_32100_leaves_out_are_refused_with_their_position(letter):
    code = HAND_CHECKED_CODE[:8] + letter + HAND_CHECKED_CODE[9:]
    problem = credit_code_problem(code)
    assert problem == (
        f"character {letter!r} at position 9 is not allowed "
        "(only digits and upper-case letters other than I, O, S, V and Z)"
    )


def test_punctuation_inside_a_code_is_refused_with_its_position():
    assert credit_code_problem("9137-300MA3C1Y7H78").startswith("character '-' at position 5 ")


@pytest.mark.parametrize(
    ("code", "length"), [("", 0), (HAND_CHECKED_CODE[:17], 17), (HAND_CHECKED_CODE + "0", 19)]
)
def test_a_code_that_is_not_18_characters_is_refused_with_its_length(code, length):
    assert credit_code_problem(code) == f"must be 18 characters long, not {length}"


def test_lower_case_padded_and_full_width_codes_are_normalised_and_accepted():
    assert normalise_credit_code("  91370300ma3c1y7h78 ") == HAND_CHECKED_CODE
    assert normalise_credit_code("９１370300MA3C1Y7H78") == HAND_CHECKED_CODE
    assert credit_code_problem(" 91370300ma3c1y7h78\n") is None


def test_a_credit_code_that_is_not_a_string_is_a_problem_not_a_crash():
    assert credit_code_problem(None) == "must be a string of 18 characters"  # type: ignore[arg-type]


def test_a_check_character_needs_exactly_17_valid_characters():
    with pytest.raises(InvalidValue):
        credit_code_check_char("9137")
    with pytest.raises(InvalidValue):
        credit_code_check_char("9137030OMA3C1Y7H7")  # letter O


# --- certificates and calibration due dates -------------------------------------------------------


def test_an_assessment_certificate_is_valid_four_years_by_default():
    assert certificate_expires_on(dt.date(2023, 3, 15), None) == dt.date(2027, 3, 15)


def test_a_certificate_issued_on_29_february_expires_on_29_february_four_years_later():
    assert certificate_expires_on(dt.date(2024, 2, 29), None) == dt.date(2028, 2, 29)


def test_an_explicit_certificate_expiry_wins_over_the_default():
    assert certificate_expires_on(dt.date(2023, 3, 15), dt.date(2026, 1, 1)) == dt.date(2026, 1, 1)


def test_a_calibration_on_31_january_with_a_one_month_interval_is_due_at_the_end_of_february():
    assert calibration_due_on(dt.date(2024, 1, 31), 1, None) == dt.date(2024, 2, 29)
    assert calibration_due_on(dt.date(2025, 1, 31), 1, None) == dt.date(2025, 2, 28)


def test_a_calibration_on_29_february_with_a_twelve_month_interval_is_due_on_28_february():
    assert calibration_due_on(dt.date(2024, 2, 29), 12, None) == dt.date(2025, 2, 28)


def test_the_certificates_valid_until_wins_over_the_interval():
    assert calibration_due_on(dt.date(2024, 5, 10), 12, dt.date(2024, 11, 9)) == dt.date(2024, 11, 9)


def test_a_calibration_without_interval_or_valid_until_has_no_due_date():
    assert calibration_due_on(dt.date(2024, 5, 10), None, None) is None


def test_a_passed_calibration_is_due_after_the_interval_or_on_valid_until():
    assert calibration_due_on(dt.date(2024, 5, 10), 12, None, "pass") == dt.date(2025, 5, 10)
    assert calibration_due_on(dt.date(2024, 5, 10), 12, dt.date(2024, 11, 9), "pass") == dt.date(2024, 11, 9)


def test_a_failed_calibration_leaves_the_equipment_due_at_once():
    calibrated = dt.date(2025, 1, 10)
    assert calibration_due_on(calibrated, 12, None, "fail") == calibrated
    assert calibration_due_on(calibrated, 12, dt.date(2026, 1, 9), "fail") == calibrated
    assert calibration_due_on(calibrated, None, None, "fail") == calibrated


def test_a_failed_calibration_blocks_from_the_next_day():
    calibrated = dt.date(2025, 1, 10)
    due_on = calibration_due_on(calibrated, 12, None, "fail")
    assert equipment_state(due_on, calibrated + dt.timedelta(days=1)) == "overdue"
    assert blocking_reasons("in_service", dt.date(2028, 1, 1), [("e1", due_on)],
                            calibrated + dt.timedelta(days=1)) == ["equipment_overdue:e1"]


def test_a_limited_calibration_counts_as_passed():
    calibrated = dt.date(2024, 5, 10)
    assert calibration_due_on(calibrated, 12, None, "limited") == dt.date(2025, 5, 10)
    assert calibration_due_on(calibrated, 12, dt.date(2024, 11, 9), "limited") == dt.date(2024, 11, 9)
    assert calibration_due_on(calibrated, None, None, "limited") is None


def test_an_unknown_calibration_result_is_refused():
    with pytest.raises(InvalidValue):
        calibration_due_on(TODAY, 12, None, "ok")


# --- equipment states -----------------------------------------------------------------------------


def test_equipment_due_today_is_still_valid_but_due_soon():
    assert equipment_state(TODAY, TODAY) == "due_soon"


def test_equipment_due_yesterday_is_overdue():
    assert equipment_state(YESTERDAY, TODAY) == "overdue"


def test_equipment_due_tomorrow_is_due_soon():
    assert equipment_state(TOMORROW, TODAY) == "due_soon"


def test_equipment_due_in_exactly_30_days_is_due_soon_and_in_31_days_is_ok():
    assert equipment_state(TODAY + dt.timedelta(days=30), TODAY) == "due_soon"
    assert equipment_state(TODAY + dt.timedelta(days=31), TODAY) == "ok"


def test_the_due_soon_window_can_be_set():
    assert equipment_state(TOMORROW, TODAY, due_soon_days=0) == "ok"
    assert equipment_state(TODAY, TODAY, due_soon_days=0) == "due_soon"


def test_equipment_without_a_due_date_was_never_calibrated():
    assert equipment_state(None, TODAY) == "never_calibrated"


# --- blocking reasons -----------------------------------------------------------------------------


def test_a_standard_in_service_with_valid_certificate_and_calibrations_is_usable():
    reasons = blocking_reasons("in_service", TODAY, [("e1", TODAY), ("e2", TOMORROW)], TODAY)
    assert reasons == []
    assert is_usable(reasons) is True


def test_equipment_never_calibrated_blocks_the_standard():
    reasons = blocking_reasons("in_service", dt.date(2027, 1, 1), [("e1", None)], TODAY)
    assert reasons == ["equipment_never_calibrated:e1"]
    assert is_usable(reasons) is False


def test_overdue_equipment_blocks_the_standard():
    assert blocking_reasons("in_service", dt.date(2027, 1, 1), [("e1", YESTERDAY)], TODAY) == [
        "equipment_overdue:e1"
    ]


def test_a_certificate_expiring_today_still_allows_use_and_is_expired_tomorrow():
    assert blocking_reasons("in_service", TODAY, [], TODAY) == []
    assert blocking_reasons("in_service", TODAY, [], TOMORROW) == ["assessment_certificate_expired"]


def test_a_standard_without_a_certificate_is_blocked():
    assert blocking_reasons("in_service", None, [], TODAY) == ["assessment_certificate_missing"]


@pytest.mark.parametrize("status", ["suspended", "sealed", "retired"])
def test_a_standard_not_in_service_is_blocked_by_its_status(status):
    assert blocking_reasons(status, dt.date(2027, 1, 1), [], TODAY) == [f"status_{status}"]


def test_every_failing_condition_is_named_status_then_certificate_then_equipment_by_id():
    equipment = [("c-ok", TOMORROW), ("b-never", None), ("a-late", YESTERDAY)]
    expected = [
        "status_sealed",
        "assessment_certificate_expired",
        "equipment_overdue:a-late",
        "equipment_never_calibrated:b-never",
    ]
    assert blocking_reasons("sealed", YESTERDAY, equipment, TODAY) == expected
    assert blocking_reasons("sealed", YESTERDAY, list(reversed(equipment)), TODAY) == expected


def test_blocking_reasons_accept_any_iterable_of_equipment():
    pairs = ((f"e{i}", None) for i in range(2))
    assert blocking_reasons("in_service", TODAY, pairs, TODAY) == [
        "equipment_never_calibrated:e0",
        "equipment_never_calibrated:e1",
    ]


def test_an_unknown_status_is_a_programming_error():
    with pytest.raises(InvalidValue):
        blocking_reasons("broken", TODAY, [], TODAY)


# --- enterprise instruments -----------------------------------------------------------------------


def test_a_never_verified_instrument_is_due_on_the_day_it_was_registered():
    registered = dt.date(2025, 3, 2)
    assert instrument_due_on(None, 6, registered) == registered


def test_a_verified_instrument_is_due_one_interval_after_its_verification():
    assert instrument_due_on(dt.date(2025, 8, 31), 6, dt.date(2020, 1, 1)) == dt.date(2026, 2, 28)


def test_a_passed_verification_is_next_due_one_interval_later():
    assert verification_next_due_on(dt.date(2025, 1, 31), 1, "pass") == dt.date(2025, 2, 28)


def test_a_passed_verification_with_a_certificate_end_date_is_due_then():
    assert verification_next_due_on(dt.date(2025, 1, 10), 12, "pass", dt.date(2025, 7, 9)) == dt.date(
        2025, 7, 9
    )


def test_a_failed_verification_leaves_the_instrument_due_at_once():
    verified = dt.date(2025, 1, 10)
    assert verification_next_due_on(verified, 12, "fail") == verified
    assert verification_next_due_on(verified, 12, "fail", dt.date(2026, 1, 9)) == verified


def test_an_unknown_verification_result_is_refused():
    with pytest.raises(InvalidValue):
        verification_next_due_on(TODAY, 12, "limited")


# --- stability and repeatability checks -----------------------------------------------------------


def test_stability_passes_only_strictly_below_the_limit():
    assert check_passed("stability", 0.019, 0.02) is True
    assert check_passed("stability", -0.019, 0.02) is True
    assert check_passed("stability", 0.02, 0.02) is False
    assert check_passed("stability", -0.021, 0.02) is False


def test_repeatability_passes_up_to_and_including_the_limit():
    assert check_passed("repeatability", 0.05, 0.05) is True
    assert check_passed("repeatability", 0.051, 0.05) is False


def test_a_check_with_a_value_that_is_not_a_number_fails():
    assert check_passed("repeatability", float("nan"), 0.05) is False
    assert check_passed("stability", 0.0, float("inf")) is False
    assert check_passed("repeatability", 0.0, -1.0) is False


def test_an_unknown_check_kind_is_refused():
    with pytest.raises(InvalidValue):
        check_passed("drift", 0.0, 1.0)


# --- units ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        "Pa",
        "kPa",
        "MPa",
        "degC",
        "°C",
        "℃",
        "K",
        "m^3/h",
        "m³/h",
        "L/min",
        "mL/min",
        "%",
        "%RH",
        "% RH",
        "mol/(m^2*s*Pa)",
        "Pa·s",
        "µm",
        "Ω",
        "ppm",
        "mol/mol",
    ],
)
def test_real_units_are_accepted(unit):
    assert unit_problem(unit) is None


@pytest.mark.parametrize(
    ("unit", "fragment"),
    [
        ("furlongz", "'furlongz' is not a known unit"),
        ("", "must name a unit"),
        ("   ", "must name a unit"),
        ("1/0", "is not a valid unit expression"),
        ("m**", "is not a valid unit expression"),
        ("2 m", "contains a number"),
        ("m,m", "the character ','"),
        ("m^1e999", "exponent"),
        ("kg*" * 30, "too long"),
    ],
)
def test_garbage_units_are_refused_with_a_reason(unit, fragment):
    problem = unit_problem(unit)
    assert problem is not None
    assert fragment in problem


@pytest.mark.parametrize(
    "unit",
    [
        None,
        42,
        b"kPa",
        "\x00",
        "\ud800",
        "(" * 60,
        "m" + "^" * 60,
        "__import__('os')",
        "[length]",
        "m/(",
        "∞",
    ],
)
def test_unit_validation_never_raises(unit):
    assert isinstance(unit_problem(unit), str)


def test_relative_humidity_is_stored_as_percent_rh():
    assert normalise_unit("% rh") == "%RH"
    assert normalise_unit("%RH") == "%RH"


def test_units_are_stored_as_written_except_for_unified_spellings():
    assert normalise_unit("  m^3/h ") == "m^3/h"
    assert normalise_unit("℃") == "°C"
    assert normalise_unit("\u2126") == "\u03a9"
    assert normalise_unit("kPa") == "kPa"


def test_normalising_a_unit_twice_changes_nothing():
    for unit in ["℃", "% rh", " L/min ", "mol/(m^2*s*Pa)"]:
        once = normalise_unit(unit)
        assert normalise_unit(once) == once
        assert unit_problem(once) is None


def test_normalising_an_unknown_unit_raises_a_domain_error_with_the_reason():
    with pytest.raises(InvalidUnit, match="furlongz"):
        normalise_unit("furlongz")
    assert issubclass(InvalidUnit, domain.DomainError)


def test_disciplines_and_statuses_are_the_contracts():
    assert domain.DISCIPLINES == (
        "geometry",
        "thermal",
        "mechanical",
        "electromagnetic",
        "radio",
        "time_frequency",
        "acoustics",
        "optics",
        "ionizing_radiation",
        "physical_chemistry",
    )
    assert domain.STANDARD_STATUSES == ("in_service", "suspended", "sealed", "retired")
