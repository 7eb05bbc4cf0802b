"""Tokenizers against slow per-character references (dicts written out by hand) and Biopython."""

import re

import numpy as np
import pytest
import torch
from Bio.Seq import reverse_complement as bio_reverse_complement

from seqssm.errors import InputError
from seqssm.tokenizers import ByteTokenizer, NucleotideTokenizer, get_tokenizer

IUPAC = "ACGTNRYSWKMBDHVU"
REFERENCE_IDS = {"A": 5, "C": 6, "G": 7, "T": 8, "U": 8, **{c: 9 for c in "NRYSWKMBDHV"}}


def random_dna(rng: np.random.Generator, length: int, alphabet: str = IUPAC + IUPAC.lower()) -> str:
    return "".join(rng.choice(list(alphabet), size=length))


def reference_encode(seq: str) -> list[int]:
    return [REFERENCE_IDS[c.upper()] for c in seq]


@pytest.fixture
def tok() -> NucleotideTokenizer:
    return NucleotideTokenizer()


def test_vocab_layout(tok):
    assert (tok.pad_id, tok.mask_id, tok.cls_id, tok.bos_id, tok.sep_id, tok.eos_id, tok.unk_id) == (
        0, 1, 2, 2, 3, 3, 4,
    )
    assert (tok.a_id, tok.c_id, tok.g_id, tok.t_id, tok.n_id) == (5, 6, 7, 8, 9)
    assert tok.vocab_size == 10
    assert tok.special_ids == {0, 1, 2, 3, 4}
    assert tok.encode("ACGTN").tolist() == [5, 6, 7, 8, 9]
    assert tok.encode("ACGTN", add_special_tokens=True).tolist() == [2, 5, 6, 7, 8, 9, 3]
    assert tok.encode("").dtype == np.int64 and tok.encode("").shape == (0,)


@pytest.mark.parametrize("length", [0, 1, 7, 1001])
def test_encode_matches_reference(tok, length):
    seq = random_dna(np.random.default_rng(length), length)
    ids = tok.encode(seq)
    assert ids.dtype == np.int64
    assert ids.tolist() == reference_encode(seq)
    assert tok.encode(seq.encode("ascii")).tolist() == ids.tolist()


def test_iupac_codes_and_lowercase_become_n(tok):
    codes = "RYSWKMBDHV"
    assert tok.encode(codes + codes.lower()).tolist() == [tok.n_id] * 20
    assert tok.encode("Uu").tolist() == [tok.t_id] * 2
    assert tok.encode("acgtn").tolist() == tok.encode("ACGTN").tolist()


def test_soft_mask_marks_lowercase(tok):
    seq = random_dna(np.random.default_rng(1), 333)
    ids, soft = tok.encode(seq, return_soft_mask=True)
    assert soft.dtype == bool and soft.tolist() == [c.islower() for c in seq]
    assert ids.tolist() == reference_encode(seq)
    ids2, soft2 = tok.encode("acGT", add_special_tokens=True, return_soft_mask=True)
    assert ids2.tolist() == [2, 5, 6, 7, 8, 3]
    assert soft2.tolist() == [False, True, True, False, False, False]


@pytest.mark.parametrize("bad", ["-", "*", "1", " ", ".", "X", "\n"])
def test_invalid_character_names_it_position_and_source(tok, bad):
    seq = "ACGTAC" + bad + "GT"
    with pytest.raises(InputError, match=re.escape(f"invalid character {bad!r} at position 6 in chr7;")):
        tok.encode(seq, source="chr7")
    assert tok.encode(seq, errors="unk").tolist() == [5, 6, 7, 8, 5, 6, tok.unk_id, 7, 8]


def test_non_ascii_and_wrong_types_are_input_errors(tok):
    with pytest.raises(InputError, match="non-ASCII character 'é' at position 3"):
        tok.encode("ACGé")
    with pytest.raises(InputError, match="expected a DNA string"):
        tok.encode(12)
    with pytest.raises(InputError, match="errors='bogus'"):
        tok.encode("ACGT", errors="bogus")


def test_encode_batch_pads_right(tok):
    ids, mask = tok.encode_batch(["ACG", "T", ""])
    assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == (3, 3)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    ids, mask = tok.encode_batch(["AC"], pad_to=5, add_special_tokens=True)
    assert ids.tolist() == [[2, 5, 6, 3, 0]] and mask.sum() == 4
    with pytest.raises(InputError, match="pad_to=2"):
        tok.encode_batch(["ACGT"], pad_to=2)
    with pytest.raises(InputError, match="position 1 in sequence 1"):
        tok.encode_batch(["ACGT", "A-"])


def test_decode_round_trip(tok):
    seq = random_dna(np.random.default_rng(2), 501)
    expected = "".join("T" if c.upper() == "U" else c.upper() if c.upper() in "ACGTN" else "N" for c in seq)
    ids = tok.encode(seq, add_special_tokens=True)
    assert tok.decode(ids) == expected
    assert tok.decode(torch.from_numpy(ids)) == expected
    assert tok.decode(ids.tolist()) == expected
    assert tok.decode([]) == ""


def test_decode_keeps_specials_aligned_on_request(tok):
    ids = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert tok.decode(ids) == "ACGTN"
    shown = tok.decode(ids, skip_special_tokens=False)
    assert len(shown) == len(ids) and shown == ".#^$?ACGTN"


def test_decode_rejects_foreign_ids(tok):
    with pytest.raises(InputError, match=r"\[0, 10\)"):
        tok.decode([5, 10])
    with pytest.raises(InputError, match="integer token ids"):
        tok.decode(np.array([5.0, 6.0]))


def test_reverse_complement_string_iupac_pairs(tok):
    assert tok.reverse_complement("ACGTRYKMBVDHSWN") == "NWSDHBVKMRYACGT"
    assert tok.reverse_complement("aCgtn") == "nacGt"
    assert tok.reverse_complement("U") == "A"
    assert tok.reverse_complement("") == ""
    with pytest.raises(InputError, match="'-' at position 2"):
        tok.reverse_complement("AC-T")


@pytest.mark.parametrize("length", [1, 2, 9, 1000])
def test_reverse_complement_string_matches_biopython_and_is_an_involution(tok, length):
    no_u = IUPAC.replace("U", "")
    seq = random_dna(np.random.default_rng(length), length, no_u + no_u.lower())
    rc = tok.reverse_complement(seq)
    assert rc == bio_reverse_complement(seq)
    assert tok.reverse_complement(rc) == seq


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
def test_reverse_complement_numpy_ids(tok, dtype):
    rng = np.random.default_rng(3)
    seqs = [random_dna(rng, 37) for _ in range(4)]
    ids = np.stack([tok.encode(s) for s in seqs]).astype(dtype)
    rc = tok.reverse_complement(ids)
    assert isinstance(rc, np.ndarray) and rc.dtype == dtype and rc.shape == ids.shape
    # Tokens lose the IUPAC detail (all N), so RC of ids must equal the ids of the RC string.
    assert rc.tolist() == [tok.encode(tok.reverse_complement(s)).tolist() for s in seqs]
    assert np.array_equal(tok.reverse_complement(rc), ids)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_reverse_complement_tensor_ids(tok, dtype):
    ids = torch.randint(0, tok.vocab_size, (2, 3, 11), dtype=dtype)
    rc = tok.reverse_complement(ids)
    assert isinstance(rc, torch.Tensor) and rc.dtype == dtype and rc.device == ids.device
    swap = {5: 8, 8: 5, 6: 7, 7: 6}
    expected = [[[swap.get(v, v) for v in reversed(row)] for row in plane] for plane in ids.tolist()]
    assert rc.tolist() == expected
    assert torch.equal(tok.reverse_complement(rc), ids)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reverse_complement_cuda_ids_match_cpu(tok):
    for dtype in (torch.int64, torch.int32, torch.uint8):
        ids = torch.randint(0, tok.vocab_size, (3, 257), dtype=dtype)
        rc = tok.reverse_complement(ids.cuda())
        assert rc.device.type == "cuda" and rc.dtype == dtype
        assert torch.equal(rc.cpu(), tok.reverse_complement(ids))
    with pytest.raises(InputError, match="range"):
        tok.reverse_complement(torch.tensor([5, 11], device="cuda"))


def test_reverse_complement_keeps_n_and_specials(tok):
    ids = np.array([0, 1, 2, 3, 4, 9, 5])
    assert tok.reverse_complement(ids).tolist() == [8, 9, 4, 3, 2, 1, 0]


def test_reverse_complement_rejects_bad_ids(tok):
    with pytest.raises(InputError, match="integer ids"):
        tok.reverse_complement(torch.zeros(3))
    with pytest.raises(InputError, match=r"range \[5, 12\]"):
        tok.reverse_complement(np.array([5, 12]))
    with pytest.raises(InputError, match="expected a str"):
        tok.reverse_complement([5, 6])


def test_byte_tokenizer_layout_and_round_trip():
    tok = ByteTokenizer()
    assert (tok.vocab_size, tok.pad_id, tok.mask_id, tok.bos_id, tok.eos_id) == (260, 256, 257, 258, 259)
    assert tok.special_ids == {256, 257, 258, 259}
    text = "ACGT ünïcødé 🧬\n"
    ids = tok.encode(text, add_special_tokens=True)
    assert ids.dtype == np.int64
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[1:-1].tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    raw = bytes(range(256))
    assert tok.decode_bytes(tok.encode(raw)) == raw
    assert tok.decode(torch.tensor([72, 256, 105])) == "Hi"


def test_byte_tokenizer_batch_and_errors():
    tok = ByteTokenizer()
    ids, mask = tok.encode_batch(["ab", b"c"])
    assert ids.tolist() == [[97, 98], [99, 256]] and mask.tolist() == [[True, True], [True, False]]
    with pytest.raises(InputError, match=r"\[0, 260\)"):
        tok.decode([300])
    with pytest.raises(InputError, match="str or bytes"):
        tok.encode(3)


def test_get_tokenizer():
    assert isinstance(get_tokenizer("nucleotide"), NucleotideTokenizer)
    assert isinstance(get_tokenizer("byte"), ByteTokenizer)
    assert get_tokenizer("nucleotide").name == "nucleotide" and get_tokenizer("byte").name == "byte"
    with pytest.raises(InputError, match="byte, nucleotide"):
        get_tokenizer("bpe")
