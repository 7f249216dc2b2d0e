"""Run by the reference interpreter (pylate installed): build a PyLate ColBERT from a BERT directory
and save it, then encode with the saved model as it loads. Reads a JSON request on stdin, writes
JSON on stdout's last line.

  {"base": dir, "dest": dir, "query_length": n, "document_length": n, "embedding_size": n,
   "queries": [...], "documents": [...]}  →  {"queries": [vectors...], "documents": [vectors...]}
"""

from __future__ import annotations

import json
import sys

import torch
from pylate import models

spec = json.load(sys.stdin)
torch.manual_seed(0)
built = models.ColBERT(
    model_name_or_path=spec["base"],
    device="cpu",
    query_prefix="[Q] ",
    document_prefix="[D] ",
    query_length=spec["query_length"],
    document_length=spec["document_length"],
    embedding_size=spec["embedding_size"],
)
built.save(spec["dest"])
model = models.ColBERT(model_name_or_path=spec["dest"], device="cpu")
queries = model.encode(spec["queries"], is_query=True, convert_to_numpy=True)
documents = model.encode(spec["documents"], is_query=False, convert_to_numpy=True)
print(json.dumps({"queries": [q.tolist() for q in queries], "documents": [d.tolist() for d in documents]}))
