#!/usr/bin/env python3
"""Writes the tiny checkpoints of tests/data/forward/models/: one per family variant the bundled samples do not
cover (qwen3_moe, phimoe, deepseek_v2 with plain and group-limited routing, deepseek_v3, glm4_moe, gpt_oss) or
cover only weakly (mixtral with a sliding window, olmoe with clip_qkv).
Weights are drawn at full scale (std 1/sqrt(fan-in)), so attention, norms and routing all matter in the output.
Tensor names and config fields follow the transformers classes. Run once; the files are committed.

    python3 tests/forward/make_tiny.py tests/data/forward/models [NAME...]
"""
import json
import os
import struct
import sys

import numpy as np

V, D, L, H, KV, HD, E, K, F = 64, 32, 2, 4, 2, 8, 4, 2, 16
QR, KVR, NOPE, ROPE, DV = 24, 16, 8, 4, 8   # DeepSeek's latent attention: q and kv ranks, head dims


def bf16(a):
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")   # round to nearest even


def write(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = bf16(tensors[name]).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(np.shape(tensors[name])), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Gen:
    def __init__(self, seed):
        self.r = np.random.default_rng(seed)
        self.t = {}

    def mat(self, name, rows, cols, scale=1.0):
        self.t[name] = self.r.standard_normal((rows, cols)) * scale / np.sqrt(cols)

    def vec(self, name, n, center=0.0, std=0.1):
        self.t[name] = center + std * self.r.standard_normal(n)

    def glu(self, prefix, f, names=("gate_proj", "up_proj", "down_proj")):
        self.mat("%s.%s.weight" % (prefix, names[0]), f, D)
        self.mat("%s.%s.weight" % (prefix, names[1]), f, D)
        self.mat("%s.%s.weight" % (prefix, names[2]), D, f)

    def moe(self, prefix, names, E_=E):
        self.mat(prefix + ".gate.weight", E_, D, 3.0)
        for e in range(E_):
            self.glu("%s.experts.%d" % (prefix, e), F, names)

    def shared_moe(self, i, n_experts=E, score_bias=False, first_dense=True):
        """DeepSeek's MLP: dense in layer 0 when first_dense, else routed experts (with a selection bias when
        score_bias) beside a shared expert."""
        p = "model.layers.%d.mlp" % i
        if first_dense and i == 0:
            self.glu(p, 48)
            return
        self.moe(p, ("gate_proj", "up_proj", "down_proj"), n_experts)
        if score_bias:
            self.vec(p + ".gate.e_score_correction_bias", n_experts, 0.0, 0.3)
        self.glu(p + ".shared_experts", F)

    def norms(self, i, bias=False):
        for n in ("input_layernorm", "post_attention_layernorm"):
            self.vec("model.layers.%d.%s.weight" % (i, n), D, 1.0)
            if bias:
                self.vec("model.layers.%d.%s.bias" % (i, n), D)

    def gqa(self, i, hd=HD, bias=False, o_bias=False, qk=None, kv=KV):
        p = "model.layers.%d.self_attn." % i
        self.mat(p + "q_proj.weight", H * hd, D)
        self.mat(p + "k_proj.weight", kv * hd, D)
        self.mat(p + "v_proj.weight", kv * hd, D)
        self.mat(p + "o_proj.weight", D, H * hd)
        if bias:
            for n, w in (("q", H), ("k", kv), ("v", kv)):
                self.vec(p + n + "_proj.bias", w * hd, std=0.3)
        if o_bias:
            self.vec(p + "o_proj.bias", D)
        if qk == "head":
            self.vec(p + "q_norm.weight", hd, 1.0)
            self.vec(p + "k_norm.weight", hd, 1.0)
        elif qk == "full":
            self.vec(p + "q_norm.weight", H * hd, 1.0)
            self.vec(p + "k_norm.weight", kv * hd, 1.0)

    def mla(self, i, bias=False):
        """DeepSeek's latent attention: q through q_a/q_b, keys and values through kv_a/kv_b (bias: on q_a_proj,
        kv_a_proj_with_mqa and o_proj)."""
        p = "model.layers.%d.self_attn." % i
        self.mat(p + "q_a_proj.weight", QR, D)
        if bias:
            self.vec(p + "q_a_proj.bias", QR, std=0.3)
        self.vec(p + "q_a_layernorm.weight", QR, 1.0)
        self.mat(p + "q_b_proj.weight", H * (NOPE + ROPE), QR)
        self.mat(p + "kv_a_proj_with_mqa.weight", KVR + ROPE, D)
        if bias:
            self.vec(p + "kv_a_proj_with_mqa.bias", KVR + ROPE, std=0.3)
        self.vec(p + "kv_a_layernorm.weight", KVR, 1.0)
        self.mat(p + "kv_b_proj.weight", H * (NOPE + DV), KVR)
        self.mat(p + "o_proj.weight", D, H * DV)
        if bias:
            self.vec(p + "o_proj.bias", D)

    def ends(self, tied=False, norm_bias=False, head_bias=False):
        self.t["model.embed_tokens.weight"] = self.r.standard_normal((V, D))
        self.vec("model.norm.weight", D, 1.0)
        if norm_bias:
            self.vec("model.norm.bias", D)
        if not tied:
            self.mat("lm_head.weight", V, D, 2.0)
        if head_bias:
            self.vec("lm_head.bias", V)


MLA_CONFIG = {"q_lora_rank": QR, "kv_lora_rank": KVR, "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE,
              "v_head_dim": DV}


def base_config(model_type, arch):
    return {"architectures": [arch], "model_type": model_type, "vocab_size": V, "hidden_size": D,
            "num_hidden_layers": L, "num_attention_heads": H, "num_key_value_heads": KV,
            "max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": None,
            "tie_word_embeddings": False, "num_experts_per_tok": K, "hidden_act": "silu", "torch_dtype": "bfloat16"}


def mixtral_window():
    g = Gen(1)
    g.ends()
    for i in range(L):
        g.norms(i)
        g.gqa(i)
        g.moe("model.layers.%d.block_sparse_moe" % i, ("w1", "w3", "w2"))
    c = base_config("mixtral", "MixtralForCausalLM")
    c.update({"intermediate_size": F, "num_local_experts": E, "rms_norm_eps": 1e-5, "sliding_window": 16,
              "rope_theta": 1e6, "head_dim": HD})
    return g, c


def olmoe_clip():
    g = Gen(2)
    g.ends()
    for i in range(L):
        g.norms(i)
        g.gqa(i, qk="full", kv=H)
        g.moe("model.layers.%d.mlp" % i, ("gate_proj", "up_proj", "down_proj"))
    c = base_config("olmoe", "OlmoeForCausalLM")
    c.update({"intermediate_size": F, "num_experts": E, "rms_norm_eps": 1e-5, "clip_qkv": 1.5,
              "norm_topk_prob": True, "attention_bias": False})
    c["num_attention_heads"], c["num_key_value_heads"] = H, H   # olmoe: head_dim = hidden / heads
    return g, c


def qwen3():
    g = Gen(3)
    g.ends(tied=True)
    hd = 16   # head_dim from config.json, not hidden / heads
    for i in range(L):
        g.norms(i)
        g.gqa(i, hd=hd, qk="head")
        if i == 0:
            g.glu("model.layers.0.mlp", 48)
        else:
            g.moe("model.layers.%d.mlp" % i, ("gate_proj", "up_proj", "down_proj"))
    c = base_config("qwen3_moe", "Qwen3MoeForCausalLM")
    c.update({"intermediate_size": 48, "moe_intermediate_size": F, "num_experts": E, "rms_norm_eps": 1e-6,
              "head_dim": hd, "norm_topk_prob": True, "mlp_only_layers": [0], "decoder_sparse_step": 1,
              "tie_word_embeddings": True, "rope_scaling": {"rope_type": "linear", "factor": 2.0},
              "attention_bias": False, "use_sliding_window": False})
    return g, c


def phimoe():
    g = Gen(4)
    g.ends(norm_bias=True, head_bias=True)
    for i in range(L):
        g.norms(i, bias=True)
        g.gqa(i, bias=True, o_bias=True)
        g.moe("model.layers.%d.block_sparse_moe" % i, ("w1", "w3", "w2"))
    c = base_config("phimoe", "PhiMoEForCausalLM")
    c.update({"intermediate_size": F, "num_local_experts": E, "rms_norm_eps": 1e-5, "attention_bias": True,
              "lm_head_bias": True, "router_jitter_noise": 0.01, "sliding_window": 8, "rope_theta": 1e6,
              "input_jitter_noise": 0.0})
    return g, c


def deepseek(seed=5, n_experts=E):
    g = Gen(seed)
    g.ends()
    for i in range(L):
        g.norms(i)
        g.mla(i)
        g.shared_moe(i, n_experts)
    c = base_config("deepseek_v2", "DeepseekV2ForCausalLM")
    c.update({"intermediate_size": 48, "moe_intermediate_size": F, "n_routed_experts": n_experts,
              "n_shared_experts": 1,
              "rms_norm_eps": 1e-6, **MLA_CONFIG, "first_k_dense_replace": 1, "moe_layer_freq": 1,
              "routed_scaling_factor": 1.5, "topk_method": "greedy", "norm_topk_prob": False,
              "max_position_embeddings": 128, "num_key_value_heads": H, "attention_bias": False,
              "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707}})
    return g, c


def qwen2moe_window():
    """Qwen2-MoE as transformers 5 writes it: rope_parameters (with its own rope_theta over the top-level one),
    layer_types putting the window on layer 0 only, q/k/v biases, the gated shared expert."""
    g = Gen(6)
    g.ends()
    for i in range(L):
        g.norms(i)
        g.gqa(i, bias=True)
        g.moe("model.layers.%d.mlp" % i, ("gate_proj", "up_proj", "down_proj"))
        g.glu("model.layers.%d.mlp.shared_expert" % i, 24)
        g.mat("model.layers.%d.mlp.shared_expert_gate.weight" % i, 1, D)
    c = base_config("qwen2_moe", "Qwen2MoeForCausalLM")
    del c["rope_scaling"]
    c.update({"intermediate_size": 48, "moe_intermediate_size": F, "num_experts": E, "rms_norm_eps": 1e-6,
              "shared_expert_intermediate_size": 24, "norm_topk_prob": False, "decoder_sparse_step": 1,
              "mlp_only_layers": [], "use_sliding_window": True, "sliding_window": 12, "max_window_layers": 1,
              "layer_types": ["sliding_attention", "full_attention"], "qkv_bias": True,
              "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}})
    return g, c


def deepseek_bias():
    """DeepSeek-V2 with attention_bias (q_a_proj, kv_a_proj_with_mqa and o_proj biases) and yarn in
    transformers 5's rope_parameters, whose explicit factor 2 differs from max / original positions = 4."""
    g = Gen(7)
    g.ends()
    for i in range(L):
        g.norms(i)
        g.mla(i, bias=True)
        g.shared_moe(i, first_dense=False)
    c = base_config("deepseek_v2", "DeepseekV2ForCausalLM")
    del c["rope_scaling"]
    c.update({"intermediate_size": 48, "moe_intermediate_size": F, "n_routed_experts": E, "n_shared_experts": 1,
              "rms_norm_eps": 1e-6, **MLA_CONFIG, "first_k_dense_replace": 0, "moe_layer_freq": 1,
              "routed_scaling_factor": 1.0, "topk_method": "greedy", "norm_topk_prob": False,
              "max_position_embeddings": 128, "num_key_value_heads": H, "attention_bias": True,
              "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32,
                                  "rope_theta": 20000.0, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                                  "mscale_all_dim": 0.707}})
    return g, c


def deepseek3():
    """DeepSeek-V3 routing: 8 experts in 4 groups of which 2 are eligible, a selection bias, yarn with mscale_all_dim
    (which DeepseekV3Attention puts on the softmax scale)."""
    g = Gen(6)
    g.ends()
    E3 = 8
    for i in range(L):
        g.norms(i)
        g.mla(i)
        g.shared_moe(i, E3, score_bias=True)
    c = base_config("deepseek_v3", "DeepseekV3ForCausalLM")
    c.update({"intermediate_size": 48, "moe_intermediate_size": F, "n_routed_experts": E3, "n_shared_experts": 1,
              "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2, "topk_method": "noaux_tc",
              "rms_norm_eps": 1e-6, **MLA_CONFIG, "first_k_dense_replace": 1,
              "routed_scaling_factor": 2.5, "norm_topk_prob": True, "rope_interleave": True,
              "max_position_embeddings": 128, "num_key_value_heads": H, "attention_bias": False,
              "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32,
                               "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}})
    return g, c


def glm4():
    """GLM-4.5 style: q/k/v biases, per-head q/k norm, RoPE on half of each head, DeepSeek-V3 routing (8 experts,
    2 groups of which 1 is eligible), a shared expert and a dense first layer."""
    g = Gen(7)
    g.ends()
    hd, E4 = 16, 8
    for i in range(L):
        g.norms(i)
        g.gqa(i, hd=hd, bias=True, qk="head")
        g.shared_moe(i, E4, score_bias=True)
    c = base_config("glm4_moe", "Glm4MoeForCausalLM")
    c.update({"intermediate_size": 48, "moe_intermediate_size": F, "n_routed_experts": E4, "n_shared_experts": 1,
              "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1,
              "routed_scaling_factor": 1.5, "norm_topk_prob": True, "rms_norm_eps": 1e-5, "head_dim": hd,
              "partial_rotary_factor": 0.5, "attention_bias": True, "use_qk_norm": True})
    return g, c


def deepseek_groups():
    """DeepSeek-V2 with group_limited_greedy: 8 experts in 4 groups of 2, the best 2 groups eligible, top-3."""
    g, c = deepseek(seed=6, n_experts=8)
    c.update({"topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2, "num_experts_per_tok": 3})
    return g, c


def gptoss():
    """gpt-oss: q/k/v/o biases, a sink logit per head, a sliding first layer (window 8) and a full second one,
    yarn RoPE with truncate false, router bias, experts stored [in, out] with gate and up interleaved and biases,
    the clamped SwiGLU (gate_up drawn at 4x scale so that both clamps act)."""
    g = Gen(8)
    g.ends()
    hd = 16
    for i in range(L):
        g.norms(i)
        g.gqa(i, hd=hd, bias=True, o_bias=True)
        g.vec("model.layers.%d.self_attn.sinks" % i, H, 0.0, 1.0)
        p = "model.layers.%d.mlp" % i
        g.mat(p + ".router.weight", E, D, 3.0)
        g.vec(p + ".router.bias", E, 0.0, 0.5)
        g.t[p + ".experts.gate_up_proj"] = g.r.standard_normal((E, D, 2 * F)) * 4.0 / np.sqrt(D)
        g.vec(p + ".experts.gate_up_proj_bias", (E, 2 * F), 0.0, 0.3)
        g.t[p + ".experts.down_proj"] = g.r.standard_normal((E, F, D)) / np.sqrt(F)
        g.vec(p + ".experts.down_proj_bias", (E, D), 0.0, 0.1)
    c = base_config("gpt_oss", "GptOssForCausalLM")
    c.update({"intermediate_size": F, "num_local_experts": E, "head_dim": hd, "rms_norm_eps": 1e-5,
              "attention_bias": True, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"],
              "rope_theta": 150000.0, "swiglu_limit": 7.0,
              "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                               "truncate": False, "original_max_position_embeddings": 128}})
    return g, c


MODELS = (("mixtral-window", mixtral_window), ("olmoe-clip", olmoe_clip), ("qwen3-tiny", qwen3),
          ("phimoe-tiny", phimoe), ("deepseek-tiny", deepseek), ("qwen2moe-window", qwen2moe_window),
          ("deepseek-bias", deepseek_bias), ("deepseek3-tiny", deepseek3), ("glm4-tiny", glm4),
          ("deepseek-groups", deepseek_groups), ("gptoss-tiny", gptoss))


def main():
    """make_tiny.py OUT [NAME...]: every model, or the ones named."""
    out, only = sys.argv[1], sys.argv[2:]
    for name, fn in MODELS:
        if only and name not in only:
            continue
        g, c = fn()
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        write(os.path.join(d, "model.safetensors"), g.t)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
