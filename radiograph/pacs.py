"""A PACS through DICOMweb (dicomweb-client): search studies (QIDO-RS), fetch one (WADO-RS), store results (STOW-RS).

    pacs = Pacs.from_environment()             # RADIOGRAPH_DICOMWEB_URL; None when no server is configured
    studies = pacs.search(modality="DX")       # rows without identifying values
    fetched = pacs.fetch_study(studies[0]["study"])
    pacs.store([sc, sr])                       # highdicom datasets (radiograph.dicom_results)

Configuration (the app and the batch command read the same): RADIOGRAPH_DICOMWEB_URL (the DICOMweb root, e.g.
http://127.0.0.1:8042/dicom-web for Orthanc), and either RADIOGRAPH_DICOMWEB_USER with RADIOGRAPH_DICOMWEB_PASSWORD
(HTTP basic) or RADIOGRAPH_DICOMWEB_TOKEN (a bearer token). Credentials are read from the environment only, never
from a command line that `ps` shows, and never logged.

Budgets (docs/input-budget.md): one study is at most MAX_VIEWS image instances and MAX_REQUEST_BYTES together, each
instance at most MAX_FILE_BYTES (the app's upload limits); a search lists at most MAX_STUDIES. Every response is
read with a byte cap whatever its headers claim, each request has a connect and a read timeout and is not retried,
and an instance's bytes go to the shared loader (radiograph.imaging) unparsed, so its header checks run before
pydicom builds anything. What is fetched: the image instances of the study (not SR, KO, PR or SEG objects, and not
this project's own results series, radiograph.dicom_results), in series and instance number order.

Every failure is a PacsError whose message says what happened and what to do: the server is not reachable, the
study is not there, the credentials were refused, or the server answered something else.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from radiograph.imaging import MAX_FILE_BYTES, MAX_REQUEST_BYTES, MAX_VIEWS

MAX_STUDIES = 50  # rows of one search
MAX_JSON_BYTES = 16 * 2**20  # one QIDO-RS answer (a study's instances with their attributes are a few kB each)
MULTIPART_OVERHEAD = 64 * 1024  # part headers and boundaries around one instance
TIMEOUT_S = (5.0, 60.0)  # connect, then at most this long between bytes of an answer
TOTAL_S = 300.0  # and at most this long for a whole answer (a server trickling bytes is cut off)
UID, DATE_RANGE = r"(?=[0-9.]{1,64}$)[0-9]+(\.[0-9]+)*", r"\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8}"
# a patient ID is matched exactly: no wildcards (* ?), which would let a caller recover IDs prefix by prefix
MODALITY, PATIENT_ID = r"[A-Z0-9_]{1,16}", r"[^\\*?\x00-\x1f]{1,64}"
NOT_IMAGES = {"SR", "KO", "PR", "SEG", "DOC", "REG", "RWV"}  # modalities of non-image objects a study may hold
# QIDO-RS attribute tags (DICOM PS3.18 Table 10.6.1-5): what a study row shows; nothing that identifies a patient
TAGS = {"StudyInstanceUID": "0020000D", "StudyDate": "00080020", "StudyTime": "00080030",
        "StudyDescription": "00081030", "ModalitiesInStudy": "00080061", "NumberOfStudyRelatedSeries": "00201206",
        "NumberOfStudyRelatedInstances": "00201208", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018",
        "SOPClassUID": "00080016", "Modality": "00080060", "SeriesNumber": "00200011", "InstanceNumber": "00200013",
        "SeriesDescription": "0008103E", "BodyPartExamined": "00180015", "Manufacturer": "00080070"}


class PacsError(RuntimeError):
    """A DICOMweb request that failed; the message is for the user (no credentials, no patient values)."""

    def __init__(self, message: str, kind: str = "server"):
        super().__init__(message)
        self.kind = kind  # unreachable | not_found | unauthorised | too_large | server | refused


class ResponseTooLarge(PacsError):
    def __init__(self, url: str, limit: int):
        super().__init__(f"The DICOMweb server's answer to {url} is larger than {limit / 2**20:.0f} MB, the most one "
                         "answer may be; nothing of it was kept", "too_large")


class CappedSession(requests.Session):
    """A requests session that reads every answer with a byte cap (a lying or absent Content-Length included) and a
    total time limit, and stores it, so dicomweb-client's parsing sees at most `limit` bytes. `limit` is set per
    call and per thread (the app's requests share one session). Redirects are not followed: requests would read a
    redirect's whole body before any cap."""

    def __init__(self, limit: int = MAX_JSON_BYTES, total_s: float = TOTAL_S):
        super().__init__()
        self.local, self.default, self.total_s = threading.local(), limit, total_s

    @property
    def limit(self) -> int:
        return getattr(self.local, "limit", self.default)

    @limit.setter
    def limit(self, value: int) -> None:
        self.local.limit = value

    def get_redirect_target(self, response):
        """None: no redirect is followed, or even prepared (requests reads a redirect's whole body to prepare the
        next request, even with allow_redirects off)."""
        return None

    def request(self, method, url, *args, **kwargs):
        kwargs["stream"], kwargs["allow_redirects"] = True, False
        limit, deadline = self.limit, time.monotonic() + self.total_s
        response = super().request(method, url, *args, **kwargs)
        if response.is_redirect:
            response.close()
            raise PacsError(f"The DICOMweb server answered {url} with a redirect (HTTP {response.status_code}); "
                            "redirects are not followed: configure the URL it redirects to.", "server")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise ResponseTooLarge(url, limit)
        body = bytearray()
        try:
            for chunk in response.iter_content(1 << 20):
                body += chunk
                if len(body) > limit:
                    raise ResponseTooLarge(url, limit)
                if time.monotonic() > deadline:
                    raise PacsError(f"The DICOMweb server's answer to {url} took longer than {self.total_s:.0f} s "
                                    "in all; nothing of it was kept.", "unreachable")
        finally:
            response.close()
        response._content, response._content_consumed = bytes(body), True  # noqa: SLF001 - as requests itself does
        return response


@dataclass
class Instance:
    """One image instance of a fetched study: its UIDs, a name for results, and its bytes (not yet parsed)."""

    study: str
    series: str
    sop: str
    name: str
    data: bytes

    @property
    def address(self) -> str:
        return f"studies/{self.study}/series/{self.series}/instances/{self.sop}"


def _value(item: dict, keyword: str):
    values = (item.get(TAGS[keyword]) or {}).get("Value") or []
    return values[0] if len(values) == 1 else (values or None)


def _text(value, limit: int = 128) -> str:
    """A server's value as printable text of at most `limit` characters (DICOM's LO is 64; a hostile server's
    megabyte of control characters is not shown)."""
    if isinstance(value, dict):  # a person name in JSON: {"Alphabetic": ...} - never shown here
        return ""
    if isinstance(value, list):
        value = "\\".join(str(v) for v in value)
    return re.sub(r"[\x00-\x1f\x7f-\x9f]", " ", "" if value is None else str(value))[:limit]


class Pacs:
    """One DICOMweb server (a URL and its credentials)."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None, token: str | None = None,
                 timeout: tuple[float, float] = TIMEOUT_S):
        from dicomweb_client.api import DICOMwebClient

        url = url.strip().rstrip("/")
        try:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("no http:// or https:// host")
            parts.port  # noqa: B018  (a port outside 0-65535 raises ValueError here)
            if parts.username is not None:  # user:password@host: taken as the credentials, never shown with the URL
                user, password = unquote(parts.username), unquote(parts.password or "")
                # the host and port as written ([::1]:8042 keeps its brackets), without the credentials
                url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        except (ValueError, TypeError):
            shown = re.sub(r"//[^/@]*@", "//", url)  # never echo a password
            raise PacsError(f"The DICOMweb URL must be http:// or https://, a host and an optional port and path; "
                            f"got {_text(shown, 80)!r}", "refused") from None
        self.url = url
        self.session = CappedSession()
        if user:
            self.session.auth = (user, password or "")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            self.client = DICOMwebClient(url, session=self.session, headers=headers, timeout=timeout)
        except ValueError as error:
            raise PacsError(f"The DICOMweb URL {url!r} is not usable: {error}", "refused") from None
        self.client.set_http_retry_params(retry=False)  # one attempt: a down server is said at once

    @classmethod
    def from_environment(cls, environ=os.environ) -> "Pacs | None":
        url = (environ.get("RADIOGRAPH_DICOMWEB_URL") or "").strip()
        if not url:
            return None
        get = environ.get
        return cls(url, get("RADIOGRAPH_DICOMWEB_USER") or None, get("RADIOGRAPH_DICOMWEB_PASSWORD") or None,
                   get("RADIOGRAPH_DICOMWEB_TOKEN") or None)

    def __repr__(self) -> str:  # no credentials
        return f"Pacs({self.url!r})"

    # ------------------------------------------------------------------ errors

    def _call(self, what: str, call, limit: int = MAX_JSON_BYTES, study: str | None = None):
        """Run one dicomweb-client call with the session capped at `limit`, turning what can go wrong into a
        PacsError that says so."""
        self.session.limit = limit
        try:
            return call()
        except PacsError:
            raise
        except requests.exceptions.SSLError:
            raise PacsError(f"The TLS connection to the DICOMweb server at {self.url} failed (certificate or "
                            f"protocol) while trying to {what}; check the server's certificate.", "unreachable") from None
        except (requests.exceptions.ConnectTimeout, requests.exceptions.ConnectionError) as error:
            if isinstance(error, requests.exceptions.ChunkedEncodingError):
                raise PacsError(f"The DICOMweb server at {self.url} broke off its answer while trying to {what}; "
                                "try again.", "unreachable") from None
            raise PacsError(f"The DICOMweb server at {self.url} is not reachable (connection refused, no such host, "
                            "or no answer to connect) while trying to " + what + ". Check that it is running and "
                            "that the URL is right; nothing was changed.", "unreachable") from None
        except requests.exceptions.Timeout:
            raise PacsError(f"The DICOMweb server at {self.url} did not answer within {TIMEOUT_S[1]:.0f} s while "
                            f"trying to {what}; try again, or check the server.", "unreachable") from None
        except requests.exceptions.HTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            if status in (401, 403):
                raise PacsError(f"The DICOMweb server at {self.url} refused the credentials (HTTP {status}) while "
                                f"trying to {what}. Set RADIOGRAPH_DICOMWEB_USER and RADIOGRAPH_DICOMWEB_PASSWORD, "
                                "or RADIOGRAPH_DICOMWEB_TOKEN, to an account it accepts.", "unauthorised") from None
            if status == 404:
                raise PacsError(f"Not found on the DICOMweb server at {self.url}: " + (
                    f"study {study}" if study else "the requested resource") + f" (HTTP 404, trying to {what}). "
                    "Search again to pick a study the server holds.", "not_found") from None
            raise PacsError(f"The DICOMweb server at {self.url} answered HTTP {status} while trying to {what}; "
                            "nothing was changed here.", "server") from None
        except requests.exceptions.RequestException as error:  # a broken-off or undecodable answer, a bad header
            raise PacsError(f"The DICOMweb server at {self.url} failed while trying to {what} "
                            f"({type(error).__name__}); try again.", "server") from None
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError, SyntaxError) as error:
            # an answer dicomweb-client or the row reading could not read (SyntaxError: XML it could not parse)
            raise PacsError(f"The DICOMweb server at {self.url} sent an answer that is not valid DICOMweb while "
                            f"trying to {what} ({type(error).__name__}: {_text(str(error), 160)}).", "server") from None

    # ------------------------------------------------------------------ QIDO-RS

    def search(self, study: str = "", date: str = "", modality: str = "", patient_id: str = "",
               limit: int = MAX_STUDIES) -> list[dict]:
        """Studies matching the filters (DICOM matching: a date or range YYYYMMDD-YYYYMMDD, a modality code, a
        patient ID used only as a filter), newest first, at most `limit`; each row has no identifying value."""
        study, date, modality, patient_id = (study.strip(), date.strip(), modality.strip().upper(), patient_id.strip())
        for value, pattern, accepted in ((study, UID, "a UID: digits and dots, at most 64"),
                                         (date, DATE_RANGE, "YYYYMMDD, or a range YYYYMMDD-YYYYMMDD (either end open)"),
                                         (modality, MODALITY, "a modality code such as CR or DX"),
                                         (patient_id, PATIENT_ID, "an exact ID: at most 64 characters, no wildcard (* ?) or backslash")):
            if value and not re.fullmatch(pattern, value):
                raise PacsError(f"Search field {value[:70]!r} is not accepted: give {accepted}.", "refused")
        filters = {key: value for key, value in (("StudyInstanceUID", study), ("StudyDate", date),
                   ("ModalitiesInStudy", modality), ("PatientID", patient_id)) if value}
        fields = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances"]
        limit = min(limit, MAX_STUDIES)

        def rows_of_search() -> list[dict]:
            found = self.client.search_for_studies(fuzzymatching=False, limit=limit, fields=fields,
                                                   search_filters=filters)
            return [{"study": _text(_value(item, "StudyInstanceUID")), "date": _text(_value(item, "StudyDate")),
                     "time": _text(_value(item, "StudyTime"))[:6],
                     "description": _text(_value(item, "StudyDescription")),
                     "modalities": _text(_value(item, "ModalitiesInStudy")),
                     "series": _text(_value(item, "NumberOfStudyRelatedSeries")),
                     "instances": _text(_value(item, "NumberOfStudyRelatedInstances"))}
                    for item in found[:limit]]  # a server may ignore the limit

        rows = self._call("search for studies", rows_of_search)
        return sorted([row for row in rows if row["study"]], key=lambda row: (row["date"], row["time"]), reverse=True)

    def image_instances(self, study: str) -> tuple[list[dict], int]:
        """The study's image instances (series, sop, numbers) in order, and how many other objects it holds."""
        from radiograph.dicom_results import (MANUFACTURER, REPORT_DESCRIPTION, SERIES_DESCRIPTION,
                                              STUDY_REPORT_DESCRIPTION)

        study = study.strip()
        if not study:
            raise PacsError("No study chosen: search, then choose a study.", "refused")
        if not re.fullmatch(UID, study):
            raise PacsError(f"{_text(study, 70)!r} is not a Study Instance UID (digits and dots, at most 64).",
                            "refused")

        def listing() -> tuple[list[dict], int, int]:
            found = self.client.search_for_instances(study_instance_uid=study, fields=[
                "Modality", "SeriesNumber", "InstanceNumber", "SeriesDescription", "Manufacturer"])
            images, others = [], 0
            for item in found:
                row = {"series": _text(_value(item, "SeriesInstanceUID")),
                       "sop": _text(_value(item, "SOPInstanceUID")), "modality": _text(_value(item, "Modality")).upper(),
                       "series_number": _number(_value(item, "SeriesNumber")),
                       "instance_number": _number(_value(item, "InstanceNumber"))}
                # this project's own results: by their series description, or their manufacturer where a server
                # leaves the description out of an instance-level answer
                ours = (_text(_value(item, "SeriesDescription")) in (SERIES_DESCRIPTION, REPORT_DESCRIPTION,
                                                                     STUDY_REPORT_DESCRIPTION)
                        or _text(_value(item, "Manufacturer")) == MANUFACTURER)
                valid = all(re.fullmatch(UID, row[key]) for key in ("series", "sop"))  # they go into URLs
                if row["modality"] in NOT_IMAGES or ours or not valid:
                    others += 1
                else:
                    images.append(row)
            images.sort(key=lambda row: (row["series_number"], row["series"], row["instance_number"], row["sop"]))
            return images, others, len(found)

        images, others, listed = self._call(f"list the instances of study {study}", listing, study=study)
        if not listed:
            raise PacsError(f"Study {study} is not on the DICOMweb server at {self.url} (it lists no instances). "
                            "Search again to pick a study the server holds.", "not_found")
        return images, others

    # ------------------------------------------------------------------ WADO-RS

    def fetch_study(self, study: str) -> tuple[list[Instance], int]:
        """The study's image instances as bytes, within the budgets; (instances, objects skipped)."""
        images, others = self.image_instances(study)
        if not images:
            raise PacsError(f"Study {study} holds no image instance to analyse ({others} other objects, such as "
                            "reports or this project's results).", "refused")
        if len(images) > MAX_VIEWS:
            raise PacsError(f"Study {study} holds {len(images)} image instances; at most {MAX_VIEWS} are analysed "
                            "as one study (the app's upload limit). Nothing was fetched.", "too_large")
        fetched, total = [], 0
        for number, row in enumerate(images, 1):
            data = self.fetch_instance(study.strip(), row["series"], row["sop"])
            total += len(data)
            if total > MAX_REQUEST_BYTES:
                raise PacsError(f"Study {study} is larger than {MAX_REQUEST_BYTES // 2**20} MB together, the most one "
                                "study may be; it was not analysed.", "too_large")
            fetched.append(Instance(study.strip(), row["series"], row["sop"],
                                    f"{row['modality'] or 'image'}_{number:02d}_{row['sop'][-12:]}.dcm", data))
        return fetched, others

    def fetch_instance(self, study: str, series: str, sop: str) -> bytes:
        """One instance as its DICOM file bytes (Part 10, any transfer syntax the server holds)."""
        url = f"{self.url}/studies/{study}/series/{series}/instances/{sop}"
        # dicomweb-client's retrieve_instance parses the file with pydicom before any budget check, and its bulkdata
        # call refuses application/dicom; its request and multipart reader (pinned version; tests/test_pacs.py runs
        # them against Orthanc) hand over the part's bytes as they came, for the shared loader to check first
        accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}

        def get() -> list[bytes]:
            response = self.client._http_get(url, headers=accept)  # noqa: SLF001
            return list(self.client._decode_multipart_message(response, stream=False))  # noqa: SLF001

        parts = self._call(f"fetch instance {sop}", get, limit=MAX_FILE_BYTES + MULTIPART_OVERHEAD, study=study)
        if len(parts) != 1:
            raise PacsError(f"The DICOMweb server at {self.url} answered {len(parts)} parts for one instance "
                            f"({sop}); expected one.", "server")
        if len(parts[0]) > MAX_FILE_BYTES:
            raise ResponseTooLarge(url, MAX_FILE_BYTES)
        return bytes(parts[0])

    # ------------------------------------------------------------------ STOW-RS

    def store(self, datasets: list, study: str | None = None) -> list[str]:
        """Store DICOM datasets (STOW-RS, into their study); the SOP instance UIDs the server accepted. A
        server that refuses any of them is an error naming how many it refused and why. Datasets of one SOP instance
        UID are one result (radiograph.dicom_results.derived_uid: e.g. one view given twice) and go once."""
        datasets = list({str(dataset.SOPInstanceUID): dataset for dataset in datasets}.values())
        if not datasets:
            return []
        study = study or str(datasets[0].StudyInstanceUID)

        def stored() -> tuple[list[str], list]:
            answer = self.client.store_instances(datasets, study_instance_uid=study)
            accepted = [str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence") or []]
            return accepted, list(answer.get("FailedSOPSequence") or [])

        accepted, failed = self._call(f"store {len(datasets)} results in study {study}", stored, study=study)
        if failed:
            reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in failed})
            raise PacsError(f"The DICOMweb server at {self.url} refused {len(failed)} of {len(datasets)} results "
                            f"(failure reasons {', '.join(reasons)}); the others were stored. Storing again adds no "
                            "second copy: each result keeps its UID.", "server")
        if len(accepted) != len(datasets):  # e.g. an answer in a media type dicomweb-client does not read
            raise PacsError(f"The DICOMweb server at {self.url} confirmed {len(accepted)} of {len(datasets)} results "
                            "stored; storing again adds no second copy (each result keeps its UID).", "server")
        return accepted


def _number(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return 0


def analyse_fetched(service, task: str, instances: list[Instance], skipped: int = 0) -> tuple[list, dict]:
    """Analyse a fetched study with a radiograph.service.Service: as one study where the task's card groups
    images into studies (MURA: the mean over its views), else each instance on its own (`task` may be AUTO: each to
    the task the router assigns it to; when every image goes to one task that groups images into studies, the
    study's result is given too). Returns (the analyses, the result: per instance its DICOMweb address and
    result or error, and the study's result where there is one)."""
    from radiograph.gate import AUTO
    from radiograph.imaging import ImageLoadError
    from radiograph.service import UnusableResult

    def grouped(name: str | None) -> bool:
        return name in service.models and service.models[name].card.study is not None

    result = {"study_instance_uid": instances[0].study, "task": task, "instances": [], "skipped_objects": skipped}
    if grouped(task):
        analyses, study = service.analyse_study(task, [item.data for item in instances], [i.name for i in instances])
        result["study"] = {key: value for key, value in study.items() if key != "per_view"}
        result["instances"] = [{"address": item.address, "name": item.name, "result": view}
                               for item, view in zip(instances, study["per_view"])]
        return analyses, result
    analyses = []
    for item in instances:
        try:
            analysis = (service.analyse_auto(item.data, item.name) if task == AUTO
                        else service.analyse(task, item.data, item.name))
        except (ImageLoadError, UnusableResult) as error:  # one unreadable instance; the others are analysed
            result["instances"].append({"address": item.address, "name": item.name, "error": str(error)})
            continue
        analyses.append(analysis)
        result["instances"].append({"address": item.address, "name": item.name, "result": analysis.result()})
    routed = {analysis.task for analysis in analyses}
    if task == AUTO and len(routed) == 1 and grouped(next(iter(routed))) and len(analyses) == len(instances):
        # every image routed to one task that groups images into studies (MURA): the study's result too
        study = service.study_of(next(iter(routed)), analyses, [row["result"] for row in result["instances"]])
        result["study"] = {key: value for key, value in study.items() if key != "per_view"}
    return analyses, result

def results_as_dicom(analyses: list, study: dict | None = None) -> tuple[list, list[str]]:
    """The DICOM results (radiograph.dicom_results: Secondary Capture and Structured Report) of every analysis
    that has them, and the study's report where the analyses are the views of one study (`study`: its result, MURA),
    and for each one that has none, why."""
    from radiograph.dicom_results import DicomResultError, dicom_results, study_report

    datasets, reasons = [], []
    for analysis in analyses:
        try:
            datasets.extend(dicom_results(analysis))
        except DicomResultError as error:
            reasons.append(str(error))
    if study is not None:
        try:
            datasets.append(study_report(study, analyses))
        except DicomResultError as error:
            reasons.append(f"the study's report: {error}")
    return datasets, reasons


# ------------------------------------------------------------------ the batch command (radiograph.predict --study)

def fetch_into(pacs: Pacs, studies: list[str], folder) -> dict:
    """Fetch each study's image instances into `folder/<n>/` (one folder per study, so the batch command forms a
    MURA study from it as from MURA's own folders); {path: Instance without its bytes}."""
    from pathlib import Path

    fetched = {}
    for number, study in enumerate(dict.fromkeys(uid.strip() for uid in studies), 1):
        instances, _ = pacs.fetch_study(study)
        target = Path(folder) / f"study{number:03d}"
        target.mkdir(parents=True, exist_ok=True)
        for item in instances:
            path = target / item.name
            path.write_bytes(item.data)
            item.data = b""  # on disk now; the bytes are not held twice
            fetched[path] = item
    return fetched


def study_folders(fetched: dict) -> dict:
    """{folder: Study Instance UID} of what fetch_into wrote: the file a study row names is its folder."""
    return {path.parent: item.study for path, item in fetched.items()}


def store_rows(pacs: Pacs, rows: list[dict], fetched: dict) -> int:
    """Store the DICOM results the batch command wrote for fetched files and their studies (row["dicom"]) into
    their studies; each row gets "stored" (the instance UIDs) or "store_error". Returns how many studies failed."""
    from pathlib import Path

    import pydicom

    folders = study_folders(fetched)  # a study row's file is its folder
    by_study: dict[str, list[dict]] = {}
    for row in rows:
        path = Path(row["file"])
        study = (fetched[path].study if path in fetched else None) if row["kind"] == "image" else folders.get(path)
        if study is not None and row.get("dicom"):
            by_study.setdefault(study, []).append(row)
    failed = 0
    for study, members in by_study.items():
        read = [[pydicom.dcmread(path) for path in row["dicom"]] for row in members]  # written by us just now
        try:
            stored = set(pacs.store([dataset for datasets in read for dataset in datasets], study))
        except PacsError as error:
            failed += 1
            for row in members:
                row["store_error"] = str(error)
            print(f"error: results of study {study} not stored: {error}", file=sys.stderr)
            continue
        for row, datasets in zip(members, read):
            row["stored"] = [str(d.SOPInstanceUID) for d in datasets if str(d.SOPInstanceUID) in stored]
    return failed


def label_fetched_rows(rows: list[dict], fetched: dict, url: str, scratch_results: bool) -> None:
    """Rows of fetched files name their source on the server (row["file"]: the instance's DICOMweb URL; a study
    row: the study's), not the scratch copy; results written only to be stored lose their scratch paths."""
    from pathlib import Path

    folders = study_folders(fetched)
    for row in rows:
        path = Path(row["file"])
        if row["kind"] == "image" and path in fetched:
            row["file"] = f"{url}/{fetched[path].address}"
            if scratch_results:
                row.pop("dicom", None)
        elif row["kind"] == "study" and path in folders:
            row["file"] = f"{url}/studies/{folders[path]}"
            if scratch_results:
                row.pop("dicom", None)


# ------------------------------------------------------------------ command line: search and store

def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    from pathlib import Path

    import pydicom

    parser = argparse.ArgumentParser(prog="python -m radiograph pacs", description=__doc__.split("\n")[0])
    parser.add_argument("--dicomweb", metavar="URL", default=os.environ.get("RADIOGRAPH_DICOMWEB_URL") or None,
                        help="the DICOMweb root (default RADIOGRAPH_DICOMWEB_URL)")
    commands = parser.add_subparsers(dest="command", required=True)
    search = commands.add_parser("search", help="list studies (no patient names or IDs), as JSON lines")
    search.add_argument("--study", default="", help="a Study Instance UID")
    search.add_argument("--date", default="", help="YYYYMMDD or a range YYYYMMDD-YYYYMMDD")
    search.add_argument("--modality", default="", help="e.g. CR, DX")
    search.add_argument("--patient-id", default="", help="a filter only; never printed")
    store = commands.add_parser("store", help="upload DICOM files (STOW-RS), e.g. phantom studies into a test PACS")
    store.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if not args.dicomweb:
        parser.error("no DICOMweb server: give --dicomweb URL or set RADIOGRAPH_DICOMWEB_URL")
    try:
        pacs = Pacs.from_environment({**os.environ, "RADIOGRAPH_DICOMWEB_URL": args.dicomweb})
        if args.command == "search":
            for row in pacs.search(args.study, args.date, args.modality, args.patient_id):
                print(json.dumps(row))
            return 0
        files = [path for name in args.files for path in (sorted(name.rglob("*.dcm")) if name.is_dir() else [name])]
        by_study: dict[str, list] = {}
        for path in files:
            if path.stat().st_size > MAX_FILE_BYTES:
                parser.error(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB")
            dataset = pydicom.dcmread(path)
            by_study.setdefault(str(dataset.StudyInstanceUID), []).append(dataset)
        stored = sum(len(pacs.store(datasets, study)) for study, datasets in by_study.items())
        print(f"stored {stored} instances in {len(by_study)} studies on {pacs.url}", file=sys.stderr)
        return 0
    except PacsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, pydicom.errors.InvalidDicomError, AttributeError) as error:
        print(f"error: cannot store: {error}", file=sys.stderr)
        return 2
