"""The study's reported numbers (Patel & Jain 2024), read from one committed file and checked.

`references/patel_jain_2024.yaml` (layout.STUDY_REFERENCE) holds the numbers the report sets beside ours, each
with its source; numbers nobody stated are null, not guessed. :func:`load_study` validates the file with pydantic
(strict types, no unknown keys), so a mistyped number is refused with one line naming the key, not carried into a
table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.types import Strict

__all__ = ["Reported", "StudyReference", "StudyError", "load_study", "STUDY_METRICS"]

STUDY_METRICS = ("accuracy", "precision", "recall", "entropy", "purity")


class StudyError(ValueError):
    """The study reference file is missing or malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reported(_Strict):
    """One reported number and where it was taken from."""

    value: Annotated[float, Strict()]
    source: Annotated[str, Strict(), Field(min_length=1)]


class MethodNumbers(_Strict):
    """A method's best model as the study reports it; None = not stated by any source at hand."""

    accuracy: Reported | None
    precision: Reported | None
    recall: Reported | None
    entropy: Reported | None
    purity: Reported | None


class TestSetNumbers(_Strict):
    images: Annotated[int, Strict(), Field(gt=0)]
    images_approximate: Annotated[bool, Strict()]
    all_other_rate: Reported


class Inconsistency(_Strict):
    claim: Annotated[str, Strict()]
    why: Annotated[str, Strict()]
    source: Annotated[str, Strict()]


class StudyReference(_Strict):
    citation: Annotated[str, Strict(), Field(min_length=1)]
    selection: Literal["test", "val"]  # the split the study chose its best models on
    test_set: TestSetNumbers
    methods: dict[Literal["kmeans", "dbscan", "ocsvm"], MethodNumbers]
    inconsistencies: list[Inconsistency]


def _line(path: Path, err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"])
    what = {"float_type": "expected a number", "int_type": "expected an integer", "bool_type": "expected true/false",
            "string_type": "expected a string", "missing": "missing", "extra_forbidden": "unknown key",
            "literal_error": "expected one of " + str(err.get("ctx", {}).get("expected", ""))}.get(
        err["type"], err["msg"])
    got = "" if err["type"] in ("missing", "extra_forbidden") else f", got {err.get('input')!r}"
    return f"{path}: {key}: {what}{got}"


def load_study(path: str | Path) -> StudyReference:
    """The study's numbers from `path`; a missing file, bad YAML or a wrong type -> StudyError, one line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: missing (the study's reported numbers; a committed file, see README)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    try:
        return StudyReference.model_validate(raw)
    except ValidationError as e:
        raise StudyError(_line(path, e.errors(include_url=False)[0])) from None
