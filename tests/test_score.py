"""`seqssm score` and `seqssm score-variants`: scores against forward passes done by hand, streamed against one
pass, every kind of input, variant LLRs on a real genome, bad records counted and bad inputs refused."""

from __future__ import annotations

import math
import sys

import numpy as np
import pysam
import pytest
import soundfile as sf
import torch
from cli_harness import run_cli

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.score import ScoreConfig, score
from seqssm.pipelines.score_variants import ScoreVariantsConfig, score_variants
from seqssm.tokenizers import NucleotideTokenizer

TOK = NucleotideTokenizer()
RNG = np.random.default_rng(5)
DNA = "".join(RNG.choice(list("ACGT"), 5000))


def _save(path, **kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": 10, "d_state": 4, **kw})
    model = MambaLMHeadModel(config, impl="chunked")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))  # away from the near-uniform init, so scores differ per base
    model.save_pretrained(path)
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(11)
    root = tmp_path_factory.mktemp("models")
    return {name: (root / name, _save(root / name, **kw)) for name, kw in
            (("lm", {}), ("mlm", {"bidirectional": True}), ("rc", {"rc_equivariant": True}))}


def _causal_bits(model, seq: str) -> np.ndarray:
    """-log2 p(x_t | x_<t) for t >= 1 from one forward pass."""
    ids = torch.as_tensor(TOK.encode(seq))[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0].double(), -1)
    return -(logp[:-1].gather(1, ids[0, 1:, None])[:, 0] / math.log(2)).numpy()


def _pll_bits(model, seq: str) -> np.ndarray:
    """-log2 p(x_t | x_\\t): row t of an [L, L] batch has x_t masked, the whole sequence visible."""
    ids = torch.as_tensor(TOK.encode(seq))
    masked = ids.repeat(len(ids), 1)
    masked.fill_diagonal_(TOK.mask_id)
    with torch.no_grad():
        logp = torch.log_softmax(model(masked).double(), -1)  # [L, L, V]
    t = torch.arange(len(ids))
    return -(logp[t, t, ids] / math.log(2)).numpy()


def _rows(path) -> list[dict]:
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, line.split("\t"), strict=True)) for line in lines[1:]]


def _bedgraph(path) -> list[tuple[str, int, float]]:
    out = []
    for line in path.read_text().splitlines():
        rec, s, e, v = line.split("\t")
        assert int(e) == int(s) + 1
        out.append((rec, int(s), float(v)))
    return out


def test_score_equals_summed_log_probs_of_one_forward_pass(models, tmp_path):
    ckpt, model = models["lm"]
    fasta = tmp_path / "g.fa"
    fasta.write_text(f">a\n{DNA[:37]}\n>b desc\n{DNA[100:300]}\n>c\n{DNA[400:403]}\n")
    result = score(ScoreConfig(checkpoint=str(ckpt), input=str(fasta), out=str(tmp_path / "s.tsv"),
                               per_position=str(tmp_path / "s.bedgraph"), batch_size=2, device="cpu"))
    rows = _rows(tmp_path / "s.tsv")
    assert [r["id"] for r in rows] == ["a", "b", "c"] and result.sequences == 3
    track = _bedgraph(tmp_path / "s.bedgraph")
    for row, seq in zip(rows, (DNA[:37], DNA[100:300], DNA[400:403]), strict=True):
        bits = _causal_bits(model, seq)
        assert (int(row["length"]), int(row["scored"])) == (len(seq), len(seq) - 1)  # the first base: no prediction
        assert float(row["total_bits"]) == pytest.approx(bits.sum(), rel=1e-5)
        assert float(row["bits_per_base"]) == pytest.approx(bits.mean(), rel=1e-5)
        mine = [(s, v) for rec, s, v in track if rec == row["id"]]
        assert [s for s, _ in mine] == list(range(1, len(seq)))
        np.testing.assert_allclose([v for _, v in mine], bits, rtol=1e-5)
    assert result.total_bits == pytest.approx(sum(float(r["total_bits"]) for r in rows), rel=1e-9)


def test_streamed_long_contig_equals_one_pass(models, tmp_path):
    ckpt, model = models["lm"]
    fasta = tmp_path / "long.fa"
    fasta.write_text(">chr\n" + "\n".join(DNA[i:i + 60] for i in range(0, len(DNA), 60)) + "\n")
    common = dict(checkpoint=str(ckpt), input=str(fasta), device="cpu")
    score(ScoreConfig(**common, out=str(tmp_path / "one.tsv"), per_position=str(tmp_path / "one.bg")))
    score(ScoreConfig(**common, out=str(tmp_path / "chunks.tsv"), per_position=str(tmp_path / "chunks.bg"),
                      chunk_size=777))  # 7 chunks, the last short
    bits = _causal_bits(model, DNA)
    for name in ("one", "chunks"):
        (row,) = _rows(tmp_path / f"{name}.tsv")
        assert float(row["total_bits"]) == pytest.approx(bits.sum(), rel=1e-5)
        np.testing.assert_allclose([v for _, _, v in _bedgraph(tmp_path / f"{name}.bg")], bits, rtol=1e-4)
    # a region of it, 1-based inclusive at the CLI, 0-based half-open in the TSV and bedGraph
    score(ScoreConfig(**common, out=str(tmp_path / "r.tsv"), per_position=str(tmp_path / "r.bg"), record="chr",
                      start=1000, end=3000, chunk_size=500))
    (row,) = _rows(tmp_path / "r.tsv")
    assert (row["id"], row["start"], row["end"]) == ("chr:1001-3000", "1000", "3000")
    assert float(row["total_bits"]) == pytest.approx(_causal_bits(model, DNA[1000:3000]).sum(), rel=1e-5)
    assert [s for _, s, _ in _bedgraph(tmp_path / "r.bg")] == list(range(1001, 3000))


def test_bigwig_holds_the_bedgraph_values(models, tmp_path):
    pyBigWig = pytest.importorskip("pyBigWig", reason="bigWig output needs the optional pyBigWig package")
    ckpt, _ = models["lm"]
    genome = tmp_path / "g.fa"
    genome.write_text(f">chr\n{DNA[:2000]}\n>two\n{DNA[2000:2500]}\n")
    bed = tmp_path / "x.bed"
    bed.write_text("chr\t100\t180\tup\t0\t+\nchr\t300\t400\tdown\t0\t-\ntwo\t10\t90\n")
    common = dict(checkpoint=str(ckpt), bed=str(bed), genome=str(genome), device="cpu")
    score(ScoreConfig(**common, out=str(tmp_path / "a.tsv"), per_position=str(tmp_path / "s.bedgraph")))
    score(ScoreConfig(**common, out=str(tmp_path / "b.tsv"), per_position=str(tmp_path / "s.bw")))
    expected = sorted(_bedgraph(tmp_path / "s.bedgraph"))
    with pyBigWig.open(str(tmp_path / "s.bw")) as bw:
        assert bw.chroms() == {"chr": 2000, "two": 500}
        got = sorted((c, s, v) for c in ("chr", "two") for s, _, v in bw.intervals(c))
    assert [(c, s) for c, s, _ in got] == [(c, s) for c, s, _ in expected]
    np.testing.assert_allclose([v for *_, v in got], [v for *_, v in expected], rtol=1e-5)  # float32 in bigWig


def test_masked_model_scores_by_pseudo_likelihood(models, tmp_path):
    ckpt, model = models["mlm"]
    fasta = tmp_path / "g.fa"
    fasta.write_text(f">a\n{DNA[:30]}\n>b\n{DNA[50:91]}\n")
    score(ScoreConfig(checkpoint=str(ckpt), input=str(fasta), out=str(tmp_path / "s.tsv"),
                      per_position=str(tmp_path / "s.bg"), batch_size=7, device="cpu"))
    rows = _rows(tmp_path / "s.tsv")
    track = _bedgraph(tmp_path / "s.bg")
    for row, seq in zip(rows, (DNA[:30], DNA[50:91]), strict=True):
        bits = _pll_bits(model, seq)
        assert int(row["scored"]) == len(seq)  # every position, the first included
        assert float(row["total_bits"]) == pytest.approx(bits.sum(), rel=1e-5)
        np.testing.assert_allclose([v for r, _, v in track if r == row["id"]], bits, rtol=1e-4)


def test_bed_minus_strand_is_the_reverse_complement(models, tmp_path):
    ckpt, model = models["lm"]
    genome = tmp_path / "g.fa"
    genome.write_text(f">chr\n{DNA[:2000]}\n")
    bed = tmp_path / "x.bed"
    bed.write_text("chr\t100\t180\tup\t0\t+\nchr\t300\t1500\tdown\t0\t-\n")
    score(ScoreConfig(checkpoint=str(ckpt), bed=str(bed), genome=str(genome), out=str(tmp_path / "s.tsv"),
                      per_position=str(tmp_path / "s.bg"), chunk_size=256, device="cpu"))
    up, down = _rows(tmp_path / "s.tsv")
    assert float(up["total_bits"]) == pytest.approx(_causal_bits(model, DNA[100:180]).sum(), rel=1e-5)
    rc = TOK.reverse_complement(DNA[300:1500])
    bits = _causal_bits(model, rc)
    assert (down["id"], down["strand"]) == ("down", "-")
    assert float(down["total_bits"]) == pytest.approx(bits.sum(), rel=1e-5)
    # the bits of the reverse complement's base t sit at position 1499 - t on the genome
    minus = [(s, v) for _, s, v in _bedgraph(tmp_path / "s.bg")][79:]
    assert [s for s, _ in minus] == list(range(1498, 299, -1))
    np.testing.assert_allclose([v for _, v in minus], bits, rtol=1e-4)


def test_reads_of_a_bam_as_sequenced(models, shared_data, tmp_path):
    ckpt, model = models["lm"]
    bam = shared_data / "dna" / "ce_5b.bam"
    score(ScoreConfig(checkpoint=str(ckpt), input=str(bam), out=str(tmp_path / "s.tsv"), device="cpu"))
    with pysam.AlignmentFile(str(bam)) as f:
        reads = [(r.query_name, r.get_forward_sequence()) for r in f
                 if not (r.is_secondary or r.is_supplementary) and r.query_sequence]
    rows = _rows(tmp_path / "s.tsv")
    assert [r["id"] for r in rows] == [name for name, _ in reads] and len(rows) >= 5
    for row, (_, seq) in zip(rows, reads, strict=True):
        assert float(row["total_bits"]) == pytest.approx(_causal_bits(model, seq).sum(), rel=1e-5)


def test_audio_clips_score_like_score_audio(tmp_path, shared_data):
    from seqssm.pipelines.stream_embed import StreamAudioConfig, stream_audio

    torch.manual_seed(2)
    ckpt = tmp_path / "alm"
    _save(ckpt, vocab_size=256, tokenizer="mulaw8", sample_rate=6_000)
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("3_theo_7.wav", "0_jackson_0.wav"):
        wave, rate = sf.read(shared_data / "audio" / "fsdd" / name, dtype="float32")
        sf.write(clips / name, wave[:3000], rate)  # 0.375 s each: enough to cross several chunks
    score(ScoreConfig(checkpoint=str(ckpt), input=str(clips), out=str(tmp_path / "s.tsv"), chunk_size=300,
                      device="cpu"))
    rows = _rows(tmp_path / "s.tsv")
    assert [r["id"] for r in rows] == ["0_jackson_0.wav", "3_theo_7.wav"]
    assert "bits_per_sample" in rows[0]
    for row in rows:
        ref = stream_audio(StreamAudioConfig(checkpoint=str(ckpt), audio=str(clips / row["id"]),
                                             out=str(tmp_path / row["id"]), device="cpu"))
        assert int(row["length"]) == ref.samples and int(row["scored"]) == ref.samples - 1
        assert float(row["bits_per_sample"]) == pytest.approx(ref.bits_per_sample, rel=1e-5)


# ------------------------------------------------------------------------------------------ variants

ECOLI = "ecoli_536.fna.gz"
CONTIG = "gi|110640213|ref|NC_008253.1|"


@pytest.fixture(scope="module")
def ecoli(shared_data):
    from seqssm.datasets.vcf import ReferenceGenome

    path = shared_data / "dna" / ECOLI
    if not path.is_file():
        pytest.skip(f"{path} is absent (the real E. coli 536 genome of ../shared/data)")
    genome = ReferenceGenome(path)
    return path, genome.fetch(CONTIG, 0, 200_000)  # the variants below sit in the first 200 kb


def _vcf(tmp_path, seq: str):
    """A bgzipped, indexed VCF: SNVs, a multi-allelic SNV, a deletion, an insertion, a REF mismatch, a
    symbolic-only record, one with a '*' and a real ALT, and a contig the genome lacks. Returns its path and
    (pos0, ref, alts) of each record to score, None for the ALTs that are not."""
    other = {b: next(c for c in "ACGT" if c != b) for b in "ACGT"}
    lines = [
        (1000, seq[1000], [other[seq[1000]]]),
        (1500, seq[1500], [c for c in "ACGT" if c != seq[1500]]),  # multi-allelic
        (2000, seq[2000:2004], [seq[2000]]),  # deletion of 3 bases
        (2500, seq[2500], [seq[2500] + "GATC"]),  # insertion of 4
        (3000, other[seq[3000]], [seq[3000]]),  # REF mismatch
        (3500, seq[3500], ["<DEL>"]),  # symbolic only
        (4000, seq[4000], ["*", other[seq[4000]]]),
    ]
    text = ["##fileformat=VCFv4.2", f"##contig=<ID={CONTIG},length=4938920>", "##contig=<ID=plasmid,length=1000>",
            "##INFO=<ID=DP,Number=1,Type=Integer,Description=\"depth\">",
            "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    text += [f"{CONTIG}\t{p + 1}\tv{i}\t{ref}\t{','.join(alts)}\t50\tPASS\tDP={10 + i}"
             for i, (p, ref, alts) in enumerate(lines)]
    text.append("plasmid\t10\tmissing\tA\tC\t.\t.\t.")
    plain = tmp_path / "calls.vcf"
    plain.write_text("\n".join(text) + "\n")
    path = pysam.tabix_index(str(plain), preset="vcf", force=True)  # bgzip + .tbi, as the test input
    scored = {f"v{i}": (p, ref, [None if a in ("<DEL>", "*") else a for a in alts])
              for i, (p, ref, alts) in enumerate(lines) if i not in (4, 5)}
    return path, scored


def _window_by_hand(seq: str, p: int, ref: str, alt: str, window: int) -> tuple[str, str]:
    flank = window - len(ref)
    left, right = seq[p - flank // 2:p], seq[p + len(ref):p + len(ref) + flank - flank // 2]
    assert seq[p:p + len(ref)] == ref
    return left + ref + right, left + alt + right


def test_variant_scores_equal_scoring_both_windows_by_hand(models, ecoli, tmp_path, capsys, monkeypatch):
    from seqssm import cli

    ckpt, model = models["lm"]
    genome, seq = ecoli
    vcf, expected = _vcf(tmp_path, seq)
    out, tsv = tmp_path / "scored.vcf.gz", tmp_path / "scored.tsv"
    monkeypatch.setattr(sys, "argv", ["seqssm", "score-variants", str(ckpt), vcf, "--genome", str(genome),
                                      "--out", str(out), "--tsv", str(tsv), "--window", "64", "--device", "cpu",
                                      "--batch-size", "3"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    printed = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "8 records: 5 scored (7 ALT alleles), 3 skipped (missing_contig 1, ref_mismatch 1, symbolic 1); " \
           "1 symbolic ALT(s)" in printed
    with pysam.VariantFile(str(out)) as f:
        assert f.index is not None or (tmp_path / "scored.vcf.gz.tbi").is_file()
        records = {r.id: r for r in f}
        assert set(records) == {f"v{i}" for i in range(7)} | {"missing"}
        assert records["v4"].info["SEQSSM_SKIP"] == "ref_mismatch"
        assert records["missing"].info["SEQSSM_SKIP"] == "missing_contig"
        assert records["v5"].info["SEQSSM_SKIP"] == "symbolic"
        assert records["v0"].info["DP"] == 10  # the input's INFO kept
        for vid, (p, ref, alts) in expected.items():
            got = records[vid].info["SEQSSM_LLR"]
            assert len(got) == len(alts)
            for alt, llr in zip(alts, got, strict=True):
                if alt is None:
                    assert llr is None
                    continue
                ref_seq, alt_seq = _window_by_hand(seq, p, ref, alt, 64)
                by_hand = _causal_bits(model, ref_seq).sum() - _causal_bits(model, alt_seq).sum()
                assert llr == pytest.approx(by_hand, abs=2e-4)
        assert len(list(f.fetch(CONTIG, 1400, 2100))) == 2  # through the tabix index
    rows = _rows(tsv)
    assert len(rows) == 1 + 3 + 1 + 1 + 1 + 1 + 2 + 1  # one per ALT, skipped records included
    assert [r["status"] for r in rows if r["id"] == "v6"] == ["symbolic", "scored"]
    v0 = next(r for r in rows if r["id"] == "v0")
    assert float(v0["llr_bits"]) == pytest.approx(float(v0["ref_bits"]) - float(v0["alt_bits"]), abs=1e-5)
    assert (int(v0["window_start"]), int(v0["window_end"])) == (1000 - 31, 1000 + 33)


def test_rc_equivariant_variants_average_both_strands(models, ecoli, tmp_path):
    genome, seq = ecoli
    vcf, expected = _vcf(tmp_path, seq)
    for name in ("rc", "mlm"):
        ckpt, model = models[name]
        out = tmp_path / f"{name}.vcf.gz"
        result = score_variants(ScoreVariantsConfig(checkpoint=str(ckpt), vcf=vcf, genome=str(genome), out=str(out),
                                                    window=12, batch_size=64, device="cpu"))
        assert result.scored_alleles == 7
        with pysam.VariantFile(str(out)) as f:
            llr = {r.id: r.info["SEQSSM_LLR"] for r in f if "SEQSSM_LLR" in r.info}
        for vid in ("v0", "v2"):
            p, ref, (alt,) = expected[vid]
            ref_seq, alt_seq = _window_by_hand(seq, p, ref, alt, 12)
            strands = [_pll_bits(model, ref_seq).sum() - _pll_bits(model, alt_seq).sum()]
            if name == "rc":
                rc = TOK.reverse_complement
                strands.append(_pll_bits(model, rc(ref_seq)).sum() - _pll_bits(model, rc(alt_seq)).sum())
            assert llr[vid][0] == pytest.approx(np.mean(strands), abs=2e-4)


def test_out_of_order_records_are_counted_and_left_out(models, tmp_path):
    ckpt, _ = models["lm"]
    genome = tmp_path / "g.fa"
    genome.write_text(f">a\n{DNA[:300]}\n>b\n{DNA[300:600]}\n")
    vcf = tmp_path / "v.vcf"
    records = [("a", 100), ("a", 50), ("b", 10), ("a", 200), ("b", 20)]
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" + "".join(
        f"{c}\t{p}\tr{i}\t{(DNA if c == 'a' else DNA[300:])[p - 1]}\tN\t.\t.\t.\n"
        for i, (c, p) in enumerate(records)))
    out = tmp_path / "o.vcf.gz"
    result = score_variants(ScoreVariantsConfig(checkpoint=str(ckpt), vcf=str(vcf), genome=str(genome),
                                                out=str(out), window=16, device="cpu"))
    assert (result.records, result.scored_records, dict(result.skipped)) == (5, 3, {"unsorted": 2})
    with pysam.VariantFile(str(out)) as f:
        assert [r.id for r in f] == ["r0", "r2", "r4"]
        assert [r.id for r in f.fetch("b")] == ["r2", "r4"]


# ------------------------------------------------------------------------------------------ bad input




@pytest.mark.parametrize("bad,message", [
    ("missing VCF", "does not exist"),
    ("FASTA renamed .vcf", "is not VCF: it starts with '>a'"),
    ("PNG renamed .vcf", "is a PNG image, not VCF text"),
    ("--out not .vcf.gz", "give a name ending in .vcf.gz"),
    ("missing genome", "genome FASTA (--genome)"),
    ("unparsable record", "record 1 cannot be parsed"),
])
def test_bad_variant_inputs_exit_2_with_one_line(bad, message, models, tmp_path, capsys, monkeypatch):
    ckpt, _ = models["lm"]
    genome = tmp_path / "g.fa"
    genome.write_text(f">chr\n{DNA[:200]}\n")
    vcf, out = tmp_path / "v.vcf", tmp_path / "o.vcf.gz"
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    vcf.write_text(header + "chr\t5\t.\tA\tC\t.\t.\t.\n")
    if bad == "missing VCF":
        vcf.unlink()
    elif bad == "FASTA renamed .vcf":
        vcf.write_text(">a\nACGT\n")
    elif bad == "PNG renamed .vcf":
        vcf.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(100)))
    elif bad == "--out not .vcf.gz":
        out = tmp_path / "o.vcf"
    elif bad == "missing genome":
        genome.unlink()
    elif bad == "unparsable record":
        vcf.write_text(header + "chr\tfive\t.\tA\tC\t.\t.\t.\n")
    code, err = run_cli(["score-variants", ckpt, vcf, "--genome", genome, "--out", out, "--device", "cpu"],
                     capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists() and not (tmp_path / "o.vcf.gz.tbi").exists()


@pytest.mark.parametrize("bad,message", [
    ("missing input", "does not exist"),
    ("PNG renamed .fa", "is a PNG image"),
    ("--bed without --genome", "add --genome FASTA"),
    ("neither input nor --bed", "an INPUT file, or --bed with --genome"),
    ("--region past the end", "ends past the end of chr"),
    ("--region of no record", "has no record 'chrX'"),
    ("bad base", "invalid character"),
    ("bigWig of reads", "a bigWig needs every contig's length before the first entry"),
    ("bigWig of overlapping intervals", "a bigWig takes each base once"),
])
def test_bad_score_inputs_exit_2_with_one_line(bad, message, models, tmp_path, capsys, monkeypatch):
    ckpt, _ = models["lm"]
    fasta = tmp_path / "g.fa"
    fasta.write_text(f">chr\n{DNA[:200]}\n")
    out = tmp_path / "s.tsv"
    args = ["score", ckpt, fasta, "--out", out, "--device", "cpu"]
    if bad == "missing input":
        fasta.unlink()
    elif bad == "PNG renamed .fa":
        fasta.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(100)))
    elif bad == "--bed without --genome":
        args = ["score", ckpt, "--bed", fasta, "--out", out]
    elif bad == "neither input nor --bed":
        args = ["score", ckpt, "--out", out]
    elif bad == "--region past the end":
        args += ["--region", "chr:100-300"]
    elif bad == "--region of no record":
        args += ["--region", "chrX"]
    elif bad == "bad base":
        fasta.write_text(">chr\nACGT!ACGT\n")
    elif bad == "bigWig of reads":
        pytest.importorskip("pyBigWig")
        reads = tmp_path / "r.bam"
        with pysam.AlignmentFile(str(reads), "wb", header={"HD": {"VN": "1.6"}, "SQ": [{"SN": "chr", "LN": 200}]}) as f:
            read = pysam.AlignedSegment()
            read.query_name, read.query_sequence, read.flag = "r0", DNA[:50], 4
            f.write(read)
        args = ["score", ckpt, reads, "--out", out, "--per-position", tmp_path / "s.bw"]
    elif bad == "bigWig of overlapping intervals":
        pytest.importorskip("pyBigWig")
        args = ["score", ckpt, "--bed", tmp_path / "o.bed", "--genome", fasta, "--out", out, "--per-position",
                tmp_path / "s.bw", "--device", "cpu"]
        (tmp_path / "o.bed").write_text("chr\t10\t100\nchr\t50\t120\n")
    code, err = run_cli(args, capsys, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not out.exists() and not (tmp_path / "s.bw").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
