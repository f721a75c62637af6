"""The ``telemed`` command: serve | migrate | dicom-scp | demo | token create | check."""

from __future__ import annotations

import argparse
import sys

from telemed.settings import Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from telemed.observability import configure_logging

    configure_logging(settings.log_level)
    workers = args.workers or settings.workers
    if workers > 1 and not settings.broker_url:
        print(
            "warning: several workers without TELEMED_BROKER_URL: websocket subscription notifications "
            "reach only sockets on the worker that delivers them",
            file=sys.stderr,
        )
    dicom_port = settings.dicom_listen_port()
    if dicom_port:  # the DICOM service in threads of this process, beside the web workers
        try:
            _start_dicom(settings, dicom_port)
        except OSError as exc:  # e.g. the port is taken: the web platform still starts
            print(f"warning: DICOM service not started on port {dicom_port}: {exc}", file=sys.stderr)
    uvicorn.run(
        "telemed.app:app_factory",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
    )
    return 0


def _start_dicom(settings: Settings, port: int, ae_title: str | None = None, host: str | None = None):
    from telemed.app import Services, dicom_service

    service = dicom_service(
        Services.from_settings(settings),
        ae_title=ae_title or settings.dicom_ae_title,
        host=host or "0.0.0.0",
        port=port,
    )
    return service.start()


def _dicom_scp(settings: Settings, args: argparse.Namespace) -> int:
    import time

    from telemed.observability import configure_logging

    configure_logging(settings.log_level)
    service = _start_dicom(settings, args.port or settings.dicom_listen_port() or 11112, args.ae_title, args.host)
    print(f"DICOM service {service.ae_title} listening on {service.host}:{service.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        service.stop()


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from telemed.db.engine import make_engine
    from telemed.db.migrate import upgrade

    upgrade(make_engine(settings.database_url))
    print("database is at the latest migration")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from telemed.app import Services
    from telemed.demo.loader import load_demo

    services = Services.from_settings(settings)
    if args.if_empty:
        from telemed.demo.loader import database_is_empty

        if not database_is_empty(services):
            print("database already has data; demo network not loaded")
            return 0
    counts = load_demo(services)
    print("demo network: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    from telemed.demo.loader import DEMO_PASSWORD, demo_accounts

    accounts = demo_accounts()
    print(f"demo users (password {DEMO_PASSWORD!r}, two-factor off in demo mode):")
    for username, name, roles, org, _ in accounts[:8]:
        print(f"  {username:<12} {name:<10} {','.join(roles):<32} {org or ''}")
    print(f"  ... and {len(accounts) - 8} more: every demo practitioner logs in with its id (prac-001 ...)")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from telemed.db.engine import make_engine, unit_of_work
    from telemed.identity import TokenKeys, get_account, issue_token
    from telemed.kernel.clock import SystemClock

    engine = make_engine(settings.database_url)
    with unit_of_work(engine, write=False) as conn:
        acct = get_account(conn, args.user)
    if acct is None or not acct.active:
        print(
            f"error: no active account named {args.user!r} (run 'telemed demo' for the demo accounts)", file=sys.stderr
        )
        return 2
    scopes = args.scope or ["user/*.*"]
    ttl = args.ttl or settings.token_ttl_seconds
    token = issue_token(
        TokenKeys(engine, settings.resolved_secret_key(), max_ttl_seconds=settings.token_ttl_seconds),
        args.user,
        scopes,
        ttl,
        SystemClock().now(),
        list(acct.roles),
        organization=acct.organization_id,
        practitioner=acct.practitioner_id,
    )
    print(token)
    return 0


def _keys_rotate(settings: Settings, _args: argparse.Namespace) -> int:
    from telemed.db.engine import make_engine
    from telemed.fhir.store.rotation import remaining, rotate

    cipher = settings.field_cipher()
    engine = make_engine(settings.database_url)
    done = rotate(engine, cipher)
    left = remaining(engine, cipher)
    print(f"re-encrypted under key {cipher.current_id!r}: {done['resource']} current and "
          f"{done['resource_history']} historical versions")  # fmt: skip
    if left:
        print("still under old keys: " + ", ".join(f"{k}: {n}" for k, n in sorted(left.items())))
        return 1
    print("nothing is left under old keys: they may be removed from TELEMED_ENCRYPTION_KEYS")
    return 0


def _signing_keys(settings: Settings):
    from telemed.db.engine import make_engine
    from telemed.identity import TokenKeys

    return TokenKeys(make_engine(settings.database_url), settings.resolved_secret_key(),
                     max_ttl_seconds=settings.token_ttl_seconds)  # fmt: skip


def _keys_rotate_signing(settings: Settings, _args: argparse.Namespace) -> int:
    keys = _signing_keys(settings)
    kid, retired = keys.rotate()
    print(f"access tokens are now signed with key {kid}")
    for row in keys.describe():
        if row["kid"] in retired:
            until = f"{row['publish_until']:%Y-%m-%d %H:%M:%S %Z}"
            print(f"retired {row['kid']}: still published (its tokens verify) until {until}")
    return 0


def _keys_list_signing(settings: Settings, _args: argparse.Namespace) -> int:
    for row in _signing_keys(settings).describe():
        state = "active" if row["retired"] is None else ("published" if row["published"] else "withdrawn")
        until = f" until {row['publish_until']:%Y-%m-%d %H:%M:%S %Z}" if row["retired"] and row["published"] else ""
        unusable = "" if row["usable"] else " (cannot be opened with this secret)"
        print(f"{row['kid']}  {state}{until}  created {row['created']:%Y-%m-%d %H:%M:%S %Z}{unusable}")
    return 0


def _audit_verify(settings: Settings, _args: argparse.Namespace) -> int:
    from telemed.db.engine import make_engine
    from telemed.fhir.store.audit import seal, verify
    from telemed.kernel.clock import SystemClock

    engine = make_engine(settings.database_url)
    sealed = seal(engine, SystemClock())
    result = verify(engine)
    if result.ok:
        print(
            f"audit trail intact: {result.checked} events verified ({sealed} newly sealed, {result.unsealed} pending)"
        )
        return 0
    print(f"audit trail BROKEN: {result.problem}")
    return 1


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    from telemed.db.engine import make_engine
    from telemed.db.migrate import is_current

    problems = settings.problems()
    try:
        if not is_current(make_engine(settings.database_url)):
            problems.append("the database is not migrated: run 'telemed migrate'")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"the database is unreachable: {exc.__class__.__name__}: {exc}".splitlines()[0])
    for p in problems:
        print(f"problem: {p}")
    if not problems:
        print("configuration OK")
    return 1 if problems else 0


def _ecg_analyze(_settings: Settings, args: argparse.Namespace) -> int:
    from telemed.ecg.cli import run_analyze

    return run_analyze(args)


def _gateway(_settings: Settings, args: argparse.Namespace) -> int:
    from telemed.pathology.cli import run_gateway

    return run_gateway(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="telemed", description="Telemed regional telemedicine platform")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve the platform over HTTP")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.set_defaults(func=_serve)
    sub.add_parser("migrate", help="bring the database schema up to date").set_defaults(func=_migrate)
    p = sub.add_parser("dicom-scp", help="run the DICOM service alone (C-ECHO/STORE/FIND/MOVE/GET)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--ae-title")
    p.set_defaults(func=_dicom_scp)
    p = sub.add_parser("demo", help="load the demo network (idempotent)")
    p.add_argument("--if-empty", action="store_true", help="only when the database holds no resources")
    p.set_defaults(func=_demo)
    p = sub.add_parser("token", help="access tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="print a bearer access token (alone on the last line)")
    t.add_argument("--user", required=True)
    t.add_argument("--scope", action="append", help="SMART-style scope, e.g. user/*.read (repeatable)")
    t.add_argument("--ttl", type=int, help="lifetime in seconds")
    t.set_defaults(func=_token)
    sub.add_parser("check", help="print configuration problems").set_defaults(func=_check)
    p = sub.add_parser("audit", help="the audit trail")
    asub = p.add_subparsers(dest="audit_command", required=True)
    asub.add_parser("verify", help="check the hash chain; report the first broken link").set_defaults(
        func=_audit_verify
    )
    p = sub.add_parser("keys", help="field-encryption keys and access-token signing keys")
    ksub = p.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser("rotate", help="re-encrypt stored fields under the first (newest) key").set_defaults(
        func=_keys_rotate
    )
    ksub.add_parser(
        "rotate-signing", help="sign access tokens with a new key; the old one stays published until its tokens expire"
    ).set_defaults(func=_keys_rotate_signing)
    ksub.add_parser("list-signing", help="the access-token signing keys and their state").set_defaults(
        func=_keys_list_signing
    )
    p = sub.add_parser("ecg", help="ECG tools").add_subparsers(dest="ecg_command", required=True)
    e = p.add_parser("analyze", help="beats and measurements of a DICOM, HL7 aECG or WFDB (.hea) recording")
    e.add_argument("path")
    e.add_argument("--lead", help="the lead to analyse (default II, else I, V5, ...)")
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.set_defaults(func=_ecg_analyze)
    p = sub.add_parser("gateway", help="the site gateway: slides from a scanner's folder to the centre")
    from telemed.pathology.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=_gateway)
    args = parser.parse_args(argv)
    return args.func(Settings(), args)


if __name__ == "__main__":
    sys.exit(main())
