"""Code systems, identifier systems and the small reference tables the generator draws from.

National OIDs and code values come from shared/domain/three-connections-standards.md. Where no
national system exists (USCC, WS 218, referral direction, task business status…), a local
system under LOCAL is used; LOCAL is a placeholder canonical (example.org, RFC 2606) until the
three-connections profiles in fhir_profiles/ fix the project's own canonical base.
"""

from __future__ import annotations

LOCAL = "http://santong.example.org/fhir"
CS = LOCAL + "/CodeSystem/"
SD = LOCAL + "/StructureDefinition/"
SID = LOCAL + "/sid/"

# Identifier systems (§2.2)
OID_HEALTH_RECORD = "urn:oid:2.16.156.10011.1.2"
OID_NATIONAL_ID = "urn:oid:2.16.156.10011.1.3"
OID_STAFF = "urn:oid:2.16.156.10011.1.4"
OID_ORG = "urn:oid:2.16.156.10011.1.5"
OID_OUTPATIENT_NO = "urn:oid:2.16.156.10011.1.11"
OID_INPATIENT_NO = "urn:oid:2.16.156.10011.1.12"
OID_HEALTH_CARD = "urn:oid:2.16.156.10011.1.19"
OID_DEPARTMENT = "urn:oid:2.16.156.10011.1.26"
OID_CONSENT_NO = "urn:oid:2.16.156.10011.1.34"
SID_USCC = SID + "uscc"
SID_REFERRAL_NO = SID + "referral-number"
SID_APPOINTMENT_NO = SID + "appointment-number"
SID_CAREPLAN_NO = SID + "careplan-number"

# Code systems (§2.3, §3)
OID_GENDER_GB = "urn:oid:2.16.156.10011.2.3.3.4"  # GB/T 2261.1
OID_MARITAL_GB = "urn:oid:2.16.156.10011.2.3.3.5"  # GB/T 2261.2
OID_ETHNIC_GB = "urn:oid:2.16.156.10011.2.3.3.3"  # GB 3304
OID_DIVISION = "urn:oid:2.16.156.10011.2.3.3.2"  # GB/T 2260
OID_ICD10 = "urn:oid:2.16.156.10011.2.3.3.11"
OID_PATIENT_TYPE = "urn:oid:2.16.156.10011.2.3.1.271"  # CV09.00.404
OID_ADMIT_SOURCE = "urn:oid:2.16.156.10011.2.3.1.270"  # 入院途径
OID_FOLLOWUP_MODE = "urn:oid:2.16.156.10011.2.3.1.183"  # CV06.00.207
OID_DATA_ELEMENT = "urn:oid:2.16.156.10011.2.2.1"  # WS 363 data elements
CS_WS218 = CS + "ws218-institution-type"
CS_TITLE_GB8561 = CS + "gb8561-technical-title"
CS_STAFF_CATEGORY = CS + "staff-category"
CS_ORG_KIND = CS + "organization-kind"
CS_AFFILIATION = CS + "affiliation-role"
CS_TEAM_ROLE = CS + "care-team-role"
CS_TEAM_CATEGORY = CS + "care-team-category"
CS_ENCOUNTER_TYPE = CS + "encounter-type"
CS_REFERRAL_DIRECTION = CS + "referral-direction"
CS_REFERRAL_STATUS = CS + "referral-business-status"
CS_FOLLOWUP_RESULT = CS + "followup-result"  # CV05.10.012
CS_CAREPLAN_KIND = CS + "careplan-kind"
CS_DEPARTMENT = CS + "department"
EXT_GENDER_GB = SD + "ext-person-gender"
EXT_ETHNIC = SD + "ext-person-ethnic-group"
EXT_DIVISION = SD + "ext-address-division"

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
COND_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
ADMIT_SOURCE = "http://terminology.hl7.org/CodeSystem/admit-source"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_POLICY = "http://terminology.hl7.org/CodeSystem/consentpolicycodes"
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

# GB/T 2260: the county the community serves (浙江省 杭州市 桐庐县) and its townships / streets.
PROVINCE = ("330000", "浙江省")
CITY = ("330100", "杭州市")
COUNTY = ("330122", "桐庐县")
POSTAL_CODE = "311500"
# (name, is a 街道 (urban sub-district), is a 中心卫生院 site)
TOWNSHIPS = (
    ("桐君街道", True, False), ("旧县街道", True, False), ("城南街道", True, False),
    ("凤川街道", True, False), ("富春江镇", False, True), ("横村镇", False, True),
    ("分水镇", False, True), ("瑶琳镇", False, False), ("百江镇", False, False),
    ("江南镇", False, True), ("莪山畲族乡", False, False), ("钟山乡", False, False),
    ("新合乡", False, False), ("合村乡", False, False),
)
VILLAGE_SUFFIXES = ("村", "村", "村", "社区")
VILLAGE_STEMS = "东西南北上下前后新老大小高低长青石竹桃杏柳松枫梅荷桂茶溪岭坞塘湾坪源山".strip()

# Birthplaces (first six digits of the national ID): mostly the county, some from elsewhere.
BIRTHPLACES = (
    ("330122", 70), ("330102", 4), ("330106", 3), ("330182", 4), ("330183", 3),
    ("340122", 2), ("360121", 2), ("410122", 2), ("430121", 2), ("510116", 2),
    ("500112", 2), ("420111", 1), ("320102", 1), ("440106", 1), ("110105", 1),
)

# Surnames with rough frequencies; given-name characters leaning male / female / either.
SURNAMES = (
    ("王", 72), ("李", 70), ("张", 66), ("刘", 52), ("陈", 46), ("杨", 32), ("黄", 25), ("赵", 22),
    ("吴", 21), ("周", 21), ("徐", 18), ("孙", 16), ("马", 15), ("朱", 14), ("胡", 13), ("郭", 12),
    ("何", 12), ("林", 11), ("高", 11), ("罗", 10), ("郑", 10), ("梁", 9), ("谢", 8), ("宋", 7),
    ("唐", 7), ("许", 7), ("韩", 7), ("邓", 6), ("冯", 6), ("曹", 6), ("彭", 6), ("曾", 5),
    ("肖", 5), ("田", 5), ("董", 5), ("潘", 5), ("袁", 5), ("蔡", 4), ("蒋", 4), ("余", 4),
    ("于", 4), ("杜", 4), ("叶", 4), ("程", 4), ("魏", 4), ("苏", 4), ("吕", 4), ("丁", 3),
    ("任", 3), ("卢", 3), ("姚", 3), ("沈", 3), ("钟", 3), ("姜", 3), ("崔", 3), ("谭", 3),
    ("陆", 3), ("范", 2), ("汪", 2), ("廖", 2), ("石", 2), ("金", 2), ("韦", 2), ("贾", 2),
    ("夏", 2), ("方", 2), ("邹", 2), ("熊", 2), ("孟", 2), ("秦", 2), ("白", 2), ("江", 2),
    ("欧阳", 1), ("司马", 1), ("诸葛", 1), ("上官", 1),
)
GIVEN_MALE = "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宁浩凯俊峰建国志文博宇轩晨睿哲天昊瑞泽"
GIVEN_FEMALE = "芳娜敏静丽艳娟霞燕玲桂英秀兰红梅琳莉婷雪慧颖欣怡佳萱雨涵可馨悦思琪紫"
GIVEN_EITHER = "小子晓海春秋云新永金玉德明家嘉林清安"

# GB 3304 ethnic groups (numeric, letter, name) with a weight for this county (畲族 present).
ETHNIC_GROUPS = (("01", "HA", "汉族", 97), ("22", "SH", "畲族", 2), ("03", "HU", "回族", 1))

GENDER_GB = {"male": ("1", "男性"), "female": ("2", "女性")}
MARITAL = (  # GB/T 2261.2 code, name, v3 code
    ("10", "未婚", "S"), ("20", "已婚", "M"), ("30", "丧偶", "W"), ("40", "离婚", "D"),
)

# WS 218 institution types used here (§3.9).
WS218 = {
    "A100": "综合医院", "A210": "中医（综合）医院", "B100": "社区卫生服务中心",
    "C210": "中心卫生院", "C220": "乡卫生院", "D600": "村卫生室（所）",
}

DEPARTMENTS = (  # code, name, SNOMED-free local department codes
    ("0301", "心血管内科"), ("0304", "内分泌科"), ("0302", "全科医学科"), ("2000", "急诊医学科"),
    ("2100", "康复医学科"), ("0500", "外科"), ("0700", "妇产科"),
)

TITLES = (("231", "主任医师"), ("232", "副主任医师"), ("233", "主治医师"), ("234", "医师"),
          ("235", "医士"))
STAFF_CATEGORY = {"11": "执业医师", "12": "执业助理医师", "21": "注册护士", "60": "乡村医生",
                  "31": "西药师（士）"}
TEAM_ROLES = {"leader": "团队长（全科医生）", "gp": "家庭医生（全科医生）",
              "village": "乡村医生", "nurse": "社区护士", "public-health": "公卫医师",
              "specialist": "县级专科医生（下沉）"}

# Encounter kinds: (local type code, display, v3 ActCode class, CV09.00.404 patient type)
ENCOUNTER_KINDS = {
    "outpatient": ("outpatient", "门诊", "AMB", ("1", "门诊")),
    "emergency": ("emergency", "急诊", "EMER", ("2", "急诊")),
    "inpatient": ("inpatient", "住院", "IMP", ("3", "住院")),
    "checkup": ("checkup", "体检", "AMB", ("9", "其他")),
    "home-bed": ("home-bed", "家庭病床", "HH", ("9", "其他")),
    "home-visit": ("home-visit", "家庭医生上门服务", "HH", ("9", "其他")),
    "telemedicine": ("telemedicine", "远程会诊", "VR", ("9", "其他")),
    "followup": ("followup", "随访", "AMB", ("1", "门诊")),
}
V3_CLASS_NAMES = {"AMB": "ambulatory", "EMER": "emergency", "IMP": "inpatient encounter",
                  "HH": "home health", "VR": "virtual"}

COMPLAINTS = ("头晕", "咳嗽", "发热", "腹痛", "胸闷", "乏力", "关节痛", "失眠", "腰痛", "心悸")
REFERRAL_REASONS_UP = ("血压控制不满意，需调整用药方案", "血糖控制不满意，需专科评估",
                       "胸痛待查，需进一步检查", "疑似并发症，需上级医院诊治",
                       "出现药物不良反应")
REFERRAL_REASONS_DOWN = ("病情稳定，转回基层康复", "术后康复期，转社区随访管理",
                         "慢病稳定期，转家庭医生签约管理")

# Referral workflow: Task.status → (ServiceRequest.status, business status code, display).
TASK_FLOW = {
    "draft": ("draft", "draft", "草稿"),
    "requested": ("active", "submitted", "待审核"),
    "received": ("active", "received", "已接收"),
    "accepted": ("active", "accepted", "已同意"),
    "rejected": ("revoked", "declined", "已拒绝"),
    "ready": ("active", "scheduled", "已预约"),
    "cancelled": ("revoked", "cancelled", "患者取消"),
    "in-progress": ("active", "arrived", "已到诊"),
    "on-hold": ("on-hold", "on-hold", "暂停"),
    "failed": ("revoked", "unattended", "逾期未到诊"),
    "completed": ("completed", "completed", "已完成/已回转"),
    "entered-in-error": ("entered-in-error", "entered-in-error", "录入错误"),
}
APPOINTMENT_STATUSES = ("proposed", "pending", "booked", "arrived", "fulfilled", "cancelled",
                        "noshow", "checked-in", "waitlist")
