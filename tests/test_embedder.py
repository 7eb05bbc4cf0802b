"""seqssm.embedder: Embedder against the backbone run row by row, for every input kind; SeqEmbedder as a
scikit-learn transformer (the applicable estimator checks, cloning, pickling, pipelines in cross_val_score).

scikit-learn's ``check_estimator`` feeds numeric arrays, which a transformer of DNA strings rejects, so only
the checks that need no data (or only the estimator's parameters) are run as they are:
check_estimator_cloneable, check_estimator_repr, check_no_attributes_set_in_init,
check_parameters_default_constructible, check_get_params_invariance, check_set_params,
check_do_not_raise_errors_in_init_or_set_params, check_estimator_tags_renamed, check_valid_tag_types,
check_mixin_order, check_transformers_unfitted (numeric X, but NotFittedError comes first). The data checks
that matter for a transformer are re-done here on strings: fit returns self, fit is idempotent, transform
before fit raises NotFittedError, subset and sample-order invariance, pickling, get_feature_names_out, no
parameter overwritten by fit.
"""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as checks

from seqssm.config import MambaConfig
from seqssm.embedder import Embedder, SeqEmbedder
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, reverse_complement_ids
from seqssm.models.heads import SequenceClassifier, TaskConfig
from seqssm.tokenizers import NucleotideTokenizer
from seqssm.transforms import AudioTokenizer

TOK = NucleotideTokenizer()


def backbone(path, *, bidirectional=True, rc=False, tokenizer="nucleotide", seed=0):
    torch.manual_seed(seed)
    audio = tokenizer != "nucleotide"
    config = MambaConfig(d_model=16, n_layer=2, d_state=4, expand=1, vocab_size=256 if audio else 10,
                         bidirectional=bidirectional, rc_equivariant=rc, tokenizer=tokenizer,
                         sample_rate=8000 if audio else None)
    model = MambaLMHeadModel(config, impl="chunked")
    model.save_pretrained(path)
    return model.eval()


def seqs(n=7, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice("ACGT") for _ in range(rng.randint(3, 30))) for _ in range(n)]


@pytest.fixture
def ckpt(tmp_path):
    return tmp_path / "bb", backbone(tmp_path / "bb")


@torch.no_grad()
def alone(model, seq, add_cls=False):
    ids = TOK.encode(seq)
    if add_cls:
        ids = np.concatenate(([TOK.cls_id], ids))
    return model.backbone(torch.from_numpy(ids)[None])[0]


@pytest.mark.parametrize("pooling", ["mean", "last", "cls"])
def test_pooled_sequences_equal_each_row_alone(ckpt, pooling):
    path, model = ckpt
    data = seqs()
    got = Embedder(path, pooling=pooling, batch_size=3, device="cpu").embed_sequences(data)
    assert got.shape == (7, 16) and got.dtype == np.float32
    for row, seq in zip(got, data, strict=True):
        h = alone(model, seq, add_cls=pooling == "cls")
        expected = {"mean": h.mean(0), "last": h[-1], "cls": h[0]}[pooling]
        np.testing.assert_allclose(row, expected.numpy(), atol=1e-5, rtol=1e-5)


def test_flatten_pooling_concatenates_every_position_in_order(ckpt, tmp_path):
    path, model = ckpt
    rng = random.Random(4)
    data = ["".join(rng.choice("ACGT") for _ in range(12)) for _ in range(7)]
    got = Embedder(path, pooling="flatten", batch_size=3, device="cpu").embed_sequences(data)
    assert got.shape == (7, 12 * 16) and got.dtype == np.float32
    for row, seq in zip(got, data, strict=True):
        np.testing.assert_allclose(row, alone(model, seq).reshape(-1).numpy(), atol=1e-5, rtol=1e-5)
    # Another length is refused, within one batch (padding) or across batches.
    for batch_size in (1, 8):
        with pytest.raises(InputError, match="flatten pooling needs inputs of one length"):
            Embedder(path, pooling="flatten", batch_size=batch_size, device="cpu").embed_sequences(
                [*data, data[0] + "A"])
    fitted = SeqEmbedder(path, pooling="flatten").fit(data)
    assert fitted.n_features_out_ == 12 * 16
    np.testing.assert_allclose(fitted.transform(data), got, atol=1e-6)
    assert len(fitted.get_feature_names_out()) == 12 * 16
    with pytest.raises(InputError, match="flatten pooling needs inputs of one length, got lengths 12 to 13"):
        SeqEmbedder(path, pooling="flatten").fit([*data, data[0] + "A"])
    backbone(tmp_path / "rc", rc=True)
    with pytest.raises(InputError, match="RC-invariantly with 'mean' only"):
        Embedder(tmp_path / "rc", pooling="flatten", device="cpu")


def test_per_position_tokens_and_batch_size(ckpt):
    path, model = ckpt
    data = seqs(5)
    per = Embedder(path, device="cpu", batch_size=2).embed_sequences(data, per_position=True)
    for h, seq in zip(per, data, strict=True):
        assert h.shape == (len(seq), 16)
        np.testing.assert_allclose(h, alone(model, seq).numpy(), atol=1e-5, rtol=1e-5)
    ids, mask = TOK.encode_batch(data)
    emb = Embedder(path, device="cpu", batch_size=4)
    tokens = emb.embed_tokens(torch.from_numpy(ids), torch.from_numpy(mask))
    np.testing.assert_allclose(tokens, emb.embed_sequences(data), atol=1e-6)
    np.testing.assert_allclose(Embedder(path, device="cpu", batch_size=1).embed_sequences(data),
                               emb.embed_sequences(data), atol=1e-6)
    np.testing.assert_allclose(emb.embed(torch.from_numpy(TOK.encode(data[0]))), tokens[:1], atol=1e-6)


def test_fasta_and_embed_dispatch(ckpt, tmp_path):
    path, _ = ckpt
    data = seqs(5)
    (tmp_path / "x.fa").write_text("".join(f">r{i} some words\n{s}\n" for i, s in enumerate(data)))
    emb = Embedder(path, device="cpu", batch_size=2)
    names, vectors = emb.embed_fasta(tmp_path / "x.fa")
    assert names == [f"r{i}" for i in range(5)]
    expected = emb.embed_sequences(data)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_allclose(emb.embed(str(tmp_path / "x.fa")), expected, atol=1e-6)
    np.testing.assert_allclose(emb.embed(data), expected, atol=1e-6)
    np.testing.assert_allclose(emb.embed(data[1]), expected[1:2], atol=1e-6)
    assert [h.shape[0] for h in emb.embed(data, per_position=True)] == [len(s) for s in data]
    with pytest.raises(InputError, match="mismatched modality"):
        emb.embed(np.zeros(100, dtype=np.float32))


def test_rc_model_embeddings_are_strand_invariant(tmp_path):
    backbone(tmp_path / "rc", rc=True)
    emb = Embedder(tmp_path / "rc", device="cpu")
    assert emb.dim == 8
    data = seqs(4)
    rc = [TOK.reverse_complement(s) for s in data]
    np.testing.assert_allclose(emb.embed_sequences(data), emb.embed_sequences(rc), atol=1e-5)
    with pytest.raises(InputError, match="RC-invariantly"):
        Embedder(tmp_path / "rc", pooling="last", device="cpu")
    ids, mask = TOK.encode_batch(data)
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    flipped = reverse_complement_ids(ids, torch.tensor([0, 1, 2, 3, 4, 8, 7, 6, 5, 9]), mask)
    np.testing.assert_allclose(emb.embed_tokens(ids, mask), emb.embed_tokens(flipped, mask), atol=1e-5)


def test_classifier_checkpoint_gives_the_heads_features(tmp_path):
    torch.manual_seed(1)
    config = MambaConfig(d_model=16, n_layer=1, d_state=4, expand=1, vocab_size=10, bidirectional=True)
    model = SequenceClassifier(MambaLMHeadModel(config), TaskConfig(classes=["a", "b"], pooling="cls")).eval()
    model.save_pretrained(tmp_path / "clf")
    emb = Embedder(tmp_path / "clf", device="cpu")
    assert emb.pooling == "cls"
    data = seqs(3)
    for row, seq in zip(emb.embed_sequences(data), data, strict=True):
        ids = torch.from_numpy(np.concatenate(([TOK.cls_id], TOK.encode(seq))))[None]
        np.testing.assert_allclose(row, model.features(ids)[0][0].detach().numpy(), atol=1e-5)


def test_audio_embeddings(tmp_path):
    rng = np.random.default_rng(0)
    waves = [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (40, 97, 64)]
    lm = backbone(tmp_path / "alm", tokenizer="mulaw8")
    emb = Embedder(tmp_path / "alm", device="cpu", batch_size=2)
    got = emb.embed(waves)
    tok = AudioTokenizer("mulaw", 8)
    for row, w in zip(got, waves, strict=True):
        ids = tok.encode(torch.from_numpy(w))[None]
        np.testing.assert_allclose(row, lm.backbone(ids)[0].mean(0).detach().numpy(), atol=1e-5)
    sf.write(tmp_path / "w.wav", waves[1], 8000, subtype="FLOAT")
    np.testing.assert_allclose(emb.embed(str(tmp_path / "w.wav")), got[1:2], atol=1e-5)
    # At another rate, a waveform is resampled to the model's first.
    assert emb.embed_audio([waves[0]], sample_rate=16000).shape == (1, 16)
    # An audio classifier embeds through its patch projection.
    torch.manual_seed(2)
    config = MambaConfig(d_model=16, n_layer=1, d_state=4, expand=1, vocab_size=256, tokenizer="mulaw8",
                         sample_rate=8000)
    task = TaskConfig(classes=["x", "y"], modality="audio", patch_size=8, sample_rate=8000)
    clf = SequenceClassifier(MambaLMHeadModel(config), task).eval()
    clf.save_pretrained(tmp_path / "aclf")
    per = Embedder(tmp_path / "aclf", device="cpu").embed(waves, per_position=True)
    assert [h.shape for h in per] == [(5, 16), (13, 16), (8, 16)]
    pooled = Embedder(tmp_path / "aclf", device="cpu").embed(waves)
    for row, w in zip(pooled, waves, strict=True):
        np.testing.assert_allclose(row, clf.features(input_values=torch.from_numpy(w)[None])[0][0].detach().numpy(),
                                   atol=1e-5)
    with pytest.raises(InputError, match="mismatched modality"):
        emb.embed_sequences(["ACGT"])


# ---------------------------------------------------------------- SeqEmbedder

DATA_FREE_CHECKS = [
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_tags_renamed", "check_valid_tag_types",
    "check_mixin_order", "check_transformers_unfitted",
]


@pytest.mark.parametrize("check", DATA_FREE_CHECKS)
def test_sklearn_estimator_checks(ckpt, check):
    getattr(checks, check)("SeqEmbedder", SeqEmbedder(str(ckpt[0]), batch_size=4))


def test_seq_embedder_fit_transform_contract(ckpt):
    path = str(ckpt[0])
    data = seqs(9)
    est = SeqEmbedder(path, batch_size=4)
    params = est.get_params()
    with pytest.raises(NotFittedError):
        est.transform(data)
    assert est.fit(data) is est and est.get_params() == params
    out = est.transform(data)
    np.testing.assert_allclose(out, Embedder(path, device="cpu").embed_sequences(data), atol=1e-6)
    np.testing.assert_array_equal(est.fit(data).transform(data), out)  # fit is idempotent
    np.testing.assert_allclose(est.transform(data[2:5]), out[2:5], atol=1e-6)  # subset invariance
    order = np.random.default_rng(0).permutation(9)
    np.testing.assert_allclose(est.transform([data[i] for i in order]), out[order], atol=1e-6)
    np.testing.assert_allclose(est.transform(np.array(data, dtype=object)[:, None]), out, atol=1e-6)
    assert list(est.get_feature_names_out()[:2]) == ["embedding0", "embedding1"] and est.n_features_out_ == 16
    restored = pickle.loads(pickle.dumps(est))
    assert "_cached_embedder" not in restored.__dict__
    np.testing.assert_allclose(restored.transform(data), out, atol=1e-6)
    twin = clone(est)
    assert twin.get_params() == params and not hasattr(twin, "n_features_out_")
    twin.set_params(pooling="last")
    assert not np.allclose(twin.fit(data).transform(data), out)
    with pytest.raises(InputError, match="not a DNA string"):
        est.transform([1.0, 2.0])
    with pytest.raises(InputError, match="not one string"):
        est.transform("ACGT")
    with pytest.raises(InputError, match="checkpoint is None"):
        SeqEmbedder().fit(data)


def test_pipeline_in_cross_val_score(ckpt):
    rng = random.Random(5)
    data, y = [], []
    for i in range(24):
        seq = "".join(rng.choice("ACGT") for _ in range(20))
        data.append(seq[:8] + "GGGGGGGG" + seq[8:] if i % 2 else seq)
        y.append(i % 2)
    pipe = make_pipeline(SeqEmbedder(str(ckpt[0]), batch_size=8), LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, data, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    manual = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(data, y):
        fitted = clone(pipe).fit([data[i] for i in train], [y[i] for i in train])
        manual.append(fitted.score([data[i] for i in test], [y[i] for i in test]))
    np.testing.assert_allclose(scores, manual)
