"""Structured report templates per modality: the sections a report has (findings, impression) and
the text a radiologist starts from, in the report's language (reports are issued in Chinese; an
English template is offered for the English portal)."""

from __future__ import annotations

from dataclasses import dataclass

SECTIONS = ("technique", "findings", "impression", "recommendation")
# (code, LOINC of the report section or None, zh title, en title)
SECTION_INFO = (
    ("technique", "55111-9", "检查方法", "Technique"),
    ("findings", "59776-5", "影像所见", "Findings"),
    ("impression", "19005-8", "诊断意见", "Impression"),
    ("recommendation", "18783-1", "建议", "Recommendation"),
)


@dataclass(frozen=True)
class Template:
    code: str
    modalities: tuple[str, ...]
    zh: dict[str, str]
    en: dict[str, str]

    def text(self, lang: str) -> dict[str, str]:
        return dict(self.en if lang.startswith("en") else self.zh)


TEMPLATES = (
    Template("CT", ("CT",),
             {"technique": "CT 平扫（层厚 5 mm），必要时增强扫描。",
              "findings": "扫描范围内所见：\n1. 实质密度：\n2. 占位或异常密度：\n3. 血管与淋巴结：\n4. 骨质结构：",
              "impression": "1. "},
             {"technique": "Non-contrast CT, 5 mm slices; contrast series if acquired.",
              "findings": "Within the scanned range:\n1. Parenchymal density:\n2. Masses or abnormal density:\n"
                          "3. Vessels and lymph nodes:\n4. Bones:",
              "impression": "1. "}),
    Template("MR", ("MR",),
             {"technique": "MRI：T1WI、T2WI、FLAIR、DWI 序列。",
              "findings": "1. 信号特点：\n2. 弥散受限：\n3. 占位效应：\n4. 增强表现：",
              "impression": "1. "},
             {"technique": "MRI: T1WI, T2WI, FLAIR, DWI.",
              "findings": "1. Signal:\n2. Restricted diffusion:\n3. Mass effect:\n4. Enhancement:",
              "impression": "1. "}),
    Template("DX", ("DX", "CR", "DR", "RF", "MG"),
             {"technique": "X 线摄影（正位/侧位）。",
              "findings": "1. 肺野：\n2. 肺门及纵隔：\n3. 心影：\n4. 膈面及肋膈角：\n5. 骨骼：",
              "impression": "1. "},
             {"technique": "Radiography (frontal/lateral).",
              "findings": "1. Lungs:\n2. Hila and mediastinum:\n3. Heart:\n4. Diaphragm and costophrenic angles:\n"
                          "5. Bones:",
              "impression": "1. "}),
    Template("US", ("US",),
             {"technique": "超声检查（经腹）。",
              "findings": "1. 大小、形态：\n2. 回声：\n3. 血流信号：\n4. 积液：",
              "impression": "1. "},
             {"technique": "Ultrasound (transabdominal).",
              "findings": "1. Size and shape:\n2. Echogenicity:\n3. Doppler flow:\n4. Fluid:",
              "impression": "1. "}),
    Template("OT", (),
             {"technique": "", "findings": "", "impression": ""},
             {"technique": "", "findings": "", "impression": ""}),
)  # fmt: skip
BY_CODE = {t.code: t for t in TEMPLATES}


def for_modality(modality: str | None) -> Template:
    """The template for a study's modality (DICOM code, e.g. ``CT``, ``CR``); a blank one otherwise."""
    for t in TEMPLATES:
        if (modality or "").upper() in t.modalities:
            return t
    return BY_CODE["OT"]
