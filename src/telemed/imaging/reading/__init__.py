"""Remote imaging reading (远程影像诊断): request → worklist → claim → structured report → signed
DiagnosticReport and PDF, critical findings (危急值), sharing a study with another institution and
anonymising studies for teaching. See docs/imaging.md."""
