"""DICOMweb with dicomweb-client: STOW-RS, QIDO-RS, WADO-RS (instances, metadata, frames, bulk data),
rendered and thumbnails; same authentication and access rules as /fhir (PS3.18)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.uid import generate_uid

from telemed.db.engine import unit_of_work
from telemed.identity import ensure_account, issue_token
from telemed.kernel.clock import SystemClock
from tests.conftest import unique
from tests.imaging.conftest import TEST_FILES, make_institution


def scoped_token(services, org: str) -> str:
    user = unique("rad")
    with unit_of_work(services.engine) as conn:
        ensure_account(conn, user, user, ["radiologist"], services.clock.now(), None, org)
    return issue_token(
        services.token_keys, user, ["user/*.*"], 3600, SystemClock().now(), ["radiologist"], organization=org
    )


def client_for(server, token: str) -> DICOMwebClient:
    return DICOMwebClient(f"{server.url}/dicomweb", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def site(services, server, study_folder):
    """Institution A's radiologist stored the study folder by STOW-RS."""
    folder, study, patient, uids = study_folder
    inst = make_institution(services)
    client = client_for(server, scoped_token(services, inst.org))
    datasets = [pydicom.dcmread(f) for f in sorted(folder.iterdir())]
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == len(uids) and "FailedSOPSequence" not in result
    return inst, client, folder, study, patient, uids


def test_stow_per_instance_results(services, server, site, tmp_path):
    inst, client, folder, study, patient, uids = site
    good = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    good.StudyInstanceUID, good.SOPInstanceUID = study, generate_uid()
    bad = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    bad.StudyInstanceUID, bad.SOPInstanceUID = study, generate_uid()
    bad.PixelData = bad.PixelData[:100]
    result = client.store_instances([good, bad], study_instance_uid=study)
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [good.SOPInstanceUID]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in result.FailedSOPSequence] == [
        (bad.SOPInstanceUID, 0xA900)
    ]
    # an instance of another study posted to /studies/{study} is refused too; all refused -> 409
    other = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    other.StudyInstanceUID, other.SOPInstanceUID = generate_uid(), generate_uid()
    with pytest.raises(requests.HTTPError) as err:
        client.store_instances([other], study_instance_uid=study)
    assert err.value.response.status_code == 409


def test_stow_group_with_an_instance_refused_at_indexing(services, server, site):
    """The parts of one request are committed together; one refused while indexing (a study that
    another institution holds: 0xA700) is taken out, nothing of it is stored, and the others are
    stored and named in the audit trail."""
    from sqlalchemy import select

    from telemed.db.schema import audit_event, dicom_instance

    inst, client, folder, study, patient, uids = site
    other = make_institution(services)
    theirs = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    theirs.StudyInstanceUID, theirs.SOPInstanceUID = generate_uid(), generate_uid()
    client_for(server, scoped_token(services, other.org)).store_instances([theirs])
    mine = []
    for _ in range(3):
        ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
        ds.StudyInstanceUID, ds.SOPInstanceUID = study, generate_uid()
        mine.append(ds)
    intruder = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    intruder.StudyInstanceUID, intruder.SOPInstanceUID = theirs.StudyInstanceUID, generate_uid()
    result = client.store_instances([mine[0], intruder, mine[1], mine[2]])
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [d.SOPInstanceUID for d in mine]
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in result.FailedSOPSequence] == [
        (intruder.SOPInstanceUID, 0xA700)
    ]
    with unit_of_work(services.engine, write=False) as conn:
        stored = select(dicom_instance.c.sop_instance_uid).where(
            dicom_instance.c.sop_instance_uid.in_([d.SOPInstanceUID for d in (*mine, intruder)])
        )
        assert {r[0] for r in conn.execute(stored)} == {d.SOPInstanceUID for d in mine}
        mine_only = audit_event.c.organization == inst.org
        events = [r[0] for r in conn.execute(select(audit_event.c.content).where(mine_only))]
    described = " ".join(e.get("outcomeDesc", "") for e in events if e["action"] == "C")
    assert all(d.SOPInstanceUID in described for d in mine) and intruder.SOPInstanceUID not in described


def test_stow_group_into_a_study_already_held(services, server, site):
    """A group of new instances of a held study is indexed set by set: series and study counters,
    a new series and its modality, and the ImagingStudy rewritten at the end of the request."""
    from sqlalchemy import select

    from telemed.db.schema import dicom_series, dicom_study

    inst, client, folder, study, patient, uids = site
    ct = pydicom.dcmread(folder / "CT_small.dcm")
    new_series = generate_uid()
    series_count = select(dicom_series.c.series_uid, dicom_series.c.num_instances).where(
        dicom_series.c.series_uid.in_([ct.SeriesInstanceUID, new_series])
    )
    with unit_of_work(services.engine, write=False) as conn:
        before = conn.execute(select(dicom_study).where(dicom_study.c.study_uid == study)).one()
        counts_before = dict(conn.execute(series_count).all())
    parts = []
    for series, modality in ((ct.SeriesInstanceUID, "CT"), (new_series, "US"), (ct.SeriesInstanceUID, "CT")) * 2:
        ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.Modality = modality
        parts.append(ds)
    result = client.store_instances(parts, study_instance_uid=study)
    assert len(result.ReferencedSOPSequence) == 6 and "FailedSOPSequence" not in result
    with unit_of_work(services.engine, write=False) as conn:
        after = conn.execute(select(dicom_study).where(dicom_study.c.study_uid == study)).one()
        counts = dict(conn.execute(series_count).all())
        img = services.repository(conn, inst.context).read("ImagingStudy", after.fhir_id).resource
    assert (after.num_instances, after.num_series) == (before.num_instances + 6, before.num_series + 1)
    assert "US" in after.modalities.split("\\") and not after.fhir_stale
    assert counts == {ct.SeriesInstanceUID: counts_before[ct.SeriesInstanceUID] + 4, new_series: 2}
    assert (img["numberOfInstances"], img["numberOfSeries"]) == (after.num_instances, after.num_series)
    assert [s["numberOfInstances"] for s in img["series"] if s["uid"] == new_series] == [2]


def test_qido_matching_includefield_and_paging(site):
    inst, client, folder, study, patient, uids = site
    (found,) = client.search_for_studies(search_filters={"PatientID": patient})
    assert found["0020000D"]["Value"] == [study]
    assert found["00201208"]["Value"] == [len(uids)]  # NumberOfStudyRelatedInstances
    assert client.search_for_studies(search_filters={"PatientID": patient, "StudyDate": "19000101-19000102"}) == []
    series = client.search_for_series(study, search_filters={"Modality": "MR"})
    assert series and all(s["00080060"]["Value"] == ["MR"] for s in series)
    everything = client.search_for_instances(study)
    assert {i["00080018"]["Value"][0] for i in everything} == set(uids)
    page1 = client.search_for_instances(study, limit=5, offset=0)
    page2 = client.search_for_instances(study, limit=5, offset=5)
    assert len(page1) == 5 and not {i["00080018"]["Value"][0] for i in page1} & {
        i["00080018"]["Value"][0] for i in page2
    }
    # includefield outside the index comes from the instances' metadata
    ct = pydicom.dcmread(folder / "CT_small.dcm", stop_before_pixels=True)
    (one,) = client.search_for_instances(
        study, search_filters={"SOPInstanceUID": ct.SOPInstanceUID}, fields=["KVP", "00180050"]
    )
    assert one["00180060"]["Value"] == [float(ct.KVP)] and "00180050" in one
    assert client.search_for_studies(search_filters={"PatientName": "CompressedSamples*"}, fuzzymatching=True)


def test_wado_instances_metadata_frames_bulkdata(site):
    inst, client, folder, study, patient, uids = site
    ct = pydicom.dcmread(folder / "CT_small.dcm")
    got = client.retrieve_instance(study, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    assert got.PixelData == ct.PixelData and got.file_meta.TransferSyntaxUID == ct.file_meta.TransferSyntaxUID
    assert {d.SOPInstanceUID for d in client.retrieve_study(study)} == set(uids)
    (meta,) = client.retrieve_series_metadata(study, ct.SeriesInstanceUID)
    assert meta["00100020"]["Value"] == [patient] and "BulkDataURI" in meta["7FE00010"]
    (frame,) = client.retrieve_instance_frames(study, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1])
    assert frame == ct.PixelData
    # a JPEG 2000 frame: as stored when the client takes any transfer syntax, decoded when it wants raw
    j2k = pydicom.dcmread(folder / "MR_small_jp2klossless.dcm")
    (native,) = client.retrieve_instance_frames(
        study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, [1], media_types=("application/octet-stream",)
    )
    assert np.array_equal(np.frombuffer(native, "<i2").reshape(64, 64), j2k.pixel_array)
    (compressed,) = client.retrieve_instance_frames(
        study, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, [1], media_types=(("image/jp2", "1.2.840.10008.1.2.4.90"),)
    )
    assert compressed[:4] == b"\xff\x4f\xff\x51"  # a JPEG 2000 codestream
    multi = pydicom.dcmread(folder / "SC_rgb_rle_2frame.dcm")
    frames = client.retrieve_instance_frames(
        study, multi.SeriesInstanceUID, multi.SOPInstanceUID, [2, 1], media_types=("application/octet-stream",)
    )
    assert frames[0] == multi.pixel_array[1].tobytes() and frames[1] == multi.pixel_array[0].tobytes()
    (bulk,) = client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"])
    assert bulk == ct.PixelData


def test_rendered_and_thumbnails(services, server, site):
    inst, client, folder, study, patient, uids = site
    ct = pydicom.dcmread(folder / "CT_small.dcm")
    jpeg = client.retrieve_instance_rendered(
        study, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=("image/jpeg",), params={"window": "40,400"}
    )
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.size == (128, 128) and len(set(image.get_flattened_data())) > 10
    png = client.retrieve_instance_rendered(
        study, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=("image/png",), params={"viewport": "64,64"}
    )
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    headers = client._session.headers
    for path in (f"studies/{study}/thumbnail", f"studies/{study}/series/{ct.SeriesInstanceUID}/thumbnail"):
        r = httpx.get(f"{server.url}/dicomweb/{path}", headers={**headers, "Accept": "image/jpeg"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"


def test_other_institution_and_anonymous(services, server, site):
    inst, client, folder, study, patient, uids = site
    other = client_for(server, scoped_token(services, make_institution(services).org))
    assert other.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert other.search_for_instances(study) == []
    ct = pydicom.dcmread(folder / "CT_small.dcm", stop_before_pixels=True)
    for call in (
        lambda: other.retrieve_study(study),
        lambda: other.retrieve_series_metadata(study, ct.SeriesInstanceUID),
        lambda: other.retrieve_instance_frames(study, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1]),
    ):
        with pytest.raises(requests.HTTPError) as err:
            call()
        assert err.value.response.status_code == 404
    assert httpx.get(f"{server.url}/dicomweb/studies").status_code == 401
    # the FHIR ImagingStudy is searchable through the FHIR API by the owner, with the DICOMweb endpoint
    token = client._session.headers["Authorization"]
    r = httpx.get(
        f"{server.url}/fhir/ImagingStudy", params={"identifier": f"urn:oid:{study}"}, headers={"Authorization": token}
    )
    (entry,) = r.json()["entry"]
    assert entry["resource"]["numberOfInstances"] == len(uids)
    assert entry["resource"]["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
