"""Run by the reference interpreter (FlagEmbedding installed): BGE-M3's three outputs as
``BGEM3FlagModel.encode`` gives them. Reads {"model": dir, "texts": [...], "max_length": n} on stdin,
writes {"dense", "sparse" (token id → weight), "colbert"} as JSON on stdout's last line."""

from __future__ import annotations

import json
import sys

from FlagEmbedding import BGEM3FlagModel

request = json.load(sys.stdin)
model = BGEM3FlagModel(request["model"], use_fp16=False, devices="cpu")
out = model.encode(
    request["texts"],
    return_dense=True,
    return_sparse=True,
    return_colbert_vecs=True,
    max_length=request["max_length"],
)
print(
    json.dumps(
        {
            "dense": out["dense_vecs"].tolist(),
            "sparse": [{str(k): float(v) for k, v in weights.items()} for weights in out["lexical_weights"]],
            "colbert": [vectors.tolist() for vectors in out["colbert_vecs"]],
        }
    )
)
