"""The shared decoding loop and sampler: batches of uneven prompts, teacher forcing, seeds, filters, DNA
symbols, and (on CUDA) graph replay against the eager loop and constant memory.
"""

from __future__ import annotations

import pytest
import torch
from Bio import SeqIO
from cli_harness import run_cli

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.decoding import Decoder
from seqssm.pipelines.generate import GenerateConfig, dna_symbols, generate
from seqssm.pipelines.sampling import check_sampling, sample_tokens, symbol_mask
from seqssm.tokenizers import ByteTokenizer, NucleotideTokenizer

VOCAB = 10
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


pytestmark = pytest.mark.usefixtures("one_thread")


def model_for(device="cpu", **kw) -> MambaLMHeadModel:
    """A tiny random causal model whose next-token distributions depend on the context."""
    torch.manual_seed(0)
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": VOCAB, "d_state": 8, **kw})
    model = MambaLMHeadModel(config)
    with torch.no_grad():  # off the structured init, so the states matter and logits are far from uniform
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.to(device).eval()


def uneven_prompts(lengths, seed=1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g) for n in lengths]


def forward_logprobs(model, prompt: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """log p(new[j] | prompt, new[:j]) [N] and the argmax [N] from one parallel forward pass."""
    ids = torch.cat([prompt, new])[None].to(next(model.parameters()).device)
    logp = model(ids[:, :-1]).float().log_softmax(-1)[0, len(prompt) - 1 :]
    return logp.gather(1, new[:, None].to(logp.device))[:, 0].cpu(), logp.argmax(-1).cpu()


# Sampler --------------------------------------------------------------------------------------------


def draws(logits: torch.Tensor, n: int = 40000, seed: int = 0, **options) -> torch.Tensor:
    """Frequencies [V] of n draws from one row of logits [V]."""
    noise = torch.rand(n, logits.shape[0], generator=torch.Generator().manual_seed(seed))
    ids, _ = sample_tokens(logits.expand(n, -1), noise, **options)
    return torch.bincount(ids, minlength=logits.shape[0]).double() / n


PROBS = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)


@pytest.mark.parametrize("options, expected", [
    ({}, PROBS),
    ({"top_k": 2}, torch.tensor([0.4, 0.3, 0, 0, 0]) / 0.7),
    # The mass before token 3 is 0.85 >= 0.8: tokens 0-2 stay.
    ({"top_p": 0.8}, torch.tensor([0.4, 0.3, 0.15, 0, 0]) / 0.85),
    ({"allowed": torch.tensor([False, True, True, False, True])}, torch.tensor([0, 0.3, 0.15, 0, 0.05]) / 0.5),
    ({"temperature": 0.5}, PROBS**2 / (PROBS**2).sum()),
    ({"allowed": torch.tensor([True, False, True, True, True]), "top_k": 2}, torch.tensor([0.4, 0, 0.15, 0, 0]) / 0.55),
])
def test_sampler_draws_from_the_filtered_distribution(options, expected):
    freq = draws(PROBS.log().float(), **options)
    assert (freq[expected.double() == 0] == 0).all()  # filtered tokens are never drawn
    torch.testing.assert_close(freq, expected.double(), atol=0.012, rtol=0)  # > 4 sigma at 40k draws


def test_sampler_logprob_is_the_unfiltered_model_probability_and_seeded():
    logits = torch.randn(64, VOCAB)
    noise = torch.rand(64, VOCAB, generator=torch.Generator().manual_seed(3))
    ids, logprob = sample_tokens(logits, noise, temperature=0.7, top_k=3, top_p=0.9)
    torch.testing.assert_close(logprob, logits.log_softmax(-1).gather(1, ids[:, None])[:, 0])
    assert torch.equal(ids, sample_tokens(logits, noise.clone(), temperature=0.7, top_k=3, top_p=0.9)[0])
    greedy, _ = sample_tokens(logits, noise, top_k=1)
    assert torch.equal(greedy, logits.argmax(-1))


def test_bad_sampling_options():
    for kwargs, flag in [({"temperature": 0}, "--temperature"), ({"top_p": 0}, "--top-p"),
                         ({"top_p": 1.5}, "--top-p"), ({"top_k": -1}, "--top-k")]:
        with pytest.raises(InputError, match=flag):
            check_sampling(**{"temperature": 1.0, "top_k": 0, "top_p": 1.0, **kwargs})


# The decoding loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k, flush", [(1, 512), (3, 4), (8, 8)])
def test_uneven_batch_equals_each_prompt_alone(k, flush):
    model = model_for()
    prompts = uneven_prompts([5, 1, 12, 7])
    batch = Decoder(model, 4, top_k=1, steps_per_replay=k, flush_steps=flush).decode(prompts, 9, seed=2)
    assert batch.tokens.shape == (4, 9) and batch.steps == 12 - 1 + 9
    for i, prompt in enumerate(prompts):
        alone = Decoder(model, 1, top_k=1).decode([prompt], 9, seed=2)
        assert torch.equal(batch.tokens[i], alone.tokens[0]), i
        torch.testing.assert_close(batch.logprobs[i], alone.logprobs[0], atol=1e-5, rtol=0)


def test_steps_and_teacher_forcing_match_the_parallel_forward():
    model = model_for()
    # Prompt tails of 0-14 tokens are fed by the step loop, across windows of 4 steps.
    prompts = uneven_prompts([2, 16, 9])
    greedy = Decoder(model, 3, top_k=1, steps_per_replay=3, flush_steps=4).decode(prompts, 11)
    sampled = Decoder(model, 3, temperature=0.8, top_p=0.9, steps_per_replay=2).decode(prompts, 11, seed=4)
    for i, prompt in enumerate(prompts):
        logp, argmax = forward_logprobs(model, prompt, greedy.tokens[i])
        assert torch.equal(greedy.tokens[i], argmax), i
        torch.testing.assert_close(greedy.logprobs[i], logp, atol=1e-4, rtol=0)
        logp, _ = forward_logprobs(model, prompt, sampled.tokens[i])
        torch.testing.assert_close(sampled.logprobs[i], logp, atol=1e-4, rtol=0)


def test_decoding_is_seeded_and_a_decoder_is_reusable():
    model = model_for()
    prompts = uneven_prompts([3, 6])
    decoder = Decoder(model, 2, temperature=1.5, steps_per_replay=4)
    a, b = decoder.decode(prompts, 40, seed=5), decoder.decode(prompts, 40, seed=5)
    fresh = Decoder(model, 2, temperature=1.5, steps_per_replay=4).decode(prompts, 40, seed=5)
    other = decoder.decode(prompts, 40, seed=6)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, fresh.tokens)
    assert not torch.equal(a.tokens, other.tokens)
    # Another block size runs the same steps with the same noise.
    assert torch.equal(Decoder(model, 2, temperature=1.5, steps_per_replay=7).decode(prompts, 40, seed=5).tokens,
                       a.tokens)


def test_decoder_respects_the_allowed_mask_and_empty_prompts():
    model = model_for()
    allowed = symbol_mask(VOCAB, [5, 6, 7, 8])
    result = Decoder(model, 3, temperature=2.0, allowed=allowed).decode([torch.zeros(0, dtype=torch.long)] * 3,
                                                                       200, seed=0)
    assert set(result.tokens.unique().tolist()) == {5, 6, 7, 8}


def test_decoder_rejects_bad_input():
    model = model_for()
    with pytest.raises(InputError, match="cuda_graph=True"):
        Decoder(model, 1, cuda_graph=True)
    with pytest.raises(InputError, match="steps_per_replay"):
        Decoder(model, 1, steps_per_replay=0)
    decoder = Decoder(model, 2)
    with pytest.raises(InputError, match="batch size 2"):
        decoder.decode(uneven_prompts([3]), 5)
    with pytest.raises(InputError, match="outside"):
        decoder.decode([torch.tensor([1, 2]), torch.tensor([VOCAB])], 5)
    with pytest.raises(InputError, match="new_tokens"):
        decoder.decode(uneven_prompts([3, 3]), 0)
    with pytest.raises(InputError, match="bidirectional"):
        Decoder(MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=VOCAB, bidirectional=True)), 1)


# DNA generation ---------------------------------------------------------------------------------------


def test_dna_symbols():
    nt = NucleotideTokenizer()
    assert dna_symbols(nt) == [nt.a_id, nt.c_id, nt.g_id, nt.t_id]
    assert dna_symbols(nt, allow_ambiguous=True) == [nt.a_id, nt.c_id, nt.g_id, nt.t_id, nt.n_id]
    assert bytes(dna_symbols(ByteTokenizer())) == b"ACGTacgt"
    assert len(dna_symbols(ByteTokenizer(), allow_ambiguous=True)) == 2 * 15


@pytest.fixture(scope="module")
def n_loving_checkpoint(tmp_path_factory):
    """A DNA model whose head puts nearly all the mass on N, whatever the context."""
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=2, d_state=4, vocab_size=VOCAB))
    with torch.no_grad():
        for layer in model.backbone.layers:
            layer.mixer.out_proj.weight.zero_()  # the hidden state is the token's embedding
        emb = model.backbone.embedding.weight  # tied to lm_head
        emb.zero_()
        emb[:, 0] = 1.0
        emb[NucleotideTokenizer.n_id, 0] = 10.0  # every hidden state normalises to e_0: N's logit is 10x
    path = tmp_path_factory.mktemp("n_model") / "checkpoint"
    model.save_pretrained(path)
    return path


@pytest.mark.parametrize("prompt", [None, "ACGTNNAC"])
def test_dna_generation_never_emits_n_unless_allowed(n_loving_checkpoint, tmp_path, prompt):
    def bases(allow, name):
        out = generate(GenerateConfig(str(n_loving_checkpoint), str(tmp_path / name), length=300, num_sequences=2,
                                      prompt=prompt, device="cpu", allow_ambiguous=allow))
        return "".join(str(r.seq) for r in SeqIO.parse(out, "fasta"))

    plain = bases(False, "plain.fa")
    assert len(plain) == 600 and set(plain) == set("ACGT")
    ambiguous = bases(True, "ambiguous.fa")
    assert ambiguous.count("N") > 590


def test_cli_allow_ambiguous(n_loving_checkpoint, tmp_path, capsys, monkeypatch):
    """The flag through the console script's entry point, in this process (``cli_harness``)."""
    out = tmp_path / "cli.fa"
    code, err = run_cli(["generate", n_loving_checkpoint, "--out", out, "--length", "50", "--allow-ambiguous",
                         "--device", "cpu"], capsys, monkeypatch)
    assert code == 0, err
    assert str(next(SeqIO.parse(out, "fasta")).seq).count("N") > 45


# CUDA graphs ------------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("lengths", [[6], [6, 1, 20, 11]])
@pytest.mark.parametrize("k", [1, 8])
def test_graph_replay_gives_the_eager_tokens(lengths, k):
    model = model_for("cuda")
    prompts = uneven_prompts(lengths)
    new = 8 * 7 + 5  # not a multiple of K (with the prompt tails, nor is the step count)
    options = {"temperature": 0.9, "top_p": 0.95, "steps_per_replay": k, "flush_steps": 16}
    graph = Decoder(model, len(lengths), cuda_graph=True, **options)
    eager = Decoder(model, len(lengths), cuda_graph=False, **options)
    a, b = graph.decode(prompts, new, seed=11), eager.decode(prompts, new, seed=11)
    assert graph.graph is not None and eager.graph is None
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-6, rtol=0)
    # The captured graph is reused, and a second decode with the same seed repeats the first.
    assert torch.equal(graph.decode(prompts, new, seed=11).tokens, a.tokens)
    for i, prompt in enumerate(prompts):
        logp, _ = forward_logprobs(model, prompt, a.tokens[i])
        torch.testing.assert_close(a.logprobs[i], logp, atol=2e-3, rtol=0)


@pytest.mark.gpu
@cuda
def test_graph_decoding_memory_is_constant_in_length():
    model = model_for("cuda")
    decoder = Decoder(model, 4, steps_per_replay=8)
    prompts = uneven_prompts([30, 5, 17, 9])
    decoder.decode(prompts, 1000)  # capture and warm-up
    peaks = []
    for new in (1000, 10000):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        decoder.decode(prompts, new)
        peaks.append(torch.cuda.max_memory_allocated())
    assert peaks[1] <= peaks[0] + 64 * 1024, peaks
