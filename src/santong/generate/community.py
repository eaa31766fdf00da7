"""The county medical community (县域医共体): organisations, staff, roles and family-doctor teams.

The community is a function of the seed and of the number of patients (village clinics and
staff scale with the population); patients are generated against it one by one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date

from santong.generate import codes
from santong.generate.common import (
    Resource,
    address,
    chinese_name,
    concept,
    human_name,
    mobile,
    new_id,
    ref,
)
from santong.generate.identifiers import national_id, org_code, uscc


@dataclass
class Site:
    org: Resource
    kind: str  # alliance | hospital | tcm | department | township | community | village
    name: str
    township: int = 0  # 1-based index into codes.TOWNSHIPS, 0 at county level
    village: int = 0  # 1-based within its township, 0 unless a village clinic
    village_name: str | None = None
    roles: list[Resource] = field(default_factory=list)  # doctors' PractitionerRoles here


@dataclass
class Team:
    care_team: Resource
    site: Site  # the township centre that runs it
    leader: Resource  # PractitionerRole of the team leader
    villages: list[int]
    specialist: Resource  # the county specialist's PractitionerRole at the township centre


@dataclass
class Community:
    resources: list[Resource]
    alliance: Site
    hospital: Site
    tcm: Site
    departments: dict[str, Site]
    townships: list[Site]
    villages: dict[int, list[Site]]
    teams: dict[int, list[Team]]

    def team_for(self, township: int, village: int) -> Team:
        for team in self.teams[township]:
            if village in team.villages:
                return team
        return self.teams[township][0]


class _Builder:
    def __init__(self, rng: random.Random, patients: int, as_of: date) -> None:
        self.rng = rng
        self.patients = patients
        self.as_of = as_of
        self.resources: list[Resource] = []
        self.staff_seq = 0
        self.practitioner_of: dict[str, Resource] = {}  # PractitionerRole id → Practitioner

    def add(self, resource: Resource) -> Resource:
        self.resources.append(resource)
        return resource

    def organization(self, name: str, ws218: str | None, township: str | None, *,
                     kind_code: tuple[str, str] | None = None, part_of: Resource | None = None,
                     registration: str = "12", village: str | None = None) -> Resource:
        rng = self.rng
        org: Resource = {"resourceType": "Organization", "id": new_id(rng)}
        identifiers = []
        if part_of is None:
            code9 = org_code(rng.choice("4M") + f"{rng.randrange(10**7):07d}")
            identifiers = [
                {"use": "official", "system": codes.SID_USCC,
                 "value": uscc(registration, codes.COUNTY[0], code9)},
                {"system": codes.OID_ORG, "value": code9},
            ]
        else:
            identifiers = [{"system": codes.OID_DEPARTMENT,
                            "value": f"{kind_code[0] if kind_code else '0000'}"}]
        org["identifier"] = identifiers
        org["active"] = True
        types = []
        if ws218:
            types.append(concept(codes.CS_WS218, ws218, codes.WS218[ws218]))
        if kind_code:
            system = codes.CS_DEPARTMENT if part_of is not None else codes.CS_ORG_KIND
            types.append(concept(system, kind_code[0], kind_code[1]))
        org["type"] = types
        org["name"] = name
        org["telecom"] = [{"system": "phone", "value": f"0571-64{rng.randrange(10**6):06d}",
                           "use": "work"}]
        if part_of is None:
            org["address"] = [address(township or "桐君街道", village, rng, use="work")]
        else:
            org["partOf"] = ref(part_of, part_of["name"])
        return self.add(org)

    def practitioner(self, title: tuple[str, str], category: str,
                     birth_years: tuple[int, int] = (1965, 1995)) -> Resource:
        rng = self.rng
        self.staff_seq += 1
        gender = rng.choice(("male", "female"))
        family, given = chinese_name(rng, gender)
        birth = date(rng.randint(*birth_years), rng.randint(1, 12), rng.randint(1, 28))
        sequence = rng.randrange(0, 999, 2) + (1 if gender == "male" else 0)
        return self.add({
            "resourceType": "Practitioner", "id": new_id(rng),
            "identifier": [
                {"use": "official",
                 "type": concept(codes.V2_0203, "NI", "National unique individual identifier",
                                 "居民身份证"),
                 "system": codes.OID_NATIONAL_ID,
                 "value": national_id(codes.COUNTY[0], birth, sequence)},
                {"system": codes.OID_STAFF, "value": f"YGT{self.staff_seq:06d}"},
            ],
            "active": True,
            "name": [human_name(family, given)],
            "telecom": [{"system": "phone", "value": mobile(rng), "use": "mobile"}],
            "gender": gender,
            "birthDate": birth.isoformat(),
            "qualification": [
                {"code": concept(codes.CS_TITLE_GB8561, *title)},
                {"code": concept(codes.CS_STAFF_CATEGORY, category,
                                 codes.STAFF_CATEGORY[category])},
            ],
        })

    def role(self, practitioner: Resource, site: Site, category: str,
             specialty: tuple[str, str] | None = None, start: date | None = None,
             secondment: bool = False) -> Resource:
        rng = self.rng
        role: Resource = {
            "resourceType": "PractitionerRole", "id": new_id(rng), "active": True,
            "period": {"start": (start or date(rng.randint(2008, 2022), rng.randint(1, 12),
                                                1)).isoformat()},
            "practitioner": ref(practitioner, practitioner["name"][0]["text"]),
            "organization": ref(site.org, site.name),
            "code": [concept(codes.CS_STAFF_CATEGORY, category, codes.STAFF_CATEGORY[category])],
        }
        self.practitioner_of[role["id"]] = practitioner
        if specialty:
            role["specialty"] = [concept(codes.CS_DEPARTMENT, *specialty)]
        if secondment:  # 专家下沉坐诊: one day a week at the township centre
            role["period"]["end"] = date(self.as_of.year + 1, 12, 31).isoformat()
            role["availableTime"] = [{"daysOfWeek": [rng.choice(("tue", "wed", "thu"))],
                                      "availableStartTime": "08:30:00",
                                      "availableEndTime": "11:30:00"}]
        return self.add(role)

    def affiliation(self, lead: Site, member: Site, network: Site, code: str,
                    display: str) -> Resource:
        return self.add({
            "resourceType": "OrganizationAffiliation", "id": new_id(self.rng), "active": True,
            "period": {"start": "2019-01-01"},
            "organization": ref(lead.org, lead.name),
            "participatingOrganization": ref(member.org, member.name),
            "network": [ref(network.org, network.name)],
            "code": [concept(codes.CS_AFFILIATION, code, display)],
        })


def build_community(seed: int, patients: int, as_of: date) -> Community:
    rng = random.Random(f"santong-community/{seed}/{patients}")
    b = _Builder(rng, patients, as_of)
    county = codes.COUNTY[1]

    alliance = Site(b.organization(f"{county}县域医疗卫生服务共同体", None, "桐君街道",
                                   kind_code=("alliance", "医共体")), "alliance",
                    f"{county}县域医疗卫生服务共同体")
    hospital = Site(b.organization(f"{county}人民医院", "A100", "桐君街道",
                                   kind_code=("lead-hospital", "牵头医院")), "hospital",
                    f"{county}人民医院")
    tcm = Site(b.organization(f"{county}中医院", "A210", "城南街道"), "tcm", f"{county}中医院")
    departments: dict[str, Site] = {}
    for code, name in codes.DEPARTMENTS:
        org = b.organization(name, None, None, kind_code=(code, name), part_of=hospital.org)
        departments[code] = Site(org, "department", name)
    b.affiliation(alliance, hospital, alliance, "lead", "牵头单位")
    b.affiliation(hospital, tcm, alliance, "member", "成员单位")

    # County doctors by department; 8-person core per department, more with the population.
    per_department = 3 + patients // 5000
    for code, name in codes.DEPARTMENTS:
        for _ in range(per_department):
            title = codes.TITLES[rng.choice((0, 1, 1, 2, 2, 2, 3, 3))]
            doctor = b.practitioner(title, "11")
            role = b.role(doctor, hospital, "11", (code, name))
            departments[code].roles.append(role)
            hospital.roles.append(role)
    for _ in range(2 + patients // 10000):
        doctor = b.practitioner(codes.TITLES[rng.choice((1, 2, 3))], "11")
        tcm.roles.append(b.role(doctor, tcm, "11", ("0302", "全科医学科")))

    villages_per_township = max(1, min(30, round(patients / (len(codes.TOWNSHIPS) * 400))))
    townships: list[Site] = []
    villages: dict[int, list[Site]] = {}
    teams: dict[int, list[Team]] = {}
    specialists = [r for code in ("0301", "0304", "0302") for r in departments[code].roles]
    for t, (tname, urban, central) in enumerate(codes.TOWNSHIPS, start=1):
        if urban:
            ws218, site_name, kind = "B100", f"{county}{tname}社区卫生服务中心", "community"
        else:
            ws218 = "C210" if central else "C220"
            site_name, kind = f"{county}{tname}{'中心' if central else ''}卫生院", "township"
        centre = Site(b.organization(site_name, ws218, tname), kind, site_name, township=t)
        townships.append(centre)
        b.affiliation(hospital, centre, alliance, "member", "成员单位")
        gps = [b.role(b.practitioner(codes.TITLES[rng.choice((2, 3, 3, 4))], "11"), centre, "11",
                      ("0302", "全科医学科"))
               for _ in range(2 + patients // 8000)]
        centre.roles.extend(gps)
        nurse = b.role(b.practitioner(("254", "护师"), "21"), centre, "21")
        public_health = b.role(b.practitioner(codes.TITLES[3], "11"), centre, "11")
        villages[t] = []
        used: set[str] = set()
        for v in range(1, villages_per_township + 1):
            while True:
                vname = (rng.choice(codes.VILLAGE_STEMS) + rng.choice(codes.VILLAGE_STEMS)
                         + rng.choice(codes.VILLAGE_SUFFIXES))
                if vname not in used:
                    used.add(vname)
                    break
            clinic_name = f"{tname}{vname}卫生室"
            clinic = Site(b.organization(clinic_name, "D600", tname, registration="52",
                                         village=vname),
                          "village", clinic_name, township=t, village=v, village_name=vname)
            clinic.roles.append(b.role(b.practitioner(codes.TITLES[4], "60", (1960, 1990)),
                                       clinic, "60"))
            villages[t].append(clinic)
            b.affiliation(centre, clinic, alliance, "integrated", "乡村一体化管理")
        teams[t] = []
        team_count = max(1, min(len(gps), (villages_per_township + 3) // 4))
        for k in range(team_count):
            covered = [v for v in range(1, villages_per_township + 1) if v % team_count == k]
            leader = gps[k]
            expert = rng.choice(specialists)
            specialty = expert["specialty"][0]["coding"][0]
            seconded = b.role(b.practitioner_of[expert["id"]], centre, "11",
                              (specialty["code"], specialty["display"]),
                              start=date(as_of.year - 1, 1, 1), secondment=True)
            members = [(leader, "leader"), (nurse, "nurse"), (public_health, "public-health"),
                       (seconded, "specialist")]
            members += [(villages[t][v - 1].roles[0], "village") for v in covered]
            name = f"{tname}家庭医生团队{k + 1}"
            care_team = b.add({
                "resourceType": "CareTeam", "id": new_id(rng), "status": "active",
                "category": [concept(codes.CS_TEAM_CATEGORY, "family-doctor",
                                     "家庭医生签约服务团队")],
                "name": name,
                "period": {"start": f"{as_of.year - 3}-01-01"},
                "participant": [
                    {"role": [concept(codes.CS_TEAM_ROLE, role_code,
                                      codes.TEAM_ROLES[role_code])],
                     # a PractitionerRole names its organization: FHIR's ctm-1 allows
                     # onBehalfOf only for Practitioner members
                     "member": ref(member, member["practitioner"]["display"])}
                    for member, role_code in members
                ],
                "managingOrganization": [ref(centre.org, centre.name),
                                         ref(hospital.org, hospital.name)],
            })
            teams[t].append(Team(care_team, centre, leader, covered, seconded))
    return Community(b.resources, alliance, hospital, tcm, departments, townships, villages,
                     teams)
