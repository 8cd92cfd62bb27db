"""DICOM de-identification: remove patient identity before anything is stored or exported.

Follows the spirit of the DICOM PS3.15 Annex E *Basic Application Level Confidentiality Profile*:

- attributes that identify the patient, the staff, the institution, the device or the visit are
  removed (``X``) or, where the standard requires them to exist, blanked (``Z``);
- every person name (VR PN), date, date-time and time (VR DA/DT/TM) is blanked;
- every instance UID (VR UI, except the standard's own ``1.2.840.10008.*`` class/syntax UIDs) is
  replaced by a new one derived from a hash, so a series still groups after de-identification;
- private tags, overlays and curves (they can hold burned text or names) are removed;
- ``PatientIdentityRemoved = YES`` and ``DeidentificationMethod`` record what was done.

Pixel data is NOT inspected: text burned into the pixels is flagged by :func:`burned_in_annotation`
(ingest stores it in the manifest), not removed.

:func:`find_identifiers` lists what still identifies someone (keywords only, never values), so tests
and the app's DICOM export can prove that nothing is left. :func:`pseudonym` builds the ids that
readers use instead of UIDs and names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

# DICOM's own UIDs (SOP classes, transfer syntaxes, coding schemes) identify no one.
STANDARD_UID_ROOT = "1.2.840.10008."
METHOD = "medsynth: PS3.15 basic profile (E.1-1), UIDs hashed"

# Type 2 attributes the IODs require to be present: blanked (PS3.15 action Z).
BLANK = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
    "ReferringPhysicianName", "StudyDate", "StudyTime", "ContentDate", "ContentTime",
    "ContentCreatorName", "VerifyingObserverName", "PersonName", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
})

# Removed outright (PS3.15 action X, or X/Z/D where removal is allowed).
REMOVE = frozenset({
    # patient
    "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight",
    "PatientAddress", "PatientTelephoneNumbers", "PatientTelecomInformation", "MilitaryRank",
    "BranchOfService", "EthnicGroup", "Occupation", "PatientReligiousPreference",
    "AdditionalPatientHistory", "PatientComments", "MedicalRecordLocator", "CountryOfResidence",
    "RegionOfResidence", "ResponsiblePerson", "ResponsibleOrganization", "MedicalAlerts", "Allergies",
    "SpecialNeeds", "LastMenstrualDate", "PatientState", "PatientInsurancePlanCodeSequence",
    "PatientPrimaryLanguageCodeSequence", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "ReferencedPatientSequence", "ReferencedPatientPhotoSequence", "PatientInstitutionResidence",
    "CurrentPatientLocation", "AdmissionID", "IssuerOfAdmissionID", "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence", "ServiceEpisodeID", "ServiceEpisodeDescription", "VisitComments",
    "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar",
    # staff and institution
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "RequestingPhysician", "RequestingService", "ScheduledPerformingPhysicianName", "OrderEnteredBy",
    "OrderEntererLocation", "OrderCallbackPhoneNumber", "IssuerOfAccessionNumberSequence",
    # device and place
    "StationName", "DeviceSerialNumber", "DeviceUID", "StationAETitle", "ScheduledStationAETitle",
    "PerformedStationAETitle", "PerformedLocation", "ScheduledProcedureStepLocation", "DetectorID",
    "PlateID", "CassetteID", "GantryID",
    # free text that often carries names, ids or dates
    "StudyDescription", "SeriesDescription", "ImageComments", "StudyComments", "DerivationDescription",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureComments",
    "ScheduledProcedureStepDescription", "ScheduledProcedureStepID", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "ReasonForStudy", "ReasonForTheRequestedProcedure", "TextComments",
    "TextString", "AcquisitionComments", "FrameComments", "ImagePresentationComments",
    "InterpretationText", "ProtocolName", "ImagingServiceRequestComments",
    # references and audit trails that carry old UIDs, names and dates
    "RequestAttributesSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "ModifiedAttributesSequence", "OriginalAttributesSequence", "DigitalSignaturesSequence",
    "ContributingEquipmentSequence", "TimezoneOffsetFromUTC", "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
})

_TEMPORAL_VRS = ("DA", "DT", "TM")
_UID_LIKE = re.compile(r"^\d+(\.\d+){3,}$")  # 1.2.826.0.1.... (a UID used as a file or folder name)
_DATE_LIKE = re.compile(r"(19|20)\d{2}[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])")


def pseudonym(value: str, kind: str = "id", n: int = 16) -> str:
    """A stable, non-reversible stand-in for an identifier (UID, file name): hex of its hash."""
    return hashlib.sha256(f"medsynth-deid:{kind}:{value}".encode()).hexdigest()[:n]


def new_uid(uid: str, salt: str = "") -> str:
    """The replacement for an instance UID: deterministic, so a series still groups."""
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix="2.25.", entropy_srcs=[f"medsynth-deid:{salt}", uid]))


def _is_overlay_or_curve(tag: Any) -> bool:
    # Overlays (60xx) and retired curves (50xx) can hold burned-in text and comments.
    return (0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF) and tag.group % 2 == 0


def _blank(elem: Any) -> None:
    elem.value = [] if elem.VR == "SQ" else ""


def _deid_dataset(ds: Any, salt: str) -> None:
    for elem in list(ds):
        kw = elem.keyword
        if elem.tag.is_private or _is_overlay_or_curve(elem.tag) or kw in REMOVE:
            del ds[elem.tag]
        elif kw in BLANK or elem.VR == "PN" or elem.VR in _TEMPORAL_VRS:
            _blank(elem)
        elif elem.VR == "UI" and elem.value:
            vals = elem.value if elem.VM > 1 else [elem.value]
            new = [str(u) if str(u).startswith(STANDARD_UID_ROOT) else new_uid(str(u), salt) for u in vals]
            elem.value = new if elem.VM > 1 else new[0]
        elif elem.VR == "SQ":
            for item in elem.value:
                _deid_dataset(item, salt)


def deidentify(ds: Any, salt: str = "") -> Any:
    """Remove or blank the identifiers of a pydicom Dataset in place (and return it).

    Pixel data, geometry (spacing, position, orientation), acquisition and rescale attributes stay.
    UIDs are replaced deterministically (same input UID and ``salt`` -> same new UID).
    """
    _deid_dataset(ds, salt)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                   "PrivateInformationCreatorUID", "PrivateInformation"):
            if kw in meta:
                delattr(meta, kw)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    return ds


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, (bytes, bytearray)):
        return [bytes(value[:4096]).decode("latin-1", "replace")]
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value]
    return [str(value)] if value is not None else []


def _find(ds: Any, where: str, known: list[str], removed: bool, out: list[str]) -> None:
    for elem in ds:
        name = f"{where}{elem.keyword or str(elem.tag)}"
        if elem.tag.is_private:
            out.append(f"{where}private tag {elem.tag}")
            continue
        if _is_overlay_or_curve(elem.tag):
            out.append(f"{where}overlay/curve {elem.tag}")
            continue
        if elem.VR == "SQ":
            if elem.keyword in REMOVE and len(elem.value):
                out.append(name)
            for i, item in enumerate(elem.value):
                _find(item, f"{name}[{i}].", known, removed, out)
            continue
        if elem.keyword == "PixelData":
            continue
        texts = [t for t in _strings(elem.value) if t.strip()]
        if not texts:
            continue
        if elem.keyword in REMOVE or elem.keyword in BLANK or elem.VR == "PN" or elem.VR in _TEMPORAL_VRS:
            out.append(name)
        elif elem.VR == "UI" and not removed and any(not t.startswith(STANDARD_UID_ROOT) for t in texts):
            out.append(name)
        elif known and any(k in t.lower() for t in texts for k in known):
            out.append(name)


def find_identifiers(ds: Any, known: Iterable[str] = ()) -> list[str]:
    """What in ``ds`` still identifies a person: attribute keywords (paths in sequences), never values.

    Flags private tags, overlays, every non-empty attribute of the PS3.15 remove/blank lists, person
    names, dates and times, and any value containing one of the ``known`` strings (e.g. the original
    patient name, id or UIDs). Instance UIDs count as identifiers unless ``PatientIdentityRemoved`` is
    YES (then they are taken to be replacements, as :func:`deidentify` makes them); the ``known`` check
    still catches an original UID that survived.
    """
    low = [k.lower() for k in known if k and k.strip()]
    removed = str(ds.get("PatientIdentityRemoved", "")).upper() == "YES"
    out: list[str] = []
    _find(ds, "", low, removed, out)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for elem in meta:
            texts = [t for t in _strings(elem.value) if t.strip()]
            if elem.keyword in REMOVE and texts:
                out.append(f"file_meta.{elem.keyword}")
            elif low and any(k in t.lower() for t in texts for k in low):
                out.append(f"file_meta.{elem.keyword}")
    return out


def burned_in_annotation(ds: Any) -> bool:
    """True when text is (or may be) burned into the pixels.

    BurnedInAnnotation YES -> True, NO -> False. Absent: True for secondary captures (SOP classes
    1.2.840.10008.5.1.4.1.1.7*, modalities SC/OT/DOC/US/XC/ES) and screen saves, which commonly carry
    names and dates in the pixels; False otherwise.
    """
    flag = str(ds.get("BurnedInAnnotation", "")).strip().upper()
    if flag in ("YES", "NO"):
        return flag == "YES"
    sop = str(ds.get("SOPClassUID", ""))
    if sop.startswith("1.2.840.10008.5.1.4.1.1.7"):
        return True
    if str(ds.get("Modality", "")).upper() in {"SC", "OT", "DOC", "US", "XC", "ES"}:
        return True
    image_type = {str(v).strip().upper() for v in _strings(ds.get("ImageType", []))}
    return bool(image_type & {"SCREEN SAVE", "SCREENSHOT", "SECONDARY CAPTURE"})


# The identifier rules for strings that come from paths and file metadata (folder and file names,
# class names, ids, error texts). The same patterns decide what the DICOM tag checks above treat as
# dates and UIDs; each rule has a name so a refusal can say which rule fired without repeating the
# identifier itself.
IDENTIFIER_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a DICOM UID", re.compile(r"\d+(\.\d+){3,}")),
    ("a date (year, month, day)", _DATE_LIKE),
    ("a number of 5 or more digits (record, accession, phone or ID number)", re.compile(r"\d{5,}")),
    ("a record-number label (MRN, PID, accession, SSN, NHS, DOB) with digits",
     re.compile(r"(?i)(?<![a-z])(mrn|pid|acc|accession|ssn|nhs|dob|patid|patientid)[-_ #:.]*\d")),
    ("a DICOM person name (the ^ separator)", re.compile(r"\^")),
    ("an e-mail address", re.compile(r"[^\s@/]+@[^\s@/]+\.[a-z]{2,}", re.I)),
)
KNOWN_IDENTITY_RULE = "the patient's name or ID from the DICOM headers"


def identifier_rule(text: str, known: Iterable[str] = ()) -> str | None:
    """The name of the first identifier rule ``text`` matches (``known``: identity strings), or None."""
    for name, pattern in IDENTIFIER_RULES:
        if pattern.search(text):
            return name
    low = text.lower()
    if any(k.lower() in low for k in known if k and len(k.strip()) >= 3):
        return KNOWN_IDENTITY_RULE
    return None


def check_name(text: str, what: str, how_to_fix: str = "", known: Iterable[str] = ()) -> str:
    """``text`` unchanged when it matches no identifier rule.

    Raises:
        InputError: it matches one; the message names ``what`` and the rule, never ``text``.
    """
    rule = identifier_rule(text, known)
    if rule is None:
        return text
    from medsynth.errors import InputError

    raise InputError(f"{what} looks like an identifier (rule: {rule}) and is refused: it would be stored in "
                     "the dataset, its reports and MLflow" + (f"; {how_to_fix}" if how_to_fix else ""))


def safe_label(text: str, known: Iterable[str] = ()) -> str:
    """``repr(text)`` for messages and reports, or ``<withheld: rule>`` when it matches a rule."""
    rule = identifier_rule(text, known)
    return repr(text) if rule is None else f"<name withheld: {rule}>"


_TOKEN_SPLIT = re.compile(r"([\s'\"`/\\:,;()\[\]{}<>=|]+)")


def scrub_text(text: str, known: Iterable[str] = ()) -> str:
    """``text`` (an error message, a reason) with every token that matches a rule replaced by a hash."""
    known = list(known)
    out = []
    for tok in _TOKEN_SPLIT.split(text):
        if tok and not _TOKEN_SPLIT.fullmatch(tok) and identifier_rule(tok, known) is not None:
            out.append(f"x{pseudonym(tok, 'text', 12)}")
        else:
            out.append(tok)
    return "".join(out)


def scrub_path(rel_path: str, identifiers: Iterable[str] = ()) -> str:
    """A relative path safe for the manifest: folder/file names that match an identifier rule (UIDs,
    dates, long numbers, record-number labels, ...) or contain one of ``identifiers`` (patient name
    parts, id) are replaced by a hash (a file keeps its extension)."""
    idents = [i for i in identifiers if i and len(i.strip()) >= 3]
    parts = []
    for part in rel_path.split("/"):
        base, _, ext = part.rpartition(".")
        if not (base and ext.isalpha()):
            base, ext = part, ""
        if identifier_rule(part, idents) is not None:
            parts.append(f"x{pseudonym(part, 'path', 12)}" + (f".{ext}" if ext else ""))
        else:
            parts.append(part)
    return "/".join(parts)


def identity_strings(ds: Any) -> list[str]:
    """The patient's own identifying strings in ``ds`` (name parts, ids), for :func:`scrub_path`."""
    out: list[str] = []
    for kw in ("PatientName", "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate"):
        for v in _strings(ds.get(kw, "")):
            out.extend(p for p in re.split(r"[\^=\s,]+", v) if p)
    return out
