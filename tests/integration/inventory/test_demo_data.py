"""The sample data set: what `make run` loads into an empty inventory database."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from services.inventory import domain
from services.inventory.demo import is_empty, load_demo_data
from services.inventory.models import (
    ApiClient,
    Calibration,
    Check,
    Equipment,
    Instrument,
    Organization,
    OutboxMessage,
    Standard,
    StatusChange,
    Verification,
)
from shared.timeutil import institute_today

# The counts documented in services/inventory/demo.py.
DOCUMENTED_COUNTS = {
    "organizations": 10,
    "standards": 7,
    "status_changes": 1,
    "equipment": 16,
    "calibrations": 15,
    "checks": 2,
    "instruments": 22,
    "verifications": 4,
    "events": 76,
}
MODELS = {
    "organizations": Organization,
    "standards": Standard,
    "status_changes": StatusChange,
    "equipment": Equipment,
    "calibrations": Calibration,
    "checks": Check,
    "instruments": Instrument,
    "verifications": Verification,
}
GAS_FLOW, PRESSURE, TEMPERATURE, HUMIDITY, PEM, VENTILATOR = (
    "H2-GF-0001", "H2-PR-0003", "H2-TE-0004", "H2-HU-0005", "H2-PEM-0006", "BIO-VT-0007")


def row_counts(session) -> dict[str, int]:
    return {kind: session.scalar(select(func.count()).select_from(model)) for kind, model in MODELS.items()}


def load(inventory_db, today: dt.date) -> dict[str, int]:
    with inventory_db.transaction() as session:
        return load_demo_data(session, today)


def standards_by_code(session) -> dict[str, Standard]:
    return {standard.code: standard for standard in session.scalars(select(Standard))}


def reasons_on(standard: Standard, today: dt.date) -> list[str]:
    return domain.blocking_reasons(standard.status, standard.certificate_expires_on,
                                   [(e.id, e.due_on) for e in standard.equipment], today)


@pytest.fixture
def today():
    return institute_today()


@pytest.fixture
def loaded(inventory_db, today):
    return load(inventory_db, today)


class TestLoadingIntoAnEmptyDatabase:
    def test_an_empty_database_gets_the_documented_counts_and_is_no_longer_empty(self, inventory_db, today):
        with inventory_db.Session() as session:
            assert is_empty(session)

        counts = load(inventory_db, today)

        assert counts == DOCUMENTED_COUNTS
        with inventory_db.Session() as session:
            assert row_counts(session) == {kind: counts[kind] for kind in MODELS}
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == counts["events"]
            assert not is_empty(session)

    def test_loading_twice_is_refused_and_writes_nothing(self, inventory_db, loaded, today):
        with inventory_db.Session() as session:
            before = row_counts(session), session.scalar(select(func.count()).select_from(OutboxMessage))

        with pytest.raises(RuntimeError, match="already holds"):
            load(inventory_db, today)

        with inventory_db.Session() as session:
            after = row_counts(session), session.scalar(select(func.count()).select_from(OutboxMessage))
        assert after == before

    def test_a_database_with_organizations_only_is_not_empty_and_is_not_filled(
            self, inventory_db, orgs, today):
        with inventory_db.Session() as session:
            assert not is_empty(session)

        with pytest.raises(RuntimeError):
            load(inventory_db, today)

        with inventory_db.Session() as session:
            assert row_counts(session)["organizations"] == len(orgs)
            assert row_counts(session)["standards"] == 0

    def test_the_caller_commits_so_a_rollback_leaves_the_database_empty(self, inventory_db, today):
        with inventory_db.Session() as session:
            load_demo_data(session, today)
            session.rollback()

        with inventory_db.Session() as session:
            assert is_empty(session)
            assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


class TestOrganizations:
    def test_every_enterprise_credit_code_passes_the_gb_32100_check(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            enterprises = session.scalars(select(Organization).where(Organization.kind == "enterprise")).all()

        assert 4 <= len(enterprises) <= 5
        codes = [org.credit_code for org in enterprises]
        assert all(domain.credit_code_problem(code) is None for code in codes), codes
        assert len(set(codes)) == len(codes)
        assert all(org.alliance_member and org.contacts and org.industry_chains for org in enterprises)
        assert len({chain for org in enterprises for chain in org.industry_chains}) >= 3

    def test_contacts_are_mostly_chinese_with_one_english_speaker(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            contacts = [c for org in session.scalars(select(Organization)) for c in org.contacts]

        locales = [contact["locale"] for contact in contacts]
        assert locales.count("en") == 1
        assert locales.count("zh-CN") == len(locales) - 1
        assert all(contact["email"].endswith(".example.com") for contact in contacts)

    def test_the_institute_and_the_four_partners_are_there(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            others = session.scalars(select(Organization).where(Organization.kind != "enterprise")).all()

        by_name = {org.name_en: org.kind for org in others}
        assert by_name == {
            "Zibo Institute of Inspection, Testing and Metrology (sample)": "institute",
            "Shandong University (sample)": "university",
            "China Jiliang University (sample)": "university",
            "Jiangsu University (sample)": "university",
            "Shandong Industrial Technology Research Institute (sample)": "institute",
        }
        assert all(org.credit_code is None and not org.alliance_member for org in others)

    def test_no_api_client_is_part_of_the_sample_data(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            assert session.scalar(select(func.count()).select_from(ApiClient)) == 0


class TestStandards:
    def test_every_unit_is_a_real_unit(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            units = [s.range_unit for s in session.scalars(select(Standard))]
            units += [c.unit for c in session.scalars(select(Check))]

        assert None not in units
        assert {unit: domain.unit_problem(unit) for unit in units} == dict.fromkeys(units)
        assert {"m^3/h", "L/min", "MPa", "degC", "%", "mol/(m^2*s*Pa)", "kPa"} <= set(units)

    def test_standards_span_disciplines_with_ranges_uncertainty_and_custodians(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            standards = session.scalars(select(Standard)).all()

        assert {s.discipline for s in standards} == {"mechanical", "thermal", "physical_chemistry"}
        for standard in standards:
            assert standard.discipline in domain.DISCIPLINES
            assert standard.range_min < standard.range_max
            assert standard.uncertainty and standard.recovery_minutes > 0
            assert standard.custodian_email.endswith(".example.com")
        pem = next(s for s in standards if s.code == PEM)
        assert "GB/T 20042.3-2022" in pem.measurand

    def test_one_standard_is_usable_and_the_others_name_why_not(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            standards = standards_by_code(session)
            dew_point = next(e for e in standards[HUMIDITY].equipment if e.state == "overdue")
            never = next(e for e in standards[VENTILATOR].equipment if e.state == "never_calibrated")

            assert standards[GAS_FLOW].usable and standards[PRESSURE].usable and standards[PEM].usable
            assert standards[TEMPERATURE].blocking_reasons == ["assessment_certificate_expired"]
            assert standards[HUMIDITY].blocking_reasons == [f"equipment_overdue:{dew_point.id}"]
            assert standards[VENTILATOR].blocking_reasons == [
                "status_suspended", "assessment_certificate_missing",
                f"equipment_never_calibrated:{never.id}"]

    def test_the_biomedicine_standard_in_preparation_is_suspended_with_a_recorded_reason(
            self, inventory_db, loaded):
        with inventory_db.Session() as session:
            ventilator = standards_by_code(session)[VENTILATOR]
            changes = session.scalars(select(StatusChange)).all()

        assert (ventilator.status, ventilator.public, ventilator.bookable) == ("suspended", False, False)
        assert [(c.standard_id, c.from_status, c.to_status) for c in changes] == [
            (ventilator.id, None, "suspended")]
        assert "筹建" in changes[0].reason and changes[0].changed_by

    def test_a_certificate_renewal_and_a_calibration_fall_due_soon(self, inventory_db, loaded, today):
        with inventory_db.Session() as session:
            standards = session.scalars(select(Standard)).all()
            equipment = session.scalars(select(Equipment)).all()

        days_left = [(s.certificate_expires_on - today).days for s in standards if s.certificate_expires_on]
        assert any(180 < left <= 200 for left in days_left), days_left
        assert any(e.state == "due_soon" and e.due_on <= today + dt.timedelta(days=20) for e in equipment)
        for standard in standards:
            if standard.certificate_issued_on:
                assert standard.certificate_expires_on == domain.certificate_expires_on(
                    standard.certificate_issued_on, None)

    def test_calibrations_and_checks_agree_with_the_domain_rules(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            equipment = {e.id: e for e in session.scalars(select(Equipment))}
            calibrations = session.scalars(select(Calibration)).all()
            checks = session.scalars(select(Check)).all()

        for calibration in calibrations:
            item = equipment[calibration.equipment_id]
            assert calibration.next_due_on == domain.calibration_due_on(
                calibration.calibrated_on, item.calibration_interval_months, calibration.valid_until)
            assert item.last_calibrated_on == calibration.calibrated_on
            assert item.due_on == calibration.next_due_on
        assert any(c.valid_until for c in calibrations) and any(c.valid_until is None for c in calibrations)
        assert sorted(c.kind for c in checks) == ["repeatability", "stability"]
        assert all(c.passed == domain.check_passed(c.kind, c.value, c.limit) for c in checks)


class TestInstruments:
    def test_some_instruments_are_due_within_days_overdue_or_never_verified(
            self, inventory_db, loaded, today):
        with inventory_db.Session() as session:
            instruments = session.scalars(select(Instrument)).all()

        assert 15 <= len(instruments) <= 25
        days_left = sorted((i.due_on - today).days for i in instruments)
        assert any(0 < left <= 5 for left in days_left), days_left
        assert sum(0 < left <= 7 for left in days_left) >= 4, days_left
        assert any(left < 0 for left in days_left), days_left
        never = [i for i in instruments if i.last_verified_on is None]
        assert never and all(i.due_on == i.registered_on for i in never)
        assert sum(left > 30 for left in days_left) >= len(instruments) // 3

    def test_categories_follow_their_verification_regulations(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            instruments = session.scalars(select(Instrument)).all()

        rules = {(i.category, i.regulation, i.interval_months) for i in instruments}
        assert rules == {("一般压力表", "JJG 52-2013", 6), ("数字指示秤", "JJG 539-2016", 12),
                         ("可燃气体检测报警器", "JJG 693-2011", 12)}
        assert all(i.mandatory for i in instruments if i.category in ("一般压力表", "可燃气体检测报警器"))

    def test_due_dates_come_from_the_registration_or_the_last_verification(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            instruments = {i.id: i for i in session.scalars(select(Instrument))}
            verifications = session.scalars(select(Verification)).all()

        verified = {v.instrument_id: v for v in verifications}
        for instrument in instruments.values():
            if instrument.id in verified:
                record = verified[instrument.id]
                assert instrument.due_on == record.next_due_on == domain.verification_next_due_on(
                    record.verified_on, instrument.interval_months, record.result)
            else:
                assert instrument.due_on == domain.instrument_due_on(
                    instrument.last_verified_on, instrument.interval_months, instrument.registered_on)
        assert {v.result for v in verifications} == {"pass", "fail"}


class TestEvents:
    @pytest.mark.parametrize(("event", "model"), [
        ("organization.registered", Organization),
        ("standard.registered", Standard),
        ("equipment.registered", Equipment),
        ("instrument.registered", Instrument),
    ])
    def test_every_entity_was_announced_with_its_state(self, inventory_db, loaded, outbox, event, model):
        with inventory_db.Session() as session:
            names = {row.id: row.name for row in session.scalars(select(model))}

        published = outbox("." + event)
        assert len(published) == len(names)
        assert {e["subject"]: e["data"]["name"] for e in published} == names

    def test_records_were_announced_too_and_nothing_else(self, inventory_db, loaded, outbox):
        with inventory_db.Session() as session:
            calibrated = {c.equipment_id for c in session.scalars(select(Calibration))}
            verified = {v.instrument_id for v in session.scalars(select(Verification))}

        events = outbox()
        assert len(events) == loaded["events"]
        assert {e["subject"] for e in outbox(".equipment.calibrated")} == calibrated
        assert {e["subject"] for e in outbox(".instrument.verified")} == verified
        assert len(outbox(".standard.check_recorded")) == loaded["checks"]
        by_type: dict[str, int] = {}
        for e in events:
            by_type[e["type"]] = by_type.get(e["type"], 0) + 1
        assert by_type == {
            "refstd.inventory.organization.registered": loaded["organizations"],
            "refstd.inventory.standard.registered": loaded["standards"],
            "refstd.inventory.equipment.registered": loaded["equipment"],
            "refstd.inventory.equipment.calibrated": loaded["calibrations"],
            "refstd.inventory.standard.check_recorded": loaded["checks"],
            "refstd.inventory.instrument.registered": loaded["instruments"],
            "refstd.inventory.instrument.verified": loaded["verifications"],
        }

    def test_the_last_event_of_each_equipment_and_instrument_carries_its_current_state(
            self, inventory_db, loaded, outbox):
        with inventory_db.Session() as session:
            equipment = {e.id: e for e in session.scalars(select(Equipment))}
            instruments = {i.id: i for i in session.scalars(select(Instrument))}

        latest = {e["subject"]: e["data"] for e in outbox()}
        for item in equipment.values():
            assert latest[item.id]["version"] == item.version
            assert latest[item.id]["due_on"] == (item.due_on.isoformat() if item.due_on else None)
        for item in instruments.values():
            assert latest[item.id]["version"] == item.version
            assert latest[item.id]["due_on"] == item.due_on.isoformat()


class TestSampleMarking:
    def test_every_organization_standard_and_instrument_is_marked_as_sample_data(self, inventory_db, loaded):
        with inventory_db.Session() as session:
            orgs = session.scalars(select(Organization)).all()
            standards = session.scalars(select(Standard)).all()
            instruments = session.scalars(select(Instrument)).all()

        assert all("示例" in org.name and "示例" in org.address for org in orgs)
        assert all("(sample)" in org.name_en or "Sample" in org.name_en for org in orgs)
        assert all("示例" in s.name and "(sample)" in s.name_en for s in standards)
        assert all("示例" in i.name for i in instruments)


@pytest.mark.parametrize("day", [dt.date(2026, 8, 31), dt.date(2027, 3, 31), dt.date(2027, 8, 24),
                                 dt.date(2028, 2, 29), dt.date(2029, 12, 31)])
def test_the_data_looks_the_same_whatever_day_it_is_loaded(inventory_db, day):
    """Month ends and leap days: every date is relative to the given day, none lies after it.

    On 24 August of a common year, "due in 7 days" is 31 August, which no 6-month gauge can reach
    (February has no 29-31st): it is due a few days earlier, still within the week.
    """
    load(inventory_db, day)

    with inventory_db.Session() as session:
        standards = standards_by_code(session)
        instruments = session.scalars(select(Instrument)).all()
        recorded = [c.calibrated_on for c in session.scalars(select(Calibration))]
        recorded += [v.verified_on for v in session.scalars(select(Verification))]
        recorded += [c.performed_on for c in session.scalars(select(Check))]
        recorded += [s.certificate_issued_on for s in standards.values() if s.certificate_issued_on]
        recorded += [i.last_verified_on for i in instruments if i.last_verified_on]
        recorded += [i.registered_on for i in instruments]

        assert max(recorded) <= day
        assert reasons_on(standards[GAS_FLOW], day) == []
        assert reasons_on(standards[TEMPERATURE], day) == ["assessment_certificate_expired"]
        assert reasons_on(standards[HUMIDITY], day)[0].startswith("equipment_overdue:")
        assert 180 < (standards[GAS_FLOW].certificate_expires_on - day).days <= 200
        gas_flow_states = [domain.equipment_state(e.due_on, day) for e in standards[GAS_FLOW].equipment]
        assert "due_soon" in gas_flow_states
    days_left = sorted((i.due_on - day).days for i in instruments)
    assert any(0 < left <= 5 for left in days_left), days_left
    assert sum(0 < left <= 7 for left in days_left) >= 4, days_left
    assert sum(left < 0 for left in days_left) >= 4, days_left
