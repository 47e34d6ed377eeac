#!/usr/bin/env python3
"""Writes the generated seed inputs of tests/fuzz/corpus/ (run from the repository root; standard library only).

The seeds are small valid inputs of each format plus a few broken ones near the edges the parsers check, so that
fuzzing starts deep inside each parser instead of spending its time discovering the format. Files kept in the
corpus by hand (crash regressions, inputs libFuzzer found) are left alone; this script only rewrites its own.
"""
import json
import os
import shutil
import struct

CORPUS = "tests/fuzz/corpus"
GOLDEN = "tests/data/golden/msmoe-mixtral"


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < 20000, name
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


# ---- safetensors ----

DTYPES = {"F32": ("f", 4), "F16": ("e", 2), "BF16": (None, 2), "F64": ("d", 8), "I8": ("b", 1),
          "I16": ("h", 2), "I32": ("i", 4), "I64": ("q", 8), "U8": ("B", 1), "BOOL": ("B", 1)}


def values(dtype, n, seed):
    """n little-endian values of dtype: small distinct numbers (BF16 as the top half of float32)."""
    fmt, size = DTYPES[dtype]
    xs = [((seed * 7 + k * 5) % 13 - 6) / 4.0 for k in range(n)]
    if dtype == "BF16":
        return b"".join(struct.pack("<f", x)[2:] for x in xs)
    if dtype == "BOOL":
        return bytes(int(x > 0) for x in xs)
    if fmt in "bhiqB":
        return b"".join(struct.pack("<" + fmt, int(x * 4) % 100 if fmt == "B" else int(x * 4)) for x in xs)
    return b"".join(struct.pack("<" + fmt, x) for x in xs)


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape)] in file order. Returns the file's bytes."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for i, (name, dtype, shape) in enumerate(tensors):
        n = 1
        for s in shape:
            n *= s
        blob = values(dtype, n, i)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def raw(header_text, data=b""):
    h = header_text.encode()
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    put("safetensors", "tiny_f32.safetensors", safetensors([("a", "F32", [2, 3]), ("b", "F32", [4])],
                                                           {"format": "pt"}))
    put("safetensors", "every_dtype.safetensors", safetensors(
        [(f"t_{d.lower()}", d, [2, 2]) for d in DTYPES] + [("scalar", "F32", []), ("empty", "F16", [0, 3])]))
    put("safetensors", "expert_bf16.safetensors", safetensors(
        [("model.layers.0.block_sparse_moe.gate.weight", "BF16", [2, 4]),
         ("model.layers.0.block_sparse_moe.experts.0.w1.weight", "BF16", [4, 4])], {"format": "pt"}))
    put("safetensors", "unpadded.safetensors", safetensors([("x", "F16", [3, 1])], pad=False))
    put("safetensors", "nonfinite.safetensors", raw('{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',
                                                    struct.pack("<ff", float("nan"), float("inf"))))
    # broken near the checks: overlap, gap, size mismatch, duplicate, bad JSON, length past the end, huge shape
    put("safetensors", "bad_overlap.safetensors", raw(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)))
    put("safetensors", "bad_gap.safetensors", raw(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', bytes(12)))
    put("safetensors", "bad_size.safetensors", raw('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
                                                   bytes(8)))
    put("safetensors", "bad_duplicate.safetensors", raw(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)))
    put("safetensors", "bad_json.safetensors", raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]', bytes(4)))
    put("safetensors", "bad_length.safetensors", struct.pack("<Q", 1 << 40) + b"{}")
    put("safetensors", "bad_shape.safetensors", raw(
        '{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}', bytes(4)))
    put("safetensors", "truncated.safetensors", b"\x10\x00\x00")
    # quantized pairs (io/quant.h): FP8 codes with one F32 scale per 128 x 128 block, a partial edge block, a NaN
    # scale and a NaN code; MXFP4 blocks (two E2M1 codes a byte) with E8M0 scales, one of them 0xFF
    fp8 = [0x38, 0xB8, 0x01, 0x7E, 0xFE, 0x00, 0x40, 0x30]
    put("safetensors", "fp8_block.safetensors", raw(
        '{"w.weight":{"dtype":"F8_E4M3","shape":[2,4],"data_offsets":[0,8]},'
        '"w.weight_scale_inv":{"dtype":"F32","shape":[1,1],"data_offsets":[8,12]}}',
        bytes(fp8) + struct.pack("<f", 0.5)))
    put("safetensors", "fp8_edges.safetensors", raw(
        '{"w.weight":{"dtype":"F8_E4M3","shape":[3,4],"data_offsets":[0,12]},'
        '"w.weight_scale_inv":{"dtype":"BF16","shape":[2,2],"data_offsets":[12,20]}}',
        bytes(fp8 + [0x7F, 0x11, 0x22, 0x33]) + struct.pack("<f", 2.0)[2:] + b"\xc0\x7f" + bytes(4)))
    put("safetensors", "mxfp4.safetensors", raw(
        '{"e.down_proj_blocks":{"dtype":"U8","shape":[2,1,16],"data_offsets":[0,32]},'
        '"e.down_proj_scales":{"dtype":"U8","shape":[2,1],"data_offsets":[32,34]}}',
        bytes(range(0, 64, 2)) + bytes([127, 0xFF])))


# ---- config.json (against fuzz_config.c's fixed model: one block, E = 2, d = 4, f = 4) ----

def config_seeds():
    configs = {
        "mixtral": {"model_type": "mixtral", "hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1,
                    "num_local_experts": 2, "num_experts_per_tok": 2},
        "phimoe": {"model_type": "phimoe", "hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1,
                   "num_local_experts": 2, "num_experts_per_tok": 2},
        "qwen2_moe": {"model_type": "qwen2_moe", "hidden_size": 4, "intermediate_size": 8,
                      "moe_intermediate_size": 4, "shared_expert_intermediate_size": 4, "num_hidden_layers": 1,
                      "num_experts": 2, "num_experts_per_tok": 1, "norm_topk_prob": False,
                      "decoder_sparse_step": 1, "mlp_only_layers": []},
        "qwen3_moe": {"model_type": "qwen3_moe", "hidden_size": 4, "intermediate_size": 8,
                      "moe_intermediate_size": 4, "num_hidden_layers": 1, "num_experts": 2,
                      "num_experts_per_tok": 2, "norm_topk_prob": True, "decoder_sparse_step": 1,
                      "mlp_only_layers": []},
        "olmoe": {"model_type": "olmoe", "hidden_size": 4, "intermediate_size": 4, "num_hidden_layers": 1,
                  "num_experts": 2, "num_experts_per_tok": 1, "norm_topk_prob": False},
        "deepseek_v2": {"model_type": "deepseek_v2", "hidden_size": 4, "intermediate_size": 8,
                        "moe_intermediate_size": 4, "num_hidden_layers": 1, "n_routed_experts": 2,
                        "n_shared_experts": 1, "num_experts_per_tok": 1, "first_k_dense_replace": 0,
                        "routed_scaling_factor": 1.5, "topk_method": "greedy", "norm_topk_prob": False},
        "switch_transformers": {"model_type": "switch_transformers", "d_model": 4, "d_ff": 4, "num_layers": 2,
                                "num_decoder_layers": 2, "num_experts": 2, "encoder_sparse_step": 2,
                                "decoder_sparse_step": 2},
    }
    for name, cfg in configs.items():
        put("config", f"{name}.json", json.dumps(cfg, indent=1))
    put("config", "switch_counts.json", json.dumps(dict(configs["switch_transformers"], num_sparse_encoder_layers=1,
                                                        num_sparse_decoder_layers=1)))
    put("config", "deepseek_grouped.json", json.dumps(dict(configs["deepseek_v2"], topk_method="group_limited_greedy",
                                                           n_group=2, topk_group=2)))
    v3 = dict(configs["deepseek_v2"], model_type="deepseek_v3", n_group=2, topk_group=1, norm_topk_prob=True)
    del v3["topk_method"]
    put("config", "deepseek_v3_grouped.json", json.dumps(v3))
    put("config", "glm4_moe.json", json.dumps(dict(v3, model_type="glm4_moe", n_group=1, topk_group=1)))
    put("config", "bad_groups.json", json.dumps(dict(v3, n_group=3)))
    put("config", "gpt_oss.json", json.dumps({"model_type": "gpt_oss", "hidden_size": 4, "intermediate_size": 4,
                                              "num_hidden_layers": 1, "num_local_experts": 2,
                                              "num_experts_per_tok": 1, "sliding_window": 4,
                                              "layer_types": ["sliding_attention"]}))
    put("config", "golden_mixtral.json", open(os.path.join(GOLDEN, "model/config.json"), "rb").read())
    put("config", "bad_type.json", '{"model_type": "llama", "hidden_size": 4}')
    put("config", "bad_negative.json", json.dumps(dict(configs["mixtral"], num_local_experts=-2)))
    put("config", "bad_topk.json", json.dumps(dict(configs["mixtral"], num_experts_per_tok=3)))
    put("config", "bad_json.json", '{"model_type": "mixtral", "hidden_size": 4,')
    put("config", "not_object.json", "[1, 2, 3]")
    put("config", "quant_fp8.json", json.dumps(dict(configs["mixtral"], quantization_config={
        "activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128],
        "modules_to_not_convert": ["lm_head", "model.layers.*.block_sparse_moe.experts"]})))
    put("config", "quant_mxfp4.json", json.dumps(dict(configs["mixtral"], quantization_config={
        "quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.block_sparse_moe"]})))
    put("config", "bad_quant_method.json", json.dumps(dict(configs["mixtral"], quantization_config={
        "quant_method": "awq", "weight_block_size": [0, -1]})))


# ---- calibration (against the golden model: blocks 0..2, d = 32) ----

def calib_seeds():
    prefix = "model.layers.%d.block_sparse_moe.input"
    put("calib", "f32_segments.safetensors", safetensors(
        [(prefix % b, "F32", [2, 32]) for b in range(3)] + [("token_ids", "I64", [2]), ("segment_ids", "I32", [2])],
        {"format": "moescope-calib"}))
    put("calib", "bf16_uneven.safetensors", safetensors(
        [(prefix % 0, "BF16", [3, 32]), (prefix % 1, "BF16", [1, 32]), (prefix % 2, "BF16", [2, 32]),
         ("token_ids", "I32", [3])]))
    put("calib", "f16.safetensors", safetensors([(prefix % b, "F16", [1, 32]) for b in range(3)]))
    put("calib", "bad_width.safetensors", safetensors([(prefix % b, "F32", [1, 16]) for b in range(3)]))
    put("calib", "bad_missing.safetensors", safetensors([(prefix % b, "F32", [1, 32]) for b in range(2)]))
    put("calib", "bad_empty.safetensors", safetensors([(prefix % b, "F32", [0, 32]) for b in range(3)]))
    put("calib", "bad_dtype.safetensors", safetensors([(prefix % b, "I32", [1, 32]) for b in range(3)]))


# ---- plan CSV (against three blocks "0", "1", "2" of 8 experts, the golden shape) ----

def plan_seeds():
    for name in ("plan_global_avg4.csv", "plan_per_layer_3.csv"):
        shutil.copy(os.path.join(GOLDEN, "expected", name), os.path.join(CORPUS, "plan", "golden_" + name))
    header = ("layer,expert,group,dominant,frequency,similarity_to_dominant,stable_rank_gate,stable_rank_up,"
              "stable_rank_down\n")
    rows = []
    for b in range(3):
        for e in range(8):
            g = -1 if e == 7 else e % 3
            dom = 1 if e < 3 else 0
            sim = "1.0000000000" if dom else ("" if e == 5 else "0.5%d00000000" % e)
            rows.append(f"{b},{e},{g},{dom},0.{e}250000000,{sim},{e + 1}.25000000,,{e + 2}.50000000\n")
    put("plan", "all_columns.csv", header + "".join(rows))
    quoted = "\ufeff" + header.replace("\n", "\r\n") + "".join(
        '"%s","%s",%s\r\n' % tuple(r.rstrip("\n").split(",", 2)) for r in rows)
    put("plan", "bom_crlf_quoted.csv", quoted)
    subset = "layer,expert,group,dominant,frequency,stable_rank_down\n" + "".join(
        f"{b},{e},0,{int(e == 0)},0.125,\n" for b in range(3) for e in range(8))
    put("plan", "one_group_subset.csv", subset)
    put("plan", "bad_hole.csv", "layer,expert,group,dominant,frequency\n" + "".join(
        f"{b},{e},{2 * (e % 2)},{int(e < 2)},0.125\n" for b in range(3) for e in range(8)))
    put("plan", "bad_quote.csv", 'layer,expert,group,dominant,frequency\n0,"0,0,1,0.5\n')
    put("plan", "bad_header.csv", "layer,expert,grp,dominant,frequency\n0,0,0,1,0.5\n")

# ---- tokenizer.json ----

def byte_chars():
    """GPT-2's byte-to-character map, as the byte-level BPE files spell their vocabularies."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


def tokenizer_seeds():
    bc = byte_chars()
    vocab = {bc[b]: b for b in range(256)}
    merges = []
    for a, b in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("Ġa", "n"), ("1", "2")]:
        vocab.setdefault(a + b, len(vocab))
        merges.append([a, b])
    qwen_re = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    added = [{"id": len(vocab), "content": "<|im_end|>", "special": True, "lstrip": False, "rstrip": False,
              "normalized": False, "single_word": False},
             {"id": len(vocab) + 1, "content": "[m]", "special": False, "lstrip": True, "rstrip": True,
              "normalized": True, "single_word": True}]
    bytelevel = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"},
                                                           {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                                                           {"type": "Strip", "strip_left": True, "strip_right": True}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": qwen_re}, "behavior": "Isolated", "invert": False},
            {"type": "Digits", "individual_digits": False},
            {"type": "Split", "pattern": {"String": "-"}, "behavior": "MergedWithNext", "invert": True},
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}]},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_end|>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<|im_end|>": {"id": "<|im_end|>", "ids": [len(vocab)], "tokens": ["<|im_end|>"]}}},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "ignore_merges": True, "vocab": vocab, "merges": merges},
    }
    put("tokenizer", "seed_bytelevel.json", json.dumps(bytelevel))
    legacy = dict(bytelevel)
    legacy["model"] = dict(bytelevel["model"], merges=[" ".join(m) for m in merges])
    legacy["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    legacy["post_processor"] = {"type": "Sequence", "processors": [{"type": "ByteLevel"}, {"type": "RobertaProcessing",
                                "cls": ["<|im_end|>", len(vocab)], "sep": ["<|im_end|>", len(vocab)]}]}
    put("tokenizer", "seed_string_merges.json", json.dumps(legacy))

    sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        sp_vocab["<0x%02X>" % b] = len(sp_vocab)
    for c in "▁abcdehlorwt":
        sp_vocab[c] = len(sp_vocab)
    sp_merges = []
    for a, b in [("▁", "t"), ("h", "e"), ("▁t", "he"), ("l", "l"), ("▁", "w")]:
        sp_vocab.setdefault(a + b, len(sp_vocab))
        sp_merges.append(a + " " + b)
    spm = {
        "added_tokens": [{"id": i, "content": c, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
        "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}},
                                                                    {"SpecialToken": {"id": "</s>"}}],
                           "special_tokens": {"<s>": {"ids": [1]}, "</s>": {"ids": [2]}}},
        "decoder": {"type": "Sequence", "decoders": [{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True, "vocab": sp_vocab,
                  "merges": sp_merges},
    }
    put("tokenizer", "seed_metaspace.json", json.dumps(spm))
    legacy_sp = dict(spm, pre_tokenizer=None,
                     normalizer={"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                                    {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
                     decoder={"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                               {"type": "ByteFallback"}, {"type": "Fuse"}]})
    put("tokenizer", "seed_prepend_replace.json", json.dumps(legacy_sp))

    # hostile: each must be refused with one line
    small = {"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    put("tokenizer", "bad_not_json.json", '{"model": {"type": "BPE", "vocab": {"a": 0,')
    put("tokenizer", "bad_no_model.json", "{}")
    put("tokenizer", "bad_no_vocab.json", json.dumps({"model": {"type": "BPE", "merges": []}}))
    put("tokenizer", "bad_merge_unknown.json", json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a zz"]}}))
    put("tokenizer", "bad_merge_shape.json", json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a"], 7, "ab"]}}))
    put("tokenizer", "bad_huge_id.json", json.dumps({"model": {"type": "BPE", "vocab": {"a": 2 ** 40}, "merges": []}}))
    put("tokenizer", "bad_big_id.json", json.dumps(dict(small, added_tokens=[{"id": 4194304, "content": "<x>"}])))
    put("tokenizer", "bad_regex.json", json.dumps(dict(small, pre_tokenizer={"type": "Split", "pattern": {"Regex": "[\\p{Q}"},
                                                                             "behavior": "Isolated"})))
    put("tokenizer", "bad_slow_regex.json", json.dumps(dict(small, pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a*)*b"},
                                                                                  "behavior": "Removed"})))
    put("tokenizer", "bad_unsupported.json", json.dumps(dict(small, pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Digits"}, {"type": "Whitespace"}]})))
    put("tokenizer", "bad_unigram.json", json.dumps({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}))
    put("tokenizer", "bad_template.json", json.dumps(dict(small, post_processor={"type": "TemplateProcessing",
                                                                                   "single": [{"SpecialToken": {"id": "<s>"}}]})))
    deep = {"type": "Sequence", "normalizers": []}
    for _ in range(40):
        deep = {"type": "Sequence", "normalizers": [deep]}
    put("tokenizer", "bad_deep.json", json.dumps(dict(small, normalizer=deep)))


def jsonedit_seeds():
    """config.json texts as people and tools write them: indentation, odd number spellings, escapes, nesting."""
    put("jsonedit", "golden_mixtral.json", open(os.path.join(GOLDEN, "model/config.json"), "rb").read())
    put("jsonedit", "numbers.json", '{\n  "model_type": "mixtral",\n  "rope_theta": 10000.0,\n  "a": 1e4,\n'
        '  "b": -0.0,\n  "rms_norm_eps": 1E-06,\n  "num_local_experts": 8,\n  "c": [1.5e+3, 0, -12.50]\n}\n')
    put("jsonedit", "escapes.json", '{"model_type": "qwen2_moe", "name": "caf\\u00e9 \\ud83d\\ude00 \\"q\\"",'
        ' "n_routed\\u005fexperts": 64, "lone": "\\udc00", "t": "\\t\\n\\/"}')
    put("jsonedit", "nested.json", '{"model_type": "x", "text_config": {"num_experts": 8, "rope_parameters": '
        '{"rope_type": "yarn", "factor": 4.0}}, "vision_config": {}, "empty": [], "auto_map": {"AutoConfig": "a.B"}}')
    put("jsonedit", "crlf_tabs.json", '{\r\n\t"num_local_experts" :\t8 ,\r\n\t"model_type"  :  "mixtral"\r\n}\r\n')
    put("jsonedit", "compact.json", '{"num_local_experts":8,"model_type":"mixtral","x":{"y":[true,false,null]}}')
    put("jsonedit", "dup.json", '{"a": 1, "a": 2}')
    put("jsonedit", "dup_escaped.json", '{"num_experts": 1, "num\\u005fexperts": 2}')
    put("jsonedit", "bad_trailing_comma.json", '{"a": 1,}')
    put("jsonedit", "bad_nan.json", '{"a": NaN}')
    put("jsonedit", "bad_number.json", '{"a": 01, "b": 1., "c": .5}')
    put("jsonedit", "bad_control.json", '{"a": "x\ty"}')
    put("jsonedit", "deep.json", '{"a": ' + "[" * 300 + "]" * 300 + "}")


if __name__ == "__main__":
    safetensors_seeds()
    config_seeds()
    calib_seeds()
    plan_seeds()
    tokenizer_seeds()
    jsonedit_seeds()
