#!/usr/bin/env python3
"""Writes the hostile inputs of tests/bad/ (run from the repository root: python3 tests/bad/make.py; standard
library only). tests/cli/bad.sh runs the command of every line of tests/bad/cases.tsv against them.

base/ is a small well-formed mixtral checkpoint (2 MoE layers, E = 4, top-2, d = f = 8, F32) with its calibration
set and a plan; every case below is base/ with one thing broken, so that the failure it provokes can only come
from that one thing. Files whose header claims to be huge (a header over the limit, a tensor past the end) are a
few bytes that lie, never big files. Every file stays well under 50 KB.

cases.tsv has one line per case: name, command (bash; $MOESCOPE is the binary, $BASE the good model, $CASE the
case's directory, $OUT a path the command must not create), expected exit status, and an extended regex that the
single line the command prints on stderr must match.
"""
import json
import math
import os
import shutil
import struct

ROOT = "tests/bad"
CASES = os.path.join(ROOT, "cases")

E, D, F, TOPK, LAYERS, VOCAB, TOKENS = 4, 8, 8, 2, 2, 16, 24
MOE = "model.layers.%d.block_sparse_moe"
LIMIT = 50000


class Rand:
    """A small linear congruential generator, so the files are the same on every run and every Python."""

    def __init__(self, seed):
        self.s = seed & 0xFFFFFFFF

    def uniform(self):
        self.s = (1103515245 * self.s + 12345) & 0x7FFFFFFF
        return self.s / 0x7FFFFFFF * 2.0 - 1.0


def f32_bytes(values):
    return b"".join(struct.pack("<f", v) for v in values)


def f16_bytes(values):
    return b"".join(struct.pack("<e", v) for v in values)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def tensor(name, shape, seed, scale=0.5, dtype="F32"):
    r = Rand(seed)
    vals = [scale * r.uniform() for _ in range(numel(shape))]
    return [name, dtype, list(shape), vals]


def pack(dtype, vals):
    if isinstance(vals, bytes):
        return vals
    if dtype == "BF16":  # the top half of float32 (truncated: the test values need no rounding)
        return b"".join(struct.pack("<f", v)[2:] for v in vals)
    return f16_bytes(vals) if dtype == "F16" else f32_bytes(vals)


def safetensors(tensors, metadata=None):
    """tensors: [name, dtype, shape, values or bytes] in file order; returns the file's bytes."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, vals in tensors:
        blob = pack(dtype, vals)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def raw(header, data=b"", length=None):
    """A file from header text as is (bytes or str), with a length field that may lie."""
    h = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(h) if length is None else length) + h + data


# ---- the good model ----

CONFIG = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": D, "intermediate_size": F,
    "num_hidden_layers": LAYERS, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": VOCAB,
    "num_local_experts": E, "num_experts_per_tok": TOPK, "rms_norm_eps": 1e-5, "torch_dtype": "float32",
}


def model_tensors(dtype="F32", scale=0.5):
    """The tensors of the good model: embeddings, per layer a norm, the router and E experts, the head."""
    ts = [tensor("model.embed_tokens.weight", [VOCAB, D], 1, dtype=dtype)]
    for i in range(LAYERS):
        p = MOE % i
        ts.append(tensor("model.layers.%d.input_layernorm.weight" % i, [D], 10 + i, dtype=dtype))
        ts.append(tensor(p + ".gate.weight", [E, D], 100 + i, dtype=dtype))
        for e in range(E):
            for k, (mat, shape) in enumerate((("w1", [F, D]), ("w3", [F, D]), ("w2", [D, F]))):
                ts.append(tensor("%s.experts.%d.%s.weight" % (p, e, mat), shape, 1000 + 100 * i + 10 * e + k,
                                 scale, dtype))
    ts.append(tensor("model.norm.weight", [D], 2, dtype=dtype))
    ts.append(tensor("lm_head.weight", [VOCAB, D], 3, dtype=dtype))
    return ts


def calib_tensors(width=D, tokens=TOKENS):
    ts = [tensor((MOE % i) + ".input", [tokens, width], 500 + i, 1.0) for i in range(LAYERS)]
    return ts


def plan_text(layers=None, experts=E):
    """Experts 2j and 2j+1 form group j, the even one dominant."""
    rows = ["layer,expert,group,dominant,frequency"]
    for i in (range(LAYERS) if layers is None else layers):
        for e in range(experts):
            rows.append("%s,%d,%d,%d,%.6f" % (i, e, e // 2, int(e % 2 == 0), 1.0 / experts))
    return "\n".join(rows) + "\n"


# ---- writing ----

def put(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) < LIMIT, (path, len(data))
    with open(path, "wb") as f:
        f.write(data)


def write_model(d, config=None, tensors=None, calib=False, plan=False, weights=None):
    """A model directory: config.json (dict, or text as is), model.safetensors (tensors, or bytes as is), and when
    asked calib.safetensors (tensors, or bytes as is) and plan.csv (text). None or True writes the good one; False
    leaves the file out."""
    cfg = CONFIG if config is None else config
    if cfg is not False:
        put(os.path.join(d, "config.json"), cfg if isinstance(cfg, (str, bytes)) else json.dumps(cfg, indent=1))
    if weights is None:
        weights = safetensors(model_tensors() if tensors is None else tensors, {"format": "pt"})
    if weights is not False:
        put(os.path.join(d, "model.safetensors"), weights)
    if calib is not False:
        if not isinstance(calib, bytes):
            calib = safetensors(calib_tensors() if calib in (None, True) else calib, {"format": "moescope-calib"})
        put(os.path.join(d, "calib.safetensors"), calib)
    if plan is not False:
        put(os.path.join(d, "plan.csv"), plan_text() if plan in (None, True) else plan)


CASE_LINES = []


def case(name, command, status, regex, build=None):
    """Registers a case: build(dir) writes its files (None: the command only uses base/)."""
    assert "\t" not in command and "\t" not in regex
    CASE_LINES.append((name, command, status, regex))
    if build:
        build(os.path.join(CASES, name))


def with_tensor(ts, name, fn):
    """A copy of ts with fn applied to the values of tensor `name`."""
    out = []
    hit = False
    for t in ts:
        t = list(t)
        if t[0] == name:
            t[3] = fn(list(t[3]))
            hit = True
        out.append(t)
    assert hit, name
    return out


def set_row(row, col, value, width):
    def fn(vals):
        vals[row * width + col] = value
        return vals
    return fn


# ---- the cases ----

INFO = "$MOESCOPE info $CASE"
ANALYZE = "$MOESCOPE analyze $CASE --calib $CASE/calib.safetensors --json $OUT"
PLAN = "$MOESCOPE plan $CASE --calib $CASE/calib.safetensors --groups 2 --out $OUT"
EVAL = "$MOESCOPE eval $CASE --calib $CASE/calib.safetensors --plan $CASE/plan.csv --json $OUT"
MERGE = "$MOESCOPE merge $CASE --plan $CASE/plan.csv --calib $CASE/calib.safetensors --out $OUT"
MERGE_BASE_PLAN = "$MOESCOPE merge $BASE --plan $CASE/plan.csv --calib $BASE/calib.safetensors --out $OUT"
EVAL_BASE_CALIB = "$MOESCOPE eval $BASE --calib $CASE/calib.safetensors --json $OUT"
ANALYZE_BASE_CALIB = "$MOESCOPE analyze $BASE --calib $CASE/calib.safetensors --json $OUT"


def container_cases():
    """The safetensors container: lying lengths, bombs, overflow, offsets."""
    first = "model.embed_tokens.weight"
    case("header-past-end", INFO, 1, r"model\.safetensors: byte 8: header of 4096 bytes runs past the end of the",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4),
                                              length=4096)))
    case("header-over-limit", INFO, 1, r"model\.safetensors: byte 0: header length 100000001 is over the limit",
         lambda d: write_model(d, weights=raw("{}", length=100000001)))
    case("header-length-2^64-1", INFO, 1, r"header length 18446744073709551615 is over the limit",
         lambda d: write_model(d, weights=raw("{}", length=(1 << 64) - 1)))
    case("header-short", INFO, 1, r"model\.safetensors: byte 0: file is 5 bytes, shorter than the 8-byte",
         lambda d: write_model(d, weights=b"\x10\x00\x00\x00\x00"))
    case("weights-empty", INFO, 1, r"model\.safetensors: byte 0: file is 0 bytes",
         lambda d: write_model(d, weights=b""))
    # 40,000 nested arrays: far past cJSON's nesting limit, under the 50 KB file budget
    case("header-nesting-bomb", INFO, 1, r"model\.safetensors: byte [0-9]+: header is not valid JSON",
         lambda d: write_model(d, weights=raw("[" * 40000)))
    case("header-object-bomb", INFO, 1, r"model\.safetensors: byte [0-9]+: header is not valid JSON",
         lambda d: write_model(d, weights=raw('{"a":' * 8000 + "1" + "}" * 8000)))
    case("header-not-object", INFO, 1, r"model\.safetensors: byte 8: header is JSON but not an object",
         lambda d: write_model(d, weights=raw("[1,2,3]   ")))
    case("header-trailing-garbage", INFO, 1, r"header is a JSON object followed by something other than spaces",
         lambda d: write_model(d, weights=raw('{}  x')))
    case("header-not-utf8", INFO, 1, r"model\.safetensors: byte [0-9]+: header is not valid UTF-8",
         lambda d: write_model(d, weights=raw(b'{"bad\xff\xfename":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
                                              bytes(4))))
    case("shape-overflow", INFO, 1, r"tensor 'a': byte [0-9]+: shape times F32 size overflows 64 bits",
         lambda d: write_model(d, weights=raw(
             '{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}', bytes(4))))
    case("shape-overflow-bytes", INFO, 1, r"tensor 'a': byte [0-9]+: shape times F64 size overflows 64 bits",
         lambda d: write_model(d, weights=raw(
             '{"a":{"dtype":"F64","shape":[2147483648,2147483648],"data_offsets":[0,8]}}', bytes(8))))
    case("shape-negative", INFO, 1, r"tensor 'a': byte [0-9]+: \"shape\" holds a negative number",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[-1,4],"data_offsets":[0,4]}}', bytes(4))))
    case("shape-too-many-dims", INFO, 1, r"tensor 'a': byte [0-9]+: \"shape\" has too many dimensions",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,4]}}',
                                              bytes(4))))
    # claims a 4 GB tensor; the file holds 16 bytes of data
    case("tensor-past-end", INFO, 1, r"tensor 'a': byte [0-9]+: tensor data ends here but the file ends at byte",
         lambda d: write_model(d, weights=raw(
             '{"a":{"dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]}}', bytes(16))))
    case("tensor-size-mismatch", INFO, 1, r"tensor 'a': byte [0-9]+: data_offsets span 8 bytes but shape and F32 need 12",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8))))
    case("tensor-gap", INFO, 1, r"tensor 'b': byte [0-9]+: data begins after a gap of 4 bytes",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                              '"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', bytes(12))))
    case("tensor-overlap", INFO, 1, r"tensor 'b': byte [0-9]+: data overlaps the tensor before",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                              '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12))))
    case("tensor-offsets-reversed", INFO, 1, r"tensor 'a': byte [0-9]+: \"data_offsets\" ends before it begins",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}', bytes(8))))
    case("tensor-duplicate-name", INFO, 1, r"tensor '%s': byte [0-9]+: name appears twice in the header" % re_esc(first),
         lambda d: write_model(d, weights=duplicate_first()))
    case("tensor-unknown-dtype", INFO, 1, r"tensor 'a': byte [0-9]+: unknown dtype \"F4\"",
         lambda d: write_model(d, weights=raw('{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}', bytes(1))))
    # a name full of control characters and an escape sequence, in an entry that is broken: the message must stay
    # one line and must not hand the terminal an escape sequence
    case("tensor-name-control", INFO, 1, r"tensor 'evil\?\?\[2J\?name\?': byte 8: .*size|data_offsets span",
         lambda d: write_model(d, weights=raw('{"evil\\n\\u001b[2J\\u0007name\\r":{"dtype":"F32","shape":[3],'
                                              '"data_offsets":[0,8]}}', bytes(8))))
    case("expert-wrong-dtype", INFO, 1,
         r"tensor '%s' \(expert 1 of layer 0\): dtype I32, expected F32, F16 or BF16" % re_esc(MOE % 0 + ".experts.1.w1.weight"),
         lambda d: write_model(d, tensors=retype(MOE % 0 + ".experts.1.w1.weight", "I32")))


def re_esc(s):
    return s.replace(".", r"\.")


def duplicate_first():
    """The good header with its first entry written twice (json.dumps cannot repeat a key)."""
    ts = model_tensors()
    body = safetensors(ts)
    n = struct.unpack("<Q", body[:8])[0]
    hdr = body[8:8 + n].decode().rstrip()
    first = '"model.embed_tokens.weight":{"dtype":"F32","shape":[16,8],"data_offsets":[0,512]}'
    assert first in hdr
    hdr = hdr.replace("{" + first, "{" + first + "," + first, 1)
    return raw(hdr, body[8 + n:])


def retype(name, dtype):
    """The good tensors with tensor `name` stored as another 4-byte dtype (same bytes)."""
    out = []
    for t in model_tensors():
        t = list(t)
        if t[0] == name:
            t[3] = f32_bytes(t[3])
            t[1] = dtype
        out.append(t)
    return out


def layout_cases():
    """The directory: symlink loops, directories for files, shards."""
    def loop(d):
        write_model(d, config=False)
        os.symlink("config.json", os.path.join(d, "config.json"))

    case("config-symlink-loop", INFO, 1, r"config\.json: cannot open: Too many levels of symbolic links", loop)

    def weights_loop(d):
        write_model(d, weights=False)
        os.symlink("model.safetensors", os.path.join(d, "model.safetensors"))

    case("weights-symlink-loop", INFO, 1, r"model\.safetensors: cannot open: Too many levels of symbolic links",
         weights_loop)

    def config_dir(d):
        write_model(d, config=False)
        put(os.path.join(d, "config.json", "README"), "a directory where config.json should be\n")

    case("config-is-directory", INFO, 1, r"config\.json: not a regular file", config_dir)

    def weights_dir(d):
        write_model(d, weights=False)
        put(os.path.join(d, "model.safetensors", "README"), "a directory where the weights should be\n")

    case("weights-is-directory", INFO, 1, r"model\.safetensors: not a regular file", weights_dir)
    case("config-empty", INFO, 1, r"config\.json: not valid JSON at line 1 column 1", lambda d: write_model(d, config=""))
    case("config-missing", INFO, 1, r"config\.json: cannot open: No such file", lambda d: write_model(d, config=False))
    case("weights-missing", INFO, 1, r"neither model\.safetensors\.index\.json nor model\.safetensors is there",
         lambda d: write_model(d, weights=False))
    case("model-is-a-file", "$MOESCOPE info $CASE/model.safetensors", 1, r"model\.safetensors/config\.json: cannot open",
         lambda d: write_model(d))

    def index(d, weight_map, shards):
        write_model(d, weights=False)
        put(os.path.join(d, "model.safetensors.index.json"),
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
        for name, ts in shards.items():
            put(os.path.join(d, name), safetensors(ts, {"format": "pt"}))

    def split():
        ts = model_tensors()
        return ts[:len(ts) // 2], ts[len(ts) // 2:]

    def outside(d):
        a, b = split()
        wm = {t[0]: "model-00001-of-00002.safetensors" for t in a}
        wm.update({t[0]: "../model-00002-of-00002.safetensors" for t in b})
        index(d, wm, {"model-00001-of-00002.safetensors": a})

    case("shard-outside-directory", INFO, 1, r"index\.json: tensor '.*': shard name \"\.\./model-00002-of-00002\.safetensors\" "
         r"is empty or leaves the directory", outside)

    def absolute(d):
        a, b = split()
        wm = {t[0]: "model-00001-of-00002.safetensors" for t in a}
        wm.update({t[0]: "/etc/passwd" for t in b})
        index(d, wm, {"model-00001-of-00002.safetensors": a})

    case("shard-absolute-path", INFO, 1, r"shard name \"/etc/passwd\" is empty or leaves the directory", absolute)

    def missing(d):
        a, b = split()
        wm = {t[0]: "model-00001-of-00002.safetensors" for t in a}
        wm.update({t[0]: "model-00002-of-00002.safetensors" for t in b})
        index(d, wm, {"model-00001-of-00002.safetensors": a})

    case("shard-missing", INFO, 1, r"index\.json: tensor '.*': shard does not open \(.*model-00002-of-00002\.safetensors: "
         r"cannot open: No such file", missing)

    def unlisted(d):
        a, b = split()
        wm = {t[0]: "model-00001-of-00002.safetensors" for t in a}
        wm.update({t[0]: "model-00002-of-00002.safetensors" for t in b[1:]})
        index(d, wm, {"model-00001-of-00002.safetensors": a, "model-00002-of-00002.safetensors": b})

    case("shard-tensor-not-in-index", INFO, 1, r"index\.json: tensor '.*': in shard .* but not in weight_map", unlisted)

    def index_bomb(d):
        write_model(d, weights=False)
        put(os.path.join(d, "model.safetensors.index.json"), '{"weight_map":' + "[" * 40000)

    case("index-nesting-bomb", INFO, 1, r"index\.json: byte [0-9]+: index is not valid JSON", index_bomb)


def config_cases():
    def cfg(**kw):
        c = dict(CONFIG)
        c.update(kw)
        return c

    router0 = re_esc(MOE % 0 + ".gate.weight")
    case("config-nesting-bomb", INFO, 1, r"config\.json: not valid JSON at line 1 column [0-9]+",
         lambda d: write_model(d, config='{"model_type":"mixtral","x":' + "[" * 40000))
    case("config-experts-contradict", INFO, 1,
         r"tensor '%s' \(router of layer 0\): shape \[4, 8\], expected \[6, 8\] \(num_local_experts x hidden_size" % router0,
         lambda d: write_model(d, config=cfg(num_local_experts=6)))
    case("config-fewer-experts", INFO, 1, r"tensor '%s' \(router of layer 0\): shape \[4, 8\], expected \[3, 8\]" % router0,
         lambda d: write_model(d, config=cfg(num_local_experts=3)))
    case("config-hidden-contradicts", INFO, 1, r"tensor '%s' \(router of layer 0\): shape \[4, 8\], expected \[4, 16\]" % router0,
         lambda d: write_model(d, config=cfg(hidden_size=16)))
    case("config-inter-contradicts", INFO, 1,
         r"tensor '%s' \(expert 0 of layer 0\): shape \[8, 8\], expected \[12, 8\] \(intermediate_size x hidden_size" %
         re_esc(MOE % 0 + ".experts.0.w1.weight"),
         lambda d: write_model(d, config=cfg(intermediate_size=12)))
    case("config-layers-contradict", INFO, 1, r"tensor '%s' missing \(router of layer 2\)" % re_esc(MOE % 2 + ".gate.weight"),
         lambda d: write_model(d, config=cfg(num_hidden_layers=3)))
    case("config-topk-over-experts", INFO, 1, r"config\.json: field 'num_experts_per_tok' is 5, more than the 4 experts",
         lambda d: write_model(d, config=cfg(num_experts_per_tok=5)))
    case("config-topk-zero", INFO, 1, r"config\.json: field 'num_experts_per_tok' must be an integer in \[1, ",
         lambda d: write_model(d, config=cfg(num_experts_per_tok=0)))
    case("config-experts-huge", INFO, 1, r"field 'num_local_experts' must be an integer in \[1, 4096\]",
         lambda d: write_model(d, config=cfg(num_local_experts=1e300)))
    # the largest E and layer count the reader accepts, over a file with 2 layers of 4 experts: must fail fast
    case("config-experts-and-layers-max", INFO, 1, r"tensor '%s' \(router of layer 0\): shape \[4, 8\], expected \[4096, 8\]" % router0,
         lambda d: write_model(d, config=cfg(num_local_experts=4096, num_hidden_layers=65536, num_experts_per_tok=2)))
    case("config-hidden-string", INFO, 1, r"config\.json: field 'hidden_size' must be an integer",
         lambda d: write_model(d, config=cfg(hidden_size="8")))
    case("config-unknown-model-type", INFO, 1, r"config\.json: model_type 'llama' is not a supported MoE family \(mixtral, ",
         lambda d: write_model(d, config=cfg(model_type="llama")))
    case("config-model-type-control", INFO, 1, r"config\.json: model_type 'mix\?\?\[31mtral' is not a supported MoE family",
         lambda d: write_model(d, config=cfg(model_type="mix\n\x1b[31mtral")))
    case("config-model-type-missing", INFO, 1, r"config\.json: field 'model_type' missing",
         lambda d: write_model(d, config={k: v for k, v in CONFIG.items() if k != "model_type"}))
    case("config-not-object", INFO, 1, r"config\.json: not a JSON object at line 1 column 1",
         lambda d: write_model(d, config="[1, 2, 3]"))
    case("config-trailing-text", INFO, 1, r"config\.json: text after the JSON object at line [0-9]+ column [0-9]+",
         lambda d: write_model(d, config=json.dumps(CONFIG) + "\n{}"))


def nonfinite_cases():
    """NaN and infinity in expert weights, routers and calibration: every command names the tensor and the row."""
    w3 = MOE % 1 + ".experts.2.w3.weight"
    router = MOE % 0 + ".gate.weight"
    x1 = MOE % 1 + ".input"
    write_model(os.path.join(CASES, "nan-expert"), calib=True, plan=True,
                tensors=with_tensor(model_tensors(), w3, set_row(5, 3, math.nan, D)))
    write_model(os.path.join(CASES, "inf-router"), calib=True, plan=True,
                tensors=with_tensor(model_tensors(), router, set_row(3, 0, math.inf, D)))
    write_model(os.path.join(CASES, "nan-calib"), plan=True,
                calib=with_tensor(calib_tensors(), x1, set_row(17, 6, math.nan, D)))
    for cmd, line in (("analyze", ANALYZE), ("plan", PLAN), ("eval", EVAL), ("merge", MERGE)):
        use = lambda s: line.replace("$CASE", "$BAD/cases/" + s)
        case("nan-expert-" + cmd, use("nan-expert"), 1,
             r"model\.safetensors: tensor '%s': row 5: NaN or infinity" % re_esc(w3))
        case("inf-router-" + cmd, use("inf-router"), 1,
             r"model\.safetensors: tensor '%s': row 3: NaN or infinity" % re_esc(router))
        case("nan-calib-" + cmd, use("nan-calib"), 1,
             r"calib\.safetensors: tensor '%s': row 17: NaN or infinity" % re_esc(x1))
    # the same through the F16 and BF16 conversions, and in a tensor that merge copies byte for byte
    w2 = MOE % 0 + ".experts.3.w2.weight"
    case("inf-bf16-expert-eval", EVAL, 1, r"model\.safetensors: tensor '%s': row 2: NaN or infinity" % re_esc(w2),
         lambda d: write_model(d, config=dict(CONFIG, torch_dtype="bfloat16"), calib=True, plan=True,
                               tensors=with_tensor(model_tensors("BF16"), w2, set_row(2, 7, -math.inf, F))))
    x0 = MOE % 0 + ".input"
    case("nan-f16-calib-plan", PLAN, 1, r"calib\.safetensors: tensor '%s': row 4: NaN or infinity" % re_esc(x0),
         lambda d: write_model(d, calib=[[t[0], "F16", t[2], t[3]] for t in
                                         with_tensor(calib_tensors(), x0, set_row(4, 0, math.nan, D))]))
    case("nan-plain-tensor-merge", MERGE, 1,
         r"model\.safetensors: tensor 'lm_head\.weight': row 9: NaN or infinity; nothing was written",
         lambda d: write_model(d, calib=True, plan=True,
                               tensors=with_tensor(model_tensors(), "lm_head.weight", set_row(9, 1, math.nan, D))))
    case("inf-plain-tensor-control-name-merge", MERGE, 1,
         r"model\.safetensors: tensor 'extra\?\?\[2Jx': row 1: NaN or infinity; nothing was written",
         lambda d: write_model(d, calib=True, plan=True,
                               tensors=model_tensors() + [["extra\n\x1b[2Jx", "F32", [2, 2], [0.0, 1.0, -math.inf, 2.0]]]))
    # finite but so large (1e30) that the computations overflow: the error names the block
    scaled = lambda k, f: [[t[0], t[1], t[2], [v * f for v in t[3]]] if k in t[0] else t for t in model_tensors()]
    write_model(os.path.join(CASES, "huge-experts"), tensors=scaled(".experts.", 1e30), calib=True, plan=True)
    for cmd, line, why in (("analyze", ANALYZE + " --similarity expert-output", "expert-output similarity failed"),
                           ("eval", EVAL, "aligning expert"),
                           ("merge", MERGE, "aligning expert")):
        case("huge-experts-" + cmd, line.replace("$CASE", "$BAD/cases/huge-experts"), 1,
             r"^moescope: block 0: %s.*NaN or infinity" % why)
    case("huge-calib-eval-meo", "$MOESCOPE eval $BASE --calib $CASE/calib.safetensors --json $OUT", 1,
         r"^moescope: block 0: MEO: the errors are not finite",
         lambda d: write_model(d, config=False, weights=False,
                               calib=[[t[0], t[1], t[2], [v * 1e30 for v in t[3]]] for t in calib_tensors()]))
    # F16 experts whose values sit at the top of the F16 range: a rank-1 reconstruction overshoots 65504, which
    # is infinity once rounded to F16; merge must refuse rather than write it
    case("merge-overflows-f16", "$MOESCOPE merge $CASE --plan $CASE/plan.csv --calib $CASE/calib.safetensors --rank 1 "
         "--out $OUT", 1, r"block 0: merged group 0: gate matrix: row 0: NaN or infinity after merging, compressing "
         r"and rounding to F16", f16_overflow)
    case("merge-factors-overflow-f16", "$MOESCOPE merge $CASE --plan $CASE/plan.csv --calib $CASE/calib.safetensors "
         "--rank 1 --compress-format factors --out $OUT", 1,
         r"block 0: tensor '%s_u': row 0: the merged value is NaN or infinity as F16; nothing was written" %
         re_esc(MOE % 0 + ".experts.0.w1.weight"), f16_factors_overflow)
    case("eval-overflows-f16", "$MOESCOPE eval $BAD/cases/merge-overflows-f16 "
         "--plan $BAD/cases/merge-overflows-f16/plan.csv --calib $BAD/cases/merge-overflows-f16/calib.safetensors --rank 1 --json $OUT", 1,
         r"block 0: merged group 0: gate matrix: row 0: NaN or infinity after merging, compressing and rounding to F16")


def f16_factors_overflow(d):
    """Every expert matrix all 30000: exactly rank 1, so its rank-1 reconstruction is exact and fits F16, but the
    factor U_r S_r holds 30000 * sqrt(64) = 240000, past the F16 maximum."""
    ts = []
    for t in model_tensors("F16"):
        t = list(t)
        if ".experts." in t[0]:
            t[3] = [30000.0] * len(t[3])
        ts.append(t)
    write_model(d, config=dict(CONFIG, torch_dtype="float16"), tensors=ts, calib=True, plan=True)


def f16_overflow(d):
    """Every expert matrix 60000 in its first row and column and 0 elsewhere: its best rank-1 approximation peaks
    near 113,000 at (0, 0), above the F16 maximum of 65504."""
    ts = []
    for t in model_tensors("F16"):
        t = list(t)
        if ".experts." in t[0]:
            rows, cols = t[2]
            vals = []
            for r in range(rows):
                for c in range(cols):
                    vals.append(60000.0 if r == 0 or c == 0 else 0.0)
            t[3] = vals
        ts.append(t)
    cfg = dict(CONFIG, torch_dtype="float16")
    write_model(d, config=cfg, tensors=ts, calib=True, plan=True)


def calib_cases():
    x0 = re_esc(MOE % 0 + ".input")
    case("calib-wrong-width", ANALYZE_BASE_CALIB, 1, r"calib\.safetensors: tensor '%s': width 6, the model's hidden size is 8" % x0,
         lambda d: write_model(d, config=False, weights=False, calib=calib_tensors(width=6)))
    case("calib-zero-tokens", ANALYZE_BASE_CALIB, 1, r"calib\.safetensors: tensor '%s': no tokens" % x0,
         lambda d: write_model(d, config=False, weights=False, plan=False,
                               calib=[[(MOE % i) + ".input", "F32", [0, D], b""] for i in range(LAYERS)]))
    case("calib-missing-block", ANALYZE_BASE_CALIB, 1,
         r"calib\.safetensors: tensor '%s' missing \(the inputs of MoE block 1\)" % re_esc(MOE % 1 + ".input"),
         lambda d: write_model(d, config=False, weights=False, calib=calib_tensors()[:1]))
    case("calib-one-dimension", ANALYZE_BASE_CALIB, 1, r"tensor '%s': 1 dimensions, expected \[tokens, 8\]" % x0,
         lambda d: write_model(d, config=False, weights=False, plan=False,
                               calib=[[(MOE % i) + ".input", "F32", [D], [0.0] * D] for i in range(LAYERS)]))
    case("calib-int-dtype", ANALYZE_BASE_CALIB, 1, r"tensor '%s': dtype I32, expected F32, BF16 or F16" % x0,
         lambda d: write_model(d, config=False, weights=False, plan=False,
                               calib=[[(MOE % i) + ".input", "I32", [TOKENS, D], bytes(4 * TOKENS * D)]
                                      for i in range(LAYERS)]))
    case("calib-segments-wrong-length", EVAL_BASE_CALIB, 1, r"tensor 'segment_ids': expected shape \[24\], one per token",
         lambda d: write_model(d, config=False, weights=False, plan=False,
                               calib=calib_tensors() + [["segment_ids", "I32", [3], struct.pack("<3i", 0, 1, 2)]]))
    case("calib-is-directory", "$MOESCOPE analyze $BASE --calib $BAD/cases --json $OUT", 1,
         r"cases: neither model\.safetensors\.index\.json nor model\.safetensors is there", None)
    case("calib-header-lies", ANALYZE_BASE_CALIB, 1, r"calib\.safetensors: byte 8: header of 1000000 bytes runs past the end",
         lambda d: write_model(d, config=False, weights=False, calib=raw("{}", length=1000000)))


def plan_cases():
    def plan_only(text):
        return lambda d: put(os.path.join(d, "plan.csv"), text)

    hdr = "layer,expert,group,dominant,frequency\n"
    good = plan_text()
    case("plan-wrong-layers", MERGE_BASE_PLAN, 1,
         r"plan\.csv: line 2, column 1: layer '5' is not one of the model's 2 MoE blocks \('0' \.\. '1'\)",
         plan_only(plan_text(layers=[5, 6])))
    case("plan-too-many-experts", MERGE_BASE_PLAN, 1, r"plan\.csv: line 6, column 2: expert 4 out of range 0\.\.3",
         plan_only(plan_text(experts=8)))
    case("plan-missing-expert", MERGE_BASE_PLAN, 1, r"plan\.csv: .*expert 3", plan_only(
        "".join(l + "\n" for l in good.splitlines() if not l.startswith("1,3,"))))
    case("plan-duplicate-expert", MERGE_BASE_PLAN, 1, r"plan\.csv: line [0-9]+, column 2: layer '0' expert 1 already listed",
         plan_only(good + "0,1,0,0,0.25\n"))
    case("plan-unterminated-quote", MERGE_BASE_PLAN, 1, r"plan\.csv: line [0-9]+, column [0-9]+: ",
         plan_only(hdr + '0,"0,0,1,0.25\n'))
    case("plan-not-a-number", MERGE_BASE_PLAN, 1, r"plan\.csv: line 2, column 3: group 'x' is not a number",
         plan_only(good.replace("0,0,0,1,", "0,0,x,1,", 1)))
    case("plan-nan-frequency", MERGE_BASE_PLAN, 1, r"plan\.csv: line 2, column 5: frequency 'nan' is not a number",
         plan_only(good.replace("0,0,0,1,0.250000", "0,0,0,1,nan", 1)))
    case("plan-no-dominant", MERGE_BASE_PLAN, 1, r"plan\.csv: .*group 0 .*dominant",
         plan_only(good.replace("0,0,0,1,", "0,0,0,0,", 1)))
    case("plan-bad-header", MERGE_BASE_PLAN, 1, r"plan\.csv: line 1, column 3: header column 'grp' should be 'group'",
         plan_only(good.replace("group", "grp", 1)))
    case("plan-empty", MERGE_BASE_PLAN, 1, r"plan\.csv: ", plan_only(""))
    case("plan-label-control", MERGE_BASE_PLAN, 1, r"plan\.csv: line 2, column 1: layer '\?\[31m0\?' is not one of",
         plan_only(hdr + "\x1b[31m0\x07,0,0,1,0.25\n"))
    case("plan-label-not-utf8", MERGE_BASE_PLAN, 1, r"plan\.csv: line 2, column 1: layer '\?\?0' is not one of",
         plan_only((hdr + "\xff\xfe0,0,0,1,0.25\n").encode("latin-1")))
    case("plan-number-overflow", MERGE_BASE_PLAN, 1, r"plan\.csv: line 2, column 2: expert '99999999999999999999' is not a number",
         plan_only(good.replace("0,0,0,1,", "0,99999999999999999999,0,1,", 1)))
    case("plan-drops-a-whole-block", MERGE_BASE_PLAN, 1, r"^moescope: block 0: the plan keeps no expert$",
         plan_only(hdr + "".join("0,%d,-1,0,0.25\n" % e for e in range(E)) + "".join(
             "1,%d,%d,%d,0.25\n" % (e, e // 2, int(e % 2 == 0)) for e in range(E))))
    case("plan-is-directory", "$MOESCOPE merge $BASE --plan $BAD/cases --calib $BASE/calib.safetensors --out $OUT", 1,
         r"cases: is a directory, not a plan CSV", None)
    case("plan-eval-wrong-model", "$MOESCOPE eval $BASE --plan $CASE/plan.csv --calib $BASE/calib.safetensors --json $OUT",
         1, r"plan\.csv: line 6, column 2: expert 4 out of range 0\.\.3", plan_only(plan_text(experts=8)))


# ---- quantized weights (io/quant.h) ----

FP8_BLOCK = [4, 4]


def fp8_model(block=FP8_BLOCK, nan_scale=None, nan_code=None, scale_shape=None, drop_scale=None, scale_dtype="F32",
              stray_scale=False):
    """The good model with every expert matrix stored F8_E4M3 (codes of magnitude 0.5 to 2, never NaN) and an F32
    weight_scale_inv per block; the keyword arguments break one thing, naming the expert matrix they break."""
    ts = []
    for name, dtype, shape, vals in model_tensors():
        if ".experts." not in name:
            ts.append([name, dtype, shape, vals])
            if stray_scale and name == "model.norm.weight":
                ts.append(["model.norm.weight_scale_inv", "F32", [1, 1], [1.0]])
            continue
        r = Rand(len(name) * 7919 + shape[0])
        codes = bytes((0x30 + int((r.uniform() + 1) * 8)) | (0x80 if r.uniform() < 0 else 0)
                      for _ in range(numel(shape)))
        if name == nan_code:
            codes = codes[:13] + b"\x7f" + codes[14:]   # row 1 of an 8-wide matrix
        ts.append([name, "F8_E4M3", shape, codes])
        if name == drop_scale:
            continue
        sshape = scale_shape if (scale_shape and name == EXPERT1_W1) else \
            [-(-shape[0] // FP8_BLOCK[0]), -(-shape[1] // FP8_BLOCK[1])]
        svals = [0.01 * (1 + k) for k in range(numel(sshape))]
        if name == nan_scale:
            svals[1] = float("nan")
        if scale_dtype == "I32" and name == EXPERT1_W1:
            ts.append([name + "_scale_inv", "I32", sshape, struct.pack("<%di" % numel(sshape), *range(numel(sshape)))])
        else:
            ts.append([name + "_scale_inv", "F32", sshape, svals])
    return ts


EXPERT1_W1 = "model.layers.0.block_sparse_moe.experts.1.w1.weight"


def fp8_config(**quant):
    cfg = dict(CONFIG)
    q = {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": FP8_BLOCK}
    q.update(quant)
    cfg["quantization_config"] = {k: v for k, v in q.items() if v is not None}
    return cfg


def quant_cases():
    w1 = re_esc(EXPERT1_W1)

    def fp8(config=None, **kw):
        return lambda d: write_model(d, config=fp8_config() if config is None else config, tensors=fp8_model(**kw),
                                     calib=True, plan=True)

    case("fp8-scale-wrong-shape", INFO, 1,
         r"model\.safetensors: tensor '%s_scale_inv': shape \[2, 3\], expected \[2, 2\] \(one scale per 4 x 4 block"
         % w1, fp8(scale_shape=[2, 3]))
    case("fp8-scale-missing", INFO, 1,
         r"model\.safetensors: tensor '%s' is F8_E4M3 but its weight_scale_inv is missing" % w1, fp8(drop_scale=EXPERT1_W1))
    case("fp8-scale-nan", INFO, 1,
         r"model\.safetensors: tensor '%s_scale_inv': scale of block \[0, 1\] is NaN or infinite" % w1,
         fp8(nan_scale=EXPERT1_W1))
    case("fp8-scale-int-dtype", INFO, 1, r"tensor '%s_scale_inv': dtype I32, expected F32, BF16 or F16 scales" % w1,
         fp8(scale_dtype="I32"))
    case("fp8-nan-code", EVAL, 1, r"model\.safetensors: tensor '%s': row 1: NaN code" % w1, fp8(nan_code=EXPERT1_W1))
    case("fp8-block-does-not-divide", INFO, 1,
         r"tensor '%s_scale_inv': shape \[2, 2\], expected \[3, 2\] \(one scale per 3 x 4 block"
         % re_esc(EXPERT1_W1.replace("experts.1", "experts.0")),
         fp8(config=fp8_config(weight_block_size=[3, 4])))
    case("fp8-weights-without-config", INFO, 1,
         r"model\.safetensors: tensor '.*experts\.0\.w1\.weight' is F8_E4M3 but config\.json has no "
         r"quantization_config with quant_method \"fp8\"", fp8(config=CONFIG))
    case("fp8-config-but-float-weights", INFO, 1,
         r"model\.safetensors: tensor '.*experts\.0\.w1\.weight' is F32 but config\.json's quantization_config says "
         r"fp8", lambda d: write_model(d, config=fp8_config()))
    case("mxfp4-config-but-float-weights", INFO, 1,
         r"tensor '.*experts\.0\.w1\.weight' is F32 but config\.json's quantization_config says mxfp4",
         lambda d: write_model(d, config=fp8_config(quant_method="mxfp4", weight_block_size=None, fmt=None)))
    case("fp8-stray-scale", INFO, 1,
         r"tensor 'model\.norm\.weight_scale_inv' scales 'model\.norm\.weight', which is F32", fp8(stray_scale=True))
    case("quant-method-unknown", INFO, 1, r"config\.json: quantization_config\.quant_method 'gptq' is not supported",
         lambda d: write_model(d, config=fp8_config(quant_method="gptq")))
    case("fp8-block-size-zero", INFO, 1, r"config\.json: quantization_config\.weight_block_size must be two integers",
         fp8(config=fp8_config(weight_block_size=[0, 4])))
    case("fp8-fmt-e5m2", INFO, 1, r"config\.json: quantization_config\.fmt must be \"e4m3\"",
         fp8(config=fp8_config(fmt="e5m2")))


# gpt-oss in its released MXFP4 form: one MoE layer, E = 4, d = f = 32 (MXFP4 needs multiples of 32)
OSS_D, OSS_F = 32, 32
OSS = "model.layers.0.mlp.experts."
OSS_CONFIG = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": OSS_D,
    "intermediate_size": OSS_F, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
    "head_dim": 16, "vocab_size": VOCAB, "num_local_experts": E, "num_experts_per_tok": TOPK, "rms_norm_eps": 1e-5,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                       "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
}


def oss_model(drop=None, shapes=None, dtypes=None, float_experts=False):
    """The MXFP4 gpt_oss model: _blocks [E, out, in / 32, 16] (codes 0x00 to 0x77, never NaN) with _scales
    [E, out, in / 32] (2^-7 to 2^0); drop leaves a tensor out, shapes and dtypes change one tensor's header (its
    bytes cut or padded to fit); float_experts stores the float layout's [E, in, out] tensors (F16) instead."""
    ts = [tensor("model.embed_tokens.weight", [VOCAB, OSS_D], 1),
          tensor("model.layers.0.mlp.router.weight", [E, OSS_D], 100), tensor("model.layers.0.mlp.router.bias", [E], 101)]
    mats = (("gate_up_proj", 2 * OSS_F, OSS_D), ("down_proj", OSS_D, OSS_F))
    for k, (name, out, inn) in enumerate(mats):
        if float_experts:
            ts.append(tensor(OSS + name, [E, inn, out], 200 + k, dtype="F16"))
        else:
            r = Rand(300 + k)
            n = E * out * inn // 2
            ts.append([OSS + name + "_blocks", "U8", [E, out, inn // 32, 16],
                       bytes(int((r.uniform() + 1) * 59.5) & 0x77 for _ in range(n))])
            ts.append([OSS + name + "_scales", "U8", [E, out, inn // 32],
                       bytes(120 + (i % 8) for i in range(E * out * inn // 32))])
        ts.append(tensor(OSS + name + "_bias", [E, out], 400 + k))
    ts.append(tensor("model.norm.weight", [OSS_D], 2))
    ts.append(tensor("lm_head.weight", [VOCAB, OSS_D], 3))
    res = []
    for name, dtype, shape, vals in ts:
        if name == drop:
            continue
        if shapes and name in shapes:
            shape = shapes[name]
            size = numel(shape) * (1 if dtype == "U8" else 4)
            blob = pack(dtype, vals)
            vals = (blob + bytes(size))[:size]
        if dtypes and name in dtypes:
            dtype = dtypes[name]
        res.append([name, dtype, shape, vals])
    return res


def mxfp4_cases():
    def oss(config=OSS_CONFIG, **kw):
        return lambda d: write_model(d, config=config, tensors=oss_model(**kw))

    no_quant = {k: v for k, v in OSS_CONFIG.items() if k != "quantization_config"}
    gu, dn = OSS + "gate_up_proj", OSS + "down_proj"
    case("mxfp4-scales-missing", INFO, 1,
         r"tensor '%s_scales' missing \(MXFP4 experts of layer 0\)" % re_esc(dn), oss(drop=dn + "_scales"))
    case("mxfp4-blocks-missing", INFO, 1,
         r"tensor '%s_blocks' missing \(MXFP4 experts of layer 0\)" % re_esc(gu), oss(drop=gu + "_blocks"))
    case("mxfp4-scales-wrong-shape", INFO, 1,
         r"tensor '%s_scales' \(MXFP4 experts of layer 0\): shape \[4, 64, 2\], expected \[4, 64, 1\]" % re_esc(gu),
         oss(shapes={gu + "_scales": [E, 2 * OSS_F, 2]}))
    case("mxfp4-blocks-not-split", INFO, 1,
         r"tensor '%s_blocks' \(MXFP4 experts of layer 0\): shape \[4, 32, 16\], expected \[4, 32, 1, 16\]"
         % re_esc(dn), oss(shapes={dn + "_blocks": [E, OSS_D, 16]}))
    case("mxfp4-blocks-bf16-layout", INFO, 1,
         r"tensor '%s_blocks' \(MXFP4 experts of layer 0\): shape \[4, 32, 2, 16\], expected \[4, 64, 1, 16\]"
         % re_esc(gu), oss(shapes={gu + "_blocks": [E, OSS_D, 2, 16]}))
    case("mxfp4-blocks-int8", INFO, 1,
         r"tensor '%s_blocks' \(MXFP4 experts of layer 0\): dtype I8, expected U8" % re_esc(gu),
         oss(dtypes={gu + "_blocks": "I8"}))
    case("mxfp4-bias-missing", INFO, 1, r"tensor '%s_bias' missing" % re_esc(dn), oss(drop=dn + "_bias"))
    case("mxfp4-weights-without-config", INFO, 1,
         r"model\.safetensors: tensor '%s_blocks' holds MXFP4 experts but config\.json has no quantization_config "
         r"with quant_method \"mxfp4\"" % re_esc(gu), oss(config=no_quant))
    case("mxfp4-config-but-float-experts", INFO, 1,
         r"model\.safetensors: tensor '%s\[0\]' is F16 but config\.json's quantization_config says mxfp4"
         % re_esc(gu),
         oss(float_experts=True))
    case("mxfp4-inter-not-multiple-of-32", INFO, 1,
         r"config\.json: hidden_size 32 and intermediate_size 48 must be multiples of 32 for MXFP4 experts",
         oss(config=dict(OSS_CONFIG, intermediate_size=48)))


def output_cases():
    case("merge-output-is-input", "$MOESCOPE merge $BASE --plan $BASE/plan.csv --calib $BASE/calib.safetensors "
         "--out $BASE --force", 1, r"tests/bad/base: the output would replace or sit inside the input model", None)
    case("merge-output-in-missing-dir", "$MOESCOPE merge $BASE --plan $BASE/plan.csv --calib $BASE/calib.safetensors "
         "--out $OUT/sub/dir", 1, r"out/sub: output's parent directory: No such file or directory", None)
    case("analyze-json-in-missing-dir", "$MOESCOPE analyze $BASE --calib $BASE/calib.safetensors --json $OUT/sub/x.json",
         1, r"cannot create", None)


def main():
    shutil.rmtree(CASES, ignore_errors=True)
    shutil.rmtree(os.path.join(ROOT, "base"), ignore_errors=True)
    write_model(os.path.join(ROOT, "base"), calib=True, plan=True)
    container_cases()
    layout_cases()
    config_cases()
    nonfinite_cases()
    calib_cases()
    plan_cases()
    quant_cases()
    mxfp4_cases()
    output_cases()
    with open(os.path.join(ROOT, "cases.tsv"), "w") as f:
        f.write("# name\tcommand\tstatus\tstderr regex (written by tests/bad/make.py; run by tests/cli/bad.sh)\n")
        for name, cmd, status, regex in CASE_LINES:
            f.write("%s\t%s\t%d\t%s\n" % (name, cmd, status, regex))


if __name__ == "__main__":
    main()
