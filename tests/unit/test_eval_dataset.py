"""BEIR dataset loading: gzipped or plain corpus, CRLF qrels, and what is refused."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from embedserve.evaluation.dataset import document_text, load_dataset, load_qrels

CORPUS = [
    {"_id": "10", "title": "Heart", "text": "Attacks are caused by plaque.", "metadata": {}},
    {"_id": "11", "title": "", "text": "Unrelated text.", "metadata": {}},
    {"_id": "12", "title": "Lungs", "text": "", "metadata": {}},
]
QUERIES = [{"_id": "1", "text": "What causes heart attacks?"}, {"_id": "2", "text": "not judged"}]


QRELS = "query-id\tcorpus-id\tscore\r\n1\t10\t1\r\n1\t12\t0\r\n"  # CRLF, as BEIR ships it


def _write(directory: Path, gz: bool = True, qrels: str = QRELS) -> Path:
    (directory / "qrels").mkdir(parents=True)
    lines = "".join(json.dumps(doc) + "\n" for doc in CORPUS)
    if gz:
        with gzip.open(directory / "corpus.jsonl.gz", "wt", encoding="utf-8") as out:
            out.write(lines)
    else:
        (directory / "corpus.jsonl").write_text(lines)
    (directory / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    (directory / "qrels" / "test.tsv").write_bytes(qrels.encode())
    return directory


@pytest.mark.parametrize("gz", [True, False])
def test_loads_a_beir_directory(tmp_path: Path, gz: bool) -> None:
    data = load_dataset(_write(tmp_path / "scifact-mini", gz))
    assert data.name == "scifact-mini"
    assert data.corpus == {"10": "Heart Attacks are caused by plaque.", "11": "Unrelated text.", "12": "Lungs"}
    assert data.queries == {"1": "What causes heart attacks?"}  # only the judged split's queries
    assert data.qrels == {"1": {"10": 1}}  # relevance 0 is not a judgement of relevance


def test_document_text_joins_title_and_body() -> None:
    assert document_text(" T ", " body ") == "T body"
    assert document_text("", "body") == "body"


def test_qrels_without_header(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("1\t10\t2\n1\t11\t1\n")
    assert load_qrels(path) == {"1": {"10": 2, "11": 1}}
    path.write_text("1\t10\n")
    with pytest.raises(ValueError, match="expected 3 tab-separated fields"):
        load_qrels(path)


def test_refuses_judgements_of_missing_documents(tmp_path: Path) -> None:
    directory = _write(tmp_path / "d", qrels="query-id\tcorpus-id\tscore\n1\t99\t1\n")
    with pytest.raises(ValueError, match=r"judged documents are not in the corpus: \['99'\]"):
        load_dataset(directory)


def test_refuses_a_directory_that_is_not_beir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"qrels/test\.tsv"):
        load_dataset(tmp_path)


def test_refuses_qrels_that_judge_nothing_relevant(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="judges no document relevant"):
        load_dataset(_write(tmp_path / "d", qrels="query-id\tcorpus-id\tscore\n1\t10\t0\n"))
