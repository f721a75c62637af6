"""Remote reading pages over HTTP: request form (a study of the patient) -> worklist (priority,
deadline, claim) -> report editor from the CT template -> sign -> the requester's PDF; a critical
finding banner and its acknowledgement; sharing and revoking; English."""

from __future__ import annotations

from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity.passwords import hash_password
from tests.identity.test_authentication import PASSWORD
from tests.imaging import reading_net
from tests.portal.conftest import browser_client, csrf_of, sign_in


def session(services, server, username, lang=None):
    with unit_of_work(services.engine) as conn:
        conn.execute(update(account).where(account.c.username == username)
                     .values(password_hash=hash_password(PASSWORD)))  # fmt: skip
    client = browser_client(server.url)
    if lang:
        client.get(f"/portal/lang/{lang}")
    assert sign_in(client, username).status_code == 303
    return client, csrf_of(client.get("/portal/reading"))


def test_reading_through_the_pages(services, server):
    net = reading_net.build(services)
    study, uid = reading_net.ct_study(services, net)
    req, token = session(services, server, net.requester)
    form = req.get(f"/portal/reading/new?study={study}")
    assert form.status_code == 200 and "申请远程阅片" in form.text
    assert f'value="{study}" id="study-{study}" checked' in form.text
    bad = req.post("/portal/reading", data={"csrf_token": token, "centre": net.centre})
    assert bad.status_code == 422
    made = req.post("/portal/reading", data={"csrf_token": token, "centre": net.centre, "study": study,
                                             "priority": "urgent", "question": "肺部占位？"})  # fmt: skip
    assert made.status_code == 303
    rid = made.headers["location"].rsplit("/", 1)[1]

    rad, rtoken = session(services, server, net.radiologists[0])
    page = rad.get("/portal/reading?modality=CT")
    assert page.status_code == 200, page.text
    assert f'data-claim="{rid}"' in page.text and "加急" in page.text, page.text.split("<main")[-1][:3000]
    assert f'data-claim="{rid}"' not in rad.get("/portal/reading?modality=MR").text
    assert "等待阅片" in rad.get("/portal/").text
    assert rad.post(f"/portal/reading/{rid}/step/claim", data={"csrf_token": rtoken}).status_code == 303
    editor = rad.get(f"/portal/reading/{rid}")
    assert "扫描范围内所见" in editor.text and f"/portal/imaging/studies/{uid}/view" in editor.text
    assert "肺野" in rad.get(f"/portal/reading/{rid}?template=DX").text
    flagged = rad.post(f"/portal/reading/{rid}/critical", data={"csrf_token": rtoken, "text": "主动脉夹层"})
    assert flagged.status_code == 303
    signed = rad.post(f"/portal/reading/{rid}/report", data={
        "csrf_token": rtoken, "action": "sign", "technique": "CT 平扫", "findings": "右肺上叶结节 2 cm",
        "impression": "右肺上叶结节，考虑肺癌。", "recommendation": ""})  # fmt: skip
    assert signed.status_code == 303

    # The requester: the critical banner on the worklist, acknowledged; the signed PDF.
    listing = req.get("/portal/reading")
    assert "危急值" in listing.text and "主动脉夹层" in listing.text
    page = req.get(f"/portal/reading/{rid}")
    comm = page.text.split('data-ack-critical="')[1].split('"')[0]
    assert req.post(f"/portal/reading/{rid}/critical/{comm}/acknowledge", data={"csrf_token": token}).status_code == 303
    assert "data-ack-critical" not in req.get("/portal/reading").text
    page = req.get(f"/portal/reading/{rid}")
    pdf_url = page.text.split('id="report-pdf"')[0].rsplit('href="', 1)[1].split('"')[0]
    pdf = req.get(pdf_url)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    # Sharing with the third hospital, then revoking.
    shared = req.post(f"/portal/reading/{rid}/share", data={"csrf_token": token, "organization": net.other})
    assert shared.status_code == 303
    page = req.get(f"/portal/reading/{rid}")
    share_id = page.text.split('data-revoke="')[1].split('"')[0]
    assert req.post(f"/portal/reading/{rid}/share/{share_id}/revoke", data={"csrf_token": token}).status_code == 303
    assert "已撤销" in req.get(f"/portal/reading/{rid}").text

    # English.
    en, _t = session(services, server, net.radiologists[1], lang="en")
    assert "Remote reading" in en.get("/portal/reading").text
