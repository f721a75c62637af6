"""Pathology case pages over HTTP: request form -> worklist (frozen first, time left) -> claim ->
preliminary result -> report -> signed PDF -> acknowledgement; errors in the user's language;
registering a site gateway shows its secret once."""

from __future__ import annotations

import re

from sqlalchemy import update

from telemed.db.engine import unit_of_work
from telemed.db.schema import account
from telemed.identity import ensure_account
from telemed.identity.passwords import hash_password
from tests.identity.test_authentication import PASSWORD
from tests.pathology import cases_net
from tests.portal.conftest import browser_client, csrf_of, sign_in


def session(services, server, username, roles=None, org=None, lang=None):
    with unit_of_work(services.engine) as conn:
        if roles:
            ensure_account(conn, username, username, roles, services.clock.now(), None, org)
        conn.execute(update(account).where(account.c.username == username)
                     .values(password_hash=hash_password(PASSWORD)))  # fmt: skip
    client = browser_client(server.url)
    if lang:
        client.get(f"/portal/lang/{lang}")
    assert sign_in(client, username).status_code == 303
    return client, csrf_of(client.get("/portal/pathology/cases"))


def test_frozen_section_through_the_pages(services, server):
    net = cases_net.build(services)
    req, token = session(services, server, net.requester)
    form = req.get("/portal/pathology/cases/new")
    assert form.status_code == 200 and "术中冰冻" in form.text and net.centre in form.text
    # A frozen section without the call-back number is refused, in Chinese.
    data = {"csrf_token": token, "kind": "frozen", "centre": net.centre, "slide": net.slides, "accession": "F26-007",
            "site": "左乳肿物", "history": "左乳肿物2周", "gross": "灰白结节 2 cm", "question": "良恶性？",
            "theatre": "3号手术间"}  # fmt: skip
    bad = req.post("/portal/pathology/cases", data=data)
    assert bad.status_code == 422 and "A frozen section needs" not in bad.text and "回电" in bad.text
    made = req.post("/portal/pathology/cases", data={**data, "callback": "13900001111"})
    assert made.status_code == 303
    url = made.headers["location"]
    cid = url.rsplit("/", 1)[1]

    p1, t1 = session(services, server, net.pathologists[0])
    home = p1.get("/portal/").text.split('id="home-pathology"')[1].split("</section>")[0]
    assert f"/portal/pathology/cases/{cid}" in home and "剩余" in home
    work = p1.get("/portal/pathology/cases")
    assert work.status_code == 200
    frozen = work.text.split('id="frozen"')[1].split("</section>")[0]
    assert cid in frozen and "分钟" in frozen and 'data-deadline="' in frozen
    assert p1.post(f"{url}/step/claim", data={"csrf_token": t1}).status_code == 303
    page = p1.get(url)
    assert page.status_code == 200 and 'id="send-preliminary"' in page.text and 'id="sign-report"' in page.text
    assert "灰白结节 2 cm" in page.text  # the gross description prefills the report
    assert p1.post(f"{url}/preliminary", data={"csrf_token": t1, "text": "浸润性癌，待石蜡确诊"}).status_code == 303
    sections = {"gross": "灰白结节 2 cm", "microscopic": "癌细胞呈巢状浸润", "diagnosis": "（左乳）浸润性导管癌",
                "ihc": "ER、PR、HER2、Ki-67", "comments": ""}  # fmt: skip
    # Signing without a diagnosis is refused with the reason.
    empty = p1.post(f"{url}/report", data={"csrf_token": t1, **sections, "diagnosis": "", "action": "sign"})
    assert empty.status_code == 422 and "诊断" in empty.text
    assert p1.post(f"{url}/report", data={"csrf_token": t1, **sections, "action": "sign"}).status_code == 303

    mine = req.get(url)
    assert "浸润性癌，待石蜡确诊" in mine.text and 'id="acknowledge"' in mine.text
    pdf_url = re.search(r'href="(/portal/pathology/cases/[^"]+\.pdf)"', mine.text).group(1)
    pdf = req.get(pdf_url)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert req.post(f"{url}/step/acknowledge", data={"csrf_token": token}).status_code == 303
    assert "已确认" in req.get(url).text
    # An amendment needs its reason; the new PDF replaces the first, marked amended.
    amended = {**sections, "diagnosis": "（左乳）浸润性导管癌，II级"}
    assert p1.post(f"{url}/report", data={"csrf_token": t1, **amended, "action": "amend"}).status_code == 422
    assert p1.post(f"{url}/report", data={"csrf_token": t1, **amended, "action": "amend",
                                          "reason": "补充组织学分级"}).status_code == 303  # fmt: skip
    page = req.get(url).text
    assert "已修订" in page and "II级" in page and len(re.findall(r'id="report-pdf"', page)) == 1
    # The same page in English.
    req.get("/portal/lang/en")
    english = req.get(url).text
    assert "Frozen section" in english and "Preliminary result" in english and "Signed report (PDF)" in english
    # Another county's doctor sees nothing.
    other, _t = session(services, server, "dr-other-" + cid[:6], ["requesting-doctor"], net.other)
    assert other.get(url).status_code == 404 and other.get(pdf_url).status_code == 404


def test_gateway_registration_shows_the_secret_once(services, server):
    net = cases_net.build(services)
    admin = "admin-" + net.county[-8:]
    client, token = session(services, server, admin, ["institution-admin"], net.county)
    page = client.post("/portal/pathology/gateways", data={"csrf_token": token, "name": "病理科扫描仪"})
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    client_id = re.search(r'id="gateway-client-id">([^<]+)<', page.text).group(1)
    secret = re.search(r'id="gateway-secret">([^<]+)<', page.text).group(1)
    assert len(secret) > 30
    listed = client.get("/portal/pathology/gateways").text
    assert client_id in listed and secret not in listed and "从未" in listed
    # The credentials work: the gateway gets a token.
    import httpx

    r = httpx.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert r.status_code == 200, r.text
    # Nameless is refused; a doctor may not register gateways.
    assert client.post("/portal/pathology/gateways", data={"csrf_token": token, "name": " "}).status_code == 422
    doc, t = session(services, server, net.requester)
    assert doc.post("/portal/pathology/gateways", data={"csrf_token": t, "name": "x"}).status_code == 403
