"""The inventory's rules as plain functions: credit codes, due dates, usability, units, checks.

No Flask, no database, no I/O: every function here takes plain values (dates, strings, numbers) and
returns plain values, so the rules can be read and tested on their own.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import unicodedata
from collections.abc import Iterable
from typing import Any

from shared.timeutil import add_months, add_years


class DomainError(Exception):
    """A rule of the inventory was broken; the message says which, in plain English."""


class InvalidValue(DomainError, ValueError):
    """A value outside the set a rule knows (an unknown status, result or check kind)."""


class InvalidUnit(DomainError, ValueError):
    """A unit that is not a real unit of measurement."""


# --- Unified social credit code (统一社会信用代码), GB 32100-2015 -------------------------------------

CREDIT_CODE_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
CREDIT_CODE_LENGTH = 18
_CREDIT_CODE_VALUES = {char: value for value, char in enumerate(CREDIT_CODE_ALPHABET)}
_CREDIT_CODE_ALLOWED = "digits and upper-case letters other than I, O, S, V and Z"


def normalise_credit_code(code: str) -> str:
    """The form a credit code is checked and stored in: full-width characters folded, trimmed, upper case."""
    # NFKC folds full-width digits and letters, which Chinese input methods often produce.
    return unicodedata.normalize("NFKC", code).strip().upper()


def credit_code_check_char(first17: str) -> str:
    """The 18th (check) character for the first 17 characters of a normalised credit code."""
    if len(first17) != CREDIT_CODE_LENGTH - 1:
        raise InvalidValue(f"a check character is computed from 17 characters, not {len(first17)}")
    total = 0
    for position, (char, weight) in enumerate(zip(first17, CREDIT_CODE_WEIGHTS, strict=True), start=1):
        if char not in _CREDIT_CODE_VALUES:
            raise InvalidValue(f"character {char!r} at position {position} is not allowed")
        total += _CREDIT_CODE_VALUES[char] * weight
    return CREDIT_CODE_ALPHABET[(31 - total % 31) % 31]


def credit_code_problem(code: str) -> str | None:
    """None if `code` (after `normalise_credit_code`) is a well-formed credit code, else what is wrong."""
    if not isinstance(code, str):
        return "must be a string of 18 characters"
    normalised = normalise_credit_code(code)
    if len(normalised) != CREDIT_CODE_LENGTH:
        return f"must be 18 characters long, not {len(normalised)}"
    for position, char in enumerate(normalised, start=1):
        if char not in _CREDIT_CODE_VALUES:
            return f"character {char!r} at position {position} is not allowed (only {_CREDIT_CODE_ALLOWED})"
    expected = credit_code_check_char(normalised[:17])
    if normalised[17] != expected:
        return (
            f"check character (position 18) is {normalised[17]!r} but the first 17 characters "
            f"require {expected!r} (GB 32100-2015)"
        )
    return None


# --- Standards ------------------------------------------------------------------------------------

DISCIPLINES = (
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
STANDARD_STATUSES = ("in_service", "suspended", "sealed", "retired")
EQUIPMENT_STATES = ("ok", "due_soon", "overdue", "never_calibrated")
CERTIFICATE_VALIDITY_YEARS = 4
DUE_SOON_DAYS = 30


def certificate_expires_on(issued_on: dt.date, expires_on: dt.date | None) -> dt.date:
    """The assessment certificate's expiry: as given, else issued_on + 4 years (clamped to month end)."""
    if expires_on is not None:
        return expires_on
    return add_years(issued_on, CERTIFICATE_VALIDITY_YEARS)


CALIBRATION_RESULTS = ("pass", "fail", "limited")


def calibration_due_on(
    calibrated_on: dt.date, interval_months: int | None, valid_until: dt.date | None, result: str = "pass"
) -> dt.date | None:
    """When the next calibration is due after a calibration with this result.

    pass: the certificate's valid_until wins, else calibrated_on + interval; None when neither is known.
    limited (限用, usable only within the restricted range or points the certificate states): as pass.
    The restriction is the certificate's to state and the lab's to respect; it does not shorten the
    validity, and the software cannot check the range a measurement uses.
    fail: calibrated_on itself. Equipment that failed may not be used until it is repaired and calibrated
    again, so it is due at once (overdue from the next day, when it blocks its standard), whatever the
    interval; valid_until does not apply. The same rule as a failed verification.
    The date is never moved to "today" once it has passed.
    """
    if result not in CALIBRATION_RESULTS:
        raise InvalidValue(
            f"unknown calibration result {result!r}; expected one of {', '.join(CALIBRATION_RESULTS)}"
        )
    if result == "fail":
        return calibrated_on
    if valid_until is not None:
        return valid_until
    if interval_months is not None:
        return add_months(calibrated_on, interval_months)
    return None


def equipment_state(due_on: dt.date | None, today: dt.date, due_soon_days: int = DUE_SOON_DAYS) -> str:
    """ok | due_soon | overdue | never_calibrated.

    An item is still valid on its due date and overdue from the day after (a certificate valid until
    a date covers that whole date). "due_soon" covers today up to and including today + due_soon_days.
    """
    if due_on is None:
        return "never_calibrated"
    if due_on < today:
        return "overdue"
    if due_on <= today + dt.timedelta(days=due_soon_days):
        return "due_soon"
    return "ok"


def blocking_reasons(
    status: str,
    certificate_expires_on: dt.date | None,
    equipment: Iterable[tuple[Any, dt.date | None]],
    today: dt.date,
) -> list[str]:
    """Why a standard cannot be used on `today`, as reason codes; empty when it is usable.

    Order: the status, then the assessment certificate, then the equipment sorted by id, so the same
    facts always give the same list whatever order the equipment was loaded in. `equipment` holds
    (equipment id, due_on) pairs; due_on None means never calibrated, which blocks (it is due now).
    """
    if status not in STANDARD_STATUSES:
        raise InvalidValue(
            f"unknown standard status {status!r}; expected one of {', '.join(STANDARD_STATUSES)}"
        )
    reasons = []
    if status != "in_service":
        reasons.append(f"status_{status}")
    if certificate_expires_on is None:
        reasons.append("assessment_certificate_missing")
    elif certificate_expires_on < today:
        reasons.append("assessment_certificate_expired")
    for equipment_id, due_on in sorted(equipment, key=lambda item: str(item[0])):
        state = equipment_state(due_on, today)
        if state == "never_calibrated":
            reasons.append(f"equipment_never_calibrated:{equipment_id}")
        elif state == "overdue":
            reasons.append(f"equipment_overdue:{equipment_id}")
    return reasons


def is_usable(reasons: Iterable[str]) -> bool:
    """A standard is usable exactly when nothing blocks it."""
    return not list(reasons)


# --- Enterprise instruments -----------------------------------------------------------------------

VERIFICATION_RESULTS = ("pass", "fail")


def instrument_due_on(
    last_verified_on: dt.date | None, interval_months: int, registered_on: dt.date
) -> dt.date:
    """When an instrument is next due for verification.

    Never verified: due now, i.e. on the date it was registered. That date is fixed, so the instrument
    shows as overdue from the next day and does not drift along with "today".
    """
    if last_verified_on is None:
        return registered_on
    return add_months(last_verified_on, interval_months)


def verification_next_due_on(
    verified_on: dt.date, interval_months: int, result: str, valid_until: dt.date | None = None
) -> dt.date:
    """The next due date after a verification.

    pass: the certificate's valid_until when given, else verified_on + interval.
    fail: verified_on itself. A failed instrument may not be used until it is repaired and verified
    again, so it is due at once (and overdue from the next day); valid_until does not apply.
    """
    if result not in VERIFICATION_RESULTS:
        raise InvalidValue(f"unknown verification result {result!r}; expected pass or fail")
    if result == "fail":
        return verified_on
    if valid_until is not None:
        return valid_until
    return add_months(verified_on, interval_months)


# --- Stability and repeatability checks (稳定性考核 / 重复性试验) ------------------------------------

CHECK_KINDS = ("stability", "repeatability")


def check_passed(kind: str, value: float, limit: float) -> bool:
    """Whether a yearly check record passes, per JJF 1033.

    stability: the measured drift must be strictly below the limit (the standard's maximum
    permissible error, or the expanded uncertainty of its correction): |value| < limit.
    repeatability: the result must not exceed the limit (the repeatability found when the standard
    was set up, as used in its uncertainty budget): |value| <= limit.
    A value or limit that is not a finite number never passes.
    """
    if kind not in CHECK_KINDS:
        raise InvalidValue(f"unknown check kind {kind!r}; expected stability or repeatability")
    value, limit = float(value), float(limit)
    if not (math.isfinite(value) and math.isfinite(limit)) or limit < 0:
        return False
    if kind == "stability":
        return abs(value) < limit
    return abs(value) <= limit


# --- Units of measurement -------------------------------------------------------------------------

UNIT_MAX_LENGTH = 64
UNIT_MAX_EXPONENT = 10  # real units stop well before this (m^4, s^-4); "m^1e40" is garbage
# Characters that occur in unit notation: letters (incl. µ, Ω), digits, °, %, operators, parentheses
# and superscript exponents. Anything else (',', '=', ';' ...) is refused before pint sees it, because
# pint's tokenizer reads some of them in surprising ways ("m,m" parses as millimetre).
_UNIT_CHARS = re.compile(r"[\w .*/^()·%°⁰¹²³⁴⁵⁶⁷⁸⁹⁻-]+")
# Relative humidity is a percentage; pint reads "%RH" as percent × ronnahenry, so it is handled here.
_RELATIVE_HUMIDITY = re.compile(r"%\s*RH", re.IGNORECASE)
_UNIT_SPELLINGS = {
    "\u2103": "°C",  # ℃, the single-character degree Celsius common in Chinese text
    "\u2109": "°F",  # ℉
    "\u2126": "\u03a9",  # Ω ohm sign -> Ω Greek capital omega, which pint knows
}

_registry: Any = None
_registry_lock = threading.Lock()


def _unit_registry() -> Any:
    """The one pint registry of this process, created on first use (it takes a moment to load)."""
    global _registry
    with _registry_lock:
        if _registry is None:
            import pint

            _registry = pint.UnitRegistry()
        return _registry


def _respell_unit(unit: str) -> str:
    text = unit.strip()
    for spelling, replacement in _UNIT_SPELLINGS.items():
        text = text.replace(spelling, replacement)
    if _RELATIVE_HUMIDITY.fullmatch(text):
        return "%RH"
    return text


def unit_problem(unit: str) -> str | None:
    """None if `unit` is a real unit of measurement, else why not. Never raises.

    Accepted: anything pint's default registry parses as a unit without a number in it ("Pa", "kPa",
    "°C", "degC", "m^3/h", "L/min", "mol/(m^2*s*Pa)", "%", "ppm"), plus "℃" and the relative-humidity
    spellings "%RH" / "% RH" (a percentage; see `normalise_unit`). A bare "1" is the SI unit one.
    """
    try:
        if not isinstance(unit, str):
            return "must be a string naming a unit, such as 'kPa' or '°C'"
        text = _respell_unit(unit)
        if not text:
            return "must name a unit, such as 'kPa' or '°C'"
        if len(text) > UNIT_MAX_LENGTH:
            return f"is too long for a unit ({len(text)} characters; at most {UNIT_MAX_LENGTH})"
        if text == "%RH":
            return None
        if not _UNIT_CHARS.fullmatch(text):
            bad = next(char for char in text if not _UNIT_CHARS.fullmatch(char))
            return f"{text!r} is not a unit: the character {bad!r} does not belong in a unit"
        registry = _unit_registry()
        with _registry_lock:
            # as_delta=False: validation only; that variant also leaves pint's parse cache alone, so
            # arbitrary input cannot grow it.
            container = registry.parse_units_as_container(text, as_delta=False)
        if not all(abs(exponent) <= UNIT_MAX_EXPONENT for _, exponent in container.items()):
            return f"{text!r} is not a unit: an exponent is larger than {UNIT_MAX_EXPONENT}"
        return None
    except Exception as exc:  # pint raises many kinds (UndefinedUnitError, AssertionError, ZeroDivision...)
        return _describe_unit_error(unit, exc)


def _describe_unit_error(unit: Any, exc: Exception) -> str:
    shown = repr(unit.strip()) if isinstance(unit, str) else repr(unit)
    name = type(exc).__name__
    if name == "UndefinedUnitError":
        unknown = getattr(exc, "unit_names", None)
        if isinstance(unknown, tuple | list) and unknown:
            unknown = unknown[0]
        if isinstance(unknown, str) and unknown:
            return f"{shown} is not a unit: {unknown!r} is not a known unit"
        return f"{shown} is not a known unit"
    if isinstance(exc, ValueError) and "scaling factor" in str(exc):
        return f"{shown} is not a unit: it contains a number; give the unit alone (e.g. 'kPa', 'm^3/h')"
    return f"{shown} is not a valid unit expression"


def normalise_unit(unit: str) -> str:
    """The form a valid unit is stored in: as the user wrote it, trimmed, with a few spellings unified.

    The lab's own notation is kept ("m^3/h" stays "m^3/h") so values round-trip unchanged. Unified:
    "℃" -> "°C", "℉" -> "°F", the ohm sign -> "Ω", and "%rh" / "% RH" -> "%RH". Raises InvalidUnit when
    `unit_problem` finds something wrong.
    """
    problem = unit_problem(unit)
    if problem is not None:
        raise InvalidUnit(problem)
    return _respell_unit(unit)
