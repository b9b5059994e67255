"""Email rendering: every event type in both locales, from the event alone, with StrictUndefined."""

from __future__ import annotations

import copy
import datetime as dt
import html
import re

import pytest
from icalendar import Calendar
from jinja2 import StrictUndefined, UndefinedError

from services.notifier import rendering
from services.notifier.rendering import (
    EVENT_TYPES,
    UnsupportedEvent,
    localized_text,
    render_email,
    resolve_locale,
    subject_for,
)
from services.scheduler.domain.notices import NEXT_STEPS
from tests.unit.notifier import samples

EVENTS = samples.all_events()
PREFIX = "refstd.scheduler."
LOCALES = ("zh-CN", "en")
NOTICE_KEYS = [key for key in EVENTS if not key.startswith(PREFIX + "booking.")]
BOOKING_KEYS = [key for key in EVENTS if key.startswith(PREFIX + "booking.")]
ORGANIZER = "refstd 计量院通知 <noreply@refstd.example>"


def render(key_or_event, locale="zh-CN", **kwargs):
    event = EVENTS[key_or_event] if isinstance(key_or_event, str) else key_or_event
    kwargs.setdefault("organizer", ORGANIZER)
    return render_email(event, locale, **kwargs)


def sample(key: str) -> dict:
    return copy.deepcopy(EVENTS[key])


@pytest.fixture(autouse=True)
def institute_zone(monkeypatch):
    monkeypatch.setenv("INSTITUTE_TZ", "Asia/Shanghai")


class TestEveryEventRenders:
    def test_the_samples_cover_every_event_type_with_an_email(self):
        assert {event["type"] for event in EVENTS.values()} == set(EVENT_TYPES)

    @pytest.mark.parametrize("locale", LOCALES)
    @pytest.mark.parametrize("key", list(EVENTS))
    def test_renders_subject_text_and_html(self, key, locale):
        for role in (None, "requester", "custodian"):
            email = render(key, locale, recipient_name="王工", role=role, recipient="wang@example.com")
            assert email.locale == locale
            assert email.subject and "\n" not in email.subject and email.subject == email.subject.strip()
            assert email.text.startswith("王工，您好：" if locale == "zh-CN" else "Dear 王工,")
            assert email.html.startswith("<!DOCTYPE html>") and f'<html lang="{locale}">' in email.html
            assert "<h1 " in email.html and html.escape(email.subject) in email.html

    def test_templates_are_strict_about_undefined_variables(self):
        assert rendering._environment().undefined is StrictUndefined

    def test_a_variable_missing_from_the_context_fails_the_rendering(self, monkeypatch):
        original = rendering._booking

        def without_lab(*args):
            booking = original(*args)
            del booking["lab"]
            return booking

        monkeypatch.setattr(rendering, "_booking", without_lab)
        with pytest.raises(UndefinedError):
            render(PREFIX + "booking.confirmed", "en")

    def test_greeting_without_a_name(self):
        assert render(PREFIX + "booking.confirmed", "zh-CN").text.startswith("您好：")
        assert render(PREFIX + "booking.confirmed", "en").text.startswith("Hello,")

    def test_subject_for_is_the_subject_of_the_email(self):
        for key in EVENTS:
            for locale in LOCALES:
                assert subject_for(EVENTS[key], locale) == render(key, locale).subject
        custodian = subject_for(EVENTS[PREFIX + "booking.requested"], "en", role="custodian")
        assert custodian == render(PREFIX + "booking.requested", "en", role="custodian").subject

    def test_an_event_without_an_email_is_refused(self):
        event = copy.deepcopy(EVENTS[PREFIX + "booking.confirmed"])
        event["type"] = "refstd.inventory.instrument.registered"
        with pytest.raises(UnsupportedEvent):
            render(event)
        with pytest.raises(UnsupportedEvent):
            subject_for(event, "en")


class TestLocale:
    @pytest.mark.parametrize("given, expected", [
        (None, "zh-CN"), ("", "zh-CN"), ("zh-CN", "zh-CN"), ("zh", "zh-CN"), ("zh_CN", "zh-CN"),
        ("zh-Hans", "zh-CN"), ("en", "en"), ("en-US", "en"), ("EN_gb", "en"), ("fr", "zh-CN"), ("xx-YY", "zh-CN"),
    ])
    def test_resolves_to_a_supported_locale(self, given, expected):
        assert resolve_locale(given) == expected

    @pytest.mark.parametrize("locale", ["fr", "de-DE", None])
    def test_an_unknown_locale_falls_back_to_zh_cn(self, locale):
        fallback = render(PREFIX + "recalibration.due_soon", locale, recipient_name="Anna")
        chinese = render(PREFIX + "recalibration.due_soon", "zh-CN", recipient_name="Anna")
        assert (fallback.subject, fallback.text, fallback.html) == (chinese.subject, chinese.text, chinese.html)
        assert fallback.locale == "zh-CN"

    def test_english_variants_render_in_english(self):
        assert render(PREFIX + "recalibration.due_soon", "en-GB").subject.startswith("3 instruments")

    def test_bilingual_next_steps_show_the_readers_language_only(self):
        event = sample(PREFIX + "recalibration.due_soon")
        event["data"]["next_steps"] = NEXT_STEPS["instrument"]
        chinese, english = render(event, "zh-CN").text, render(event, "en").text
        assert "请在到期前" in chinese and "Book the verification" not in chinese
        assert "Book the verification" in english and "请在到期前" not in english

    def test_monolingual_next_steps_are_shown_whole(self):
        text = "请联系计量院预约检定：0533-0000000（示例）"
        assert localized_text(text, "en") == localized_text(text, "zh-CN") == text
        assert localized_text(None, "en") == ""


class TestNoticeSubjects:
    def test_due_soon_says_how_many_and_by_when(self):
        key = PREFIX + "recalibration.due_soon"
        assert render(key, "zh-CN").subject == "3 台计量器具将于 2026-12-15 前到期检定"
        assert render(key, "en").subject == "3 instruments due for verification by 2026-12-15"

    def test_overdue_says_overdue_and_since_when(self):
        key = PREFIX + "recalibration.overdue"
        assert render(key, "zh-CN").subject == "1 台计量器具已超期未检定（2026-12-05 到期）"
        assert render(key, "en").subject == (
            "1 instrument overdue for verification (was due 2026-12-05)")

    def test_equipment_notices_speak_of_calibration(self):
        key = PREFIX + "recalibration.due_soon:equipment"
        assert render(key, "zh-CN").subject == "1 台计量标准设备将于 2027-01-07 前到期校准"
        assert render(key, "en").subject == "1 item of standard equipment due for calibration by 2027-01-07"

    def test_certificate_renewal_names_expiry_and_the_legal_deadline_180_days_before(self):
        event = EVENTS[PREFIX + "certificate.renewal_due"]
        item = event["data"]["items"][0]
        expires_on = dt.date.fromisoformat(item["due_on"])
        deadline = (expires_on - dt.timedelta(days=180)).isoformat()
        assert deadline == "2027-01-07"
        chinese = render(event, "zh-CN").subject
        assert chinese == (f"{item['name']}的计量标准考核证书将于 {expires_on.isoformat()} 到期，"
                           f"请于 {deadline} 前申请复查")
        english = render(event, "en").subject
        assert english == (f"The assessment certificate of {item['name']} expires on {expires_on.isoformat()}: "
                           f"apply for re-examination by {deadline}")

    def test_several_certificates_are_counted_and_the_most_urgent_sets_the_deadline(self):
        event = sample(PREFIX + "certificate.renewal_due")
        later = dict(event["data"]["items"][0], name="第二个标准", due_on="2027-08-05", days_left=240)
        event["data"]["items"].append(later)
        assert render(event, "zh-CN").subject == (
            "2 项计量标准考核证书最早将于 2027-07-06 到期，请于 2027-01-07 前申请复查")
        assert render(event, "en").subject == (
            "2 assessment certificates expire from 2027-07-06: apply for re-examination by 2027-01-07")

    def test_certificate_past_its_application_deadline_says_apply_now(self):
        event = sample(PREFIX + "certificate.renewal_due")
        item = event["data"]["items"][0]
        item.update(due_on="2027-05-08", days_left=151, lead="180")
        email = render(event, "zh-CN")
        assert "申请复查的截止日 2026-11-09 已过，请立即申请" in email.subject
        assert "申请期限已过 29 天" in email.text
        assert "has passed, apply now" in render(event, "en").subject

    def test_expired_certificate(self):
        event = sample(PREFIX + "certificate.renewal_due")
        event["data"]["notice"] = "overdue"
        event["data"]["items"][0].update(due_on="2026-12-01", days_left=-7, lead="overdue:0")
        email = render(event, "zh-CN")
        assert "已于 2026-12-01 到期，计量标准不可使用" in email.subject
        assert "已过期" in email.text and "已超期 7 天" in email.text
        english = render(event, "en")
        assert "expired on 2026-12-01" in english.subject and "7 days overdue" in english.text

    def test_several_overdue_items_name_the_earliest(self):
        event = sample(PREFIX + "recalibration.overdue")
        second = dict(event["data"]["items"][0], name="另一台压力表", due_on="2026-11-20", days_left=-18)
        event["data"]["items"].insert(0, second)
        event["data"]["earliest_due_on"] = "2026-11-20"
        assert render(event, "zh-CN").subject == "2 台计量器具已超期未检定（最早 2026-11-20 到期）"
        assert render(event, "en").subject == "2 instruments overdue for verification (the earliest was due 2026-11-20)"

    def test_a_notice_with_overdue_items_and_items_due_soon_names_each_part(self):
        key = PREFIX + "recalibration.overdue:mixed"
        assert render(key, "zh-CN").subject == (
            "5 台计量器具需检定：2 台已超期（最早 2026-11-24 到期），3 台将于 2026-12-15 前到期")
        assert render(key, "en").subject == (
            "5 instruments due for verification: 2 overdue (the earliest was due 2026-11-24), 3 due by 2026-12-15")

    def test_one_overdue_item_beside_one_never_calibrated(self):
        event = sample(PREFIX + "recalibration.due_soon:equipment")
        never = dict(event["data"]["items"][0], name="从未校准的设备", due_on=None, days_left=0, lead="0")
        event["data"]["items"][0].update(due_on="2026-12-05", days_left=-3, lead="overdue:0")
        event["data"]["items"].append(never)
        event["type"], event["data"]["notice"] = PREFIX + "recalibration.overdue", "overdue"
        zh, en = render(event, "zh-CN"), render(event, "en")
        assert zh.subject == "2 台计量标准设备需校准：1 台已超期（2026-12-05 到期），1 台现已到期"
        assert en.subject == ("2 items of standard equipment due for calibration: 1 overdue (was due 2026-12-05), "
                              "1 due now")
        assert "其中 1 台已超期，请尽快安排校准，设备逾期时其计量标准不可使用、不可预约；另有 1 台已到期" in zh.text
        assert "1 is overdue: please arrange the calibration as soon as possible" in en.text
        assert "1 is due now: please arrange the calibration at once." in en.text


class TestNoticeBodies:
    @pytest.mark.parametrize("locale", LOCALES)
    @pytest.mark.parametrize("key", NOTICE_KEYS)
    def test_every_item_is_listed_with_name_serial_number_and_regulation(self, key, locale):
        email = render(key, locale)
        for item in EVENTS[key]["data"]["items"]:
            for value in (item["name"], item["serial_number"], item["regulation"], item["due_on"]):
                if value is not None:
                    assert value in email.text
                    assert html.escape(value) in email.html

    @pytest.mark.parametrize("locale, due_soon, due_today, overdue", [
        ("zh-CN", "剩余 7 天", "今天到期", "已超期 3 天"),
        ("en", "7 days left", "due today", "3 days overdue"),
    ])
    def test_days_left_wording(self, locale, due_soon, due_today, overdue):
        soon = render(PREFIX + "recalibration.due_soon", locale)
        late = render(PREFIX + "recalibration.overdue", locale)
        for body in (soon.text, soon.html):
            assert due_soon in body and due_today in body
        for body in (late.text, late.html):
            assert overdue in body

    @pytest.mark.parametrize("locale, intro, due, states", [
        ("zh-CN", "淄博示例氢能材料有限公司的以下 5 台计量器具需安排检定：其中 2 台已超期，请尽快安排检定，"
                  "强制检定的计量器具逾期不得使用；另有 3 台将于 2026-12-15 前到期，请在各自到期日前安排检定。"
                  "各台的到期情况如下：",
         "   到期日：{}（{}）", ["已超期 14 天", "已超期 3 天", "今天到期", "剩余 5 天", "剩余 7 天"]),
        ("en", "For Zibo Sample Hydrogen Materials Co.: 5 instruments are due for verification. 2 are overdue: "
               "please arrange the verification as soon as possible; an instrument under mandatory verification "
               "may not be used while overdue. 3 are due by 2026-12-15: please arrange the verification before "
               "each due date.",
         "   Due: {} ({})", ["14 days overdue", "3 days overdue", "due today", "5 days left", "7 days left"]),
    ])
    def test_a_mixed_notice_tells_the_overdue_from_the_rest_and_each_item_its_state(self, locale, intro, due,
                                                                                    states):
        email = render(PREFIX + "recalibration.overdue:mixed", locale)
        assert intro in email.text and html.escape(intro) in email.html
        items = EVENTS[PREFIX + "recalibration.overdue:mixed"]["data"]["items"]
        lines = email.text.splitlines()
        assert [line for line in lines if line.startswith(due[:6])] == [
            due.format(item["due_on"], state) for item, state in zip(items, states, strict=True)]
        assert re.findall(r'color:#[0-9a-f]{6};white-space:nowrap;">([^<]*)</td>', email.html) == states

    def test_one_day_is_singular_in_english(self):
        event = sample(PREFIX + "recalibration.overdue")
        event["data"]["items"][0].update(days_left=-1, due_on="2026-12-07")
        assert "1 day overdue" in render(event, "en").text

    def test_certificate_body_gives_the_application_deadline(self):
        zh, en = render(PREFIX + "certificate.renewal_due", "zh-CN"), render(PREFIX + "certificate.renewal_due", "en")
        assert "申请复查截止：2027-01-07（距申请截止还有 30 天）" in zh.text
        assert "有效期至：2027-07-06（剩余 210 天）" in zh.text
        assert "至少 6 个月（180 天）" in zh.text
        assert "Apply for re-examination by: 2027-01-07 (30 days left to apply)" in en.text
        assert "2027-01-07" in zh.html and "申请复查截止" in zh.html

    def test_enterprises_are_told_how_to_book_verification(self):
        for key in (PREFIX + "recalibration.due_soon", PREFIX + "recalibration.overdue"):
            assert "如何预约检定" in render(key, "zh-CN").text
            assert "How to book the verification" in render(key, "en").text
            assert "如何预约检定" in render(key, "zh-CN").html
        assert "如何预约检定" not in render(PREFIX + "recalibration.due_soon:equipment", "zh-CN").text
        assert "如何预约检定" not in render(PREFIX + "certificate.renewal_due", "zh-CN").text

    def test_next_steps_from_the_event_are_in_the_body(self):
        steps = EVENTS[PREFIX + "recalibration.due_soon"]["data"]["next_steps"]
        email = render(PREFIX + "recalibration.due_soon", "zh-CN")
        assert steps in email.text and html.escape(steps) in email.html

    def test_organization_name_in_the_readers_language(self):
        assert "淄博示例氢能材料有限公司" in render(PREFIX + "recalibration.due_soon", "zh-CN").text
        assert "Zibo Sample Hydrogen Materials Co." in render(PREFIX + "recalibration.due_soon", "en").text

    def test_equipment_never_calibrated_is_due_now(self):
        event = sample(PREFIX + "recalibration.due_soon:equipment")
        event["data"]["items"][0].update(due_on=None, days_left=0)
        event["data"]["earliest_due_on"] = None
        zh, en = render(event, "zh-CN"), render(event, "en")
        assert "从未校准，现已到期" in zh.text and "从未校准" in zh.html
        assert zh.subject == "1 台计量标准设备已到期，需立即校准"
        assert "never calibrated: due now" in en.text
        assert en.subject == "1 item of standard equipment due for calibration now"

    def test_text_part_has_no_runs_of_blank_lines_or_trailing_spaces(self):
        for key in EVENTS:
            for locale in LOCALES:
                text = render(key, locale).text
                assert "\n\n\n" not in text and text.endswith("\n") and not text.endswith("\n\n")
                assert all(line == line.rstrip() for line in text.splitlines())


class TestCertificateNotices:
    """A custodian's certificates of one sweep travel in one notice: the expired and those approaching expiry
    are named apart, the latter with the deadline to apply for re-examination (180 days before expiry)."""

    MIXED = PREFIX + "certificate.renewal_due:mixed"

    @staticmethod
    def with_items(*changes: dict) -> dict:
        """The mixed sample with its items replaced: each a copy of the upcoming one with ``changes``."""
        event = sample(TestCertificateNotices.MIXED)
        template = event["data"]["items"][1]
        event["data"]["items"] = [dict(template, **change) for change in changes]
        return event

    def test_an_expired_and_an_upcoming_certificate_are_named_apart_in_the_subject(self):
        assert render(self.MIXED, "zh-CN").subject == (
            "2 项计量标准考核证书需申请复查：1 项已于 2026-12-01 到期，计量标准不可使用；"
            "1 项将于 2027-07-06 到期，请于 2027-01-07 前申请复查")
        assert render(self.MIXED, "en").subject == (
            "2 assessment certificates need re-examination: 1 expired on 2026-12-01, its standard cannot be used; "
            "1 expires on 2027-07-06, apply for re-examination by 2027-01-07")

    @pytest.mark.parametrize("locale, intro, wrong", [
        ("zh-CN", "您负责的以下 2 项计量标准考核证书需申请复查：其中 1 项已过期，相应计量标准现不可使用、不可预约，"
                  "已有的预约会被取消，请尽快申请复查考核；另有 1 项将于 2027-07-06 到期，按规定须在证书有效期满前"
                  "至少 6 个月（180 天）申请复查考核，即最迟于 2027-01-07 提交申请。"
                  "各项证书的有效期和申请复查截止日期如下：",
         "考核证书已过期：这些计量标准"),
        ("en", "For the standards in your care: 2 assessment certificates need re-examination. 1 has expired: its "
               "standard can be neither used nor booked, and its bookings are cancelled; please apply for "
               "re-examination as soon as possible. 1 expires on 2027-07-06: re-examination must be applied for at "
               "least 6 months (180 days) before a certificate expires, that is by 2027-01-07. The state of each is "
               "listed below.",
         "in your care, have expired"),
    ])
    def test_the_intro_tells_the_expired_from_the_upcoming(self, locale, intro, wrong):
        email = render(self.MIXED, locale)
        assert intro in email.text and html.escape(intro) in email.html
        assert wrong not in email.text and wrong not in email.html

    @pytest.mark.parametrize("locale, valid, apply_by, states", [
        ("zh-CN", "   有效期至：", "   申请复查截止：",
         [("2026-12-01（已超期 7 天）", "2026-06-04（申请期限已过 187 天）"),
          ("2027-07-06（剩余 210 天）", "2027-01-07（距申请截止还有 30 天）")]),
        ("en", "   Valid until: ", "   Apply for re-examination by: ",
         [("2026-12-01 (7 days overdue)", "2026-06-04 (deadline passed 187 days ago)"),
          ("2027-07-06 (210 days left)", "2027-01-07 (30 days left to apply)")]),
    ])
    def test_each_certificate_shows_its_own_state(self, locale, valid, apply_by, states):
        email = render(self.MIXED, locale)
        lines = email.text.splitlines()
        assert [line.removeprefix(valid) for line in lines if line.startswith(valid)] == [s[0] for s in states]
        assert [line.removeprefix(apply_by) for line in lines if line.startswith(apply_by)] == [s[1] for s in states]
        # Valid-until cells are coloured by state (red: expired), apply-by cells follow them.
        assert re.findall(r'color:(#[0-9a-f]{6});">([^<]*)</td>\s*<td[^>]*>([^<]*)</td>', email.html) == [
            ("#cf222e", *states[0]), ("#1f2328", *states[1])]

    def test_an_upcoming_certificate_past_its_application_deadline_says_apply_now(self):
        event = sample(self.MIXED)
        event["data"]["items"][1].update(due_on="2027-05-08", days_left=151, lead="180")
        zh, en = render(event, "zh-CN"), render(event, "en")
        assert zh.subject.endswith("；1 项将于 2027-05-08 到期，申请复查的截止日 2026-11-09 已过，请立即申请")
        assert "另有 1 项将于 2027-05-08 到期，按规定须在证书有效期满前至少 6 个月（180 天）申请复查考核，" \
               "申请截止日 2026-11-09 已过，请立即申请。" in zh.text
        assert en.subject.endswith(
            "; 1 expires on 2027-05-08, the deadline to apply for re-examination (2026-11-09) has passed, apply now")
        assert "and the deadline to apply (2026-11-09) has passed: please apply at once." in en.text

    def test_several_in_each_part_name_the_first_to_expire_and_its_deadline(self):
        event = self.with_items(
            {"name": "标准甲", "due_on": "2026-11-01", "days_left": -37, "lead": "overdue:1"},
            {"name": "标准乙", "due_on": "2026-12-01", "days_left": -7, "lead": "overdue:0"},
            {"name": "标准丙", "due_on": "2027-07-06", "days_left": 210, "lead": "210"},
            {"name": "标准丁", "due_on": "2027-08-05", "days_left": 240, "lead": "270"})
        zh, en = render(event, "zh-CN"), render(event, "en")
        assert zh.subject == ("4 项计量标准考核证书需申请复查：2 项已于 2026-11-01 起陆续到期，计量标准不可使用；"
                              "2 项最早将于 2027-07-06 到期，请于 2027-01-07 前申请复查")
        assert "其中 2 项已过期" in zh.text
        assert "另有 2 项最早将于 2027-07-06 到期" in zh.text and "最早的截止日为 2027-01-07" in zh.text
        assert en.subject == ("4 assessment certificates need re-examination: 2 expired from 2026-11-01, their "
                              "standards cannot be used; 2 expire from 2027-07-06, apply for re-examination by "
                              "2027-01-07")
        assert "2 have expired: their standards can be neither used nor booked" in en.text
        assert 'that is by the "apply by" date of each, the earliest 2027-01-07.' in en.text

    def test_certificates_all_expired_read_as_before(self):
        event = self.with_items({"name": "标准甲", "due_on": "2026-12-01", "days_left": -7, "lead": "overdue:0"},
                                {"name": "标准乙", "due_on": "2026-12-05", "days_left": -3, "lead": "overdue:0"})
        zh, en = render(event, "zh-CN"), render(event, "en")
        assert zh.subject == "2 项计量标准考核证书已于 2026-12-01 起陆续到期，计量标准不可使用，请尽快申请复查"
        assert "您负责的以下计量标准的考核证书已过期：这些计量标准现不可使用、不可预约" in zh.text
        assert en.subject == ("2 assessment certificates expired from 2026-12-01: the standards cannot be used, "
                              "apply for re-examination now")
        assert "in your care, have expired: these standards can be neither used nor booked" in en.text

    def test_certificates_all_upcoming_past_the_first_deadline_say_the_earliest(self):
        event = self.with_items({"name": "标准甲", "due_on": "2027-05-08", "days_left": 151, "lead": "180"},
                                {"name": "标准乙", "due_on": "2027-07-06", "days_left": 210, "lead": "210"})
        zh, en = render(event, "zh-CN"), render(event, "en")
        assert zh.subject == ("2 项计量标准考核证书最早将于 2027-05-08 到期，"
                              "申请复查的截止日 2026-11-09 已过，请立即申请")
        assert "您负责的以下计量标准的考核证书即将到期。" in zh.text
        assert en.subject == ("2 assessment certificates expire from 2027-05-08: the deadline to apply for "
                              "re-examination (2026-11-09) has passed, apply now")


class TestEscaping:
    def test_html_escapes_what_the_event_and_the_core_supply(self):
        event = sample(PREFIX + "recalibration.due_soon")
        event["data"]["items"][0]["name"] = "<script>alert('x')</script>"
        event["data"]["items"][1]["serial_number"] = 'S-"2002"&<b>'
        event["data"]["next_steps"] = "<img src=x onerror=alert(1)>"
        email = render(event, "zh-CN", recipient_name="<b>王工</b>")
        assert "<script>" not in email.html and "<img" not in email.html and "<b>" not in email.html
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in email.html
        assert "S-&#34;2002&#34;&amp;&lt;b&gt;" in email.html
        assert "&lt;b&gt;王工&lt;/b&gt;" in email.html
        # The text part is plain text: shown as written.
        assert "<script>alert('x')</script>" in email.text and "<b>王工</b>，您好：" in email.text

    def test_booking_reason_and_purpose_are_escaped(self):
        event = sample(PREFIX + "booking.rejected")
        event["data"]["reason"] = "<script>bad()</script>"
        event["data"]["purpose"] = "<i>test</i>"
        event["data"]["standard_name"] = "A & B <standard>"
        for locale in LOCALES:
            email = render(event, locale)
            assert "<script>" not in email.html and "<i>" not in email.html and "<standard>" not in email.html
            assert "&lt;script&gt;bad()&lt;/script&gt;" in email.html
            assert "A &amp; B &lt;standard&gt;" in email.html
            assert "<script>bad()</script>" in email.text


class TestBookings:
    @pytest.mark.parametrize("locale", LOCALES)
    @pytest.mark.parametrize("key", BOOKING_KEYS)
    def test_subject_names_the_standard_and_the_local_time(self, key, locale):
        email = render(key, locale)
        data = EVENTS[key]["data"]
        assert data["standard_name"] in email.subject
        # 01:00Z is 09:00 in Asia/Shanghai.
        assert "2026-12-15 09:00–13:00" in email.subject

    @pytest.mark.parametrize("locale", LOCALES)
    @pytest.mark.parametrize("key", BOOKING_KEYS)
    def test_body_gives_standard_time_with_zone_purpose_and_status(self, key, locale):
        email = render(key, locale)
        data = EVENTS[key]["data"]
        status = {"zh-CN": {"pending": "待审批", "confirmed": "已确认", "rejected": "未获批准", "cancelled": "已取消"},
                  "en": {"pending": "pending approval", "confirmed": "confirmed", "rejected": "rejected",
                         "cancelled": "cancelled"}}[locale][data["status"]]
        for body in (email.text, email.html):
            assert data["standard_name"] in body and data["standard_code"] in body
            assert "2026-12-15 09:00–13:00" in body and "Asia/Shanghai" in body and "UTC+08:00" in body
            assert data["purpose"] in body and data["lab"] in body and status in body
            assert data["id"] in body

    def test_reason_is_given_when_rejected_or_cancelled(self):
        assert "原因：该时段设备维护" in render(PREFIX + "booking.rejected", "zh-CN").text
        assert "Reason: 该时段设备维护" in render(PREFIX + "booking.rejected", "en").text
        assert "原因：该计量标准已不可用" in render(PREFIX + "booking.cancelled", "zh-CN").text
        assert "Reason: the standard is no longer usable" in render(PREFIX + "booking.cancelled", "en").text

    def test_the_custodian_is_asked_to_approve_a_request(self):
        key = PREFIX + "booking.requested"
        custodian_zh = render(key, "zh-CN", role="custodian")
        assert custodian_zh.subject.startswith("待审批：")
        assert "需要您审批" in custodian_zh.text and "/approve" in custodian_zh.text
        custodian_en = render(key, "en", role="custodian")
        assert custodian_en.subject.startswith("Approval needed:")
        requester = render(key, "zh-CN", role="requester")
        assert requester.subject.startswith("预约申请已提交") and "/approve" not in requester.text

    def test_times_follow_institute_tz(self, monkeypatch):
        monkeypatch.setenv("INSTITUTE_TZ", "Europe/Berlin")
        email = render(PREFIX + "booking.confirmed", "en")
        assert "2026-12-15 02:00–06:00" in email.subject and "Europe/Berlin, UTC+01:00" in email.text

    def test_a_booking_over_midnight_shows_both_dates(self):
        event = sample(PREFIX + "booking.confirmed")
        event["data"]["starts_at"] = "2026-12-15T14:00:00+00:00"
        event["data"]["ends_at"] = "2026-12-15T18:00:00+00:00"
        assert "2026-12-15 22:00–2026-12-16 02:00" in render(event, "zh-CN").subject


class TestInvitations:
    def parse(self, email) -> tuple[Calendar, object]:
        calendar = Calendar.from_ical(email.calendar)
        events = calendar.walk("VEVENT")
        assert len(events) == 1
        return calendar, events[0]

    @pytest.mark.parametrize("locale", LOCALES)
    def test_confirmation_carries_a_request(self, locale):
        data = EVENTS[PREFIX + "booking.confirmed"]["data"]
        email = render(PREFIX + "booking.confirmed", locale, recipient="zhang@example.edu",
                       recipient_name="Prof. Zhang")
        assert email.calendar_method == "REQUEST"
        calendar, event = self.parse(email)
        assert str(calendar["method"]) == "REQUEST"
        assert str(event["status"]) == "CONFIRMED"
        assert str(event["uid"]) == f"{data['id']}@refstd"
        assert int(event["sequence"]) == data["sequence"] == 1
        assert event["dtstart"].dt == dt.datetime(2026, 12, 15, 1, 0, tzinfo=dt.UTC)
        assert event["dtend"].dt == dt.datetime(2026, 12, 15, 5, 0, tzinfo=dt.UTC)
        assert b"DTSTART:20261215T010000Z" in email.calendar and b"DTEND:20261215T050000Z" in email.calendar
        assert str(event["organizer"]) == "mailto:noreply@refstd.example"
        assert str(event["attendee"]) == "mailto:zhang@example.edu"
        assert event["attendee"].params["CN"] == "Prof. Zhang"
        assert str(event["location"]) == data["lab"]
        assert data["standard_name"] in str(event["summary"])
        assert event.get("dtstamp") is not None

    def test_cancellation_carries_a_cancel_with_the_same_uid(self):
        data = EVENTS[PREFIX + "booking.cancelled"]["data"]
        email = render(PREFIX + "booking.cancelled", "zh-CN", recipient="zhang@example.edu")
        assert email.calendar_method == "CANCEL"
        calendar, event = self.parse(email)
        assert str(calendar["method"]) == "CANCEL"
        assert str(event["status"]) == "CANCELLED"
        assert str(event["uid"]) == f"{data['id']}@refstd"
        assert int(event["sequence"]) == 2

    @pytest.mark.parametrize("key", [k for k in BOOKING_KEYS if not k.endswith(("confirmed", "cancelled"))]
                             + NOTICE_KEYS)
    def test_other_emails_carry_no_calendar(self, key):
        email = render(key, "zh-CN")
        assert email.calendar is None and email.calendar_method is None

    def test_organizer_defaults_to_mail_from(self, monkeypatch):
        monkeypatch.setenv("MAIL_FROM", "Lab desk <desk@lab.example>")
        email = render_email(EVENTS[PREFIX + "booking.confirmed"], "en", recipient="zhang@example.edu")
        _, event = self.parse(email)
        assert str(event["organizer"]) == "mailto:desk@lab.example"
        assert event["organizer"].params["CN"] == "Lab desk"
