"""The DICOM upper-layer service (pynetdicom): C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET SCP.

- Verification (PS3.4 Annex A), Storage (Annex B) for every storage SOP class in the common
  transfer syntaxes (uncompressed, deflate, JPEG baseline/lossless, JPEG-LS, JPEG 2000, RLE),
  Query/Retrieve (Annex C) Patient Root and Study Root: FIND, MOVE and GET.
- Only known AEs associate: the calling AE title must be an active FHIR ``Endpoint`` (see
  :func:`telemed.imaging.service.find_ae`) and, unless the Endpoint's host is ``*``, the
  connection must come from its host; anything else gets A-ASSOCIATE-RJ "calling AE title not
  recognised" (PS3.8 §9.3.4). The AE then acts as a scoped member of its institution, so it finds
  and retrieves only what that institution may see, and C-MOVE goes only to AEs of the same
  institution.
- A handler never lets an exception drop the association: it is logged and answered with a
  failure status (PS3.7 Annex C: 0xC000-range for processing failures, 0xA7xx/0xA9xx refusals).
- After an instance is stored, the ``after_store`` hooks run (a higher layer registers them, e.g.
  the app routes ECG waveforms into the ECG reading pools: imaging imports no other domain). A hook
  that raises turns the C-STORE response into a failure (0xC000 with the reason as Error Comment):
  the instance is kept, and the sender's retry stores it again and re-runs the hook.
- ``TCP_NODELAY`` on every association: DIMSE messages are small, and Nagle's algorithm with
  delayed ACKs otherwise holds each C-STORE response ~40 ms.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_context, evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from telemed.db.engine import unit_of_work
from telemed.fhir.store import audit
from telemed.imaging import index
from telemed.imaging.model import NonConformant
from telemed.imaging.service import Platform, RemoteAE, StoreResult, find_ae, refresh_stale, store_instance

log = logging.getLogger("telemed.imaging.scp")

DEFAULT_AE_TITLE = "TELEMED"
DEFAULT_PORT = 11112
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
QR_FIND = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
QR_MOVE = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
QR_GET = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
AE_CACHE_SECONDS = 5.0

# Status codes (PS3.4 Annex B.2.3, C.4.1.1.4, C.4.2.1.5, C.4.3.1.4)
SUCCESS = 0x0000
PENDING = 0xFF00
STORE_FAILED = 0xC000  # Error: cannot understand
FIND_FAILED = 0xC000  # Unable to process
MOVE_UNKNOWN_DESTINATION = 0xA801
RETRIEVE_FAILED = 0xC000
SUBOPS_FAILED = 0xB000  # Warning: sub-operations complete, one or more failures
IDENTIFIER_INVALID = 0xA900


@dataclass(frozen=True)
class Received:
    """An instance a known AE has just stored by C-STORE, as given to the ``after_store`` hooks."""

    remote: RemoteAE
    raw: bytes  # the Part 10 file as stored
    result: StoreResult
    priority: int  # the C-STORE request's Priority (PS3.7 §9.1.1.1): 0 medium, 1 high, 2 low


def _nodelay(event) -> None:
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - a socket closed under us
            pass


class _BusyDUL(DULServiceProvider):
    """pynetdicom's DUL thread polls its socket and queues, sleeping ``_run_loop_delay`` (1 ms) whenever
    a turn found nothing to do; a C-STORE waits for that sleep twice (its request arriving, its response
    leaving): up to 2 ms of every instance of a modality sending one image at a time. While images
    arrive on one association alone, its DUL polls every 0.2 ms instead, back to 1 ms a second after the
    last one. Several associations storing at once keep 1 ms: then the CPU (one GIL) is what limits,
    and each polling thread would take from it, while the others' instances fill the waits."""

    telemed_busy_until = 0.0

    @property  # type: ignore[override]
    def _run_loop_delay(self) -> float:
        return BUSY_POLL if not _storing.crowded and time.monotonic() < self.telemed_busy_until else IDLE_POLL

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:  # pynetdicom's __init__ sets it
        pass


BUSY_POLL, IDLE_POLL = 0.0002, 0.001


class _Storing:
    """The associations that stored an instance within the last second."""

    def __init__(self) -> None:
        self.until: dict[int, float] = {}
        self.crowded = False

    def busy(self, assoc) -> None:
        dul = assoc.dul
        if not isinstance(dul, _BusyDUL):
            return
        now = time.monotonic()
        dul.telemed_busy_until = self.until[id(dul)] = now + 1.0
        for key, until in list(self.until.items()):
            if until < now:
                self.until.pop(key, None)
        self.crowded = len(self.until) > 1


_storing = _Storing()


def _on_conn_open(event) -> None:
    _nodelay(event)
    dul = event.assoc.dul
    if type(dul) is DULServiceProvider:  # (the reactor has not started: its class can still change)
        dul.__class__ = _BusyDUL


def _identifier_dict(ds: Dataset) -> dict[str, str]:
    out = {}
    for elem in ds:
        if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or not elem.keyword:
            continue
        if elem.VR == "SQ":
            continue
        value = elem.value
        if value is None:
            out[elem.keyword] = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            out[elem.keyword] = "\\".join(str(v) for v in value)
        else:
            out[elem.keyword] = str(value)
    return out


def _response(level: str, requested: Dataset, row: dict, retrieve_ae: str) -> Dataset:
    ds = Dataset()
    non_ascii = False
    for elem in requested:
        kw = elem.keyword
        if not kw or kw == "SpecificCharacterSet":
            continue
        if kw == "QueryRetrieveLevel":
            ds.QueryRetrieveLevel = level
            continue
        value = row.get(kw)
        if value is None:
            ds.add_new(elem.tag, elem.VR, None)
            continue
        if isinstance(value, str) and not value.isascii():
            non_ascii = True
        try:
            setattr(ds, kw, value)
        except (TypeError, ValueError):
            ds.add_new(elem.tag, elem.VR, None)
    if "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = level
    ds.RetrieveAETitle = retrieve_ae
    if non_ascii:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


class DicomService:
    """The platform's DICOM AE; :meth:`start` listens in background threads until :meth:`stop`."""

    def __init__(
        self, platform: Platform, ae_title: str = DEFAULT_AE_TITLE, host: str = "0.0.0.0", port: int = DEFAULT_PORT
    ):
        self.platform = platform
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self._server = None
        self._aes: dict[str, tuple[float, RemoteAE | None]] = {}
        self._touched: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.after_store: list[Callable[[Received], None]] = []
        self.ae = self._build_ae()

    # -- set-up ----------------------------------------------------------------------------------
    def _build_ae(self) -> AE:
        ae = AE(ae_title=self.ae_title)
        ae.require_called_aet = True
        ae.maximum_pdu_size = 0  # no limit: fewer P-DATA fragments for large instances
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.maximum_associations = 32
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            # SCU and SCP roles: storage SCU for C-STORE, and our storage SCU role towards a
            # C-GET requestor that offers to act as storage SCP (PS3.7 §D.3.3.4).
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        for sop in (*QR_FIND, *QR_MOVE, *QR_GET):
            ae.add_supported_context(sop, TRANSFER_SYNTAXES[:3])
        return ae

    def handlers(self) -> list:
        return [
            (evt.EVT_CONN_OPEN, _on_conn_open),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_C_MOVE, self.on_move),
            (evt.EVT_C_GET, self.on_get),
            (evt.EVT_RELEASED, self.on_ended),
            (evt.EVT_ABORTED, self.on_ended),
            (evt.EVT_CONN_CLOSE, self.on_ended),
        ]

    def start(self) -> DicomService:
        # pynetdicom logs every message at INFO: thousands of lines a minute on a busy service.
        if logging.getLogger("pynetdicom").level == logging.NOTSET:
            logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        try:  # an association cut off earlier may have left ImagingStudy resources behind the index
            refresh_stale(self.platform)
        except Exception:  # noqa: BLE001 - the service starts anyway; the next release refreshes
            log.exception("refreshing stale ImagingStudy resources failed")
        self._server = self.ae.start_server((self.host, self.port), block=False, evt_handlers=self.handlers())
        self.port = self._server.server_address[1]
        log.info("DICOM service %s listening on %s:%s", self.ae_title, self.host, self.port)
        return self

    def serve_forever(self) -> None:
        self.start()
        try:
            while True:
                time.sleep(3600)
        finally:
            self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # -- who is calling --------------------------------------------------------------------------
    def remote(self, ae_title: str) -> RemoteAE | None:
        now = time.monotonic()
        cached = self._aes.get(ae_title)
        if cached is not None and now - cached[0] < AE_CACHE_SECONDS:
            return cached[1]
        with unit_of_work(self.platform.engine, write=False) as conn:
            found = find_ae(conn, self.platform, ae_title)
        self._aes[ae_title] = (now, found)
        return found

    def forget_aes(self) -> None:
        self._aes.clear()

    def caller(self, assoc) -> RemoteAE | None:
        return getattr(assoc, "telemed_remote", None)

    def on_requested(self, event) -> None:
        assoc = event.assoc
        calling = (assoc.requestor.primitive.calling_ae_title or "").strip()
        try:
            remote = self.remote(calling)
        except Exception:  # noqa: BLE001 - the registry is unreachable: a transient rejection
            log.exception("looking up calling AE %r failed", calling)
            _reject(assoc, 0x02, 0x02, 0x01)
            return
        peer = assoc.requestor.address
        if remote is None or (remote.host not in (None, "*", "0.0.0.0") and not _same_host(remote.host, peer)):
            log.warning("association from unknown AE %r at %s rejected", calling, peer)
            _reject(assoc, 0x01, 0x01, 0x03)
            return
        assoc.telemed_remote = remote

    # -- services --------------------------------------------------------------------------------
    def on_echo(self, event) -> int:
        return SUCCESS

    def on_store(self, event) -> int | Dataset:
        _storing.busy(event.assoc)
        remote = self.caller(event.assoc)
        if remote is None:
            return 0x0124  # Refused: not authorised
        try:
            raw = event.encoded_dataset(include_meta=True)
            req = event.request
            result = store_instance(
                self.platform,
                remote.context,
                raw,
                sop_class_uid=str(req.AffectedSOPClassUID),
                sop_instance_uid=str(req.AffectedSOPInstanceUID),
            )
        except NonConformant as exc:
            log.warning("C-STORE from %s refused: %s", remote.ae_title, exc)
            return exc.status
        except Exception:  # noqa: BLE001 - a failure status, never a dropped association
            log.exception("C-STORE from %s failed", remote.ae_title)
            return 0xC001
        with self._lock:
            self._touched.setdefault(id(event.assoc), set()).add(result.study_uid)
        for hook in self.after_store:
            try:
                hook(Received(remote, raw, result, int(getattr(req, "Priority", 0) or 0)))
            except Exception as exc:  # noqa: BLE001 - a failure status with the reason, never a dropped association
                log.warning("C-STORE from %s: %s after storing failed: %s", remote.ae_title, hook, exc)
                status = Dataset()
                status.Status = 0xC000
                status.ErrorComment = str(getattr(exc, "message", exc))[:64]
                return status
        return SUCCESS

    def on_ended(self, event) -> None:
        with self._lock:
            studies = self._touched.pop(id(event.assoc), None)
        if studies:
            refresh_stale(self.platform, studies)

    def _audit(self, remote: RemoteAE, interaction: str, outcome: str, description: str) -> None:
        try:
            with unit_of_work(self.platform.engine) as conn:
                rec = audit.AuditRecord(interaction, outcome, "ImagingStudy", None, None, description=description)
                audit.record(conn, remote.context, rec, self.platform.clock)
        except Exception:  # noqa: BLE001 - auditing must not break the protocol; it is logged
            log.exception("could not audit %s", description)

    def on_find(self, event) -> Iterator:
        remote = self.caller(event.assoc)
        if remote is None:
            yield 0xA700, None
            return
        try:
            requested = event.identifier
            level = str(requested.get("QueryRetrieveLevel", "")).upper()
            if level not in index.LEVELS:
                yield IDENTIFIER_INVALID, None
                return
            criteria = list(_identifier_dict(requested).items())
            with unit_of_work(self.platform.engine, write=False) as conn:
                rows = index.query(conn, remote.context, self.platform.clock.now(), level, criteria)
            self._audit(remote, "search-type", "0", f"DICOM C-FIND {level} {criteria}"[:900])
        except index.UnsupportedKey:
            yield IDENTIFIER_INVALID, None
            return
        except Exception:  # noqa: BLE001
            log.exception("C-FIND from %s failed", remote.ae_title)
            yield FIND_FAILED, None
            return
        for row in rows:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield PENDING, _response(level, requested, row, self.ae_title)

    def _selected(self, event, remote: RemoteAE) -> list:
        requested = event.identifier
        level = str(requested.get("QueryRetrieveLevel", "")).upper()
        if level not in index.LEVELS:
            raise index.UnsupportedKey("QueryRetrieveLevel")
        with unit_of_work(self.platform.engine, write=False) as conn:
            return index.retrieve_keys(
                conn, remote.context, self.platform.clock.now(), level, _identifier_dict(requested)
            )

    def _load(self, blob_key: str) -> Dataset:
        ds = dcmread(io.BytesIO(self.platform.blobs.get(blob_key)))
        if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian:
            _to_little_endian(ds)
        return ds

    def on_move(self, event) -> Iterator:
        remote = self.caller(event.assoc)
        if remote is None:
            yield None, None
            return
        try:
            destination = self.remote(event.move_destination.strip() if event.move_destination else "")
            if destination is None or destination.organization != remote.organization or not destination.port:
                log.warning("C-MOVE from %s to unknown destination %r", remote.ae_title, event.move_destination)
                yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
                return
            rows = self._selected(event, remote)
            contexts = _contexts_for(rows)
        except Exception:  # noqa: BLE001
            log.exception("C-MOVE from %s failed", remote.ae_title)
            yield None, None
            return
        yield (
            destination.host,
            destination.port,
            {"contexts": contexts, "ae_title": destination.ae_title, "evt_handlers": [(evt.EVT_CONN_OPEN, _nodelay)]},
        )
        yield len(rows)
        self._audit(remote, "read", "0", f"DICOM C-MOVE {len(rows)} instances to {destination.ae_title}")
        yield from self._send(event, rows)

    def on_get(self, event) -> Iterator:
        remote = self.caller(event.assoc)
        if remote is None:
            yield 0
            return
        try:
            rows = self._selected(event, remote)
        except Exception:  # noqa: BLE001
            log.exception("C-GET from %s failed", remote.ae_title)
            yield 0
            return
        yield len(rows)
        self._audit(remote, "read", "0", f"DICOM C-GET {len(rows)} instances")
        yield from self._send(event, rows)

    def _send(self, event, rows) -> Iterator:
        for row in rows:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            try:
                ds = self._load(row.blob_key)
            except Exception:  # noqa: BLE001 - this sub-operation fails, the others go on
                log.exception("cannot load %s", row.sop_instance_uid)
                yield RETRIEVE_FAILED, _failed(row.sop_instance_uid)
                continue
            yield PENDING, ds


def _to_little_endian(ds: Dataset) -> None:
    """Explicit VR big endian (retired, PS3.5 §A.3) is sent as little endian: peers rarely accept it."""
    if "PixelData" in ds and int(ds.BitsAllocated) > 8:
        arr = ds.pixel_array
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.set_original_encoding(False, True, ds.original_character_set)


def _reject(assoc, result: int, source: int, diagnostic: int) -> None:
    """A-ASSOCIATE-RJ (PS3.8 §9.3.4), then wait for the DUL to send it before the socket closes."""
    assoc.acse.send_reject(result, source, diagnostic)
    evt.trigger(assoc, evt.EVT_REJECTED, {})
    assoc.kill()


def _failed(uid: str) -> Dataset:
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uid
    return ds


def _contexts_for(rows) -> list:
    """Presentation contexts of a C-MOVE sub-association: each SOP class in its stored transfer syntax,
    with the uncompressed ones as fallbacks (at most 128 contexts, PS3.8 §9.3.2.2)."""
    if not rows:
        return [build_context(Verification)]
    stored_as = {ExplicitVRBigEndian: ExplicitVRLittleEndian}  # what _load sends them as
    pairs = sorted({(r.sop_class_uid, stored_as.get(r.transfer_syntax, r.transfer_syntax)) for r in rows})
    contexts = []
    for sop_class, ts in pairs[:128]:
        syntaxes = [ts] + [t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != ts]
        contexts.append(build_context(sop_class, syntaxes))
    return contexts


def _same_host(registered: str, peer: str) -> bool:
    if registered == peer:
        return True
    try:
        return peer in {info[4][0] for info in socket.getaddrinfo(registered, None)}
    except OSError:
        return False
