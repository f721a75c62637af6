"""The demo network as plain FHIR R4 data: pure builders, no I/O.

A fictional province, 岚江省, with a four-tier telemedicine network: the provincial centre (省远程医学中心
at the provincial people's hospital), two city sub-centres, four county people's hospitals and six
township health centres. ``Organization.partOf`` forms the tiers. Every resource has a fixed, readable
id and the generated parts (names, phone numbers, identifiers, values) come from Faker instances
seeded per section, so every run builds exactly the same resources.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker
from faker.providers.ssn.zh_CN import Provider as _CnSsn

BASE = "https://telemed.example.cn/fhir"
ORG_CODE_SYSTEM = f"{BASE}/sid/org-code"
LICENCE_SYSTEM = f"{BASE}/sid/practitioner-licence"
MRN_SYSTEM = f"{BASE}/sid/mrn"  # one system per institution: f"{MRN_SYSTEM}/{org code}"
TIER_SYSTEM = f"{BASE}/CodeSystem/institution-tier"
TITLE_SYSTEM = f"{BASE}/CodeSystem/professional-title"
RESIDENT_ID_SYSTEM = "urn:oid:2.16.156.10011.1.1"  # 居民身份证号码
HL7 = "http://terminology.hl7.org/CodeSystem"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

PROVINCE = "岚江省"
TIERS = {"province": "省级中心", "city": "市级分中心", "county": "县级医院", "township": "乡镇卫生院"}
TITLES = {
    "chief": ("chief-physician", "主任医师"),
    "associate": ("associate-chief-physician", "副主任医师"),
    "attending": ("attending-physician", "主治医师"),
    "resident": ("resident-physician", "住院医师"),
}
# Years in practice by title (plus 0-6 by staff number): residents are the ones under three years.
YEARS_LICENSED = {"chief": 18, "associate": 10, "attending": 4, "resident": 0}
SPECIALTIES = {  # SNOMED CT practice-setting codes
    "cardiology": ("394579002", "心血管内科"), "radiology": ("394914008", "放射科"),
    "pathology": ("394915009", "病理科"), "neurology": ("394591006", "神经内科"),
    "general": ("394814009", "全科"), "respiratory": ("418112009", "呼吸内科"),
    "oncology": ("394593009", "肿瘤科"), "endocrinology": ("394583002", "内分泌科"),
    "pediatrics": ("394537008", "儿科"), "surgery": ("394609007", "普外科"),
}
# key: (SNOMED CT code, name, ICD-10 code, ICD-10 name)
CONDITIONS = {
    "htn": ("38341003", "高血压", "I10", "特发性（原发性）高血压"),
    "t2dm": ("44054006", "2型糖尿病", "E11.9", "2型糖尿病，不伴有并发症"),
    "copd": ("13645005", "慢性阻塞性肺疾病", "J44.9", "慢性阻塞性肺疾病"),
    "chd": ("53741008", "冠心病", "I25.1", "动脉硬化性心脏病"),
    "stroke": ("230690007", "脑卒中", "I64", "脑卒中，未特指为出血或梗死"),
}


@dataclass(frozen=True)
class Institution:
    id: str
    code: str
    tier: str
    name: str
    parent: str | None
    city: str
    district: str
    street: str
    postal: str
    phone: str
    alias: tuple[str, ...] = ()


INSTITUTIONS: tuple[Institution, ...] = (
    Institution("org-province", "LJ-P01", "province", "岚江省人民医院", None, "岚州市", "青湖区",
                "健康路1号", "650011", "0879-86001120", ("岚江省远程医学中心", "Lanjiang Telemedicine Centre")),
    Institution("org-city-1", "LJ-C01", "city", "澄阳市人民医院", "org-province", "澄阳市", "南湖区",
                "人民路88号", "653100", "0876-82125566", ("澄阳市远程医学分中心", "Chengyang Telemedicine Sub-centre")),
    Institution("org-city-2", "LJ-C02", "city", "北溪市人民医院", "org-province", "北溪市", "溪北区",
                "解放路26号", "654200", "0873-83127788", ("北溪市远程医学分中心", "Beixi Telemedicine Sub-centre")),
    Institution("org-county-1", "LJ-X01", "county", "平川县人民医院", "org-city-1", "澄阳市", "平川县",
                "城关镇中山路15号", "653300", "0876-65213120"),
    Institution("org-county-2", "LJ-X02", "county", "柳溪县人民医院", "org-city-1", "澄阳市", "柳溪县",
                "柳城镇建设路7号", "653400", "0876-66312120"),
    Institution("org-county-3", "LJ-X03", "county", "青石县人民医院", "org-city-2", "北溪市", "青石县",
                "青石镇文化路32号", "654300", "0873-76215120"),
    Institution("org-county-4", "LJ-X04", "county", "白河县人民医院", "org-city-2", "北溪市", "白河县",
                "白河镇滨河路9号", "654400", "0873-77318120"),
    Institution("org-township-1", "LJ-T01", "township", "平川县东坪镇卫生院", "org-county-1", "澄阳市", "平川县",
                "东坪镇东街12号", "653301", "0876-65401203"),
    Institution("org-township-2", "LJ-T02", "township", "平川县河口乡卫生院", "org-county-1", "澄阳市", "平川县",
                "河口乡集镇路3号", "653302", "0876-65502117"),
    Institution("org-township-3", "LJ-T03", "township", "柳溪县桃源镇卫生院", "org-county-2", "澄阳市", "柳溪县",
                "桃源镇新街45号", "653401", "0876-66605329"),
    Institution("org-township-4", "LJ-T04", "township", "柳溪县马场乡卫生院", "org-county-2", "澄阳市", "柳溪县",
                "马场乡振兴路6号", "653402", "0876-66701186"),
    Institution("org-township-5", "LJ-T05", "township", "青石县龙泉镇卫生院", "org-county-3", "北溪市", "青石县",
                "龙泉镇中心街21号", "654301", "0873-76408231"),
    Institution("org-township-6", "LJ-T06", "township", "白河县石桥镇卫生院", "org-county-4", "北溪市", "白河县",
                "石桥镇桥东路2号", "654401", "0873-77509065"),
)
BY_ID = {inst.id: inst for inst in INSTITUTIONS}

# Doctors per institution as (title, specialty): senior titles at the upper tiers, GPs in townships.
_PROVINCE_STAFF = [
    ("chief", "cardiology"), ("chief", "radiology"), ("chief", "pathology"), ("chief", "neurology"),
    ("chief", "surgery"), ("associate", "respiratory"), ("associate", "oncology"), ("associate", "endocrinology"),
    ("associate", "pediatrics"), ("attending", "radiology"),
]
STAFFING: dict[str, list[tuple[str, str]]] = {
    "org-province": _PROVINCE_STAFF,
    "org-city-1": [("chief", "cardiology"), ("associate", "radiology"), ("associate", "neurology"),
                   ("associate", "surgery"), ("attending", "respiratory"), ("attending", "endocrinology")],
    "org-city-2": [("chief", "neurology"), ("associate", "cardiology"), ("associate", "pediatrics"),
                   ("attending", "radiology"), ("attending", "oncology"), ("attending", "respiratory")],
    "org-county-1": [("associate", "cardiology"), ("attending", "radiology"), ("resident", "surgery")],
    "org-county-2": [("associate", "respiratory"), ("attending", "radiology"), ("resident", "general")],
    "org-county-3": [("associate", "neurology"), ("attending", "radiology"), ("resident", "pediatrics")],
    "org-county-4": [("attending", "cardiology"), ("attending", "radiology"), ("resident", "endocrinology")],
    "org-township-1": [("attending", "general")],
    "org-township-2": [("resident", "general")],
    "org-township-3": [("attending", "general")],
    "org-township-4": [("resident", "general")],
    "org-township-5": [("attending", "general")],
    "org-township-6": [("resident", "general")],
}
PATIENT_HOMES = [i.id for i in INSTITUTIONS if i.tier in ("county", "township")]  # 3 patients each
# (patient number, condition): 20 diagnoses among the first 16 patients, some with comorbidities.
CONDITION_PLAN = [
    (1, "htn"), (1, "t2dm"), (2, "copd"), (3, "chd"), (3, "htn"), (4, "stroke"), (5, "t2dm"), (6, "htn"),
    (7, "copd"), (8, "htn"), (8, "stroke"), (9, "t2dm"), (10, "chd"), (11, "htn"), (12, "t2dm"), (12, "htn"),
    (13, "copd"), (14, "stroke"), (15, "chd"), (16, "htn"),
]
VILLAGES = ("新华", "幸福", "和平", "团结", "兴隆", "永安")
REFERENCE_DAY = date(2024, 6, 1)  # ages are computed from here, never from today
_AREA_CODES = [c for c in _CnSsn.area_codes if not c.endswith("00") and c[:2] not in ("71", "81", "82", "83")]


def _ref(resource_type: str, id_: str, display: str | None = None) -> dict:
    out = {"reference": f"{resource_type}/{id_}"}
    if display:
        out["display"] = display
    return out


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": text or display}


def _address(inst: Institution, line: str, use: str) -> dict:
    text = f"{PROVINCE}{inst.city}{inst.district}{line}"
    return {"use": use, "type": "physical", "text": text, "line": [line], "city": inst.city,
            "district": inst.district, "state": PROVINCE, "postalCode": inst.postal, "country": "CN"}


def _faker(seed: int) -> Faker:
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    return fake


def _person_name(fake: Faker, gender: str) -> dict:
    family = fake.last_name()
    given = fake.first_name_male() if gender == "male" else fake.first_name_female()
    return {"use": "official", "text": family + given, "family": family, "given": [given]}


def resident_id(area_code: str, birth: date, sequence: int) -> str:
    """An 18-character resident ID number (GB 11643-1999): area, birth date, sequence, check digit.

    Faker's ``ssn()`` derives the birth date from today, so the number would change day by day.
    """
    body = f"{area_code}{birth:%Y%m%d}{sequence:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


def organizations() -> list[dict]:
    out = []
    for inst in INSTITUTIONS:
        org = {
            "resourceType": "Organization",
            "id": inst.id,
            "identifier": [{"use": "official", "system": ORG_CODE_SYSTEM, "value": inst.code}],
            "active": True,
            "type": [
                _concept(TIER_SYSTEM, inst.tier, TIERS[inst.tier]),
                _concept(f"{HL7}/organization-type", "prov", "Healthcare Provider", "医疗机构"),
            ],
            "name": inst.name,
            "telecom": [{"system": "phone", "value": inst.phone, "use": "work"}],
            "address": [_address(inst, inst.street, "work")],
        }
        if inst.alias:
            org["alias"] = list(inst.alias)
        if inst.parent:
            org["partOf"] = _ref("Organization", inst.parent, BY_ID[inst.parent].name)
        out.append(org)
    for cid, name, name_en, parent in CENTRES:
        out.append({
            "resourceType": "Organization", "id": cid, "active": True, "name": name, "alias": [name_en],
            "type": [_concept(CENTRE_TYPE_SYSTEM, "telemedicine-centre", "Telemedicine centre", "远程医学中心"),
                     _concept(f"{HL7}/organization-type", "dept", "Hospital Department", "科室")],
            "partOf": _ref("Organization", parent, BY_ID[parent].name),
            "telecom": [{"system": "phone", "value": BY_ID[parent].phone, "use": "work"}],
        })
    return out


# The telemedicine centre that runs quality control and triage for the network: a department of
# the province hospital (its staff, not the hospital's doctors, see the requests sent to it).
CENTRES = [("org-province-tmc", "岚江省远程医学中心", "Lanjiang Telemedicine Centre", "org-province")]
CENTRE_TYPE_SYSTEM = f"{BASE}/CodeSystem/organization-role"


def consult_room_id(org_id: str) -> str:
    return f"loc-{org_id.removeprefix('org-')}-consult"


def locations() -> list[dict]:
    out = []
    for inst in INSTITUTIONS:
        rooms = [("consult", "远程会诊室", "开展远程会诊、远程查房和远程教学的会诊室")]
        if inst.tier in ("province", "city"):
            rooms.append(("imaging", "远程影像诊断室", "接收基层上传影像并出具远程诊断报告的阅片室"))
        for key, room, description in rooms:
            out.append({
                "resourceType": "Location",
                "id": f"loc-{inst.id.removeprefix('org-')}-{key}",
                "status": "active",
                "name": f"{inst.name}{room}",
                "description": description,
                "mode": "instance",
                "telecom": [{"system": "phone", "value": inst.phone, "use": "work"}],
                "address": _address(inst, inst.street, "work"),
                "physicalType": _concept(f"{HL7}/location-physical-type", "ro", "Room", "房间"),
                "managingOrganization": _ref("Organization", inst.id, inst.name),
            })
    return out


# What the province and city centres offer the tiers below them (HealthcareService.type text, category).
SERVICES = [
    ("consultation", "远程会诊", "Teleconsultation"),
    ("imaging", "远程影像诊断", "Remote imaging diagnosis"),
    ("ecg", "远程心电诊断", "Remote ECG diagnosis"),
    ("pathology", "远程病理诊断", "Remote pathology"),
]


def healthcare_services() -> list[dict]:
    """The services each province/city institution offers (R4 HealthcareService, providedBy)."""
    out = []
    for inst in INSTITUTIONS:
        if inst.tier not in ("province", "city"):
            continue
        offered = SERVICES if inst.tier == "province" else SERVICES[:3]
        for key, zh, en in offered:
            out.append({
                "resourceType": "HealthcareService", "id": f"hs-{inst.id.removeprefix('org-')}-{key}",
                "active": True, "providedBy": _ref("Organization", inst.id, inst.name),
                "type": [{"coding": [{"system": f"{BASE}/CodeSystem/telemedicine-service", "code": key,
                                      "display": en}], "text": zh}],
                "name": f"{inst.name}{zh}",
                "telecom": [{"system": "phone", "value": inst.phone, "use": "work"}],
                "appointmentRequired": key == "consultation",
            })
    return out


def doctors() -> list[tuple[dict, dict]]:
    """(Practitioner, PractitionerRole) pairs, prac-001 ... with role-001 ..."""
    fake = _faker(20240601)
    out = []
    n = 0
    for inst in INSTITUTIONS:
        for title, specialty in STAFFING[inst.id]:
            n += 1
            gender = fake.random_element(("male", "female"))
            name = _person_name(fake, gender)
            title_code, title_name = TITLES[title]
            spec_code, spec_name = SPECIALTIES[specialty]
            prac_id, role_id = f"prac-{n:03d}", f"role-{n:03d}"
            licence = fake.numerify("11053##########")  # 15-digit practising certificate number
            practitioner = {
                "resourceType": "Practitioner",
                "id": prac_id,
                "identifier": [{"use": "official", "system": LICENCE_SYSTEM, "value": licence}],
                "active": True,
                "name": [name],
                "telecom": [{"system": "phone", "value": fake.phone_number(), "use": "mobile"}],
                "gender": gender,
                "qualification": [{
                    "code": _concept(TITLE_SYSTEM, title_code, title_name),
                    # Licensed this long before the reference day: what the 3-year rule for consultants reads.
                    "period": {"start": (REFERENCE_DAY - timedelta(days=365 * (YEARS_LICENSED[title] + n % 7)))
                               .isoformat()},
                    "issuer": {"display": f"{PROVINCE}卫生健康委员会"},
                }],
            }
            role = {
                "resourceType": "PractitionerRole",
                "id": role_id,
                "active": True,
                "practitioner": _ref("Practitioner", prac_id, name["text"]),
                "organization": _ref("Organization", inst.id, inst.name),
                "code": [_concept(f"{HL7}/practitioner-role", "doctor", "Doctor", "医生")],
                "specialty": [_concept(SNOMED, spec_code, spec_name)],
                "location": [_ref("Location", consult_room_id(inst.id))],
            }
            out.append((practitioner, role))
    return out


def _first_doctor(org_id: str, pairs: list[tuple[dict, dict]]) -> dict:
    """The Practitioner of the first role at ``org_id`` (every county and township has one)."""
    role = next(r for _, r in pairs if r["organization"]["reference"] == f"Organization/{org_id}")
    return dict(role["practitioner"])


def patients(pairs: list[tuple[dict, dict]]) -> list[dict]:
    fake = _faker(20240602)
    out = []
    for n in range(1, 31):
        inst = BY_ID[PATIENT_HOMES[(n - 1) // 3]]
        gender = fake.random_element(("male", "female"))
        birth = REFERENCE_DAY - timedelta(days=fake.random_int(35 * 365, 85 * 365))
        seq = fake.random_int(0, 499) * 2 + (1 if gender == "male" else 0)  # odd for men, even for women
        id_number = resident_id(fake.random_element(_AREA_CODES), birth, seq)
        town = re.match(r".+?[镇乡]", inst.street).group(0)  # the patient lives in the institution's town
        line = f"{town}{fake.random_element(VILLAGES)}村{fake.random_int(1, 12)}组"
        out.append({
            "resourceType": "Patient",
            "id": f"pat-{n:03d}",
            "identifier": [
                {"use": "official", "type": _concept(f"{HL7}/v2-0203", "NI", "National unique individual identifier",
                                                     "居民身份证"),
                 "system": RESIDENT_ID_SYSTEM, "value": id_number},
                {"use": "usual", "type": _concept(f"{HL7}/v2-0203", "MR", "Medical record number", "病案号"),
                 "system": f"{MRN_SYSTEM}/{inst.code}", "value": f"{inst.code[3:]}{fake.numerify('######')}",
                 "assigner": _ref("Organization", inst.id, inst.name)},
            ],
            "active": True,
            "name": [_person_name(fake, gender)],
            "telecom": [{"system": "phone", "value": fake.phone_number(), "use": "mobile"}],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "address": [_address(inst, line, "home")],
            "generalPractitioner": [_first_doctor(inst.id, pairs)],
            "managingOrganization": _ref("Organization", inst.id, inst.name),
        })
    return out


def _instant(day: date, hour: int, minute: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:{minute:02d}:00+08:00"


def _quantity(value: float, unit: str, code: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM, "code": code}


def _observation(kind: str, fake: Faker, severe: bool) -> dict:
    """code, category and value of one observation; ``severe`` shifts values out of the normal range."""
    if kind == "bp":
        sys_, dia = (fake.random_int(142, 172), fake.random_int(88, 102)) if severe else (
            fake.random_int(112, 136), fake.random_int(68, 84))
        return {
            "category": "vital-signs",
            "code": _concept(LOINC, "85354-9", "Blood pressure panel with all children optional", "血压"),
            "component": [
                {"code": _concept(LOINC, "8480-6", "Systolic blood pressure", "收缩压"),
                 "valueQuantity": _quantity(sys_, "mmHg", "mm[Hg]")},
                {"code": _concept(LOINC, "8462-4", "Diastolic blood pressure", "舒张压"),
                 "valueQuantity": _quantity(dia, "mmHg", "mm[Hg]")},
            ],
        }
    table = {
        "hr": ("vital-signs", "8867-4", "Heart rate", "心率", "次/分", "/min", (58, 96, 1)),
        "weight": ("vital-signs", "29463-7", "Body weight", "体重", "kg", "kg", (480, 860, 10)),
        "hba1c": ("laboratory", "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "糖化血红蛋白", "%", "%",
                  (65, 98, 10) if severe else (48, 60, 10)),
        "glucose": ("laboratory", "1558-6", "Fasting glucose [Moles/volume] in Serum or Plasma", "空腹血糖",
                    "mmol/L", "mmol/L", (70, 118, 10) if severe else (42, 60, 10)),
    }
    category, code, display, text, unit, ucum, (low, high, scale) = table[kind]
    raw = fake.random_int(low, high)
    value = raw if scale == 1 else round(raw / scale, 1)
    return {"category": category, "code": _concept(LOINC, code, display, text),
            "valueQuantity": _quantity(value, unit, ucum)}


OBSERVATION_CATEGORIES = {"vital-signs": ("Vital Signs", "生命体征"), "laboratory": ("Laboratory", "实验室检查")}
# Follow-up observations recorded for each diagnosis (two per condition).
OBSERVATIONS_FOR = {
    "htn": ("bp", "hr"), "t2dm": ("hba1c", "glucose"), "copd": ("hr", "weight"),
    "chd": ("bp", "hr"), "stroke": ("bp", "weight"),
}


def clinical_records(pats: list[dict]) -> tuple[list[dict], list[dict]]:
    """(Conditions, Observations): cond-001 ... and obs-001 ..."""
    fake = _faker(20240603)
    conditions, observations = [], []
    for c, (pat_no, key) in enumerate(CONDITION_PLAN, start=1):
        patient = pats[pat_no - 1]
        subject = _ref("Patient", patient["id"], patient["name"][0]["text"])
        doctor = patient["generalPractitioner"][0]  # copied into each resource below
        snomed, name, icd, icd_name = CONDITIONS[key]
        onset = date(fake.random_int(2012, 2022), fake.random_int(1, 12), fake.random_int(1, 28))
        conditions.append({
            "resourceType": "Condition",
            "id": f"cond-{c:03d}",
            "clinicalStatus": _concept(f"{HL7}/condition-clinical", "active", "Active", "活动"),
            "verificationStatus": _concept(f"{HL7}/condition-ver-status", "confirmed", "Confirmed", "已确诊"),
            "category": [_concept(f"{HL7}/condition-category", "problem-list-item", "Problem List Item", "问题列表")],
            "code": {"coding": [{"system": SNOMED, "code": snomed, "display": name},
                                {"system": ICD10, "code": icd, "display": icd_name}], "text": name},
            "subject": dict(subject),
            "onsetDateTime": onset.isoformat(),
            "recordedDate": (onset + timedelta(days=fake.random_int(0, 30))).isoformat(),
            "recorder": dict(doctor),
            "asserter": dict(doctor),
        })
        for kind in OBSERVATIONS_FOR[key]:
            day = date(2024, fake.random_int(1, 5), fake.random_int(1, 28))
            facts = _observation(kind, fake, severe=key in ("htn", "t2dm") or fake.boolean(30))
            category = facts.pop("category")
            observations.append({
                "resourceType": "Observation",
                "id": f"obs-{len(observations) + 1:03d}",
                "status": "final",
                "category": [_concept(f"{HL7}/observation-category", category, *OBSERVATION_CATEGORIES[category])],
                **facts,
                "subject": dict(subject),
                "effectiveDateTime": _instant(day, fake.random_int(8, 11), fake.random_int(0, 59)),
                "performer": [dict(doctor)],
            })
    return conditions, observations


# A modality of 平川县人民医院 allowed to send to the platform's DICOM service (``make run``):
# ``storescu -aet DEMO_MODALITY -aec TELEMED 127.0.0.1 11112 file.dcm``; C-MOVE sends to its port 11113.
DEMO_MODALITY = ("DEMO_MODALITY", "127.0.0.1", 11113, "org-county-1")


def dicom_endpoints() -> list[dict]:
    from telemed.imaging import endpoint_resource

    ae_title, host, port, org = DEMO_MODALITY
    return [{**endpoint_resource(ae_title, host, port, org, "平川县人民医院 CT (demo)"), "id": "ae-demo-modality"}]


def build_network() -> list[dict]:
    """Every demo resource, referenced resources before the resources that reference them."""
    pairs = doctors()
    pats = patients(pairs)
    conditions, observations = clinical_records(pats)
    return [*organizations(), *locations(), *healthcare_services(), *dicom_endpoints(),
            *(p for p, _ in pairs), *(r for _, r in pairs), *pats, *conditions,
            *observations]


# (username, display name, roles)
ACCOUNTS = [("admin", "平台管理员", ["platform-admin"])]
