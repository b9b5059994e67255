"""Sample data (示例数据) for an empty inventory database, so a newcomer sees the system working at once.

Everything here is SAMPLE DATA: invented enterprises, people, serial and certificate numbers. Names carry
the marker "示例" / "(sample)", addresses "（示例地址）", e-mail addresses the reserved example.com
domain, and every record is recorded by ``sample-data``.

The set follows the source article: the institute (淄博市检验检测计量研究总院) runs the provincial
hydrogen-energy new-materials industry metrology test centre, with public standards for gas flow,
pressure, temperature, humidity and proton-exchange-membrane gas permeability (GB/T 20042.3-2022), and
prepares a biomedicine centre. What it holds (the dict ``load_demo_data`` returns):

- 10 organizations: the institute; 4 partners (Shandong University, China Jiliang University, Jiangsu
  University, Shandong Industrial Technology Research Institute); 5 invented alliance enterprises along
  the hydrogen-energy new-materials, biomedicine, advanced-ceramics and fine-chemicals chains, with
  credit codes whose check characters come from the GB 32100-2015 rule.
- 7 standards (mechanical, thermal, physical_chemistry), 1 status change, 16 pieces of equipment,
  15 calibrations, 2 checks (a stability check and a repeatability test). Relative to ``today``: the
  gas-flow standard's assessment certificate expires in about 195 days (renewal notices are due) and
  one of its auxiliary instruments is due for calibration in about 15 days; the temperature standard's
  certificate expired 25 days ago and the humidity standard's dew-point meter is 9 days overdue (both
  unusable); the biomedicine centre's ventilator-tester standard is in preparation: suspended, not
  public, no certificate yet, its main instrument never calibrated.
- 22 enterprise instruments (general pressure gauges JJG 52-2013, digital indicating scales
  JJG 539-2016, combustible gas detectors JJG 693-2011): due in 5 and 7 days, overdue, never
  verified, the rest in date; 4 verifications (one failed).
- 76 events, one for every row the API would announce.

Every date is relative to ``today``, so the set looks the same whenever it is loaded, and every derived
value (due dates, certificate expiry, check results, credit-code check characters) comes from
``domain``. Rows are written together with the events the API publishes for the same changes, so read
models downstream see the sample data too. API clients (the bootstrap admin comes from the
configuration) and bookings (the scheduler's) are not part of it. The caller commits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.inventory import domain, events
from services.inventory.models import (
    Calibration,
    Check,
    Equipment,
    Instrument,
    Organization,
    Standard,
    StatusChange,
    Verification,
)
from shared.timeutil import add_months

RECORDED_BY = "sample-data"
SAMPLE = "示例"
SAMPLE_ADDRESS = "（示例地址）"
EMAIL_DOMAIN = "example.com"

HYDROGEN_CENTRE = "山东省氢能新材料产业计量测试中心"
BIOMEDICINE_CENTRE = "生物医药产业计量测试中心（筹建）"
HYDROGEN = "氢能新材料"
BIOMEDICINE = "生物医药"
FUEL_CELLS = "燃料电池"
CALIBRATED_BY = "上级计量技术机构（示例）"

# key, kind, name, English name, city, contact person, mail user and host
PARTNERS = (
    ("sdu", "university", "山东大学", "Shandong University", "山东省济南市", "刘洋", "liu.yang", "sdu"),
    ("cjlu", "university", "中国计量大学", "China Jiliang University", "浙江省杭州市", "陈静", "chen.jing",
     "cjlu"),
    ("ujs", "university", "江苏大学", "Jiangsu University", "江苏省镇江市", "黄磊", "huang.lei", "ujs"),
    ("sditri", "institute", "山东产业技术研究院", "Shandong Industrial Technology Research Institute",
     "山东省济南市", "钱昊", "qian.hao", "sditri"),
)

# key, region (行政区划码) and district of Zibo, name, English name, industrial chains, contacts
# (name, mail user, locale); the mail host is "<key>-sample".
ENTERPRISES = (
    ("hydrogen", "370305", "临淄区", "淄博示例氢源新材料有限公司",
     "Zibo Sample Hydrogen Source New Materials Co., Ltd.", [HYDROGEN],
     [("孙浩", "sun.hao", "zh-CN"), ("周敏", "zhou.min", "zh-CN")]),
    ("membrane", "370303", "张店区", "示例膜科技（淄博）有限公司",
     "Sample Membrane Technology (Zibo) Co., Ltd.", [HYDROGEN, FUEL_CELLS],
     [("Anna Keller", "anna.keller", "en")]),
    ("biopharma", "370306", "周村区", "淄博示例生物医药股份有限公司",
     "Zibo Sample Biopharmaceutical Co., Ltd.", [BIOMEDICINE],
     [("吴婷", "wu.ting", "zh-CN")]),
    ("ceramics", "370304", "博山区", "淄博示例先进陶瓷有限公司",
     "Zibo Sample Advanced Ceramics Co., Ltd.", ["先进陶瓷"],
     [("郑强", "zheng.qiang", "zh-CN")]),
    ("chemicals", "370305", "临淄区", "淄博示例精细化工有限公司",
     "Zibo Sample Fine Chemicals Co., Ltd.", ["高端化工", HYDROGEN],
     [("马丽", "ma.li", "zh-CN")]),
)

# key: category, verification regulation, interval in months (the regulation's maximum), maker, model
CATEGORIES = {
    "gauge": ("一般压力表", "JJG 52-2013", 6, "示例仪表厂", "Y-100"),
    "scale": ("数字指示秤", "JJG 539-2016", 12, "示例衡器有限公司", "TCS-150"),
    "gas": ("可燃气体检测报警器", "JJG 693-2011", 12, "示例安全仪器有限公司", "GD-EX"),
}

# organization, category, name, location, serial number, mandatory (强制检定), history:
#   ("due", n): last verified such that it is due in n days (negative: overdue by -n days);
#   ("never", n): registered n days ago and never verified, so due since then;
#   ("verified", n, result): registered unverified, then verified by the institute n days ago.
INSTRUMENTS = (
    ("hydrogen", "gauge", "氢气缓冲罐压力表（0~40 MPa）", "电解制氢车间 2#缓冲罐", "HS-PG-0001", True,
     ("due", 5)),
    ("hydrogen", "gauge", "冷却水管线压力表（0~1.6 MPa）", "电解制氢车间 冷却水站", "HS-PG-0002", True,
     ("due", 7)),
    ("hydrogen", "gauge", "压缩机出口压力表（0~25 MPa）", "氢气压缩机房", "HS-PG-0003", True,
     ("verified", 20, "pass")),
    ("hydrogen", "gas", "氢气检测报警器", "电解制氢车间", "HS-GD-0001", True, ("due", -12)),
    ("hydrogen", "gas", "氢气检测报警器", "充装区", "HS-GD-0002", True, ("never", 0)),
    ("hydrogen", "scale", "原料称量数字指示秤", "原料库", "HS-SC-0001", False, ("due", 160)),
    ("membrane", "scale", "成品出货数字指示秤（贸易结算）", "成品库", "MB-SC-0001", True, ("due", 25)),
    ("membrane", "gauge", "涂布线压缩空气压力表（0~1 MPa）", "涂布车间", "MB-PG-0001", True, ("due", 120)),
    ("membrane", "gauge", "渗透测试台氢气压力表（0~0.6 MPa）", "检测中心", "MB-PG-0002", True,
     ("due", -40)),
    ("membrane", "gas", "氢气检测报警器", "检测中心", "MB-GD-0001", True, ("verified", 45, "pass")),
    ("biopharma", "gauge", "灭菌柜压力表（0~0.4 MPa）", "制剂车间 灭菌间", "BP-PG-0001", True, ("due", 5)),
    ("biopharma", "gauge", "纯蒸汽管线压力表（0~1 MPa）", "公用工程站", "BP-PG-0002", True,
     ("verified", 30, "pass")),
    ("biopharma", "scale", "原辅料称量数字指示秤", "原辅料库", "BP-SC-0001", False, ("due", 240)),
    ("biopharma", "scale", "中间体称量数字指示秤", "合成车间", "BP-SC-0002", False, ("never", 10)),
    ("biopharma", "gas", "乙醇蒸气检测报警器", "溶剂库", "BP-GD-0001", True, ("due", 90)),
    ("ceramics", "gas", "天然气检测报警器", "1#辊道窑", "CE-GD-0001", True, ("verified", 3, "fail")),
    ("ceramics", "gas", "天然气检测报警器", "2#辊道窑", "CE-GD-0002", True, ("due", 200)),
    ("ceramics", "scale", "出货数字指示秤（贸易结算）", "成品库", "CE-SC-0001", True, ("due", 300)),
    ("ceramics", "gauge", "天然气调压站压力表（0~0.6 MPa）", "调压站", "CE-PG-0001", True, ("due", 7)),
    ("chemicals", "gauge", "反应釜压力表（0~2.5 MPa）", "合成车间 R-101", "CH-PG-0001", True, ("due", -3)),
    ("chemicals", "gas", "可燃气体检测报警器", "罐区", "CH-GD-0001", True, ("due", 30)),
    ("chemicals", "scale", "原料称量数字指示秤", "原料库", "CH-SC-0001", False, ("due", 100)),
)


def is_empty(session: Session) -> bool:
    """True when the inventory holds no organizations and no standards (sample data may be loaded)."""
    return (session.scalar(select(Organization.id).limit(1)) is None
            and session.scalar(select(Standard.id).limit(1)) is None)


def load_demo_data(session: Session, today: dt.date) -> dict[str, int]:
    """Write the sample data set and its events into ``session`` (not committed); return counts per kind.

    Keys: organizations, standards, status_changes, equipment, calibrations, checks, instruments,
    verifications, events. Refuses (RuntimeError) a database that is not empty, so sample data never
    mixes with real data.
    """
    if not is_empty(session):
        raise RuntimeError("the inventory already holds organizations or standards; sample data not loaded")
    loader = _Loader(session, today)
    organizations = loader.organizations()
    pressure_standard = loader.standards()
    loader.instruments(organizations, pressure_standard)
    return dict(loader.counts)


def _done_on_for_due(target: dt.date, months: int, due_of: Callable[[dt.date], dt.date]) -> dt.date:
    """The latest date whose due date by the domain rule ``due_of`` falls on or before ``target``.

    Month arithmetic clamps to month ends, so some due dates cannot be reached at all (no verification
    date is due 6 months later on 29-31 August of a common year); the rule itself decides, and the
    result is due on the target or at most three days before it.
    """
    guess = add_months(target, -months)
    candidates = [guess + dt.timedelta(days=delta) for delta in range(-4, 5)]
    return max(day for day in candidates if due_of(day) <= target)


def _email(user: str, host: str = "zbjl") -> str:
    return f"{user}@{host}.{EMAIL_DOMAIN}"


def _contact(name: str, email: str, phone: str, locale: str = "zh-CN") -> dict:
    return {"name": name, "email": email, "phone": phone, "locale": locale}


class _Loader:
    """Writes the rows one API-sized change at a time: add, flush, publish the change's event."""

    def __init__(self, session: Session, today: dt.date) -> None:
        self.session = session
        self.today = today
        self.counts = dict.fromkeys(("organizations", "standards", "status_changes", "equipment",
                                     "calibrations", "checks", "instruments", "verifications", "events"), 0)

    def days(self, offset: int) -> dt.date:
        return self.today + dt.timedelta(days=offset)

    def _write(self, kind: str, row, event: str | None = None, subject=None, **extra) -> None:
        """Add ``row``, flush, and publish ``event`` carrying ``subject``'s state (default: the row's)."""
        self.session.add(row)
        self.session.flush()
        self.counts[kind] += 1
        if event is not None:
            events.publish(self.session, event, subject if subject is not None else row, **extra)
            self.counts["events"] += 1

    # -- organizations -----------------------------------------------------------------------------

    def organizations(self) -> dict[str, Organization]:
        orgs: dict[str, Organization] = {}

        def add(key: str, **fields) -> None:
            orgs[key] = Organization(**fields)
            self._write("organizations", orgs[key], "organization.registered")

        add("institute", kind="institute", name=f"淄博市检验检测计量研究总院（{SAMPLE}）",
            name_en="Zibo Institute of Inspection, Testing and Metrology (sample)",
            address=f"山东省淄博市张店区{SAMPLE_ADDRESS}", industry_chains=[HYDROGEN, BIOMEDICINE],
            alliance_member=False,
            contacts=[_contact("张伟", _email("zhang.wei"), "0533-0000101"),
                      _contact("李娜", _email("li.na"), "0533-0000102")])
        for number, (key, kind, name, name_en, city, person, user, host) in enumerate(PARTNERS, start=1):
            add(key, kind=kind, name=f"{name}（{SAMPLE}）", name_en=f"{name_en} (sample)",
                address=f"{city}{SAMPLE_ADDRESS}", industry_chains=[HYDROGEN, BIOMEDICINE],
                alliance_member=False,
                contacts=[_contact(person, _email(user, host), f"0531-0000{200 + number}")])
        for number, (key, region, district, name, name_en, chains, people) in enumerate(ENTERPRISES, 1):
            # 9: registered by market regulation, 1: enterprise, the region, then an organization code
            # of the invented form MA000nnnn; the 18th character is computed by the GB 32100-2015 rule.
            body = f"91{region}MA000{number:04d}"
            contacts = [_contact(person, _email(user, f"{key}-sample"), f"0533-0000{300 + 10 * number + i}",
                                 locale) for i, (person, user, locale) in enumerate(people)]
            add(key, kind="enterprise", name=name, name_en=name_en,
                credit_code=body + domain.credit_code_check_char(body),
                address=f"山东省淄博市{district}示例路{number}号{SAMPLE_ADDRESS}", industry_chains=chains,
                alliance_member=True, contacts=contacts)
        return orgs

    # -- standards, equipment, calibrations, checks ------------------------------------------------

    def _standard(self, custodian: tuple[str, str], certificate_expires_in: int | None, **fields) -> Standard:
        """A standard whose assessment certificate expires in about ``certificate_expires_in`` days."""
        if certificate_expires_in is not None:
            issued_on = _done_on_for_due(self.days(certificate_expires_in),
                                         12 * domain.CERTIFICATE_VALIDITY_YEARS,
                                         lambda day: domain.certificate_expires_on(day, None))
            number = f"[{issued_on.year}]鲁社量标淄证字第{fields['code'][-4:]}号（{SAMPLE}）"
            fields.update(certificate_number=number, certificate_issued_on=issued_on,
                          certificate_expires_on=domain.certificate_expires_on(issued_on, None))
        fields.setdefault("public", True)
        fields.setdefault("bookable", True)
        fields.setdefault("status", "in_service")
        standard = Standard(custodian_name=custodian[0], custodian_email=custodian[1], **fields)
        self._write("standards", standard, "standard.registered")
        return standard

    def _equipment(self, standard: Standard, role: str, name: str, model: str, serial_number: str,
                   interval: int, *, due_in: int | None = None, calibrated_ago: int | None = None,
                   valid_for_days: int | None = None, uncertainty: str | None = None,
                   manufacturer: str = "示例计量仪器有限公司") -> Equipment:
        """Equipment of ``standard`` with one calibration: due in ``due_in`` days by its interval, or
        done ``calibrated_ago`` days ago on a certificate valid for ``valid_for_days``; neither: never
        calibrated."""
        equipment = Equipment(standard=standard, role=role, name=name, manufacturer=manufacturer,
                              model=model, serial_number=serial_number, calibration_interval_months=interval)
        self._write("equipment", equipment, "equipment.registered", **self._standard_state(standard))
        if due_in is None and calibrated_ago is None:
            return equipment
        valid_until = None
        if due_in is not None:
            calibrated_on = _done_on_for_due(self.days(due_in), interval,
                                             lambda day: domain.calibration_due_on(day, interval, None))
        else:
            calibrated_on = self.days(-calibrated_ago)
            valid_until = calibrated_on + dt.timedelta(days=valid_for_days)
        calibration = Calibration(
            equipment_id=equipment.id, calibrated_on=calibrated_on, performed_by=CALIBRATED_BY,
            certificate_number=f"{SAMPLE}校准字{calibrated_on.year}-{serial_number}", result="pass",
            uncertainty=uncertainty, valid_until=valid_until,
            next_due_on=domain.calibration_due_on(calibrated_on, interval, valid_until),
            notes="示例数据：溯源至上级计量技术机构", recorded_by=RECORDED_BY)
        self.session.add(calibration)
        equipment.last_calibrated_on = calibration.calibrated_on
        equipment.due_on = calibration.next_due_on
        self._write("calibrations", calibration, "equipment.calibrated", subject=equipment,
                    calibration=calibration, **self._standard_state(standard))
        return equipment

    @staticmethod
    def _standard_state(standard: Standard) -> dict:
        return {"standard_usable": standard.usable, "standard_blocking_reasons": standard.blocking_reasons}

    def _check(self, standard: Standard, kind: str, performed_ago: int, value: float, limit: float,
               unit: str, notes: str) -> None:
        check = Check(standard_id=standard.id, kind=kind, performed_on=self.days(-performed_ago),
                      value=value, limit=limit, unit=unit, passed=domain.check_passed(kind, value, limit),
                      notes=notes, recorded_by=RECORDED_BY)
        self._write("checks", check, "standard.check_recorded")

    def standards(self) -> Standard:
        """The two centres' standards; returns the pressure standard, which verifies enterprises' gauges."""
        flow_lab = f"{HYDROGEN_CENTRE} 气体流量实验室"
        thermal_lab = f"{HYDROGEN_CENTRE} 温湿度实验室"
        flow_keeper = ("张伟", _email("zhang.wei"))
        thermal_keeper = ("李娜", _email("li.na"))

        gas_flow = self._standard(
            flow_keeper, 195, code="H2-GF-0001", name=f"音速喷嘴法气体流量标准装置（{SAMPLE}）",
            name_en="Sonic-nozzle gas flow standard (sample)", discipline="mechanical",
            measurand="气体体积流量", range_min=0.5, range_max=160.0, range_unit="m^3/h",
            uncertainty="Urel = 0.25% (k=2)", accuracy_class="0.25级", lab=flow_lab,
            industries=[HYDROGEN, FUEL_CELLS], recovery_minutes=60)
        self._equipment(gas_flow, "main", "临界流文丘里喷嘴组", "SN-12", "GF-N-01", 24, due_in=450,
                        uncertainty="Urel = 0.2% (k=2)")
        self._equipment(gas_flow, "auxiliary", "数字压力计", "DPG-300", "GF-P-02", 12, due_in=15,
                        uncertainty="U = 0.02% FS (k=2)")
        self._equipment(gas_flow, "auxiliary", "铂电阻温度计", "PT100-A", "GF-T-03", 12, due_in=270,
                        uncertainty="U = 0.05 °C (k=2)")
        self._check(gas_flow, "repeatability", 40, value=0.04, limit=0.05, unit="%",
                    notes="示例数据：10 m^3/h 流量点 10 次测量的相对实验标准偏差")

        small_flow = self._standard(
            flow_keeper, 1100, code="H2-LF-0002", name=f"活塞式气体流量标准装置（{SAMPLE}）",
            name_en="Piston-prover gas flow standard (sample)", discipline="mechanical",
            measurand="气体体积流量", range_min=0.01, range_max=50.0, range_unit="L/min",
            uncertainty="Urel = 0.2% (k=2)", lab=flow_lab, industries=[HYDROGEN, FUEL_CELLS],
            recovery_minutes=30)
        self._equipment(small_flow, "main", "活塞式气体流量标准器", "PP-50", "LF-M-01", 12, calibrated_ago=60,
                        valid_for_days=364, uncertainty="Urel = 0.15% (k=2)")
        self._equipment(small_flow, "auxiliary", "数字温湿度气压计", "THP-1", "LF-E-02", 12, due_in=200)

        pressure = self._standard(
            ("王磊", _email("wang.lei")), 820, code="H2-PR-0003",
            name=f"0.02级活塞式压力计标准装置（{SAMPLE}）",
            name_en="Class 0.02 piston gauge pressure standard (sample)", discipline="mechanical",
            measurand="压力", range_min=0.1, range_max=60.0, range_unit="MPa",
            uncertainty="Urel = 0.01% (k=2)", accuracy_class="0.02级", lab=f"{HYDROGEN_CENTRE} 压力实验室",
            industries=[HYDROGEN, "高端化工"], recovery_minutes=30)
        self._equipment(pressure, "main", "活塞式压力计", "PG-60", "PR-M-01", 24, due_in=380,
                        uncertainty="Urel = 0.005% (k=2)")
        self._equipment(pressure, "auxiliary", "专用砝码组", "W-60", "PR-W-02", 24, due_in=380)
        self._check(pressure, "stability", 75, value=0.8, limit=2.0, unit="kPa",
                    notes="示例数据：10 MPa 点一年内的变化量，限值为该点最大允许误差")

        temperature = self._standard(
            thermal_keeper, -25, code="H2-TE-0004", name=f"二等标准铂电阻温度计标准装置（{SAMPLE}）",
            name_en="Second-grade standard platinum resistance thermometer standard (sample)",
            discipline="thermal", measurand="温度", range_min=-40.0, range_max=300.0, range_unit="degC",
            uncertainty="U = 0.04 °C (k=2)", accuracy_class="二等", lab=thermal_lab,
            industries=[HYDROGEN, BIOMEDICINE], recovery_minutes=120)
        self._equipment(temperature, "main", "二等标准铂电阻温度计", "SPRT-2", "TE-M-01", 12, due_in=150,
                        uncertainty="U = 0.02 °C (k=2)")
        self._equipment(temperature, "auxiliary", "恒温油槽", "OB-300", "TE-B-02", 12, due_in=150)

        humidity = self._standard(
            thermal_keeper, 640, code="H2-HU-0005", name=f"湿度标准装置（双压法湿度发生器）（{SAMPLE}）",
            name_en="Two-pressure humidity generator standard (sample)", discipline="thermal",
            measurand="相对湿度", range_min=10.0, range_max=95.0, range_unit="%",
            uncertainty="U = 1.0 %RH (k=2)", lab=thermal_lab, industries=[HYDROGEN, BIOMEDICINE],
            recovery_minutes=180)
        self._equipment(humidity, "main", "精密露点仪", "DP-90", "HU-M-01", 12, due_in=-9,
                        uncertainty="U = 0.1 °C (k=2)")
        self._equipment(humidity, "auxiliary", "双压法湿度发生器", "HG-2P", "HU-G-02", 12, due_in=220)

        pem = self._standard(
            ("刘芳", _email("liu.fang")), 1300, code="H2-PEM-0006",
            name=f"质子交换膜气体透过率测量装置（{SAMPLE}）",
            name_en="Proton-exchange-membrane gas permeability standard, GB/T 20042.3-2022 (sample)",
            discipline="physical_chemistry", measurand="质子交换膜气体透过率（GB/T 20042.3-2022）",
            range_min=1e-11, range_max=1e-7, range_unit="mol/(m^2*s*Pa)", uncertainty="Urel = 5% (k=2)",
            lab=f"{HYDROGEN_CENTRE} 燃料电池材料实验室", industries=[HYDROGEN, FUEL_CELLS],
            recovery_minutes=240)
        self._equipment(pem, "main", "气相色谱仪", "GC-H2", "PEM-M-01", 12, due_in=95,
                        uncertainty="Urel = 2% (k=2)")
        self._equipment(pem, "auxiliary", "质量流量控制器", "MFC-1", "PEM-F-02", 12, calibrated_ago=120,
                        valid_for_days=364)
        self._equipment(pem, "auxiliary", "膜测试池温湿度控制系统", "CELL-80", "PEM-C-03", 12, due_in=180)

        ventilator = self._standard(
            ("赵敏", _email("zhao.min")), None, code="BIO-VT-0007",
            name=f"医用呼吸机校准装置（气流分析仪）（{SAMPLE}）",
            name_en="Medical ventilator calibration standard, gas flow analyser (sample)",
            discipline="mechanical", measurand="气体流量", range_min=0.5, range_max=180.0,
            range_unit="L/min", uncertainty="Urel = 2% (k=2)", lab=BIOMEDICINE_CENTRE,
            industries=[BIOMEDICINE], recovery_minutes=30, public=False, bookable=False, status="suspended")
        self._write("status_changes", StatusChange(
            standard_id=ventilator.id, from_status=None, to_status="suspended", changed_by=RECORDED_BY,
            reason="示例数据：生物医药产业计量测试中心筹建中，标准器尚待溯源，计量标准尚待考核，暂不对外服务。"))
        self._equipment(ventilator, "main", "气流分析仪", "VT-180", "VT-M-01", 12)
        self._equipment(ventilator, "auxiliary", "数字温湿度气压计", "THP-1", "VT-E-02", 12, due_in=300)
        return pressure

    # -- enterprise instruments and their verifications --------------------------------------------

    def instruments(self, organizations: dict[str, Organization], pressure_standard: Standard) -> None:
        for org_key, category_key, name, location, serial, mandatory, history in INSTRUMENTS:
            category, regulation, interval, maker, model = CATEGORIES[category_key]
            registered_on, last_verified_on = self.today, None
            if history[0] == "due":
                last_verified_on = _done_on_for_due(
                    self.days(history[1]), interval,
                    lambda day, months=interval: domain.instrument_due_on(day, months, self.today))
            elif history[0] == "never":
                registered_on = self.days(-history[1])
            else:  # brought in for verification two weeks after it was registered
                registered_on = self.days(-history[1] - 14)
            instrument = Instrument(
                organization_id=organizations[org_key].id, name=f"{name}（{SAMPLE}）", category=category,
                manufacturer=maker, model=model, serial_number=serial, regulation=regulation,
                mandatory=mandatory, interval_months=interval, last_verified_on=last_verified_on,
                registered_on=registered_on, location=location, status="active",
                due_on=domain.instrument_due_on(last_verified_on, interval, registered_on))
            self._write("instruments", instrument, "instrument.registered")
            if history[0] == "verified":
                standard = pressure_standard if category_key == "gauge" else None
                self._verify(instrument, self.days(-history[1]), history[2], standard)

    def _verify(self, instrument: Instrument, verified_on: dt.date, result: str,
                standard: Standard | None) -> None:
        next_due_on = domain.verification_next_due_on(verified_on, instrument.interval_months, result)
        notes = ("示例数据：检定合格" if result == "pass"
                 else "示例数据：报警设定点示值误差超差，停用待修，修复后重新送检")
        verification = Verification(
            instrument_id=instrument.id, verified_on=verified_on, result=result,
            certificate_number=f"{SAMPLE}检字{verified_on.year}-{instrument.serial_number}",
            standard_id=standard.id if standard is not None else None, next_due_on=next_due_on,
            notes=notes, recorded_by=RECORDED_BY)
        self.session.add(verification)
        instrument.last_verified_on = verified_on
        instrument.due_on = next_due_on
        self._write("verifications", verification, "instrument.verified", subject=instrument,
                    verification=verification)
