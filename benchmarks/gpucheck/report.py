"""The GPU check's reports: OUT_DIR/gpu_check.json and gpu_check.md (rewritten atomically after
every step, so a run cut short still leaves both, complete up to its last step) and the
one-screen summary printed at the end.

JSON: {title, dry_run, started, budget_s, command, steps: [step records], finished, and at the
end total_s, exit_code, kernel_disagrees}.  A step record (runner.run_step) holds name, title,
status (ok / failed / timeout / skipped), seconds, exit_code, log, and what the step returned:
summary, data, notes, highlights, tables ({title?, columns, rows}), kernel_disagrees, error.
Markdown: a table of the steps, then per step its summary, error, notes and tables.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import write_atomic


def md_table(columns: list[str], rows: list[list]) -> str:
    cell = lambda v: "" if v is None else str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


class Report:
    """OUT_DIR/gpu_check.json and gpu_check.md, rewritten atomically after every step."""

    def __init__(self, out_dir: Path, dry_run: bool, budget_s: float, argv: list[str]):
        self.out_dir = out_dir
        self.data = {"title": "GPU check" + (" (dry run)" if dry_run else ""), "dry_run": dry_run,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_s": budget_s,
                     "command": " ".join(argv), "steps": [], "finished": False}

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    def save(self) -> None:
        write_atomic(self.out_dir / "gpu_check.json", json.dumps(self.data, indent=1, default=str))
        write_atomic(self.out_dir / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        d = self.data
        lines = [f"# {d['title']}", "",
                 f"Started {d['started']}; budget {d['budget_s']:.0f} s; command `{d['command']}`."]
        if d.get("finished"):
            lines.append(f"Finished in {d['total_s']:.0f} s, exit status {d['exit_code']}.")
        env = next((s for s in self.steps if s["name"] == "env" and s.get("data")), None)
        spec = (env or {}).get("data", {}).get("spec") if env else None
        if spec:
            lines.append(f"Assumed device numbers: {spec['assumption']} ({spec['bandwidth_gbs']} GB/s, "
                         f"{spec['peak_bf16_tflops']} TFLOP/s bf16 dense).")
        lines += ["", md_table(["step", "status", "seconds", "summary"],
                               [[s["name"], s["status"], f"{s['seconds']:.1f}", s.get("summary", "")] for s in self.steps]), ""]
        for i, s in enumerate(self.steps, 1):
            lines += [f"## {i}. {s['title']} ({s['status']}, {s['seconds']:.1f} s)", "", s.get("summary", ""), ""]
            if s.get("error"):
                lines += ["```", s["error"].strip()[-3000:], "```", ""]
            for note in s.get("notes", []):
                lines.append(f"- {note}")
            if s.get("notes"):
                lines.append("")
            for table in s.get("tables", []):
                if table.get("title"):
                    lines += [f"**{table['title']}**", ""]
                lines += [md_table(table["columns"], table["rows"]), ""]
        return "\n".join(lines) + "\n"


def print_summary(report: Report, out_dir: Path) -> None:
    """One screen: a line per step (its highlights below it), where the reports and logs are."""
    d = report.data
    print("\n" + "=" * 100)
    print(f"{d['title']}: {d.get('total_s', 0):.0f} s of a {d['budget_s']:.0f} s budget, exit status {d.get('exit_code')}")
    env = next((s for s in report.steps if s["name"] == "env"), None)
    if env and env.get("summary"):
        print(f"  {env['summary']}")
    for s in report.steps:
        summary = (s.get("summary") or "").replace("\n", " ")
        print(f"  {s['name']:14s} {s['status']:8s} {s['seconds']:6.1f} s  {summary[:140]}")
        for note in s.get("highlights", [])[:6]:
            print(f"  {'':14s} - {note[:150]}")
    print(f"  results: {out_dir / 'gpu_check.md'} and {out_dir / 'gpu_check.json'}; logs: {out_dir / 'logs'}")
    print("=" * 100)
