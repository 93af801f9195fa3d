"""The files users look for: CITATION.cff is valid Citation File Format 1.2.0 and cites the CLMLF paper, and the
licence that LICENSE grants is the one the package metadata declares.

The CFF check is the one the format's own repository runs on its 1.2.0 examples: the YAML (dates kept as strings)
against the format's JSON schema, with format checking. tests/data/citation-file-format-1.2.0.schema.json is that
schema as published at https://citation-file-format.github.io/1.2.0/schema.json (CC-BY-4.0, The Citation File
Format authors).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CITATION = PROJECT_ROOT / "CITATION.cff"
LICENSE = PROJECT_ROOT / "LICENSE"
CFF_SCHEMA = Path(__file__).parent / "data" / "citation-file-format-1.2.0.schema.json"
CLMLF_DOI = "10.18653/v1/2022.findings-naacl.175"
MIT_CLAUSES = (
    "Permission is hereby granted, free of charge, to any person obtaining a copy",
    "The above copyright notice and this permission notice shall be included in all",
    'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR',
)


class CffLoader(yaml.SafeLoader):
    """YAML as CFF reads it: `2022-07-10` stays the string the schema's date pattern checks."""


CffLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def load_cff(text: str) -> dict[str, Any]:
    return yaml.load(text, Loader=CffLoader)


def validate_cff(citation: dict[str, Any]) -> None:
    schema = json.loads(CFF_SCHEMA.read_text())
    jsonschema.validate(citation, schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def citation() -> dict[str, Any]:
    return load_cff(CITATION.read_text())


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]


def test_citation_file_is_valid_cff_1_2_0(citation: dict[str, Any]) -> None:
    assert citation["cff-version"] == "1.2.0"
    validate_cff(citation)


@pytest.mark.parametrize(
    "break_it",
    [
        lambda citation: citation.pop("authors"),
        lambda citation: citation["preferred-citation"].update({"type": "paper"}),
        lambda citation: citation["preferred-citation"].update({"doi": "not a doi"}),
        lambda citation: citation.update({"licence": citation.pop("license")}),
    ],
    ids=["no authors", "unknown reference type", "malformed doi", "misspelt key"],
)
def test_the_schema_check_rejects_a_broken_citation_file(citation: dict[str, Any], break_it) -> None:
    broken = copy.deepcopy(citation)
    break_it(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate_cff(broken)


def test_the_software_is_the_main_entry_and_the_clmlf_paper_the_preferred_citation(
    citation: dict[str, Any], project: dict[str, Any]
) -> None:
    assert citation["type"] == "software"
    assert citation["title"].startswith(project["name"])
    assert citation["version"] == project["version"]
    paper = citation["preferred-citation"]
    assert paper["type"] == "conference-paper"
    assert paper["title"].startswith("CLMLF: A Contrastive Learning and Multi-Layer Fusion Method")
    assert [(author["given-names"], author["family-names"]) for author in paper["authors"]] == [
        ("Zhen", "Li"),
        ("Bing", "Xu"),
        ("Conghui", "Zhu"),
        ("Tiejun", "Zhao"),
    ]
    assert paper["collection-title"] == "Findings of the Association for Computational Linguistics: NAACL 2022"
    assert (paper["start"], paper["end"], paper["year"]) == (2282, 2294, 2022)
    assert paper["doi"] == CLMLF_DOI


def test_license_file_grants_what_the_metadata_declares(citation: dict[str, Any], project: dict[str, Any]) -> None:
    text = LICENSE.read_text()
    assert text.splitlines()[0] == "MIT License"
    assert "Copyright (c) 2026 clmlf-studies contributors" in text
    for clause in MIT_CLAUSES:
        assert clause in text
    assert project["license"] == citation["license"] == "MIT"
    assert project["license-files"] == [LICENSE.name]


def test_the_build_backend_writes_the_license_into_the_package_metadata(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, setuptools.build_meta as b; print(b.prepare_metadata_for_build_wheel(sys.argv[1]))",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    metadata = (tmp_path / built.stdout.strip().splitlines()[-1] / "METADATA").read_text().splitlines()
    assert "License-Expression: MIT" in metadata
    assert "License-File: LICENSE" in metadata
