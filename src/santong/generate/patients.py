"""One resident's record: Patient, consents, encounters, chronic-disease management and referrals.

Each patient draws from its own random stream (seed, index), so records do not depend on the
order they are generated in and N patients take N times as long as one.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from typing import Any

from santong.generate import codes
from santong.generate.common import (
    Resource,
    address,
    at,
    chinese_name,
    coding,
    concept,
    fhir_datetime,
    human_name,
    mobile,
    new_id,
    ref,
    weighted,
)
from santong.generate.community import Community, Site, Team
from santong.generate.identifiers import health_record_number, national_id

TASK_STATES = tuple(codes.TASK_FLOW)
# Ordinary visits: kind and weight.
VISIT_KINDS = (("outpatient", 55), ("checkup", 10), ("emergency", 8), ("inpatient", 7),
               ("home-visit", 8), ("home-bed", 4), ("telemedicine", 5))
AGE_BANDS = ((0, 6, 6), (7, 17, 10), (18, 34, 18), (35, 44, 13), (45, 59, 24), (60, 74, 19),
             (75, 95, 10))


class _Record:
    """Accumulates one patient's resources."""

    def __init__(self, community: Community, seed: int, index: int, as_of: date) -> None:
        self.c = community
        self.rng = random.Random(f"santong-patient/{seed}/{index}")
        self.index = index
        self.as_of = as_of
        self.out: list[Resource] = []
        self.referral_seq = 0

    def add(self, resource: Resource) -> Resource:
        resource["id"] = new_id(self.rng)
        # keep resourceType and id first in the JSON, as most servers write them
        ordered = {"resourceType": resource.pop("resourceType"), "id": resource.pop("id")}
        ordered.update(resource)
        self.out.append(ordered)
        return ordered

    def day_between(self, start: date, end: date) -> date:
        return start + timedelta(days=self.rng.randrange(max(1, (end - start).days)))

    # ---- the patient -------------------------------------------------------------------------

    def patient(self) -> None:
        rng, c = self.rng, self.c
        self.township = rng.randrange(1, len(c.townships) + 1)
        self.centre = c.townships[self.township - 1]
        self.clinic = rng.choice(c.villages[self.township])
        self.team: Team = c.team_for(self.township, self.clinic.village)
        low, high, _ = weighted(rng, AGE_BANDS)
        age = rng.randint(low, high)
        self.birth = date(self.as_of.year - age, rng.randint(1, 12), rng.randint(1, 28))
        if self.birth > self.as_of:
            self.birth = self.birth.replace(year=self.birth.year - 1)
        self.age = age
        gender = rng.choice(("male", "female"))
        self.gender = gender
        family, given = chinese_name(rng, gender)
        self.name = family + given
        area = weighted(rng, codes.BIRTHPLACES)[0]
        sequence = rng.randrange(0, 999, 2) + (1 if gender == "male" else 0)
        self.national_id = national_id(area, self.birth, sequence)
        record_no = health_record_number(codes.COUNTY[0], self.township, self.clinic.village,
                                         self.index % 99999 + 1)
        number, _letter, ethnic, _ = weighted(rng, codes.ETHNIC_GROUPS)
        identifiers: list[dict[str, Any]] = [
            {"use": "official",
             "type": concept(codes.V2_0203, "NI", "National unique individual identifier",
                             "居民身份证"),
             "system": codes.OID_NATIONAL_ID, "value": self.national_id},
            {"use": "usual", "system": codes.OID_HEALTH_RECORD, "value": record_no,
             "assigner": ref(self.centre.org, self.centre.name)},
        ]
        if rng.random() < 0.6:
            identifiers.append({"system": codes.OID_HEALTH_CARD,
                                "value": f"H{codes.COUNTY[0]}{self.index:011d}"})
        gb_code, gb_name = codes.GENDER_GB[gender]
        resource: Resource = {
            "resourceType": "Patient",
            "extension": [
                {"url": codes.EXT_GENDER_GB,
                 "valueCoding": coding(codes.OID_GENDER_GB, gb_code, gb_name)},
                {"url": codes.EXT_ETHNIC,
                 "valueCoding": coding(codes.OID_ETHNIC_GB, number, ethnic)},
            ],
            "identifier": identifiers,
            "active": True,
            "name": [human_name(family, given)],
            "telecom": [{"system": "phone", "value": mobile(rng), "use": "mobile"}],
            "gender": gender,
            "birthDate": self.birth.isoformat(),
            "address": [address(codes.TOWNSHIPS[self.township - 1][0],
                                self.clinic.village_name, rng)],
        }
        if age >= 20:
            gb, name, v3 = rng.choices(codes.MARITAL, weights=(10, 75, 10, 5))[0]
            resource["maritalStatus"] = {"coding": [coding(codes.V3_MARITAL, v3),
                                                    coding(codes.OID_MARITAL_GB, gb, name)],
                                         "text": name}
        self.signed = rng.random() < (0.9 if age >= 65 else 0.45)
        if self.signed:
            resource["generalPractitioner"] = [ref(self.team.leader,
                                                   self.team.leader["practitioner"]["display"])]
        resource["managingOrganization"] = ref(self.centre.org, self.centre.name)
        self.me = self.add(resource)
        self.me_ref = ref(self.me, self.name)

    def consents(self) -> None:
        rng, c = self.rng, self.c
        day = self.day_between(self.as_of - timedelta(days=3 * 365), self.as_of)
        self.add({
            "resourceType": "Consent", "status": "active",
            "scope": concept(codes.CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
            "category": [concept(codes.LOINC, "59284-0", "Patient Consent", "信息互通授权")],
            "patient": self.me_ref,
            "dateTime": fhir_datetime(at(day, rng)),
            "performer": [self.me_ref],
            "organization": [ref(c.alliance.org, c.alliance.name)],
            "policyRule": concept(codes.V3_ACT, "OPTIN", "opt-in"),
            "provision": {
                "type": "permit",
                "period": {"start": day.isoformat()},
                "actor": [{"role": concept(codes.PARTICIPANT_TYPE, "IRCP",
                                           "information recipient"),
                           "reference": ref(c.alliance.org, c.alliance.name)}],
                "purpose": [coding(codes.V3_ACT_REASON, "TREAT", "treatment")],
            },
        })
        if not self.signed:
            return
        start = self.day_between(self.as_of - timedelta(days=700), self.as_of)
        end = start + timedelta(days=365)
        self.add({
            "resourceType": "Consent",
            "identifier": [{"system": codes.OID_CONSENT_NO,
                            "value": f"QY{start:%Y%m%d}{self.index:07d}"}],
            "status": "active" if end >= self.as_of else "inactive",
            "scope": concept(codes.CONSENT_SCOPE, "treatment", "Treatment"),
            "category": [concept(codes.LOINC, "59284-0", "Patient Consent", "家庭医生签约")],
            "patient": self.me_ref,
            "dateTime": fhir_datetime(at(start, rng)),
            "performer": [self.me_ref],
            "organization": [ref(self.centre.org, self.centre.name)],
            # FHIR's ppc-1: a policy or a policyRule (the guide's contract example's policy)
            "policy": [{"uri": f"{codes.LOCAL}/policy/family-doctor-contract-basic"}],
            "sourceAttachment": {"contentType": "application/pdf",
                                 "title": "家庭医生签约服务协议（基础包）"},
            "provision": {
                "type": "permit",
                "period": {"start": start.isoformat(), "end": end.isoformat()},
                "actor": [{"role": concept(codes.PARTICIPANT_TYPE, "PRCP", "primary information "
                                           "recipient"),
                           "reference": ref(self.team.care_team, self.team.care_team["name"])}],
            },
        })

    # ---- encounters --------------------------------------------------------------------------

    def encounter(self, kind: str, site: Site, performer: Resource, start: datetime, *,
                  status: str = "finished", hours: float = 0.3, mode: str | None = None,
                  reason: str | None = None, based_on: Resource | None = None,
                  admit_source: tuple[str, str, str] | None = None,
                  department: Site | None = None) -> Resource:
        type_code, type_name, klass, patient_type = codes.ENCOUNTER_KINDS[kind]
        if mode == "home":
            klass = "HH"
        elif mode == "phone":
            klass = "VR"
        provider = department or site
        inpatient = klass == "IMP"
        number_system = codes.OID_INPATIENT_NO if inpatient else codes.OID_OUTPATIENT_NO
        resource: Resource = {
            "resourceType": "Encounter",
            "identifier": [{"system": number_system,
                            "value": f"{'ZY' if inpatient else 'MZ'}{start:%y%m%d}"
                                     f"{self.rng.randrange(10**6):06d}",
                            "assigner": ref(site.org, site.name)}],
            "status": status,
            "class": coding(codes.V3_ACT, klass, codes.V3_CLASS_NAMES[klass]),
            "type": [{"coding": [coding(codes.CS_ENCOUNTER_TYPE, type_code, type_name),
                                 coding(codes.OID_PATIENT_TYPE, *patient_type)],
                      "text": type_name}],
            "subject": self.me_ref,
        }
        if mode:
            code, name = {"clinic": ("1", "门诊"), "home": ("2", "家庭"),
                          "phone": ("3", "电话")}[mode]
            resource["type"].append(concept(codes.OID_FOLLOWUP_MODE, code, name))
        if based_on is not None:
            resource["basedOn"] = [ref(based_on)]
        resource["participant"] = [{"individual": ref(performer,
                                                      performer["practitioner"]["display"])}]
        period = {"start": fhir_datetime(start)}
        if status == "finished":
            period["end"] = fhir_datetime(start + timedelta(hours=hours))
        resource["period"] = period
        if reason:
            resource["reasonCode"] = [{"text": reason}]
        if inpatient:
            code, name, fhir = admit_source or ("2", "门诊", "outp")
            hospitalization: dict[str, Any] = {"admitSource": {
                "coding": [coding(codes.OID_ADMIT_SOURCE, code, name),
                           coding(codes.ADMIT_SOURCE, fhir)], "text": name}}
            if status == "finished":
                hospitalization["dischargeDisposition"] = {"text": "医嘱离院"}
            resource["hospitalization"] = hospitalization
        resource["serviceProvider"] = ref(provider.org, provider.name)
        return self.add(resource)

    def visits(self) -> None:
        rng, c = self.rng, self.c
        self.inpatient_stays: list[Resource] = []
        for _ in range(rng.randint(1, 4)):
            kind = weighted(rng, VISIT_KINDS)[0]
            day = self.day_between(self.as_of - timedelta(days=2 * 365), self.as_of)
            when = at(day, rng)
            reason = rng.choice(codes.COMPLAINTS)
            if kind == "outpatient":
                site = self.clinic if rng.random() < 0.5 else self.centre
                self.encounter(kind, site, rng.choice(site.roles), when, reason=reason)
            elif kind == "checkup":
                self.encounter(kind, self.centre, rng.choice(self.centre.roles), when,
                               hours=1.5, reason="国家基本公共卫生服务健康体检")
            elif kind == "emergency":
                dept = c.departments["2000"]
                self.encounter(kind, c.hospital, rng.choice(dept.roles), at(day, rng, 0, 23),
                               hours=3, reason=reason, department=dept)
            elif kind == "inpatient":
                dept = c.departments[rng.choice(("0301", "0304", "0500", "0700"))]
                recent = (self.as_of - day).days < 5
                self.inpatient_stays.append(self.encounter(
                    kind, c.hospital, rng.choice(dept.roles), when,
                    status="in-progress" if recent else "finished",
                    hours=24 * rng.randint(3, 12), reason=reason, department=dept,
                    admit_source=rng.choice((("1", "急诊", "emd"), ("2", "门诊", "outp")))))
            elif kind == "home-visit":
                self.encounter(kind, self.centre, self.team.leader, when, hours=1,
                               reason="家庭医生上门服务")
            elif kind == "home-bed":
                self.encounter(kind, self.centre, self.team.leader, when,
                               hours=24 * rng.randint(7, 30), reason="家庭病床：" + reason)
            else:
                self.encounter(kind, c.hospital, self.team.specialist, when, hours=0.5,
                               reason="远程会诊：" + reason)
        if rng.random() < 0.05:  # a visit booked for next week
            self.encounter("outpatient", self.centre, rng.choice(self.centre.roles),
                           at(self.as_of + timedelta(days=rng.randint(1, 7)), rng),
                           status="planned", reason="复诊")

    # ---- chronic disease management ----------------------------------------------------------

    def chronic(self) -> None:
        rng = self.rng
        self.last_followup: tuple[Resource, Resource, bool] | None = None
        self.conditions: list[Resource] = []
        if self.age < 35:
            return
        p_ht, p_dm = (0.1, 0.04) if self.age < 45 else (0.22, 0.1) if self.age < 60 else (0.4,
                                                                                          0.18)
        if rng.random() < p_ht:
            self.manage("hypertension")
        if rng.random() < p_dm:
            self.manage("diabetes")

    def manage(self, disease: str) -> None:
        rng, team = self.rng, self.team
        hypertension = disease == "hypertension"
        onset = self.day_between(max(self.birth + timedelta(days=35 * 365),
                                     self.as_of - timedelta(days=15 * 365)),
                                 self.as_of - timedelta(days=200))
        leader = team.leader
        icd, icd_name, sct, sct_name = (("I10", "原发性高血压", "38341003", "Hypertensive disorder")
                                        if hypertension else
                                        ("E11.9", "2型糖尿病", "44054006", "Type 2 diabetes "
                                         "mellitus"))
        condition = self.add({
            "resourceType": "Condition",
            "clinicalStatus": concept(codes.COND_CLINICAL, "active", "Active"),
            "verificationStatus": concept(codes.COND_VERIFICATION, "confirmed", "Confirmed"),
            "category": [concept(codes.COND_CATEGORY, "problem-list-item", "Problem List Item")],
            "code": {"coding": [coding(codes.OID_ICD10, icd, icd_name),
                                coding(codes.SNOMED, sct, sct_name)], "text": icd_name},
            "subject": self.me_ref,
            "onsetDateTime": onset.isoformat(),
            "recordedDate": onset.isoformat(),
            "recorder": ref(leader, leader["practitioner"]["display"]),
        })
        self.conditions.append(condition)
        if hypertension:
            target = {"measure": concept(codes.LOINC, "8480-6", "Systolic blood pressure"),
                      "detailQuantity": {"value": 140, "comparator": "<", "unit": "mmHg",
                                         "system": codes.UCUM, "code": "mm[Hg]"}}
            goal_text = "血压控制在140/90 mmHg以下"
        else:
            target = {"measure": concept(codes.LOINC, "14771-0", "Fasting glucose"),
                      "detailQuantity": {"value": 7.0, "comparator": "<", "unit": "mmol/L",
                                         "system": codes.UCUM, "code": "mmol/L"}}
            goal_text = "空腹血糖控制在7.0 mmol/L以下"
        goal = self.add({
            "resourceType": "Goal", "lifecycleStatus": "active",
            "description": {"text": goal_text}, "subject": self.me_ref,
            "target": [target], "addresses": [ref(condition)],
        })
        title = "高血压患者健康管理" if hypertension else "2型糖尿病患者健康管理"
        careplan = self.add({
            "resourceType": "CarePlan",
            "identifier": [{"system": codes.SID_CAREPLAN_NO,
                            "value": f"GL{onset:%Y%m%d}{self.index:07d}{disease[0].upper()}"}],
            "status": "active", "intent": "plan",
            "category": [concept(codes.SNOMED, "734163000", "Care plan"),
                         concept(codes.CS_CAREPLAN_KIND, disease, title)],
            "title": title,
            "description": "国家基本公共卫生服务慢性病患者健康管理：每年至少4次面对面随访",
            "subject": self.me_ref,
            "period": {"start": onset.isoformat()},
            "created": fhir_datetime(at(onset, rng)),
            "author": ref(leader, leader["practitioner"]["display"]),
            "careTeam": [ref(team.care_team, team.care_team["name"])],
            "addresses": [ref(condition)],
            "goal": [ref(goal)],
            "activity": [],
        })
        # quarterly follow-ups over the last year (fewer if diagnosed recently)
        baseline_sbp = rng.gauss(152, 12)
        baseline_glucose = rng.gauss(8.2, 1.3)
        followups: list[Resource] = []
        for quarter in range(4, 0, -1):
            day = self.as_of - timedelta(days=91 * quarter - rng.randint(0, 20))
            if day <= onset:
                continue
            mode = rng.choices(("clinic", "home", "phone"), weights=(70, 20, 10))[0]
            performer = leader if rng.random() < 0.6 else self.clinic.roles[0]
            site = self.centre if performer is leader else self.clinic
            visit = self.encounter("followup", site, performer, at(day, rng), mode=mode,
                                   reason=title + "随访")
            followups.append(visit)
            sbp = round(baseline_sbp - rng.uniform(0, 14) + rng.gauss(0, 6))
            dbp = round(sbp * 0.58 + rng.gauss(4, 5))
            controlled = sbp < 140 and dbp < 90
            when = visit["period"]["start"]
            performer_ref = ref(performer, performer["practitioner"]["display"])
            common = {"basedOn": [ref(careplan)], "status": "final"}
            bp = self.add({
                "resourceType": "Observation", **common,
                "category": [concept(codes.OBS_CATEGORY, "vital-signs", "Vital Signs")],
                "code": {"coding": [coding(codes.LOINC, "85354-9", "Blood pressure panel")],
                         "text": "血压"},
                "subject": self.me_ref, "encounter": ref(visit), "effectiveDateTime": when,
                "performer": [performer_ref],
                "component": [
                    {"code": {"coding": [coding(codes.LOINC, "8480-6", "Systolic blood pressure"),
                                         coding(codes.OID_DATA_ELEMENT, "DE04.10.174.00",
                                                "收缩压")]},
                     "valueQuantity": {"value": sbp, "unit": "mmHg", "system": codes.UCUM,
                                       "code": "mm[Hg]"}},
                    {"code": {"coding": [coding(codes.LOINC, "8462-4",
                                                "Diastolic blood pressure"),
                                         coding(codes.OID_DATA_ELEMENT, "DE04.10.176.00",
                                                "舒张压")]},
                     "valueQuantity": {"value": dbp, "unit": "mmHg", "system": codes.UCUM,
                                       "code": "mm[Hg]"}},
                ],
            })
            key = bp
            if not hypertension:
                glucose = round(max(4.0, baseline_glucose - rng.uniform(0, 1.5)
                                    + rng.gauss(0, 0.6)), 1)
                controlled = glucose < 7.0
                key = self.add({
                    "resourceType": "Observation", **common,
                    "category": [concept(codes.OBS_CATEGORY, "laboratory", "Laboratory")],
                    "code": {"coding": [coding(codes.LOINC, "14771-0",
                                               "Fasting glucose [Moles/volume] in Serum or "
                                               "Plasma"),
                                        coding(codes.OID_DATA_ELEMENT, "DE04.50.037.00",
                                               "空腹血糖值")], "text": "空腹血糖"},
                    "subject": self.me_ref, "encounter": ref(visit), "effectiveDateTime": when,
                    "performer": [performer_ref],
                    "valueQuantity": {"value": glucose, "unit": "mmol/L", "system": codes.UCUM,
                                      "code": "mmol/L"},
                })
            result = ("1", "控制满意") if controlled else rng.choice(
                (("2", "控制不满意"), ("2", "控制不满意"), ("3", "不良反应"), ("4", "并发症")))
            self.add({
                "resourceType": "Observation", **common,
                "category": [concept(codes.OBS_CATEGORY, "survey", "Survey")],
                "code": {"coding": [coding(codes.OID_DATA_ELEMENT, "DE05.10.066.00",
                                           "此次随访分类")], "text": "此次随访分类"},
                "subject": self.me_ref, "encounter": ref(visit), "effectiveDateTime": when,
                "performer": [performer_ref],
                "valueCodeableConcept": concept(codes.CS_FOLLOWUP_RESULT, *result),
                "derivedFrom": [ref(key)],
            })
            self.last_followup = (visit, key, controlled)
        careplan["activity"] = [{
            "outcomeReference": [ref(v) for v in followups],
            "detail": {
                "kind": "Appointment",
                "code": concept(codes.OID_FOLLOWUP_MODE, "1", "门诊"),
                "reasonReference": [ref(condition)],
                "goal": [ref(goal)],
                "status": "in-progress",
                "scheduledTiming": {"repeat": {"frequency": 1, "period": 3, "periodUnit": "mo"}},
                "performer": [ref(leader, leader["practitioner"]["display"])],
                "description": "每季度面对面随访1次，测量血压" + ("" if hypertension
                                                                 else "、空腹血糖"),
            }}]
        if careplan["activity"][0]["outcomeReference"] == []:
            del careplan["activity"][0]["outcomeReference"]
        # the next follow-up is booked
        next_day = self.as_of + timedelta(days=rng.randint(3, 60))
        self.appointment("booked", at(next_day, rng), self.centre, leader, title + "随访")

    # ---- appointments and referrals ----------------------------------------------------------

    def appointment(self, status: str, start: datetime, site: Site, performer: Resource,
                    description: str, based_on: Resource | None = None) -> Resource:
        resource: Resource = {
            "resourceType": "Appointment",
            "identifier": [{"system": codes.SID_APPOINTMENT_NO,
                            "value": f"YY{start:%Y%m%d}{self.rng.randrange(10**6):06d}"}],
            "status": status,
        }
        if status == "cancelled":
            resource["cancelationReason"] = {"text": "患者取消"}
        resource["serviceType"] = [{"text": description}]
        resource["description"] = description
        if status not in ("proposed", "waitlist"):
            resource["start"] = fhir_datetime(start)
            resource["end"] = fhir_datetime(start + timedelta(minutes=15))
        resource["created"] = fhir_datetime(start - timedelta(days=self.rng.randint(1, 14)))
        if based_on is not None:
            resource["basedOn"] = [ref(based_on)]
        pending = status in ("proposed", "pending", "waitlist")
        resource["participant"] = [
            {"actor": self.me_ref, "required": "required", "status": "accepted"},
            {"actor": ref(performer, performer["practitioner"]["display"]),
             "required": "required", "status": "needs-action" if pending else "accepted"},
            {"actor": ref(site.org, site.name), "status": "accepted"},
        ]
        return self.add(resource)

    def referral(self, upward: bool, state: str, reason: str, origin: Resource | None,
                 evidence: Resource | None) -> None:
        rng, c = self.rng, self.c
        self.referral_seq += 1
        sr_status, business, business_name = codes.TASK_FLOW[state]
        if upward:
            requester = self.team.leader
            dept = c.departments[rng.choice(("0301", "0304", "0302"))]
            receiver, receiver_site, receiver_role = dept, c.hospital, rng.choice(dept.roles)
        else:
            requester = rng.choice(c.hospital.roles)
            receiver = receiver_site = self.centre
            receiver_role = self.team.leader
        days_ago = rng.randint(0, 20) if state not in ("completed", "rejected", "failed",
                                                       "cancelled") else rng.randint(10, 600)
        authored = at(self.as_of - timedelta(days=days_ago), rng)
        number = f"ZZ{authored:%Y%m%d}{self.index:07d}{self.referral_seq:02d}"
        direction = ("up", "上转") if upward else ("down", "下转")
        sr: Resource = {
            "resourceType": "ServiceRequest",
            "identifier": [{"type": concept("http://terminology.hl7.org/CodeSystem/v2-0203",
                                            "PLAC", "Placer Identifier"),
                            "system": codes.SID_REFERRAL_NO, "value": number}],
            "status": sr_status,
            "intent": "order" if upward else "plan",
            "category": [concept(codes.CS_REFERRAL_DIRECTION, *direction)],
            "priority": "urgent" if "胸痛" in reason else "routine",
            "code": {"coding": [coding(codes.SNOMED, "3457005", "Patient referral")],
                     "text": "门诊转诊" if upward else "康复转诊"},
            "subject": self.me_ref,
        }
        if origin is not None:
            sr["encounter"] = ref(origin)
        sr["occurrenceDateTime"] = fhir_datetime(authored + timedelta(days=rng.randint(1, 7)))
        sr["authoredOn"] = fhir_datetime(authored)
        sr["requester"] = ref(requester, requester["practitioner"]["display"])
        sr["performer"] = [ref(receiver.org, receiver.name)]
        sr["reasonCode"] = [{"text": reason}]
        if self.conditions:
            sr["reasonReference"] = [ref(self.conditions[0])]
        if evidence is not None:
            sr["supportingInfo"] = [ref(evidence)]
        sr = self.add(sr)
        task: Resource = {"resourceType": "Task"}
        if state not in ("draft", "requested"):
            # copied in with the referral under way (santong.workflow.referral.MIGRATED)
            task["meta"] = {"tag": [{"system": codes.LOCAL + "/CodeSystem/workflow-control",
                                     "code": "migrated"}]}
        task["identifier"] = [{"system": codes.SID_REFERRAL_NO, "value": number}]
        task["status"] = state
        if state == "rejected":
            task["statusReason"] = {"text": rng.choice(("床位不足", "超出诊疗范围"))}
        task.update({
            "businessStatus": concept(codes.CS_REFERRAL_STATUS, business, business_name),
            "intent": "order",
            "priority": sr["priority"],
            "code": concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill",
                            "Fulfill the focal request"),
            "description": f"{direction[1]}：{reason}",
            "focus": ref(sr),
            "for": self.me_ref,
            "authoredOn": sr["authoredOn"],
            "lastModified": fhir_datetime(authored + timedelta(hours=rng.randint(1, 72))),
            "requester": sr["requester"],
            "owner": ref(receiver_site.org, receiver_site.name),
        })
        arrival = None
        if state in ("ready", "in-progress", "completed"):
            start = authored + timedelta(days=rng.randint(1, 7))
            appointment_status = {"ready": "booked", "in-progress": "arrived",
                                  "completed": "fulfilled"}[state]
            self.appointment(appointment_status, start, receiver_site, receiver_role,
                             direction[1] + "就诊", based_on=sr)
            if state != "ready":
                arrival = self.encounter(
                    "outpatient", receiver_site, receiver_role, start,
                    status="finished" if state == "completed" else "in-progress",
                    reason=reason, based_on=sr,
                    department=receiver if receiver is not receiver_site else None)
                task["executionPeriod"] = {"start": arrival["period"]["start"]}
        if arrival is not None and state == "completed":
            task["executionPeriod"]["end"] = arrival["period"]["end"]
            task["output"] = [{"type": {"text": "回转单"}, "valueReference": ref(arrival)}]
        self.add(task)

    def referrals(self) -> None:
        rng = self.rng
        if self.last_followup is not None and not self.last_followup[2] and rng.random() < 0.5:
            visit, evidence, _ = self.last_followup
            state = rng.choices(TASK_STATES, weights=(1, 3, 2, 2, 1, 2, 1, 2, 1, 1, 8, 1))[0]
            self.referral(True, state, rng.choice(codes.REFERRAL_REASONS_UP[:2]), visit, evidence)
        for stay in self.inpatient_stays:
            if stay["status"] == "finished" and rng.random() < 0.3:
                self.referral(False, "completed", rng.choice(codes.REFERRAL_REASONS_DOWN), stay,
                              None)
        if self.index % 4 == 0:
            # every workflow state appears in any 48 consecutive patients
            state = TASK_STATES[(self.index // 4) % len(TASK_STATES)]
            upward = rng.random() < 0.7
            reasons = codes.REFERRAL_REASONS_UP if upward else codes.REFERRAL_REASONS_DOWN
            self.referral(upward, state, rng.choice(reasons), None, None)
        if self.index % 3 == 0:
            # and every appointment status in any 27
            status = codes.APPOINTMENT_STATUSES[(self.index // 3) % len(codes.APPOINTMENT_STATUSES)]
            future = status in ("proposed", "pending", "booked", "waitlist")
            day = self.as_of + timedelta(days=rng.randint(1, 30) if future else
                                         -rng.randint(1, 300))
            if status in ("arrived", "checked-in"):
                day = self.as_of
            self.appointment(status, at(day, rng), self.centre, rng.choice(self.centre.roles),
                             "全科门诊预约")


def patient_record(community: Community, seed: int, index: int, as_of: date) -> list[Resource]:
    """The resources of patient number `index` (1-based); the Patient comes first."""
    record = _Record(community, seed, index, as_of)
    record.patient()
    record.consents()
    record.visits()
    record.chronic()
    record.referrals()
    return record.out
