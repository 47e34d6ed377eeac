#!/usr/bin/env python3
"""An independent forward pass in numpy (float64), written from the transformers modeling files
(src/transformers/models/<family>/modeling_<family>.py): mixtral, qwen2_moe, qwen3_moe, olmoe, phimoe,
deepseek_v2 (greedy and group_limited_greedy routing), deepseek_v3, glm4_moe, gpt_oss. It reads a checkpoint
directory and a token file and writes the golden values that
tests/test_forward.c compares moescope's C forward with.

    python3 tests/forward/reference.py MODEL_DIR TOKENS.txt OUT.json

Not part of `make test` (which must not need numpy): run it once when the forward or the samples change.
"""
import json
import math
import os
import struct
import sys

import numpy as np


# ---- checkpoint -------------------------------------------------------------------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[b:end]
        if e["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            a = u.view(np.float32)
        elif e["dtype"] == "F16":
            a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif e["dtype"] == "F32":
            a = np.frombuffer(raw, dtype="<f4")
        elif e["dtype"] == "F8_E4M3":
            a = e4m3_values(np.frombuffer(raw, dtype=np.uint8))
        else:
            continue
        out[name] = a.astype(np.float64).reshape(e["shape"])
    return out


def e4m3_values(c):
    """OCP OFP8 E4M3: sign, 4 exponent bits of bias 7, 3 mantissa bits; exponent 0 is subnormal; S.1111.111 NaN."""
    c = c.astype(np.int64)
    sign = np.where(c >> 7, -1.0, 1.0)
    e, m = (c >> 3) & 15, c & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    return np.where((e == 15) & (m == 7), np.nan, sign * v)


def dequantize_fp8(cfg, w):
    """quant_method fp8 (DeepSeek-V3's weight_dequant): each X.weight times X.weight_scale_inv, one scale per
    weight_block_size block (edge blocks may be partial)."""
    q = cfg.get("quantization_config") or {}
    if q.get("quant_method") != "fp8":
        return w
    br, bc = q.get("weight_block_size", [128, 128])
    for name in [n for n in w if n.endswith(".weight_scale_inv")]:
        weight = name[: -len("_scale_inv")]
        rows, cols = w[weight].shape
        s = np.repeat(np.repeat(w.pop(name), br, axis=0), bc, axis=1)[:rows, :cols]
        w[weight] = w[weight] * s
    return w


def read_model(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    w = {}
    if os.path.exists(idx):
        for shard in sorted(set(json.load(open(idx))["weight_map"].values())):
            w.update(read_safetensors(os.path.join(d, shard)))
    else:
        w.update(read_safetensors(os.path.join(d, "model.safetensors")))
    cfg = json.load(open(os.path.join(d, "config.json")))
    return cfg, dequantize_fp8(cfg, w)


def read_tokens(path):
    seqs = []
    for line in open(path):
        ids = [int(t) for t in line.replace(",", " ").split()]
        if ids:
            seqs.append(ids)
    return seqs


# ---- building blocks --------------------------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def silu(x):
    return x / (1.0 + np.exp(-x))


def softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def glu(x, gate, up, down):
    return (silu(x @ gate.T) * (x @ up.T)) @ down.T


def rope_dict(cfg):
    """The RoPE parameters as transformers 5 picks them (RotaryEmbeddingConfigMixin): a non-empty rope_scaling
    (transformers 4's form) before rope_parameters (5's). Returns the dict (or None) and whether it is the 4 form."""
    if cfg.get("rope_scaling"):
        return cfg["rope_scaling"], True
    return cfg.get("rope_parameters") or None, False


def rope_inv_freq(cfg, dim):
    """transformers' ROPE_INIT_FUNCTIONS: default, linear, yarn. Returns inv_freq and attention_scaling."""
    sc, legacy = rope_dict(cfg)
    base = (sc or {}).get("rope_theta") or cfg.get("rope_theta") or 10000.0
    inv = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    if not sc:
        return inv, 1.0
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind == "default":
        return inv, 1.0
    if kind == "linear":
        return inv / sc["factor"], 1.0
    assert kind == "yarn", kind
    factor = sc.get("factor")
    maxpos = cfg["max_position_embeddings"]
    if legacy:   # transformers 4: the ratio of lengths whenever the original length is given
        orig = sc.get("original_max_position_embeddings") or maxpos
        if sc.get("original_max_position_embeddings"):
            factor = maxpos / orig
    else:        # transformers 5: a top-level original length first; the explicit factor unless there is none
        orig = cfg.get("original_max_position_embeddings") or sc.get("original_max_position_embeddings") or maxpos
        if factor is None:
            factor = maxpos / orig

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = sc.get("attention_factor")
    ms, msa = sc.get("mscale"), sc.get("mscale_all_dim")
    if att is None:
        att = get_mscale(factor, ms) / get_mscale(factor, msa) if ms and msa else get_mscale(factor)
    beta_fast, beta_slow = sc.get("beta_fast") or 32, sc.get("beta_slow") or 1

    def corr_dim(rot):
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if sc.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extra_factor = 1 - ramp
    pos = base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    inv = (1.0 / (factor * pos)) * (1 - extra_factor) + (1.0 / pos) * extra_factor
    return inv, att


def rope(x, pos, inv, scaling, interleaved):
    """x [T, heads, dim]: Llama's rotate_half, or DeepSeek's complex pairs (2i, 2i+1)."""
    f = pos[:, None] * inv[None, :]
    c, s = np.cos(f)[:, None, :] * scaling, np.sin(f)[:, None, :] * scaling
    if interleaved:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def attend(q, k, v, scale, window, sinks=None):
    """One sequence: q [T, H, dq], k [T, Hkv, dq], v [T, Hkv, dv] -> [T, H * dv], causal (and windowed). sinks [H]
    (gpt_oss): one more logit per head, concatenated to every row before the softmax and dropped after it."""
    T, H = q.shape[0], q.shape[1]
    rep = H // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = np.einsum("thd,uhd->htu", q, k) * scale
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = j > i
    if window:
        mask |= (i - j) >= window
    s = np.where(mask[None], -np.inf, s)
    if sinks is not None:
        s = np.concatenate([s, np.broadcast_to(sinks[:, None, None], (H, T, 1))], axis=-1)
        p = softmax(s)[..., :-1]
    else:
        p = softmax(s)
    return np.einsum("htu,uhd->thd", p, v).reshape(T, -1)


def gptoss_glu(x, gate_up, gate_up_bias, down, down_bias):
    """GptOssExperts for one expert: gate_up [d, 2f] and down [f, d] stored [in, out], gate the even columns."""
    gu = x @ gate_up + gate_up_bias
    gate, up = np.minimum(gu[:, 0::2], 7.0), np.clip(gu[:, 1::2], -7.0, 7.0)
    glu_ = gate / (1.0 + np.exp(-1.702 * gate))
    return ((up + 1.0) * glu_) @ down + down_bias


# ---- families ---------------------------------------------------------------------------------------------------

class Model:
    def __init__(self, d):
        self.cfg, self.w = read_model(d)
        c = self.cfg
        self.type = c["model_type"]
        self.L = c["num_hidden_layers"]
        self.d = c["hidden_size"]
        self.H = c["num_attention_heads"]
        self.Hkv = c.get("num_key_value_heads") or self.H
        self.eps = c.get("rms_norm_eps", 1e-6)
        if self.type == "olmoe":
            self.hd = self.d // self.H
        else:
            self.hd = c.get("head_dim") or self.d // self.H

    def W(self, name, i=None):
        return self.w[name % i if i is not None else name]

    def norm(self, x, name, i=None):
        if self.type == "phimoe":
            return layer_norm(x, self.W(name + ".weight", i), self.W(name + ".bias", i), self.eps)
        return rms_norm(x, self.W(name + ".weight", i), self.eps)

    def lin(self, x, name, i, bias):
        p = "model.layers.%d." + name
        y = x @ self.W(p + ".weight", i).T
        return y + self.W(p + ".bias", i) if bias else y

    def is_moe(self, i):
        c = self.cfg
        if self.type in ("qwen2_moe", "qwen3_moe"):
            return i not in (c.get("mlp_only_layers") or []) and (i + 1) % (c.get("decoder_sparse_step") or 1) == 0
        if self.type == "deepseek_v2":
            return i >= (c.get("first_k_dense_replace") or 0) and i % (c.get("moe_layer_freq") or 1) == 0
        if self.type in ("deepseek_v3", "glm4_moe"):
            return i >= (c.get("first_k_dense_replace") or 0)
        return True

    def window(self, i):
        c = self.cfg
        if self.type in ("qwen2_moe", "qwen3_moe"):
            if not c.get("use_sliding_window"):
                return 0
            if self.type == "qwen3_moe":  # Qwen3MoeConfig: every layer once use_sliding_window is set
                return c.get("sliding_window") or 0
            if c.get("layer_types"):      # Qwen2MoeConfig: the layers marked sliding_attention
                return c.get("sliding_window") if c["layer_types"][i] == "sliding_attention" else 0
            return c.get("sliding_window") if i >= c.get("max_window_layers", 28) else 0
        if self.type in ("mixtral", "phimoe"):
            return c.get("sliding_window") or 0
        if self.type == "gpt_oss":   # GptOssConfig: layer_types, by default even layers slide
            types = c.get("layer_types") or ["sliding_attention" if (l + 1) % 2 else "full_attention"
                                             for l in range(self.L)]
            return (c.get("sliding_window") or 128) if types[i] == "sliding_attention" else 0
        return 0

    def attention(self, x, i, pos, seqs):
        c, t = self.cfg, self.type
        if t in ("deepseek_v2", "deepseek_v3"):
            return self.mla(x, i, pos, seqs)
        bias = c.get("qkv_bias", True) if t == "qwen2_moe" else (t != "mixtral" and c.get("attention_bias", t == "gpt_oss"))
        q = self.lin(x, "self_attn.q_proj", i, bias)
        k = self.lin(x, "self_attn.k_proj", i, bias)
        v = self.lin(x, "self_attn.v_proj", i, bias)
        T = x.shape[0]
        if t == "olmoe":
            q = rms_norm(q, self.W("model.layers.%d.self_attn.q_norm.weight", i), self.eps)
            k = rms_norm(k, self.W("model.layers.%d.self_attn.k_norm.weight", i), self.eps)
            clip = c.get("clip_qkv")
            if clip is not None:
                q, k, v = np.clip(q, -clip, clip), np.clip(k, -clip, clip), np.clip(v, -clip, clip)
        q = q.reshape(T, self.H, self.hd)
        k = k.reshape(T, self.Hkv, self.hd)
        v = v.reshape(T, self.Hkv, self.hd)
        if t == "qwen3_moe" or (t == "glm4_moe" and c.get("use_qk_norm")):
            q = rms_norm(q, self.W("model.layers.%d.self_attn.q_norm.weight", i), self.eps)
            k = rms_norm(k, self.W("model.layers.%d.self_attn.k_norm.weight", i), self.eps)
        rd = int(self.hd * c.get("partial_rotary_factor", 0.5)) if t == "glm4_moe" else self.hd
        inv, sc = rope_inv_freq(c, rd)   # Glm4MoeAttention: rotate_half on the first rd dimensions, the rest pass
        q = np.concatenate([rope(q[..., :rd], pos, inv, sc, False), q[..., rd:]], axis=-1)
        k = np.concatenate([rope(k[..., :rd], pos, inv, sc, False), k[..., rd:]], axis=-1)
        sinks = self.W("model.layers.%d.self_attn.sinks", i) if t == "gpt_oss" else None
        out = np.concatenate([attend(q[a:b], k[a:b], v[a:b], self.hd ** -0.5, self.window(i), sinks)
                              for a, b in seqs])
        o_bias = t not in ("mixtral", "qwen2_moe", "glm4_moe") and c.get("attention_bias", t == "gpt_oss")
        return self.lin(out, "self_attn.o_proj", i, o_bias)

    def mla(self, x, i, pos, seqs):
        c = self.cfg
        T, H = x.shape[0], self.H
        nope, rope_d, dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        kvr = c["kv_lora_rank"]
        qk = nope + rope_d
        if c.get("q_lora_rank"):
            ab = c.get("attention_bias", False)   # DeepseekV2Attention: q_a_proj and kv_a_proj_with_mqa biases
            qa = rms_norm(self.lin(x, "self_attn.q_a_proj", i, ab),
                          self.W("model.layers.%d.self_attn.q_a_layernorm.weight", i), 1e-6)
            q = self.lin(qa, "self_attn.q_b_proj", i, False)
        else:
            q = self.lin(x, "self_attn.q_proj", i, False)
        q = q.reshape(T, H, qk)
        kva = self.lin(x, "self_attn.kv_a_proj_with_mqa", i, c.get("attention_bias", False))
        ckv, kpe = kva[:, :kvr], kva[:, kvr:]
        kvb = self.lin(rms_norm(ckv, self.W("model.layers.%d.self_attn.kv_a_layernorm.weight", i), 1e-6),
                       "self_attn.kv_b_proj", i, False).reshape(T, H, nope + dv)
        inv, sc = rope_inv_freq(c, rope_d)
        inter = self.type == "deepseek_v2" or c.get("rope_interleave", True)
        q_pe = rope(q[..., nope:], pos, inv, sc, inter)
        k_pe = rope(kpe.reshape(T, 1, rope_d), pos, inv, sc, inter)
        qf = np.concatenate([q[..., :nope], q_pe], axis=-1)
        kf = np.concatenate([kvb[..., :nope], np.repeat(k_pe, H, axis=1)], axis=-1)
        v = kvb[..., nope:]
        scale = qk ** -0.5  # transformers' DeepseekV2Attention: no yarn mscale^2 on the softmax scale
        rs = c.get("rope_scaling")
        if self.type == "deepseek_v3" and rs and rs.get("mscale_all_dim") and rs["factor"] > 1:
            m = 0.1 * rs["mscale_all_dim"] * math.log(rs["factor"]) + 1.0  # DeepseekV3Attention: times mscale^2
            scale = scale * m * m
        out = np.concatenate([attend(qf[a:b], kf[a:b], v[a:b], scale, 0) for a, b in seqs])
        return self.lin(out, "self_attn.o_proj", i, c.get("attention_bias", False))

    def route(self, z):
        """Selected experts [T, k] and weights [T, k] from router logits z [T, E]."""
        c, t = self.cfg, self.type
        k = c["num_experts_per_tok"]
        if t == "phimoe":
            return sparsemixer(z, c.get("router_jitter_noise", 0.01))
        if t in ("deepseek_v3", "glm4_moe"):
            return self.route_v3(z, k)
        if t == "gpt_oss":   # GptOssTopKRouter: top-k of the (biased) logits, softmax over the k selected
            sel = np.argsort(-z, axis=-1, kind="stable")[:, :k]
            return sel, softmax(np.take_along_axis(z, sel, axis=-1))
        p = softmax(z)
        if t == "deepseek_v2" and c.get("topk_method") == "group_limited_greedy":
            # modeling_deepseek_v2: groups scored by their best probability, the topk_group best kept (the lower
            # group first on ties), every other expert's score set to 0, then the top-k of the scores
            G, kg = c["n_group"], c["topk_group"]
            best = p.reshape(p.shape[0], G, -1).max(-1)
            keep = np.argsort(-best, axis=-1, kind="stable")[:, :kg]
            mask = np.zeros_like(best)
            np.put_along_axis(mask, keep, 1.0, axis=-1)
            p = np.where(np.repeat(mask, p.shape[1] // G, axis=-1) > 0, p, 0.0)
        sel = np.argsort(-p, axis=-1, kind="stable")[:, :k]
        w = np.take_along_axis(p, sel, axis=-1)
        if t == "mixtral" or (t != "deepseek_v2" and c.get("norm_topk_prob", False)):
            w = w / w.sum(-1, keepdims=True)
        if t == "deepseek_v2":
            w = w * (c.get("routed_scaling_factor") or 1.0)
        return sel, w

    def route_v3(self, z, k):
        """DeepseekV3TopkRouter: sigmoid scores; the selection adds e_score_correction_bias, keeps the topk_group
        groups whose two best biased scores sum highest and fills the others with 0; the weights are the unbiased
        scores, renormalised (+1e-20) when norm_topk_prob, times routed_scaling_factor. Ties go to the lower index
        (a stable sort), as moescope breaks them."""
        c = self.cfg
        s = 1.0 / (1.0 + np.exp(-z))
        choice = s + self.bias
        T, E = z.shape
        dflt = (8, 4) if self.type == "deepseek_v3" else (1, 1)   # DeepseekV3Config / Glm4MoeConfig
        G, TG = c.get("n_group", dflt[0]), c.get("topk_group", dflt[1])
        grouped = choice.reshape(T, G, E // G)
        gscore = -np.sort(-grouped, axis=-1)[..., :2].sum(-1)
        keep = np.argsort(-gscore, axis=-1, kind="stable")[:, :TG]
        mask = np.zeros((T, G), dtype=bool)
        np.put_along_axis(mask, keep, True, axis=-1)
        choice = np.where(np.repeat(mask, E // G, axis=-1), choice, 0.0)
        sel = np.argsort(-choice, axis=-1, kind="stable")[:, :k]
        w = np.take_along_axis(s, sel, axis=-1)
        if c.get("norm_topk_prob", True):
            w = w / (w.sum(-1, keepdims=True) + 1e-20)
        return sel, w * (c.get("routed_scaling_factor") or 1.0)

    def moe_gptoss(self, x, i):
        p = "model.layers.%d.mlp" % i
        z = x @ self.w[p + ".router.weight"].T + self.w[p + ".router.bias"]
        sel, w = self.route(z)
        y = np.zeros_like(x)
        ex = [self.w[p + ".experts." + n] for n in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")]
        for e in range(z.shape[1]):
            rows, slot = np.nonzero(sel == e)
            if len(rows):
                y[rows] += w[rows, slot][:, None] * gptoss_glu(x[rows], *[t[e] for t in ex])
        return y, sel

    def moe(self, x, i):
        t = self.type
        if t == "gpt_oss":
            return self.moe_gptoss(x, i)
        p = "model.layers.%d." % i + ("block_sparse_moe" if t in ("mixtral", "phimoe") else "mlp")
        names = ("w1", "w3", "w2") if t in ("mixtral", "phimoe") else ("gate_proj", "up_proj", "down_proj")
        if t in ("deepseek_v3", "glm4_moe"):
            self.bias = self.w[p + ".gate.e_score_correction_bias"]
        sel, w = self.route(x @ self.w[p + ".gate.weight"].T)
        y = np.zeros_like(x)
        E = self.w[p + ".gate.weight"].shape[0]
        for e in range(E):
            rows, slot = np.nonzero(sel == e)
            if len(rows) == 0:
                continue
            mats = [self.w["%s.experts.%d.%s.weight" % (p, e, n)] for n in names]
            y[rows] += w[rows, slot][:, None] * glu(x[rows], *mats)
        if t == "qwen2_moe":
            s = glu(x, *[self.w[p + ".shared_expert.%s.weight" % n] for n in names])
            g = 1.0 / (1.0 + np.exp(-(x @ self.w[p + ".shared_expert_gate.weight"].T)))
            y = y + g * s
        if t in ("deepseek_v2", "deepseek_v3", "glm4_moe") and self.cfg.get("n_shared_experts"):
            y = y + glu(x, *[self.w[p + ".shared_experts.%s.weight" % n] for n in names])
        return y, sel

    def forward(self, seqs_ids):
        ids = np.array([t for s in seqs_ids for t in s])
        pos = np.concatenate([np.arange(len(s), dtype=np.float64) for s in seqs_ids])
        bounds, a = [], 0
        for s in seqs_ids:
            bounds.append((a, a + len(s)))
            a += len(s)
        h = self.w["model.embed_tokens.weight"][ids]
        blocks = []
        for i in range(self.L):
            x = self.norm(h, "model.layers.%d.input_layernorm", i)
            h = h + self.attention(x, i, pos, bounds)
            x = self.norm(h, "model.layers.%d.post_attention_layernorm", i)
            if self.is_moe(i):
                y, sel = self.moe(x, i)
                prefix = "model.layers.%d." % i + ("block_sparse_moe" if self.type in ("mixtral", "phimoe") else "mlp")
                blocks.append((prefix, x, sel))
            else:
                y = glu(x, *[self.W("model.layers.%d.mlp." + n + ".weight", i) for n in ("gate_proj", "up_proj", "down_proj")])
            h = h + y
        h = self.norm(h, "model.norm")
        head = self.w["model.embed_tokens.weight"] if self.cfg.get("tie_word_embeddings") else self.w["lm_head.weight"]
        logits = h @ head.T
        if self.cfg.get("lm_head_bias"):
            logits = logits + self.w["lm_head.bias"]
        return logits, blocks, bounds, ids


def sparsemixer(z, eps):
    """PhiMoE's sparsemixer in eval mode (modeling_phimoe.py), top-2."""
    T, E = z.shape
    sel = np.zeros((T, 2), dtype=np.int64)
    w = np.zeros((T, 2))
    for t in range(T):
        s = z[t]
        a = int(np.argmax(s))
        m = s[a]
        mask = (m - s) / np.maximum(np.abs(s), m) > 2 * eps
        g = softmax(np.where(mask, -np.inf, s))
        masked = s.copy()
        masked[a] = -np.inf
        b = int(np.argmax(masked))
        m2 = s[b]
        mask2 = (m2 - s) / np.maximum(np.abs(s), m2) > 2 * eps
        g2 = softmax(np.where(mask2, -np.inf, masked))
        sel[t], w[t] = (a, b), (g[a], g2[b])
    return sel, w


def main():
    model_dir, tok_path, out_path = sys.argv[1:4]
    m = Model(model_dir)
    seqs = read_tokens(tok_path)
    logits, blocks, bounds, ids = m.forward(seqs)
    lp = logits - logits.max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    nll = [None] * len(ids)
    for a, b in bounds:
        for t in range(a, b - 1):
            nll[t] = float(-lp[t, ids[t + 1]])
    T = len(ids)
    rows = sorted(set([0, 1, bounds[0][1] - 1, bounds[1][0] + 40 if len(bounds) > 1 else 2, T - 1]))
    rows = [r for r in rows if 0 <= r < T]
    vals = [v for v in nll if v is not None]
    golden = {
        "model_type": m.type,
        "tokens": T,
        "mean_nll": float(np.mean(vals)),
        "nll": nll,
        "logit_rows": rows,
        "logits": [[float(v) for v in logits[r]] for r in rows],
        "blocks": [{
            "prefix": p,
            "sum": float(x.sum()),
            "sumsq": float((x * x).sum()),
            "rows": rows,
            "values": [[float(v) for v in x[r]] for r in rows],
            "routing": [sorted(int(e) for e in s) for s in sel],
        } for p, x, sel in blocks],
    }
    with open(out_path, "w") as f:
        json.dump(golden, f)
        f.write("\n")


if __name__ == "__main__":
    main()
