#!/usr/bin/python3
"""The analysis `moescope analyze --similarity router-logits,weight` does, done the way MC-SMoE's code does it:
PyTorch on the CPU, every tensor converted to float32, torch.linalg.svdvals for each expert matrix's stable rank.
bench/torchcmp.sh runs it beside moescope on the same generated checkpoint (make bench) and compares both the
times and the numbers.

usage: mcsmoe_analyze.py MODEL_DIR CALIB.safetensors --json OUT

Reads a single-file safetensors checkpoint of the OLMoE or Mixtral layout (what bench/genmodel writes) without the
safetensors package: the header is JSON, BF16 is the top half of a float32. Per MoE block: router logits X R^T on
the calibration tokens; usage frequency of each expert among the top-k selections; router-logits similarity
(cosine of the logit columns) and weight similarity (cosine of the flattened gate | up | down), both mapped to
[0, 1] as (cos + 1) / 2; stable rank |W|_F^2 / sigma_max^2 of gate, up and down from all singular values. Prints
the seconds taken (reading and converting the tensors included, Python's start and torch's import not)."""
import json
import os
import re
import struct
import sys
import time

import numpy as np
import torch

LAYOUTS = {
    # family: router suffix, expert infix, gate / up / down matrix names
    "olmoe": ("mlp.gate.weight", "mlp.experts.", ("gate_proj", "up_proj", "down_proj")),
    "mixtral": ("block_sparse_moe.gate.weight", "block_sparse_moe.experts.", ("w1", "w3", "w2")),
}


class SafeTensors:
    def __init__(self, path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            self.header = json.loads(f.read(n))
        self.data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

    def get(self, name):
        info = self.header[name]
        begin, end = info["data_offsets"]
        raw = self.data[begin:end]
        if info["dtype"] == "BF16":
            half = torch.from_numpy(np.array(raw.view(np.int16)))
            t = (half.to(torch.int32) << 16).view(torch.float32)
        elif info["dtype"] == "F16":
            t = torch.from_numpy(np.array(raw.view(np.float16))).float()
        elif info["dtype"] == "F32":
            t = torch.from_numpy(np.array(raw.view(np.float32)))
        else:
            raise SystemExit(f"{name}: dtype {info['dtype']} not handled")
        return t.reshape(info["shape"])


def cosine_mapped(rows):
    """(cos + 1) / 2 between the rows of rows [n, m], in float64 as moescope sums."""
    rows = rows.double()
    norm = rows.norm(dim=1, keepdim=True).clamp_min(1e-300)
    unit = rows / norm
    return ((unit @ unit.T) + 1.0) / 2.0


def cosine_mapped_chunked(rows, chunk=1 << 20):
    """cosine_mapped for long rows: the Gram matrix summed in float64 over slices of columns, so that no float64
    copy of all the rows is made (gigabytes for an OLMoE block)."""
    n = rows.shape[0]
    gram = torch.zeros(n, n, dtype=torch.float64)
    for c in range(0, rows.shape[1], chunk):
        part = rows[:, c:c + chunk].double()
        gram += part @ part.T
    norm = gram.diagonal().sqrt().clamp_min(1e-300)
    return (gram / norm[:, None] / norm[None, :] + 1.0) / 2.0


def main():
    if len(sys.argv) != 5 or sys.argv[3] != "--json":
        raise SystemExit(__doc__.split("\n\n")[1])
    model_dir, calib_path, out = sys.argv[1], sys.argv[2], sys.argv[4]
    config = json.load(open(f"{model_dir}/config.json"))
    family = config["model_type"]
    router_suffix, infix, mats = LAYOUTS[family]
    E = config.get("num_experts", config.get("num_local_experts"))
    k = config["num_experts_per_tok"]
    torch.set_num_threads(len(os.sched_getaffinity(0)))   # every core, as moescope uses (torch may run fewer)
    t0 = time.time()
    model = SafeTensors(f"{model_dir}/model.safetensors")
    calib = SafeTensors(calib_path)
    report = {"threads": torch.get_num_threads(), "blocks": []}
    for name in sorted(model.header):
        m = re.fullmatch(r"model\.layers\.(\d+)\." + re.escape(router_suffix), name)
        if not m:
            continue
        layer = int(m.group(1))
        prefix = f"model.layers.{layer}."
        router = model.get(name)                                       # [E, d]
        x = calib.get(prefix + router_suffix[: -len("gate.weight")] + "input")  # [T, d] the block's inputs
        logits = x @ router.T                                            # [T, E]
        top = torch.topk(logits, k, dim=1).indices
        freq = torch.bincount(top.flatten(), minlength=E).double() / top.numel()
        sim_logits = cosine_mapped(logits.T)
        flat, srank = [], {mat: [] for mat in ("gate", "up", "down")}
        for e in range(E):
            ws = [model.get(f"{prefix}{infix}{e}.{mat}.weight") for mat in mats]
            flat.append(torch.cat([w.flatten() for w in ws]))
            for kind, w in zip(("gate", "up", "down"), ws):
                s = torch.linalg.svdvals(w)
                srank[kind].append(float((s.double() ** 2).sum() / s[0].double() ** 2))
        stacked = torch.stack(flat)                                      # [E, 3 d f] float32
        del flat
        sim_weight = cosine_mapped_chunked(stacked)
        del stacked
        report["blocks"].append({"label": str(layer), "frequency": freq.tolist(), "stable_rank": srank,
                                 "similarity": {"router-logits": sim_logits.tolist(),
                                                "weight": sim_weight.tolist()}})
    report["seconds"] = time.time() - t0
    json.dump(report, open(out, "w"))
    print(f"{report['seconds']:.2f}")


if __name__ == "__main__":
    main()
