"""``telemed ecg analyze PATH [--lead NAME] [--format json]``: re-analyse recordings from disk, in bulk."""

from __future__ import annotations

import argparse
import json
import sys

from telemed.ecg.analysis import analyze
from telemed.ecg.formats import read_path
from telemed.kernel.errors import TelemedError

_LABELS = {
    "heart_rate": ("Heart rate", "/min"), "rr_mean": ("Mean RR", "ms"), "sdnn": ("SDNN", "ms"),
    "rmssd": ("RMSSD", "ms"), "pr": ("PR", "ms"), "qrs": ("QRS", "ms"), "qt": ("QT", "ms"),
    "qtc_bazett": ("QTc Bazett", "ms"), "qtc_fridericia": ("QTc Fridericia", "ms"), "axis": ("QRS axis", "deg"),
}  # fmt: skip


def run_analyze(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    try:
        recording = read_path(args.path)
        result = analyze(recording, args.lead)
    except TelemedError as exc:
        print(f"error: {args.path}: {exc.message}", file=sys.stderr)
        return 2
    if args.format == "json":
        doc = {
            "path": args.path, "format": recording.format, "leads": recording.lead_names,
            "sampling_rate": recording.sampling_rate, "duration": recording.duration, "lead": result.lead,
            "beats": result.beats, "measurements": result.measurements(), "flags": result.flags,
            "software": result.software,
        }  # fmt: skip
        print(json.dumps(doc), file=out)
        return 0
    print(f"{args.path}: {recording.format}, {len(recording.leads)} leads, {recording.sampling_rate:g} Hz, "
          f"{recording.duration:.1f} s; analysed lead {result.lead}", file=out)  # fmt: skip
    print(f"beats ({len(result.beats)}): {' '.join(map(str, result.beats))}", file=out)
    for key, value in result.measurements().items():
        label, unit = _LABELS[key]
        print(f"  {label:<16} {'-' if value is None else f'{value:g}'} {unit}", file=out)
    print(f"  flags            {', '.join(result.flags) or 'none'}", file=out)
    return 0
